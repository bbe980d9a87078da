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
