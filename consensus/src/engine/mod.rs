//! The enum over the three protocols that a driver holds: one driver (the node's) runs PBFT,
//! Raft or Multi-Paxos, as genesis says, through the neutral types of [`crate::protocol`].
//!
//! PBFT speaks those types natively. Raft and Multi-Paxos keep their own, smaller inputs and
//! outputs (they have no validation, payload fetches, repairs or evidence: their peers do not
//! lie); [`raft`] and [`paxos`] translate, and make each committed entry's commit proof from
//! the signature of the leader that proposed it.

pub mod paxos;
pub mod raft;

use tally_crypto::Digest;

use crate::pbft::{Footprint, Pbft};
use crate::protocol::{Input, Millis, Output, Protocol};
use crate::{Batch, Seq, ValidatorId, View};

pub use self::paxos::PaxosEngine;
pub use self::raft::RaftEngine;

pub enum Engine {
    Pbft(Box<Pbft>),
    Raft(Box<RaftEngine>),
    Paxos(Box<PaxosEngine>),
}

impl Engine {
    /// The protocol's name, as genesis spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Pbft(_) => "pbft",
            Engine::Raft(_) => "raft",
            Engine::Paxos(_) => "multipaxos",
        }
    }

    /// Proposals in flight: proposed and not yet committed.
    pub fn in_flight(&self) -> u64 {
        match self {
            Engine::Pbft(p) => p.in_flight(),
            Engine::Raft(r) => r.in_flight(),
            Engine::Paxos(p) => p.in_flight(),
        }
    }

    /// The entries (transaction hashes or batch digests) of proposals that may still commit.
    pub fn uncommitted_txs(&self) -> Vec<Digest> {
        match self {
            Engine::Pbft(p) => p.uncommitted_txs(),
            Engine::Raft(r) => r.uncommitted_txs(),
            Engine::Paxos(p) => p.uncommitted_txs(),
        }
    }

    /// The batch with `digest` at `seq`, while the core holds it (for a peer's fetch).
    pub fn payload(&self, seq: Seq, digest: &Digest) -> Option<Batch> {
        match self {
            Engine::Pbft(p) => p.payload(seq, digest).cloned(),
            Engine::Raft(r) => r.payload(seq, digest),
            Engine::Paxos(p) => p.payload(seq, digest),
        }
    }

    /// What the core holds now (messages or entries, and bytes).
    pub fn footprint(&self) -> Footprint {
        match self {
            Engine::Pbft(p) => p.footprint(),
            Engine::Raft(r) => r.footprint(),
            Engine::Paxos(p) => p.footprint(),
        }
    }

    /// The most the core can hold.
    pub fn footprint_bound(&self) -> Footprint {
        match self {
            Engine::Pbft(p) => p.footprint_bound(),
            Engine::Raft(r) => r.footprint_bound(),
            Engine::Paxos(p) => p.footprint_bound(),
        }
    }

    /// PBFT: checkpoints executed before a restart but never signed.
    pub fn unsigned_checkpoints(&self) -> Vec<Seq> {
        match self {
            Engine::Pbft(p) => p.unsigned_checkpoints(),
            _ => Vec::new(),
        }
    }

    /// PBFT: this replica's state differs from a certified checkpoint.
    pub fn is_diverged(&self) -> bool {
        match self {
            Engine::Pbft(p) => p.is_diverged(),
            _ => false,
        }
    }

    /// Raft, as leader: the follower a leadership transfer should go to.
    pub fn transfer_target(&self) -> Option<ValidatorId> {
        match self {
            Engine::Raft(r) => r.core().most_caught_up_follower(),
            _ => None,
        }
    }

    /// Multi-Paxos: until when (driver milliseconds) this leader may answer reads from its
    /// own state — `None` without a valid lease, and always for the other protocols.
    pub fn lease_expiry(&self, now: Millis) -> Option<Millis> {
        match self {
            Engine::Paxos(p) => p.lease_expiry(now),
            _ => None,
        }
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self, me: ValidatorId) -> bool {
        self.leader() == Some(me)
    }
}

impl Protocol for Engine {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        match self {
            Engine::Pbft(p) => p.step(now, input, out),
            Engine::Raft(r) => r.step(now, input, out),
            Engine::Paxos(p) => p.step(now, input, out),
        }
    }

    fn view(&self) -> View {
        match self {
            Engine::Pbft(p) => p.view(),
            Engine::Raft(r) => View(r.core().term()),
            Engine::Paxos(p) => View(p.core().promised().round),
        }
    }

    fn leader(&self) -> Option<ValidatorId> {
        match self {
            Engine::Pbft(p) => p.leader(),
            Engine::Raft(r) => r.core().leader(),
            Engine::Paxos(p) => p.core().leader(),
        }
    }

    fn stable_checkpoint(&self) -> Seq {
        match self {
            Engine::Pbft(p) => p.stable_checkpoint(),
            Engine::Raft(r) => Seq(r.core().base_index()),
            Engine::Paxos(p) => Seq(p.core().base()),
        }
    }
}
