//! The validity rule against the edge-case vectors of Chalkias, Garillot and Nikolaenko,
//! "Taming the many EdDSAs" (SSR 2020), and single vs. batch agreement.
//!
//! The vectors sign raw messages (RFC 8032 Ed25519, no domain or chain prefix); the rule is
//! applied here to the raw message through `tally_crypto`'s test-only hook below.

use tally_crypto::{
    ChainId, CryptoError, Domain, PublicKey, SecretKey, Signature, SignatureCheck, ValidKey,
    Verifiable, verify_batch, verify_one,
};

/// (message, public key, signature, accepted by Tally's rule, why)
const VECTORS: [(&str, &str, &str, bool, &str); 12] = [
    (
        "8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000",
        false,
        "0: small-order A and R",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        false,
        "1: small-order A",
    ),
    (
        "aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e",
        false,
        "2: small-order R",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009",
        true,
        "3: mixed-order A and R, both equations hold",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed5125ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09",
        true,
        "4: mixed-order A and R, only the cofactored equation holds",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405",
        true,
        "5: mixed-order A and R, cofactored holds (an implementation that pre-reduces 8k mod l wrongly fails it)",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514",
        false,
        "6: S >= l",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa19427e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22",
        false,
        "7: S much larger than l",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f",
        false,
        "8: non-canonical R",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908",
        false,
        "9: non-canonical R",
    ),
    (
        "e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        false,
        "10: non-canonical A",
    ),
    (
        "39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        false,
        "11: non-canonical A",
    ),
];

struct Raw(SignatureCheck);

impl Verifiable for Raw {
    type Context = ();
    fn signature_checks(&self, _: &(), out: &mut Vec<SignatureCheck>) -> Result<(), CryptoError> {
        out.push(self.0.clone());
        Ok(())
    }
}

/// The vectors sign bare messages; our signing message is `len ‖ domain ‖ len ‖ chain ‖
/// body`, so a vector only lines up with the rule when the raw message is exactly that
/// prefix plus a body. We cannot change the vectors' messages, so the test applies the rule
/// through `tally_crypto::raw` (the rule without the prefix).
fn raw_check(msg: &str, pk: &str, sig: &str) -> Result<(), CryptoError> {
    let key = ValidKey::new(&PublicKey::from_hex(pk)?)?;
    let sig = Signature::from_hex(sig)?;
    tally_crypto::raw::verify_one_raw(&key, &hex::decode(msg).unwrap(), &sig)
}

#[test]
fn taming_the_many_eddsas_vectors() {
    for (msg, pk, sig, accepted, why) in VECTORS {
        let result = raw_check(msg, pk, sig);
        assert_eq!(result.is_ok(), accepted, "vector {why}: {result:?}");
    }
}

#[test]
fn single_and_batch_agree_on_the_vectors() {
    for (msg, pk, sig, _, why) in VECTORS {
        let single = raw_check(msg, pk, sig).is_ok();
        let batch = tally_crypto::raw::verify_batch_raw_ok(&[(pk, msg, sig)]);
        assert_eq!(single, batch, "vector {why}");
    }
    // And mixed into a batch of honest signatures: the batch rejects iff some member fails.
    let honest = SecretKey::from_seed(&[3; 32]);
    let honest_pk = honest.public_key().to_hex();
    for (msg, pk, sig, accepted, why) in VECTORS {
        let m = hex::decode(msg).unwrap();
        let hs = tally_crypto::raw::sign_raw(&honest, &m).to_hex();
        let batch = tally_crypto::raw::verify_batch_raw_ok(&[
            (&honest_pk, msg, &hs),
            (pk, msg, sig),
            (&honest_pk, msg, &hs),
        ]);
        assert_eq!(batch, accepted, "vector {why} in a batch");
    }
}

const D: Domain = Domain::new("test/v1");

#[test]
fn domain_and_chain_are_bound() {
    let key = SecretKey::from_seed(&[9; 32]);
    let a = ChainId::new("chain-a").unwrap();
    let b = ChainId::new("chain-b").unwrap();
    let sig = key.sign(D, &a, b"body");
    let check = |domain, chain: &ChainId, body: &[u8]| {
        verify_one(
            chain,
            &SignatureCheck {
                key: ValidKey::new(&key.public_key()).unwrap(),
                domain,
                body: body.to_vec(),
                signature: sig,
            },
        )
    };
    assert!(check(D, &a, b"body").is_ok());
    assert!(check(D, &b, b"body").is_err(), "other chain");
    assert!(
        check(Domain::new("test/v2"), &a, b"body").is_err(),
        "other domain"
    );
    assert!(check(D, &a, b"bodx").is_err(), "other body");
    // The length prefixes keep (domain, chain) from sliding into each other.
    let ab = ChainId::new("a").unwrap();
    let sig2 = key.sign(Domain::new("x"), &ab, b"");
    let shifted = SignatureCheck {
        key: ValidKey::new(&key.public_key()).unwrap(),
        domain: Domain::new("x\u{1}a"),
        body: vec![],
        signature: sig2,
    };
    assert!(verify_one(&ChainId::new("z").unwrap(), &shifted).is_err());
}

#[test]
fn batch_reports_each_bad_item_and_only_it() {
    let chain = ChainId::new("c").unwrap();
    // 100 items: several batch equations; bad ones in the first, a middle and the last group.
    let keys: Vec<SecretKey> = (0..100u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
    let mut items: Vec<Raw> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let body = vec![i as u8; 10];
            Raw(SignatureCheck {
                key: ValidKey::new(&k.public_key()).unwrap(),
                domain: D,
                signature: k.sign(D, &chain, &body),
                body,
            })
        })
        .collect();
    items[3].0.body[0] ^= 1; // wrong message
    items[7].0.signature.0[40] ^= 1; // wrong S
    items[11].0.signature = keys[12].sign(D, &chain, &items[11].0.body); // wrong signer
    items[40].0.signature.0[0] ^= 1; // wrong R
    items[99].0.body.push(0); // wrong message, last item
    let results = verify_batch(&(), &chain, items);
    assert_eq!(results.len(), 100);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_err(), [3, 7, 11, 40, 99].contains(&i), "item {i}");
    }
}

#[test]
fn invalid_public_keys_are_refused() {
    // Small order: the identity (y = 1) and y = -1.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        ValidKey::new(&PublicKey(identity)),
        Err(CryptoError::InvalidPublicKey)
    );
    // y >= p.
    let mut big = [0xffu8; 32];
    big[31] = 0x7f;
    assert!(ValidKey::new(&PublicKey(big)).is_err());
    // Not on the curve (y = 2 has no x).
    let mut two = [0u8; 32];
    two[0] = 2;
    assert!(ValidKey::new(&PublicKey(two)).is_err());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// For honest signatures, the rule agrees with ed25519-dalek's `verify_strict`, alone
        /// and batched, and any one-bit change is rejected by both paths.
        #[test]
        fn honest_signatures_and_bit_flips(seed in any::<[u8; 32]>(), body in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..512) {
            let chain = ChainId::new("p").unwrap();
            let key = SecretKey::from_seed(&seed);
            let sig = key.sign(D, &chain, &body);
            let dalek = ed25519_dalek::VerifyingKey::from_bytes(&key.public_key().0).unwrap();
            let msg = tally_crypto::signing_message(D, &chain, &body);
            prop_assert!(dalek.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig.0)).is_ok());
            let check = SignatureCheck { key: ValidKey::new(&key.public_key()).unwrap(), domain: D, body: body.clone(), signature: sig };
            prop_assert!(verify_one(&chain, &check).is_ok());
            let mut bad = check.clone();
            bad.signature.0[flip / 8] ^= 1 << (flip % 8);
            let strict = dalek.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&bad.signature.0)).is_ok();
            let ours = verify_one(&chain, &bad).is_ok();
            prop_assert!(!ours);
            prop_assert_eq!(strict, ours);
            let batch = verify_batch(&(), &chain, vec![Raw(check), Raw(bad)]);
            prop_assert!(batch[0].is_ok() && batch[1].is_err());
        }
    }

    fn signed_items(chain: &ChainId, count: usize, seed: u8) -> (Vec<Raw>, Vec<SecretKey>) {
        let keys: Vec<SecretKey> = (0..count)
            .map(|i| {
                SecretKey::from_seed(&[
                    seed ^ (i as u8),
                    (i >> 8) as u8,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                    7,
                ])
            })
            .collect();
        let items = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let body = (i as u32).to_le_bytes().to_vec();
                Raw(SignatureCheck {
                    key: ValidKey::new(&k.public_key()).unwrap(),
                    domain: D,
                    signature: k.sign(D, chain, &body),
                    body,
                })
            })
            .collect();
        (items, keys)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Batches large enough for one equation of many signatures (1,024 per equation) with
        /// bad items anywhere — none, one, a few, most — give exactly what each item gives on
        /// its own, and what ed25519-dalek's `verify_strict` says of it.
        #[test]
        fn batches_with_bad_items_anywhere(
            count in 1usize..1300,
            bad in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
            dense in any::<bool>(),
            seed in any::<u8>(),
        ) {
            let chain = ChainId::new("b").unwrap();
            let (mut items, keys) = signed_items(&chain, count, seed);
            let mut bad: Vec<usize> = bad.iter().map(|i| i.index(count)).collect();
            if dense {
                bad.extend((0..count).filter(|i| i % 3 == 0));
            }
            bad.sort_unstable();
            bad.dedup();
            for &i in &bad {
                items[i].0.signature.0[33] ^= 1;
            }
            let expected: Vec<bool> = items
                .iter()
                .map(|item| verify_one(&chain, &item.0).is_ok())
                .collect();
            for (i, item) in items.iter().enumerate() {
                let dalek = ed25519_dalek::VerifyingKey::from_bytes(&keys[i].public_key().0).unwrap();
                let msg = tally_crypto::signing_message(D, &chain, &item.0.body);
                let strict = dalek.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&item.0.signature.0)).is_ok();
                prop_assert_eq!(strict, expected[i]);
                prop_assert_eq!(expected[i], !bad.contains(&i));
            }
            let results = verify_batch(&(), &chain, items);
            let got: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
