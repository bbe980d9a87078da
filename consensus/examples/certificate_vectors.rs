//! Prints the certificate and evidence vectors of `docs/transactions.md` (the test suite
//! checks the page against the code): `cargo run -p tally-consensus --example certificate_vectors`.

use tally_consensus::pbft::messages::SignedBody;
use tally_consensus::pbft::{Evidence, Prepare, Signed, Statement};
use tally_consensus::{
    COMMIT_DOMAIN, CommitCertificate, Seq, ValidatorId, View, batch_digest, commit_body,
};
use tally_crypto::{ChainId, Digest, SecretKey, signing_message};

fn main() {
    let chain = ChainId::new("tally-test").unwrap();
    let keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
    println!("### Certificate vector 1\n\n```text");
    println!("chain_id:        {}", chain.as_str());
    for (i, k) in keys.iter().enumerate() {
        println!("validator_{i}:     {}", k.public_key().to_hex());
    }
    for (i, _) in keys.iter().enumerate() {
        println!("seed_{i}:          {}", hex(&[(i + 1) as u8; 32]));
    }
    let txs = [
        Digest::from_hex("5321ca117a7c20e47fa1e106bb4e7e280911ece8f59437950937835cbd1a3f72")
            .unwrap(),
        Digest::from_hex("7f011df51827c1b99597704cfbd3c754cfc0fee2a3b82e709bc22dd1360e18a0")
            .unwrap(),
    ];
    let digest = batch_digest(&txs);
    let (view, seq) = (View(2), Seq(9));
    let body = commit_body(view, seq, &digest);
    println!("tx_hashes:       {} {}", txs[0].to_hex(), txs[1].to_hex());
    println!("batch_digest:    {}", digest.to_hex());
    println!("view:            {}", view.0);
    println!("seq:             {}", seq.0);
    println!("commit_body:     {}", hex(&body));
    println!(
        "signing_message: {}",
        hex(&signing_message(COMMIT_DOMAIN, &chain, &body))
    );
    let signers = [0usize, 1, 3];
    let mut signatures = Vec::new();
    for i in signers {
        let sig = keys[i].sign(COMMIT_DOMAIN, &chain, &body);
        println!("signature_{i}:     {}", sig.to_hex());
        signatures.push((ValidatorId(i as u16), sig));
    }
    let cert = CommitCertificate {
        view,
        seq,
        digest,
        signatures,
    };
    println!("certificate:     {}", hex(&cert.encode()));
    println!("```\n");

    println!("### Evidence vector 1\n\n```text");
    println!("chain_id:        {}", chain.as_str());
    println!("validator:       2");
    println!("seed:            {}", hex(&[3u8; 32]));
    println!("public_key:      {}", keys[2].public_key().to_hex());
    let prepare = |d: &[u8]| {
        let body = Prepare {
            view: View(0),
            seq: Seq(5),
            digest: Digest::of(d),
        };
        Signed {
            from: ValidatorId(2),
            signature: keys[2].sign(Prepare::DOMAIN, &chain, &body.signing_bytes()),
            body,
        }
    };
    let (a, b) = (prepare(b"one batch"), prepare(b"another batch"));
    println!("domain:          {}", Prepare::DOMAIN.tag());
    println!("first_bytes:     {}", hex(&a.body.signing_bytes()));
    println!("first_signature: {}", a.signature.to_hex());
    println!("second_bytes:    {}", hex(&b.body.signing_bytes()));
    println!("second_signature: {}", b.signature.to_hex());
    let e = Evidence {
        first: Statement::Prepare(a),
        second: Statement::Prepare(b),
    };
    println!("raw:             {}", hex(&e.encode()));
    println!("```");
}

fn hex(b: &[u8]) -> String {
    tally_crypto::to_hex(b)
}
