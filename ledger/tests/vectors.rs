//! The test vectors of `docs/transactions.md`, checked against the code: the page is parsed,
//! so the documentation and the implementation cannot drift apart.

use std::collections::HashMap;

use tally_crypto::{ChainId, PublicKey, SecretKey, signing_message};
use tally_ledger::{Action, SignedTransaction, TX_DOMAIN, Transaction, check_transactions};

fn vectors() -> Vec<HashMap<String, String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/transactions.md");
    let doc = std::fs::read_to_string(path).expect("docs/transactions.md");
    let section = doc
        .split("## Test vectors")
        .nth(1)
        .expect("a test vector section");
    section
        .split("### Vector ")
        .skip(1)
        .map(|v| {
            let block = v
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
        })
        .collect()
}

#[test]
fn documented_vectors_match_the_code() {
    let vs = vectors();
    assert!(vs.len() >= 3, "the page must carry at least three vectors");
    for v in vs {
        let seed: [u8; 32] = hex::decode(&v["secret_seed"]).unwrap().try_into().unwrap();
        let key = SecretKey::from_seed(&seed);
        assert_eq!(key.public_key().to_hex(), v["public_key"]);
        let action = match v["action"].as_str() {
            "transfer" => Action::Transfer {
                to: PublicKey::from_hex(&v["to"]).unwrap(),
                amount: v["amount"].parse().unwrap(),
            },
            "put" => Action::Put {
                key: hex::decode(&v["data_key_hex"]).unwrap(),
                value: hex::decode(&v["data_value_hex"]).unwrap(),
            },
            other => panic!("unknown action {other}"),
        };
        let tx = Transaction {
            chain_id: ChainId::new(v["chain_id"].clone()).unwrap(),
            sender: key.public_key(),
            nonce: v["nonce"].parse().unwrap(),
            action,
        };
        let body = tx.encode_body();
        assert_eq!(hex::encode(&body), v["body"]);
        assert_eq!(
            hex::encode(signing_message(TX_DOMAIN, &tx.chain_id, &body)),
            v["signing_message"]
        );
        let signed = tx.clone().sign(&key).unwrap();
        assert_eq!(signed.signature().to_hex(), v["signature"]);
        assert_eq!(hex::encode(signed.encoded()), v["encoded"]);
        assert_eq!(signed.hash().to_hex(), v["hash"]);

        // And the other way: the documented bytes decode to these fields and verify.
        let encoded = hex::decode(&v["encoded"]).unwrap();
        let decoded = SignedTransaction::decode(&encoded).unwrap();
        assert_eq!(decoded.tx(), &tx);
        let checked = check_transactions(&tx.chain_id, &[encoded]);
        assert!(checked[0].tx.is_ok());
    }
}
