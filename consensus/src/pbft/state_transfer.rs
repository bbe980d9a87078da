//! State transfer (TOCS'02 §5.3.2) and repair.
//!
//! * A replica that finds itself behind — a checkpoint proven above what it executed, or f+1
//!   peers committing sequence numbers it cannot — asks the driver to fetch committed blocks
//!   with their commit certificates, which the driver verifies against the validator set
//!   before executing. The core resumes when `Executed` reports the target reached.
//! * A replica whose state diverged from a certified checkpoint asks the driver to replace
//!   its state with the certified one ([`Output::RepairState`]) and resumes when the driver
//!   reports it done ([`Pbft::on_repaired`]).

use tally_crypto::Digest;

use super::Pbft;
use super::records::Record;
use crate::Seq;
use crate::pbft::CheckpointCert;
use crate::protocol::{Event, Output};

impl Pbft {
    pub(crate) fn start_fetch(&mut self, target: Seq, block_hash: Digest, out: &mut Vec<Output>) {
        if target <= self.last_executed || self.diverged.is_some() {
            return;
        }
        if let Some((t, _, _)) = self.fetching
            && t >= target
        {
            return;
        }
        self.fetching = Some((target, block_hash, self.now + self.timeout()));
        out.push(Output::Event(Event::StateTransfer {
            from: self.last_executed,
            target,
        }));
        out.push(Output::FetchState { target, block_hash });
    }

    /// f + 1 peers (so at least one honest) COMMIT sequence numbers this replica cannot
    /// commit, and it made no progress for two retransmission intervals: it missed messages
    /// it will not get again, so it fetches the certified blocks up to there. (The block hash
    /// is unknown here; every block's certificate is checked instead.)
    pub(crate) fn check_behind_peers(&mut self, out: &mut Vec<Output>) {
        let need = self.validators.weak_quorum();
        let mut seqs: Vec<Seq> = self
            .peer_commits
            .iter()
            .filter(|(id, _)| **id != self.me)
            .map(|(_, s)| *s)
            .collect();
        if seqs.len() < need {
            return;
        }
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        let target = seqs[need - 1];
        if target < self.next_commit {
            self.stuck_check = (self.next_commit, self.now);
            return;
        }
        let (at, since) = self.stuck_check;
        if at != self.next_commit {
            self.stuck_check = (self.next_commit, self.now);
        } else if self.now >= since + 2 * self.config.retransmit_ms {
            self.stuck_check = (self.next_commit, self.now);
            self.start_fetch(target, Digest::ZERO, out);
        }
    }

    /// Asks again when a fetch has not completed in time (the peer asked may be faulty or
    /// gone).
    pub(crate) fn retry_fetch(&mut self, out: &mut Vec<Output>) {
        if let Some((target, hash, deadline)) = self.fetching {
            if target <= self.last_executed {
                self.fetching = None;
            } else if self.now >= deadline {
                self.fetching = Some((target, hash, self.now + self.timeout()));
                out.push(Output::FetchState {
                    target,
                    block_hash: hash,
                });
            }
        } else if let Some(p) = &self.pending_stable
            && p.seq > self.last_executed
            && (p.seq >= self.next_commit || self.now >= self.pending_stable_since + self.timeout())
        {
            let (seq, hash) = (p.seq, p.block_hash);
            self.start_fetch(seq, hash, out);
        }
    }

    /// Asks the driver again for a repair not reported done (after a restart, at once).
    pub(crate) fn retry_repair(&mut self, out: &mut Vec<Output>) {
        let timeout = self.timeout().max(self.config.view_change_timeout_ms);
        let now = self.now;
        if let Some(r) = &mut self.diverged
            && (r.asked_at == 0 || now >= r.asked_at + 4 * timeout)
        {
            r.asked_at = now.max(1);
            out.push(Output::RepairState {
                certified: r.target.clone(),
                own_hash: None,
            });
        }
    }

    /// The driver replaced its chain and state with the certified checkpoint `seq` whose
    /// block hashes to `block_hash`. Voting and execution resume from there; if the stable
    /// checkpoint moved on meanwhile, the blocks up to it are fetched as in any state
    /// transfer (and checked against its certificate when reached).
    pub(crate) fn on_repaired(&mut self, seq: Seq, block_hash: Digest, out: &mut Vec<Output>) {
        if self.diverged.is_none() {
            return;
        }
        let matches_stable = seq == self.stable.seq && block_hash == self.stable.block_hash;
        if !matches_stable && seq >= self.stable.seq {
            // Not a checkpoint this replica knows to be certified: keep waiting.
            out.push(Output::Event(Event::Rejected {
                reason: "repair_not_certified",
            }));
            return;
        }
        self.diverged = None;
        out.push(Output::persist(Record::Repair(CheckpointCert::default())));
        self.last_executed = seq;
        self.next_commit = seq.next();
        self.fetching = None;
        self.executed.retain(|s, _| *s <= seq);
        self.own_hashes.clear();
        self.deferred_checkpoints.clear();
        if matches_stable {
            self.own_hashes.insert(seq, block_hash);
        } else {
            self.pending_stable = Some(self.stable.clone());
            let (target, hash) = (self.stable.seq, self.stable.block_hash);
            self.start_fetch(target, hash, out);
        }
        out.push(Output::Event(Event::Repaired { seq }));
        self.send_own_view_change(out);
        self.try_send_new_view(out);
        self.emit_commits(out);
        self.maybe_request_batch(out);
    }
}
