//! Prints the test vectors of `docs/transactions.md` (the test suite checks the page against
//! the code): `cargo run -p tally-ledger --example vectors`.

use tally_crypto::{ChainId, PublicKey, SecretKey, signing_message};
use tally_ledger::{Action, TX_DOMAIN, Transaction};

fn main() {
    let seed_a: [u8; 32] = std::array::from_fn(|i| i as u8);
    let seed_b = [0x42u8; 32];
    let to = SecretKey::from_seed(&[0x02; 32]).public_key();
    let vectors: Vec<(&str, [u8; 32], &str, u64, Action)> = vec![
        (
            "transfer",
            seed_a,
            "tally-test",
            0,
            Action::Transfer { to, amount: 1000 },
        ),
        (
            "data put",
            seed_b,
            "tally-test",
            7,
            Action::Put {
                key: b"greeting".to_vec(),
                value: b"hello, tally".to_vec(),
            },
        ),
        (
            "transfer with large fields",
            seed_b,
            "prod.chain_1",
            (1 << 40) + 5,
            Action::Transfer {
                to: PublicKey([0xab; 32]),
                amount: u64::MAX,
            },
        ),
        (
            "data put with an empty value",
            seed_a,
            "tally-test",
            1,
            Action::Put {
                key: vec![0x00, 0xff],
                value: vec![],
            },
        ),
    ];
    for (i, (title, seed, chain, nonce, action)) in vectors.into_iter().enumerate() {
        let key = SecretKey::from_seed(&seed);
        let tx = Transaction {
            chain_id: ChainId::new(chain).unwrap(),
            sender: key.public_key(),
            nonce,
            action: action.clone(),
        };
        let body = tx.encode_body();
        let msg = signing_message(TX_DOMAIN, &tx.chain_id, &body);
        let signed = tx.sign(&key).unwrap();
        println!("### Vector {}: {title}\n\n```text", i + 1);
        println!("secret_seed:     {}", hex::encode(seed));
        println!("public_key:      {}", key.public_key());
        println!("chain_id:        {chain}");
        println!("nonce:           {nonce}");
        match action {
            Action::Transfer { to, amount } => {
                println!("action:          transfer");
                println!("to:              {to}");
                println!("amount:          {amount}");
            }
            Action::Put { key, value } => {
                println!("action:          put");
                println!("data_key_hex:    {}", hex::encode(key));
                println!("data_value_hex:  {}", hex::encode(value));
            }
        }
        println!("body:            {}", hex::encode(&body));
        println!("signing_message: {}", hex::encode(&msg));
        println!("signature:       {}", signed.signature());
        println!("encoded:         {}", hex::encode(signed.encoded()));
        println!("hash:            {}", signed.hash());
        println!("```\n");
    }
}
