//! What peers can make a replica store, and the bound on it.
//!
//! Every store a peer's messages can grow has a bound that depends only on the configuration
//! (n validators, window L, checkpoint interval K, batch limit B, the per-sender budget for
//! future views) — never on how many messages a faulty validator sends:
//!
//! | store | bound |
//! |---|---|
//! | log slots | L (only sequence numbers inside the window) |
//! | per slot: PRE-PREPARE, PREPAREs, COMMITs | 1 + n + n (one vote per sender) |
//! | per slot: batches | 3 (the pre-prepare's, the prepared certificate's, the commit's) of ≤ B hashes |
//! | CHECKPOINT votes | n · (L/K + 1): in-window ones, plus each sender's latest beyond |
//! | VIEW-CHANGEs | 2n: per sender its lowest at or above the current view and its highest, each ≤ L claims with certificates |
//! | messages of future views | per sender 3L + 2 messages and [`super::PbftConfig::future_bytes_per_sender`] bytes |
//! | evidence tracker | 3 · L · n · 4 votes + (L/K) · n checkpoints + 4 · n view changes |
//! | executed digests, own block hashes, deferred checkpoints | 4 · L, 2 · L/K, 4 |
//! | own votes and view messages | 6 · L + 2 · L/K votes (this view and the previous), two VIEW-CHANGEs, one NEW-VIEW |
//!
//! [`Pbft::footprint`] measures the stores, [`Pbft::footprint_bound`] computes the bound;
//! the simulator checks the one against the other after every step of every honest replica.

use super::evidence::VIEWS_KEPT;
use super::messages::{
    SIGNED_CHECKPOINT_BYTES, SIGNED_VOTE_BYTES, batch_bytes, cert_bytes, checkpoint_cert_bytes,
    new_view_bytes, proofs_bytes, view_change_bytes, worst_case_new_view_bytes,
    worst_case_view_change_bytes,
};
use super::{EXECUTED_KEPT_WINDOWS, Pbft};

/// Stored messages (or entries) and their bytes, as encoded on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Footprint {
    pub messages: usize,
    pub bytes: usize,
}

impl Footprint {
    fn add(&mut self, messages: usize, bytes: usize) {
        self.messages += messages;
        self.bytes += bytes;
    }

    /// Whether both figures are within `bound`'s.
    pub fn within(&self, bound: &Footprint) -> bool {
        self.messages <= bound.messages && self.bytes <= bound.bytes
    }

    pub fn max(self, other: Footprint) -> Footprint {
        Footprint {
            messages: self.messages.max(other.messages),
            bytes: self.bytes.max(other.bytes),
        }
    }
}

const ENTRY_BYTES: usize = 40;

impl Pbft {
    /// What this replica stores now (see the module documentation for what is counted).
    pub fn footprint(&self) -> Footprint {
        let mut f = Footprint::default();
        for slot in self.log.values() {
            let votes = slot.prepares.len()
                + slot.commits.len()
                + usize::from(slot.pre_prepare.is_some())
                + usize::from(slot.own_prepare.is_some())
                + usize::from(slot.own_commit.is_some());
            f.add(votes, votes * SIGNED_VOTE_BYTES);
            if let Some(c) = &slot.prepared_cert {
                f.add(1, cert_bytes(c));
            }
            if let Some(c) = &slot.committed {
                f.add(1, 50 + 66 * c.signatures.len());
            }
            for (_, b) in &slot.batches {
                f.add(1, batch_bytes(b));
            }
            f.add(0, 2 * slot.holders.len());
        }
        let checkpoints: usize = self.checkpoints.values().map(|v| v.len()).sum();
        f.add(checkpoints, checkpoints * SIGNED_CHECKPOINT_BYTES);
        for by_sender in self.view_changes.values() {
            for (vc, proofs) in by_sender.values() {
                f.add(1, view_change_bytes(&vc.body) + proofs_bytes(proofs));
            }
        }
        for q in self.future.values() {
            f.add(q.msgs.len(), q.bytes);
        }
        let (statements, bytes) = self.evidence.footprint();
        f.add(statements, bytes);
        let hashes = self.executed.len() + self.own_hashes.len() + self.deferred_checkpoints.len();
        f.add(hashes, ENTRY_BYTES * hashes);
        f.add(self.safety.len(), SIGNED_VOTE_BYTES * self.safety.len());
        if let Some((vc, proofs)) = self.safety.own_view_change(self.view) {
            f.add(0, view_change_bytes(&vc.body) + proofs_bytes(proofs));
        }
        if let Some(nv) = self.safety.own_new_view(self.view) {
            f.add(0, new_view_bytes(&nv.body));
        }
        let peers = self.peer_views.len()
            + self.peer_commits.len()
            + self.new_view_resent.len()
            + self.view_change_resent.len();
        f.add(peers, 16 * peers);
        for cert in [Some(&self.stable), self.pending_stable.as_ref()]
            .into_iter()
            .flatten()
            .chain(self.diverged.as_ref().map(|r| &r.target))
        {
            f.add(1, checkpoint_cert_bytes(cert));
        }
        f
    }

    /// The most [`Pbft::footprint`] can reach with this configuration, whatever peers send.
    pub fn footprint_bound(&self) -> Footprint {
        let n = self.validators.len();
        let q = self.validators.quorum();
        let l = self.config.watermark_window as usize;
        let k = self.config.checkpoint_interval as usize;
        let batch = 4 + 32 * self.config.batch_txs_max;
        let prepared_cert = SIGNED_VOTE_BYTES + 4 + 66 * (q - 1);
        let commit_cert = 50 + 66 * n;
        let mut f = Footprint::default();
        // The log.
        let votes = 2 * n + 3;
        f.add(
            l * (votes + 2 + 3),
            l * (votes * SIGNED_VOTE_BYTES + prepared_cert + commit_cert + 3 * batch + 2 * n),
        );
        // Checkpoint votes.
        let checkpoints = n * (l / k + 1);
        f.add(checkpoints, checkpoints * SIGNED_CHECKPOINT_BYTES);
        // VIEW-CHANGEs received.
        f.add(
            2 * n,
            2 * n * worst_case_view_change_bytes(n, l as u64) as usize,
        );
        // Future views.
        f.add(
            n * self.config.future_messages_per_sender(),
            n * self.config.future_bytes_per_sender,
        );
        // Evidence.
        let tracked_votes = 3 * l * n * VIEWS_KEPT;
        let tracked_checkpoints = (l / k + 1) * n;
        let tracked_view_changes = VIEWS_KEPT * n;
        f.add(
            tracked_votes + tracked_checkpoints + tracked_view_changes,
            tracked_votes * SIGNED_VOTE_BYTES
                + tracked_checkpoints * SIGNED_CHECKPOINT_BYTES
                + tracked_view_changes * (2 + 64 + 8 + 40 + 4 + 48 * l),
        );
        // Executed digests, own block hashes and deferred checkpoints.
        let entries =
            EXECUTED_KEPT_WINDOWS * l + 2 * l / k + 2 + super::checkpoint::DEFERRED_CHECKPOINTS_MAX;
        f.add(entries, entries * ENTRY_BYTES);
        // Own votes (of the current and the previous view) and view messages.
        let own = 6 * l + 2 * l / k + 6;
        f.add(
            own,
            own * SIGNED_VOTE_BYTES
                + 2 * worst_case_view_change_bytes(n, l as u64) as usize
                + worst_case_new_view_bytes(n, l as u64) as usize,
        );
        // Peers' views and commits, NEW-VIEW resends; stable, pending and repair certificates.
        f.add(4 * n + 3, 4 * 16 * n + 3 * (44 + 66 * n));
        f
    }
}
