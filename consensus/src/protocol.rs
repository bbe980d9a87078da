//! The interface every protocol implements: inputs in, ordered outputs out. The same types
//! serve PBFT, Raft and Multi-Paxos; [`crate::engine::Engine`] is the enum over the three that a
//! driver holds, so it never names a protocol's messages, records or key layout.
//!
//! ```text
//!            ┌──────────────────────── driver (node/, or the simulator) ─────────────────────┐
//!  network ─▶│ decode, (PBFT) verify signatures ─▶ Input::Message ─┐                         │
//!  timer   ─▶│ Input::Tick (with fresh entropy) ───────────────────┤                         │
//!  mempool ─▶│ Input::Propose(batch) ──────────────────────────────┤                         │
//!  mempool ─▶│ Input::Validated / Input::Payload ──────────────────┼─▶ step(now, input, out) │
//!  executor ▶│ Input::Executed / Input::Repaired ──────────────────┤          │              │
//!  operator ▶│ Input::TransferLeadership ──────────────────────────┘          ▼              │
//!            │  for o in out, in order:  Persist → (one synced write) → Send/Broadcast        │
//!            │                           Commit → execute → Input::Executed                   │
//!            │                           Validate → check the batch's transactions           │
//!            │                           RequestBatch / FetchPayload / FetchState /          │
//!            │                           RepairState / Evidence / Event                      │
//!            └────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The ordering rule: every `Persist` of a step must be durable before any `Send` or
//! `Broadcast` of the same step leaves the process. A step's persists come before the sends
//! that depend on them, so a driver that writes all of a step's persists in one synced batch
//! and then sends is correct. A record says what to write as [`StoreOp`]s, carried out in
//! order; the driver knows no protocol's key layout.
//!
//! The acting rule: the driver acts on a peer's message only through the core's outputs. A
//! PRE-PREPARE's transactions are looked up, fetched or marked as proposed only when the core
//! asks ([`Output::Validate`]), which it does only for a pre-prepare it accepted — from the
//! primary of its current view, inside its watermarks, the first for that `(view, seq)`,
//! within the batch limit. So a validator that is not the primary cannot make honest nodes
//! fetch, hold or set aside anything by sending pre-prepares. (Raft and Multi-Paxos trust
//! their peers — crash faults only — and never ask for validation: every payload a committed
//! entry names is resolved by the executor.)
//!
//! Terms (Raft), ballot rounds (Multi-Paxos) and views (PBFT) are one notion here, the
//! *epoch*, carried as a [`View`]: the period in which one leader proposes.

use tally_crypto::{Digest, Verified};

use crate::pbft::{CheckpointCert, Evidence};
use crate::{Batch, CommitCertificate, Seq, ValidatorId, View};

/// A peer's message, as the driver hands it to the core. PBFT messages arrive with every
/// signature checked; Raft and Multi-Paxos messages are unsigned (crash faults: the sender is
/// the authenticated p2p connection it came on, which the driver writes into `from`).
#[derive(Clone, Debug)]
pub enum PeerMessage {
    Pbft(Verified<crate::pbft::Message>),
    Raft(crate::raft::Message),
    Paxos(crate::paxos::Message),
}

/// A message the core sends.
#[derive(Clone, Debug)]
pub enum WireMessage {
    Pbft(crate::pbft::Message),
    Raft(crate::raft::Message),
    Paxos(crate::paxos::Message),
}

impl WireMessage {
    /// The bytes on the wire. The network runs one protocol (genesis says which), so the
    /// encoding carries no protocol tag: PBFT's is unchanged.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            WireMessage::Pbft(m) => m.encode(),
            WireMessage::Raft(m) => m.encode(),
            WireMessage::Paxos(m) => m.encode(),
        }
    }
}

impl From<crate::pbft::Message> for WireMessage {
    fn from(m: crate::pbft::Message) -> WireMessage {
        WireMessage::Pbft(m)
    }
}

/// What a core must make durable before it sends anything of the same step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Pbft(crate::pbft::Record),
    Raft(crate::raft::Record),
    Paxos(crate::paxos::Record),
}

impl From<crate::pbft::Record> for Record {
    fn from(r: crate::pbft::Record) -> Record {
        Record::Pbft(r)
    }
}

/// One write to the consensus store, in order: a later operation of the same write wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Record {
    /// The store operations that make this record durable (each protocol keeps its keys
    /// under its own prefix).
    pub fn ops(&self) -> Vec<StoreOp> {
        match self {
            Record::Pbft(r) => match r.key() {
                Some(key) => vec![StoreOp::Put {
                    key,
                    value: r.encode(),
                }],
                // A prune: a few range deletions, never a scan (the keys are laid out for it).
                None => r
                    .prune_ranges()
                    .into_iter()
                    .map(|(start, end)| StoreOp::DeleteRange { start, end })
                    .collect(),
            },
            Record::Raft(r) => crate::raft::storage::ops(r),
            Record::Paxos(r) => crate::paxos::storage::ops(r),
        }
    }
}

/// Milliseconds of the driver's monotonic clock. The protocol never reads a clock; it is
/// told the time with every step.
pub type Millis = u64;

#[derive(Clone, Debug)]
pub enum Input {
    /// A peer's message (for PBFT, with every signature checked).
    Message(PeerMessage),
    /// Time passed. `pending_requests`: the mempool holds transactions not yet committed (a
    /// silent primary is then suspected). `entropy`: fresh randomness from the driver, from
    /// which Raft and Multi-Paxos draw their election timeouts (the cores draw none).
    Tick {
        pending_requests: bool,
        entropy: u64,
    },
    /// A batch to propose, answering [`Output::RequestBatch`]. Ignored unless this replica is
    /// the primary with room in its window.
    Propose(Batch),
    /// Every transaction of the batch pre-prepared at `(view, seq)` with `digest` is held and
    /// valid (answering [`Output::Validate`]): a backup may now PREPARE it.
    Validated {
        view: View,
        seq: Seq,
        digest: Digest,
    },
    /// A batch fetched from a peer (answering [`Output::FetchPayload`]). The core keeps it
    /// only if it hashes to a digest it needs at `seq`.
    Payload { seq: Seq, batch: Batch },
    /// The driver executed `seq` (after a `Commit`, or by state transfer): the batch with
    /// `digest`, giving a block that hashes to `block_hash`; its commit proof is of `epoch`.
    Executed {
        seq: Seq,
        digest: Digest,
        block_hash: Digest,
        epoch: View,
    },
    /// The driver replaced its chain and state with the certified checkpoint `seq` (answering
    /// [`Output::RepairState`]).
    Repaired { seq: Seq, block_hash: Digest },
    /// Hand leadership to `to` (an operator's request, or a graceful shutdown). Raft only;
    /// the others ignore it.
    TransferLeadership { to: ValidatorId },
}

#[derive(Clone, Debug)]
pub enum Output {
    /// Make this record durable before sending any message of this step.
    Persist(Record),
    Send {
        to: ValidatorId,
        msg: WireMessage,
    },
    Broadcast(WireMessage),
    /// `batch` committed at `seq`; execute it, strictly in sequence order.
    Commit {
        seq: Seq,
        batch: Batch,
        certificate: CommitCertificate,
    },
    /// The primary has room for another batch: propose one when the mempool cuts it.
    RequestBatch,
    /// Check that every transaction `batch` names is held (fetching the missing ones) and
    /// valid, then answer [`Input::Validated`]. Emitted only for a pre-prepare the core
    /// accepted (see the acting rule above), and again on retransmission until answered.
    Validate {
        view: View,
        seq: Seq,
        batch: Batch,
    },
    /// Fetch the batch with `digest` for `seq` from peers (`from` first: the validators
    /// whose view changes claimed it) and hand it back as [`Input::Payload`].
    FetchPayload {
        seq: Seq,
        digest: Digest,
        from: Vec<ValidatorId>,
    },
    /// This replica is behind: fetch committed blocks with their commit certificates up to
    /// `target` from peers, verify each certificate, execute, and report
    /// [`Input::Executed`]. `block_hash` is the certified hash at `target` when known
    /// (PBFT); zero otherwise.
    FetchState {
        target: Seq,
        block_hash: Digest,
    },
    /// This replica's block at a checkpoint differs from the one a quorum certified: its
    /// state diverged. It has stopped voting and executing. Replace the chain's state with
    /// the certified one (fetched from peers and verified against `certified`), then report
    /// [`Input::Repaired`]. `own_hash` is set when the divergence is first found; the output
    /// comes again, with newer certificates, while the repair is under way.
    RepairState {
        certified: CheckpointCert,
        own_hash: Option<Digest>,
    },
    /// Two validly signed, conflicting messages from one validator.
    Evidence(Evidence),
    /// Something worth a metric or a log line.
    Event(Event),
}

impl Output {
    pub fn persist(record: impl Into<Record>) -> Output {
        Output::Persist(record.into())
    }

    pub fn broadcast(msg: impl Into<WireMessage>) -> Output {
        Output::Broadcast(msg.into())
    }
}

/// Observations for metrics and logs; they change nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    PrePrepareAccepted {
        view: View,
        seq: Seq,
    },
    /// Raft / Multi-Paxos: this replica made a proposal for `seq` durable (an appended entry,
    /// an accepted value) — the start of its commit phase.
    Accepted {
        view: View,
        seq: Seq,
    },
    /// 2f matching PREPAREs and the PRE-PREPARE: `completed_by` cast the deciding vote.
    Prepared {
        view: View,
        seq: Seq,
        completed_by: ValidatorId,
    },
    /// 2f+1 matching COMMITs.
    CommittedLocal {
        view: View,
        seq: Seq,
        completed_by: ValidatorId,
    },
    /// A vote arrived: for lateness per validator.
    Vote {
        kind: VoteKind,
        view: View,
        seq: Seq,
        from: ValidatorId,
    },
    ViewChangeStarted {
        to: View,
        reason: ViewChangeReason,
    },
    /// A leader is known for `view` (PBFT: NEW-VIEW; Raft: a term's leader heard from or
    /// elected; Multi-Paxos: phase 1 won, or a ballot's leader heard from).
    NewView {
        view: View,
        primary: ValidatorId,
    },
    /// This replica stopped leading (Raft: check-quorum lost a majority; Multi-Paxos: a
    /// higher ballot).
    SteppedDown {
        view: View,
    },
    StableCheckpoint {
        seq: Seq,
    },
    StateTransfer {
        from: Seq,
        target: Seq,
    },
    /// The state was repaired up to the certified checkpoint `seq`; voting resumes.
    Repaired {
        seq: Seq,
    },
    /// A message that failed the protocol's own checks (not signatures: those never reach
    /// the core).
    Rejected {
        reason: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VoteKind {
    Prepare,
    Commit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewChangeReason {
    /// A known request did not commit in time.
    Timeout,
    /// f + 1 validators are in higher views.
    JoinHigherView,
    /// The view change itself did not complete in time.
    ViewChangeTimeout,
    /// Raft / Multi-Paxos: no leader heard within the election timeout; this replica
    /// campaigns (Raft after winning a pre-vote).
    ElectionTimeout,
    /// Raft: the leader handed leadership to this replica.
    LeaderTransfer,
    /// Raft / Multi-Paxos: a peer is in a higher term or ballot; this replica follows.
    HigherEpoch,
}

impl ViewChangeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewChangeReason::Timeout => "timeout",
            ViewChangeReason::JoinHigherView => "join_higher_view",
            ViewChangeReason::ViewChangeTimeout => "view_change_timeout",
            ViewChangeReason::ElectionTimeout => "election_timeout",
            ViewChangeReason::LeaderTransfer => "leader_transfer",
            ViewChangeReason::HigherEpoch => "higher_epoch",
        }
    }
}

/// The shared interface of PBFT, Raft and Multi-Paxos.
pub trait Protocol {
    /// Feeds one input at time `now`; appends outputs to `out` in the order they must be
    /// carried out.
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>);
    /// The current epoch (view, term, ballot round).
    fn view(&self) -> View;
    /// The replica the protocol currently follows, when it knows one.
    fn leader(&self) -> Option<ValidatorId>;
    /// The latest stable checkpoint (or snapshot).
    fn stable_checkpoint(&self) -> Seq;
}
