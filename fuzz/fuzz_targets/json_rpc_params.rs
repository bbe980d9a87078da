//! Every JSON-RPC method's parameters, as the node reads them: jsonrpsee's parser into the
//! method's parameter type (`node/src/rpc/params.rs`), then the node's decoders for its fields
//! (the first byte picks the method). No input panics; a transaction accepted as hex is
//! exactly the bytes the hex spells.
#![no_main]

use jsonrpsee::types::Params;
use libfuzzer_sys::fuzz_target;
use tally_node::rpc::params::{
    AddressParams, DataParams, HashParams, HeightParams, TransferParams, TxParams, TxsParams,
    WaitParams, parse_digest, parse_hex_tx, subscribe_params,
};

fn hex_tx(s: &str) {
    if let Ok(bytes) = parse_hex_tx(s) {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        assert_eq!(hex::encode(&bytes), digits.to_ascii_lowercase());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let params = Params::new(Some(raw));
    match which % 9 {
        0 => {
            if let Ok(p) = params.parse::<TxParams>() {
                hex_tx(&p.tx);
            }
        }
        1 => {
            if let Ok(p) = params.parse::<TxsParams>() {
                p.txs.iter().for_each(|t| hex_tx(t));
            }
        }
        2 => {
            if let Ok(p) = params.parse::<HashParams>() {
                let _ = parse_digest(&p.hash);
            }
        }
        3 => {
            if let Ok(p) = params.parse::<WaitParams>() {
                let _ = parse_digest(&p.hash);
            }
        }
        4 => {
            let _ = params.parse::<HeightParams>();
        }
        5 => {
            if let Ok(p) = params.parse::<AddressParams>() {
                let _ = p.decode();
            }
        }
        6 => {
            if let Ok(p) = params.parse::<DataParams>() {
                let _ = p.decode();
            }
        }
        7 => {
            let _ = params.parse::<TransferParams>();
        }
        _ => {
            let _ = subscribe_params(Some(raw));
        }
    }
});
