//! State shared by the node's tasks: read by RPC, written by the driver and the executor.

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::value::RawValue;

use tally_consensus::{ValidatorId, ValidatorSet};
use tally_crypto::{ChainId, Digest, KeyCache, PublicKey};
use tally_genesis::Genesis;
use tally_monitoring::Metrics;
use tally_storage::Store;
use tokio::sync::{Notify, broadcast};

use crate::execution::block::StoredBlock;
use crate::ingress::mempool::Mempool;

#[derive(Clone, Debug, Default)]
pub struct Status {
    pub height: u64,
    pub latest_hash: Digest,
    /// The epoch: PBFT view, Raft term.
    pub view: u64,
    /// The leader this node follows, when it knows one.
    pub leader: Option<u16>,
    /// Multi-Paxos: this node leads under a lease until then, with every chosen slot
    /// executed — its reads reflect every committed transaction (`Status::lease_read`).
    pub lease_until: Option<std::time::Instant>,
    pub stable_checkpoint: u64,
    /// `(height, target)` while catching up from peers.
    pub syncing: Option<(u64, u64)>,
    /// This node's state diverged from a certified checkpoint and is being repaired.
    pub diverged: bool,
    pub peers: Vec<PublicKey>,
}

impl Status {
    /// Whether a read answered now is a lease read (Multi-Paxos leader under its lease).
    pub fn lease_read(&self) -> bool {
        self.lease_until
            .is_some_and(|t| std::time::Instant::now() < t)
    }
}

/// A block just committed, with its transactions' hashes (the executor has them; a
/// subscriber would otherwise hash every body again).
pub struct CommittedBlock {
    pub block: StoredBlock,
    pub tx_hashes: Vec<Digest>,
    /// Its `subscribe_blocks` notification without and with bodies: serialized by the first
    /// subscriber that needs it, copied by the others. Bounded with the block: a committed
    /// block is held only until every subscriber has read it, and at most the broadcast's
    /// 1,024 blocks when one lags (it is then dropped as a slow subscriber), so the cache at
    /// most triples what the broadcast held before (the bodies, and their hex once).
    notifications: [OnceLock<Box<RawValue>>; 2],
}

impl CommittedBlock {
    pub fn new(block: StoredBlock, tx_hashes: Vec<Digest>) -> CommittedBlock {
        CommittedBlock {
            block,
            tx_hashes,
            notifications: Default::default(),
        }
    }

    /// The block as `subscribe_blocks` sends it.
    pub fn notification(&self, shared: &Shared, include_txs: bool) -> &RawValue {
        self.notifications[include_txs as usize].get_or_init(|| {
            serde_json::value::to_raw_value(&crate::rpc::block_view::BlockView {
                validators: &shared.validators,
                block: &self.block,
                tx_hashes: Some(&self.tx_hashes),
                include_txs,
            })
            .expect("a block serializes")
        })
    }
}

/// Transaction hashes RPC callers may wait for at once (`tx_wait`); more wait for a free
/// place or are told to retry.
pub const TX_WAITERS_MAX: usize = 65_536;

pub struct Shared {
    pub chain_id: ChainId,
    pub genesis: Genesis,
    pub genesis_hash: Digest,
    pub validators: ValidatorSet,
    pub me: Option<ValidatorId>,
    pub store: Arc<dyn Store>,
    pub mempool: Mutex<Mempool>,
    pub status: RwLock<Status>,
    /// Woken when a transaction is committed or fails: RPC `tx_wait` re-reads the index.
    /// At most [`TX_WAITERS_MAX`] hashes; a waiter that times out removes its entry.
    pub tx_waiters: Mutex<crate::FastMap<Digest, Arc<Notify>>>,
    /// Every block as it commits, for RPC subscribers.
    pub blocks: broadcast::Sender<Arc<CommittedBlock>>,
    pub metrics: Arc<Metrics>,
    /// Validated sender keys, shared by every verification path.
    pub keys: Arc<KeyCache>,
    /// Woken when the mempool gets new transactions (the driver may cut a batch).
    pub mempool_changed: Notify,
    /// Woken when gossiped bodies have finished their signature check (a proposal waiting
    /// for bodies whose check was under way looks again).
    pub checks_done: Notify,
    /// Woken when this node proposes: locally submitted transactions still gathering into a
    /// gossip bundle leave now, ahead of the proposal, so backups need not fetch them.
    pub gossip_flush: Notify,
}

impl Shared {
    pub fn status(&self) -> Status {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.write().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn mempool(&self) -> std::sync::MutexGuard<'_, Mempool> {
        self.mempool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The notifier `tx_wait` waits on for `hash`; `None` when [`TX_WAITERS_MAX`] other
    /// hashes are being waited for already.
    pub fn tx_waiter(&self, hash: Digest) -> Option<Arc<Notify>> {
        let mut waiters = self.tx_waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiters.get(&hash) {
            return Some(n.clone());
        }
        if waiters.len() >= TX_WAITERS_MAX {
            return None;
        }
        Some(waiters.entry(hash).or_default().clone())
    }

    /// A `tx_wait` for `hash` is done (its caller's handle is given back): the entry goes
    /// unless another caller still waits.
    pub fn tx_waiter_done(&self, hash: &Digest, notify: Arc<Notify>) {
        let mut waiters = self.tx_waiters.lock().unwrap_or_else(|e| e.into_inner());
        // Held by the map and by `notify` only: nobody else waits.
        if waiters
            .get(hash)
            .is_some_and(|n| Arc::ptr_eq(n, &notify) && Arc::strong_count(n) <= 2)
        {
            waiters.remove(hash);
        }
    }

    /// Wakes the RPC callers waiting for any of these transactions (one lock per block).
    pub fn wake_txs(&self, hashes: &[Digest]) {
        let mut waiters = self.tx_waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters.is_empty() {
            return;
        }
        for h in hashes {
            if let Some(n) = waiters.remove(h) {
                n.notify_waiters();
            }
        }
    }

    pub fn f(&self) -> usize {
        self.validators.f()
    }
}

/// The genesis validators with the fault model of the genesis protocol: Byzantine quorums
/// and quorum commit proofs for PBFT, majorities and leader-signed commit proofs for Raft and
/// Multi-Paxos.
pub fn validator_set(
    genesis: &tally_genesis::Genesis,
) -> Result<tally_consensus::ValidatorSet, tally_crypto::CryptoError> {
    let keys: Vec<tally_crypto::PublicKey> =
        genesis.validators.iter().map(|v| v.public_key).collect();
    let model = match genesis.consensus.protocol {
        tally_genesis::Protocol::Pbft => tally_consensus::FaultModel::Byzantine,
        tally_genesis::Protocol::Raft | tally_genesis::Protocol::Multipaxos => {
            tally_consensus::FaultModel::Crash
        }
    };
    tally_consensus::ValidatorSet::with_model(&keys, model)
}
