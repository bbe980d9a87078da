//! Who signs for this replica.

use tally_crypto::{ChainId, Domain, PublicKey, SecretKey, Signature};

/// Signs protocol messages. Only [`crate::pbft::safety::SafetyRules`] calls it, after it has
/// decided the signature is safe to give and recorded it.
pub trait Signer: Send {
    fn public_key(&self) -> PublicKey;
    fn sign(&self, domain: Domain, body: &[u8]) -> Signature;
}

/// The real signer: an ed25519 key bound to the chain id.
pub struct KeySigner {
    key: SecretKey,
    chain_id: ChainId,
}

impl KeySigner {
    pub fn new(key: SecretKey, chain_id: ChainId) -> KeySigner {
        KeySigner { key, chain_id }
    }
}

impl Signer for KeySigner {
    fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    fn sign(&self, domain: Domain, body: &[u8]) -> Signature {
        self.key.sign(domain, &self.chain_id, body)
    }
}
