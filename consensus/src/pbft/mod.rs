//! PBFT (Castro & Liskov, OSDI'99; TOCS'02 §4) as a sans-IO state machine.
//!
//! * [`normal_case`]: PRE-PREPARE / PREPARE / COMMIT, batching and pipelining within the
//!   watermark window, execution strictly in sequence order;
//! * [`checkpoint`]: CHECKPOINT every K, stable checkpoints with 2f+1 proofs, log garbage
//!   collection, watermarks;
//! * [`view_change`]: VIEW-CHANGE with C and P, NEW-VIEW with an O the backups recompute,
//!   null batches for gaps, exponential timeouts, joining higher views;
//! * [`state_transfer`]: asking the driver to fetch certified blocks when this replica is
//!   behind;
//! * [`safety`]: the only code that signs; [`evidence`]: equivocation proofs.

pub mod checkpoint;
pub mod evidence;
pub mod messages;
pub mod normal_case;
pub mod records;
pub mod safety;
pub mod state_transfer;
pub mod view_change;

use std::collections::{BTreeMap, HashMap, VecDeque};

use tally_crypto::Digest;

pub use evidence::Evidence;
pub use messages::{
    Checkpoint, Commit, Message, NewView, PrePrepare, Prepare, PreparedProof, Signed, ViewChange,
};
pub use records::Record;

use crate::protocol::{Event, Input, Millis, Output, Protocol};
use crate::signer::Signer;
use crate::{Batch, CommitCertificate, Seq, ValidatorId, ValidatorSet, View};
use safety::SafetyRules;

/// PBFT parameters (from the genesis).
#[derive(Clone, Debug)]
pub struct PbftConfig {
    /// K: a checkpoint every K sequence numbers.
    pub checkpoint_interval: u64,
    /// L: sequence numbers accepted above the stable checkpoint. At least K.
    pub watermark_window: u64,
    /// Base view-change timeout; doubles on each successive view change.
    pub view_change_timeout_ms: u64,
    /// The timeout stops doubling after this many doublings.
    pub max_backoff_exponent: u32,
    /// How often unacknowledged messages are sent again.
    pub retransmit_ms: u64,
}

impl PbftConfig {
    pub fn new(
        checkpoint_interval: u64,
        watermark_window: u64,
        view_change_timeout_ms: u64,
    ) -> Self {
        assert!(checkpoint_interval > 0 && watermark_window >= checkpoint_interval);
        PbftConfig {
            checkpoint_interval,
            watermark_window,
            view_change_timeout_ms,
            max_backoff_exponent: 6,
            retransmit_ms: (view_change_timeout_ms / 4).max(20),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Normal,
    /// Waiting for the NEW-VIEW of the current (target) view.
    ViewChanging,
}

/// Per-sequence-number state in the log.
#[derive(Default, Debug)]
pub(crate) struct Slot {
    /// The accepted PRE-PREPARE of the current view.
    pub pre_prepare: Option<Signed<PrePrepare>>,
    /// PREPAREs of the current view, by digest and sender.
    pub prepares: HashMap<Digest, BTreeMap<ValidatorId, Signed<Prepare>>>,
    /// COMMITs of the current view, by digest and sender.
    pub commits: HashMap<Digest, BTreeMap<ValidatorId, Signed<Commit>>>,
    /// Prepared in the current view.
    pub prepared: bool,
    pub own_prepare: Option<Signed<Prepare>>,
    pub own_commit: Option<Signed<Commit>>,
    /// The prepared certificate of the highest view this replica prepared in (kept across
    /// view changes: it goes into P).
    pub prepared_proof: Option<PreparedProof>,
    /// Committed-local: the batch and its certificate, once 2f+1 COMMITs matched.
    pub committed: Option<(Batch, CommitCertificate)>,
}

impl Slot {
    pub fn digest(&self) -> Option<Digest> {
        self.pre_prepare.as_ref().map(|p| p.body.batch.digest())
    }

    /// Drops everything that belongs to the old view.
    fn reset_view(&mut self) {
        self.pre_prepare = None;
        self.prepares.clear();
        self.commits.clear();
        self.prepared = false;
        self.own_prepare = None;
        self.own_commit = None;
    }
}

/// The latest stable checkpoint and its proof (C).
#[derive(Clone, Debug, Default)]
pub(crate) struct Stable {
    pub seq: Seq,
    pub state_root: Digest,
    pub proof: Vec<Signed<Checkpoint>>,
}

/// Messages from a view this replica has not entered yet, held until it does.
const FUTURE_BUFFER_MAX: usize = 8192;

/// One PBFT replica.
pub struct Pbft {
    pub(crate) config: PbftConfig,
    pub(crate) validators: ValidatorSet,
    pub(crate) me: ValidatorId,
    pub(crate) safety: SafetyRules,
    pub(crate) now: Millis,

    pub(crate) view: View,
    pub(crate) status: Status,
    pub(crate) log: BTreeMap<Seq, Slot>,
    pub(crate) stable: Stable,
    /// CHECKPOINT votes above the stable checkpoint: seq → sender → message.
    pub(crate) checkpoints: BTreeMap<Seq, BTreeMap<ValidatorId, Signed<Checkpoint>>>,
    /// This replica's own state roots at checkpoint sequence numbers.
    pub(crate) own_roots: BTreeMap<Seq, Digest>,
    /// The highest sequence number the driver executed.
    pub(crate) last_executed: Seq,
    /// The next sequence number to emit a `Commit` for.
    pub(crate) next_commit: Seq,
    /// The primary's next sequence number.
    pub(crate) next_propose: Seq,
    pub(crate) batch_requested: bool,

    /// VIEW-CHANGEs received, by view and sender (each sender's highest only).
    pub(crate) view_changes: BTreeMap<View, BTreeMap<ValidatorId, Signed<ViewChange>>>,
    /// The highest view each peer was seen in.
    pub(crate) peer_views: BTreeMap<ValidatorId, View>,
    /// The highest sequence number each peer was seen COMMITting.
    pub(crate) peer_commits: BTreeMap<ValidatorId, Seq>,
    /// `next_commit` when last checked for being stuck behind peers, and when.
    pub(crate) stuck_check: (Seq, Millis),
    pub(crate) future: VecDeque<Message>,
    /// Number of successive view changes without a commit: the timeout's exponent.
    pub(crate) backoff: u32,
    pub(crate) progress_deadline: Option<Millis>,
    pub(crate) view_change_deadline: Option<Millis>,
    pub(crate) next_retransmit: Millis,
    pub(crate) pending_requests: bool,
    /// Last time a NEW-VIEW was resent to each lagging peer.
    pub(crate) new_view_resent: HashMap<ValidatorId, Millis>,

    pub(crate) evidence: evidence::EvidenceTracker,
    /// A state transfer in progress: target and when to ask again.
    pub(crate) fetching: Option<(Seq, Digest, Millis)>,
    /// A stable checkpoint known from proofs but not yet reached by execution.
    pub(crate) pending_stable: Option<Stable>,
}

impl Pbft {
    /// A replica starting fresh, or restarting from `records` (what it persisted) with the
    /// driver's chain at `last_executed`.
    pub fn new(
        config: PbftConfig,
        validators: ValidatorSet,
        me: ValidatorId,
        signer: Box<dyn Signer>,
        records: &[Record],
        last_executed: Seq,
    ) -> Pbft {
        assert!(validators.key(me).is_some(), "this replica is a validator");
        let mut safety = SafetyRules::new(signer, me);
        safety.restore(records);
        let mut p = Pbft {
            config,
            validators,
            me,
            safety,
            now: 0,
            view: View(0),
            status: Status::Normal,
            log: BTreeMap::new(),
            stable: Stable::default(),
            checkpoints: BTreeMap::new(),
            own_roots: BTreeMap::new(),
            last_executed,
            next_commit: last_executed.next(),
            next_propose: Seq(1),
            batch_requested: false,
            view_changes: BTreeMap::new(),
            peer_views: BTreeMap::new(),
            peer_commits: BTreeMap::new(),
            stuck_check: (Seq(0), 0),
            future: VecDeque::new(),
            backoff: 0,
            progress_deadline: None,
            view_change_deadline: None,
            next_retransmit: 0,
            pending_requests: false,
            new_view_resent: HashMap::new(),
            evidence: evidence::EvidenceTracker::default(),
            fetching: None,
            pending_stable: None,
        };
        p.restore(records);
        p
    }

    fn restore(&mut self, records: &[Record]) {
        let mut changing = false;
        for r in records {
            match r {
                Record::View { view, changing: c } if *view >= self.view => {
                    self.view = *view;
                    changing = *c;
                }
                Record::Stable {
                    seq,
                    state_root,
                    proof,
                } if *seq >= self.stable.seq => {
                    self.stable = Stable {
                        seq: *seq,
                        state_root: *state_root,
                        proof: proof.clone(),
                    };
                }
                _ => {}
            }
        }
        if let Some(v) = self.safety.highest_view_change()
            && v > self.view
        {
            self.view = v;
            changing = true;
        }
        if self.safety.own_new_view(self.view).is_some() {
            changing = false;
        }
        self.status = if changing {
            Status::ViewChanging
        } else {
            Status::Normal
        };
        for r in records {
            match r {
                Record::Prepared(proof) if proof.pre_prepare.body.seq > self.stable.seq => {
                    let slot = self.log.entry(proof.pre_prepare.body.seq).or_default();
                    let newer = slot
                        .prepared_proof
                        .as_ref()
                        .is_none_or(|p| p.pre_prepare.body.view < proof.pre_prepare.body.view);
                    if newer {
                        slot.prepared_proof = Some(proof.clone());
                    }
                }
                Record::OwnPrePrepare(pp)
                    if pp.body.view == self.view
                        && pp.body.seq > self.stable.seq
                        && self.status == Status::Normal =>
                {
                    self.log.entry(pp.body.seq).or_default().pre_prepare = Some(pp.clone());
                }
                _ => {}
            }
        }
        if self.status == Status::Normal && self.is_primary() {
            let last = self.safety.last_pre_prepared(self.view).unwrap_or(Seq(0));
            self.next_propose = last.max(self.stable.seq).next();
        } else {
            self.next_propose = self.stable.seq.next();
        }
        if self.last_executed < self.stable.seq {
            // The chain lost blocks the checkpoint certifies (e.g. writes that were not
            // synced): fetch them back before anything else.
            self.pending_stable = Some(self.stable.clone());
        }
    }

    /// A one-line summary of the replica's state, for diagnosing simulator runs.
    pub fn debug_state(&self) -> String {
        let slots: Vec<String> = self
            .log
            .iter()
            .take(12)
            .map(|(s, slot)| {
                format!(
                    "{}:{}{}{}{}",
                    s.0,
                    if slot.pre_prepare.is_some() { "P" } else { "-" },
                    if slot.prepared { "p" } else { "-" },
                    if slot.committed.is_some() { "c" } else { "-" },
                    slot.prepares.values().map(|v| v.len()).max().unwrap_or(0),
                )
            })
            .collect();
        format!(
            "K {} L {} checkpoints {:?} own_roots {:?} view {} {:?} stable {} executed {} next_commit {} next_propose {} requested {} fetching {:?} pending_stable {:?} backoff {} vcs {:?} slots [{}]",
            self.config.checkpoint_interval,
            self.config.watermark_window,
            self.checkpoints
                .iter()
                .map(|(s, v)| (s.0, v.keys().map(|k| k.0).collect::<Vec<_>>()))
                .collect::<Vec<_>>(),
            self.own_roots.keys().map(|s| s.0).collect::<Vec<_>>(),
            self.view.0,
            self.status,
            self.stable.seq.0,
            self.last_executed.0,
            self.next_commit.0,
            self.next_propose.0,
            self.batch_requested,
            self.fetching.map(|(t, _, _)| t.0),
            self.pending_stable.as_ref().map(|p| p.seq.0),
            self.backoff,
            self.view_changes
                .iter()
                .map(|(v, m)| (v.0, m.len()))
                .collect::<Vec<_>>(),
            slots.join(" ")
        )
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Batches this primary proposed that have not committed yet.
    pub fn in_flight(&self) -> u64 {
        self.next_propose.0.saturating_sub(self.next_commit.0)
    }

    pub fn me(&self) -> ValidatorId {
        self.me
    }

    /// Transaction hashes of the batches pre-prepared in the current view and not yet
    /// committed: what is in flight now (after a view change, the NEW-VIEW's re-proposals).
    pub fn uncommitted_txs(&self) -> Vec<Digest> {
        self.log
            .range(self.next_commit..)
            .filter(|(_, s)| s.committed.is_none())
            .filter_map(|(_, s)| s.pre_prepare.as_ref())
            .filter(|p| p.body.view == self.view)
            .flat_map(|p| p.body.batch.txs.iter().copied())
            .collect()
    }

    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.validators.primary(self.view) == self.me
    }

    pub(crate) fn high_watermark(&self) -> Seq {
        Seq(self.stable.seq.0 + self.config.watermark_window)
    }

    pub(crate) fn in_window(&self, seq: Seq) -> bool {
        seq > self.stable.seq && seq <= self.high_watermark()
    }

    /// The current view-change timeout: the base doubled once per successive view change.
    pub(crate) fn timeout(&self) -> Millis {
        self.config.view_change_timeout_ms << self.backoff.min(self.config.max_backoff_exponent)
    }

    fn on_message(&mut self, msg: Message, out: &mut Vec<Output>) {
        if msg.from() == self.me {
            return;
        }
        if let Err(e) = messages::check_structure(&msg, &self.validators) {
            out.push(Output::Event(Event::Rejected { reason: e.as_str() }));
            return;
        }
        if let Some(v) = msg.view() {
            let seen = self.peer_views.entry(msg.from()).or_default();
            if v > *seen {
                *seen = v;
            }
        }
        match msg {
            Message::PrePrepare(m) => self.on_pre_prepare(m, out),
            Message::Prepare(m) => self.on_prepare(m, out),
            Message::Commit(m) => self.on_commit(m, out),
            Message::Checkpoint(m) => self.on_checkpoint(m, out),
            Message::ViewChange(m) => self.on_view_change(m, out),
            Message::NewView(m) => self.on_new_view(m, out),
        }
        self.check_join(out);
    }

    /// Holds a normal-case message of a view this replica has not entered yet.
    pub(crate) fn buffer_future(&mut self, msg: Message) {
        if self.future.len() >= FUTURE_BUFFER_MAX {
            self.future.pop_front();
        }
        self.future.push_back(msg);
    }

    /// Replays held messages of the view just entered; drops those of older views.
    pub(crate) fn replay_future(&mut self, out: &mut Vec<Output>) {
        let held: Vec<Message> = self.future.drain(..).collect();
        for msg in held {
            match msg.view() {
                Some(v) if v == self.view => self.on_message(msg, out),
                Some(v) if v > self.view => self.future.push_back(msg),
                _ => {}
            }
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Output>) {
        match self.status {
            Status::Normal => {
                if self.has_outstanding_work() {
                    let deadline = *self
                        .progress_deadline
                        .get_or_insert(self.now + self.timeout());
                    if self.now >= deadline {
                        self.start_view_change(
                            self.view.next(),
                            crate::protocol::ViewChangeReason::Timeout,
                            out,
                        );
                    }
                } else {
                    self.progress_deadline = None;
                }
            }
            Status::ViewChanging => {
                let deadline = *self
                    .view_change_deadline
                    .get_or_insert(self.now + self.timeout());
                if self.now >= deadline {
                    self.backoff += 1;
                    self.start_view_change(
                        self.view.next(),
                        crate::protocol::ViewChangeReason::ViewChangeTimeout,
                        out,
                    );
                }
            }
        }
        if self.now >= self.next_retransmit {
            self.next_retransmit = self.now + self.config.retransmit_ms;
            self.retransmit(out);
        }
        self.retry_fetch(out);
        self.check_behind_peers(out);
        self.maybe_request_batch(out);
    }

    /// Work that should make progress: an accepted, uncommitted request in the window, or
    /// requests waiting in the mempool.
    fn has_outstanding_work(&self) -> bool {
        self.pending_requests
            || self
                .log
                .range(self.next_commit..)
                .any(|(_, s)| s.pre_prepare.is_some() && s.committed.is_none())
    }

    /// Called on every commit and execution: progress in normal operation resets the timer
    /// and the backoff. While view-changing it resets nothing: blocks executed from state
    /// transfer are no sign that the new view works (TOCS'02 §4.5.2 — the backoff ends once a
    /// request executes *in the new view*). Resetting it there let a lagging replica that
    /// kept catching up by state transfer run through views alone at the base timeout, always
    /// ahead of the others, and never rejoin them.
    pub(crate) fn on_progress(&mut self) {
        if self.status == Status::Normal {
            self.backoff = 0;
            self.progress_deadline = None;
        }
    }
}

impl Protocol for Pbft {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        self.now = self.now.max(now);
        match input {
            Input::Message(msg) => self.on_message(msg.into_inner(), out),
            Input::Tick { pending_requests } => {
                self.pending_requests = pending_requests;
                self.on_tick(out);
            }
            Input::Propose(batch) => self.on_propose(batch, out),
            Input::Executed { seq, state_root } => self.on_executed(seq, state_root, out),
        }
    }

    fn view(&self) -> View {
        self.view
    }

    fn leader(&self) -> ValidatorId {
        self.validators.primary(self.view)
    }

    fn stable_checkpoint(&self) -> Seq {
        self.stable.seq
    }
}
