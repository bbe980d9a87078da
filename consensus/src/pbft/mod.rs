//! PBFT (Castro & Liskov, OSDI'99; TOCS'02 §4) as a sans-IO state machine.
//!
//! * [`normal_case`]: PRE-PREPARE / PREPARE / COMMIT, batching and pipelining within the
//!   watermark window, payload validation and fetching, execution strictly in sequence
//!   order;
//! * [`checkpoint`]: CHECKPOINT every K on the block hash, stable checkpoints with 2f+1
//!   proofs, log garbage collection, watermarks, divergence detection;
//! * [`view_change`]: VIEW-CHANGE with C and P (claims, proven), NEW-VIEW with an O the
//!   backups recompute, null batches for gaps, exponential timeouts, joining higher views;
//! * [`state_transfer`]: asking the driver to fetch certified blocks when this replica is
//!   behind, and to repair a diverged state;
//! * [`safety`]: the only code that signs; [`evidence`]: equivocation proofs;
//! * [`footprint`]: what peers can make a replica store, and the bound on it.
//!
//! **Fault model.** Up to f = ⌊(n−1)/3⌋ validators are Byzantine: they may send any message
//! their key can sign, to anyone, at any time, or nothing. Every message reaching the core is
//! validly signed (the driver checks signatures first); everything else about it is a claim
//! the core checks before acting on it, and every store a peer's messages can grow has a
//! bound stated in [`footprint`].

pub mod checkpoint;
pub mod evidence;
pub mod footprint;
pub mod messages;
pub mod normal_case;
pub mod records;
pub mod safety;
pub mod state_transfer;
pub mod view_change;

use std::collections::{BTreeMap, HashMap, VecDeque};

use tally_crypto::Digest;

pub use evidence::{Evidence, EvidenceError, Statement};
pub use footprint::Footprint;
pub use messages::{
    Checkpoint, CheckpointCert, Commit, Message, NewView, PrePrepare, Prepare, PreparedCert,
    PreparedClaim, Signed, ViewChange, ViewChangeProofs,
};
pub use records::Record;

use crate::batch::BATCH_TXS_MAX;
use crate::protocol::{Event, Input, Millis, Output, PeerMessage, Protocol};
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
    /// The most transactions a batch may name; a PRE-PREPARE naming more is refused.
    pub batch_txs_max: usize,
    /// Bytes of messages of views this replica has not entered yet held per sender (the
    /// oldest go first; retransmission brings back what matters).
    pub future_bytes_per_sender: usize,
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
            batch_txs_max: BATCH_TXS_MAX,
            future_bytes_per_sender: 4 * 1024 * 1024,
        }
    }

    /// Messages of future views held per sender: a view's worth of normal-case traffic from
    /// one replica (a PRE-PREPARE, PREPARE and COMMIT per sequence number in the window) and
    /// its NEW-VIEW.
    pub fn future_messages_per_sender(&self) -> usize {
        3 * self.watermark_window as usize + 2
    }
}

/// Executed batch digests remembered for the vote check after a restart or state transfer
/// (see [`Pbft::new`]), in units of the watermark window.
pub const EXECUTED_KEPT_WINDOWS: usize = 4;

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
    /// The driver confirmed the pre-prepare's transactions are held and valid.
    pub validated: bool,
    /// PREPAREs of the current view, the first from each sender.
    pub prepares: BTreeMap<ValidatorId, Signed<Prepare>>,
    /// COMMITs of the current view, the first from each sender.
    pub commits: BTreeMap<ValidatorId, Signed<Commit>>,
    /// Prepared in the current view.
    pub prepared: bool,
    pub own_prepare: Option<Signed<Prepare>>,
    pub own_commit: Option<Signed<Commit>>,
    /// The prepared certificate of the highest view this replica prepared in (kept across
    /// view changes: it backs the claim in P).
    pub prepared_cert: Option<PreparedCert>,
    /// Batches held, by digest: the current pre-prepare's, the prepared certificate's and
    /// the committed one's (so at most three, usually one).
    pub batches: Vec<(Digest, Batch)>,
    /// Committed-local: the certificate, once 2f+1 COMMITs matched.
    pub committed: Option<CommitCertificate>,
    /// After a NEW-VIEW: the validators whose view changes claimed the re-proposed digest
    /// (they hold its batch).
    pub holders: Vec<ValidatorId>,
}

impl Slot {
    pub fn digest(&self) -> Option<Digest> {
        self.pre_prepare.as_ref().map(|p| p.body.digest)
    }

    pub fn batch(&self, digest: &Digest) -> Option<&Batch> {
        self.batches
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, b)| b)
    }

    pub fn keep_batch(&mut self, digest: Digest, batch: Batch) {
        if self.batch(&digest).is_none() {
            self.batches.push((digest, batch));
        }
    }

    /// Whether a batch with `digest` is one this slot needs.
    fn wants(&self, digest: &Digest) -> bool {
        self.digest().as_ref() == Some(digest)
            || self
                .prepared_cert
                .as_ref()
                .is_some_and(|p| p.pre_prepare.body.digest == *digest)
            || self.committed.as_ref().is_some_and(|c| c.digest == *digest)
    }

    /// Drops everything that belongs to the old view; keeps the batches the prepared
    /// certificate or the commit still need.
    fn reset_view(&mut self) {
        self.pre_prepare = None;
        self.validated = false;
        self.prepares.clear();
        self.commits.clear();
        self.prepared = false;
        self.own_prepare = None;
        self.own_commit = None;
        self.holders.clear();
        let keep: Vec<Digest> = self
            .prepared_cert
            .iter()
            .map(|p| p.pre_prepare.body.digest)
            .chain(self.committed.iter().map(|c| c.digest))
            .collect();
        self.batches.retain(|(d, _)| keep.contains(d));
    }
}

/// Messages of views this replica has not entered yet, from one sender.
#[derive(Default, Debug)]
pub(crate) struct FutureQueue {
    pub msgs: VecDeque<Message>,
    pub bytes: usize,
}

/// A repair under way: the certified checkpoint to install, and when it was last asked.
#[derive(Clone, Debug)]
pub(crate) struct Repair {
    pub target: CheckpointCert,
    pub asked_at: Millis,
}

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
    /// The latest stable checkpoint and its certificate (C).
    pub(crate) stable: CheckpointCert,
    /// CHECKPOINT votes above the stable checkpoint: seq → sender → message.
    pub(crate) checkpoints: BTreeMap<Seq, BTreeMap<ValidatorId, Signed<Checkpoint>>>,
    /// This replica's own block hashes at checkpoint sequence numbers.
    pub(crate) own_hashes: BTreeMap<Seq, Digest>,
    /// Block hashes of executed checkpoints not yet signed because they were more than two
    /// windows above the stable checkpoint; at most `DEFERRED_CHECKPOINTS_MAX`.
    pub(crate) deferred_checkpoints: BTreeMap<Seq, Digest>,
    /// Batch digests this replica executed above the stable checkpoint (the latest
    /// [`EXECUTED_KEPT_WINDOWS`] windows' worth): it never votes for another digest there.
    pub(crate) executed: BTreeMap<Seq, Digest>,
    /// The highest sequence number the driver executed.
    pub(crate) last_executed: Seq,
    /// The next sequence number to emit a `Commit` for.
    pub(crate) next_commit: Seq,
    /// The primary's next sequence number.
    pub(crate) next_propose: Seq,
    pub(crate) batch_requested: bool,

    /// VIEW-CHANGEs received with their proofs, by view and sender: per sender, the lowest
    /// at or above the current view and the highest (see `store_view_change`).
    pub(crate) view_changes:
        BTreeMap<View, BTreeMap<ValidatorId, (Signed<ViewChange>, ViewChangeProofs)>>,
    /// The highest view each peer was seen in.
    pub(crate) peer_views: BTreeMap<ValidatorId, View>,
    /// The highest sequence number each peer was seen COMMITting.
    pub(crate) peer_commits: BTreeMap<ValidatorId, Seq>,
    /// `next_commit` when last checked for being stuck behind peers, and when.
    pub(crate) stuck_check: (Seq, Millis),
    pub(crate) future: BTreeMap<ValidatorId, FutureQueue>,
    /// Successive view changes since a request last committed in normal operation: the
    /// timeout's exponent (TOCS'02 §4.5.2).
    pub(crate) backoff: u32,
    pub(crate) progress_deadline: Option<Millis>,
    /// Runs only once 2f+1 VIEW-CHANGEs for the current view are held.
    pub(crate) view_change_deadline: Option<Millis>,
    pub(crate) next_retransmit: Millis,
    pub(crate) pending_requests: bool,
    /// Last time a NEW-VIEW was resent to each lagging peer.
    pub(crate) new_view_resent: HashMap<ValidatorId, Millis>,
    /// Last time our VIEW-CHANGE of an earlier view was resent to each peer still in it.
    pub(crate) view_change_resent: HashMap<ValidatorId, Millis>,

    pub(crate) evidence: evidence::EvidenceTracker,
    /// A state transfer in progress: target, its certified hash (or zero) and when to ask
    /// again.
    pub(crate) fetching: Option<(Seq, Digest, Millis)>,
    /// A stable checkpoint known from proofs but not yet reached by execution.
    pub(crate) pending_stable: Option<CheckpointCert>,
    /// When `pending_stable` was set for a sequence number this replica had already committed
    /// (its own executor will reach it: no transfer unless execution stalls past a timeout).
    pub(crate) pending_stable_since: Millis,
    /// Set while this replica's state diverged from a certified checkpoint: it signs
    /// nothing and executes nothing until the driver reports the repair.
    pub(crate) diverged: Option<Repair>,
}

impl Pbft {
    /// A replica starting fresh, or restarting from `records` (what it persisted) with the
    /// driver's chain at `last_executed`. `recent` holds the batch digests of the latest
    /// executed blocks (up to [`EXECUTED_KEPT_WINDOWS`] watermark windows): the replica never
    /// votes for another digest at those sequence numbers, nor at an executed one it does not
    /// know the digest of.
    pub fn new(
        config: PbftConfig,
        validators: ValidatorSet,
        me: ValidatorId,
        signer: Box<dyn Signer>,
        records: &[Record],
        last_executed: Seq,
        recent: &[(Seq, Digest)],
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
            stable: CheckpointCert::default(),
            checkpoints: BTreeMap::new(),
            own_hashes: BTreeMap::new(),
            deferred_checkpoints: BTreeMap::new(),
            executed: BTreeMap::new(),
            last_executed,
            next_commit: last_executed.next(),
            next_propose: Seq(1),
            batch_requested: false,
            view_changes: BTreeMap::new(),
            peer_views: BTreeMap::new(),
            peer_commits: BTreeMap::new(),
            stuck_check: (Seq(0), 0),
            future: BTreeMap::new(),
            backoff: 0,
            progress_deadline: None,
            view_change_deadline: None,
            next_retransmit: 0,
            pending_requests: false,
            new_view_resent: HashMap::new(),
            view_change_resent: HashMap::new(),
            evidence: evidence::EvidenceTracker::default(),
            fetching: None,
            pending_stable: None,
            pending_stable_since: 0,
            diverged: None,
        };
        p.restore(records);
        for (seq, digest) in recent {
            if *seq > p.stable.seq && *seq <= last_executed {
                p.executed.insert(*seq, *digest);
            }
        }
        p.trim_executed();
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
                Record::Stable(cert) if cert.seq >= self.stable.seq => {
                    self.stable = cert.clone();
                }
                Record::Repair(cert) if cert.seq > Seq(0) => {
                    self.diverged = Some(Repair {
                        target: cert.clone(),
                        asked_at: 0,
                    });
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
                Record::Prepared(cert, batch) if cert.pre_prepare.body.seq > self.stable.seq => {
                    let pp = cert.pre_prepare.body;
                    let slot = self.log.entry(pp.seq).or_default();
                    let newer = slot
                        .prepared_cert
                        .as_ref()
                        .is_none_or(|p| p.pre_prepare.body.view < pp.view);
                    if newer {
                        slot.prepared_cert = Some(cert.clone());
                        slot.keep_batch(pp.digest, batch.clone());
                    }
                }
                Record::OwnPrePrepare(pp, batch)
                    if pp.body.view == self.view
                        && pp.body.seq > self.stable.seq
                        && self.status == Status::Normal =>
                {
                    let slot = self.log.entry(pp.body.seq).or_default();
                    slot.pre_prepare = Some(*pp);
                    slot.validated = true;
                    slot.keep_batch(pp.body.digest, batch.clone());
                }
                _ => {}
            }
        }
        // Batches of older prepared certificates than the newest are not needed.
        for slot in self.log.values_mut() {
            slot.reset_batches_to_needed();
        }
        if self.status == Status::Normal && self.is_primary() {
            let last = self.safety.last_pre_prepared(self.view).unwrap_or(Seq(0));
            self.next_propose = last.max(self.stable.seq).next();
        } else {
            self.next_propose = self.stable.seq.next();
        }
        if self.diverged.is_none() && self.last_executed < self.stable.seq {
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
                    "{}:{}{}{}{}{}",
                    s.0,
                    if slot.pre_prepare.is_some() { "P" } else { "-" },
                    if slot.validated { "v" } else { "-" },
                    if slot.prepared { "p" } else { "-" },
                    if slot.committed.is_some() { "c" } else { "-" },
                    slot.prepares.len(),
                )
            })
            .collect();
        format!(
            "K {} L {} checkpoints {:?} own_hashes {:?} view {} {:?} stable {} executed {} next_commit {} next_propose {} requested {} fetching {:?} pending_stable {:?} diverged {:?} backoff {} vcs {:?} slots [{}]",
            self.config.checkpoint_interval,
            self.config.watermark_window,
            self.checkpoints
                .iter()
                .map(|(s, v)| {
                    let votes: Vec<String> = v
                        .iter()
                        .map(|(k, m)| format!("{}:{}", k.0, &m.body.block_hash.to_hex()[..6]))
                        .collect();
                    (s.0, votes)
                })
                .collect::<Vec<_>>(),
            self.own_hashes
                .iter()
                .map(|(s, h)| format!("{}:{}", s.0, &h.to_hex()[..6]))
                .collect::<Vec<_>>(),
            self.view.0,
            self.status,
            self.stable.seq.0,
            self.last_executed.0,
            self.next_commit.0,
            self.next_propose.0,
            self.batch_requested,
            self.fetching.map(|(t, _, _)| t.0),
            self.pending_stable.as_ref().map(|p| p.seq.0),
            self.diverged.as_ref().map(|r| r.target.seq.0),
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
            .filter_map(|(_, s)| {
                let pp = s.pre_prepare.as_ref()?;
                (pp.body.view == self.view).then(|| s.batch(&pp.body.digest))?
            })
            .flat_map(|b| b.txs.iter().copied())
            .collect()
    }

    /// The batch with `digest` at `seq`, if this replica holds it (to answer a peer's
    /// payload request).
    pub fn payload(&self, seq: Seq, digest: &Digest) -> Option<&Batch> {
        self.log.get(&seq).and_then(|s| s.batch(digest))
    }

    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// The certificate of the latest stable checkpoint.
    pub fn stable_cert(&self) -> &CheckpointCert {
        &self.stable
    }

    /// The highest sequence number accepted: the stable checkpoint plus the window.
    pub fn high_watermark(&self) -> Seq {
        Seq(self.stable.seq.0 + self.config.watermark_window)
    }

    /// Whether this replica's state diverged from a certified checkpoint (and is waiting for
    /// the repair).
    pub fn is_diverged(&self) -> bool {
        self.diverged.is_some()
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.validators.primary(self.view) == self.me
    }

    pub(crate) fn in_window(&self, seq: Seq) -> bool {
        seq > self.stable.seq && seq <= self.high_watermark()
    }

    /// A replica with a diverged state signs nothing (it would vouch for a state it does not
    /// have).
    pub(crate) fn may_sign(&self) -> bool {
        self.diverged.is_none()
    }

    /// Whether this replica may vote for `digest` at `seq`: not if it executed another
    /// digest there, nor if it executed `seq` and no longer knows the digest.
    pub(crate) fn agrees_with_executed(&self, seq: Seq, digest: &Digest) -> bool {
        match self.executed.get(&seq) {
            Some(d) => d == digest,
            None => seq > self.last_executed,
        }
    }

    /// The current view-change timeout: the base, doubled for each successive view change
    /// after the first (TOCS'02 §4.5.2: T for the first, 2T for the next, …).
    pub(crate) fn timeout(&self) -> Millis {
        let exponent = self
            .backoff
            .saturating_sub(1)
            .min(self.config.max_backoff_exponent);
        self.config.view_change_timeout_ms << exponent
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
            Message::PrePrepare(m, batch) => self.on_pre_prepare(m, batch, out),
            Message::Prepare(m) => self.on_prepare(m, out),
            Message::Commit(m) => self.on_commit(m, out),
            Message::Checkpoint(m) => self.on_checkpoint(m, out),
            Message::ViewChange(m, proofs) => self.on_view_change(m, proofs, out),
            Message::NewView(m) => self.on_new_view(m, out),
        }
        self.check_join(out);
    }

    /// Holds a normal-case message of a view this replica has not entered yet, within its
    /// sender's budget (the sender's oldest go first).
    pub(crate) fn buffer_future(&mut self, msg: Message) {
        let size = msg.wire_size();
        if size > self.config.future_bytes_per_sender {
            return;
        }
        let max = self.config.future_messages_per_sender();
        let q = self.future.entry(msg.from()).or_default();
        q.bytes += size;
        q.msgs.push_back(msg);
        while q.bytes > self.config.future_bytes_per_sender || q.msgs.len() > max {
            match q.msgs.pop_front() {
                Some(old) => q.bytes -= old.wire_size(),
                None => break,
            }
        }
    }

    /// Replays held messages of the view just entered; drops those of older views.
    pub(crate) fn replay_future(&mut self, out: &mut Vec<Output>) {
        let held: Vec<Message> = std::mem::take(&mut self.future)
            .into_values()
            .flat_map(|q| q.msgs)
            .collect();
        for msg in held {
            match msg.view() {
                Some(v) if v == self.view => self.on_message(msg, out),
                Some(v) if v > self.view => self.buffer_future(msg),
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
                if let Some(deadline) = self.view_change_deadline
                    && self.now >= deadline
                {
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
        self.retry_repair(out);
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

    /// Called on every commit and execution in normal operation: progress restarts the
    /// request timer. The backoff is reset elsewhere, only when a request commits in the
    /// current view ([`Pbft::emit_commits`]): blocks executed from state transfer, or null
    /// batches of a NEW-VIEW, are no sign that the new view works (TOCS'02 §4.5.2).
    pub(crate) fn on_progress(&mut self) {
        if self.status == Status::Normal {
            self.progress_deadline = None;
        }
    }

    /// Forgets the oldest executed digests beyond [`EXECUTED_KEPT_WINDOWS`] windows.
    pub(crate) fn trim_executed(&mut self) {
        let keep = EXECUTED_KEPT_WINDOWS * self.config.watermark_window as usize;
        while self.executed.len() > keep {
            self.executed.pop_first();
        }
    }
}

impl Slot {
    /// Keeps only the batches the slot's pre-prepare, prepared certificate or commit name.
    fn reset_batches_to_needed(&mut self) {
        let wanted: Vec<Digest> = self
            .batches
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| self.wants(d))
            .collect();
        self.batches.retain(|(d, _)| wanted.contains(d));
    }
}

impl Protocol for Pbft {
    fn step(&mut self, now: Millis, input: Input, out: &mut Vec<Output>) {
        self.now = self.now.max(now);
        match input {
            Input::Message(PeerMessage::Pbft(msg)) => self.on_message(msg.into_inner(), out),
            // Another protocol's message: not for this core.
            Input::Message(_) | Input::TransferLeadership { .. } => {}
            Input::Tick {
                pending_requests, ..
            } => {
                self.pending_requests = pending_requests;
                self.on_tick(out);
            }
            Input::Propose(batch) => self.on_propose(batch, out),
            Input::Validated { view, seq, digest } => self.on_validated(view, seq, digest, out),
            Input::Payload { seq, batch } => self.on_payload(seq, batch, out),
            Input::Executed {
                seq,
                digest,
                block_hash,
                ..
            } => self.on_executed(seq, digest, block_hash, out),
            Input::Repaired { seq, block_hash } => self.on_repaired(seq, block_hash, out),
        }
    }

    fn view(&self) -> View {
        self.view
    }

    fn leader(&self) -> Option<ValidatorId> {
        Some(self.validators.primary(self.view))
    }

    fn stable_checkpoint(&self) -> Seq {
        self.stable.seq
    }
}
