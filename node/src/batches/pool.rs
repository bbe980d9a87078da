//! The proofs a validator can propose: every batch proof it verified, until the batch is in a
//! block. The primary takes proofs from here for its proposals; a backup marks the proofs a
//! pre-prepare names (so that, as the next primary, it does not propose them again while they
//! are in flight) and releases them when a view change drops that proposal.
//!
//! **Bounds.** At most `per_author` proofs of each author are held (an author whose proofs
//! are not being ordered cannot grow this), and the digests of the latest [`COMMITTED_KEPT`]
//! committed batches are remembered so that a proof arriving after its block is not held
//! again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_consensus::BatchProof;
use tally_crypto::{Digest, Verified};

use crate::{FastMap, FastSet};

/// Committed batch digests remembered (a late copy of their proof is not held again).
pub const COMMITTED_KEPT: usize = 65_536;

struct Entry {
    proof: Arc<Verified<BatchProof>>,
    arrival: u64,
    arrived: Instant,
    /// When a proposal in flight named it.
    proposed: bool,
}

/// Why a proof was not taken into the pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolRefused {
    #[error("author {author} already has {held} proofs waiting to be ordered")]
    AuthorFull { author: u16, held: usize },
}

pub struct ProofPool {
    per_author: usize,
    entries: FastMap<Digest, Entry>,
    /// Arrival order of the entries (arrival number → digest).
    order: BTreeMap<u64, Digest>,
    next_arrival: u64,
    held: Vec<usize>,
    committed: FastSet<Digest>,
    committed_order: VecDeque<Digest>,
}

impl ProofPool {
    pub fn new(validators: usize, per_author: usize) -> ProofPool {
        ProofPool {
            per_author,
            entries: FastMap::default(),
            order: BTreeMap::new(),
            next_arrival: 0,
            held: vec![0; validators],
            committed: FastSet::default(),
            committed_order: VecDeque::new(),
        }
    }

    /// Holds a verified proof. `Ok(false)`: already held, or its batch is committed.
    pub fn insert(
        &mut self,
        proof: Verified<BatchProof>,
        now: Instant,
    ) -> Result<bool, PoolRefused> {
        let digest = proof.header.digest();
        if self.entries.contains_key(&digest) || self.committed.contains(&digest) {
            return Ok(false);
        }
        let author = proof.header.author.0;
        let held = self
            .held
            .get_mut(author as usize)
            .ok_or(PoolRefused::AuthorFull { author, held: 0 })?;
        if *held >= self.per_author {
            return Err(PoolRefused::AuthorFull {
                author,
                held: *held,
            });
        }
        *held += 1;
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.order.insert(arrival, digest);
        self.entries.insert(
            digest,
            Entry {
                proof: Arc::new(proof),
                arrival,
                arrived: now,
                proposed: false,
            },
        );
        Ok(true)
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<Verified<BatchProof>>> {
        self.entries.get(digest).map(|e| e.proof.clone())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.entries.contains_key(digest)
    }

    pub fn is_committed(&self, digest: &Digest) -> bool {
        self.committed.contains(digest)
    }

    /// Proofs held (proposed or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Up to `max` proofs of `author`'s batches, not yet committed, that arrived before
    /// `before`, oldest first.
    pub fn waiting_of(
        &self,
        author: tally_consensus::ValidatorId,
        before: Instant,
        max: usize,
    ) -> Vec<BatchProof> {
        self.order
            .values()
            .filter_map(|d| self.entries.get(d))
            .filter(|e| e.proof.header.author == author && e.arrived < before)
            .take(max)
            .map(|e| BatchProof::clone(&e.proof))
            .collect()
    }

    fn unproposed(&self) -> impl Iterator<Item = &Entry> {
        self.order
            .values()
            .filter_map(|d| self.entries.get(d))
            .filter(|e| !e.proposed)
    }

    /// When the oldest proof no proposal names arrived.
    pub fn oldest_unproposed(&self) -> Option<Instant> {
        self.unproposed().map(|e| e.arrived).next()
    }

    /// Proofs no proposal names, up to `cap`.
    pub fn unproposed_count(&self, cap: usize) -> usize {
        self.unproposed().take(cap).count()
    }

    /// Takes up to `max_entries` proofs no proposal names, oldest first, whose batches hold at
    /// most `max_txs` transactions together, and marks them proposed.
    pub fn take(&mut self, max_entries: usize, max_txs: usize) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut txs = 0usize;
        for e in self.unproposed() {
            let n = e.proof.header.tx_count as usize;
            if out.len() >= max_entries || txs + n > max_txs {
                break;
            }
            txs += n;
            out.push(e.proof.header.digest());
        }
        self.mark_proposed(&out);
        out
    }

    /// A proposal in flight names these batches.
    pub fn mark_proposed(&mut self, digests: &[Digest]) {
        for d in digests {
            if let Some(e) = self.entries.get_mut(d) {
                e.proposed = true;
            }
        }
    }

    /// A view change dropped the old view's proposals: their batches may be proposed again,
    /// except those the new view carried over (`carried`).
    pub fn release_proposed(&mut self, carried: &[Digest]) {
        let carried: FastSet<Digest> = carried.iter().copied().collect();
        for (d, e) in self.entries.iter_mut() {
            if !carried.contains(d) {
                e.proposed = false;
            }
        }
    }

    /// These batches are in a block: forget their proofs, remember that they committed.
    pub fn on_block(&mut self, digests: &[Digest]) {
        for d in digests {
            if let Some(e) = self.entries.remove(d) {
                self.order.remove(&e.arrival);
                if let Some(h) = self.held.get_mut(e.proof.header.author.0 as usize) {
                    *h -= 1;
                }
            }
            if self.committed.insert(*d) {
                self.committed_order.push_back(*d);
                if self.committed_order.len() > COMMITTED_KEPT
                    && let Some(old) = self.committed_order.pop_front()
                {
                    self.committed.remove(&old);
                }
            }
        }
    }

    /// The oldest proof's age, for the metrics.
    pub fn oldest_age(&self, now: Instant) -> Duration {
        self.order
            .values()
            .next()
            .and_then(|d| self.entries.get(d))
            .map_or(Duration::ZERO, |e| now.saturating_duration_since(e.arrived))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_consensus::{
        ATTEST_DOMAIN, BatchHeader, KeySigner, Signer, ValidatorId, ValidatorSet,
        availability::attestation_body,
    };
    use tally_crypto::{ChainId, SecretKey};

    fn proof(author: u16, index: u64, tx_count: u32) -> Verified<BatchProof> {
        let keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let set = ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>())
            .expect("four keys");
        let chain = ChainId::new("pool").expect("chain id");
        let header = BatchHeader {
            author: ValidatorId(author),
            index,
            tx_count,
            bytes: tx_count * 200,
            tx_digest: Digest::of(&index.to_le_bytes()),
        };
        let attestations = (0..2u16)
            .map(|i| {
                let signer = KeySigner::new(keys[i as usize].clone(), chain.clone());
                (
                    ValidatorId(i),
                    signer.sign(ATTEST_DOMAIN, &attestation_body(&header)),
                )
            })
            .collect();
        let p = BatchProof {
            header,
            attestations,
        };
        tally_crypto::verify(&set, &chain, p).expect("valid proof")
    }

    #[test]
    fn take_marks_release_and_commit() {
        let now = Instant::now();
        let mut pool = ProofPool::new(4, 10);
        let a = proof(0, 0, 100);
        let b = proof(1, 0, 100);
        let c = proof(0, 1, 100);
        let (da, db, dc) = (a.header.digest(), b.header.digest(), c.header.digest());
        for p in [a.clone(), b, c] {
            assert_eq!(pool.insert(p, now), Ok(true));
        }
        assert_eq!(pool.insert(a.clone(), now), Ok(false), "already held");
        // Oldest first, within the transaction cap.
        assert_eq!(pool.take(10, 250), vec![da, db]);
        assert_eq!(pool.unproposed_count(10), 1);
        assert_eq!(pool.take(10, 1000), vec![dc]);
        assert!(pool.take(10, 1000).is_empty(), "everything is in flight");
        // A view change carried `db` over; the others may be proposed again.
        pool.release_proposed(&[db]);
        assert_eq!(pool.take(10, 1000), vec![da, dc]);
        pool.on_block(&[da]);
        assert!(!pool.contains(&da));
        assert!(pool.is_committed(&da));
        assert_eq!(pool.insert(a, now), Ok(false), "committed: not held again");
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn each_author_is_bounded() {
        let now = Instant::now();
        let mut pool = ProofPool::new(4, 2);
        assert_eq!(pool.insert(proof(2, 0, 1), now), Ok(true));
        assert_eq!(pool.insert(proof(2, 1, 1), now), Ok(true));
        assert_eq!(
            pool.insert(proof(2, 2, 1), now),
            Err(PoolRefused::AuthorFull { author: 2, held: 2 })
        );
        // Another author is not slowed.
        assert_eq!(pool.insert(proof(3, 0, 1), now), Ok(true));
        pool.on_block(&[proof(2, 0, 1).header.digest()]);
        assert_eq!(pool.insert(proof(2, 2, 1), now), Ok(true));
    }
}
