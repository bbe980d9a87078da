//! Getting transactions and consensus messages in: decode, stateless checks, batch signature
//! verification off the event loop, then the mempool (transactions) or the driver
//! (consensus messages). Locally admitted transactions are gossiped in bundles.

use std::sync::Arc;
use std::time::Duration;

use tally_crypto::{CryptoError, Digest, PublicKey, Verified};
use tally_ledger::{SignedTransaction, TX_BYTES_MAX, TxError, decode_for_chain};
use tally_monitoring::{Metrics, SourceLabels};
use tally_p2p::{GossipId, P2pHandle};
use tokio::sync::{mpsc, oneshot};

use crate::execution::chain::StoreView;
use crate::ingress::mempool::{AdmitError, Stashed};
use crate::ingress::verify::{Priority, VerifyPool};
use crate::shared::Shared;
use crate::wire::{self, SyncRequest, SyncResponse, TxBundle};

/// A primary asks its peers for pending work when fewer than this many of its own
/// transactions are orderable and it has room for at least `PULL_MIN_ROOM` more.
const PULL_BELOW_READY: usize = 2048;
const PULL_MIN_ROOM: usize = 512;
/// At most this many from each peer per request (five requests a second).
const PULL_PER_PEER_MAX: usize = 512;

/// Client and gossiped transactions waiting for their signature check. Beyond this the node
/// answers "overloaded" (retry later): a longer queue only adds waiting before the pool,
/// whose own bound already holds several seconds of work under overload.
const TX_VERIFY_QUEUE: usize = 4096;

/// The check's outcome; `None` when the body was already known by the time its turn came.
type TxVerdict = Option<Result<Verified<SignedTransaction>, CryptoError>>;
type TxReply = oneshot::Sender<TxVerdict>;

/// Why a submitted transaction was refused.
/// With data batches: transactions a validator may have cut into batches that are not yet
/// committed before it refuses new ones as `overloaded`. Past the sustainable rate the
/// queue between admission and commit is what grows; this keeps it to ≈ 1 s of one
/// validator's share of commits at the rates measured here (14,000 tx/s over four), so a
/// client is told to retry instead of waiting seconds, and the work queued behind consensus
/// stays bounded.
pub const CUT_UNCOMMITTED_MAX: usize = 4096;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Tx(#[from] TxError),
    #[error(transparent)]
    Admit(#[from] AdmitError),
    #[error("node overloaded: verification queue full")]
    Overloaded,
    #[error(
        "node overloaded: {unproven} of its batches wait for the other validators' attestations; retry later"
    )]
    Unproven { unproven: usize },
    #[error(
        "node overloaded: {in_flight} of the transactions it admitted are in batches not yet committed; retry later"
    )]
    Uncommitted { in_flight: usize },
}

impl SubmitError {
    pub fn reason(&self) -> &'static str {
        match self {
            SubmitError::Tx(e) => e.name(),
            SubmitError::Admit(e) => e.reason(),
            SubmitError::Overloaded
            | SubmitError::Unproven { .. }
            | SubmitError::Uncommitted { .. } => "overloaded",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rpc,
    Gossip,
    /// Pulled from a peer by this node as primary (`SyncRequest::Pending`).
    Pull,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Rpc => "rpc",
            Source::Gossip => "gossip",
            Source::Pull => "pull",
        }
    }
}

#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
    verify: VerifyPool<SignedTransaction, TxReply>,
    gossip: mpsc::Sender<Vec<u8>>,
    p2p: P2pHandle,
    /// With data batches: transactions are not gossiped, and too many unproven batches
    /// make the node refuse new ones.
    batches: Option<Arc<crate::batches::service::BatchPath>>,
    /// Each client address's share of the signature-check queue.
    shares: Arc<crate::ingress::shares::QueueShares>,
}

/// Locally admitted transactions waiting to be bundled for gossip. Past this, a transaction
/// is not gossiped (it stays in the pool; a primary that lacks it fetches or pulls it).
const GOSSIP_QUEUE: usize = 65_536;

impl Admission {
    pub fn new(
        shared: Arc<Shared>,
        p2p: P2pHandle,
        batches: Option<Arc<crate::batches::service::BatchPath>>,
    ) -> Admission {
        let verify = VerifyPool::spawn(
            shared.keys.clone(),
            shared.chain_id.clone(),
            512,
            TX_VERIFY_QUEUE,
            Priority::Background,
            Some(known_bodies(shared.clone())),
            checked_counter(&shared, "transaction"),
            Arc::new(|reply: TxReply, result| {
                let _ = reply.send(result);
            }),
        );
        let (gossip, rx) = mpsc::channel(GOSSIP_QUEUE);
        tokio::spawn(bundle_gossip(rx, p2p.clone(), shared.clone()));
        Admission {
            shared,
            verify,
            gossip,
            p2p,
            batches,
            shares: crate::ingress::shares::QueueShares::new(TX_VERIFY_QUEUE),
        }
    }

    fn reject(&self, e: &SubmitError) {
        Metrics::inc_reason(&self.shared.metrics.mempool_rejected, e.reason());
        if matches!(e, SubmitError::Tx(TxError::InvalidSignature)) {
            Metrics::inc_kind(&self.shared.metrics.signature_rejections, "transaction", 1);
        }
    }

    /// Stateless checks without the signature.
    fn decode(&self, bytes: &[u8]) -> Result<SignedTransaction, SubmitError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(TxError::TooLarge {
                bytes: bytes.len(),
                max: TX_BYTES_MAX,
            }
            .into());
        }
        Ok(decode_for_chain(&self.shared.chain_id, bytes)?)
    }

    /// Refuses duplicates and, when the mempool is full, everything — before paying for the
    /// signature check. Under overload this is what keeps the node's CPU for consensus.
    fn room_for(&self, tx: &SignedTransaction) -> Result<(), SubmitError> {
        if let Some(b) = &self.batches
            && b.overloaded()
        {
            return Err(SubmitError::Unproven {
                unproven: b.unproven(),
            });
        }
        let pool = self.shared.mempool();
        if pool.cut_uncommitted() >= CUT_UNCOMMITTED_MAX {
            return Err(SubmitError::Uncommitted {
                in_flight: pool.cut_uncommitted(),
            });
        }
        if pool.contains(&tx.hash()) {
            return Err(AdmitError::Duplicate.into());
        }
        if pool.full_for(tx.encoded().len()) {
            return Err(AdmitError::Full {
                count: pool.len(),
                bytes: pool.bytes(),
            }
            .into());
        }
        Ok(())
    }

    /// Starts verification; the receiver yields the verified transaction.
    fn start_verify(
        &self,
        tx: SignedTransaction,
    ) -> Result<oneshot::Receiver<TxVerdict>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        if !self.verify.submit(tx, reply) {
            return Err(SubmitError::Overloaded);
        }
        Ok(rx)
    }

    /// The account's next nonce as the node knows it (the mempool's cached committed nonce,
    /// else the store).
    fn next_nonce(&self, sender: &PublicKey) -> u64 {
        use tally_ledger::StateView;
        let cached = self.shared.mempool().cached_nonce(sender);
        cached.unwrap_or_else(|| {
            StoreView(&*self.shared.store)
                .account(sender)
                .ok()
                .flatten()
                .map_or(0, |a| a.nonce)
        })
    }

    /// The answer to a client whose transaction's body the node already knew (its check was
    /// skipped): pending or in a proposal, a duplicate; already committed, a stale nonce —
    /// what a client replaying an old transaction must be told.
    fn already_known(&self, id: (Digest, PublicKey, u64)) -> SubmitError {
        let (hash, sender, nonce) = id;
        if !self.shared.mempool().contains(&hash) {
            let expected = self.next_nonce(&sender);
            if nonce < expected {
                return AdmitError::StaleNonce {
                    expected,
                    got: nonce,
                }
                .into();
            }
        }
        AdmitError::Duplicate.into()
    }

    fn admit(
        &self,
        tx: Verified<SignedTransaction>,
        source: Source,
    ) -> Result<Digest, SubmitError> {
        // The mempool judges by nonce only (balances are checked at execution).
        let account = tally_ledger::Account {
            balance: 0,
            nonce: self.next_nonce(&tx.tx().sender),
        };
        let bytes = (source == Source::Rpc).then(|| tx.encoded().to_vec());
        let hash = match source {
            Source::Rpc => self.shared.mempool().admit(tx, account)?,
            Source::Gossip | Source::Pull => self.shared.mempool().admit_from_peer(tx, account)?,
        };
        self.shared
            .metrics
            .mempool_admitted
            .get_or_create(&SourceLabels {
                source: source.label().into(),
            })
            .inc();
        if let Some(b) = bytes
            && self.batches.is_none()
            && self.gossip.try_send(b).is_err()
        {
            self.shared
                .metrics
                .p2p_dropped
                .get_or_create(&tally_monitoring::DirectionLabels {
                    direction: "out".into(),
                })
                .inc();
        }
        self.shared.mempool_changed.notify_one();
        // A proposal may be waiting for this body (its gossiped copy's check was marked as
        // under way when this copy's check started).
        self.shared.checks_done.notify_waiters();
        Ok(hash)
    }

    /// Admits one transaction submitted by a client (from `client`, its address, when it
    /// came over the network: each address has its share of the signature-check queue).
    pub async fn submit(
        &self,
        bytes: &[u8],
        client: Option<std::net::IpAddr>,
    ) -> Result<Digest, SubmitError> {
        let result = async {
            let tx = self.decode(bytes)?;
            self.room_for(&tx)?;
            let held = self.shares.take(client, 1);
            if held.granted == 0 {
                return Err(SubmitError::Overloaded);
            }
            let id = (tx.hash(), tx.tx().sender, tx.tx().nonce);
            let verified = self
                .start_verify(tx)?
                .await
                .map_err(|_| SubmitError::Overloaded)?
                .ok_or_else(|| self.already_known(id))?
                .map_err(|_| TxError::InvalidSignature)?;
            self.admit(verified, Source::Rpc)
        }
        .await;
        if let Err(e) = &result {
            self.reject(e);
        }
        result
    }

    /// Admits many transactions; they are verified together. One result per transaction,
    /// in order; those beyond `client`'s share of the queue are refused as `overloaded`.
    pub async fn submit_many(
        &self,
        txs: &[Vec<u8>],
        client: Option<std::net::IpAddr>,
    ) -> Vec<Result<Digest, SubmitError>> {
        let held = self.shares.take(client, txs.len());
        let mut pending = Vec::with_capacity(txs.len());
        for (i, bytes) in txs.iter().enumerate() {
            pending.push(self.decode(bytes).and_then(|tx| {
                self.room_for(&tx)?;
                if i >= held.granted {
                    return Err(SubmitError::Overloaded);
                }
                let id = (tx.hash(), tx.tx().sender, tx.tx().nonce);
                Ok((id, self.start_verify(tx)?))
            }));
        }
        let mut out = Vec::with_capacity(txs.len());
        for p in pending {
            let r = match p {
                Err(e) => Err(e),
                Ok((id, rx)) => match rx.await {
                    Err(_) => Err(SubmitError::Overloaded),
                    Ok(None) => Err(self.already_known(id)),
                    Ok(Some(Err(_))) => Err(TxError::InvalidSignature.into()),
                    Ok(Some(Ok(v))) => self.admit(v, Source::Rpc),
                },
            };
            if let Err(e) = &r {
                self.reject(e);
            }
            out.push(r);
        }
        drop(held);
        out
    }

    /// Admits bodies that were stashed unverified (gossip that came while the pool was full or
    /// the node busy) once the pool has room again, oldest first, up to `max` at a time.
    /// Without this, transactions that other nodes admitted while this one was full would
    /// reach it only inside a proposal — so as the primary it would never propose them,
    /// and the clients of the other nodes would wait for a view change. Stale bodies (nonce
    /// already used, or committed) are dropped before paying for their signature. Refusals
    /// here are not counted in `tally_mempool_rejected_total`: the bundle was counted when it
    /// arrived. Returns how many were admitted.
    pub async fn promote_stashed(&self, max: usize) -> usize {
        let bodies = {
            let mut pool = self.shared.mempool();
            let room = pool.room().min(max);
            if room == 0 {
                return 0;
            }
            pool.take_stash_oldest(room)
        };
        let mut raw = Vec::with_capacity(bodies.len());
        let mut admitted = 0;
        for body in bodies {
            match body {
                Stashed::Raw(bytes) => raw.push(bytes),
                // Refused again for room: kept again (not counted again as a rejection; it
                // was counted when it first came).
                Stashed::Checked(tx) => {
                    admitted += usize::from(self.admit(*tx, Source::Gossip).is_ok())
                }
            }
        }
        admitted + self.admit_unverified(raw, Source::Gossip).await
    }

    /// Decodes, drops what is known or stale (before paying for a signature), verifies the
    /// rest as one batch off the loop and admits the valid ones. Returns how many were
    /// admitted.
    async fn admit_unverified(&self, bodies: Vec<Vec<u8>>, source: Source) -> usize {
        let mut txs = Vec::with_capacity(bodies.len());
        for bytes in bodies {
            let Ok(tx) = self.decode(&bytes) else {
                continue;
            };
            let (hash, sender, nonce) = (tx.hash(), tx.tx().sender, tx.tx().nonce);
            if self.shared.mempool().body(&hash).is_some() {
                continue;
            }
            if nonce >= self.next_nonce(&sender) {
                txs.push(tx);
            }
        }
        if txs.is_empty() {
            return 0;
        }
        let (chain, keys) = (self.shared.chain_id.clone(), self.shared.keys.clone());
        Metrics::inc_kind(
            &self.shared.metrics.signatures_checked,
            "transaction_pulled",
            txs.len() as u64,
        );
        let verified =
            tokio::task::spawn_blocking(move || tally_crypto::verify_batch(&*keys, &chain, txs))
                .await
                .unwrap_or_default();
        let mut admitted = 0;
        for v in verified {
            match v {
                Ok(tx) => admitted += usize::from(self.admit(tx, source).is_ok()),
                Err(_) => Metrics::inc_kind(&self.shared.metrics.signature_rejections, "gossip", 1),
            }
        }
        admitted
    }

    /// As primary, asks every connected peer for its oldest orderable transactions when this
    /// node's own pool runs low. A primary proposes only from its pool; transactions its
    /// peers admitted while it was full or too busy for their gossip would otherwise never
    /// be proposed, and those peers' pools would stay full of them. Returns how many were
    /// admitted.
    pub async fn pull_pending(&self) -> usize {
        let status = self.shared.status();
        let me = self.shared.me.map(|v| v.0);
        if me.is_none()
            || me != status.leader
            || status.syncing.is_some()
            || status.peers.is_empty()
        {
            return 0;
        }
        let room = {
            let pool = self.shared.mempool();
            if pool.ready_count() >= PULL_BELOW_READY {
                return 0;
            }
            pool.room()
        };
        if room < PULL_MIN_ROOM {
            return 0;
        }
        let per_peer = (room / status.peers.len()).min(PULL_PER_PEER_MAX) as u32;
        let request = wire::encode(&SyncRequest::Pending { max: per_peer });
        let asks = status.peers.iter().map(|peer| {
            let (p2p, request) = (self.p2p.clone(), request.clone());
            let peer = *peer;
            async move {
                match tokio::time::timeout(Duration::from_secs(2), p2p.request(peer, request)).await
                {
                    Ok(Ok(response)) => match wire::decode::<SyncResponse>(&response) {
                        Some(SyncResponse::Txs(bodies)) => bodies,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
        });
        let bodies: Vec<Vec<u8>> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if bodies.is_empty() {
            return 0;
        }
        self.admit_unverified(bodies, Source::Pull).await
    }

    /// Keeps a bundle's transactions aside unverified (the node is busy or full) and does not
    /// forward it.
    pub fn stash_gossip(&self, id: GossipId, bytes: Vec<u8>) {
        if let Some(bundle) = wire::decode::<TxBundle>(&bytes) {
            self.shared.mempool().stash(bundle.txs);
        }
        self.p2p.ignore_gossip(id);
    }

    /// A gossiped bundle: accepted only if every transaction passes the stateless checks
    /// (which every honest node applies identically); valid ones are admitted.
    pub async fn on_gossip(&self, id: GossipId, from: tally_crypto::PublicKey, bytes: Vec<u8>) {
        let bundle: Option<TxBundle> = wire::decode(&bytes);
        let Some(bundle) = bundle.filter(|b| b.txs.len() <= 65_536) else {
            self.p2p.report_gossip(id, false);
            return;
        };
        // Full: stash the bundle unverified (a proposal naming its transactions verifies them
        // then), and do not forward it. Neutral for the sender's score.
        {
            let mut pool = self.shared.mempool();
            if pool.full_for(0) {
                pool.stash(bundle.txs);
                drop(pool);
                Metrics::inc_reason(&self.shared.metrics.mempool_rejected, "full");
                self.p2p.ignore_gossip(id);
                return;
            }
        }
        let mut receivers = Vec::with_capacity(bundle.txs.len());
        let mut decoded = Vec::with_capacity(bundle.txs.len());
        for bytes in bundle.txs {
            match self.decode(&bytes) {
                Ok(tx) => decoded.push((tx, bytes)),
                Err(_) => {
                    self.p2p.report_gossip(id, false);
                    return;
                }
            }
        }
        // Crash faults (Raft): a validator forwards only what it admitted, and validators do not
        // lie, so a transaction it gossips was checked once already and is not checked again.
        let trusted = self.shared.validators.model() == tally_consensus::FaultModel::Crash
            && self.shared.validators.id_of(&from).is_some();
        if trusted {
            for (tx, _) in decoded {
                if self.shared.mempool().body(&tx.hash()).is_some() {
                    continue;
                }
                if let Err(e) = self.admit(Verified::checked_by_peer(tx), Source::Gossip) {
                    Metrics::inc_reason(&self.shared.metrics.mempool_rejected, e.reason());
                }
            }
            self.shared.checks_done.notify_waiters();
            self.p2p.report_gossip(id, true);
            return;
        }
        let mut queued = Vec::with_capacity(decoded.len());
        for (tx, bytes) in decoded {
            let hash = tx.hash();
            // Pending, or seen recently (committed, or pulled and proposed): not again.
            // Otherwise remembered while it waits, so that a proposal naming it takes it from
            // here rather than fetching it from the proposer.
            {
                let mut pool = self.shared.mempool();
                if pool.body(&hash).is_some() {
                    continue;
                }
                if pool.checking_add(hash, bytes) {
                    queued.push(hash);
                }
            }
            let (reply, rx) = oneshot::channel();
            if !self.verify.submit_wait(tx, reply).await {
                break;
            }
            receivers.push(rx);
        }
        // Each result is admitted as it comes (a proposal may be waiting for it), and only
        // then leaves the waiting set, so that a proposal never finds a body in neither place.
        let mut valid = true;
        for rx in receivers {
            let hash = match rx.await {
                Ok(Some(Ok(tx))) => {
                    let hash = tx.hash();
                    if let Err(e) = self.admit(tx, Source::Gossip) {
                        Metrics::inc_reason(&self.shared.metrics.mempool_rejected, e.reason());
                    }
                    Some(hash)
                }
                // Admitted meanwhile by another path (a proposal's fetch, a pull).
                Ok(None) => None,
                _ => {
                    valid = false;
                    None
                }
            };
            if let Some(h) = hash {
                self.shared.mempool().checking_done(&h);
            }
            self.shared.checks_done.notify_waiters();
        }
        // The rest (skipped, invalid, or not submitted because the queue closed).
        {
            let mut pool = self.shared.mempool();
            for h in &queued {
                pool.checking_done(h);
            }
        }
        self.shared.checks_done.notify_waiters();
        if !valid {
            Metrics::inc_kind(&self.shared.metrics.signature_rejections, "gossip", 1);
        }
        self.p2p.report_gossip(id, valid);
    }
}

/// Sends locally admitted transactions to peers in bundles: every 10 ms, or sooner at
/// 512 KiB, or at once when this node proposes (a proposal naming a transaction its backups
/// have not received makes each of them fetch the body: it would travel twice).
async fn bundle_gossip(mut rx: mpsc::Receiver<Vec<u8>>, p2p: P2pHandle, shared: Arc<Shared>) {
    const BUNDLE_BYTES: usize = 512 * 1024;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut size = first.len();
        let mut txs = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(10);
        while size < BUNDLE_BYTES {
            tokio::select! {
                biased;
                _ = shared.gossip_flush.notified() => {
                    // Everything submitted before the proposal is in the channel already.
                    while size < BUNDLE_BYTES {
                        let Ok(tx) = rx.try_recv() else { break };
                        size += tx.len();
                        txs.push(tx);
                    }
                    break;
                }
                next = tokio::time::timeout_at(deadline, rx.recv()) => match next {
                    Ok(Some(tx)) => {
                        size += tx.len();
                        txs.push(tx);
                    }
                    Ok(None) => return,
                    Err(_) => break,
                },
            }
        }
        p2p.publish(wire::encode(&TxBundle { txs }));
    }
}

/// Transactions whose bodies the mempool already holds (pending or recently seen); the
/// others are about to be checked, which a proposal needing one of them then waits for.
fn known_bodies(shared: Arc<Shared>) -> crate::ingress::verify::Known<SignedTransaction> {
    Arc::new(move |txs: &[SignedTransaction]| {
        let mut pool = shared.mempool();
        txs.iter()
            .map(|t| {
                let hash = t.hash();
                let known = pool.body(&hash).is_some();
                if !known {
                    pool.checking_started(&hash);
                }
                known
            })
            .collect()
    })
}

/// Counts signatures a verification pool checks in `tally_signatures_checked{kind}`.
pub(crate) fn checked_counter(
    shared: &Shared,
    kind: &'static str,
) -> Arc<dyn Fn(usize) + Send + Sync> {
    let counter = shared
        .metrics
        .signatures_checked
        .get_or_create(&tally_monitoring::KindLabels { kind: kind.into() })
        .clone();
    Arc::new(move |n| {
        counter.inc_by(n as u64);
    })
}

/// How long a proposal waits for the checks under way of bodies it names before fetching
/// them instead (a check takes milliseconds; this bounds a stuck or lost one).
const CHECK_WAIT: Duration = Duration::from_secs(2);

/// Waits until each of `hashes` is known or has left the waiting set (its check done), at
/// most [`CHECK_WAIT`]; the known ones are taken off `missing`.
async fn wait_for_checks(
    shared: &Shared,
    mut hashes: Vec<Digest>,
    missing: &mut std::collections::HashSet<Digest>,
) {
    let deadline = tokio::time::Instant::now() + CHECK_WAIT;
    while !hashes.is_empty() {
        // Registered before looking, so a check finishing in between still wakes us.
        let notified = shared.checks_done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let pool = shared.mempool();
            hashes.retain(|h| {
                if pool.body(h).is_some() {
                    missing.remove(h);
                    false
                } else {
                    pool.is_checking(h)
                }
            });
        }
        if hashes.is_empty() || tokio::time::timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

/// Fetches transaction bodies from `prefer` first, then the other connected peers; verified
/// bodies are remembered by the mempool. Returns whether all were found.
pub async fn fetch_bodies(
    shared: &Shared,
    p2p: &P2pHandle,
    hashes: Vec<Digest>,
    prefer: Option<PublicKey>,
) -> bool {
    let mut missing: std::collections::HashSet<Digest> = hashes.into_iter().collect();
    // Bodies stashed unverified while the mempool was full, or gossiped and still waiting in
    // the check queue: verify them here first (the queued copy is skipped when its turn
    // comes, its body being known by then).
    let wanted: Vec<Digest> = missing.iter().copied().collect();
    let (stashed, (queued, under_way)) = {
        let mut pool = shared.mempool();
        (pool.take_stashed(&wanted), pool.checking_bodies(&wanted))
    };
    if !stashed.is_empty() || !queued.is_empty() {
        let (chain, keys) = (shared.chain_id.clone(), shared.keys.clone());
        let mut txs: Vec<SignedTransaction> = queued
            .iter()
            .filter_map(|b| decode_for_chain(&shared.chain_id, b).ok())
            .collect();
        {
            let mut pool = shared.mempool();
            for s in stashed {
                match s {
                    Stashed::Raw(b) => txs.extend(decode_for_chain(&shared.chain_id, &b).ok()),
                    Stashed::Checked(v) => {
                        missing.remove(&v.hash());
                        pool.remember(Arc::new(*v));
                    }
                }
            }
        }
        Metrics::inc_kind(
            &shared.metrics.signatures_checked,
            "transaction_fetched",
            txs.len() as u64,
        );
        let verified =
            tokio::task::spawn_blocking(move || tally_crypto::verify_batch(&*keys, &chain, txs))
                .await
                .unwrap_or_default();
        let mut pool = shared.mempool();
        for v in verified.into_iter().flatten() {
            missing.remove(&v.hash());
            pool.remember(Arc::new(v));
        }
    }
    // Bodies whose check is under way: wait for it (bounded) rather than check them again;
    // those it did not admit are fetched below.
    wait_for_checks(shared, under_way, &mut missing).await;
    let mut peers = shared.status().peers;
    if let Some(p) = prefer {
        peers.retain(|k| *k != p);
        peers.insert(0, p);
    }
    for peer in peers {
        if missing.is_empty() {
            break;
        }
        let want: Vec<Digest> = missing.iter().take(wire::SYNC_TXS_MAX).copied().collect();
        let request = wire::encode(&SyncRequest::Txs { hashes: want });
        let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(5), p2p.request(peer, request)).await
        else {
            continue;
        };
        let Some(SyncResponse::Txs(bodies)) = wire::decode::<SyncResponse>(&response) else {
            continue;
        };
        let txs: Vec<SignedTransaction> = bodies
            .iter()
            .filter_map(|b| decode_for_chain(&shared.chain_id, b).ok())
            .filter(|t| missing.contains(&t.hash()))
            .collect();
        let (chain, keys) = (shared.chain_id.clone(), shared.keys.clone());
        Metrics::inc_kind(
            &shared.metrics.signatures_checked,
            "transaction_fetched",
            txs.len() as u64,
        );
        let verified =
            tokio::task::spawn_blocking(move || tally_crypto::verify_batch(&*keys, &chain, txs))
                .await
                .unwrap_or_default();
        let mut pool = shared.mempool();
        for v in verified.into_iter().flatten() {
            missing.remove(&v.hash());
            pool.remember(Arc::new(v));
        }
    }
    missing.is_empty()
}
