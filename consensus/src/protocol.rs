//! The interface every protocol implements: inputs in, ordered outputs out.
//!
//! ```text
//!            ┌──────────────────────── driver (node/, or the simulator) ─────────────────────┐
//!  network ─▶│ verify signatures ─▶ Input::Message ─┐                                        │
//!  timer   ─▶│ Input::Tick ─────────────────────────┤                                        │
//!  mempool ─▶│ Input::Propose(batch) ───────────────┤                                        │
//!  mempool ─▶│ Input::Validated / Input::Payload ───┼─▶ Protocol::step(now, input, &mut out)  │
//!  executor ▶│ Input::Executed / Input::Repaired ───┘          │                             │
//!            │                                                  ▼                             │
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
//! and then sends is correct.
//!
//! The acting rule: the driver acts on a peer's message only through the core's outputs. A
//! PRE-PREPARE's transactions are looked up, fetched or marked as proposed only when the core
//! asks ([`Output::Validate`]), which it does only for a pre-prepare it accepted — from the
//! primary of its current view, inside its watermarks, the first for that `(view, seq)`,
//! within the batch limit. So a validator that is not the primary cannot make honest nodes
//! fetch, hold or set aside anything by sending pre-prepares.

use tally_crypto::{Digest, Verified};

use crate::pbft::{CheckpointCert, Evidence, Message, Record};
use crate::{Batch, CommitCertificate, Seq, ValidatorId, View};

/// Milliseconds of the driver's monotonic clock. The protocol never reads a clock; it is
/// told the time with every step.
pub type Millis = u64;

#[derive(Clone, Debug)]
pub enum Input {
    /// A message whose every signature was checked.
    Message(Verified<Message>),
    /// Time passed. `pending_requests`: the mempool holds transactions not yet committed (a
    /// silent primary is then suspected).
    Tick { pending_requests: bool },
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
    /// `digest`, giving a block that hashes to `block_hash`.
    Executed {
        seq: Seq,
        digest: Digest,
        block_hash: Digest,
    },
    /// The driver replaced its chain and state with the certified checkpoint `seq` (answering
    /// [`Output::RepairState`]).
    Repaired { seq: Seq, block_hash: Digest },
}

#[derive(Clone, Debug)]
pub enum Output {
    /// Make this record durable before sending any message of this step.
    Persist(Record),
    Send {
        to: ValidatorId,
        msg: Message,
    },
    Broadcast(Message),
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
    /// [`Input::Executed`]. `block_hash` is the certified hash at `target` when known.
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

/// Observations for metrics and logs; they change nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    PrePrepareAccepted {
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
    NewView {
        view: View,
        primary: ValidatorId,
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
}

impl ViewChangeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewChangeReason::Timeout => "timeout",
            ViewChangeReason::JoinHigherView => "join_higher_view",
            ViewChangeReason::ViewChangeTimeout => "view_change_timeout",
        }
    }
}

/// The shared interface of PBFT, Raft and Multi-Paxos.
pub trait Protocol {
    /// Feeds one input at time `now`; appends outputs to `out` in the order they must be
    /// carried out.
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>);
    /// The current view (term, ballot round).
    fn view(&self) -> View;
    /// The replica the protocol currently follows.
    fn leader(&self) -> ValidatorId;
    /// The latest stable checkpoint (or snapshot).
    fn stable_checkpoint(&self) -> Seq;
}
