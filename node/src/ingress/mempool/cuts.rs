//! Batch mode: the queue of transactions that can be cut into data batches now, and the
//! mempool's operations on it.

use std::collections::VecDeque;
use std::time::Instant;

use tally_crypto::{Digest, PublicKey};

use super::{CutState, Mempool};
use crate::FastMap;

/// What a validator that cuts data batches keeps, so that a cut costs the transactions it
/// takes and not the pool's size: the transactions that can be cut now (every lower nonce of
/// their sender committed or already cut), in the order they became so, and per sender the
/// next nonce to join that queue. A transaction behind a nonce gap joins when the gap fills
/// (or a block moves the sender's nonce past it).
#[derive(Default)]
pub(super) struct Cuts {
    pub(super) ready: VecDeque<Digest>,
    pub(super) ready_bytes: usize,
    pub(super) next: FastMap<PublicKey, u64>,
    /// Transactions cut into batches and not yet committed (or made stale).
    pub(super) cut: usize,
}

impl Mempool {
    /// Batch mode: moves `sender`'s transactions that can now be cut into the cut queue.
    pub(super) fn advance_cuts(&mut self, sender: &PublicKey) {
        let Some(cuts) = self.cuts.as_mut() else {
            return;
        };
        let committed = self.nonces.get(sender).copied().unwrap_or(0);
        let mut next = cuts.next.get(sender).copied().unwrap_or(0).max(committed);
        if let Some(m) = self.by_sender.get(sender) {
            for (n, h) in m.range(next..) {
                if *n != next {
                    break;
                }
                if let Some(e) = self.txs.get_mut(h) {
                    e.cut = CutState::Ready;
                    cuts.ready.push_back(*h);
                    cuts.ready_bytes += e.len;
                }
                next += 1;
            }
        }
        if next > committed {
            cuts.next.insert(*sender, next);
        } else {
            cuts.next.remove(sender);
        }
    }

    /// Batch mode: transactions cut into batches and not yet committed.
    pub fn cut_uncommitted(&self) -> usize {
        self.cuts.as_ref().map_or(0, |c| c.cut)
    }

    /// Batch mode: when the oldest transaction that can be cut now arrived, and the bytes of
    /// all such transactions.
    pub fn cuttable(&mut self) -> Option<(Instant, usize)> {
        let cuts = self.cuts.as_mut()?;
        while let Some(h) = cuts.ready.front() {
            match self.txs.get(h) {
                Some(e) if e.cut == CutState::Ready => {
                    return Some((e.arrived, cuts.ready_bytes));
                }
                _ => {
                    cuts.ready.pop_front();
                }
            }
        }
        None
    }

    /// Batch mode: cuts up to `max_bytes` and `max_txs` of the transactions that can be cut,
    /// in the order they became cuttable (each sender's in nonce order, without gaps), and
    /// marks them proposed: they are not cut again (a batch, once made, is the only way they
    /// are ordered).
    pub fn take_for_batch(
        &mut self,
        max_bytes: usize,
        max_txs: usize,
        now: Instant,
    ) -> Vec<Digest> {
        let mut taken = Vec::new();
        let Some(cuts) = self.cuts.as_mut() else {
            return taken;
        };
        let mut bytes = 0;
        while taken.len() < max_txs {
            let Some(h) = cuts.ready.front().copied() else {
                break;
            };
            let Some(e) = self.txs.get_mut(&h) else {
                cuts.ready.pop_front();
                continue;
            };
            if e.cut != CutState::Ready {
                cuts.ready.pop_front();
                continue;
            }
            if bytes + e.len > max_bytes && !taken.is_empty() {
                break;
            }
            cuts.ready.pop_front();
            cuts.ready_bytes -= e.len;
            cuts.cut += 1;
            e.cut = CutState::Cut;
            e.proposed_at = Some(now);
            bytes += e.len;
            taken.push(h);
        }
        taken
    }
}
