//! Commit certificates (commit proofs), stored with every block so a client can check a block
//! with only the genesis keys. What one holds depends on the validators' fault model:
//!
//! * Byzantine (PBFT): 2f + 1 signed COMMITs for `(view, seq, digest)` — a quorum voted for
//!   the block, so no other block can commit at `seq`.
//! * Crash (Raft, Multi-Paxos): one signature, by the leader of term / ballot round `view`,
//!   over the same body under [`LEADER_COMMIT_DOMAIN`] — the leader proposed the block at
//!   `seq`. It proves who proposed the block and that it is unaltered; that it committed rests
//!   on the crash-fault assumption (validators follow the protocol), not on the signature.

use std::collections::HashSet;

use tally_crypto::{ChainId, CryptoError, Digest, Domain, Signature, SignatureCheck, Verifiable};

use crate::{FaultModel, Seq, ValidatorId, ValidatorSet, View};

/// The domain of PBFT COMMIT signatures.
pub const COMMIT_DOMAIN: Domain = Domain::new("tally/pbft/commit/v1");

/// The domain of a crash-fault leader's signature over the blocks it proposes.
pub const LEADER_COMMIT_DOMAIN: Domain = Domain::new("tally/cft/leader-commit/v1");

/// The signed body of a COMMIT: `view u64 LE ‖ seq u64 LE ‖ digest (32)`.
pub fn commit_body(view: View, seq: Seq, digest: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&view.0.to_le_bytes());
    out.extend_from_slice(&seq.0.to_le_bytes());
    out.extend_from_slice(&digest.0);
    out
}

/// Proof that `digest` committed at `seq`: COMMIT signatures of a quorum of distinct
/// validators, all in `view` (Byzantine), or the signature of the leader of `view` (crash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCertificate {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
    /// Sorted by validator id, one per validator.
    pub signatures: Vec<(ValidatorId, Signature)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    #[error("certificate has {got} distinct signers; a quorum is {need}")]
    NoQuorum { got: usize, need: usize },
    #[error("certificate names validator {0}, which is not in the validator set")]
    UnknownValidator(u16),
    #[error("certificate is for {got:?}, expected {expected:?}")]
    WrongTarget { expected: String, got: String },
    #[error("certificate signature invalid: {0}")]
    Signature(#[from] CryptoError),
}

impl CommitCertificate {
    /// `view u64 ‖ seq u64 ‖ digest 32 ‖ count u16 ‖ (validator u16 ‖ signature 64)*`, all LE.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(50 + 66 * self.signatures.len());
        out.extend_from_slice(&self.view.0.to_le_bytes());
        out.extend_from_slice(&self.seq.0.to_le_bytes());
        out.extend_from_slice(&self.digest.0);
        out.extend_from_slice(&(self.signatures.len() as u16).to_le_bytes());
        for (id, sig) in &self.signatures {
            out.extend_from_slice(&id.0.to_le_bytes());
            out.extend_from_slice(&sig.0);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<CommitCertificate, CertificateError> {
        let bad = |m: &str| CertificateError::Malformed(m.to_string());
        if bytes.len() < 50 {
            return Err(bad("too short"));
        }
        let count = u16::from_le_bytes([bytes[48], bytes[49]]) as usize;
        if bytes.len() != 50 + 66 * count {
            return Err(bad("length does not match the signature count"));
        }
        let mut signatures = Vec::with_capacity(count);
        for chunk in bytes[50..].chunks_exact(66) {
            let id = ValidatorId(u16::from_le_bytes([chunk[0], chunk[1]]));
            signatures.push((id, Signature(chunk[2..].try_into().expect("64 bytes"))));
        }
        Ok(CommitCertificate {
            view: View(u64::from_le_bytes(bytes[..8].try_into().expect("8"))),
            seq: Seq(u64::from_le_bytes(bytes[8..16].try_into().expect("8"))),
            digest: Digest(bytes[16..48].try_into().expect("32")),
            signatures,
        })
    }

    /// Checks the structure (a quorum of distinct, known signers, sorted) and every signature
    /// against `validators`; `expected` pins the sequence number and digest it must certify.
    pub fn verify(
        &self,
        validators: &ValidatorSet,
        chain_id: &ChainId,
        expected: Option<(Seq, Digest)>,
    ) -> Result<(), CertificateError> {
        if let Some((seq, digest)) = expected
            && (seq, digest) != (self.seq, self.digest)
        {
            return Err(CertificateError::WrongTarget {
                expected: format!("{seq:?} {digest:?}"),
                got: format!("{:?} {:?}", self.seq, self.digest),
            });
        }
        self.check_structure(validators)?;
        tally_crypto::verify(validators, chain_id, self.clone())?;
        Ok(())
    }

    /// [`CommitCertificate::verify`] with a cache of signatures already checked (the COMMITs
    /// a replica received are the certificate's signatures).
    pub fn verify_cached(
        &self,
        validators: &ValidatorSet,
        chain_id: &ChainId,
        expected: Option<(Seq, Digest)>,
        cache: &mut dyn tally_crypto::SignatureCache,
    ) -> Result<(), CertificateError> {
        if let Some((seq, digest)) = expected
            && (seq, digest) != (self.seq, self.digest)
        {
            return Err(CertificateError::WrongTarget {
                expected: format!("{seq:?} {digest:?}"),
                got: format!("{:?} {:?}", self.seq, self.digest),
            });
        }
        self.check_structure(validators)?;
        tally_crypto::verify_cached(validators, chain_id, self.clone(), cache)?;
        Ok(())
    }

    fn check_structure(&self, validators: &ValidatorSet) -> Result<(), CertificateError> {
        let mut seen = HashSet::new();
        for (id, _) in &self.signatures {
            if validators.key(*id).is_none() {
                return Err(CertificateError::UnknownValidator(id.0));
            }
            if !seen.insert(*id) {
                return Err(CertificateError::Malformed(format!(
                    "validator {id} signs twice"
                )));
            }
        }
        let need = match validators.model() {
            FaultModel::Byzantine => validators.quorum(),
            FaultModel::Crash => 1,
        };
        if seen.len() < need {
            return Err(CertificateError::NoQuorum {
                got: seen.len(),
                need,
            });
        }
        if validators.model() == FaultModel::Crash && seen.len() > 1 {
            return Err(CertificateError::Malformed(
                "a crash-fault commit proof holds one signature, the leader's".into(),
            ));
        }
        Ok(())
    }
}

impl Verifiable for CommitCertificate {
    type Context = ValidatorSet;

    fn signature_checks(
        &self,
        validators: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        let body = commit_body(self.view, self.seq, &self.digest);
        let domain = match validators.model() {
            FaultModel::Byzantine => COMMIT_DOMAIN,
            FaultModel::Crash => LEADER_COMMIT_DOMAIN,
        };
        for (id, sig) in &self.signatures {
            let key = validators.key(*id).ok_or(CryptoError::UnknownSigner {
                signer: id.to_string(),
            })?;
            out.push(SignatureCheck {
                key: *key,
                domain,
                body: body.clone(),
                signature: *sig,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_crypto::SecretKey;

    fn setup() -> (Vec<SecretKey>, ValidatorSet, ChainId) {
        let keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let set =
            ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
        (keys, set, ChainId::new("c").unwrap())
    }

    fn cert(keys: &[SecretKey], signers: &[u16], chain: &ChainId) -> CommitCertificate {
        let digest = Digest::of(b"batch");
        let body = commit_body(View(2), Seq(9), &digest);
        CommitCertificate {
            view: View(2),
            seq: Seq(9),
            digest,
            signatures: signers
                .iter()
                .map(|&i| {
                    (
                        ValidatorId(i),
                        keys[i as usize].sign(COMMIT_DOMAIN, chain, &body),
                    )
                })
                .collect(),
        }
    }

    /// Castro–Liskov TOCS'02 §4.1: committed-local needs 2f + 1 matching COMMITs from
    /// distinct replicas; the certificate is that set of signatures.
    #[test]
    fn quorum_of_distinct_valid_signers() {
        let (keys, set, chain) = setup();
        let c = cert(&keys, &[0, 1, 3], &chain);
        assert_eq!(CommitCertificate::decode(&c.encode()).unwrap(), c);
        c.verify(&set, &chain, Some((Seq(9), Digest::of(b"batch"))))
            .unwrap();
        assert!(matches!(
            cert(&keys, &[0, 1], &chain).verify(&set, &chain, None),
            Err(CertificateError::NoQuorum { got: 2, need: 3 })
        ));
        let mut dup = cert(&keys, &[0, 1, 1], &chain);
        assert!(dup.verify(&set, &chain, None).is_err());
        dup.signatures[2].0 = ValidatorId(9);
        assert!(matches!(
            dup.verify(&set, &chain, None),
            Err(CertificateError::UnknownValidator(9))
        ));
        // A signature by the wrong validator, or for another chain, fails.
        let mut swapped = cert(&keys, &[0, 1, 2], &chain);
        swapped.signatures[2].1 = swapped.signatures[1].1;
        assert!(swapped.verify(&set, &chain, None).is_err());
        let other = ChainId::new("other").unwrap();
        assert!(
            cert(&keys, &[0, 1, 2], &other)
                .verify(&set, &chain, None)
                .is_err()
        );
        assert!(matches!(
            c.verify(&set, &chain, Some((Seq(10), Digest::of(b"batch")))),
            Err(CertificateError::WrongTarget { .. })
        ));
        assert!(CommitCertificate::decode(&c.encode()[..60]).is_err());
    }
}
