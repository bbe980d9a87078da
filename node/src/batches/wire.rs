//! Frames on the batch stream (borsh-encoded; one frame per p2p message).
//!
//! `tag u8 ‖ …`: 0 `Batch { attest bool, body }` (a batch from its author; `body` is
//! [`TxBatch::encode`]), 1 `Attestation { header, signature }`, 2 `Fetch { digests }` (the
//! bodies of proven batches this node lacks; at most [`FETCH_MAX`]), 3 `Fetched { body }` (an
//! answer to `Fetch`, from any holder), 4 `Proofs { proofs }` (batch proofs: an author's
//! newly proven batches, or an answer to a request; at most [`FETCH_MAX`]), 5 `ProofRequest {
//! digests }` (the proofs of batch headers a proposal names that this node lacks; at most
//! [`FETCH_MAX`]). Every frame is checked before anything acts on it:
//! sizes first, then the body against its header ([`TxBatch::decode`]).

use borsh::{BorshDeserialize, BorshSerialize};
use tally_consensus::{BatchHeader, BatchProof, ValidatorSet};
use tally_crypto::{Digest, Signature};

use super::body::{BatchError, TxBatch};

/// Batch digests one `Fetch` may ask for.
pub const FETCH_MAX: usize = 64;

#[derive(BorshSerialize, BorshDeserialize, Debug, Clone, PartialEq, Eq)]
enum Wire {
    Batch {
        attest: bool,
        body: Vec<u8>,
    },
    Attestation {
        header: BatchHeader,
        signature: Signature,
    },
    Fetch {
        digests: Vec<Digest>,
    },
    Fetched {
        body: Vec<u8>,
    },
    Proofs {
        proofs: Vec<BatchProof>,
    },
    ProofRequest {
        digests: Vec<Digest>,
    },
}

/// A checked frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFrame {
    Batch {
        attest: bool,
        batch: TxBatch,
    },
    Attestation {
        header: BatchHeader,
        signature: Signature,
    },
    Fetch {
        digests: Vec<Digest>,
    },
    Fetched {
        batch: TxBatch,
    },
    /// Proofs whose structure was checked (not yet their signatures).
    Proofs {
        proofs: Vec<BatchProof>,
    },
    ProofRequest {
        digests: Vec<Digest>,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("batch frame is malformed")]
    Malformed,
    #[error("frame names {0} batches; at most {FETCH_MAX}")]
    TooManyDigests(usize),
    #[error(transparent)]
    Proof(#[from] tally_consensus::ProofError),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

impl BatchFrame {
    /// The encoding of `Batch { attest, batch }` without copying the body first.
    pub fn encode_batch(attest: bool, batch: &TxBatch) -> Vec<u8> {
        borsh::to_vec(&Wire::Batch {
            attest,
            body: batch.encode(),
        })
        .expect("encoding to memory cannot fail")
    }

    /// The encoding of `Fetched { batch }` without copying the body first.
    pub fn encode_fetched(batch: &TxBatch) -> Vec<u8> {
        borsh::to_vec(&Wire::Fetched {
            body: batch.encode(),
        })
        .expect("encoding to memory cannot fail")
    }

    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            BatchFrame::Batch { attest, batch } => Wire::Batch {
                attest: *attest,
                body: batch.encode(),
            },
            BatchFrame::Attestation { header, signature } => Wire::Attestation {
                header: *header,
                signature: *signature,
            },
            BatchFrame::Fetch { digests } => Wire::Fetch {
                digests: digests.clone(),
            },
            BatchFrame::Fetched { batch } => Wire::Fetched {
                body: batch.encode(),
            },
            BatchFrame::Proofs { proofs } => Wire::Proofs {
                proofs: proofs.clone(),
            },
            BatchFrame::ProofRequest { digests } => Wire::ProofRequest {
                digests: digests.clone(),
            },
        };
        borsh::to_vec(&wire).expect("encoding to memory cannot fail")
    }

    pub fn decode(bytes: &[u8], validators: &ValidatorSet) -> Result<BatchFrame, FrameError> {
        let wire: Wire = borsh::from_slice(bytes).map_err(|_| FrameError::Malformed)?;
        Ok(match wire {
            Wire::Batch { attest, body } => BatchFrame::Batch {
                attest,
                batch: TxBatch::decode(&body, validators)?,
            },
            Wire::Attestation { header, signature } => {
                BatchFrame::Attestation { header, signature }
            }
            Wire::Fetch { digests } => {
                if digests.len() > FETCH_MAX {
                    return Err(FrameError::TooManyDigests(digests.len()));
                }
                BatchFrame::Fetch { digests }
            }
            Wire::Fetched { body } => BatchFrame::Fetched {
                batch: TxBatch::decode(&body, validators)?,
            },
            Wire::Proofs { proofs } => {
                if proofs.len() > FETCH_MAX {
                    return Err(FrameError::TooManyDigests(proofs.len()));
                }
                for p in &proofs {
                    p.check_structure(validators)?;
                }
                BatchFrame::Proofs { proofs }
            }
            Wire::ProofRequest { digests } => {
                if digests.len() > FETCH_MAX {
                    return Err(FrameError::TooManyDigests(digests.len()));
                }
                BatchFrame::ProofRequest { digests }
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tally_consensus::ValidatorId;
    use tally_crypto::SecretKey;

    fn validators() -> ValidatorSet {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect();
        ValidatorSet::new(&keys).unwrap()
    }

    /// One frame of each kind (also the `node_frames` fuzz seeds, `crate::wire`'s test).
    pub(crate) fn sample_frames() -> Vec<BatchFrame> {
        let batch = TxBatch::new(ValidatorId(3), 9, vec![vec![5; 300], vec![6; 200]]);
        vec![
            BatchFrame::Batch {
                attest: true,
                batch: batch.clone(),
            },
            BatchFrame::Attestation {
                header: *batch.header(),
                signature: Signature([7; 64]),
            },
            BatchFrame::Fetch {
                digests: vec![batch.digest(); 3],
            },
            BatchFrame::Proofs {
                proofs: vec![BatchProof {
                    header: *batch.header(),
                    attestations: vec![
                        (ValidatorId(0), Signature([1; 64])),
                        (ValidatorId(3), Signature([2; 64])),
                    ],
                }],
            },
            BatchFrame::ProofRequest {
                digests: vec![batch.digest()],
            },
            BatchFrame::Fetched { batch },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        let set = validators();
        for frame in sample_frames() {
            assert_eq!(BatchFrame::decode(&frame.encode(), &set), Ok(frame));
        }
    }

    #[test]
    fn bad_frames_are_refused_with_their_reason() {
        let set = validators();
        assert_eq!(BatchFrame::decode(&[9], &set), Err(FrameError::Malformed));
        assert_eq!(BatchFrame::decode(&[], &set), Err(FrameError::Malformed));
        let many = BatchFrame::Fetch {
            digests: vec![Digest([0; 32]); FETCH_MAX + 1],
        };
        assert_eq!(
            BatchFrame::decode(&many.encode(), &set),
            Err(FrameError::TooManyDigests(FETCH_MAX + 1))
        );
        // A proof with one attester (f + 1 = 2 are needed) is refused before its signature.
        let thin = BatchFrame::Proofs {
            proofs: vec![BatchProof {
                header: *TxBatch::new(ValidatorId(1), 0, vec![vec![1; 200]]).header(),
                attestations: vec![(ValidatorId(1), Signature([1; 64]))],
            }],
        };
        assert!(matches!(
            BatchFrame::decode(&thin.encode(), &set),
            Err(FrameError::Proof(
                tally_consensus::ProofError::TooFewAttesters { got: 1, need: 2 }
            ))
        ));
        // A body whose header lies.
        let lying = borsh::to_vec(&Wire::Batch {
            attest: false,
            body: {
                let mut b = TxBatch::new(ValidatorId(1), 0, vec![vec![1; 200]]).encode();
                let last = b.len() - 1;
                b[last] ^= 1;
                b
            },
        })
        .unwrap();
        assert!(matches!(
            BatchFrame::decode(&lying, &set),
            Err(FrameError::Batch(BatchError::HeaderMismatch { .. }))
        ));
    }
}
