//! Raft behind the neutral interface.

use tally_crypto::Digest;

use crate::pbft::Footprint;
use crate::protocol::{
    Event, Input, Millis, Output, PeerMessage, Record, ViewChangeReason, WireMessage,
};
use crate::raft::{Payload, Raft, RaftEvent, RaftInput, RaftOutput};
use crate::{Batch, CommitCertificate, Seq, View};

/// Bytes an entry may take in memory beyond its batch (term, index, leader, signature).
const ENTRY_OVERHEAD: usize = 8 + 8 + 2 + 64 + 16;

pub struct RaftEngine {
    core: Raft,
    /// The most entries a proposal names (for the footprint bound).
    batch_entries_max: usize,
    raft_out: Vec<RaftOutput>,
    /// A leadership transfer asked for by this replica's leader (TIMEOUT-NOW received).
    transfer_campaign: bool,
}

impl RaftEngine {
    pub fn new(core: Raft, batch_entries_max: usize) -> RaftEngine {
        RaftEngine {
            core,
            batch_entries_max,
            raft_out: Vec::new(),
            transfer_campaign: false,
        }
    }

    pub fn core(&self) -> &Raft {
        &self.core
    }

    pub fn in_flight(&self) -> u64 {
        self.core
            .last_index()
            .saturating_sub(self.core.commit_index())
    }

    pub fn uncommitted_txs(&self) -> Vec<Digest> {
        (self.core.commit_index() + 1..=self.core.last_index())
            .filter_map(|i| self.core.entry(i))
            .flat_map(|e| match &e.payload {
                Payload::Batch(b) => b.txs.clone(),
                Payload::Noop => Vec::new(),
            })
            .collect()
    }

    pub fn payload(&self, seq: Seq, digest: &Digest) -> Option<Batch> {
        let batch = self.core.entry(seq.0)?.payload.batch();
        (batch.digest() == *digest).then_some(batch)
    }

    pub fn footprint(&self) -> Footprint {
        let (mut messages, mut bytes) = (0, 0);
        for i in self.core.base_index() + 1..=self.core.last_index() {
            if let Some(e) = self.core.entry(i) {
                messages += 1;
                bytes += ENTRY_OVERHEAD
                    + match &e.payload {
                        Payload::Batch(b) => 32 * b.txs.len(),
                        Payload::Noop => 0,
                    };
            }
        }
        Footprint { messages, bytes }
    }

    /// The log holds at most `keep_executed` executed entries, the committed ones not yet
    /// executed and `max_uncommitted` more; the executor holds at most a window of commits,
    /// so at most `max_uncommitted` committed entries wait for execution.
    pub fn footprint_bound(&self) -> Footprint {
        let cfg = self.core.config();
        let entries = (cfg.keep_executed + 2 * cfg.max_uncommitted) as usize;
        Footprint {
            messages: entries,
            bytes: entries * (ENTRY_OVERHEAD + 32 * self.batch_entries_max),
        }
    }

    pub fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        let before = (self.core.term(), self.core.leader());
        let mut raft_inputs = Vec::with_capacity(2);
        match input {
            Input::Message(PeerMessage::Raft(m)) => {
                self.transfer_campaign = matches!(m.body, crate::raft::Body::TimeoutNow);
                raft_inputs.push(RaftInput::Message(m));
            }
            Input::Tick { entropy, .. } => raft_inputs.push(RaftInput::Tick { entropy }),
            Input::Propose(batch) => raft_inputs.push(RaftInput::Propose(batch)),
            Input::Executed { seq, epoch, .. } => {
                raft_inputs.push(RaftInput::Executed { index: seq.0 });
                // A block sync under way reached its target: the log restarts after it
                // (the block's commit proof carries the entry's term).
                if self.core.fetching().is_some_and(|t| seq.0 >= t) {
                    raft_inputs.push(RaftInput::CaughtUp {
                        index: seq.0,
                        term: epoch.0,
                    });
                }
            }
            Input::TransferLeadership { to } => {
                raft_inputs.push(RaftInput::TransferLeadership { to })
            }
            // PBFT's and Multi-Paxos's inputs: nothing for Raft.
            Input::Message(_)
            | Input::Validated { .. }
            | Input::Payload { .. }
            | Input::Repaired { .. } => {}
        }
        let mut accepted = Vec::new();
        for input in raft_inputs {
            self.core.step(now, input, &mut self.raft_out);
        }
        for o in self.raft_out.drain(..) {
            if let RaftOutput::Persist(crate::raft::Record::Append { entries }) = &o {
                for e in entries {
                    accepted.push(Event::Accepted {
                        view: View(e.term),
                        seq: Seq(e.index),
                    });
                }
            }
            out.push(match o {
                RaftOutput::Persist(r) => Output::Persist(Record::Raft(r)),
                RaftOutput::Send { to, msg } => Output::Send {
                    to,
                    msg: WireMessage::Raft(msg),
                },
                RaftOutput::Commit(entry) => {
                    let batch = entry.payload.batch();
                    let digest = batch.digest();
                    Output::Commit {
                        seq: Seq(entry.index),
                        certificate: CommitCertificate {
                            view: View(entry.term),
                            seq: Seq(entry.index),
                            digest,
                            signatures: vec![(entry.leader, entry.signature)],
                        },
                        batch,
                    }
                }
                RaftOutput::RequestBatch => Output::RequestBatch,
                RaftOutput::FetchState { index, .. } => Output::FetchState {
                    target: Seq(index),
                    block_hash: Digest::ZERO,
                },
                RaftOutput::Event(e) => match e {
                    RaftEvent::Campaign { term } => Output::Event(Event::ViewChangeStarted {
                        to: View(term),
                        reason: if std::mem::take(&mut self.transfer_campaign) {
                            ViewChangeReason::LeaderTransfer
                        } else {
                            ViewChangeReason::ElectionTimeout
                        },
                    }),
                    RaftEvent::SteppedDown { term } => {
                        Output::Event(Event::SteppedDown { view: View(term) })
                    }
                    // Leader changes are reported below, once per step.
                    _ => continue,
                },
            });
        }
        out.extend(accepted.into_iter().map(Output::Event));
        let after = (self.core.term(), self.core.leader());
        if after != before
            && let (term, Some(leader)) = after
        {
            out.push(Output::Event(Event::NewView {
                view: View(term),
                primary: leader,
            }));
        }
    }
}
