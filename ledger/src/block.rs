//! Block headers and batch digests.

use serde::{Deserialize, Serialize};
use tally_crypto::Digest;

/// A block header. Consensus orders batches at sequence numbers; the ledger chains one block
/// per committed sequence number (a null batch gives an empty block), so `height` equals the
/// consensus sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub height: u64,
    /// The previous block's hash; for block 1, the genesis hash.
    pub prev_hash: Digest,
    /// [`batch_digest`] of the block's transactions.
    pub batch_digest: Digest,
    /// The state root after executing the block.
    pub state_root: Digest,
}

impl BlockHeader {
    /// `SHA-256(height u64 LE ‖ batch_digest ‖ prev_hash ‖ state_root)`.
    pub fn hash(&self) -> Digest {
        let mut h = Digest::hasher();
        h.update(&self.height.to_le_bytes())
            .update(&self.batch_digest.0)
            .update(&self.prev_hash.0)
            .update(&self.state_root.0);
        h.finalize()
    }
}

/// The digest of a batch: `SHA-256(count u32 LE ‖ tx_hash_1 ‖ … ‖ tx_hash_n)`, where each
/// transaction hash is SHA-256 of its encoding. Over hashes rather than bodies, so a
/// proposal can name a batch by its transactions' hashes.
pub fn batch_digest(tx_hashes: &[Digest]) -> Digest {
    let mut h = Digest::hasher();
    h.update(&(tx_hashes.len() as u32).to_le_bytes());
    for tx in tx_hashes {
        h.update(&tx.0);
    }
    h.finalize()
}
