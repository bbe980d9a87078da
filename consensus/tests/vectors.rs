//! The certificate and evidence vectors of `docs/transactions.md`, checked against the code
//! (the page is parsed, so documentation and implementation cannot drift apart).

use std::collections::HashMap;

use tally_consensus::pbft::{Evidence, Statement};
use tally_consensus::{
    COMMIT_DOMAIN, CommitCertificate, Seq, ValidatorSet, batch_digest, commit_body,
};
use tally_crypto::{ChainId, Digest, PublicKey, SecretKey, signing_message};

fn section(title: &str) -> HashMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/transactions.md");
    let doc = std::fs::read_to_string(path).expect("docs/transactions.md");
    let block = doc
        .split(title)
        .nth(1)
        .unwrap_or_else(|| panic!("{title} on the page"))
        .split("```text")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn set(v: &HashMap<String, String>) -> (Vec<SecretKey>, ValidatorSet) {
    let keys: Vec<SecretKey> = (0..4)
        .map(|i| {
            let seed: [u8; 32] = hex::decode(&v[&format!("seed_{i}")])
                .unwrap()
                .try_into()
                .unwrap();
            SecretKey::from_seed(&seed)
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(k.public_key().to_hex(), v[&format!("validator_{i}")]);
    }
    let publics: Vec<PublicKey> = keys.iter().map(|k| k.public_key()).collect();
    (keys, ValidatorSet::new(&publics).unwrap())
}

#[test]
fn certificate_vector_matches_the_code() {
    let v = section("### Certificate vector 1");
    let chain = ChainId::new(v["chain_id"].clone()).unwrap();
    let (keys, validators) = set(&v);
    let txs: Vec<Digest> = v["tx_hashes"]
        .split_whitespace()
        .map(|h| Digest::from_hex(h).unwrap())
        .collect();
    let digest = batch_digest(&txs);
    assert_eq!(digest.to_hex(), v["batch_digest"]);
    let view = tally_consensus::View(v["view"].parse().unwrap());
    let seq = Seq(v["seq"].parse().unwrap());
    let body = commit_body(view, seq, &digest);
    assert_eq!(hex::encode(&body), v["commit_body"]);
    assert_eq!(
        hex::encode(signing_message(COMMIT_DOMAIN, &chain, &body)),
        v["signing_message"]
    );
    for i in [0usize, 1, 3] {
        assert_eq!(
            keys[i].sign(COMMIT_DOMAIN, &chain, &body).to_hex(),
            v[&format!("signature_{i}")]
        );
    }
    let cert = CommitCertificate::decode(&hex::decode(&v["certificate"]).unwrap()).unwrap();
    assert_eq!(hex::encode(cert.encode()), v["certificate"]);
    cert.verify(&validators, &chain, Some((seq, digest)))
        .unwrap();
    // The page's validity rules: an extra invalid signature, a duplicate, or too few make it
    // invalid.
    let mut extra = cert.clone();
    extra
        .signatures
        .push((tally_consensus::ValidatorId(2), extra.signatures[0].1));
    assert!(
        extra
            .verify(&validators, &chain, Some((seq, digest)))
            .is_err()
    );
    let mut duplicate = cert.clone();
    duplicate.signatures.push(duplicate.signatures[0]);
    assert!(
        duplicate
            .verify(&validators, &chain, Some((seq, digest)))
            .is_err()
    );
    let mut short = cert.clone();
    short.signatures.pop();
    assert!(
        short
            .verify(&validators, &chain, Some((seq, digest)))
            .is_err()
    );
}

#[test]
fn evidence_vector_matches_the_code() {
    let c = section("### Certificate vector 1");
    let v = section("### Evidence vector 1");
    let chain = ChainId::new(v["chain_id"].clone()).unwrap();
    let (keys, validators) = set(&c);
    assert_eq!(keys[2].public_key().to_hex(), v["public_key"]);
    let e = Evidence::decode(&hex::decode(&v["raw"]).unwrap()).unwrap();
    assert_eq!(hex::encode(e.encode()), v["raw"]);
    e.verify(&validators, &chain).unwrap();
    assert_eq!(e.validator().0.to_string(), v["validator"]);
    assert_eq!(e.first.domain().tag(), v["domain"]);
    for (s, bytes, sig) in [
        (&e.first, "first_bytes", "first_signature"),
        (&e.second, "second_bytes", "second_signature"),
    ] {
        assert!(matches!(s, Statement::Prepare(_)));
        assert_eq!(hex::encode(s.signing_bytes()), v[bytes]);
        assert_eq!(s.signature().to_hex(), v[sig]);
    }
    // On another chain, or by another validator's key, it proves nothing.
    let other = ChainId::new("another-chain").unwrap();
    assert!(e.verify(&validators, &other).is_err());
}
