//! The driver: the node's only consensus event loop. It feeds the core — PBFT, or Raft, as
//! genesis says, behind one [`Engine`] — messages, ticks, batches, validations, payloads and
//! execution reports, and carries out the core's outputs in order: every record of a step is written (one synced write) before
//! any message of that step is sent; commits go to the executor; batch requests are
//! answered from the mempool; validations and payload fetches are answered by
//! [`validate`]; evidence is kept by [`evidence`]; a diverged state is handed to the executor
//! to repair.
//!
//! The driver acts on a peer's message only through the core's outputs (the acting rule of
//! `tally_consensus::protocol`): it never looks inside a message the core has not accepted.

mod evidence;
mod timing;
mod validate;

pub use evidence::{EVIDENCE_PER_VALIDATOR, evidence_key};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_consensus::Engine;
use tally_consensus::pbft::Record;
use tally_consensus::protocol::{Event, Input, Output, PeerMessage, Protocol, StoreOp};
use tally_consensus::{Batch, Seq, ValidatorId};
use tally_crypto::Digest;
use tally_monitoring::Metrics;
use tally_p2p::P2pHandle;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::batches::service::BatchPath;
use crate::execution::executor::{ExecCommand, ExecReport};
use crate::execution::sync::SyncCommand;
use crate::shared::Shared;

pub enum DriverInput {
    /// A peer's message (PBFT: every signature checked; Raft: `from` set from the
    /// authenticated connection).
    Message(PeerMessage),
    /// An operator asks this validator, if it leads, to hand leadership to `to`; the answer
    /// says whether a transfer started.
    TransferLeadership {
        /// `None`: the follower most caught up.
        to: Option<ValidatorId>,
        reply: oneshot::Sender<bool>,
    },
    /// Transaction bodies arrived: validations waiting for them may complete.
    BodiesArrived,
    /// A batch a peer sent for `seq` (answering a payload fetch).
    Payload { seq: Seq, batch: Batch },
    /// A peer asks for the batch of `digest` at `seq`.
    PayloadRequest {
        seq: Seq,
        digest: Digest,
        reply: oneshot::Sender<Option<Batch>>,
    },
}

/// Proposals in flight beyond which the primary waits for a full batch or a commit.
const PIPELINE_BUSY: u64 = 4;
/// `payload: batches`: with the pipeline busy, a proposal waits for this many proofs (or the
/// batch delay).
const PROOFS_WHEN_BUSY: usize = 4;
/// `payload: batches`: the most batch proofs one proposal names.
pub const PROPOSAL_PROOFS_MAX: usize = 1024;

/// Fetches transaction bodies from peers (preferring one validator); the driver hears
/// [`DriverInput::BodiesArrived`] when done.
pub type BodyFetch = Arc<dyn Fn(Vec<Digest>, Option<ValidatorId>) + Send + Sync>;
/// Fetches the batch of a digest at a sequence number from peers (the named ones first);
/// the driver hears [`DriverInput::Payload`].
pub type PayloadFetch = Arc<dyn Fn(Seq, Digest, Vec<ValidatorId>) + Send + Sync>;

pub struct Driver {
    pub core: Engine,
    pub shared: Arc<Shared>,
    pub p2p: P2pHandle,
    pub exec: mpsc::Sender<ExecCommand>,
    pub sync: mpsc::Sender<SyncCommand>,
    pub fetch_bodies: BodyFetch,
    pub fetch_payload: PayloadFetch,
    pub batch_bytes_max: usize,
    pub batch_delay: Duration,
    pub repropose_after: Duration,
    /// With `payload: batches`: the proof pool proposals are cut from.
    pub batches: Option<Arc<BatchPath>>,
    pub started: Instant,
    batch_requested: bool,
    /// When this replica began the view change now under way.
    view_change_since: Option<Instant>,
    pending: validate::Pending,
    timing: timing::Timing,
    evidence: evidence::EvidenceLog,
    /// The certified checkpoint a repair is under way to (at most one at a time).
    repairing: Option<Seq>,
    /// When the core's stored messages were last measured.
    measured: Instant,
    /// Outputs of the steps of the current group, carried out together (group commit).
    outputs: Vec<Output>,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Engine,
        shared: Arc<Shared>,
        p2p: P2pHandle,
        exec: mpsc::Sender<ExecCommand>,
        sync: mpsc::Sender<SyncCommand>,
        fetch_bodies: BodyFetch,
        fetch_payload: PayloadFetch,
        batch_bytes_max: usize,
        batch_delay: Duration,
        repropose_after: Duration,
        batches: Option<Arc<BatchPath>>,
    ) -> Driver {
        let evidence = evidence::EvidenceLog::load(&shared);
        let bound = core.footprint_bound();
        shared
            .metrics
            .consensus_stored_messages_bound
            .set(bound.messages as i64);
        shared
            .metrics
            .consensus_stored_bytes_bound
            .set(bound.bytes as i64);
        Driver {
            core,
            shared,
            p2p,
            exec,
            sync,
            fetch_bodies,
            fetch_payload,
            batch_bytes_max,
            batch_delay,
            repropose_after,
            batches,
            started: Instant::now(),
            batch_requested: false,
            view_change_since: None,
            pending: validate::Pending::default(),
            timing: timing::Timing::default(),
            evidence,
            repairing: None,
            measured: Instant::now(),
            outputs: Vec::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<DriverInput>,
        mut executed: mpsc::UnboundedReceiver<ExecReport>,
    ) {
        // Checkpoints executed before a restart but never signed: report them again.
        for seq in self.core.unsigned_checkpoints() {
            let block = self
                .shared
                .store
                .block(seq.0)
                .ok()
                .flatten()
                .and_then(|b| crate::execution::block::StoredBlock::decode(&b).ok());
            if let Some(b) = block {
                let epoch = b
                    .certificate
                    .as_ref()
                    .map_or_else(Default::default, |c| c.view);
                self.step(Input::Executed {
                    seq,
                    digest: b.header.batch_digest,
                    block_hash: b.hash(),
                    epoch,
                });
            }
        }
        if self.core.is_diverged() {
            self.shared.metrics.state_diverged.set(1);
        }
        self.flush().await;
        // Known from the start, even for a replica with nothing to say yet.
        self.publish();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let shared = self.shared.clone();
        loop {
            tokio::select! {
                biased;
                Some(e) = executed.recv() => self.on_report(e),
                input = inbound.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                _ = tick.tick() => {
                    let pending = match &self.batches {
                        Some(path) => !path.pool().is_empty(),
                        None => self.shared.mempool().has_ready(),
                    };
                    let entropy = rand::random::<u64>();
                    self.step(Input::Tick { pending_requests: pending, entropy });
                    self.retry_validations();
                    self.maybe_cut_batch(true);
                    self.measure();
                }
                _ = shared.mempool_changed.notified() => self.maybe_cut_batch(false),
            }
            // Group commit: whatever else is ready now is stepped too, and the records of
            // all these steps go to disk in one synced write before any of their messages
            // leaves. Under load this turns one fsync per step into one per group.
            for _ in 0..1024 {
                if let Ok(e) = executed.try_recv() {
                    self.on_report(e);
                    continue;
                }
                match inbound.try_recv() {
                    Ok(input) => self.on_input(input),
                    Err(_) => break,
                }
            }
            self.flush().await;
        }
    }

    fn on_input(&mut self, input: DriverInput) {
        match input {
            DriverInput::Message(m) => self.step(Input::Message(m)),
            DriverInput::BodiesArrived => self.retry_validations(),
            DriverInput::Payload { seq, batch } => self.on_payload(seq, batch),
            DriverInput::PayloadRequest { seq, digest, reply } => {
                let _ = reply.send(self.core.payload(seq, &digest));
            }
            DriverInput::TransferLeadership { to, reply } => {
                let me = self.shared.me;
                let to = to.or_else(|| self.core.transfer_target());
                let leads = me.is_some_and(|me| self.core.is_leader(me));
                let supported = matches!(self.core, Engine::Raft(_));
                let started = match to {
                    Some(to) if leads && supported && Some(to) != me => {
                        info!(to = %self.name(to), "handing leadership over");
                        self.step(Input::TransferLeadership { to });
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(started);
            }
        }
    }

    fn on_report(&mut self, report: ExecReport) {
        match report {
            ExecReport::Executed {
                seq,
                digest,
                block_hash,
                epoch,
            } => self.step(Input::Executed {
                seq,
                digest,
                block_hash,
                epoch,
            }),
            ExecReport::Repaired { seq, block_hash } => {
                self.repairing = None;
                self.shared
                    .metrics
                    .state_repairs
                    .get_or_create(&tally_monitoring::OutcomeLabels {
                        outcome: "ok".into(),
                    })
                    .inc();
                self.step(Input::Repaired { seq, block_hash });
                if !self.core.is_diverged() {
                    self.shared.metrics.state_diverged.set(0);
                    info!(seq = seq.0, "state repaired from peers; voting again");
                }
            }
            ExecReport::RepairFailed { reason } => {
                self.repairing = None;
                warn!("state repair failed: {reason}; trying again");
                self.shared
                    .metrics
                    .state_repairs
                    .get_or_create(&tally_monitoring::OutcomeLabels {
                        outcome: "failed".into(),
                    })
                    .inc();
            }
        }
    }

    /// Measures what the core holds for peers (for the stored-messages metrics), once a
    /// second.
    fn measure(&mut self) {
        if self.measured.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.measured = Instant::now();
        let f = self.core.footprint();
        let m = &self.shared.metrics;
        m.consensus_stored_messages.set(f.messages as i64);
        m.consensus_stored_bytes.set(f.bytes as i64);
        m.consensus_pending_validations
            .set(self.pending.validations() as i64);
    }

    /// Cuts a batch for a pending request when the mempool holds `batch_bytes_max` of
    /// proposable transactions, or (`on_tick`) the oldest has waited `batch_delay`. Between
    /// ticks only the cheap size test runs, so admissions do not each scan the mempool.
    fn maybe_cut_batch(&mut self, on_tick: bool) {
        if !self.batch_requested {
            return;
        }
        if self.batches.is_some() {
            return self.maybe_propose_proofs();
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

    /// `payload: batches`: proposes the proofs held, oldest first — at once while few
    /// proposals are in flight; with the pipeline busy, when a few have gathered or the
    /// oldest waited the batch delay.
    fn maybe_propose_proofs(&mut self) {
        let Some(path) = self.batches.clone() else {
            return;
        };
        let entries = {
            // The store's lock, then the pool's (the batch task's `on_batch` takes them in
            // the same order).
            let store = path.store();
            let mut pool = path.pool();
            let Some(oldest) = pool.oldest_unproposed() else {
                return;
            };
            let busy = self.core.in_flight() >= PIPELINE_BUSY;
            if busy
                && pool.unproposed_count(PROOFS_WHEN_BUSY) < PROOFS_WHEN_BUSY
                && oldest.elapsed() < self.batch_delay
            {
                return;
            }
            let taken = pool.take(
                PROPOSAL_PROOFS_MAX,
                validate::BLOCK_TXS_MAX,
                Instant::now(),
                |author, from, to| store.holds_between(author, from, to),
            );
            let gaps = pool.take_gaps_passed();
            if gaps > 0 {
                self.shared.metrics.batch_order_gaps.inc_by(gaps);
            }
            taken
        };
        if entries.is_empty() {
            return;
        }
        self.batch_requested = false;
        let before = self.outputs.len();
        self.step(Input::Propose(Batch {
            txs: entries.clone(),
        }));
        // The core may decline a proposal it asked for (a state transfer or view change began
        // meanwhile): its proofs go back to the pool, or they would wait, marked as in
        // flight, until the next view change — and their authors' later batches, ordered
        // without them, would fail with "bad nonce".
        let accepted = self.outputs[before..].iter().any(|o| {
            matches!(
                o,
                Output::Event(Event::PrePrepareAccepted { .. } | Event::Accepted { .. })
            )
        });
        if !accepted {
            path.pool().release(&entries);
        }
    }

    /// Steps the core; its outputs wait for [`Driver::flush`].
    fn step(&mut self, input: Input) {
        let now = self.now_ms();
        let before = self.outputs.len();
        self.core.step(now, input, &mut self.outputs);
        // A batch request of this step must be seen before the next cut.
        if self.outputs[before..]
            .iter()
            .any(|o| matches!(o, Output::RequestBatch))
        {
            self.batch_requested = true;
        }
    }

    /// Carries out every pending output; outputs of steps taken meanwhile (a validation
    /// answered at once) follow in the same flush.
    async fn flush(&mut self) {
        while !self.outputs.is_empty() {
            let out = std::mem::take(&mut self.outputs);
            self.carry_out(out).await;
        }
    }

    /// Persist (one synced write) → send → the rest, in order. The write runs on a blocking
    /// thread; the driver waits for it (inputs arriving meanwhile join the next group).
    async fn carry_out(&mut self, out: Vec<Output>) {
        // The store applies a write's range deletions before its puts; the records' ops are
        // in order, so a range deletion drops the puts of this group it covers (they were
        // to be deleted) and a put after it survives.
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for o in &out {
            if let Output::Persist(r) = o {
                for op in r.ops() {
                    match op {
                        StoreOp::Put { key, value } => writes.push((key, Some(value))),
                        StoreOp::DeleteRange { start, end } => {
                            writes.retain(|(k, _)| *k < start || *k >= end);
                            ranges.push((start, end));
                        }
                    }
                }
            }
        }
        if !writes.is_empty() || !ranges.is_empty() {
            let started = Instant::now();
            let bytes: usize = writes
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum();
            let store = self.shared.store.clone();
            let result =
                tokio::task::spawn_blocking(move || store.write_consensus(&writes, &ranges, true))
                    .await
                    .unwrap_or_else(|e| Err(tally_storage::StorageError::Db(e.to_string())));
            if let Err(e) = result {
                // Without its records a replica could equivocate after a restart: stop.
                error!("cannot persist consensus records: {e}; stopping");
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
                    self.timing.on_commit(seq, &self.shared.metrics);
                    let committed_at = self
                        .timing
                        .committed
                        .get(&seq.0)
                        .copied()
                        .unwrap_or_else(Instant::now);
                    let cmd = ExecCommand::Commit {
                        seq,
                        batch,
                        certificate,
                        committed_at,
                    };
                    // Bounded: the core emits commits in order and only within its window,
                    // so at most L wait here. Waiting for room only slows this replica.
                    if self.exec.send(cmd).await.is_err() {
                        error!("the executor stopped; stopping");
                        std::process::exit(70);
                    }
                }
                // Seen in `step`, in order: a stale request from earlier in the group must
                // not re-arm the cut after a later proposal filled the window.
                Output::RequestBatch => {}
                Output::Validate { view, seq, batch } => self.on_validate(view, seq, batch),
                Output::FetchPayload { seq, digest, from } => {
                    self.on_fetch_payload(seq, digest, from)
                }
                Output::FetchState { target, .. } => {
                    // A full queue already holds a fetch: the newest target wins later.
                    let _ = self.sync.try_send(SyncCommand::Fetch { target: target.0 });
                }
                Output::RepairState {
                    certified,
                    own_hash,
                } => self.on_repair_state(certified, own_hash).await,
                Output::Evidence(e) => {
                    let name = self.name(e.validator());
                    self.evidence.record(&self.shared, e, &name);
                }
                Output::Event(e) => self.on_event(e),
            }
        }
        self.publish();
    }

    /// The epoch, leader, checkpoint and lease as metrics and in the status RPC reads.
    fn publish(&self) {
        let lease_until = self
            .core
            .lease_expiry(self.now_ms())
            .map(|ms| self.started + Duration::from_millis(ms));
        let (view, leader, stable) = (
            self.core.view().0,
            self.core.leader().map_or(-1, |l| i64::from(l.0)),
            self.core.stable_checkpoint().0,
        );
        let m = &self.shared.metrics;
        m.epoch
            .get_or_create(&tally_monitoring::ProtocolLabels {
                protocol: self.core.name().into(),
            })
            .set(view as i64);
        m.leader.set(leader);
        m.stable_checkpoint.set(stable as i64);
        self.shared.update_status(|s| {
            s.view = view;
            s.leader = u16::try_from(leader).ok();
            s.lease_until = lease_until;
            s.stable_checkpoint = stable;
            s.diverged = m.state_diverged.get() == 1;
        });
    }

    /// The state diverged from a certified checkpoint: say so, and have the executor replace
    /// it with the certified one from peers (one repair at a time; the core asks again, with
    /// the latest certificate, until one succeeds).
    async fn on_repair_state(
        &mut self,
        certified: tally_consensus::pbft::CheckpointCert,
        own_hash: Option<Digest>,
    ) {
        if let Some(own) = own_hash {
            error!(
                seq = certified.seq.0,
                own_block_hash = %own,
                certified_block_hash = %certified.block_hash,
                "this node's state diverged from the checkpoint a quorum certified (corrupt disk, edited database or a bug); it stops voting and replaces its state with the certified one from its peers"
            );
        }
        self.shared.metrics.state_diverged.set(1);
        if self.repairing.is_some() {
            return;
        }
        self.repairing = Some(certified.seq);
        if self
            .exec
            .send(ExecCommand::Repair { target: certified })
            .await
            .is_err()
        {
            error!("the executor stopped; stopping");
            std::process::exit(70);
        }
    }

    fn name(&self, id: ValidatorId) -> String {
        name_of(&self.shared, id)
    }

    fn on_event(&mut self, e: Event) {
        let now = Instant::now();
        match &e {
            Event::ViewChangeStarted { to, reason } => {
                self.view_change_since.get_or_insert(now);
                warn!(view = to.0, reason = reason.as_str(), "view change");
                Metrics::inc_reason(&self.shared.metrics.view_changes, reason.as_str());
            }
            Event::SteppedDown { view } => {
                warn!(view = view.0, "stepped down: saw a higher epoch");
            }
            // The old view's proposals that did not commit are void: their transactions may
            // be proposed again at once, except those the NEW-VIEW carried over. (Waiting out
            // the re-proposal delay left a new primary with nothing to propose for seconds,
            // and its backups timed out again.)
            Event::NewView { view, primary } => {
                let since = self.view_change_since.take().unwrap_or(now);
                let carried = self.core.uncommitted_txs();
                match &self.batches {
                    Some(path) => path.pool().release_proposed(&carried),
                    None => self.shared.mempool().release_proposed(since, &carried, now),
                }
                info!(view = view.0, primary = %self.name(*primary), "entered new view");
            }
            Event::StableCheckpoint { seq } => {
                let shared = self.shared.clone();
                let name = move |id| name_of(&shared, id);
                self.timing.gc(
                    *seq,
                    self.shared.validators.ids(),
                    self.shared.me,
                    &self.shared.metrics,
                    &name,
                );
            }
            Event::StateTransfer { from, target } => {
                info!(from = from.0, target = target.0, "state transfer");
                self.shared.metrics.state_transfers.inc();
            }
            Event::Rejected { reason } => {
                Metrics::inc_reason(&self.shared.metrics.consensus_rejections, reason)
            }
            _ => {}
        }
        let shared = self.shared.clone();
        let name = move |id| name_of(&shared, id);
        self.timing.on_event(&e, &self.shared.metrics, &name);
    }
}

fn name_of(shared: &Shared, id: ValidatorId) -> String {
    shared
        .genesis
        .validators
        .get(id.0 as usize)
        .map(|v| v.name.clone())
        .unwrap_or_else(|| id.0.to_string())
}

/// Restores the PBFT core's persisted records from the store (every key not under another
/// protocol's prefix).
pub fn load_records(store: &dyn tally_storage::Store) -> Result<Vec<Record>, String> {
    store
        .consensus_scan(b"")
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(k, _)| {
            !k.starts_with(tally_consensus::raft::storage::PREFIX)
                && !k.starts_with(tally_consensus::paxos::storage::PREFIX)
        })
        .map(|(_, v)| Record::decode(&v))
        .collect()
}

/// The batch digests of the latest executed blocks above `stable` (at most
/// [`tally_consensus::pbft::EXECUTED_KEPT_WINDOWS`] windows): what a restarted replica must
/// never vote against.
pub fn recent_digests(
    store: &dyn tally_storage::Store,
    stable: Seq,
    height: u64,
    window: u64,
) -> Vec<(Seq, Digest)> {
    let keep = tally_consensus::pbft::EXECUTED_KEPT_WINDOWS as u64 * window;
    let first = (stable.0 + 1).max(height.saturating_sub(keep) + 1);
    (first..=height)
        .filter_map(|h| {
            let bytes = store.block(h).ok()??;
            let header = crate::execution::block::StoredBlock::decode_header(&bytes).ok()?;
            Some((Seq(h), header.batch_digest))
        })
        .collect()
}
