//! The proofs a validator can propose: every batch proof it verified, until the batch is in a
//! block. The primary takes proofs from here for its proposals; a backup marks the proofs a
//! pre-prepare names (so that, as the next primary, it does not propose them again while they
//! are in flight) and releases them when a view change drops that proposal.
//!
//! **Each author's batches in the order it cut them.** A validator cuts its clients'
//! transactions into batches in nonce order per account, so a proposal must name one author's
//! batches in index order, or a transaction can run before its predecessor and fail with "bad
//! nonce" (`docs/transactions.md`). Proofs do not arrive in that order (each batch is attested
//! by its own validators), so [`ProofPool::take`] serves each author lowest index first, and
//! holds an author's proofs back while the next index it expects is missing: for at most
//! [`HELD_WAIT`] after the lowest one arrived when this node holds the missing batch's body
//! (it exists and its proof is on its way: under load, attestations do not come back in cut
//! order), and for at most [`GAP_WAIT`] when it does not (an author that restarted skips
//! numbers). After that the gap is passed over: a batch that is never proven cannot stall its
//! author's later ones.
//!
//! **Bounds.** At most `per_author` proofs of each author are held (an author whose proofs
//! are not being ordered cannot grow this), and the digests of the latest [`COMMITTED_KEPT`]
//! committed batches are remembered so that a proof arriving after its block is not held
//! again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_consensus::{BatchHeader, BatchProof};
use tally_crypto::{Digest, Verified};

use crate::{FastMap, FastSet};

/// How long a proof waits for an earlier batch of its author whose body this node does not
/// hold before it is proposed anyway: two attestation retries.
pub const GAP_WAIT: Duration = Duration::from_millis(2 * super::service::RETRY_MS);
/// How long it waits for an earlier batch whose body this node holds (unproven): that batch
/// exists and is being attested; proposing past it would fail its transactions' successors.
pub const HELD_WAIT: Duration = Duration::from_secs(5);

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
    /// Per author: one past the highest batch index a proposal named or a block held, once
    /// one has been seen (the index its next batch should have).
    next_index: Vec<Option<u64>>,
    /// Proofs taken past a missing earlier batch of their author, not yet counted.
    gaps_passed: u64,
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
            next_index: vec![None; validators],
            gaps_passed: 0,
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

    /// Takes up to `max_entries` proofs no proposal names, whose batches hold at most
    /// `max_txs` transactions together, and marks them proposed. Authors are served in the
    /// order their proofs arrived, each author's batches lowest index first; an author whose
    /// lowest waiting index is past the one expected waits (see [`GAP_WAIT`]);
    /// `held(author, from, to)` says whether this node holds a batch body of `author` numbered
    /// in `from..to`.
    pub fn take(
        &mut self,
        max_entries: usize,
        max_txs: usize,
        now: Instant,
        held: impl Fn(u16, u64, u64) -> bool,
    ) -> Vec<Digest> {
        // Each author's waiting proofs by index.
        let mut by_author: FastMap<u16, BTreeMap<u64, &Entry>> = FastMap::default();
        for e in self.unproposed() {
            by_author
                .entry(e.proof.header.author.0)
                .or_default()
                .insert(e.proof.header.index, e);
        }
        let mut next = self.next_index.clone();
        let mut gaps = 0u64;
        let mut out = Vec::new();
        let mut txs = 0usize;
        // One slot per waiting proof, in arrival order: the slot goes to its author's lowest
        // index, so each author gets as many as before, in cut order.
        for e in self.unproposed() {
            let author = e.proof.header.author.0;
            let Some(waiting) = by_author.get_mut(&author) else {
                continue;
            };
            let Some((&index, first)) = waiting.first_key_value() else {
                continue;
            };
            let expected = next.get(author as usize).copied().flatten();
            let waited = now.saturating_duration_since(first.arrived);
            let wait = match expected {
                Some(x) if index > x && held(author, x, index) => HELD_WAIT,
                Some(x) if index > x => GAP_WAIT,
                _ => Duration::ZERO,
            };
            if waited < wait {
                // Its predecessor may still come; the author's later ones wait with it.
                waiting.clear();
                continue;
            }
            let n = first.proof.header.tx_count as usize;
            if out.len() >= max_entries || txs + n > max_txs {
                break;
            }
            txs += n;
            if wait > Duration::ZERO {
                gaps += 1;
            }
            out.push(first.proof.header.digest());
            if let Some(x) = next.get_mut(author as usize) {
                advance(x, index);
            }
            waiting.pop_first();
        }
        self.gaps_passed += gaps;
        self.mark_proposed(&out);
        out
    }

    /// Proofs taken past a missing earlier batch of their author since the last call (for
    /// `tally_batch_order_gaps_total`).
    pub fn take_gaps_passed(&mut self) -> u64 {
        std::mem::take(&mut self.gaps_passed)
    }

    /// A proposal or a block ordered `author`'s batch `index`.
    fn note_ordered(&mut self, author: u16, index: u64) {
        if let Some(x) = self.next_index.get_mut(author as usize) {
            advance(x, index);
        }
    }

    /// A proposal in flight names these batches.
    pub fn mark_proposed(&mut self, digests: &[Digest]) {
        let mut ordered = Vec::new();
        for d in digests {
            if let Some(e) = self.entries.get_mut(d) {
                e.proposed = true;
                ordered.push((e.proof.header.author.0, e.proof.header.index));
            }
        }
        for (author, index) in ordered {
            self.note_ordered(author, index);
        }
    }

    /// A proposal that named these batches was not made: they may be proposed again.
    pub fn release(&mut self, digests: &[Digest]) {
        for d in digests {
            if let Some(e) = self.entries.get_mut(d) {
                e.proposed = false;
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
    pub fn on_block(&mut self, headers: &[BatchHeader]) {
        for h in headers {
            self.note_ordered(h.author.0, h.index);
            let d = &h.digest();
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

/// An author's next expected index once its batch `index` is ordered.
fn advance(next: &mut Option<u64>, index: u64) {
    *next = Some(next.map_or(index + 1, |x| x.max(index + 1)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_consensus::{
        ATTEST_DOMAIN, BatchHeader, KeySigner, Signer, ValidatorId, ValidatorSet,
        availability::attestation_body,
    };
    use tally_crypto::{ChainId, SecretKey};

    /// No batch body held.
    fn none(_: u16, _: u64, _: u64) -> bool {
        false
    }

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
        assert_eq!(pool.take(10, 250, now, none), vec![da, db]);
        assert_eq!(pool.unproposed_count(10), 1);
        assert_eq!(pool.take(10, 1000, now, none), vec![dc]);
        assert!(
            pool.take(10, 1000, now, none).is_empty(),
            "everything is in flight"
        );
        // A view change carried `db` over; the others may be proposed again.
        pool.release_proposed(&[db]);
        assert_eq!(pool.take(10, 1000, now, none), vec![da, dc]);
        pool.on_block(&[a.header]);
        assert!(!pool.contains(&da));
        assert!(pool.is_committed(&da));
        assert_eq!(pool.insert(a, now), Ok(false), "committed: not held again");
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn a_proposal_the_core_declined_gives_its_proofs_back() {
        let now = Instant::now();
        let mut pool = ProofPool::new(4, 10);
        let (a, b) = (proof(0, 0, 10), proof(0, 1, 10));
        let (da, db) = (a.header.digest(), b.header.digest());
        pool.insert(a, now).expect("held");
        pool.insert(b, now).expect("held");
        let taken = pool.take(10, 1000, now, none);
        assert_eq!(taken, vec![da, db]);
        assert!(pool.take(10, 1000, now, none).is_empty());
        pool.release(&taken);
        assert_eq!(
            pool.take(10, 1000, now, none),
            vec![da, db],
            "again, in order"
        );
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
        pool.on_block(&[proof(2, 0, 1).header]);
        assert_eq!(pool.insert(proof(2, 2, 1), now), Ok(true));
    }

    #[test]
    fn an_authors_batches_go_in_the_order_it_cut_them() {
        let t0 = Instant::now();
        let mut pool = ProofPool::new(4, 10);
        // Author 0's batches 1 and 2 are proven before its batch 0; author 1's batch 0 between.
        let (b0, b1, b2) = (proof(0, 0, 10), proof(0, 1, 10), proof(0, 2, 10));
        let other = proof(1, 0, 10);
        let d = |p: &Verified<BatchProof>| p.header.digest();
        let want = vec![d(&b0), d(&b1), d(&other), d(&b2)];
        for p in [b2, b1, other, b0] {
            assert_eq!(pool.insert(p, t0), Ok(true));
        }
        // Three slots for author 0, one for author 1 (arrival order), author 0 lowest first.
        assert_eq!(pool.take(10, 1000, t0, none), want);
    }

    #[test]
    fn a_missing_batch_holds_its_authors_later_ones_for_the_gap_wait_only() {
        let t0 = Instant::now();
        let mut pool = ProofPool::new(4, 10);
        pool.on_block(&[proof(0, 4, 10).header]);
        // Batch 5 is missing; 6 and 7 wait, another author does not.
        let (b6, b7, other) = (proof(0, 6, 10), proof(0, 7, 10), proof(1, 0, 10));
        for p in [b7.clone(), b6.clone(), other.clone()] {
            assert_eq!(pool.insert(p, t0), Ok(true));
        }
        assert_eq!(pool.take(10, 1000, t0, none), vec![other.header.digest()]);
        let almost = t0 + GAP_WAIT - Duration::from_millis(1);
        assert!(
            pool.take(10, 1000, almost, none).is_empty(),
            "still waiting for 5"
        );
        // Batch 5 arrives in time: 5, 6, 7 in order.
        let b5 = proof(0, 5, 10);
        assert_eq!(pool.insert(b5.clone(), almost), Ok(true));
        let d = |p: &Verified<BatchProof>| p.header.digest();
        assert_eq!(
            pool.take(10, 1000, almost, none),
            vec![d(&b5), d(&b6), d(&b7)]
        );

        // After a restart of the author its numbers jump: 100 waits GAP_WAIT, then goes,
        // and 101 follows without waiting again.
        pool.on_block(&[b5.header, b6.header, b7.header]);
        let (b100, b101) = (proof(0, 100, 10), proof(0, 101, 10));
        let t1 = almost + Duration::from_secs(1);
        assert_eq!(pool.insert(b100.clone(), t1), Ok(true));
        assert!(pool.take(10, 1000, t1, none).is_empty());
        assert_eq!(pool.take_gaps_passed(), 0);
        assert_eq!(pool.take(10, 1000, t1 + GAP_WAIT, none), vec![d(&b100)]);
        assert_eq!(pool.take_gaps_passed(), 1, "one gap passed over");
        assert_eq!(pool.insert(b101.clone(), t1 + GAP_WAIT), Ok(true));
        assert_eq!(pool.take(10, 1000, t1 + GAP_WAIT, none), vec![d(&b101)]);
    }

    #[test]
    fn a_missing_batch_whose_body_is_held_is_waited_for_longer() {
        let t0 = Instant::now();
        let mut pool = ProofPool::new(4, 10);
        pool.on_block(&[proof(1, 9, 10).header]);
        // Batch 10's body is here, its proof is late; 11 is proven.
        let held = |author: u16, from: u64, to: u64| author == 1 && from <= 10 && 10 < to;
        let b11 = proof(1, 11, 10);
        assert_eq!(pool.insert(b11.clone(), t0), Ok(true));
        assert!(pool.take(10, 1000, t0 + GAP_WAIT, held).is_empty());
        assert!(
            pool.take(10, 1000, t0 + HELD_WAIT - Duration::from_millis(1), held)
                .is_empty()
        );
        let b10 = proof(1, 10, 10);
        let t1 = t0 + HELD_WAIT - Duration::from_millis(1);
        assert_eq!(pool.insert(b10.clone(), t1), Ok(true));
        assert_eq!(
            pool.take(10, 1000, t1, held),
            vec![b10.header.digest(), b11.header.digest()]
        );
        // Never proven: passed over after HELD_WAIT.
        let b13 = proof(1, 13, 10);
        let held12 = |author: u16, from: u64, to: u64| author == 1 && from <= 12 && 12 < to;
        assert_eq!(pool.insert(b13.clone(), t1), Ok(true));
        assert!(pool.take(10, 1000, t1 + GAP_WAIT, held12).is_empty());
        assert_eq!(
            pool.take(10, 1000, t1 + HELD_WAIT, held12),
            vec![b13.header.digest()]
        );
    }

    #[test]
    fn a_backup_learns_the_order_from_the_proposals_it_sees() {
        let t0 = Instant::now();
        let mut pool = ProofPool::new(4, 10);
        let (b0, b1, b3) = (proof(2, 0, 10), proof(2, 1, 10), proof(2, 3, 10));
        for p in [b0.clone(), b1.clone(), b3.clone()] {
            assert_eq!(pool.insert(p, t0), Ok(true));
        }
        // The primary's pre-prepare named 0 and 1; as the next primary this node expects 2.
        pool.mark_proposed(&[b0.header.digest(), b1.header.digest()]);
        assert!(pool.take(10, 1000, t0, none).is_empty(), "3 waits for 2");
        // A view change drops that proposal: 0 and 1 may go again, in order, and 3 still waits.
        pool.release_proposed(&[]);
        assert_eq!(
            pool.take(10, 1000, t0, none),
            vec![b0.header.digest(), b1.header.digest()]
        );
    }
}
