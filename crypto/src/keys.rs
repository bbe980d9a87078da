//! Keys and signatures, and the one signature-validity rule.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::EdwardsPoint;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signer as _, SigningKey};
use zeroize::Zeroizing;

use crate::{ChainId, CryptoError, Domain};

/// An ed25519 public key (32 bytes, the compressed point). An account's address is its public
/// key in hex.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature: `R ‖ S`, 64 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

/// An ed25519 secret key. The seed is zeroed when the key is dropped (ed25519-dalek's
/// `SigningKey` is `ZeroizeOnDrop`), and `Debug` never prints it.
pub struct SecretKey {
    signing: SigningKey,
    public: PublicKey,
}

impl PublicKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        crate::to_hex(&self.0)
    }

    /// Parses 64 hex digits (an optional `0x` prefix is allowed). This checks the format only;
    /// whether the bytes are a valid key is decided by [`ValidKey::new`].
    pub fn from_hex(s: &str) -> Result<PublicKey, CryptoError> {
        Ok(PublicKey(crate::parse_hex_array::<32>(s, "public key")?))
    }
}

impl Signature {
    pub fn to_hex(&self) -> String {
        crate::to_hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Result<Signature, CryptoError> {
        Ok(Signature(crate::parse_hex_array::<64>(s, "signature")?))
    }

    pub(crate) fn r_bytes(&self) -> [u8; 32] {
        self.0[..32].try_into().expect("64 = 32 + 32")
    }

    pub(crate) fn s_bytes(&self) -> [u8; 32] {
        self.0[32..].try_into().expect("64 = 32 + 32")
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    #[cfg(feature = "os-rng")]
    pub fn generate() -> SecretKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("the OS random source is available");
        SecretKey::from_seed(&seed)
    }

    /// The key with this 32-byte seed (RFC 8032's "private key").
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        let signing = SigningKey::from_bytes(seed);
        let public = PublicKey(signing.verifying_key().to_bytes());
        SecretKey { signing, public }
    }

    /// The 32-byte seed, in a buffer that is zeroed on drop.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `body` for `domain` on `chain_id`: the signed bytes are
    /// [`signing_message`]`(domain, chain_id, body)`, so the signature verifies for no other
    /// message kind and no other chain.
    pub fn sign(&self, domain: Domain, chain_id: &ChainId, body: &[u8]) -> Signature {
        let message = signing_message(domain, chain_id, body);
        Signature(self.signing.sign(&message).to_bytes())
    }
}

impl SecretKey {
    /// An RFC 8032 signature over `message` with no domain or chain prefix, for test vectors.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        SecretKey::from_seed(&self.seed())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {:?})", self.public)
    }
}

/// The bytes an ed25519 signature covers: `len(domain) ‖ domain ‖ len(chain_id) ‖ chain_id ‖
/// body`, each length one byte. Both tags are at most 64 bytes, so the prefix is unambiguous.
pub fn signing_message(domain: Domain, chain_id: &ChainId, body: &[u8]) -> Vec<u8> {
    let tag = domain.tag().as_bytes();
    let chain = chain_id.as_str().as_bytes();
    let mut message = Vec::with_capacity(2 + tag.len() + chain.len() + body.len());
    message.push(tag.len() as u8);
    message.extend_from_slice(tag);
    message.push(chain.len() as u8);
    message.extend_from_slice(chain);
    message.extend_from_slice(body);
    message
}

/// A public key that passed the key half of the validity rule (see [`crate::verify_one`]): the
/// canonical encoding of a point that is not of small order. Decompressing costs a few
/// microseconds, so hold on to `ValidKey`s (the validator set, a cache of account keys).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ValidKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
}

impl ValidKey {
    pub fn new(public: &PublicKey) -> Result<ValidKey, CryptoError> {
        let point = strict_point(&public.0).ok_or(CryptoError::InvalidPublicKey)?;
        Ok(ValidKey {
            bytes: public.0,
            point,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.bytes)
    }

    pub(crate) fn point(&self) -> &EdwardsPoint {
        &self.point
    }
}

impl fmt::Debug for ValidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValidKey({:?})", self.public_key())
    }
}

/// A bounded cache of validated public keys: decompressing a key costs about as much as
/// decompressing a signature's `R`, and clients sign many transactions with one key. When
/// full it starts over (the cost of a miss is one decompression).
pub struct KeyCache {
    keys: std::sync::Mutex<std::collections::HashMap<PublicKey, ValidKey>>,
    capacity: usize,
}

impl KeyCache {
    pub fn new(capacity: usize) -> KeyCache {
        KeyCache {
            keys: std::sync::Mutex::new(std::collections::HashMap::new()),
            capacity,
        }
    }

    /// The validated key, from the cache or freshly checked. Invalid keys are not cached.
    pub fn get(&self, public: &PublicKey) -> Result<ValidKey, CryptoError> {
        if let Some(k) = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(public)
        {
            return Ok(*k);
        }
        let key = ValidKey::new(public)?;
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= self.capacity {
            keys.clear();
        }
        keys.insert(*public, key);
        Ok(key)
    }
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(100_000)
    }
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyCache")
    }
}

/// The point `bytes` encodes, when the encoding is canonical and the point is not of small
/// order; `None` otherwise.
///
/// Canonical: the 255-bit `y` is below p = 2^255 − 19. (The other non-canonical encodings, a
/// set sign bit with x = 0, only exist for y = ±1, which are small-order points.)
pub(crate) fn strict_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let y_at_least_p =
        bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed;
    if y_at_least_p {
        return None;
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    if point.is_small_order() {
        return None;
    }
    Some(point)
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for PublicKey {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::from_hex(s)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", &self.to_hex()[..8])
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

crate::hex_serde!(PublicKey);
crate::hex_serde!(Signature);
