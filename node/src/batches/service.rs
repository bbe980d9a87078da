//! The batch task (`payload: batches`): the one place that runs the data path between
//! admission and consensus.
//!
//! ```text
//!  mempool (this node's clients, checked) ─▶ cut ─▶ store (synced) ─▶ stream to all ─┐
//!  peer's Batch frame ─▶ store (its author's quota) ─▶ Disseminator ─▶ check + attest ┤
//!  peer's Attestation ─▶ signature ─▶ Disseminator ─▶ f + 1 ─▶ proof ─▶ broadcast ───┤
//!  peer's Proofs ─▶ structure (decode) + signatures ─▶ proof pool ─▶ the primary ─────┘
//! ```
//!
//! Who attests and when is `tally_consensus::availability::Disseminator`'s (sans-IO); this
//! task stores, checks, signs nothing itself, and carries out its outputs. Nothing acts on a
//! peer's frame before it is decoded and checked ([`BatchFrame::decode`]): a body against
//! its header, a proof's structure; an attestation's and a proof's signatures are checked
//! here before the Disseminator or the pool sees them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tally_consensus::availability::{
    ATTEST_DOMAIN, Disseminator, DisseminatorInput, DisseminatorOutput, Frame, attestation_body,
};
use tally_consensus::{BatchHeader, BatchProof, KeySigner, ValidatorId};
use tally_crypto::{Digest, PublicKey, SecretKey, SignatureCheck};
use tally_monitoring::Metrics;
use tally_p2p::P2pHandle;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use super::attest::check_batch;
use super::body::TxBatch;
use super::maker::{BatchMaker, CutRule};
use super::pool::ProofPool;
use super::store::{BatchStore, Inserted, Quota, Refused};
use super::wire::{BatchFrame, FETCH_MAX};
use crate::driver::DriverInput;
use crate::shared::Shared;
use crate::{FastMap, FastSet};

/// This node's batches without a proof beyond which it stops cutting new ones and refuses
/// client transactions as `overloaded` (`docs/rpc.md`): ≈ 64 × 512 transactions waiting
/// for attestations means the other validators are not keeping up.
pub const UNPROVEN_MAX: usize = 64;
/// A batch still unproven after this long is sent to one more validator, asking it to attest.
pub const RETRY_MS: u64 = 300;
/// How often, and how many of, this node's uncommitted proofs are announced again.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(1);
const REANNOUNCE_MAX: usize = 256;
/// Inputs queued for the task…
const INPUTS_MAX: usize = 8192;
/// …and the bytes of peers' frames among them (a frame may be 6 MiB: the count alone would
/// allow 48 GiB).
const QUEUED_FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Bodies the executor may be waiting for at once.
const WANTED_MAX: usize = 4096;
/// Proofs frames whose signatures are being checked on blocking threads at once. Past it a
/// frame is checked on the task itself, which then stops reading frames: a peer sending
/// proofs faster than they can be checked fills the bounded input queue, not the blocking
/// pool's unbounded one.
const PROOF_CHECKS_IN_FLIGHT_MAX: usize = 8;
/// Where the next start-up's first batch number is kept (meta column family).
const MARK_KEY: &[u8] = b"batch_number_mark";

pub enum ServiceInput {
    Frame {
        from: PublicKey,
        bytes: Vec<u8>,
    },
    Checked {
        header: BatchHeader,
        valid: bool,
    },
    Committed {
        headers: Vec<BatchHeader>,
    },
    FetchBodies {
        digests: Vec<Digest>,
        from: ValidatorId,
    },
    FetchProofs {
        digests: Vec<Digest>,
        from: Option<ValidatorId>,
    },
}

/// What the driver, the executor and the p2p loop share with the batch task.
pub struct BatchPath {
    store: std::sync::Mutex<BatchStore>,
    pool: std::sync::Mutex<ProofPool>,
    /// Bodies fetched for the executor (committed batches this node did not hold).
    fetched: std::sync::Mutex<FastMap<Digest, Arc<TxBatch>>>,
    /// A proof or a fetched body arrived.
    pub arrived: Notify,
    /// This node's batches not yet proven.
    unproven: AtomicUsize,
    /// Bytes of peers' frames queued for the task.
    queued_bytes: AtomicUsize,
    /// Proofs frames being checked on blocking threads.
    proof_checks: AtomicUsize,
    inputs: mpsc::Sender<ServiceInput>,
}

impl BatchPath {
    pub fn store(&self) -> std::sync::MutexGuard<'_, BatchStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pool(&self) -> std::sync::MutexGuard<'_, ProofPool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an input for the batch task; false when its queue is full (in count, or in
    /// bytes of peers' frames).
    pub fn submit(&self, input: ServiceInput) -> bool {
        let len = match &input {
            ServiceInput::Frame { bytes, .. } => bytes.len(),
            _ => 0,
        };
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > QUEUED_FRAME_BYTES_MAX || self.inputs.try_send(input).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Too many of this node's batches wait for attestations: refuse client transactions.
    pub fn overloaded(&self) -> bool {
        self.unproven.load(Ordering::Relaxed) >= UNPROVEN_MAX
    }

    /// Bytes of peers' frames queued for the batch task (bounded by 256 MiB).
    pub fn queued_frame_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    pub fn unproven(&self) -> usize {
        self.unproven.load(Ordering::Relaxed)
    }

    /// The body of a batch: held, or fetched for the executor.
    pub fn body(&self, digest: &Digest) -> Option<Arc<TxBatch>> {
        self.store().get(digest).or_else(|| {
            self.fetched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(digest)
                .cloned()
        })
    }

    /// These batches are in a block: their bodies, proofs and fetched copies go.
    pub fn on_block(&self, headers: &[BatchHeader]) -> Result<(), tally_storage::StorageError> {
        let digests: Vec<Digest> = headers.iter().map(BatchHeader::digest).collect();
        self.pool().on_block(headers);
        {
            let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
            for d in &digests {
                fetched.remove(d);
            }
        }
        let _ = self.inputs.try_send(ServiceInput::Committed {
            headers: headers.to_vec(),
        });
        self.store().remove(&digests)
    }
}

/// Opens the batch store (batches kept from before a restart), the proof pool and the
/// task; returns the shared handle.
pub fn spawn(
    shared: Arc<Shared>,
    p2p: P2pHandle,
    key: SecretKey,
    rule: CutRule,
    driver: mpsc::Sender<DriverInput>,
    conduct: Arc<crate::ingress::conduct::Conduct>,
) -> anyhow::Result<Arc<BatchPath>> {
    let me = shared
        .me
        .ok_or_else(|| anyhow::anyhow!("the batch path needs a validator"))?;
    let quota = Quota::default();
    let store = BatchStore::open(shared.store.clone(), shared.validators.clone(), quota)?;
    // No stored mark: a new data folder — or a wiped one, whose earlier batches peers still
    // remember by number. Numbering starts at the wall clock in microseconds, above every
    // number a previous life of this validator used (it never cut more than one batch per
    // microsecond since it first started).
    let mark = shared
        .store
        .meta_get(MARK_KEY)?
        .and_then(|b| b.try_into().ok())
        .map_or_else(fresh_mark, u64::from_le_bytes);
    let own: Vec<BatchHeader> = store.own_headers(me);
    let (inputs, rx) = mpsc::channel(INPUTS_MAX);
    let path = Arc::new(BatchPath {
        store: std::sync::Mutex::new(store),
        pool: std::sync::Mutex::new(ProofPool::new(shared.validators.len(), quota.batches)),
        fetched: Default::default(),
        arrived: Notify::new(),
        unproven: AtomicUsize::new(0),
        queued_bytes: AtomicUsize::new(0),
        proof_checks: AtomicUsize::new(0),
        inputs,
    });
    let disseminator = Disseminator::new(
        me,
        shared.validators.clone(),
        Box::new(KeySigner::new(key, shared.chain_id.clone())),
        RETRY_MS,
        quota.batches as u64,
    );
    let mut task = Task {
        me,
        path: path.clone(),
        shared,
        p2p,
        disseminator,
        maker: BatchMaker::new(me, rule, mark),
        rule,
        started: Instant::now(),
        wanted: FastSet::default(),
        proven: Default::default(),
        driver,
        next_reannounce: Instant::now() + REANNOUNCE_EVERY,
        conduct,
    };
    // This node's batches stored before a restart and not yet in a block: collect their
    // attestations again (attesters sign the same batch again; the number is not reused).
    for header in own {
        task.step(DisseminatorInput::Made { header });
    }
    tokio::spawn(task.run(rx));
    Ok(path)
}

struct Task {
    me: ValidatorId,
    path: Arc<BatchPath>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    disseminator: Disseminator,
    maker: BatchMaker,
    rule: CutRule,
    started: Instant,
    /// Bodies asked for on the executor's behalf (a `Fetched` frame is taken only for these).
    wanted: FastSet<Digest>,
    /// This node's proven batches waiting for an earlier one's proof.
    proven: std::collections::BTreeMap<u64, BatchProof>,
    driver: mpsc::Sender<DriverInput>,
    next_reannounce: Instant,
    conduct: Arc<crate::ingress::conduct::Conduct>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<ServiceInput>) {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(i) => self.on_input(i).await,
                    None => return,
                },
                // Batches are cut on the tick only: a cut scans what waits in the mempool,
                // which is not worth doing for every admission.
                _ = tick.tick() => {
                    self.step(DisseminatorInput::Tick);
                    self.maybe_cut().await;
                    self.maybe_reannounce();
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn step(&mut self, input: DisseminatorInput) {
        let mut out = Vec::new();
        let now = self.now_ms();
        self.disseminator.step(now, input, &mut out);
        self.path
            .unproven
            .store(self.disseminator.unproven(), Ordering::Relaxed);
        for o in out {
            self.carry_out(o);
        }
        self.release_proven();
    }

    /// Broadcasts this node's proofs in batch-number order: a proof waits until every
    /// earlier batch of this node is proven, so peers receive (and primaries propose) an
    /// author's batches in the order it cut them — which keeps each account's nonces in order
    /// across batches (`docs/transactions.md`).
    fn release_proven(&mut self) {
        let lowest = self.disseminator.lowest_unproven();
        let mut ready = Vec::new();
        while let Some(entry) = self.proven.first_entry() {
            if lowest.is_some_and(|l| *entry.key() > l) {
                break;
            }
            ready.push(entry.remove());
        }
        if ready.is_empty() {
            return;
        }
        for chunk in ready.chunks(FETCH_MAX) {
            self.send(
                None,
                BatchFrame::Proofs {
                    proofs: chunk.to_vec(),
                }
                .encode(),
            );
        }
        self.take_proofs(ready);
    }

    /// Every second, this node's proofs that waited that long without being committed go to
    /// every peer again: a peer that was down or disconnected when a proof was broadcast (a
    /// primary restarting, say) would otherwise never propose the batch.
    fn maybe_reannounce(&mut self) {
        let now = Instant::now();
        if now < self.next_reannounce {
            return;
        }
        self.next_reannounce = now + REANNOUNCE_EVERY;
        let waiting = self.path.pool().waiting_of(
            self.me,
            now.checked_sub(REANNOUNCE_EVERY).unwrap_or(now),
            REANNOUNCE_MAX,
        );
        for chunk in waiting.chunks(FETCH_MAX) {
            self.send(
                None,
                BatchFrame::Proofs {
                    proofs: chunk.to_vec(),
                }
                .encode(),
            );
        }
    }

    /// Cuts batches from the mempool while a full one is ready, or when the oldest
    /// transaction waited the cut delay, unless too many are unproven already.
    async fn maybe_cut(&mut self) {
        loop {
            if self.path.overloaded() {
                return;
            }
            let now = Instant::now();
            let txs: Vec<Vec<u8>> = {
                let mut pool = self.shared.mempool();
                let Some((oldest, ready)) = pool.cuttable() else {
                    return;
                };
                let full = ready >= self.rule.max_bytes;
                // Nagle-style: while an earlier batch still waits for its attestations, the
                // next one gathers longer (up to four delays), so under load batches grow
                // and the per-batch costs (a synced write, f + 1 attestations, a proof
                // in a proposal) are spread over more transactions.
                let delay = Duration::from_millis(self.rule.max_delay_ms);
                let wait = if self.path.unproven() > 0 {
                    4 * delay
                } else {
                    delay
                };
                if !full && now < oldest + wait {
                    return;
                }
                pool.take_for_batch(self.rule.max_bytes, self.rule.max_txs, now)
                    .iter()
                    .filter_map(|h| pool.body(h).map(|t| t.encoded().to_vec()))
                    .collect()
            };
            if txs.is_empty() {
                return;
            }
            if let Err(e) = self.made(txs).await {
                // Without its batch stored, this node must not stream it: stop.
                tracing::error!("cannot store a new batch: {e}; stopping");
                std::process::exit(70);
            }
        }
    }

    /// Numbers, stores (synced, with the reserved number mark first when due) and
    /// disseminates a batch of this node's transactions.
    async fn made(&mut self, txs: Vec<Vec<u8>>) -> Result<(), String> {
        let cut = self.maker.number(txs);
        let header = *cut.batch.header();
        let (path, store) = (self.path.clone(), self.shared.store.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            if let Some(mark) = cut.reserve {
                store
                    .meta_put(&[(MARK_KEY.to_vec(), mark.to_le_bytes().to_vec())], true)
                    .map_err(|e| e.to_string())?;
            }
            match path.store().insert(vec![cut.batch], true) {
                Ok(mut answers) => match answers.pop() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("no answer".into()),
                },
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        self.step(DisseminatorInput::Made { header });
        Ok(())
    }

    fn send(&self, to: Option<ValidatorId>, bytes: Vec<u8>) {
        match to {
            None => self.p2p.broadcast_batches(bytes),
            Some(id) => {
                if let Some(key) = self.shared.validators.public_key(id) {
                    self.p2p.send_batches(key, bytes);
                }
            }
        }
    }

    fn misbehaved(&self, by: ValidatorId, what: &str) {
        debug!(validator = by.0, "batch stream: {what}");
        Metrics::inc_reason(
            &self.shared.metrics.consensus_rejections,
            "batch_misbehaviour",
        );
        if let Some(key) = self.shared.validators.public_key(by) {
            self.conduct.offence(&key, "batch_misbehaviour");
        }
    }

    fn carry_out(&mut self, o: DisseminatorOutput) {
        match o {
            DisseminatorOutput::Send {
                to,
                frame: Frame::Batch { header, attest },
            } => {
                if let Some(batch) = self.path.store().get(&header.digest()) {
                    self.send(to, BatchFrame::encode_batch(attest, &batch));
                }
            }
            DisseminatorOutput::Send {
                to,
                frame: Frame::Attestation { header, signature },
            } => self.send(to, BatchFrame::Attestation { header, signature }.encode()),
            DisseminatorOutput::Check { header } => self.check(header),
            DisseminatorOutput::Proven(proof) => {
                self.proven.insert(proof.header.index, proof);
            }
            DisseminatorOutput::Misbehaved { by, what } => self.misbehaved(by, &what.to_string()),
            DisseminatorOutput::Ignored { by, what } => {
                debug!(validator = by.0, "batch stream: {what}");
                Metrics::inc_reason(&self.shared.metrics.consensus_rejections, "batch_ignored");
            }
        }
    }

    /// Checks every transaction of a stored batch off the loop; the answer comes back as
    /// [`ServiceInput::Checked`].
    fn check(&self, header: BatchHeader) {
        let Some(batch) = self.path.store().get(&header.digest()) else {
            let _ = self.path.inputs.try_send(ServiceInput::Checked {
                header,
                valid: false,
            });
            return;
        };
        let (shared, inputs) = (self.shared.clone(), self.path.inputs.clone());
        tokio::task::spawn_blocking(move || {
            // Durable before attested: the batch was stored unsynced when it arrived
            // (`on_batch`); this syncs it with every write made since. Without it this node
            // does not attest (the author asks another validator after `RETRY_MS`).
            if let Err(e) = shared.store.sync_writes() {
                warn!("cannot make a received batch durable: {e}; not attesting it");
                return;
            }
            // Crash faults (Raft): the author checked every signature when it admitted the
            // transactions, and validators do not lie; an attester checks that each decodes
            // for this chain, not the signatures again.
            let valid = if shared.validators.model() == tally_consensus::FaultModel::Crash {
                crate::batches::attest::check_batch_decoding(&batch, &shared.chain_id).is_ok()
            } else {
                Metrics::inc_kind(
                    &shared.metrics.signatures_checked,
                    "transaction",
                    u64::from(header.tx_count),
                );
                check_batch(&batch, &shared.chain_id, &shared.keys).is_ok()
            };
            let _ = inputs.blocking_send(ServiceInput::Checked { header, valid });
        });
    }

    /// Verifies proofs (their structure was checked at decoding) and holds the valid ones.
    /// The signatures are checked on a blocking thread, not on the node's one async thread
    /// (f + 1 of them for every batch of every author), at most
    /// [`PROOF_CHECKS_IN_FLIGHT_MAX`] frames at once; the pool takes the valid proofs from
    /// there. Proofs of one author may so reach the pool out of order, which it
    /// handles (`ProofPool::take` serves each author's batches lowest index first).
    fn take_proofs(&self, proofs: Vec<BatchProof>) {
        let fresh: Vec<BatchProof> = {
            let pool = self.path.pool();
            proofs
                .into_iter()
                .filter(|p| {
                    let d = p.header.digest();
                    !pool.contains(&d) && !pool.is_committed(&d)
                })
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        let n: usize = fresh.iter().map(|p| p.attestations.len()).sum();
        Metrics::inc_kind(
            &self.shared.metrics.signatures_checked,
            "attestation",
            n as u64,
        );
        let (shared, path, driver) = (self.shared.clone(), self.path.clone(), self.driver.clone());
        if path.proof_checks.fetch_add(1, Ordering::Relaxed) >= PROOF_CHECKS_IN_FLIGHT_MAX {
            hold_proofs(&shared, &path, &driver, fresh);
            return;
        }
        tokio::task::spawn_blocking(move || hold_proofs(&shared, &path, &driver, fresh));
    }

    async fn on_input(&mut self, input: ServiceInput) {
        match input {
            ServiceInput::Frame { from, bytes } => {
                self.path
                    .queued_bytes
                    .fetch_sub(bytes.len(), Ordering::Relaxed);
                self.on_frame(from, bytes)
            }
            ServiceInput::Checked { header, valid } => {
                self.step(DisseminatorInput::Checked { header, valid })
            }
            ServiceInput::Committed { headers } => {
                self.step(DisseminatorInput::Committed { headers })
            }
            ServiceInput::FetchBodies { digests, from } => {
                if self.wanted.len() + digests.len() > WANTED_MAX {
                    self.wanted.clear();
                }
                for chunk in digests.chunks(FETCH_MAX) {
                    self.wanted.extend(chunk.iter().copied());
                    self.send(
                        Some(from),
                        BatchFrame::Fetch {
                            digests: chunk.to_vec(),
                        }
                        .encode(),
                    );
                }
            }
            ServiceInput::FetchProofs { digests, from } => {
                for chunk in digests.chunks(FETCH_MAX) {
                    self.send(
                        from,
                        BatchFrame::ProofRequest {
                            digests: chunk.to_vec(),
                        }
                        .encode(),
                    );
                }
            }
        }
    }

    fn on_frame(&mut self, from: PublicKey, bytes: Vec<u8>) {
        let Some(from_id) = self.shared.validators.id_of(&from) else {
            return;
        };
        let frame = match BatchFrame::decode(&bytes, &self.shared.validators) {
            Ok(f) => f,
            Err(e) => return self.misbehaved(from_id, &e.to_string()),
        };
        match frame {
            BatchFrame::Batch { attest, batch } => self.on_batch(from_id, attest, batch),
            BatchFrame::Attestation { header, signature } => {
                let Some(key) = self.shared.validators.key(from_id) else {
                    return;
                };
                let check = SignatureCheck {
                    key: *key,
                    domain: ATTEST_DOMAIN,
                    body: attestation_body(&header),
                    signature,
                };
                Metrics::inc_kind(&self.shared.metrics.signatures_checked, "attestation", 1);
                if tally_crypto::verify_one(&self.shared.chain_id, &check).is_err() {
                    Metrics::inc_kind(&self.shared.metrics.signature_rejections, "attestation", 1);
                    self.conduct.offence(&from, "bad_signature");
                    return;
                }
                self.step(DisseminatorInput::Attested {
                    from: from_id,
                    header,
                    signature,
                });
            }
            BatchFrame::Fetch { digests } => {
                let bodies: Vec<Arc<TxBatch>> = {
                    let store = self.path.store();
                    digests.iter().filter_map(|d| store.get(d)).collect()
                };
                for b in bodies {
                    self.send(Some(from_id), BatchFrame::encode_fetched(&b));
                }
            }
            BatchFrame::Fetched { batch } => {
                if self.wanted.remove(&batch.digest()) {
                    self.path
                        .fetched
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(batch.digest(), Arc::new(batch));
                    self.path.arrived.notify_waiters();
                }
            }
            BatchFrame::Proofs { proofs } => self.take_proofs(proofs),
            BatchFrame::ProofRequest { digests } => {
                let proofs: Vec<BatchProof> = {
                    let pool = self.path.pool();
                    digests
                        .iter()
                        .filter_map(|d| pool.get(d))
                        .map(|p| BatchProof::clone(&p))
                        .collect()
                };
                if !proofs.is_empty() {
                    self.send(Some(from_id), BatchFrame::Proofs { proofs }.encode());
                }
            }
        }
    }

    /// A batch from its author: stored within the author's quota, then the Disseminator
    /// decides whether to check and attest it. The write is not synced here: this task runs
    /// on the node's one async thread, which a sync would stall for every peer message and
    /// consensus step. A batch this node attests is made durable by [`Task::check`], off
    /// this thread, before the attestation is signed.
    fn on_batch(&mut self, from: ValidatorId, attest: bool, batch: TxBatch) {
        let header = *batch.header();
        if header.author != from || from == self.me {
            return self.misbehaved(from, "batch from another author");
        }
        // A batch already in an executed block (an author resending its stored batches after
        // a restart, before it caught up) will never be ordered again: stored, it would only
        // hold its author's quota, for good. The store stays locked from the check to the
        // insert, so a block written meanwhile removes what this inserts.
        let mut store = self.path.store();
        let digest = header.digest();
        let executed = self.path.pool().is_committed(&digest)
            || self
                .shared
                .store
                .tx_index(&crate::execution::chain::executed_batch_key(&digest))
                .is_ok_and(|l| l.is_some());
        if executed {
            drop(store);
            Metrics::inc_reason(&self.shared.metrics.consensus_rejections, "batch_executed");
            return;
        }
        let inserted = store.insert(vec![batch], false);
        drop(store);
        match inserted {
            Ok(answers) => match answers.into_iter().next() {
                Some(Ok(Inserted::New | Inserted::Known)) => {}
                Some(Err(Refused::Equivocation { .. })) => {
                    return self.misbehaved(from, "two batches with one number");
                }
                Some(Err(e)) => {
                    debug!("batch not stored: {e}");
                    Metrics::inc_reason(
                        &self.shared.metrics.consensus_rejections,
                        "batch_over_quota",
                    );
                    return;
                }
                None => return,
            },
            Err(e) => {
                warn!("cannot store a batch: {e}");
                return;
            }
        }
        self.step(DisseminatorInput::Received {
            from,
            header,
            attest,
        });
    }
}

/// Checks the signatures of `fresh` proofs and puts the valid ones into the pool; ends one
/// of the [`BatchPath`]'s proof checks.
fn hold_proofs(
    shared: &Shared,
    path: &BatchPath,
    driver: &mpsc::Sender<DriverInput>,
    fresh: Vec<BatchProof>,
) {
    let verified = tally_crypto::verify_batch(&shared.validators, &shared.chain_id, fresh);
    let now = Instant::now();
    let mut added = false;
    {
        let mut pool = path.pool();
        for v in verified {
            match v {
                Ok(p) => match pool.insert(p, now) {
                    Ok(a) => added |= a,
                    Err(e) => debug!("proof not held: {e}"),
                },
                Err(_) => Metrics::inc_kind(&shared.metrics.signature_rejections, "attestation", 1),
            }
        }
    }
    path.proof_checks.fetch_sub(1, Ordering::Relaxed);
    if added {
        path.arrived.notify_waiters();
        let _ = driver.try_send(DriverInput::BodiesArrived);
    }
}

/// The first batch number of a validator without a stored mark: microseconds since the Unix
/// epoch.
fn fresh_mark() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
