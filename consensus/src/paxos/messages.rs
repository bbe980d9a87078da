//! Multi-Paxos ballots, messages and durable records.

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};

use tally_crypto::{Digest, Signature};

/// What a slot orders: a batch, or nothing (a no-op filling a gap).
pub use crate::raft::messages::Payload as Value;
use crate::{Batch, ValidatorId};

/// A value as proposed: signed by the leader that first proposed it, in its ballot, over
/// [`crate::commit_body`]`(ballot round, slot, digest of the batch to execute)` under
/// [`crate::LEADER_COMMIT_DOMAIN`] — the slot's commit proof once it is chosen. A leader that
/// re-proposes a value found in phase 1 keeps its signature (the value, not who proposes it
/// again, is what gets chosen). All zeros in the simulator, which runs without keys.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Payload {
    pub value: Value,
    pub proposer: Ballot,
    pub signature: Signature,
}

impl Payload {
    /// The batch to execute (the empty batch for a no-op).
    pub fn batch(&self) -> Batch {
        self.value.batch()
    }

    /// The value's digest (the same whoever proposed it).
    pub fn digest(&self) -> Digest {
        self.value.digest()
    }
}

/// A log position, from 1.
pub type Slot = u64;

/// What an acceptor reports in a promise: each slot's accepted value and its ballot.
pub type AcceptedValues = Vec<(Slot, Ballot, Payload)>;

/// `(round, node)`, ordered by round, then node: two proposers never share a ballot.
/// The zero ballot (round 0) is below every ballot a proposer uses.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Ballot {
    pub round: u64,
    pub node: ValidatorId,
}

impl Default for Ballot {
    fn default() -> Ballot {
        Ballot {
            round: 0,
            node: ValidatorId(0),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Message {
    pub from: ValidatorId,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Body {
    /// Phase 1a, once per leadership, for every slot from `from_slot` on.
    Prepare {
        ballot: Ballot,
        from_slot: Slot,
    },
    /// Phase 1b: the values this acceptor accepted from `from_slot` on; `base`: it executed
    /// and dropped every slot up to there (all chosen).
    Promise {
        ballot: Ballot,
        base: Slot,
        accepted: AcceptedValues,
    },
    /// Phase 2a. `commit`: the leader knows every slot up to there chosen.
    Accept {
        ballot: Ballot,
        slot: Slot,
        payload: Payload,
        commit: Slot,
    },
    /// Phase 2b.
    Accepted {
        ballot: Ballot,
        slot: Slot,
    },
    /// `ballot` is refused: this acceptor promised `promised`.
    Nack {
        ballot: Ballot,
        promised: Ballot,
    },
    /// The leader is alive, knows every slot up to `commit` chosen, and asks for a lease
    /// acknowledgement of heartbeat `seq`.
    Heartbeat {
        ballot: Ballot,
        commit: Slot,
        seq: u64,
    },
    HeartbeatAck {
        ballot: Ballot,
        seq: u64,
    },
    /// A follower lacks chosen values from `from_slot` on.
    NeedChosen {
        from_slot: Slot,
    },
    /// Chosen values, in slot order.
    Chosen {
        entries: Vec<(Slot, Payload)>,
    },
    /// The slots asked for are executed and dropped here: catch up by block sync to `slot`.
    CatchUp {
        slot: Slot,
    },
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("in-memory encoding cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Option<Message> {
        borsh::from_slice(bytes).ok()
    }
}

/// What an acceptor makes durable before it sends any message of the same step.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Record {
    Promise {
        ballot: Ballot,
    },
    /// Accepting also promises `ballot`.
    Accept {
        slot: Slot,
        ballot: Ballot,
        payload: Payload,
    },
    /// Every slot up to `slot` is executed; its acceptance records go.
    Compact {
        slot: Slot,
    },
}

/// An acceptor's durable state: what a restart starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub promised: Ballot,
    pub accepted: BTreeMap<Slot, (Ballot, Payload)>,
    pub base: Slot,
}

impl Durable {
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Promise { ballot } => self.promised = self.promised.max(*ballot),
            Record::Accept {
                slot,
                ballot,
                payload,
            } => {
                self.promised = self.promised.max(*ballot);
                if *slot > self.base {
                    self.accepted.insert(*slot, (*ballot, payload.clone()));
                }
            }
            Record::Compact { slot } => {
                if *slot > self.base {
                    self.base = *slot;
                    self.accepted = self.accepted.split_off(&(slot + 1));
                }
            }
        }
    }
}
