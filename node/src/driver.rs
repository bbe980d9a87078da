//! The driver: the node's only consensus event loop. It feeds the PBFT core verified
//! messages, ticks, batches and execution reports, and carries out the core's outputs in
//! order: every record of a step is written (one synced write) before any message of that
//! step is sent; commits go to the executor; batch requests are answered from the mempool.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_consensus::pbft::{Message, Pbft, Record};
use tally_consensus::protocol::{Event, Input, Output, Protocol, VoteKind};
use tally_consensus::{Batch, Seq, ValidatorId};
use tally_crypto::{Digest, Verified};
use tally_monitoring::{Metrics, PhaseValidatorLabels, ValidatorLabels};
use tally_p2p::P2pHandle;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::executor::{ExecCommand, Executed};
use crate::shared::{EVIDENCE_KEPT, EvidenceRecord, Shared};
use crate::sync::SyncCommand;

pub enum DriverInput {
    Message(Verified<Message>),
    /// Transaction bodies arrived: messages waiting for them may proceed.
    BodiesArrived,
}

/// Proposals in flight beyond which the primary waits for a full batch or a commit.
const PIPELINE_BUSY: u64 = 4;

/// How long a proposal may wait for its transaction bodies before it is dropped (the
/// protocol's retransmission brings it again).
const BODY_WAIT: Duration = Duration::from_secs(5);

pub struct Driver {
    pub core: Pbft,
    pub shared: Arc<Shared>,
    pub p2p: P2pHandle,
    pub exec: mpsc::UnboundedSender<ExecCommand>,
    pub sync: mpsc::UnboundedSender<SyncCommand>,
    pub fetch_bodies: Arc<dyn Fn(Vec<Digest>, Option<ValidatorId>) + Send + Sync>,
    pub batch_bytes_max: usize,
    pub batch_delay: Duration,
    pub repropose_after: Duration,
    pub started: Instant,
    batch_requested: bool,
    /// When this replica began the view change now under way.
    view_change_since: Option<Instant>,
    waiting: Vec<(Verified<Message>, Instant)>,
    timing: Timing,
    /// Outputs of the steps of the current group, carried out together (group commit).
    pending: Vec<Output>,
}

/// Per-sequence-number timestamps for the phase and lateness metrics.
#[derive(Default)]
struct Timing {
    pre_prepared: BTreeMap<u64, Instant>,
    prepared: BTreeMap<u64, Instant>,
    committed: BTreeMap<u64, Instant>,
    /// Voters seen per (phase, seq) before the quorum completed.
    early_votes: HashMap<(VoteKind, u64), Vec<ValidatorId>>,
    commit_voters: BTreeMap<u64, HashSet<ValidatorId>>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Pbft,
        shared: Arc<Shared>,
        p2p: P2pHandle,
        exec: mpsc::UnboundedSender<ExecCommand>,
        sync: mpsc::UnboundedSender<SyncCommand>,
        fetch_bodies: Arc<dyn Fn(Vec<Digest>, Option<ValidatorId>) + Send + Sync>,
        batch_bytes_max: usize,
        batch_delay: Duration,
        repropose_after: Duration,
    ) -> Driver {
        Driver {
            core,
            shared,
            p2p,
            exec,
            sync,
            fetch_bodies,
            batch_bytes_max,
            batch_delay,
            repropose_after,
            started: Instant::now(),
            batch_requested: false,
            view_change_since: None,
            waiting: Vec::new(),
            timing: Timing::default(),
            pending: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<DriverInput>,
        mut executed: mpsc::UnboundedReceiver<Executed>,
    ) {
        // Checkpoints executed before a restart but never signed: report them again.
        for seq in self.core.unsigned_checkpoints() {
            let block = self
                .shared
                .store
                .block(seq.0)
                .ok()
                .flatten()
                .and_then(|b| crate::block::StoredBlock::decode(&b).ok());
            if let Some(b) = block {
                self.step(Input::Executed {
                    seq,
                    state_root: b.header.state_root,
                });
            }
        }
        self.flush().await;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let shared = self.shared.clone();
        loop {
            tokio::select! {
                biased;
                Some(e) = executed.recv() => {
                    self.step(Input::Executed { seq: e.seq, state_root: e.state_root });
                }
                input = inbound.recv() => match input {
                    Some(DriverInput::Message(m)) => self.on_message(m),
                    Some(DriverInput::BodiesArrived) => self.retry_waiting(),
                    None => break,
                },
                _ = tick.tick() => {
                    let pending = self.shared.mempool().has_ready();
                    self.step(Input::Tick { pending_requests: pending });
                    self.retry_waiting();
                    self.maybe_cut_batch(true);
                }
                _ = shared.mempool_changed.notified() => self.maybe_cut_batch(false),
            }
            // Group commit: whatever else is ready now is stepped too, and the records of
            // all these steps go to disk in one synced write before any of their messages
            // leaves. Under load this turns one fsync per step into one per group.
            for _ in 0..1024 {
                if let Ok(e) = executed.try_recv() {
                    self.step(Input::Executed {
                        seq: e.seq,
                        state_root: e.state_root,
                    });
                    continue;
                }
                match inbound.try_recv() {
                    Ok(DriverInput::Message(m)) => self.on_message(m),
                    Ok(DriverInput::BodiesArrived) => self.retry_waiting(),
                    Err(_) => break,
                }
            }
            self.flush().await;
        }
    }

    /// Transaction hashes a message needs bodies for before the core may see it.
    fn needed_txs(msg: &Message) -> Vec<Digest> {
        match msg {
            Message::PrePrepare(m) => m.body.batch.txs.clone(),
            Message::NewView(m) => m
                .body
                .pre_prepares
                .iter()
                .flat_map(|p| p.body.batch.txs.iter().copied())
                .collect(),
            _ => vec![],
        }
    }

    fn on_message(&mut self, msg: Verified<Message>) {
        let needed = Self::needed_txs(&msg);
        if !needed.is_empty() {
            let missing: Vec<Digest> = {
                let pool = self.shared.mempool();
                needed
                    .iter()
                    .filter(|h| pool.body(h).is_none())
                    .copied()
                    .collect()
            };
            if !missing.is_empty() {
                (self.fetch_bodies)(missing, Some(msg.from()));
                self.waiting.push((msg, Instant::now()));
                return;
            }
            // Someone proposed these: do not propose them again while that is in flight.
            self.shared.mempool().mark_proposed(&needed, Instant::now());
        }
        self.step(Input::Message(msg));
    }

    fn retry_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        let waiting = std::mem::take(&mut self.waiting);
        let mut still = Vec::new();
        for (msg, since) in waiting {
            let ready = {
                let pool = self.shared.mempool();
                Self::needed_txs(&msg)
                    .iter()
                    .all(|h| pool.body(h).is_some())
            };
            if ready {
                self.step(Input::Message(msg));
            } else if now < since + BODY_WAIT {
                still.push((msg, since));
            } else {
                Metrics::inc_reason(&self.shared.metrics.consensus_rejections, "missing_bodies");
            }
        }
        self.waiting.extend(still);
    }

    /// Cuts a batch for a pending request when the mempool holds `batch_bytes_max` of
    /// proposable transactions, or (`on_tick`) the oldest has waited `batch_delay`. Between
    /// ticks only the cheap size test runs, so admissions do not each scan the mempool.
    fn maybe_cut_batch(&mut self, on_tick: bool) {
        if !self.batch_requested {
            return;
        }
        let now = Instant::now();
        let batch = {
            let mut pool = self.shared.mempool();
            if !on_tick && pool.bytes() < self.batch_bytes_max {
                return;
            }
            let Some(oldest) = pool.oldest_eligible(now, self.repropose_after) else {
                return;
            };
            let full = pool.eligible_bytes(now, self.repropose_after, self.batch_bytes_max)
                >= self.batch_bytes_max;
            // Nagle-style: with few proposals in flight a batch goes out after the delay; with
            // the pipeline busy, transactions gather into bigger batches until one commits.
            // Under load this means fewer, larger batches (fewer consensus messages per
            // transaction); at low load it changes nothing.
            let busy = self.core.in_flight() >= PIPELINE_BUSY;
            if !full && (busy || now < oldest + self.batch_delay) {
                return;
            }
            pool.take_batch(
                self.batch_bytes_max,
                tally_consensus::batch::BATCH_TXS_MAX,
                now,
                self.repropose_after,
            )
        };
        if batch.is_empty() {
            return;
        }
        self.shared.gossip_flush.notify_one();
        self.batch_requested = false;
        self.step(Input::Propose(Batch { txs: batch }));
    }

    /// Steps the core; its outputs wait for [`Driver::flush`].
    fn step(&mut self, input: Input) {
        let now = self.now_ms();
        let before = self.pending.len();
        self.core.step(now, input, &mut self.pending);
        // A batch request of this step must be seen before the next cut.
        if self.pending[before..]
            .iter()
            .any(|o| matches!(o, Output::RequestBatch))
        {
            self.batch_requested = true;
        }
    }

    async fn flush(&mut self) {
        let out = std::mem::take(&mut self.pending);
        if !out.is_empty() {
            self.carry_out(out).await;
        }
    }

    /// Persist (one synced write) → send → the rest, in order. The write runs on a blocking
    /// thread; the driver waits for it (inputs arriving meanwhile join the next group).
    async fn carry_out(&mut self, out: Vec<Output>) {
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for o in &out {
            if let Output::Persist(r) = o {
                match r.key() {
                    Some(k) => writes.push((k, Some(r.encode()))),
                    None => {
                        // A prune: delete every stored record it covers.
                        for prefix in [b"s".as_slice(), b"p", b"w"] {
                            if let Ok(entries) = self.shared.store.consensus_scan(prefix) {
                                for (k, _) in entries {
                                    if r.prunes(&k) {
                                        writes.push((k, None));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if !writes.is_empty() {
            let started = Instant::now();
            let bytes: usize = writes
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            let store = self.shared.store.clone();
            let result = tokio::task::spawn_blocking(move || store.write_consensus(&writes, true))
                .await
                .unwrap_or_else(|e| Err(tally_storage::StorageError::Db(e.to_string())));
            if let Err(e) = result {
                // Without its records a replica could equivocate after a restart: stop.
                tracing::error!("cannot persist consensus records: {e}; stopping");
                std::process::exit(70);
            }
            let m = &self.shared.metrics;
            m.storage_write_duration
                .get_or_create(&tally_monitoring::KindLabels {
                    kind: "consensus".into(),
                })
                .observe(started.elapsed().as_secs_f64());
            Metrics::inc_kind(&m.storage_written_bytes, "consensus", bytes as u64);
        }
        for o in out {
            match o {
                Output::Persist(_) => {}
                Output::Send { to, msg } => {
                    if let Some(key) = self.shared.validators.public_key(to) {
                        self.p2p.send(key, msg.encode());
                    }
                }
                Output::Broadcast(msg) => self.p2p.broadcast(msg.encode()),
                Output::Commit {
                    seq,
                    batch,
                    certificate,
                } => {
                    let _ = self.exec.send(ExecCommand::Commit {
                        seq,
                        batch,
                        certificate,
                        committed_at: self
                            .timing
                            .committed
                            .get(&seq.0)
                            .copied()
                            .unwrap_or_else(Instant::now),
                    });
                }
                // Seen in `step`, in order: a stale request from earlier in the group must
                // not re-arm the cut after a later proposal filled the window.
                Output::RequestBatch => {}
                Output::FetchState { target, .. } => {
                    let _ = self.sync.send(SyncCommand::Fetch { target: target.0 });
                }
                Output::Evidence(e) => {
                    let validator = e.validator();
                    let kind = e.kind();
                    warn!(validator = validator.0, kind, "equivocation evidence");
                    Metrics::inc_kind(&self.shared.metrics.evidence, kind, 1);
                    let mut list = self
                        .shared
                        .evidence
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    list.push_front(EvidenceRecord {
                        validator,
                        kind,
                        evidence: e,
                    });
                    list.truncate(EVIDENCE_KEPT);
                }
                Output::Event(e) => self.on_event(e),
            }
        }
        let (view, leader, stable) = (
            self.core.view().0,
            self.core.leader().0,
            self.core.stable_checkpoint().0,
        );
        let m = &self.shared.metrics;
        m.view.set(view as i64);
        m.leader.set(leader as i64);
        m.stable_checkpoint.set(stable as i64);
        self.shared.update_status(|s| {
            s.view = view;
            s.leader = leader;
            s.stable_checkpoint = stable;
        });
    }

    fn name(&self, id: ValidatorId) -> String {
        self.shared
            .genesis
            .validators
            .get(id.0 as usize)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| id.0.to_string())
    }

    fn on_event(&mut self, e: Event) {
        let now = Instant::now();
        match &e {
            Event::ViewChangeStarted { .. } => {
                self.view_change_since.get_or_insert(now);
            }
            // The old view's proposals that did not commit are void: their transactions may
            // be proposed again at once, except those the NEW-VIEW carried over. (Waiting out
            // the re-proposal delay left a new primary with nothing to propose for seconds,
            // and its backups timed out again.)
            Event::NewView { .. } => {
                let since = self.view_change_since.take().unwrap_or(now);
                let carried = self.core.uncommitted_txs();
                self.shared.mempool().release_proposed(since, &carried, now);
            }
            _ => {}
        }
        let m = self.shared.metrics.clone();
        let t = &mut self.timing;
        match e {
            Event::PrePrepareAccepted { seq, .. } => {
                t.pre_prepared.insert(seq.0, now);
            }
            Event::Prepared {
                seq, completed_by, ..
            } => {
                if let Some(at) = t.pre_prepared.get(&seq.0) {
                    m.phase("pre_prepare_to_prepared", (now - *at).as_secs_f64());
                }
                t.prepared.insert(seq.0, now);
                self.quorum(VoteKind::Prepare, seq, completed_by, &m);
            }
            Event::CommittedLocal {
                seq, completed_by, ..
            } => {
                if let Some(at) = self.timing.prepared.get(&seq.0) {
                    m.phase("prepared_to_committed", (now - *at).as_secs_f64());
                }
                self.timing.committed.insert(seq.0, now);
                self.quorum(VoteKind::Commit, seq, completed_by, &m);
            }
            Event::Vote {
                kind, seq, from, ..
            } => {
                if kind == VoteKind::Commit {
                    self.timing
                        .commit_voters
                        .entry(seq.0)
                        .or_default()
                        .insert(from);
                }
                let quorum_at = match kind {
                    VoteKind::Prepare => self.timing.prepared.get(&seq.0),
                    VoteKind::Commit => self.timing.committed.get(&seq.0),
                };
                match quorum_at {
                    Some(at) => {
                        let late = (now - *at).as_secs_f64();
                        self.lateness(kind, from, late, &m);
                    }
                    None => self
                        .timing
                        .early_votes
                        .entry((kind, seq.0))
                        .or_default()
                        .push(from),
                }
            }
            Event::ViewChangeStarted { to, reason } => {
                warn!(view = to.0, reason = reason.as_str(), "view change");
                Metrics::inc_reason(&m.view_changes, reason.as_str());
            }
            Event::NewView { view, primary } => {
                info!(view = view.0, primary = %self.name(primary), "entered new view");
            }
            Event::StableCheckpoint { seq } => {
                self.gc_timing(seq);
            }
            Event::StateTransfer { from, target } => {
                info!(from = from.0, target = target.0, "state transfer");
                m.state_transfers.inc();
            }
            Event::Rejected { reason } => Metrics::inc_reason(&m.consensus_rejections, reason),
        }
    }

    fn quorum(&mut self, kind: VoteKind, seq: Seq, by: ValidatorId, m: &Metrics) {
        let phase = match kind {
            VoteKind::Prepare => "prepared",
            VoteKind::Commit => "committed",
        };
        m.quorum_completed_by
            .get_or_create(&PhaseValidatorLabels {
                phase: phase.into(),
                validator: self.name(by),
            })
            .inc();
        if let Some(early) = self.timing.early_votes.remove(&(kind, seq.0)) {
            for v in early {
                self.lateness(kind, v, 0.0, m);
            }
        }
    }

    fn lateness(&self, kind: VoteKind, from: ValidatorId, seconds: f64, m: &Metrics) {
        let phase = match kind {
            VoteKind::Prepare => "prepare",
            VoteKind::Commit => "commit",
        };
        m.vote_lateness
            .get_or_create(&PhaseValidatorLabels {
                phase: phase.into(),
                validator: self.name(from),
            })
            .observe(seconds);
    }

    /// At a stable checkpoint: count validators whose COMMIT never came, forget the rest.
    fn gc_timing(&mut self, stable: Seq) {
        let m = self.shared.metrics.clone();
        let me = self.shared.me;
        let done: Vec<u64> = self
            .timing
            .commit_voters
            .range(..=stable.0)
            .map(|(s, _)| *s)
            .collect();
        for s in done {
            let voters = self.timing.commit_voters.remove(&s).unwrap_or_default();
            if !self.timing.committed.contains_key(&s) {
                continue;
            }
            for id in self.shared.validators.ids() {
                if Some(id) != me && !voters.contains(&id) {
                    m.votes_missing
                        .get_or_create(&ValidatorLabels {
                            validator: self.name(id),
                        })
                        .inc();
                }
            }
        }
        let keep = stable.0 + 1;
        let t = &mut self.timing;
        t.pre_prepared = t.pre_prepared.split_off(&keep);
        t.prepared = t.prepared.split_off(&keep);
        t.committed = t.committed.split_off(&keep);
        t.early_votes.retain(|(_, s), _| *s >= keep);
    }
}

/// Restores the core's persisted records from the store.
pub fn load_records(store: &dyn tally_storage::Store) -> Result<Vec<Record>, String> {
    store
        .consensus_scan(b"")
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, v)| Record::decode(&v))
        .collect()
}
