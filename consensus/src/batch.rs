//! Batches: what consensus orders. A batch names its transactions by hash; the bodies travel
//! separately (gossip), so a proposal stays small.

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::Digest;

/// The most transactions one batch may name.
pub const BATCH_TXS_MAX: usize = 65_536;

/// An ordered list of transaction hashes. The empty batch is PBFT's "null request".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Batch {
    pub txs: Vec<Digest>,
}

impl Batch {
    pub fn null() -> Batch {
        Batch::default()
    }

    pub fn is_null(&self) -> bool {
        self.txs.is_empty()
    }

    /// [`batch_digest`] of the transactions.
    pub fn digest(&self) -> Digest {
        batch_digest(&self.txs)
    }
}

/// `SHA-256(count u32 LE ‖ tx_hash_1 ‖ … ‖ tx_hash_n)` (`docs/transactions.md`).
pub fn batch_digest(tx_hashes: &[Digest]) -> Digest {
    let mut h = Digest::hasher();
    h.update(&(tx_hashes.len() as u32).to_le_bytes());
    for tx in tx_hashes {
        h.update(&tx.0);
    }
    h.finalize()
}
