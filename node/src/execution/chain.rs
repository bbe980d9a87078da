//! The chain: executes committed batches and persists each resulting block, with all its
//! effects, in one atomic store write.

use std::sync::Arc;

use tally_consensus::CommitCertificate;
use tally_crypto::{ChainId, Digest, PublicKey};
use tally_genesis::Genesis;
use tally_ledger::{
    Account, BlockHeader, CheckedTx, LtHash, StateError, StateView, TxLocation, batch_digest,
    execute_batch, genesis_state,
    state::{account_key, data_key},
};
use tally_storage::{BlockCommit, StateInstall, StorageError, Store};

use crate::FastMap;
use crate::execution::block::{BlockDecodeError, StoredBlock};

pub const META_GENESIS_HASH: &[u8] = b"genesis_hash";
pub const META_CHAIN_ID: &[u8] = b"chain_id";
pub const META_STATE_HASH: &[u8] = b"state_hash";

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Block(#[from] BlockDecodeError),
    #[error(
        "this data folder belongs to a network with genesis hash {stored}, but the genesis file hashes to {expected}: wrong --home, or the genesis changed"
    )]
    GenesisMismatch { stored: String, expected: String },
    #[error("corrupt database: {0}")]
    Corrupt(String),
    #[error("block {got} does not follow height {height}")]
    OutOfOrder { height: u64, got: u64 },
}

/// Reads the committed state through a [`Store`].
pub struct StoreView<'a>(pub &'a dyn Store);

impl StateView for StoreView<'_> {
    fn account(&self, who: &PublicKey) -> Result<Option<Account>, StateError> {
        match self.0.state_get(&account_key(who)) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => Account::decode(&v)
                .map(Some)
                .ok_or_else(|| StateError("corrupt account entry".into())),
            Err(e) => Err(StateError(e.to_string())),
        }
    }

    fn data(&self, owner: &PublicKey, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0
            .state_get(&data_key(owner, key))
            .map_err(|e| StateError(e.to_string()))
    }

    fn tx_location(&self, hash: &Digest) -> Result<Option<TxLocation>, StateError> {
        match self.0.tx_index(hash) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => TxLocation::decode(&v)
                .map(Some)
                .ok_or_else(|| StateError("corrupt tx index entry".into())),
            Err(e) => Err(StateError(e.to_string())),
        }
    }
}

/// Accounts kept in memory by the chain: the latest value of every account a recent block
/// changed, so that execution rarely reads RocksDB for an account. Cleared when it outgrows
/// its bound (the store stays the source of truth).
const ACCOUNT_CACHE_MAX: usize = 200_000;

/// The committed state as execution sees it: the account cache, then the store.
struct CachedView<'a> {
    store: StoreView<'a>,
    accounts: &'a FastMap<PublicKey, Option<Account>>,
}

impl StateView for CachedView<'_> {
    fn account(&self, who: &PublicKey) -> Result<Option<Account>, StateError> {
        match self.accounts.get(who) {
            Some(a) => Ok(*a),
            None => self.store.account(who),
        }
    }

    fn data(&self, owner: &PublicKey, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.store.data(owner, key)
    }

    fn tx_location(&self, hash: &Digest) -> Result<Option<TxLocation>, StateError> {
        self.store.tx_location(hash)
    }
}

/// What a block that orders data batches adds to its transactions: the consensus digest
/// and the batches.
pub struct BatchesOrdered {
    pub digest: Digest,
    pub batches: Vec<crate::execution::block::BlockBatch>,
}

/// Where the transaction index records that a data batch was executed:
/// `SHA-256("tally/batch/executed/v1" ‖ header digest)`, a key no transaction hash can take
/// on purpose.
pub fn executed_batch_key(header_digest: &Digest) -> Digest {
    let mut h = Digest::hasher();
    h.update(b"tally/batch/executed/v1");
    h.update(&header_digest.0);
    h.finalize()
}

/// A block just applied, and the accounts it changed (with their new values).
pub struct Applied {
    pub block: StoredBlock,
    pub touched: Vec<(PublicKey, Account)>,
}

pub struct Chain {
    store: Arc<dyn Store>,
    chain_id: ChainId,
    genesis_hash: Digest,
    state_hash: LtHash,
    height: u64,
    last_hash: Digest,
    accounts: FastMap<PublicKey, Option<Account>>,
}

impl Chain {
    /// Opens the chain in `store`, writing the genesis state on first use. Refuses a store
    /// that was initialised from another genesis, and checks that the stored state hash
    /// matches the latest block's state root.
    pub fn open(store: Arc<dyn Store>, genesis: &Genesis) -> Result<Chain, ChainError> {
        let genesis_hash = genesis.hash();
        match store.meta_get(META_GENESIS_HASH)? {
            Some(stored) if stored != genesis_hash.0 => {
                return Err(ChainError::GenesisMismatch {
                    stored: hex::encode(stored),
                    expected: genesis_hash.to_hex(),
                });
            }
            Some(_) => {}
            None => {
                let accounts: Vec<_> = genesis
                    .accounts
                    .iter()
                    .map(|a| (a.address, a.balance))
                    .collect();
                let (writes, hash) = genesis_state(&accounts);
                let state = writes
                    .into_iter()
                    .map(|(k, v)| (k, v.expect("genesis writes are puts")))
                    .collect();
                store.initialize(
                    state,
                    vec![
                        (META_GENESIS_HASH.to_vec(), genesis_hash.0.to_vec()),
                        (
                            META_CHAIN_ID.to_vec(),
                            genesis.chain_id.as_str().as_bytes().to_vec(),
                        ),
                        (META_STATE_HASH.to_vec(), hash.to_bytes()),
                    ],
                )?;
            }
        }
        let state_hash = store
            .meta_get(META_STATE_HASH)?
            .and_then(|b| LtHash::from_bytes(&b))
            .ok_or_else(|| ChainError::Corrupt("missing or malformed state hash".into()))?;
        let height = store.latest_height()?;
        let last_hash = if height == 0 {
            genesis_hash
        } else {
            let block = Self::read_block(&*store, height)?
                .ok_or_else(|| ChainError::Corrupt(format!("latest block {height} is missing")))?;
            if block.header.state_root != state_hash.root() {
                return Err(ChainError::Corrupt(format!(
                    "state hash does not match block {height}'s state root"
                )));
            }
            block.hash()
        };
        Ok(Chain {
            store,
            chain_id: genesis.chain_id.clone(),
            genesis_hash,
            state_hash,
            height,
            last_hash,
            accounts: FastMap::default(),
        })
    }

    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }

    pub fn genesis_hash(&self) -> Digest {
        self.genesis_hash
    }

    pub fn height(&self) -> u64 {
        self.height
    }

    pub fn last_hash(&self) -> Digest {
        self.last_hash
    }

    pub fn state_root(&self) -> Digest {
        self.state_hash.root()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Executes the batch committed at `height` (which must be the next height) and writes
    /// the block with all its effects in one atomic write.
    pub fn apply(
        &mut self,
        height: u64,
        txs: Vec<Vec<u8>>,
        checked: &[CheckedTx],
        certificate: Option<CommitCertificate>,
        sync: bool,
    ) -> Result<Applied, ChainError> {
        self.apply_ordered(height, txs, checked, certificate, None, sync)
    }

    /// [`Chain::apply`] for a block that orders data batches: its `batch_digest` is the
    /// consensus digest of the batch headers, and each executed batch is indexed (under
    /// [`executed_batch_key`]) so that a batch ordered again later is skipped.
    pub fn apply_ordered(
        &mut self,
        height: u64,
        txs: Vec<Vec<u8>>,
        checked: &[CheckedTx],
        certificate: Option<CommitCertificate>,
        ordered: Option<BatchesOrdered>,
        sync: bool,
    ) -> Result<Applied, ChainError> {
        if height != self.height + 1 {
            return Err(ChainError::OutOfOrder {
                height: self.height,
                got: height,
            });
        }
        assert_eq!(txs.len(), checked.len(), "one check per transaction");
        let view = CachedView {
            store: StoreView(&*self.store),
            accounts: &self.accounts,
        };
        let executed = execute_batch(&view, &self.state_hash, height, checked)?;
        let (digest, batches) = match ordered {
            Some(o) => (o.digest, o.batches),
            None => (batch_digest(&executed.tx_hashes), Vec::new()),
        };
        let header = BlockHeader {
            height,
            prev_hash: self.last_hash,
            batch_digest: digest,
            state_root: executed.state_root,
        };
        let mut tx_index: Vec<(Digest, Vec<u8>)> = executed
            .index_writes
            .iter()
            .map(|(h, l)| (*h, l.encode().to_vec()))
            .collect();
        for (i, b) in batches.iter().enumerate().filter(|(_, b)| b.executed) {
            let location = TxLocation {
                height,
                index: i as u32,
                code: 0,
            };
            tx_index.push((
                executed_batch_key(&b.header.digest()),
                location.encode().to_vec(),
            ));
        }
        let block = StoredBlock {
            header,
            txs,
            outcomes: executed.outcomes,
            certificate,
            batches,
        };
        self.store.commit_block(BlockCommit {
            height,
            block: block.encode(),
            tx_index,
            state: executed.state_writes,
            meta: vec![(META_STATE_HASH.to_vec(), executed.state_hash.to_bytes())],
            sync,
        })?;
        self.height = height;
        self.last_hash = block.hash();
        self.state_hash = executed.state_hash;
        // Only now that the block is stored does the cache take its values.
        if self.accounts.len() + executed.touched_accounts.len() > ACCOUNT_CACHE_MAX {
            self.accounts.clear();
        }
        for (who, account) in &executed.touched_accounts {
            let value = (!account.is_default()).then_some(*account);
            self.accounts.insert(*who, value);
        }
        Ok(Applied {
            block,
            touched: executed.touched_accounts,
        })
    }

    /// Replaces the chain's state with a verified one (a repair): `install` carries the
    /// whole state at `install.height`, whose block is `head` (already written or among
    /// `install.blocks`), and `state_hash` its lattice hash. One atomic write; the caches go.
    pub fn install(
        &mut self,
        mut install: StateInstall,
        head: &StoredBlock,
        state_hash: LtHash,
    ) -> Result<(), ChainError> {
        if head.header.height != install.height || head.header.state_root != state_hash.root() {
            return Err(ChainError::Corrupt(
                "the installed state does not match its block".into(),
            ));
        }
        install
            .meta
            .push((META_STATE_HASH.to_vec(), state_hash.to_bytes()));
        self.store.install_state(install)?;
        self.height = head.header.height;
        self.last_hash = head.hash();
        self.state_hash = state_hash;
        self.accounts.clear();
        Ok(())
    }

    pub fn block(&self, height: u64) -> Result<Option<StoredBlock>, ChainError> {
        Self::read_block(&*self.store, height)
    }

    fn read_block(store: &dyn Store, height: u64) -> Result<Option<StoredBlock>, ChainError> {
        match store.block(height)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(StoredBlock::decode(&bytes)?)),
        }
    }

    pub fn account(&self, who: &PublicKey) -> Result<Account, ChainError> {
        Ok(StoreView(&*self.store).account(who)?.unwrap_or_default())
    }

    /// Whether the batch with this header digest was executed in a block already.
    pub fn batch_executed(&self, header_digest: &Digest) -> Result<bool, ChainError> {
        Ok(self
            .tx_location(&executed_batch_key(header_digest))?
            .is_some())
    }

    pub fn tx_location(&self, hash: &Digest) -> Result<Option<TxLocation>, ChainError> {
        Ok(StoreView(&*self.store).tx_location(hash)?)
    }

    /// Recomputes the state root from every stored entry (cost: the whole state). For
    /// checks and tests; the running root is [`Chain::state_root`].
    pub fn recompute_state_root(&self) -> Result<Digest, ChainError> {
        let mut hash = LtHash::zero();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.state_scan(after.as_deref(), 4096)?;
            let Some(last) = page.last() else { break };
            after = Some(last.0.clone());
            for (k, v) in &page {
                hash.add(k, v);
            }
        }
        Ok(hash.root())
    }
}
