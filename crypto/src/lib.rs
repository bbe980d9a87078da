//! Tally's cryptography.
//!
//! * [`Digest`]: SHA-256, for block hashes, batch digests, transaction hashes and state roots.
//! * [`SecretKey`] / [`PublicKey`] / [`Signature`]: ed25519. Every signature binds a
//!   [`Domain`] (the message kind) and a [`ChainId`], so a signature made for one kind of
//!   message or one chain never verifies for another.
//! * One validity rule everywhere (see [`verify_one`]): `verify_strict`'s encoding checks
//!   (canonical `A`, `R` and `S`; no small-order `A` or `R`) with the cofactored equation, so
//!   single and batch verification accept exactly the same signatures.
//! * [`Verified<T>`]: only [`verify`] and [`verify_batch`] construct one, so code that takes a
//!   `Verified<T>` (the consensus core, execution) cannot be handed an unchecked message.
//! * [`keyfile`]: the on-disk key format, written with mode 0600; readable-by-others files are
//!   refused.
//!
//! ```
//! use tally_crypto::{ChainId, Domain, SecretKey, SignatureCheck, ValidKey, verify_one};
//!
//! const GREETING: Domain = Domain::new("example/greeting/v1");
//! let chain = ChainId::new("demo-chain").unwrap();
//! let key = SecretKey::from_seed(&[7; 32]);
//! let signature = key.sign(GREETING, &chain, b"hello");
//! let check = SignatureCheck {
//!     key: ValidKey::new(&key.public_key()).unwrap(),
//!     domain: GREETING,
//!     body: b"hello".to_vec(),
//!     signature,
//! };
//! assert!(verify_one(&chain, &check).is_ok());
//! // The same signature does not verify on another chain.
//! assert!(verify_one(&ChainId::new("other-chain").unwrap(), &check).is_err());
//! ```

mod digest;
pub mod keyfile;
mod keys;
mod verify;

use std::fmt;

pub use digest::{Digest, Hasher};
pub use keys::{KeyCache, PublicKey, SecretKey, Signature, ValidKey, signing_message};
pub use verify::{
    SignatureCache, SignatureCheck, Verifiable, Verified, raw, verify, verify_batch, verify_cached,
    verify_one,
};

/// Lower-case hex of `bytes`. A table lookup per byte: the `hex` crate's encoder builds its
/// string a `char` at a time, and hex is how every transaction travels over JSON-RPC (a
/// benchmark client spent ≈ 40% of its CPU in it).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 0xf) as usize]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Errors of this crate. Every one is a rejection of input, never a bug.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("invalid {what}: {reason}")]
    InvalidHex { what: &'static str, reason: String },
    #[error("invalid public key: not a canonical encoding of a point in the prime-order subgroup")]
    InvalidPublicKey,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("invalid chain id {chain_id:?}: {reason}")]
    InvalidChainId {
        chain_id: String,
        reason: &'static str,
    },
    #[error("signer {signer} is not known")]
    UnknownSigner { signer: String },
    #[error("malformed signed message: {reason}")]
    Malformed { reason: String },
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "key file {path} has mode {mode:o}: a secret key must not be readable by group or others (run `chmod 600 {path}`)"
    )]
    KeyFileInsecure { path: String, mode: u32 },
}

/// A chain identifier: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(String);

impl ChainId {
    pub const MAX_LEN: usize = 64;

    pub fn new(chain_id: impl Into<String>) -> Result<ChainId, CryptoError> {
        let chain_id = chain_id.into();
        let reason = if chain_id.is_empty() {
            Some("it is empty")
        } else if chain_id.len() > Self::MAX_LEN {
            Some("it is longer than 64 bytes")
        } else if !chain_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(CryptoError::InvalidChainId { chain_id, reason }),
            None => Ok(ChainId(chain_id)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ChainId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ChainId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChainId::new(s).map_err(serde::de::Error::custom)
    }
}

/// The kind of message a signature is for: an ASCII tag of 1 to 64 bytes, e.g.
/// `"tally/tx/v1"`. Each message kind has its own constant next to its encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(&'static str);

impl Domain {
    pub const fn new(tag: &'static str) -> Domain {
        assert!(
            !tag.is_empty() && tag.len() <= 64,
            "a domain tag is 1 to 64 bytes"
        );
        Domain(tag)
    }

    pub fn tag(&self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

pub(crate) fn parse_hex_array<const N: usize>(
    s: &str,
    what: &'static str,
) -> Result<[u8; N], CryptoError> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() != 2 * N {
        return Err(CryptoError::InvalidHex {
            what,
            reason: format!("expected {} hex digits, got {}", 2 * N, s.len()),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| CryptoError::InvalidHex {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Serde as a hex string, for the byte-array newtypes.
#[macro_export]
#[doc(hidden)]
macro_rules! hex_serde {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_hex_matches_the_hex_crate() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(to_hex(&all), hex::encode(&all));
        assert_eq!(to_hex(&[]), "");
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn chain_id_rules() {
        assert!(ChainId::new("tally-devnet.1_a").is_ok());
        assert!(ChainId::new("").is_err());
        assert!(ChainId::new("a".repeat(65)).is_err());
        assert!(ChainId::new("a".repeat(64)).is_ok());
        assert!(ChainId::new("has space").is_err());
        assert!(ChainId::new("ünicode").is_err());
        assert!(serde_json::from_str::<ChainId>("\"\"").is_err());
    }
}
