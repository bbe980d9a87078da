//! Tally's storage: one [`Store`] trait, two backends.
//!
//! * [`RocksStore`]: RocksDB with column families `blocks`, `tx_index`, `state`, `consensus`,
//!   `evidence`, `batches` (data batches not yet in a block) and `meta`. A block and all its effects land in one atomic `WriteBatch`
//!   ([`Store::commit_block`]); consensus records can be written synced
//!   ([`Store::write_consensus`]); a repaired state replaces the old one in one write
//!   ([`Store::install_state`]); [`Store::snapshot`] is a consistent view of the state to
//!   serve to a peer repairing its own.
//! * [`MemStore`]: the same contract in memory, for tests and the simulator.
//!
//! Both pass one shared test suite (`tests/suite.rs`).
//!
//! The store knows nothing of ledger types: blocks, index entries and state entries are
//! bytes, encoded by the node. What it guarantees is atomicity and order: `commit_block(h)`
//! only follows `h − 1`, and after a crash either all of a block's writes are present or
//! none.
//!
//! ```
//! use tally_storage::{BlockCommit, MemStore, Store};
//!
//! let store = MemStore::new();
//! store.commit_block(BlockCommit {
//!     height: 1,
//!     block: b"block one".to_vec(),
//!     tx_index: vec![],
//!     state: vec![(b"k".to_vec(), Some(b"v".to_vec()))],
//!     meta: vec![],
//!     sync: false,
//! }).unwrap();
//! assert_eq!(store.latest_height().unwrap(), 1);
//! assert_eq!(store.state_get(b"k").unwrap(), Some(b"v".to_vec()));
//! ```

mod mem;
mod rocks;

pub use mem::MemStore;
pub use rocks::RocksStore;

/// Column-family-free ordering helper: `[start, end)` contains `key`.
pub(crate) fn in_range(key: &[u8], range: &(Vec<u8>, Vec<u8>)) -> bool {
    key >= range.0.as_slice() && key < range.1.as_slice()
}
use tally_crypto::Digest;

/// Meta key under which [`Store::commit_block`] records the height of the latest block.
pub const META_LATEST_HEIGHT: &[u8] = b"latest_height";
/// Meta key that [`Store::initialize`] writes; its presence means "initialised".
pub const META_INITIALIZED: &[u8] = b"initialized";

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);
/// A key and its new value: `Some` puts, `None` deletes.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// One block and everything it changes, written atomically.
#[derive(Clone, Debug, Default)]
pub struct BlockCommit {
    pub height: u64,
    pub block: Vec<u8>,
    pub tx_index: Vec<(Digest, Vec<u8>)>,
    /// State entries to put (`Some`) or delete (`None`).
    pub state: Vec<Write>,
    /// Extra meta entries (e.g. the state hash) written in the same batch.
    pub meta: Vec<Entry>,
    /// fsync the write-ahead log before returning.
    pub sync: bool,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(String),
    #[error("blocks must be committed in order: expected height {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("the database was already initialised")]
    AlreadyInitialized,
    #[error("corrupt database: {0}")]
    Corrupt(String),
}

/// A state installed whole, replacing the chain's state and its blocks above a height
/// ([`Store::install_state`]).
#[derive(Clone, Debug, Default)]
pub struct StateInstall {
    /// The chain's height once installed; blocks above it are deleted.
    pub height: u64,
    /// Every state entry at `height`.
    pub state: Vec<Entry>,
    /// Blocks written (replacing those at the same heights), all at or below `height`.
    pub blocks: Vec<(u64, Vec<u8>)>,
    /// Index entries deleted, then written.
    pub tx_index_delete: Vec<Digest>,
    pub tx_index_put: Vec<(Digest, Vec<u8>)>,
    /// Meta entries written (e.g. the state hash).
    pub meta: Vec<Entry>,
}

/// A consistent, read-only view of the state as of when it was taken.
pub trait StateSnapshot: Send + Sync {
    /// The chain's height in this view.
    fn latest_height(&self) -> Result<u64, StorageError>;
    /// As [`Store::state_scan`], in this view.
    fn state_scan(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StorageError>;
}

/// The storage contract shared by both backends.
pub trait Store: Send + Sync {
    /// Writes a block, its index and state changes and `meta`, all or nothing. `height` must
    /// be exactly one above [`Store::latest_height`].
    fn commit_block(&self, commit: BlockCommit) -> Result<(), StorageError>;

    /// The height of the latest committed block; 0 before the first.
    fn latest_height(&self) -> Result<u64, StorageError>;

    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StorageError>;

    fn tx_index(&self, hash: &Digest) -> Result<Option<Vec<u8>>, StorageError>;

    fn state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` state entries with keys strictly after `after` (from the start when
    /// `None`), in key order.
    fn state_scan(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StorageError>;

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Writes the genesis state and meta entries atomically, once: fails with
    /// [`StorageError::AlreadyInitialized`] if the store was initialised before.
    fn initialize(&self, state: Vec<Entry>, meta: Vec<Entry>) -> Result<(), StorageError>;

    /// Writes meta entries outside a block (e.g. the genesis hash at initialisation).
    fn meta_put(&self, entries: &[Entry], sync: bool) -> Result<(), StorageError>;

    /// Writes consensus records (puts and deletes) and deletes the key ranges `[start, end)`
    /// of `delete_ranges`, atomically (ranges first); with `sync`, durable on return.
    fn write_consensus(
        &self,
        writes: &[Write],
        delete_ranges: &[(Vec<u8>, Vec<u8>)],
        sync: bool,
    ) -> Result<(), StorageError>;

    fn consensus_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Every consensus record whose key starts with `prefix`, in key order.
    fn consensus_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StorageError>;

    /// Stores a piece of evidence under `key` (synced).
    fn evidence_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError>;

    /// Every piece of evidence, in key order.
    fn evidence_scan(&self) -> Result<Vec<Entry>, StorageError>;

    /// Stores data batches (key: the batch's header digest; value: its encoding); with
    /// `sync`, durable on return. A validator attests a batch only after it is durable here.
    fn batches_put(&self, entries: &[Entry], sync: bool) -> Result<(), StorageError>;

    /// Makes every write made so far durable, however it was made (RocksDB: syncs the
    /// write-ahead log). Lets a caller write unsynced on a latency-sensitive thread and pay
    /// for durability elsewhere, once for all the writes made meanwhile.
    fn sync_writes(&self) -> Result<(), StorageError>;

    fn batch_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Removes stored batches (those now in blocks, or that can no longer be ordered).
    /// Keys not present are ignored.
    fn batches_delete(&self, keys: &[Vec<u8>]) -> Result<(), StorageError>;

    /// Every stored batch, in key order (read once, at start-up).
    fn batches_scan(&self) -> Result<Vec<Entry>, StorageError>;

    /// A consistent view of the state and the chain height as of now; later writes do not
    /// show in it.
    fn snapshot(&self) -> Box<dyn StateSnapshot + '_>;

    /// Replaces the whole state, and the blocks above `install.height`, in one synced write:
    /// after a crash either the old chain or the installed one is there, never a mix.
    fn install_state(&self, install: StateInstall) -> Result<(), StorageError>;

    /// Approximate bytes on disk (or in memory).
    fn size_bytes(&self) -> u64;

    /// Memory the storage engine holds, by part (RocksDB's memtables, block caches and table
    /// readers); nothing for a store that is all memory.
    fn memory_usage(&self) -> MemoryUsage {
        MemoryUsage::default()
    }
}

/// Memory a storage engine holds, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    pub memtables: u64,
    pub block_cache: u64,
    pub table_readers: u64,
}

pub(crate) fn decode_height(bytes: &[u8]) -> Result<u64, StorageError> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt("latest_height is not 8 bytes".into()))?;
    Ok(u64::from_le_bytes(b))
}
