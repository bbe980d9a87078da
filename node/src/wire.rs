//! What nodes send each other besides consensus messages (borsh-encoded).

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::Digest;

/// Gossiped transactions: the node that admitted them bundles a few milliseconds' worth.
#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub struct TxBundle {
    pub txs: Vec<Vec<u8>>,
}

/// The most blocks one sync response carries, and transactions one body request asks for.
pub const SYNC_BLOCKS_MAX: u32 = 64;
pub const SYNC_TXS_MAX: usize = 8192;

#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub enum SyncRequest {
    /// Height and latest hash.
    Status,
    /// Stored blocks (with their certificates) from `from`, at most `max`.
    Blocks { from: u64, max: u32 },
    /// Transaction bodies by hash (to complete a proposal's batch).
    Txs { hashes: Vec<Digest> },
}

#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub enum SyncResponse {
    Status { height: u64, latest_hash: Digest },
    Blocks(Vec<Vec<u8>>),
    Txs(Vec<Vec<u8>>),
    Error(String),
}

pub fn encode<T: BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).expect("encoding to memory cannot fail")
}

pub fn decode<T: BorshDeserialize>(bytes: &[u8]) -> Option<T> {
    borsh::from_slice(bytes).ok()
}
