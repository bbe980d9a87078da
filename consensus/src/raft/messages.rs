//! Raft's log entries, messages and durable records.
//!
//! Messages carry no signature: in crash-fault mode the validators trust each other, and the
//! node learns a message's sender from the authenticated p2p connection it came on (the
//! driver fills `from`). Terms and indexes are plain integers.

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::{Digest, Signature};

use crate::{Batch, ValidatorId};

pub type Term = u64;
/// A log position, from 1; index 0 is the empty log's base.
pub type Index = u64;

/// What an entry orders: a batch, or nothing (the entry a new leader appends to commit the
/// entries of earlier terms, Raft §5.4.2 / thesis §6.4).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Payload {
    Noop,
    Batch(Batch),
}

impl Payload {
    /// The batch to execute: the empty batch for a no-op (an empty block, as PBFT's null
    /// request makes one).
    pub fn batch(&self) -> Batch {
        match self {
            Payload::Noop => Batch::null(),
            Payload::Batch(b) => b.clone(),
        }
    }

    pub fn digest(&self) -> Digest {
        match self {
            Payload::Noop => Digest::ZERO,
            Payload::Batch(b) => b.digest(),
        }
    }
}

/// One log entry. `signature`: the leader that created it signed
/// [`crate::commit_body`]`(term, index, digest of the batch to execute)` under
/// [`crate::LEADER_COMMIT_DOMAIN`] — the entry's commit proof once it commits (all zeros in the
/// simulator, which runs without keys).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
    /// The leader that created the entry, and its signature.
    pub leader: ValidatorId,
    pub signature: Signature,
}

/// One Raft message. `term` is the sender's term, except in a PRE-VOTE (the term the sender
/// would campaign for) and a granted pre-vote reply (that same term).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Message {
    pub from: ValidatorId,
    pub term: Term,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Body {
    /// Would you vote for me in `term` (thesis §9.6)? Changes no state at the receiver.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteReply {
        granted: bool,
    },
    /// RequestVote. `transfer`: the leader handed over leadership (TIMEOUT-NOW), so a
    /// follower that still hears from that leader votes anyway.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteReply {
        granted: bool,
    },
    /// AppendEntries (a heartbeat when `entries` is empty).
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// `success`: the follower's log matches the leader's up to `index`. Otherwise `index`
    /// is a hint: the follower's log may match up to there at most.
    AppendReply {
        success: bool,
        index: Index,
    },
    /// The entries the follower needs are compacted at the leader: catch up through block
    /// sync to `index` (whose entry has `term`), then take entries after it.
    CatchUp {
        index: Index,
        term: Term,
    },
    /// Start an election now (leadership transfer, thesis §3.10).
    TimeoutNow,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("in-memory encoding cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Option<Message> {
        borsh::from_slice(bytes).ok()
    }
}

/// What a replica must make durable before it sends any message of the same step.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Record {
    /// The current term and the vote cast in it.
    HardState {
        term: Term,
        voted_for: Option<ValidatorId>,
    },
    /// Entries from `entries[0].index` on, replacing any stored at or after that index.
    Append { entries: Vec<Entry> },
    /// The log's prefix up to `index` (whose entry had `term`) is executed and dropped.
    Compact { index: Index, term: Term },
    /// The log is replaced by an empty one based at `index` (`term`): the chain was brought
    /// to `index` by block sync.
    Reset { index: Index, term: Term },
}

/// A replica's durable state, as its records left it: what a restart starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub term: Term,
    pub voted_for: Option<ValidatorId>,
    pub base_index: Index,
    pub base_term: Term,
    pub entries: Vec<Entry>,
}

impl Durable {
    /// Applies one record, as a driver's store does.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::HardState { term, voted_for } => {
                self.term = *term;
                self.voted_for = *voted_for;
            }
            Record::Append { entries } => {
                let Some(first) = entries.first() else {
                    return;
                };
                let keep = first.index.saturating_sub(self.base_index + 1) as usize;
                self.entries.truncate(keep);
                self.entries.extend(entries.iter().cloned());
            }
            Record::Compact { index, term } => {
                if *index > self.base_index {
                    let drop = (*index - self.base_index) as usize;
                    self.entries.drain(..drop.min(self.entries.len()));
                    self.base_index = *index;
                    self.base_term = *term;
                }
            }
            Record::Reset { index, term } => {
                self.entries.clear();
                self.base_index = *index;
                self.base_term = *term;
            }
        }
    }
}
