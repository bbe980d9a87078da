//! Proofs of availability and validity for data batches.
//!
//! A validator packs the transactions its clients sent it into a batch and streams the batch
//! to every other validator. What consensus orders is not the batch but its [`BatchHeader`]
//! (who made it, its number, its size, the digest of its transactions' hashes), together with
//! a [`BatchProof`]: signed [`attestation`](attestation_body)s of `f + 1` distinct validators
//! saying "I hold this batch, and every transaction in it is well formed and validly signed
//! for this chain". One of any `f + 1` validators is honest, so a proven batch is available
//! from at least one honest validator and passed the validity rule there.
//!
//! The header's size fields are claims of the author that the attesters check against the
//! body; a proof therefore also bounds what fetching and executing the batch can cost.

use std::collections::HashSet;

mod dissemination;

pub use dissemination::{
    AttestationError, Disseminator, DisseminatorInput, DisseminatorOutput, Frame, ask_order,
    designated,
};

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::{ChainId, CryptoError, Digest, Domain, Signature, SignatureCheck, Verifiable};

use crate::{ValidatorId, ValidatorSet};

/// The domain of attestation signatures.
pub const ATTEST_DOMAIN: Domain = Domain::new("tally/batch/attest/v1");

/// The most transactions one data batch may hold.
pub const BATCH_TXS_MAX: u32 = 8_192;
/// The most bytes of transactions one data batch may hold.
pub const BATCH_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// What identifies a data batch and what validators attest to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct BatchHeader {
    /// The validator that made the batch from its clients' transactions.
    pub author: ValidatorId,
    /// The author's batch counter: 0, 1, 2, … An honest author never reuses a number; an
    /// attester signs at most one header per `(author, index)`.
    pub index: u64,
    /// Transactions in the batch.
    pub tx_count: u32,
    /// Sum of the transactions' encoded lengths.
    pub bytes: u32,
    /// [`crate::batch_digest`] of the transactions' hashes, in batch order.
    pub tx_digest: Digest,
}

impl BatchHeader {
    /// The attested bytes: `author u16 ‖ index u64 ‖ tx_count u32 ‖ bytes u32 ‖ tx_digest`,
    /// little-endian, 50 bytes.
    pub fn encode(&self) -> [u8; 50] {
        let mut out = [0u8; 50];
        out[..2].copy_from_slice(&self.author.0.to_le_bytes());
        out[2..10].copy_from_slice(&self.index.to_le_bytes());
        out[10..14].copy_from_slice(&self.tx_count.to_le_bytes());
        out[14..18].copy_from_slice(&self.bytes.to_le_bytes());
        out[18..].copy_from_slice(&self.tx_digest.0);
        out
    }

    /// The inverse of [`BatchHeader::encode`] (`None` unless exactly 50 bytes).
    pub fn decode(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() != 50 {
            return None;
        }
        Some(BatchHeader {
            author: ValidatorId(u16::from_le_bytes(bytes[..2].try_into().ok()?)),
            index: u64::from_le_bytes(bytes[2..10].try_into().ok()?),
            tx_count: u32::from_le_bytes(bytes[10..14].try_into().ok()?),
            bytes: u32::from_le_bytes(bytes[14..18].try_into().ok()?),
            tx_digest: Digest(bytes[18..].try_into().ok()?),
        })
    }

    /// SHA-256 of [`BatchHeader::encode`]: the name of the batch in proposals and requests.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// Whether the size claims are within the limits every validator applies.
    pub fn within_limits(&self) -> bool {
        self.tx_count > 0 && self.tx_count <= BATCH_TXS_MAX && self.bytes <= BATCH_BYTES_MAX
    }
}

/// The signed body of an attestation: the header's encoding.
pub fn attestation_body(header: &BatchHeader) -> Vec<u8> {
    header.encode().to_vec()
}

/// `f + 1` or more attestations of distinct validators over one header.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BatchProof {
    pub header: BatchHeader,
    /// Sorted by validator id, one per validator.
    pub attestations: Vec<(ValidatorId, Signature)>,
}

/// Why a batch proof is refused (before or instead of checking its signatures).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("batch proof has {got} distinct attesters; f + 1 = {need} are needed")]
    TooFewAttesters { got: usize, need: usize },
    #[error("batch proof names validator {0}, which is not in the validator set")]
    UnknownValidator(u16),
    #[error("batch proof attesters are not sorted and distinct")]
    Unsorted,
    #[error(
        "batch header is outside the limits (transactions 1..={BATCH_TXS_MAX}, bytes ≤ {BATCH_BYTES_MAX})"
    )]
    Limits,
    #[error("batch header names author {0}, which is not in the validator set")]
    UnknownAuthor(u16),
    #[error("batch proof signature invalid: {0}")]
    Signature(#[from] CryptoError),
}

impl BatchProof {
    /// Everything but the signatures: known author, size limits, at least `f + 1` known,
    /// distinct attesters in increasing order (so a proof has one encoding per set of
    /// attesters, and at most `n` signatures to check).
    pub fn check_structure(&self, validators: &ValidatorSet) -> Result<(), ProofError> {
        if validators.key(self.header.author).is_none() {
            return Err(ProofError::UnknownAuthor(self.header.author.0));
        }
        if !self.header.within_limits() {
            return Err(ProofError::Limits);
        }
        for pair in self.attestations.windows(2) {
            if pair[0].0 >= pair[1].0 {
                return Err(ProofError::Unsorted);
            }
        }
        for (id, _) in &self.attestations {
            if validators.key(*id).is_none() {
                return Err(ProofError::UnknownValidator(id.0));
            }
        }
        let need = validators.weak_quorum();
        if self.attestations.len() < need {
            return Err(ProofError::TooFewAttesters {
                got: self.attestations.len(),
                need,
            });
        }
        Ok(())
    }

    /// [`BatchProof::check_structure`] and every signature.
    pub fn verify(&self, validators: &ValidatorSet, chain_id: &ChainId) -> Result<(), ProofError> {
        self.check_structure(validators)?;
        tally_crypto::verify(validators, chain_id, self.clone())?;
        Ok(())
    }

    /// The distinct attesters (validators that hold the batch).
    pub fn holders(&self) -> impl Iterator<Item = ValidatorId> + '_ {
        self.attestations.iter().map(|(id, _)| *id)
    }
}

impl Verifiable for BatchProof {
    type Context = ValidatorSet;

    fn signature_checks(
        &self,
        validators: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        let body = attestation_body(&self.header);
        let mut seen = HashSet::new();
        for (id, signature) in &self.attestations {
            let key = validators.key(*id).ok_or(CryptoError::UnknownSigner {
                signer: id.to_string(),
            })?;
            if !seen.insert(*id) {
                return Err(CryptoError::Malformed {
                    reason: format!("validator {id} attests twice"),
                });
            }
            out.push(SignatureCheck {
                key: *key,
                domain: ATTEST_DOMAIN,
                body: body.clone(),
                signature: *signature,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_crypto::SecretKey;

    fn setup(n: u8) -> (Vec<SecretKey>, ValidatorSet, ChainId) {
        let keys: Vec<SecretKey> = (1..=n).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let set =
            ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
        (keys, set, ChainId::new("c").unwrap())
    }

    fn header() -> BatchHeader {
        BatchHeader {
            author: ValidatorId(1),
            index: 7,
            tx_count: 3,
            bytes: 1500,
            tx_digest: Digest::of(b"txs"),
        }
    }

    fn proof(keys: &[SecretKey], signers: &[u16], chain: &ChainId) -> BatchProof {
        let h = header();
        BatchProof {
            header: h,
            attestations: signers
                .iter()
                .map(|&i| {
                    let body = attestation_body(&h);
                    (
                        ValidatorId(i),
                        keys[i as usize].sign(ATTEST_DOMAIN, chain, &body),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn f_plus_one_distinct_attesters_make_a_proof() {
        let (keys, set, chain) = setup(4);
        assert_eq!(proof(&keys, &[0, 1], &chain).verify(&set, &chain), Ok(()));
        assert_eq!(
            proof(&keys, &[0, 1, 2, 3], &chain).verify(&set, &chain),
            Ok(())
        );
        assert_eq!(
            proof(&keys, &[1], &chain).verify(&set, &chain),
            Err(ProofError::TooFewAttesters { got: 1, need: 2 })
        );
        assert_eq!(
            proof(&keys, &[1, 1], &chain).verify(&set, &chain),
            Err(ProofError::Unsorted)
        );
        assert_eq!(
            proof(&keys, &[2, 1], &chain).verify(&set, &chain),
            Err(ProofError::Unsorted)
        );
        let (keys7, set7, _) = setup(7);
        assert_eq!(
            proof(&keys7, &[0, 1], &chain).verify(&set7, &chain),
            Err(ProofError::TooFewAttesters { got: 2, need: 3 })
        );
        assert_eq!(
            proof(&keys7, &[0, 3, 6], &chain).verify(&set7, &chain),
            Ok(())
        );
    }

    #[test]
    fn a_signature_over_another_header_or_chain_fails() {
        let (keys, set, chain) = setup(4);
        let mut p = proof(&keys, &[0, 2], &chain);
        p.header.index += 1;
        assert!(matches!(
            p.verify(&set, &chain),
            Err(ProofError::Signature(_))
        ));
        let p = proof(&keys, &[0, 2], &ChainId::new("other").unwrap());
        assert!(matches!(
            p.verify(&set, &chain),
            Err(ProofError::Signature(_))
        ));
        // A COMMIT-domain signature over the same bytes is not an attestation.
        let mut p = proof(&keys, &[0, 2], &chain);
        p.attestations[1].1 =
            keys[2].sign(crate::COMMIT_DOMAIN, &chain, &attestation_body(&p.header));
        assert!(matches!(
            p.verify(&set, &chain),
            Err(ProofError::Signature(_))
        ));
    }

    #[test]
    fn unknown_validators_and_limits_are_refused_before_signatures() {
        let (keys, set, chain) = setup(4);
        let mut p = proof(&keys, &[0, 2], &chain);
        p.attestations.push((ValidatorId(9), p.attestations[0].1));
        assert_eq!(
            p.check_structure(&set),
            Err(ProofError::UnknownValidator(9))
        );
        let mut p = proof(&keys, &[0, 2], &chain);
        p.header.author = ValidatorId(4);
        assert_eq!(p.check_structure(&set), Err(ProofError::UnknownAuthor(4)));
        for (count, bytes) in [(0, 0), (BATCH_TXS_MAX + 1, 10), (1, BATCH_BYTES_MAX + 1)] {
            let mut p = proof(&keys, &[0, 2], &chain);
            p.header.tx_count = count;
            p.header.bytes = bytes;
            assert_eq!(p.check_structure(&set), Err(ProofError::Limits));
        }
    }

    #[test]
    fn header_encoding_is_fixed() {
        let h = header();
        let e = h.encode();
        assert_eq!(&e[..2], &[1, 0]);
        assert_eq!(&e[2..10], &7u64.to_le_bytes());
        assert_eq!(&e[10..14], &3u32.to_le_bytes());
        assert_eq!(&e[14..18], &1500u32.to_le_bytes());
        assert_eq!(&e[18..], &Digest::of(b"txs").0);
        assert_eq!(h.digest(), Digest::of(&e));
    }
}
