//! What a PBFT replica persists, and how the driver keys it.

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::Digest;

use super::messages::{
    CheckpointCert, NewView, PrePrepare, PreparedCert, Signed, ViewChange, ViewChangeProofs,
};
use crate::{Batch, Seq, View};

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
    /// A PRE-PREPARE this replica signed as primary, with its batch, so that after a restart
    /// it can still retransmit it (and never signs another for the same `(view, seq)`).
    OwnPrePrepare(Signed<PrePrepare>, Batch),
    /// A prepared certificate and its batch, persisted before the COMMIT that depends on it:
    /// a restarted replica still reports it in its view changes (TOCS'02 §4.4 relies on it)
    /// and can still hand the batch to a peer that must execute it.
    Prepared(PreparedCert, Batch),
    /// This replica's own VIEW-CHANGE for a view, with its proofs: after a restart it resends
    /// exactly this one.
    OwnViewChange(Signed<ViewChange>, ViewChangeProofs),
    /// This replica's own NEW-VIEW, as the new primary.
    OwnNewView(Signed<NewView>),
    /// The view this replica is in; `changing` while its view change is not complete.
    View { view: View, changing: bool },
    /// The latest stable checkpoint and its certificate.
    Stable(CheckpointCert),
    /// This replica's state diverged from the certified checkpoint: repair to it (or a later
    /// one) before signing anything. The genesis certificate (sequence number 0) means no
    /// repair is under way.
    Repair(CheckpointCert),
    /// Votes and prepared certificates for sequence numbers `≤ up_to` may be deleted.
    PruneSeqs { up_to: Seq },
    /// Own view changes and new views of views `< below` may be deleted.
    PruneViews { below: View },
}

/// First byte of the keys of per-sequence-number records (votes, own pre-prepares).
pub const KEY_VOTE: u8 = b's';
/// First byte of the keys of prepared certificates.
pub const KEY_PREPARED: u8 = b'p';
/// First byte of the keys of own view changes (`w 0`) and new views (`w 1`).
pub const KEY_VIEW_MESSAGE: u8 = b'w';

impl Record {
    /// The storage key: writing a record replaces the one with the same key. Layout:
    /// `b's' ‖ seq BE ‖ kind ‖ view BE` for votes, `b'p' ‖ seq BE` for prepared certificates,
    /// `b'w' ‖ 0|1 ‖ view BE` for own view changes / new views, `b"view"`, `b"stable"`,
    /// `b"repair"`.
    /// `None` for prune records, which delete rather than write ([`Record::prune_ranges`]).
    pub fn key(&self) -> Option<Vec<u8>> {
        let mut k = Vec::with_capacity(20);
        match self {
            Record::Vote {
                kind, view, seq, ..
            } => {
                k.push(KEY_VOTE);
                k.extend_from_slice(&seq.0.to_be_bytes());
                k.push(*kind as u8);
                k.extend_from_slice(&view.0.to_be_bytes());
            }
            Record::OwnPrePrepare(pp, _) => {
                k.push(KEY_VOTE);
                k.extend_from_slice(&pp.body.seq.0.to_be_bytes());
                k.push(VoteType::PrePrepare as u8);
                k.extend_from_slice(&pp.body.view.0.to_be_bytes());
            }
            Record::Prepared(p, _) => {
                k.push(KEY_PREPARED);
                k.extend_from_slice(&p.pre_prepare.body.seq.0.to_be_bytes());
            }
            Record::OwnViewChange(vc, _) => {
                k.extend_from_slice(&[KEY_VIEW_MESSAGE, 0]);
                k.extend_from_slice(&vc.body.new_view.0.to_be_bytes());
            }
            Record::OwnNewView(nv) => {
                k.extend_from_slice(&[KEY_VIEW_MESSAGE, 1]);
                k.extend_from_slice(&nv.body.view.0.to_be_bytes());
            }
            Record::View { .. } => k.extend_from_slice(b"view"),
            Record::Stable(_) => k.extend_from_slice(b"stable"),
            Record::Repair(_) => k.extend_from_slice(b"repair"),
            Record::PruneSeqs { .. } | Record::PruneViews { .. } => return None,
        }
        Some(k)
    }

    /// The key ranges `[start, end)` a prune record deletes. Keys are laid out so that a
    /// prune is a few range deletions, never a scan of the stored records.
    pub fn prune_ranges(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let range = |prefix: &[u8], below: u64| {
            let mut start = prefix.to_vec();
            start.extend_from_slice(&0u64.to_be_bytes());
            let mut end = prefix.to_vec();
            end.extend_from_slice(&below.to_be_bytes());
            (start, end)
        };
        match self {
            Record::PruneSeqs { up_to } => {
                let below = up_to.0.saturating_add(1);
                vec![range(&[KEY_VOTE], below), range(&[KEY_PREPARED], below)]
            }
            Record::PruneViews { below } => vec![
                range(&[KEY_VIEW_MESSAGE, 0], below.0),
                range(&[KEY_VIEW_MESSAGE, 1], below.0),
            ],
            _ => vec![],
        }
    }

    /// Whether a stored key is deleted by this prune record (the same as lying in one of
    /// [`Record::prune_ranges`]).
    pub fn prunes(&self, key: &[u8]) -> bool {
        self.prune_ranges()
            .iter()
            .any(|(start, end)| key >= start.as_slice() && key < end.as_slice())
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding to memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, String> {
        borsh::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prune deletes exactly the records at or below its sequence number (or below its
    /// view), whatever the other key bytes.
    #[test]
    fn prune_ranges_cover_exactly_the_pruned_keys() {
        let vote = |seq: u64, view: u64| {
            Record::Vote {
                kind: VoteType::Commit,
                view: View(view),
                seq: Seq(seq),
                digest: Digest::ZERO,
            }
            .key()
            .unwrap()
        };
        let prune = Record::PruneSeqs { up_to: Seq(10) };
        assert!(prune.prunes(&vote(10, u64::MAX)));
        assert!(prune.prunes(&vote(1, 0)));
        assert!(!prune.prunes(&vote(11, 0)));
        assert!(!prune.prunes(b"view"));
        assert!(!prune.prunes(b"stable"));
        let views = Record::PruneViews { below: View(5) };
        let mut own_vc = vec![KEY_VIEW_MESSAGE, 0];
        own_vc.extend_from_slice(&4u64.to_be_bytes());
        assert!(views.prunes(&own_vc));
        own_vc[2..].copy_from_slice(&5u64.to_be_bytes());
        assert!(!views.prunes(&own_vc));
        assert!(!views.prunes(&vote(1, 0)));
    }
}
