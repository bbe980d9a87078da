//! The mempool: verified transactions waiting to be proposed, bounded by count and bytes,
//! deduplicated by hash, ordered by nonce per sender; plus a bounded cache of bodies seen
//! recently, so a proposal naming a just-committed transaction can still be resolved.

mod cuts;
mod fifo;

use cuts::Cuts;
use fifo::Fifo;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_crypto::{Digest, PublicKey, Verified};
use tally_ledger::{Account, SignedTransaction};

use crate::{FastMap, FastSet};

/// How far ahead of the account's nonce a transaction may be (a client pipelining).
pub const NONCE_GAP_MAX: u64 = 1024;
/// The smallest encoded transaction: a put with a 1-byte chain id, a 1-byte key and an
/// empty value (1+1+1+32+8+1+2+1+4+64).
const MIN_TX_BYTES: usize = 115;
/// Bodies kept aside (unverified, or verified but refused for lack of room) while the pool
/// is full or the node busy: as many as the default pool holds.
const STASH_MAX: usize = 20_000;
/// Bodies kept after they leave the pool.
const KNOWN_MAX: usize = 50_000;
/// Bound on gossiped bodies remembered while they wait for their signature check (the check
/// queue holds 4,096; batches in progress hold more).
const CHECKING_MAX: usize = 16_384;
/// Share of the pool (count and bytes) that transactions behind a nonce gap may hold: they
/// cannot be ordered until their sender fills the gap, so the rest stays free for work
/// consensus can order. Without this bound, a client whose transaction was refused while
/// the pool was full (or one that sends far-ahead nonces on purpose) fills the pool with
/// transactions that wait forever, and the node refuses everything else.
const GAPPED_SHARE_DIVISOR: usize = 4;
/// Dead entries the arrival queue may hold beyond twice the live ones before it is rebuilt.
const QUEUE_SLACK: usize = 1024;
/// Committed nonces remembered for senders with nothing pending. Past this many the
/// entries of idle senders are dropped (admission then reads the store for them again).
const NONCE_CACHE_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("duplicate transaction (already pending)")]
    Duplicate,
    #[error("stale nonce: the account's next nonce is {expected}, the transaction has {got}")]
    StaleNonce { expected: u64, got: u64 },
    #[error(
        "nonce {got} is more than {NONCE_GAP_MAX} ahead of the account's next nonce {expected}"
    )]
    NonceTooFar { expected: u64, got: u64 },
    #[error("another transaction from this sender with nonce {nonce} is already pending")]
    NonceTaken { nonce: u64 },
    #[error("mempool full ({count} transactions, {bytes} bytes)")]
    Full { count: usize, bytes: usize },
    #[error(
        "mempool full for transactions behind a nonce gap ({count} such transactions, \
         {bytes} bytes): send the account's next nonce {expected} first"
    )]
    GapFull {
        count: usize,
        bytes: usize,
        expected: u64,
    },
}

impl AdmitError {
    pub fn reason(&self) -> &'static str {
        match self {
            AdmitError::Duplicate => "duplicate",
            AdmitError::StaleNonce { .. } => "stale_nonce",
            AdmitError::NonceTooFar { .. } => "nonce_too_far",
            AdmitError::NonceTaken { .. } => "nonce_taken",
            AdmitError::Full { .. } => "full",
            AdmitError::GapFull { .. } => "full_gapped",
        }
    }
}

/// A verified transaction, shared between the mempool, execution and gossip.
pub type TxRef = Arc<Verified<SignedTransaction>>;

/// A body kept aside until the pool has room or a proposal names it.
pub enum Stashed {
    /// Gossiped while the node was full or busy: not yet verified.
    Raw(Vec<u8>),
    /// Verified, but refused for lack of room (or behind a gap while the gap share was used).
    Checked(Box<Verified<SignedTransaction>>),
}

struct Entry {
    tx: TxRef,
    len: usize,
    arrived: Instant,
    proposed_at: Option<Instant>,
    /// When its body was last handed to a primary that asked for pending work.
    offered_at: Option<Instant>,
    /// Batch mode: where it is on its way into a batch.
    cut: CutState,
}

/// Batch mode: a transaction waits behind a nonce gap (or is not in batch mode at all), is in
/// the queue of what can be cut, or was cut into a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CutState {
    Waiting,
    Ready,
    Cut,
}

pub struct Mempool {
    max_txs: usize,
    max_bytes: usize,
    txs: FastMap<Digest, Entry>,
    by_sender: FastMap<PublicKey, BTreeMap<u64, Digest>>,
    queue: VecDeque<Digest>,
    bytes: usize,
    /// The committed next nonce of every sender with pending transactions, and of recent
    /// ones: every account a block changed is recorded, so admission rarely reads the store
    /// (a read per submission was ≈ 6% of a node's CPU). Bounded by [`NONCE_CACHE_MAX`].
    nonces: FastMap<PublicKey, u64>,
    known: Fifo<TxRef>,
    /// Bodies gossiped while the pool was full, kept unverified (bounded): a proposal naming
    /// one verifies it on demand instead of fetching it over the network.
    stash: Fifo<Stashed>,
    /// Gossiped bodies (raw) waiting for their signature check: a proposal naming one takes
    /// it from here instead of fetching it from a peer. `true` once its check has started
    /// (the proposal then waits for that check instead of repeating it).
    checking: FastMap<Digest, (Vec<u8>, bool)>,
    /// Per sender with transactions behind a nonce gap: how many and their bytes; and the
    /// totals over all senders.
    gapped: FastMap<PublicKey, (usize, usize)>,
    gapped_count: usize,
    gapped_bytes: usize,
    /// Batch mode only (see [`Mempool::for_batches`]).
    cuts: Option<Cuts>,
}

impl Mempool {
    /// A pool whose transactions are cut into data batches ([`Mempool::take_for_batch`]),
    /// not proposed one by one.
    pub fn for_batches(max_txs: usize, max_bytes: usize) -> Mempool {
        Mempool {
            cuts: Some(Cuts::default()),
            ..Mempool::new(max_txs, max_bytes)
        }
    }

    pub fn new(max_txs: usize, max_bytes: usize) -> Mempool {
        Mempool {
            max_txs,
            max_bytes,
            txs: FastMap::default(),
            by_sender: FastMap::default(),
            queue: VecDeque::new(),
            bytes: 0,
            nonces: FastMap::default(),
            known: Fifo::new(KNOWN_MAX),
            stash: Fifo::new(STASH_MAX),
            checking: FastMap::default(),
            gapped: FastMap::default(),
            gapped_count: 0,
            gapped_bytes: 0,
            cuts: None,
        }
    }

    /// Transactions behind a nonce gap (waiting for their sender, not for consensus).
    pub fn gapped_count(&self) -> usize {
        self.gapped_count
    }

    /// The nonce that would extend `sender`'s run of orderable transactions: its next
    /// nonce, past the consecutive ones already pending.
    fn ready_end(&self, sender: &PublicKey, committed: u64) -> u64 {
        let mut next = committed;
        if let Some(m) = self.by_sender.get(sender) {
            for n in m.range(committed..).map(|(n, _)| *n) {
                if n != next {
                    break;
                }
                next += 1;
            }
        }
        next
    }

    /// Recounts one sender's transactions behind a gap (after anything changed for it).
    fn recount_gapped(&mut self, sender: &PublicKey) {
        let (c0, b0) = self.gapped.remove(sender).unwrap_or((0, 0));
        self.gapped_count -= c0;
        self.gapped_bytes -= b0;
        let Some(m) = self.by_sender.get(sender) else {
            return;
        };
        let mut next = self.nonces.get(sender).copied().unwrap_or(0);
        let (mut count, mut bytes, mut gap) = (0, 0, false);
        for (n, h) in m {
            if !gap && *n == next {
                next += 1;
            } else {
                gap = true;
                count += 1;
                bytes += self.txs.get(h).map_or(0, |e| e.len);
            }
        }
        if count > 0 {
            self.gapped.insert(*sender, (count, bytes));
            self.gapped_count += count;
            self.gapped_bytes += bytes;
        }
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps encoded transactions aside, unverified, bounded by `STASH_MAX`.
    pub fn stash(&mut self, txs: Vec<Vec<u8>>) {
        for tx in txs {
            self.stash_one(Digest::of(&tx), Stashed::Raw(tx));
        }
    }

    fn stash_one(&mut self, hash: Digest, body: Stashed) {
        if !self.txs.contains_key(&hash) {
            self.stash.insert(hash, body);
        }
    }

    /// Admits a verified transaction that came from a peer; one refused for lack of room
    /// is stashed (verified) instead of lost, to be admitted when there is room or used
    /// when a proposal names it. A node that drops what its peers admitted cannot propose
    /// it when it becomes primary, and their clients wait for a view change.
    pub fn admit_from_peer(
        &mut self,
        tx: Verified<SignedTransaction>,
        account: Account,
    ) -> Result<Digest, AdmitError> {
        let keep = tx.clone();
        let result = self.admit(tx, account);
        if let Err(AdmitError::Full { .. } | AdmitError::GapFull { .. }) = &result {
            self.stash_one(keep.hash(), Stashed::Checked(Box::new(keep)));
        }
        result
    }

    /// Places left before the pool is full by count.
    pub fn room(&self) -> usize {
        if self.bytes >= self.max_bytes {
            return 0;
        }
        self.max_txs.saturating_sub(self.txs.len())
    }

    /// Takes up to `n` stashed bodies, oldest first (to be verified and admitted by the
    /// caller now that there is room).
    pub fn take_stash_oldest(&mut self, n: usize) -> Vec<Stashed> {
        std::iter::from_fn(|| self.stash.pop_oldest())
            .take(n)
            .collect()
    }

    /// Remembers a gossiped body that waits for its signature check (`false` when full).
    pub fn checking_add(&mut self, hash: Digest, bytes: Vec<u8>) -> bool {
        if self.checking.len() >= CHECKING_MAX {
            return false;
        }
        self.checking.insert(hash, (bytes, false));
        true
    }

    /// Its check has started: from now on a proposal waits for it rather than repeating it.
    pub fn checking_started(&mut self, hash: &Digest) {
        if let Some(e) = self.checking.get_mut(hash) {
            e.1 = true;
        }
    }

    /// Its check is done (or was skipped).
    pub fn checking_done(&mut self, hash: &Digest) {
        self.checking.remove(hash);
    }

    /// Whether the body waits for (or is in) its check.
    pub fn is_checking(&self, hash: &Digest) -> bool {
        self.checking.contains_key(hash)
    }

    /// Among `hashes`, copies of the bodies whose check has not started, and the hashes of
    /// those whose check is under way.
    pub fn checking_bodies(&self, hashes: &[Digest]) -> (Vec<Vec<u8>>, Vec<Digest>) {
        let (mut queued, mut started) = (Vec::new(), Vec::new());
        for h in hashes {
            match self.checking.get(h) {
                Some((_, true)) => started.push(*h),
                Some((bytes, false)) => queued.push(bytes.clone()),
                None => {}
            }
        }
        (queued, started)
    }

    /// Takes stashed bodies for these hashes (the raw ones to be verified by the caller).
    pub fn take_stashed(&mut self, hashes: &[Digest]) -> Vec<Stashed> {
        hashes.iter().filter_map(|h| self.stash.remove(h)).collect()
    }

    /// Whether a transaction of `len` bytes would be refused for lack of room. Checked before
    /// the signature, so an overloaded node does not spend CPU on what it will refuse.
    pub fn full_for(&self, len: usize) -> bool {
        self.txs.len() >= self.max_txs || self.bytes + len > self.max_bytes
    }

    /// Entries in the arrival queue, dead ones included (for tests).
    #[cfg(test)]
    fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// The committed next nonce of a sender with pending transactions or a recent block
    /// (saves a state read); `None` if the pool does not know it.
    pub fn cached_nonce(&self, who: &PublicKey) -> Option<u64> {
        self.nonces.get(who).copied()
    }

    /// Whether some transaction could be proposed now: a sender whose lowest pending nonce is
    /// its account's next nonce. (A transaction waiting behind a nonce gap is not work for
    /// consensus; counting it would make backups suspect an idle primary forever.)
    pub fn has_ready(&self) -> bool {
        self.by_sender.iter().any(|(who, nonces)| {
            let committed = self.nonces.get(who).copied().unwrap_or(0);
            nonces.keys().next().is_some_and(|n| *n == committed)
        })
    }

    /// Transactions that could be ordered now: for each sender, the run of consecutive nonces
    /// starting at its account's next nonce (what is behind a gap is not counted).
    pub fn ready_count(&self) -> usize {
        self.by_sender
            .iter()
            .map(|(who, nonces)| {
                let mut next = self.nonces.get(who).copied().unwrap_or(0);
                nonces
                    .keys()
                    .take_while(|n| {
                        let ready = **n == next;
                        next += 1;
                        ready
                    })
                    .count()
            })
            .sum()
    }

    pub fn contains(&self, hash: &Digest) -> bool {
        self.txs.contains_key(hash)
    }

    /// A body by hash, pending or recently seen.
    pub fn body(&self, hash: &Digest) -> Option<&TxRef> {
        self.txs
            .get(hash)
            .map(|e| &e.tx)
            .or_else(|| self.known.get(hash))
    }

    /// Remembers a body (verified) without making it pending: bodies fetched to complete a
    /// proposal, or of transactions that left the pool.
    pub fn remember(&mut self, tx: TxRef) {
        let hash = tx.hash();
        if !self.txs.contains_key(&hash) {
            self.known.insert(hash, tx);
        }
    }

    /// Admits a verified transaction given its sender's committed account.
    pub fn admit(
        &mut self,
        tx: Verified<SignedTransaction>,
        account: Account,
    ) -> Result<Digest, AdmitError> {
        let hash = tx.hash();
        if self.txs.contains_key(&hash) {
            return Err(AdmitError::Duplicate);
        }
        let (sender, nonce) = (tx.tx().sender, tx.tx().nonce);
        let expected = self
            .nonces
            .get(&sender)
            .copied()
            .unwrap_or(0)
            .max(account.nonce);
        if nonce < expected {
            return Err(AdmitError::StaleNonce {
                expected,
                got: nonce,
            });
        }
        if nonce > expected + NONCE_GAP_MAX {
            return Err(AdmitError::NonceTooFar {
                expected,
                got: nonce,
            });
        }
        if self
            .by_sender
            .get(&sender)
            .is_some_and(|m| m.contains_key(&nonce))
        {
            return Err(AdmitError::NonceTaken { nonce });
        }
        let len = tx.encoded().len();
        let tx = Arc::new(tx);
        if self.txs.len() >= self.max_txs || self.bytes + len > self.max_bytes {
            return Err(AdmitError::Full {
                count: self.txs.len(),
                bytes: self.bytes,
            });
        }
        if nonce > self.ready_end(&sender, expected)
            && (self.gapped_count + 1 > self.max_txs / GAPPED_SHARE_DIVISOR
                || self.gapped_bytes + len > self.max_bytes / GAPPED_SHARE_DIVISOR)
        {
            return Err(AdmitError::GapFull {
                count: self.gapped_count,
                bytes: self.gapped_bytes,
                expected: self.ready_end(&sender, expected),
            });
        }
        self.nonces.insert(sender, expected);
        self.by_sender
            .entry(sender)
            .or_default()
            .insert(nonce, hash);
        if self.cuts.is_none() {
            self.queue.push_back(hash);
        }
        self.bytes += len;
        self.txs.insert(
            hash,
            Entry {
                tx,
                len,
                arrived: Instant::now(),
                proposed_at: None,
                offered_at: None,
                cut: CutState::Waiting,
            },
        );
        self.recount_gapped(&sender);
        self.advance_cuts(&sender);
        Ok(hash)
    }

    /// When the oldest transaction that could be proposed now arrived.
    pub fn oldest_eligible(&self, now: Instant, repropose_after: Duration) -> Option<Instant> {
        self.queue
            .iter()
            .filter_map(|h| self.txs.get(h))
            .find(|e| e.proposed_at.is_none_or(|t| now >= t + repropose_after))
            .map(|e| e.arrived)
    }

    /// Bytes of transactions that could be proposed now.
    pub fn eligible_bytes(&self, now: Instant, repropose_after: Duration, cap: usize) -> usize {
        let mut total = 0;
        for e in self.queue.iter().filter_map(|h| self.txs.get(h)) {
            if e.proposed_at.is_none_or(|t| now >= t + repropose_after) {
                total += e.len;
                if total >= cap {
                    break;
                }
            }
        }
        total
    }

    /// Cuts a batch of up to `max_bytes` in arrival order, taking each sender's
    /// transactions only in nonce order without gaps, and marks them proposed.
    pub fn take_batch(
        &mut self,
        max_bytes: usize,
        max_txs: usize,
        now: Instant,
        repropose_after: Duration,
    ) -> Vec<Digest> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next: FastMap<PublicKey, u64> = FastMap::default();
        // Drop queue entries of transactions that left the pool.
        while self
            .queue
            .front()
            .is_some_and(|h| !self.txs.contains_key(h))
        {
            self.queue.pop_front();
        }
        for hash in self.queue.iter() {
            let Some(e) = self.txs.get(hash) else {
                continue;
            };
            if e.proposed_at.is_some_and(|t| now < t + repropose_after) {
                continue;
            }
            let t = e.tx.tx();
            let expected = *next.entry(t.sender).or_insert_with(|| {
                // The lowest nonce not already in flight.
                let committed = self.nonces.get(&t.sender).copied().unwrap_or(0);
                let mut n = committed;
                if let Some(m) = self.by_sender.get(&t.sender) {
                    for (nonce, h) in m.range(committed..) {
                        let in_flight = self
                            .txs
                            .get(h)
                            .and_then(|x| x.proposed_at)
                            .is_some_and(|at| now < at + repropose_after);
                        if *nonce == n && in_flight {
                            n += 1;
                        } else {
                            break;
                        }
                    }
                }
                n
            });
            if batch.len() >= max_txs || bytes + MIN_TX_BYTES > max_bytes {
                break;
            }
            if t.nonce != expected || bytes + e.len > max_bytes {
                continue;
            }
            next.insert(t.sender, expected + 1);
            bytes += e.len;
            batch.push(*hash);
        }
        for h in &batch {
            if let Some(e) = self.txs.get_mut(h) {
                e.proposed_at = Some(now);
            }
        }
        batch
    }

    /// Bodies of orderable transactions for a primary that asks for pending work (its pool
    /// is all it can propose from): senders in the order of their oldest pending arrival,
    /// each sender's run of consecutive nonces from its next nonce (a client's resent
    /// transaction may have arrived after its successors), skipping those younger than
    /// `min_age` (gossip had its chance), in a proposal in flight, or offered in the last
    /// `reoffer_after`. At most `max` bodies and about `max_bytes`. Marks them offered.
    pub fn offer_pending(
        &mut self,
        now: Instant,
        min_age: Duration,
        reoffer_after: Duration,
        max: usize,
        max_bytes: usize,
    ) -> Vec<Vec<u8>> {
        let recent = |at: Option<Instant>| at.is_some_and(|t| now < t + reoffer_after);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut chosen = Vec::new();
        let mut senders = FastSet::default();
        'queue: for hash in self.queue.iter() {
            let Some(e) = self.txs.get(hash) else {
                continue;
            };
            if now < e.arrived + min_age {
                // The queue is in arrival order: everything after is younger.
                break;
            }
            let sender = e.tx.tx().sender;
            if !senders.insert(sender) {
                continue;
            }
            let Some(nonces) = self.by_sender.get(&sender) else {
                continue;
            };
            let first = self.nonces.get(&sender).copied().unwrap_or(0);
            for (expected, (nonce, h)) in (first..).zip(nonces.range(first..)) {
                if *nonce != expected {
                    break;
                }
                let Some(e) = self.txs.get(h) else { break };
                if now < e.arrived + min_age {
                    break;
                }
                if recent(e.proposed_at) || recent(e.offered_at) {
                    continue;
                }
                if out.len() >= max || bytes >= max_bytes {
                    break 'queue;
                }
                bytes += e.len;
                out.push(e.tx.encoded().to_vec());
                chosen.push(*h);
            }
        }
        for h in chosen {
            if let Some(e) = self.txs.get_mut(&h) {
                e.offered_at = Some(now);
            }
        }
        out
    }

    /// Marks transactions another replica proposed, so this one does not propose them again
    /// while that proposal is in flight.
    pub fn mark_proposed(&mut self, hashes: &[Digest], now: Instant) {
        for h in hashes {
            if let Some(e) = self.txs.get_mut(h) {
                e.proposed_at = Some(now);
            }
        }
    }

    /// A new view began: transactions marked proposed before `since` were in proposals of
    /// the old view that did not commit, and may be proposed again at once (instead of after
    /// the re-proposal delay); `in_flight` (the new view's re-proposals) stay marked.
    pub fn release_proposed(&mut self, since: Instant, in_flight: &[Digest], now: Instant) {
        for e in self.txs.values_mut() {
            if e.proposed_at.is_some_and(|t| t < since) {
                e.proposed_at = None;
            }
        }
        self.mark_proposed(in_flight, now);
    }

    /// A block executed: its transactions leave the pool (kept as known bodies), senders'
    /// nonces advance, and transactions made stale by them are dropped. Returns how many
    /// were removed, and the arrival time of each committed local transaction.
    pub fn on_block(
        &mut self,
        tx_hashes: &[Digest],
        accounts: &[(PublicKey, Account)],
    ) -> Vec<(Digest, Instant)> {
        let mut arrivals = Vec::new();
        // Senders whose pending transactions changed: their gap counts are redone once, at
        // the end (a committed transaction, or a moved nonce, can open or close a gap).
        let mut touched: FastSet<PublicKey> = FastSet::default();
        for h in tx_hashes {
            if let Some(e) = self.remove(h) {
                arrivals.push((*h, e.arrived));
                touched.insert(e.tx.tx().sender);
                self.remember(e.tx);
            }
        }
        for (who, account) in accounts {
            // A block's accounts are committed state: remembered whether or not the sender
            // has anything pending here (max: admission may have read a newer one already).
            let n = self.nonces.entry(*who).or_insert(account.nonce);
            *n = (*n).max(account.nonce);
            let stale: Vec<Digest> = self
                .by_sender
                .get(who)
                .map(|m| m.range(..account.nonce).map(|(_, h)| *h).collect())
                .unwrap_or_default();
            for h in stale {
                if let Some(e) = self.remove(&h) {
                    self.remember(e.tx);
                }
            }
            touched.insert(*who);
        }
        for who in &touched {
            self.recount_gapped(who);
            self.advance_cuts(who);
        }
        if self.nonces.len() > NONCE_CACHE_MAX {
            let pending = &self.by_sender;
            self.nonces.retain(|who, _| pending.contains_key(who));
        }
        // Committed transactions leave the arrival queue lazily (only a primary's batch cut
        // pops its front): once dead entries outnumber live ones, drop them all, so that the
        // scans that walk the queue cost the pool's size, not its history. Amortised O(1)
        // per removal.
        if self.queue.len() > 2 * self.txs.len() + QUEUE_SLACK {
            let live = &self.txs;
            self.queue.retain(|h| live.contains_key(h));
        }
        // Likewise the cut queue (entries committed before they were cut stay behind while
        // cutting is paused for overload): it holds at most twice the pool plus the slack.
        if let Some(cuts) = self.cuts.as_mut()
            && cuts.ready.len() > 2 * self.txs.len() + QUEUE_SLACK
        {
            let live = &self.txs;
            cuts.ready
                .retain(|h| live.get(h).is_some_and(|e| e.cut == CutState::Ready));
        }
        arrivals
    }

    /// Takes a transaction out; the caller recounts its sender's gap.
    fn remove(&mut self, hash: &Digest) -> Option<Entry> {
        let e = self.txs.remove(hash)?;
        self.bytes -= e.len;
        if let Some(cuts) = self.cuts.as_mut() {
            match e.cut {
                CutState::Ready => cuts.ready_bytes -= e.len,
                CutState::Cut => cuts.cut -= 1,
                CutState::Waiting => {}
            }
        }
        let t = e.tx.tx();
        if let Some(m) = self.by_sender.get_mut(&t.sender) {
            m.remove(&t.nonce);
            if m.is_empty() {
                self.by_sender.remove(&t.sender);
            }
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests;
