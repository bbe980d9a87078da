//! SHA-256 digests.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::CryptoError;

/// A SHA-256 digest: block hashes, batch digests, transaction hashes, state roots.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest: the `prev_hash` of block 1 and the root of nothing.
    pub const ZERO: Digest = Digest([0; 32]);

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(sha2::Sha256::digest(data).into())
    }

    /// An incremental hasher, for data that is not contiguous.
    pub fn hasher() -> Hasher {
        Hasher(sha2::Sha256::new())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        crate::to_hex(&self.0)
    }

    /// Parses 64 hex digits (an optional `0x` prefix is allowed).
    pub fn from_hex(s: &str) -> Result<Digest, CryptoError> {
        Ok(Digest(crate::parse_hex_array::<32>(s, "digest")?))
    }
}

/// Incremental SHA-256.
#[derive(Clone)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    pub fn finalize(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits identify a digest in logs without flooding them.
        write!(f, "{}", &self.to_hex()[..8])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::from_hex(s)
    }
}

crate::hex_serde!(Digest);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 appendix B.1.
        assert_eq!(
            Digest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Digest::hasher();
        h.update(b"a").update(b"bc");
        assert_eq!(h.finalize(), Digest::of(b"abc"));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::from_hex(&d.to_hex()).unwrap(), d);
        assert_eq!(Digest::from_hex(&format!("0x{d}")).unwrap(), d);
        assert!(Digest::from_hex("abcd").is_err());
        assert!(Digest::from_hex(&"zz".repeat(32)).is_err());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }
}
