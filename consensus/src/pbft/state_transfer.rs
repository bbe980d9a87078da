//! State transfer (TOCS'02 §5.3.2): a replica that finds itself behind — a checkpoint proven
//! above what it executed — asks the driver to fetch committed blocks with their commit
//! certificates, which the driver verifies against the validator set before executing. The
//! core resumes when `Executed` reports the target reached.

use tally_crypto::Digest;

use super::Pbft;
use crate::Seq;
use crate::protocol::{Event, Output};

impl Pbft {
    pub(crate) fn start_fetch(&mut self, target: Seq, state_root: Digest, out: &mut Vec<Output>) {
        if target <= self.last_executed {
            return;
        }
        if let Some((t, _, _)) = self.fetching
            && t >= target
        {
            return;
        }
        self.fetching = Some((target, state_root, self.now + self.timeout()));
        out.push(Output::Event(Event::StateTransfer {
            from: self.last_executed,
            target,
        }));
        out.push(Output::FetchState { target, state_root });
    }

    /// f + 1 peers (so at least one honest) COMMIT sequence numbers this replica cannot
    /// commit, and it made no progress for two retransmission intervals: it missed messages
    /// it will not get again, so it fetches the certified blocks up to there. (The state root
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
        if let Some((target, root, deadline)) = self.fetching {
            if target <= self.last_executed {
                self.fetching = None;
            } else if self.now >= deadline {
                self.fetching = Some((target, root, self.now + self.timeout()));
                out.push(Output::FetchState {
                    target,
                    state_root: root,
                });
            }
        } else if let Some(p) = &self.pending_stable
            && p.seq > self.last_executed
        {
            let (seq, root) = (p.seq, p.state_root);
            self.start_fetch(seq, root, out);
        }
    }
}
