//! Per-signature cost of the validity rule: single, batched, and the parts.
//! `cargo bench -p tally-crypto --bench verify`

use std::time::Instant;

use tally_crypto::{
    ChainId, Domain, SecretKey, SignatureCheck, ValidKey, Verifiable, verify_batch, verify_one,
};

const D: Domain = Domain::new("bench/v1");

struct Item(SignatureCheck);
impl Verifiable for Item {
    type Context = ();
    fn signature_checks(
        &self,
        _: &(),
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), tally_crypto::CryptoError> {
        out.push(self.0.clone());
        Ok(())
    }
}

fn main() {
    let chain = ChainId::new("bench").unwrap();
    let n = 4096;
    let keys: Vec<SecretKey> = (0..64u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
    let checks: Vec<SignatureCheck> = (0..n)
        .map(|i| {
            let k = &keys[i % keys.len()];
            let body = vec![i as u8; 512];
            SignatureCheck {
                key: ValidKey::new(&k.public_key()).unwrap(),
                domain: D,
                signature: k.sign(D, &chain, &body),
                body,
            }
        })
        .collect();

    let t = Instant::now();
    for c in &checks {
        verify_one(&chain, c).unwrap();
    }
    let single = t.elapsed().as_secs_f64() / n as f64;

    let t = Instant::now();
    for c in &checks {
        ValidKey::new(&c.key.public_key()).unwrap();
    }
    let key_check = t.elapsed().as_secs_f64() / n as f64;

    versus_dalek(&chain, &checks);

    for batch in [16usize, 64, 256] {
        let t = Instant::now();
        for chunk in checks.chunks(batch) {
            let items: Vec<Item> = chunk.iter().cloned().map(Item).collect();
            assert!(verify_batch(&(), &chain, items).iter().all(|r| r.is_ok()));
        }
        let per = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "batch {batch:>3}: {:>6.1} us/sig  ({:.0} sig/s/core)",
            per * 1e6,
            1.0 / per
        );
    }
    println!(
        "single: {:>6.1} us/sig  ({:.0} sig/s/core)",
        single * 1e6,
        1.0 / single
    );
    println!(
        "key check (decompress, canonical, small order): {:.1} us",
        key_check * 1e6
    );
}

/// Ours against ed25519-dalek's `verify_batch` on the same signatures and signed bytes,
/// alternated, three rounds; per-signature medians.
fn versus_dalek(chain: &ChainId, checks: &[SignatureCheck]) {
    use ed25519_dalek::{Signature as DalekSig, VerifyingKey};
    let messages: Vec<Vec<u8>> = checks
        .iter()
        .map(|c| tally_crypto::signing_message(c.domain, chain, &c.body))
        .collect();
    let sigs: Vec<DalekSig> = checks
        .iter()
        .map(|c| DalekSig::from_bytes(&c.signature.0))
        .collect();
    let keys: Vec<VerifyingKey> = checks
        .iter()
        .map(|c| VerifyingKey::from_bytes(&c.key.public_key().0).unwrap())
        .collect();
    let n = checks.len();
    for batch in [32usize, 64, 128, 256, 1024] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let t = Instant::now();
            for chunk in checks.chunks(batch) {
                let items: Vec<Item> = chunk.iter().cloned().map(Item).collect();
                assert!(verify_batch(&(), chain, items).iter().all(|r| r.is_ok()));
            }
            ours.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let t = Instant::now();
            for start in (0..n).step_by(batch) {
                let end = (start + batch).min(n);
                let m: Vec<&[u8]> = messages[start..end].iter().map(|m| m.as_slice()).collect();
                ed25519_dalek::verify_batch(&m, &sigs[start..end], &keys[start..end]).unwrap();
            }
            theirs.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        ours.sort_by(f64::total_cmp);
        theirs.sort_by(f64::total_cmp);
        println!(
            "batch {batch:>4}: tally {:>5.1} us/sig, ed25519-dalek {:>5.1} us/sig, ratio {:.2}",
            ours[1],
            theirs[1],
            ours[1] / theirs[1]
        );
    }
}
