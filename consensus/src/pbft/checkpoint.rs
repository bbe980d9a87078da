//! Checkpoints and garbage collection (TOCS'02 §4.3): a CHECKPOINT every K sequence numbers,
//! signing the block hash at that height; 2f+1 matching ones make it stable; the log at or
//! below it is discarded and the low watermark moves to it.
//!
//! A replica signs checkpoints up to two windows above its stable checkpoint (one executing
//! far ahead by state transfer waits for a stable checkpoint to catch up with it), so its own
//! checkpoint votes and block hashes number at most `2L/K`.
//!
//! A replica whose own block hash at a stable checkpoint differs from the certified one has
//! diverged (a corrupt disk, an operator's edit, a bug): it stops signing and executing,
//! and asks the driver to replace its state with the certified one
//! ([`Output::RepairState`]). Checkpoint votes are stored only for sequence numbers inside
//! the window, one per sender each, plus each sender's latest one beyond it: at most
//! `n · (L/K + 1)` votes, however many a peer signs.

use tally_crypto::Digest;

use super::evidence::Statement;
use super::messages::{Checkpoint, CheckpointCert, Message, Signed};
use super::records::Record;
use super::{Pbft, Repair};
use crate::Seq;
use crate::protocol::{Event, Output};

/// Executed checkpoints kept unsigned because they were more than two windows above the
/// stable checkpoint: the latest few (a newer stable checkpoint supersedes older ones).
pub(crate) const DEFERRED_CHECKPOINTS_MAX: usize = 4;

impl Pbft {
    /// The driver executed `seq` (batch `digest`, block `block_hash`). At checkpoint sequence
    /// numbers this replica signs and broadcasts its block hash.
    pub(crate) fn on_executed(
        &mut self,
        seq: Seq,
        digest: Digest,
        block_hash: Digest,
        out: &mut Vec<Output>,
    ) {
        if seq > self.last_executed {
            self.last_executed = seq;
        }
        if seq > self.stable.seq {
            self.executed.insert(seq, digest);
            self.trim_executed();
        }
        if seq >= self.next_commit {
            // Executed by state transfer, not by our own commits: skip ahead.
            self.next_commit = seq.next();
            self.on_progress();
        }
        if let Some((target, _, _)) = self.fetching
            && seq >= target
        {
            self.fetching = None;
        }
        // A checkpoint is signed once per sequence number, also when the report comes late
        // (after a restart: see [`Pbft::unsigned_checkpoints`]). A diverged replica's hashes
        // are not worth signing.
        if seq.0.is_multiple_of(self.config.checkpoint_interval) && seq > self.stable.seq {
            if seq.0 <= self.stable.seq.0 + 2 * self.config.watermark_window {
                self.sign_own_checkpoint(seq, block_hash, out);
            } else {
                // Too far above the stable checkpoint to sign now: kept, and signed when the
                // stable checkpoint catches up (see [`Pbft::sign_deferred_checkpoints`]).
                self.deferred_checkpoints.insert(seq, block_hash);
                while self.deferred_checkpoints.len() > DEFERRED_CHECKPOINTS_MAX {
                    self.deferred_checkpoints.pop_first();
                }
            }
        }
        if let Some(p) = self.pending_stable.clone()
            && p.seq <= self.last_executed
        {
            self.pending_stable = None;
            self.adopt_stable(p, out);
        }
        self.emit_commits(out);
        self.maybe_request_batch(out);
    }

    /// Signs and broadcasts this replica's CHECKPOINT for `seq` (executed, with `block_hash`)
    /// unless already signed or diverged, and checks whether it completes a quorum.
    fn sign_own_checkpoint(&mut self, seq: Seq, block_hash: Digest, out: &mut Vec<Output>) {
        if self.own_hashes.contains_key(&seq) || !self.may_sign() {
            return;
        }
        self.own_hashes.insert(seq, block_hash);
        let cp = Checkpoint { seq, block_hash };
        if let Ok(signed) = self.safety.sign_checkpoint(cp, out) {
            out.push(Output::broadcast(Message::Checkpoint(signed)));
            self.checkpoints
                .entry(seq)
                .or_default()
                .insert(self.me, signed);
        }
        self.check_stable(seq, out);
    }

    /// The stable checkpoint moved: checkpoints this replica executed while they were more
    /// than two windows above it are signed now. Without this, a replica that executed
    /// ahead of the stable checkpoint (its peers' votes for it were late) never voted for
    /// the checkpoints in between; with one other replica diverged, the rest were one vote
    /// short of a quorum, no checkpoint became stable again, the window stayed full and
    /// nothing more committed (found by the simulator, seed 259333639688).
    fn sign_deferred_checkpoints(&mut self, out: &mut Vec<Output>) {
        let stable = self.stable.seq;
        self.deferred_checkpoints = self.deferred_checkpoints.split_off(&stable.next());
        let bound = stable.0 + 2 * self.config.watermark_window;
        let due: Vec<(Seq, Digest)> = self
            .deferred_checkpoints
            .range(..=Seq(bound))
            .map(|(s, h)| (*s, *h))
            .collect();
        for (seq, hash) in due {
            self.deferred_checkpoints.remove(&seq);
            if seq > self.stable.seq {
                self.sign_own_checkpoint(seq, hash, out);
            }
        }
    }

    /// Checkpoint sequence numbers above the stable checkpoint that this replica executed
    /// but has not signed — after a restart, all of them. The driver reports each again with
    /// its block hash (`Input::Executed`); otherwise a replica that crashed between executing
    /// a checkpoint and signing it would withhold its vote forever, and with enough such
    /// replicas the checkpoint never becomes stable and the window stays full. Only the
    /// latest two matter: a newer stable checkpoint supersedes older ones.
    pub fn unsigned_checkpoints(&self) -> Vec<Seq> {
        let k = self.config.checkpoint_interval;
        let last = self.last_executed.0 / k * k;
        (0..2)
            .map(|i| last.saturating_sub(i * k))
            .filter(|s| *s > self.stable.seq.0 && !self.own_hashes.contains_key(&Seq(*s)))
            .rev()
            .map(Seq)
            .collect()
    }

    pub(crate) fn on_checkpoint(&mut self, m: Signed<Checkpoint>, out: &mut Vec<Output>) {
        let seq = m.body.seq;
        if seq <= self.stable.seq || !seq.0.is_multiple_of(self.config.checkpoint_interval) {
            return;
        }
        let from = m.from;
        if seq > self.high_watermark() {
            // Far ahead of us: keep only each sender's latest, so a faulty one cannot fill
            // memory with checkpoints for made-up sequence numbers (nor the evidence
            // tracker: it only sees checkpoints inside the window).
            let hw = self.high_watermark();
            for (_, votes) in self.checkpoints.range_mut(hw.next()..) {
                votes.remove(&from);
            }
            self.checkpoints.retain(|_, v| !v.is_empty());
        } else if let Some(e) = self.evidence.observe(Statement::Checkpoint(m)) {
            out.push(Output::Evidence(e));
        }
        self.checkpoints
            .entry(seq)
            .or_default()
            .entry(from)
            .or_insert(m);
        self.check_stable(seq, out);
    }

    /// A quorum of matching CHECKPOINTs for `seq`: stable if this replica has executed `seq`
    /// with the same block hash; otherwise it is behind, and fetches the blocks.
    pub(crate) fn check_stable(&mut self, seq: Seq, out: &mut Vec<Output>) {
        let quorum = self.validators.quorum();
        let Some(votes) = self.checkpoints.get(&seq) else {
            return;
        };
        let mut by_hash: std::collections::BTreeMap<Digest, Vec<&Signed<Checkpoint>>> =
            Default::default();
        for v in votes.values() {
            by_hash.entry(v.body.block_hash).or_default().push(v);
        }
        let Some((block_hash, proof)) = by_hash.into_iter().find(|(_, v)| v.len() >= quorum) else {
            return;
        };
        let cert = CheckpointCert {
            seq,
            block_hash,
            signatures: proof
                .into_iter()
                .take(quorum)
                .map(|c| (c.from, c.signature))
                .collect(),
        };
        self.adopt_stable(cert, out);
    }

    /// Adopts a proven checkpoint: at once if this replica executed up to it with the same
    /// block hash; after a state transfer if it is behind; and if its own block differs, it
    /// has diverged and asks for a repair.
    pub(crate) fn adopt_stable(&mut self, cert: CheckpointCert, out: &mut Vec<Output>) {
        if cert.seq <= self.stable.seq {
            return;
        }
        if self.diverged.is_some() {
            // Our execution is not trusted: follow the certificates, and repair to the latest.
            self.make_stable(cert.clone(), out);
            self.diverged = Some(Repair {
                target: cert.clone(),
                asked_at: self.now,
            });
            out.push(Output::persist(Record::Repair(cert.clone())));
            out.push(Output::RepairState {
                certified: cert,
                own_hash: None,
            });
            return;
        }
        if self.last_executed >= cert.seq {
            match self.own_hashes.get(&cert.seq).copied() {
                Some(own) if own != cert.block_hash => self.diverge(cert, own, out),
                _ => self.make_stable(cert, out),
            }
        } else {
            if cert.seq < self.next_commit {
                // Committed here and only waiting for this replica's executor (a checkpoint
                // quorum of faster peers can form first): fetching those blocks would only
                // repeat them. `retry_fetch` starts a transfer if execution stalls.
            } else {
                self.start_fetch(cert.seq, cert.block_hash, out);
            }
            if self
                .pending_stable
                .as_ref()
                .is_none_or(|p| p.seq < cert.seq)
            {
                if self.pending_stable.is_none() {
                    // Since when execution has been behind a stable checkpoint.
                    self.pending_stable_since = self.now;
                }
                self.pending_stable = Some(cert);
            }
        }
    }

    /// Our block at `cert.seq` hashes to `own`, a quorum certified another: stop signing and
    /// executing, follow the certified checkpoint, and ask the driver for a repair. The
    /// divergence is persisted, so a restart resumes the repair rather than voting on a
    /// state known to be wrong.
    fn diverge(&mut self, cert: CheckpointCert, own: Digest, out: &mut Vec<Output>) {
        out.push(Output::Event(Event::Rejected {
            reason: "state_diverged_from_quorum",
        }));
        self.diverged = Some(Repair {
            target: cert.clone(),
            asked_at: self.now,
        });
        out.push(Output::persist(Record::Repair(cert.clone())));
        self.make_stable(cert.clone(), out);
        out.push(Output::RepairState {
            certified: cert,
            own_hash: Some(own),
        });
    }

    /// Moves the low watermark to `cert.seq` and discards everything at or below it.
    pub(crate) fn make_stable(&mut self, cert: CheckpointCert, out: &mut Vec<Output>) {
        if cert.seq <= self.stable.seq {
            return;
        }
        let seq = cert.seq;
        out.push(Output::persist(Record::Stable(cert.clone())));
        self.stable = cert;
        self.log = self.log.split_off(&seq.next());
        self.checkpoints = self.checkpoints.split_off(&seq.next());
        self.own_hashes = self.own_hashes.split_off(&seq);
        self.executed = self.executed.split_off(&seq.next());
        self.evidence.prune(seq);
        self.safety.prune_seqs(seq, out);
        if self.next_propose <= seq {
            self.next_propose = seq.next();
        }
        if self.next_commit <= seq {
            self.next_commit = seq.next();
        }
        out.push(Output::Event(Event::StableCheckpoint { seq }));
        self.sign_deferred_checkpoints(out);
        self.maybe_request_batch(out);
    }

    /// Resends this replica's latest checkpoint vote above the stable one (a peer may have
    /// missed it and be unable to make the checkpoint stable). Its own latest, not the
    /// latest held: a faulty validator's votes for made-up sequence numbers far ahead must
    /// not stop it (found by the simulator, seed 1000211: a checkpoint flood left every
    /// honest replica with nothing to resend, the votes lost earlier never came, and the
    /// window stayed full).
    pub(crate) fn retransmit_checkpoint(&mut self, out: &mut Vec<Output>) {
        let own = self
            .checkpoints
            .values()
            .rev()
            .find_map(|votes| votes.get(&self.me).copied())
            .or_else(|| {
                self.stable
                    .checkpoint_messages()
                    .find(|c| c.from == self.me)
            });
        if let Some(own) = own {
            out.push(Output::broadcast(Message::Checkpoint(own)));
        }
    }
}
