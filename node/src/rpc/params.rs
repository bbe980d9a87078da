//! Every method's parameters: the types jsonrpsee parses them into and the node's decoders
//! for their fields (hex transactions, hashes, keys, data keys). Public so that the
//! `json_rpc_params` fuzz target runs exactly these.

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_crypto::{Digest, PublicKey};

use super::codes;

pub fn error(code: i32, message: impl Into<String>, data: Option<Value>) -> ErrorObjectOwned {
    ErrorObject::owned(code, message.into(), data)
}

#[derive(Deserialize, Default, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    #[serde(default)]
    pub include_txs: Option<bool>,
}

/// `subscribe_blocks`' parameters: none, `{"include_txs": BOOL}`, or that object as the one
/// element of an array (many client libraries always send an array). Anything else is refused:
/// read as "no parameters", a client asking for no bodies would silently get them all.
pub fn subscribe_params(raw: Option<&str>) -> Result<SubscribeParams, ErrorObjectOwned> {
    let Some(raw) = raw else {
        return Ok(SubscribeParams::default());
    };
    let value: Value = serde_json::from_str(raw).map_err(|e| invalid_params(e.to_string()))?;
    let object = match value {
        Value::Null => return Ok(SubscribeParams::default()),
        Value::Array(a) if a.is_empty() => return Ok(SubscribeParams::default()),
        Value::Object(_) => value,
        Value::Array(mut a) if a.len() == 1 && a[0].is_object() => a.remove(0),
        _ => {
            return Err(invalid_params(
                "expected {\"include_txs\": BOOL}, or that object alone in an array",
            ));
        }
    };
    serde_json::from_value(object).map_err(|e| invalid_params(e.to_string()))
}

pub fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    error(jsonrpsee::types::error::INVALID_PARAMS_CODE, message, None)
}

pub fn parse_hex_tx(s: &str) -> Result<Vec<u8>, ErrorObjectOwned> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    // Into a buffer of the final size (`hex::decode` grows its vector as it goes).
    let mut out = vec![0u8; s.len() / 2];
    if !s.len().is_multiple_of(2) || hex::decode_to_slice(s, &mut out).is_err() {
        return Err(error(
            codes::MALFORMED,
            "transaction is not hex",
            Some(json!({"reason": "malformed"})),
        ));
    }
    Ok(out)
}

pub fn parse_digest(s: &str) -> Result<Digest, ErrorObjectOwned> {
    Digest::from_hex(s).map_err(|e| invalid_params(format!("hash: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    /// A validator's name or index in genesis.
    pub to: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxParams {
    pub tx: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxsParams {
    pub txs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashParams {
    pub hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    pub hash: String,
    #[serde(default = "default_wait")]
    pub timeout_ms: u64,
}

fn default_wait() -> u64 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeightParams {
    pub height: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressParams {
    pub address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataParams {
    pub owner: String,
    pub key: String,
}

impl DataParams {
    /// The owner's key and the data key (1 to `DATA_KEY_BYTES_MAX` bytes of hex).
    pub fn decode(&self) -> Result<(PublicKey, Vec<u8>), ErrorObjectOwned> {
        let owner =
            PublicKey::from_hex(&self.owner).map_err(|e| invalid_params(format!("owner: {e}")))?;
        let key = hex::decode(&self.key).map_err(|e| invalid_params(format!("key: {e}")))?;
        if key.is_empty() || key.len() > tally_ledger::tx::DATA_KEY_BYTES_MAX {
            return Err(invalid_params(format!(
                "key: {} bytes; 1 to {} allowed",
                key.len(),
                tally_ledger::tx::DATA_KEY_BYTES_MAX
            )));
        }
        Ok((owner, key))
    }
}

impl AddressParams {
    pub fn decode(&self) -> Result<PublicKey, ErrorObjectOwned> {
        PublicKey::from_hex(&self.address).map_err(|e| invalid_params(format!("address: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_params_in_every_accepted_shape_and_refused_otherwise() {
        let none = SubscribeParams { include_txs: None };
        let no_bodies = SubscribeParams {
            include_txs: Some(false),
        };
        assert_eq!(subscribe_params(None).unwrap(), none);
        assert_eq!(subscribe_params(Some("[]")).unwrap(), none);
        assert_eq!(subscribe_params(Some("{}")).unwrap(), none);
        assert_eq!(
            subscribe_params(Some(r#"{"include_txs":false}"#)).unwrap(),
            no_bodies
        );
        assert_eq!(
            subscribe_params(Some(r#"[{"include_txs":false}]"#)).unwrap(),
            no_bodies
        );
        for bad in [
            "[false]",
            r#"[{"include_txs":false},1]"#,
            r#"{"include_tx":false}"#,
            r#"{"include_txs":"no"}"#,
            "7",
        ] {
            let e = subscribe_params(Some(bad)).unwrap_err();
            assert_eq!(
                e.code(),
                jsonrpsee::types::error::INVALID_PARAMS_CODE,
                "{bad}"
            );
        }
    }

    #[test]
    fn transactions_arrive_as_hex_or_are_malformed() {
        assert_eq!(parse_hex_tx("00ff10").unwrap(), vec![0x00, 0xff, 0x10]);
        assert_eq!(parse_hex_tx("0xABcd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(parse_hex_tx("").unwrap(), Vec::<u8>::new());
        for bad in ["0", "abc", "zz", "0x0g", "éé"] {
            let e = parse_hex_tx(bad).unwrap_err();
            assert_eq!(e.code(), codes::MALFORMED, "{bad}");
        }
    }
}
