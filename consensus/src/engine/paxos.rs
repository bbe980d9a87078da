//! Multi-Paxos behind the neutral interface.

use tally_crypto::Digest;

use crate::paxos::{Paxos, PaxosEvent, PaxosInput, PaxosOutput, Value};
use crate::pbft::Footprint;
use crate::protocol::{
    Event, Input, Millis, Output, PeerMessage, Record, ViewChangeReason, WireMessage,
};
use crate::{Batch, CommitCertificate, Seq, View};

/// Bytes a held value may take in memory beyond its batch (slot, ballots, signature).
const VALUE_OVERHEAD: usize = 8 + 2 * 10 + 64 + 16;

pub struct PaxosEngine {
    core: Paxos,
    /// The most entries a proposal names (for the footprint bound).
    batch_entries_max: usize,
    paxos_out: Vec<PaxosOutput>,
}

impl PaxosEngine {
    pub fn new(core: Paxos, batch_entries_max: usize) -> PaxosEngine {
        PaxosEngine {
            core,
            batch_entries_max,
            paxos_out: Vec::new(),
        }
    }

    pub fn core(&self) -> &Paxos {
        &self.core
    }

    pub fn in_flight(&self) -> u64 {
        self.core.open_payloads().count() as u64
    }

    pub fn uncommitted_txs(&self) -> Vec<Digest> {
        self.core
            .open_payloads()
            .flat_map(|p| match &p.value {
                Value::Batch(b) => b.txs.clone(),
                Value::Noop => Vec::new(),
            })
            .collect()
    }

    pub fn payload(&self, seq: Seq, digest: &Digest) -> Option<Batch> {
        let batch = self.core.value_at(seq.0)?.batch();
        (batch.digest() == *digest).then_some(batch)
    }

    pub fn footprint(&self) -> Footprint {
        let (values, digests) = self.core.held();
        Footprint {
            messages: values,
            bytes: values * VALUE_OVERHEAD + 32 * digests,
        }
    }

    /// Accepted and chosen values are dropped `keep_executed` below the executed slot; above
    /// it a leader keeps at most `max_open` open, and an acceptor accepts only what leaders
    /// propose — at most `max_open` beyond the chosen ones, per leadership — and the executor
    /// holds at most a window of chosen values waiting.
    pub fn footprint_bound(&self) -> Footprint {
        let cfg = self.core.config();
        let values = (cfg.keep_executed + 3 * cfg.max_open) as usize * 2;
        Footprint {
            messages: values,
            bytes: values * (VALUE_OVERHEAD + 32 * self.batch_entries_max),
        }
    }

    /// Until when (driver milliseconds) this leader may answer reads from its own state.
    pub fn lease_expiry(&self, now: Millis) -> Option<Millis> {
        self.core.lease_expiry(now)
    }

    pub fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        let before = (self.core.promised(), self.core.leader());
        let mut inputs = Vec::with_capacity(2);
        match input {
            Input::Message(PeerMessage::Paxos(m)) => inputs.push(PaxosInput::Message(m)),
            Input::Tick { entropy, .. } => inputs.push(PaxosInput::Tick { entropy }),
            Input::Propose(batch) => inputs.push(PaxosInput::Propose(batch)),
            Input::Executed { seq, .. } => {
                inputs.push(PaxosInput::Executed { slot: seq.0 });
                // A block sync under way reached its target.
                if self.core.fetching().is_some_and(|t| seq.0 >= t) {
                    inputs.push(PaxosInput::CaughtUp { slot: seq.0 });
                }
            }
            // PBFT's and Raft's inputs, and leadership transfer (Multi-Paxos has none: a
            // stopped leader's lease runs out and the others elect).
            Input::Message(_)
            | Input::Validated { .. }
            | Input::Payload { .. }
            | Input::Repaired { .. }
            | Input::TransferLeadership { .. } => {}
        }
        for input in inputs {
            self.core.step(now, input, &mut self.paxos_out);
        }
        let mut accepted = Vec::new();
        for o in self.paxos_out.drain(..) {
            if let PaxosOutput::Persist(crate::paxos::Record::Accept { slot, ballot, .. }) = &o {
                accepted.push(Event::Accepted {
                    view: View(ballot.round),
                    seq: Seq(*slot),
                });
            }
            out.push(match o {
                PaxosOutput::Persist(r) => Output::Persist(Record::Paxos(r)),
                PaxosOutput::Send { to, msg } => Output::Send {
                    to,
                    msg: WireMessage::Paxos(msg),
                },
                PaxosOutput::Commit { slot, payload } => {
                    let batch = payload.batch();
                    let digest = batch.digest();
                    Output::Commit {
                        seq: Seq(slot),
                        certificate: CommitCertificate {
                            view: View(payload.proposer.round),
                            seq: Seq(slot),
                            digest,
                            signatures: vec![(payload.proposer.node, payload.signature)],
                        },
                        batch,
                    }
                }
                PaxosOutput::RequestBatch => Output::RequestBatch,
                PaxosOutput::FetchState { slot, .. } => Output::FetchState {
                    target: Seq(slot),
                    block_hash: Digest::ZERO,
                },
                PaxosOutput::Event(e) => match e {
                    PaxosEvent::Phase1Started { ballot } => {
                        Output::Event(Event::ViewChangeStarted {
                            to: View(ballot.round),
                            reason: ViewChangeReason::ElectionTimeout,
                        })
                    }
                    PaxosEvent::Preempted { by } if before.1 == Some(by.node) => continue,
                    PaxosEvent::Preempted { by } => Output::Event(Event::SteppedDown {
                        view: View(by.round),
                    }),
                    _ => continue,
                },
            });
        }
        out.extend(accepted.into_iter().map(Output::Event));
        let after = (self.core.promised(), self.core.leader());
        if after.1 != before.1
            && let Some(leader) = after.1
        {
            out.push(Output::Event(Event::NewView {
                view: View(after.0.round),
                primary: leader,
            }));
        }
    }
}
