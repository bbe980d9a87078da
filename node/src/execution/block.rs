//! Blocks as stored and served: header, transactions, their outcomes, and the commit
//! certificate.

use tally_consensus::{BatchHeader, CommitCertificate, batch_digest};
use tally_crypto::Digest;
use tally_ledger::{BlockHeader, TxOutcome};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    pub header: BlockHeader,
    pub txs: Vec<Vec<u8>>,
    pub outcomes: Vec<TxOutcome>,
    /// `None` only for blocks made outside consensus (tests, tools).
    pub certificate: Option<CommitCertificate>,
    /// With `payload: batches`: the data batches consensus ordered at this height, in order
    /// (their header digests make the block's `batch_digest`); `txs` holds the transactions
    /// of the executed ones, batch after batch. Empty with `payload: transactions`.
    pub batches: Vec<BlockBatch>,
}

/// A data batch ordered in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockBatch {
    pub header: BatchHeader,
    /// False when the batch was already executed in an earlier block (a primary ordered it
    /// twice): its transactions are not in this block.
    pub executed: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stored block is corrupt: {0}")]
pub struct BlockDecodeError(pub String);

impl StoredBlock {
    pub fn hash(&self) -> Digest {
        self.header.hash()
    }

    /// The digest consensus ordered for this block, recomputed from its contents: with
    /// data batches, each executed batch's transactions must match its header (count,
    /// bytes, digest of their hashes) and the digest is that of the headers' digests;
    /// without, the digest of the transactions' hashes.
    pub fn ordered_digest(&self) -> Result<Digest, BlockDecodeError> {
        if self.batches.is_empty() {
            let hashes: Vec<Digest> = self.txs.iter().map(|t| Digest::of(t)).collect();
            return Ok(batch_digest(&hashes));
        }
        let mut rest = self.txs.as_slice();
        for b in self.batches.iter().filter(|b| b.executed) {
            let n = b.header.tx_count as usize;
            if rest.len() < n {
                return Err(BlockDecodeError(
                    "fewer transactions than its batches".into(),
                ));
            }
            let (mine, after) = rest.split_at(n);
            rest = after;
            let hashes: Vec<Digest> = mine.iter().map(|t| Digest::of(t)).collect();
            let bytes: usize = mine.iter().map(Vec::len).sum();
            if batch_digest(&hashes) != b.header.tx_digest || bytes != b.header.bytes as usize {
                return Err(BlockDecodeError(format!(
                    "transactions do not match batch {} of validator {}",
                    b.header.index, b.header.author
                )));
            }
        }
        if !rest.is_empty() {
            return Err(BlockDecodeError(
                "more transactions than its batches".into(),
            ));
        }
        let headers: Vec<Digest> = self.batches.iter().map(|b| b.header.digest()).collect();
        Ok(batch_digest(&headers))
    }

    /// `height u64 ‖ prev_hash ‖ batch_digest ‖ state_root ‖ count u32 ‖ (len u32 ‖ tx)* ‖
    /// outcome(17)* ‖ cert_len u32 ‖ cert [‖ batch_count u32 ‖ (header(50) ‖ executed u8)*]`,
    /// integers little-endian; `cert_len` 0 means none; the batch section only when the
    /// block orders data batches.
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self.txs.iter().map(|t| t.len() + 4 + 17).sum();
        let mut out = Vec::with_capacity(112 + body + 400);
        let h = &self.header;
        out.extend_from_slice(&h.height.to_le_bytes());
        out.extend_from_slice(&h.prev_hash.0);
        out.extend_from_slice(&h.batch_digest.0);
        out.extend_from_slice(&h.state_root.0);
        out.extend_from_slice(&(self.txs.len() as u32).to_le_bytes());
        for tx in &self.txs {
            out.extend_from_slice(&(tx.len() as u32).to_le_bytes());
            out.extend_from_slice(tx);
        }
        for o in &self.outcomes {
            out.extend_from_slice(&o.encode());
        }
        let cert = self
            .certificate
            .as_ref()
            .map(|c| c.encode())
            .unwrap_or_default();
        out.extend_from_slice(&(cert.len() as u32).to_le_bytes());
        out.extend_from_slice(&cert);
        if !self.batches.is_empty() {
            out.extend_from_slice(&(self.batches.len() as u32).to_le_bytes());
            for b in &self.batches {
                out.extend_from_slice(&b.header.encode());
                out.push(u8::from(b.executed));
            }
        }
        out
    }

    /// The header alone (the first 104 bytes), without reading the transactions.
    pub fn decode_header(bytes: &[u8]) -> Result<BlockHeader, BlockDecodeError> {
        if bytes.len() < 104 {
            return Err(BlockDecodeError("truncated header".into()));
        }
        let digest = |b: &[u8]| Digest(b.try_into().expect("32 bytes"));
        Ok(BlockHeader {
            height: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            prev_hash: digest(&bytes[8..40]),
            batch_digest: digest(&bytes[40..72]),
            state_root: digest(&bytes[72..104]),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredBlock, BlockDecodeError> {
        let pos = std::cell::Cell::new(0usize);
        let take = |n: usize| -> Result<&[u8], BlockDecodeError> {
            let at = pos.get();
            let end = at
                .checked_add(n)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| BlockDecodeError(format!("truncated at byte {at}")))?;
            pos.set(end);
            Ok(&bytes[at..end])
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let digest = |b: &[u8]| Digest(b.try_into().expect("32 bytes"));
        let height = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let prev_hash = digest(take(32)?);
        let batch_digest = digest(take(32)?);
        let state_root = digest(take(32)?);
        let count = u32_of(take(4)?);
        let mut txs = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let len = u32_of(take(4)?);
            txs.push(take(len)?.to_vec());
        }
        let mut outcomes = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let raw: &[u8; 17] = take(17)?.try_into().expect("17 bytes");
            outcomes.push(
                TxOutcome::decode(raw).ok_or_else(|| BlockDecodeError("bad outcome".into()))?,
            );
        }
        let cert_len = u32_of(take(4)?);
        let cert = take(cert_len)?;
        let certificate = if cert_len == 0 {
            None
        } else {
            Some(CommitCertificate::decode(cert).map_err(|e| BlockDecodeError(e.to_string()))?)
        };
        let mut batches = Vec::new();
        if pos.get() != bytes.len() {
            let count = u32_of(take(4)?);
            if count == 0 {
                return Err(BlockDecodeError("empty batch section".into()));
            }
            for _ in 0..count {
                let raw = take(51)?;
                let executed = match raw[50] {
                    0 => false,
                    1 => true,
                    _ => return Err(BlockDecodeError("bad batch flag".into())),
                };
                batches.push(BlockBatch {
                    header: BatchHeader::decode(&raw[..50])
                        .ok_or_else(|| BlockDecodeError("bad batch header".into()))?,
                    executed,
                });
            }
        }
        if pos.get() != bytes.len() {
            return Err(BlockDecodeError("trailing bytes".into()));
        }
        Ok(StoredBlock {
            header: BlockHeader {
                height,
                prev_hash,
                batch_digest,
                state_root,
            },
            txs,
            outcomes,
            certificate,
            batches,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_consensus::ValidatorId;

    fn header_of(author: u16, index: u64, txs: &[Vec<u8>]) -> BatchHeader {
        let hashes: Vec<Digest> = txs.iter().map(|t| Digest::of(t)).collect();
        BatchHeader {
            author: ValidatorId(author),
            index,
            tx_count: txs.len() as u32,
            bytes: txs.iter().map(Vec::len).sum::<usize>() as u32,
            tx_digest: batch_digest(&hashes),
        }
    }

    fn block(txs: Vec<Vec<u8>>, batches: Vec<BlockBatch>) -> StoredBlock {
        StoredBlock {
            header: BlockHeader {
                height: 3,
                prev_hash: Digest([1; 32]),
                batch_digest: Digest([2; 32]),
                state_root: Digest([3; 32]),
            },
            outcomes: vec![TxOutcome::Ok; txs.len()],
            txs,
            certificate: None,
            batches,
        }
    }

    #[test]
    fn batches_round_trip_and_make_the_ordered_digest() {
        let a = vec![vec![1u8; 120], vec![2u8; 130]];
        let b = vec![vec![3u8; 140]];
        let (ha, hb) = (header_of(0, 4, &a), header_of(2, 9, &b));
        // `hb` ordered again: not executed, its transactions not in the block.
        let batches = vec![
            BlockBatch {
                header: ha,
                executed: true,
            },
            BlockBatch {
                header: hb,
                executed: false,
            },
        ];
        let blk = block(a.clone(), batches.clone());
        let decoded = StoredBlock::decode(&blk.encode()).expect("decodes");
        assert_eq!(decoded, blk);
        assert_eq!(
            blk.ordered_digest().unwrap(),
            batch_digest(&[ha.digest(), hb.digest()]),
            "the digest of the headers, executed or not"
        );
        // Transactions that do not match their batch's header are refused.
        let mut lying = blk.clone();
        lying.txs[1][0] ^= 1;
        assert!(lying.ordered_digest().is_err());
        let mut short = blk.clone();
        short.txs.pop();
        assert!(short.ordered_digest().is_err());
        let mut extra = blk;
        extra.txs.push(b[0].clone());
        assert!(extra.ordered_digest().is_err());
        // Without batches the encoding is the transactions-only one, digest of tx hashes.
        let plain = block(b.clone(), Vec::new());
        assert_eq!(StoredBlock::decode(&plain.encode()).unwrap(), plain);
        assert_eq!(
            plain.ordered_digest().unwrap(),
            batch_digest(&[Digest::of(&b[0])])
        );
    }

    #[test]
    fn a_bad_batch_section_is_refused() {
        let a = vec![vec![1u8; 120]];
        let blk = block(
            a.clone(),
            vec![BlockBatch {
                header: header_of(1, 0, &a),
                executed: true,
            }],
        );
        let mut bytes = blk.encode();
        let last = bytes.len() - 1;
        bytes[last] = 7;
        assert!(StoredBlock::decode(&bytes).is_err(), "flag must be 0 or 1");
        let mut truncated = blk.encode();
        truncated.pop();
        assert!(StoredBlock::decode(&truncated).is_err());
        let mut empty = block(a, Vec::new()).encode();
        empty.extend_from_slice(&0u32.to_le_bytes());
        assert!(
            StoredBlock::decode(&empty).is_err(),
            "an empty batch section"
        );
    }
}
