//! What nodes send each other besides consensus messages (borsh-encoded).

use borsh::{BorshDeserialize, BorshSerialize};
use tally_consensus::Batch;
use tally_crypto::Digest;

/// Gossiped transactions: the node that admitted them bundles a few milliseconds' worth.
#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub struct TxBundle {
    pub txs: Vec<Vec<u8>>,
}

/// The most blocks one sync response carries, and transactions one body request asks for.
pub const SYNC_BLOCKS_MAX: u32 = 64;
pub const SYNC_TXS_MAX: usize = 8192;
/// The most pending transactions one `Pending` request is answered with, and their bytes.
pub const PENDING_TXS_MAX: usize = 4096;
pub const PENDING_BYTES_MAX: usize = 4 * 1024 * 1024;

#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub enum SyncRequest {
    /// Height and latest hash.
    Status,
    /// Stored blocks (with their certificates) from `from`, at most `max`.
    Blocks { from: u64, max: u32 },
    /// Transaction bodies by hash (to complete a proposal's batch).
    Txs { hashes: Vec<Digest> },
    /// Up to `max` of the peer's oldest orderable pending transactions (answered with
    /// `Txs`). A primary asks when its own pool runs low: it can propose only what its pool
    /// holds, and gossip it was too busy or full to take is otherwise lost to it.
    Pending { max: u32 },
    /// The batch (transaction hashes) with `digest` at sequence number `seq`, which a
    /// NEW-VIEW re-proposed (answered with `Payload`).
    Payload { seq: u64, digest: Digest },
    /// The checkpoint heights whose state snapshot the peer holds (answered with
    /// `Snapshots`).
    Snapshots,
    /// State entries of the snapshot at `height` after key `after`, at most `max_bytes`
    /// (answered with `SnapshotPage`).
    SnapshotPage {
        height: u64,
        after: Option<Vec<u8>>,
        max_bytes: u32,
    },
}

#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub enum SyncResponse {
    Status {
        height: u64,
        latest_hash: Digest,
    },
    Blocks(Vec<Vec<u8>>),
    Txs(Vec<Vec<u8>>),
    Payload(Option<Batch>),
    Snapshots(Vec<u64>),
    SnapshotPage {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        done: bool,
    },
    Error(String),
}

pub fn encode<T: BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).expect("encoding to memory cannot fail")
}

pub fn decode<T: BorshDeserialize>(bytes: &[u8]) -> Option<T> {
    borsh::from_slice(bytes).ok()
}
