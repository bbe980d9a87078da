//! What a PBFT replica persists, and how the driver keys it.

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::Digest;

use super::messages::{Checkpoint, NewView, PrePrepare, PreparedProof, Signed, ViewChange};
use crate::{Seq, View};

/// The kinds of vote [`super::safety::SafetyRules`] tracks per `(kind, view, seq)`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
pub enum VoteType {
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
}

/// A durable record. The driver writes every `Persist` of a step in one synced write before
/// any message of that step leaves.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Record {
    /// This replica signed `digest` for `(kind, view, seq)`: it must never sign another.
    Vote {
        kind: VoteType,
        view: View,
        seq: Seq,
        digest: Digest,
    },
    /// A PRE-PREPARE this replica signed as primary, whole, so that after a restart it can
    /// still retransmit it (and never signs another for the same `(view, seq)`).
    OwnPrePrepare(Signed<PrePrepare>),
    /// A prepared certificate, persisted before the COMMIT that depends on it so that a
    /// restarted replica still reports it in its view changes (TOCS'02 §4.4 relies on it).
    Prepared(PreparedProof),
    /// This replica's own VIEW-CHANGE for a view: after a restart it resends exactly this one.
    OwnViewChange(Signed<ViewChange>),
    /// This replica's own NEW-VIEW, as the new primary.
    OwnNewView(Signed<NewView>),
    /// The view this replica is in; `changing` while its view change is not complete.
    View { view: View, changing: bool },
    /// The latest stable checkpoint and its proof.
    Stable {
        seq: Seq,
        state_root: Digest,
        proof: Vec<Signed<Checkpoint>>,
    },
    /// Votes and prepared certificates for sequence numbers `≤ seq` may be deleted.
    PruneSeqs { up_to: Seq },
    /// View changes and new views for views `< view` may be deleted.
    PruneViews { below: View },
}

impl Record {
    /// The storage key: writing a record replaces the one with the same key. Layout:
    /// `b's' ‖ seq BE ‖ kind ‖ view BE` for votes, `b'p' ‖ seq BE` for prepared certificates,
    /// `b'w' ‖ 0|1 ‖ view BE` for own view changes / new views, `b"view"`, `b"stable"`.
    /// `None` for prune records, which delete rather than write.
    pub fn key(&self) -> Option<Vec<u8>> {
        let mut k = Vec::with_capacity(20);
        match self {
            Record::Vote {
                kind, view, seq, ..
            } => {
                k.push(b's');
                k.extend_from_slice(&seq.0.to_be_bytes());
                k.push(*kind as u8);
                k.extend_from_slice(&view.0.to_be_bytes());
            }
            Record::OwnPrePrepare(pp) => {
                k.push(b's');
                k.extend_from_slice(&pp.body.seq.0.to_be_bytes());
                k.push(VoteType::PrePrepare as u8);
                k.extend_from_slice(&pp.body.view.0.to_be_bytes());
            }
            Record::Prepared(p) => {
                k.push(b'p');
                k.extend_from_slice(&p.pre_prepare.body.seq.0.to_be_bytes());
            }
            Record::OwnViewChange(vc) => {
                k.extend_from_slice(b"w\x00");
                k.extend_from_slice(&vc.body.new_view.0.to_be_bytes());
            }
            Record::OwnNewView(nv) => {
                k.extend_from_slice(b"w\x01");
                k.extend_from_slice(&nv.body.view.0.to_be_bytes());
            }
            Record::View { .. } => k.extend_from_slice(b"view"),
            Record::Stable { .. } => k.extend_from_slice(b"stable"),
            Record::PruneSeqs { .. } | Record::PruneViews { .. } => return None,
        }
        Some(k)
    }

    /// Whether a stored key is deleted by this prune record.
    pub fn prunes(&self, key: &[u8]) -> bool {
        let seq_of = |k: &[u8]| {
            k.get(1..9)
                .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        };
        match self {
            Record::PruneSeqs { up_to } => {
                matches!(key.first(), Some(b's') | Some(b'p'))
                    && seq_of(key).is_some_and(|s| s <= up_to.0)
            }
            Record::PruneViews { below } => {
                key.len() == 10
                    && key[0] == b'w'
                    && u64::from_be_bytes(key[2..10].try_into().unwrap()) < below.0
            }
            _ => false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding to memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, String> {
        borsh::from_slice(bytes).map_err(|e| e.to_string())
    }
}
