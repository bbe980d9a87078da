//! Checkpoints and garbage collection (TOCS'02 §4.3): a CHECKPOINT every K sequence numbers;
//! 2f+1 matching ones make it stable; the log at or below it is discarded and the low
//! watermark moves to it.

use tally_crypto::Digest;

use super::messages::{Checkpoint, Message, Signed};
use super::records::Record;
use super::{Pbft, Stable};
use crate::Seq;
use crate::protocol::{Event, Output};

impl Pbft {
    /// The driver executed `seq`. At checkpoint sequence numbers this replica signs and
    /// broadcasts its state root.
    pub(crate) fn on_executed(&mut self, seq: Seq, state_root: Digest, out: &mut Vec<Output>) {
        if seq > self.last_executed {
            self.last_executed = seq;
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
        // (after a restart: see [`Pbft::unsigned_checkpoints`]).
        if seq.0.is_multiple_of(self.config.checkpoint_interval)
            && seq > self.stable.seq
            && !self.own_roots.contains_key(&seq)
        {
            self.own_roots.insert(seq, state_root);
            let cp = Checkpoint { seq, state_root };
            if let Ok(signed) = self.safety.sign_checkpoint(cp, out) {
                out.push(Output::Broadcast(Message::Checkpoint(signed.clone())));
                self.checkpoints
                    .entry(seq)
                    .or_default()
                    .insert(self.me, signed);
            }
            self.check_stable(seq, out);
        }
        if let Some(p) = self.pending_stable.clone()
            && p.seq <= self.last_executed
        {
            self.pending_stable = None;
            self.make_stable(p, out);
        }
        self.emit_commits(out);
        self.maybe_request_batch(out);
    }

    /// Checkpoint sequence numbers above the stable checkpoint that this replica executed
    /// but has not signed — after a restart, all of them. The driver reports each again with
    /// its state root (`Input::Executed`); otherwise a replica that crashed between executing
    /// a checkpoint and signing it would withhold its vote forever, and with enough such
    /// replicas the checkpoint never becomes stable and the window stays full. Only the
    /// latest two matter: a newer stable checkpoint supersedes older ones.
    pub fn unsigned_checkpoints(&self) -> Vec<Seq> {
        let k = self.config.checkpoint_interval;
        let last = self.last_executed.0 / k * k;
        (0..2)
            .map(|i| last.saturating_sub(i * k))
            .filter(|s| *s > self.stable.seq.0 && !self.own_roots.contains_key(&Seq(*s)))
            .rev()
            .map(Seq)
            .collect()
    }

    pub(crate) fn on_checkpoint(&mut self, m: Signed<Checkpoint>, out: &mut Vec<Output>) {
        let seq = m.body.seq;
        if seq <= self.stable.seq || !seq.0.is_multiple_of(self.config.checkpoint_interval) {
            return;
        }
        if let Some(e) = self.evidence.observe(&Message::Checkpoint(m.clone())) {
            out.push(Output::Evidence(e));
        }
        if seq > self.high_watermark() {
            // Far ahead of us: keep only each sender's latest, so a faulty one cannot fill
            // memory with checkpoints for made-up sequence numbers.
            let from = m.from;
            let hw = self.high_watermark();
            for (_, votes) in self.checkpoints.range_mut(hw.next()..) {
                votes.remove(&from);
            }
            self.checkpoints.retain(|_, v| !v.is_empty());
        }
        self.checkpoints
            .entry(seq)
            .or_default()
            .entry(m.from)
            .or_insert(m);
        self.check_stable(seq, out);
    }

    /// A quorum of matching CHECKPOINTs for `seq`: stable if this replica has executed `seq`
    /// with the same root; otherwise it is behind, and fetches the state.
    pub(crate) fn check_stable(&mut self, seq: Seq, out: &mut Vec<Output>) {
        let quorum = self.validators.quorum();
        let Some(votes) = self.checkpoints.get(&seq) else {
            return;
        };
        let mut by_root: std::collections::HashMap<Digest, Vec<&Signed<Checkpoint>>> =
            Default::default();
        for v in votes.values() {
            by_root.entry(v.body.state_root).or_default().push(v);
        }
        let Some((root, proof)) = by_root.into_iter().find(|(_, v)| v.len() >= quorum) else {
            return;
        };
        let stable = Stable {
            seq,
            state_root: root,
            proof: proof.into_iter().take(quorum).cloned().collect(),
        };
        self.adopt_stable(stable, out);
    }

    /// Adopts a proven checkpoint: at once if this replica executed up to it, after a state
    /// transfer otherwise.
    pub(crate) fn adopt_stable(&mut self, stable: Stable, out: &mut Vec<Output>) {
        if stable.seq <= self.stable.seq {
            return;
        }
        if self.last_executed >= stable.seq {
            match self.own_roots.get(&stable.seq) {
                Some(r) if *r != stable.state_root => {
                    // Our execution disagrees with a quorum: only a bug or a corrupt disk
                    // does this. Take the certified state instead of ours.
                    out.push(Output::Event(Event::Rejected {
                        reason: "state_root_differs_from_quorum",
                    }));
                    self.start_fetch(stable.seq, stable.state_root, out);
                }
                _ => self.make_stable(stable, out),
            }
        } else {
            self.start_fetch(stable.seq, stable.state_root, out);
            if self
                .pending_stable
                .as_ref()
                .is_none_or(|p| p.seq < stable.seq)
            {
                self.pending_stable = Some(stable);
            }
        }
    }

    /// Moves the low watermark to `stable.seq` and discards everything at or below it.
    pub(crate) fn make_stable(&mut self, stable: Stable, out: &mut Vec<Output>) {
        if stable.seq <= self.stable.seq {
            return;
        }
        let seq = stable.seq;
        out.push(Output::Persist(Record::Stable {
            seq,
            state_root: stable.state_root,
            proof: stable.proof.clone(),
        }));
        self.stable = stable;
        self.log = self.log.split_off(&seq.next());
        self.checkpoints = self.checkpoints.split_off(&seq.next());
        self.own_roots = self.own_roots.split_off(&seq);
        self.evidence.prune(seq);
        self.safety.prune_seqs(seq, out);
        if self.next_propose <= seq {
            self.next_propose = seq.next();
        }
        if self.next_commit <= seq {
            self.next_commit = seq.next();
        }
        out.push(Output::Event(Event::StableCheckpoint { seq }));
        self.maybe_request_batch(out);
    }

    /// Resends this replica's latest checkpoint above the stable one (a peer may have missed
    /// it and be unable to make the checkpoint stable).
    pub(crate) fn retransmit_checkpoint(&mut self, out: &mut Vec<Output>) {
        if let Some((_, votes)) = self.checkpoints.iter().next_back()
            && let Some(own) = votes.get(&self.me)
        {
            out.push(Output::Broadcast(Message::Checkpoint(own.clone())));
        } else if let Some(own) = self.stable.proof.iter().find(|c| c.from == self.me) {
            out.push(Output::Broadcast(Message::Checkpoint(own.clone())));
        }
    }
}
