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
