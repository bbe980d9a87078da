//! Cutting batches from the transactions this validator admitted: by count, by bytes, or
//! when the oldest has waited long enough. Sans-IO: the caller passes the time.
//!
//! **Batch numbers are never reused**, across restarts too: an attester signs one batch per
//! `(author, index)`, so an author that reused a number after a crash could not get its new
//! batch attested. The maker hands out numbers below a reserved mark that the caller stores
//! (synced) before streaming any batch numbered at or above the previous mark; at start-up
//! it resumes from the stored mark. A crash therefore skips at most [`RESERVE`] numbers and
//! costs one synced write per [`RESERVE`] batches. A validator without a stored mark (a new
//! or wiped data folder) starts at the wall clock in microseconds (`batches::service`), so a
//! wiped validator does not reuse the numbers its peers saw before.

use tally_consensus::availability::{BATCH_BYTES_MAX, BATCH_TXS_MAX};
use tally_consensus::{Millis, ValidatorId};

use super::body::TxBatch;

/// Batch numbers reserved per synced write.
pub const RESERVE: u64 = 1024;

/// When a batch is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutRule {
    pub max_txs: usize,
    pub max_bytes: usize,
    /// The oldest transaction waits at most this long.
    pub max_delay_ms: Millis,
}

impl Default for CutRule {
    /// 256 KiB or 1,024 transactions or 5 ms: at 512-byte transactions a batch per ≈ 500
    /// transactions, so the per-batch costs (a stream frame, a RocksDB write, f + 1
    /// attestations, ≈ 100 bytes in a proposal) are spread over hundreds of transactions
    /// while an idle network adds at most 5 ms.
    fn default() -> CutRule {
        CutRule {
            max_txs: 1024,
            max_bytes: 256 * 1024,
            max_delay_ms: 5,
        }
    }
}

/// A batch to store, stream and have attested. When `reserve` is set, store it (synced) as
/// the next start-up's first batch number before streaming the batch.
#[derive(Debug)]
pub struct Cut {
    pub batch: TxBatch,
    pub reserve: Option<u64>,
}

pub struct BatchMaker {
    author: ValidatorId,
    rule: CutRule,
    next_index: u64,
    reserved_until: u64,
    txs: Vec<Vec<u8>>,
    bytes: usize,
    oldest: Millis,
}

impl BatchMaker {
    /// `stored_mark`: the mark stored by the last [`Cut::reserve`] (0 on a new node).
    pub fn new(author: ValidatorId, rule: CutRule, stored_mark: u64) -> BatchMaker {
        assert!(
            rule.max_txs >= 1
                && rule.max_txs <= BATCH_TXS_MAX as usize
                && rule.max_bytes <= BATCH_BYTES_MAX as usize,
            "cut rule beyond the batch limits"
        );
        BatchMaker {
            author,
            rule,
            next_index: stored_mark,
            reserved_until: stored_mark,
            txs: Vec::new(),
            bytes: 0,
            oldest: 0,
        }
    }

    /// Adds an admitted transaction; returns a batch when this one filled it (or when it
    /// would not fit the current one, which is then cut first).
    pub fn push(&mut self, tx: Vec<u8>, now: Millis) -> Option<Cut> {
        let cut = if !self.txs.is_empty() && self.bytes + tx.len() > self.rule.max_bytes {
            self.cut()
        } else {
            None
        };
        if self.txs.is_empty() {
            self.oldest = now;
        }
        self.bytes += tx.len();
        self.txs.push(tx);
        if cut.is_none()
            && (self.txs.len() >= self.rule.max_txs || self.bytes >= self.rule.max_bytes)
        {
            return self.cut();
        }
        cut
    }

    /// Cuts the waiting transactions when the oldest has waited `max_delay_ms`.
    pub fn tick(&mut self, now: Millis) -> Option<Cut> {
        if !self.txs.is_empty() && now.saturating_sub(self.oldest) >= self.rule.max_delay_ms {
            self.cut()
        } else {
            None
        }
    }

    /// Makes a batch of `txs` now (cut by the caller, e.g. from the mempool in nonce order),
    /// numbered like every other.
    pub fn number(&mut self, txs: Vec<Vec<u8>>) -> Cut {
        debug_assert!(self.txs.is_empty(), "use either push/tick or number");
        self.txs = txs;
        self.cut().expect("a batch of at least one transaction")
    }

    /// Transactions waiting for the next cut.
    pub fn waiting(&self) -> usize {
        self.txs.len()
    }

    fn cut(&mut self) -> Option<Cut> {
        if self.txs.is_empty() {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        let reserve = (index >= self.reserved_until).then(|| {
            self.reserved_until = index + RESERVE;
            self.reserved_until
        });
        self.bytes = 0;
        Some(Cut {
            batch: TxBatch::new(self.author, index, std::mem::take(&mut self.txs)),
            reserve,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(len: usize) -> Vec<u8> {
        vec![1; len]
    }

    const RULE: CutRule = CutRule {
        max_txs: 3,
        max_bytes: 1000,
        max_delay_ms: 5,
    };

    #[test]
    fn cut_by_count_bytes_and_time() {
        let mut m = BatchMaker::new(ValidatorId(2), RULE, 0);
        assert!(m.push(tx(200), 0).is_none());
        assert!(m.push(tx(200), 1).is_none());
        let c = m.push(tx(200), 2).expect("three transactions");
        assert_eq!(c.batch.header().tx_count, 3);
        assert_eq!(c.batch.header().author, ValidatorId(2));
        // 600 + 500 would pass 1,000 bytes: the first is cut alone.
        assert!(m.push(tx(600), 10).is_none());
        let c = m.push(tx(500), 11).expect("would not fit");
        assert_eq!(c.batch.header().bytes, 600);
        assert_eq!(m.waiting(), 1);
        // The 500-byte one waits from 11: cut at 16, not before.
        assert!(m.tick(15).is_none());
        let c = m.tick(16).expect("waited 5 ms");
        assert_eq!(c.batch.header().bytes, 500);
        assert!(m.tick(100).is_none(), "nothing waiting");
        assert_eq!(c.batch.header().index, 2, "the third batch cut");
    }

    #[test]
    fn numbers_are_reserved_before_use_and_resume_after_a_restart() {
        let mut m = BatchMaker::new(ValidatorId(0), RULE, 0);
        let mut stored = 0;
        let mut used = Vec::new();
        for i in 0..(RESERVE + 5) {
            let c = m.tick_after_push(i);
            if let Some(mark) = c.reserve {
                // The reservation covers the batch that carries it.
                assert!(c.batch.header().index < mark);
                stored = mark;
            }
            assert!(
                c.batch.header().index < stored,
                "streamed only below the stored mark"
            );
            used.push(c.batch.header().index);
        }
        assert_eq!(used, (0..RESERVE + 5).collect::<Vec<_>>());
        assert_eq!(stored, 2 * RESERVE);
        // Restart: numbers continue above everything that may have been streamed.
        let mut m = BatchMaker::new(ValidatorId(0), RULE, stored);
        let c = m.tick_after_push(0);
        assert_eq!(c.batch.header().index, 2 * RESERVE);
        assert_eq!(c.reserve, Some(3 * RESERVE));
    }

    impl BatchMaker {
        fn tick_after_push(&mut self, now: Millis) -> Cut {
            assert!(self.push(tx(200), now).is_none());
            self.tick(now + 5).expect("cut")
        }
    }
}
