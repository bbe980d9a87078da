//! The mempool: verified transactions waiting to be proposed, bounded by count and bytes,
//! deduplicated by hash, ordered by nonce per sender; plus a bounded cache of bodies seen
//! recently, so a proposal naming a just-committed transaction can still be resolved.

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
}

impl Mempool {
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
        self.queue.push_back(hash);
        self.bytes += len;
        self.txs.insert(
            hash,
            Entry {
                tx,
                len,
                arrived: Instant::now(),
                proposed_at: None,
                offered_at: None,
            },
        );
        self.recount_gapped(&sender);
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

    /// With data batches: cuts the next batch (as [`Mempool::take_batch`]) for good. Its
    /// transactions leave the arrival queue — they are never offered again, their batch
    /// carries them — so the scans that cut batches cost only what waits; they stay in the
    /// pool (for duplicates and nonces) until their block.
    pub fn take_for_batch(
        &mut self,
        max_bytes: usize,
        max_txs: usize,
        now: Instant,
    ) -> Vec<Digest> {
        const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
        let taken = self.take_batch(max_bytes, max_txs, now, NEVER);
        if !taken.is_empty() {
            let set: FastSet<Digest> = taken.iter().copied().collect();
            self.queue.retain(|h| !set.contains(h));
        }
        taken
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
        arrivals
    }

    /// Takes a transaction out; the caller recounts its sender's gap.
    fn remove(&mut self, hash: &Digest) -> Option<Entry> {
        let e = self.txs.remove(hash)?;
        self.bytes -= e.len;
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

/// A map of at most `max` entries that forgets the oldest first.
struct Fifo<V> {
    map: FastMap<Digest, V>,
    /// Insertion order; may name entries removed since (skipped when popped).
    order: VecDeque<Digest>,
    max: usize,
}

impl<V> Fifo<V> {
    fn new(max: usize) -> Fifo<V> {
        Fifo {
            map: FastMap::default(),
            order: VecDeque::new(),
            max,
        }
    }

    fn get(&self, hash: &Digest) -> Option<&V> {
        self.map.get(hash)
    }

    /// Keeps the first value inserted under a hash.
    fn insert(&mut self, hash: Digest, value: V) {
        if self.map.contains_key(&hash) {
            return;
        }
        self.map.insert(hash, value);
        self.order.push_back(hash);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn remove(&mut self, hash: &Digest) -> Option<V> {
        self.map.remove(hash)
    }

    fn pop_oldest(&mut self) -> Option<V> {
        while let Some(hash) = self.order.pop_front() {
            if let Some(v) = self.map.remove(&hash) {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_crypto::{ChainId, SecretKey};
    use tally_ledger::{Action, Transaction};

    fn tx(key: &SecretKey, nonce: u64, pad: usize) -> Verified<SignedTransaction> {
        let chain = ChainId::new("m").unwrap();
        let signed = Transaction {
            chain_id: chain.clone(),
            sender: key.public_key(),
            nonce,
            action: Action::Put {
                key: b"k".to_vec(),
                value: vec![0; pad],
            },
        }
        .sign(key)
        .unwrap();
        tally_crypto::verify(&tally_crypto::KeyCache::default(), &chain, signed).unwrap()
    }

    fn account(nonce: u64) -> Account {
        Account { balance: 0, nonce }
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn dedup_and_nonce_rules() {
        let k = SecretKey::from_seed(&[1; 32]);
        let mut m = Mempool::new(100, 1 << 20);
        let t0 = tx(&k, 5, 0);
        m.admit(t0.clone(), account(5)).unwrap();
        assert_eq!(m.admit(t0, account(5)), Err(AdmitError::Duplicate));
        assert!(matches!(
            m.admit(tx(&k, 4, 0), account(5)),
            Err(AdmitError::StaleNonce {
                expected: 5,
                got: 4
            })
        ));
        assert!(matches!(
            m.admit(tx(&k, 5, 1), account(5)),
            Err(AdmitError::NonceTaken { nonce: 5 })
        ));
        assert!(matches!(
            m.admit(tx(&k, 5 + NONCE_GAP_MAX + 1, 0), account(5)),
            Err(AdmitError::NonceTooFar { .. })
        ));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn committed_nonces_are_remembered_after_the_pool_empties() {
        let (a, b) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
        );
        let mut m = Mempool::new(100, 1 << 20);
        assert_eq!(m.cached_nonce(&a.public_key()), None);
        let t = tx(&a, 0, 0);
        let h = m.admit(t, account(0)).unwrap();
        // The block commits a's transaction and moves b, which has nothing pending here.
        m.on_block(
            &[h],
            &[(a.public_key(), account(1)), (b.public_key(), account(7))],
        );
        assert!(m.is_empty());
        assert_eq!(m.cached_nonce(&a.public_key()), Some(1));
        assert_eq!(m.cached_nonce(&b.public_key()), Some(7));
        // The cache never goes back: an admission that read an older account keeps the newer.
        assert!(matches!(
            m.admit(tx(&b, 6, 0), account(6)),
            Err(AdmitError::StaleNonce {
                expected: 7,
                got: 6
            })
        ));
        m.admit(tx(&b, 7, 0), account(6)).unwrap();
        assert_eq!(m.cached_nonce(&b.public_key()), Some(7));
    }

    #[test]
    fn the_arrival_queue_does_not_keep_committed_transactions() {
        // A backup never cuts batches, so nothing pops the queue's front: committed
        // transactions must still leave it, or every scan walks the node's whole history.
        let keys: Vec<SecretKey> = (0..50u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let mut m = Mempool::new(100_000, 1 << 30);
        let mut committed = vec![0u64; keys.len()];
        for round in 0..100u64 {
            let mut hashes = Vec::new();
            let mut accounts = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                hashes.push(m.admit(tx(k, round, 0), account(committed[i])).unwrap());
                committed[i] = round + 1;
                accounts.push((k.public_key(), account(round + 1)));
            }
            m.on_block(&hashes, &accounts);
            assert!(m.is_empty());
            assert!(m.queue_len() <= QUEUE_SLACK + 2 * keys.len());
        }
        // Pending transactions stay queued in arrival order through a rebuild.
        let a = m.admit(tx(&keys[0], 100, 0), account(100)).unwrap();
        let b = m.admit(tx(&keys[1], 100, 0), account(100)).unwrap();
        for round in 100..130u64 {
            let mut hashes = Vec::new();
            let mut accounts = Vec::new();
            for k in &keys[2..] {
                hashes.push(m.admit(tx(k, round, 0), account(round)).unwrap());
                accounts.push((k.public_key(), account(round + 1)));
            }
            m.on_block(&hashes, &accounts);
        }
        assert_eq!(m.take_batch(1 << 20, 100, Instant::now(), LONG), vec![a, b]);
    }

    #[test]
    fn a_nonce_gap_is_not_ready_work() {
        let k = SecretKey::from_seed(&[1; 32]);
        let mut m = Mempool::new(100, 1 << 20);
        assert!(!m.has_ready());
        m.admit(tx(&k, 2, 0), account(0)).unwrap();
        assert!(!m.has_ready(), "nonce 2 waits for 0 and 1");
        assert_eq!(m.ready_count(), 0);
        m.admit(tx(&k, 0, 0), account(0)).unwrap();
        assert!(m.has_ready());
        assert_eq!(m.ready_count(), 1, "0 is ready; 2 still waits for 1");
        m.admit(tx(&k, 1, 0), account(0)).unwrap();
        assert_eq!(m.ready_count(), 3);
    }

    #[test]
    fn transactions_behind_a_gap_hold_at_most_a_quarter_of_the_pool() {
        let (a, b) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
        );
        let mut m = Mempool::new(8, 1 << 20);
        // a's nonces 2 and 3 wait for 0 and 1: two of eight places is the quarter.
        m.admit(tx(&a, 2, 0), account(0)).unwrap();
        m.admit(tx(&a, 3, 0), account(0)).unwrap();
        assert_eq!(m.gapped_count(), 2);
        assert_eq!(
            m.admit(tx(&a, 5, 0), account(0)),
            Err(AdmitError::GapFull {
                count: 2,
                bytes: 2 * tx(&a, 5, 0).encoded().len(),
                expected: 0
            })
        );
        assert_eq!(
            m.admit(tx(&b, 7, 0), account(0)).map_err(|e| e.reason()),
            Err("full_gapped")
        );
        // Orderable transactions still get the rest of the pool.
        for n in 0..4 {
            m.admit(tx(&b, n, 0), account(0)).unwrap();
        }
        // a fills its gap: 2 and 3 become orderable, and a's 4 is orderable too.
        m.admit(tx(&a, 0, 0), account(0)).unwrap();
        assert_eq!(m.gapped_count(), 2);
        m.admit(tx(&a, 1, 0), account(0)).unwrap();
        assert_eq!(m.gapped_count(), 0);
        assert_eq!(m.ready_count(), 8);
        assert!(matches!(
            m.admit(tx(&a, 4, 0), account(0)),
            Err(AdmitError::Full { count: 8, .. })
        ));
    }

    #[test]
    fn pending_work_is_offered_in_nonce_runs_once_until_reoffered() {
        let (a, b) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
        );
        let mut m = Mempool::new(100, 1 << 20);
        // a's nonce 0 was resent after its successors; b has a gap after 1; 5 is gapped.
        let a1 = m.admit(tx(&a, 1, 0), account(0)).unwrap();
        let a2 = m.admit(tx(&a, 2, 0), account(0)).unwrap();
        let b0 = m.admit(tx(&b, 0, 0), account(0)).unwrap();
        let b1 = m.admit(tx(&b, 1, 0), account(0)).unwrap();
        m.admit(tx(&b, 5, 0), account(0)).unwrap();
        let a0 = m.admit(tx(&a, 0, 0), account(0)).unwrap();
        let hashes = |bodies: Vec<Vec<u8>>| -> Vec<Digest> {
            bodies
                .iter()
                .map(|b| tally_ledger::SignedTransaction::decode(b).unwrap().hash())
                .collect()
        };
        let (min_age, again) = (Duration::from_millis(500), Duration::from_secs(2));
        let now = Instant::now();
        // Too young: nothing yet.
        assert!(
            m.offer_pending(now, min_age, again, 100, 1 << 20)
                .is_empty()
        );
        let later = now + Duration::from_secs(1);
        // Senders by oldest arrival (a first), each in nonce order; not b's gapped 5.
        assert_eq!(
            hashes(m.offer_pending(later, min_age, again, 100, 1 << 20)),
            vec![a0, a1, a2, b0, b1]
        );
        // Offered: not again until `again` has passed; in flight: not at all.
        assert!(
            m.offer_pending(later, min_age, again, 100, 1 << 20)
                .is_empty()
        );
        let much_later = later + again;
        m.mark_proposed(&[a0], much_later);
        assert_eq!(
            hashes(m.offer_pending(much_later, min_age, again, 2, 1 << 20)),
            vec![a1, a2]
        );
    }

    #[test]
    fn a_new_view_releases_the_old_views_proposals_but_not_the_carried_over() {
        let k = SecretKey::from_seed(&[1; 32]);
        let mut m = Mempool::new(100, 1 << 20);
        let h0 = m.admit(tx(&k, 0, 0), account(0)).unwrap();
        let h1 = m.admit(tx(&k, 1, 0), account(0)).unwrap();
        let again = Duration::from_secs(4);
        let t0 = Instant::now();
        assert_eq!(m.take_batch(1 << 20, 100, t0, again), vec![h0, h1]);
        assert!(m.take_batch(1 << 20, 100, t0, again).is_empty());
        // The view changes; the NEW-VIEW carries h0 over.
        let since = t0 + Duration::from_millis(10);
        let t1 = since + Duration::from_millis(10);
        m.release_proposed(since, &[h0], t1);
        // h1 may be proposed again at once (after h0, in flight); h0 only after its delay.
        assert_eq!(m.take_batch(1 << 20, 100, t1, again), vec![h1]);
        assert!(m.take_batch(1 << 20, 100, t1, again).is_empty());
        assert_eq!(m.take_batch(1 << 20, 100, t1 + again, again), vec![h0, h1]);
    }

    #[test]
    fn a_committed_nonce_can_close_a_gap() {
        let k = SecretKey::from_seed(&[1; 32]);
        let mut m = Mempool::new(100, 1 << 20);
        let h2 = m.admit(tx(&k, 2, 0), account(0)).unwrap();
        m.admit(tx(&k, 3, 0), account(0)).unwrap();
        assert_eq!((m.gapped_count(), m.ready_count()), (2, 0));
        // Nonces 0 and 1 were committed from another node's proposal.
        m.on_block(&[], &[(k.public_key(), account(2))]);
        assert_eq!((m.gapped_count(), m.ready_count()), (0, 2));
        // 2 committed but failed (the account's nonce stays 2... then 3 is gapped again
        // until nonce 2 is sent anew).
        m.on_block(&[h2], &[]);
        assert_eq!((m.gapped_count(), m.ready_count()), (1, 0));
    }

    #[test]
    fn stashed_bodies_come_out_oldest_first() {
        let mut m = Mempool::new(2, 1 << 20);
        assert_eq!(m.room(), 2);
        let raw = |v: Vec<Stashed>| -> Vec<Vec<u8>> {
            v.into_iter()
                .map(|s| match s {
                    Stashed::Raw(b) => b,
                    Stashed::Checked(t) => t.encoded().to_vec(),
                })
                .collect()
        };
        m.stash(vec![vec![1], vec![2], vec![3]]);
        // Taken for a proposal: gone from the stash.
        assert_eq!(raw(m.take_stashed(&[Digest::of(&[2])])), vec![vec![2]]);
        assert_eq!(raw(m.take_stash_oldest(5)), vec![vec![1], vec![3]]);
        assert!(m.take_stash_oldest(5).is_empty());
        m.admit(tx(&SecretKey::from_seed(&[1; 32]), 0, 0), account(0))
            .unwrap();
        assert_eq!(m.room(), 1);
        // A peer's transaction refused for lack of room is kept, verified.
        let (k2, k3) = (
            SecretKey::from_seed(&[2; 32]),
            SecretKey::from_seed(&[3; 32]),
        );
        m.admit_from_peer(tx(&k2, 0, 0), account(0)).unwrap();
        let late = tx(&k3, 0, 0);
        assert!(matches!(
            m.admit_from_peer(late.clone(), account(0)),
            Err(AdmitError::Full { .. })
        ));
        assert_eq!(raw(m.take_stash_oldest(5)), vec![late.encoded().to_vec()]);
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let mut m = Mempool::new(3, 1 << 20);
        for i in 0..3u8 {
            m.admit(tx(&SecretKey::from_seed(&[i; 32]), 0, 0), account(0))
                .unwrap();
        }
        assert!(matches!(
            m.admit(tx(&SecretKey::from_seed(&[9; 32]), 0, 0), account(0)),
            Err(AdmitError::Full { count: 3, .. })
        ));
        let one = tx(&SecretKey::from_seed(&[1; 32]), 0, 1000).encoded().len();
        let mut m = Mempool::new(100, one + 10);
        m.admit(tx(&SecretKey::from_seed(&[1; 32]), 0, 1000), account(0))
            .unwrap();
        assert!(matches!(
            m.admit(tx(&SecretKey::from_seed(&[2; 32]), 0, 1000), account(0)),
            Err(AdmitError::Full { .. })
        ));
        assert_eq!(m.bytes(), one);
    }

    #[test]
    fn batches_follow_nonce_order_without_gaps_and_respect_bytes() {
        let (a, b) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
        );
        let mut m = Mempool::new(100, 1 << 20);
        // a's nonce 1 arrives before its nonce 0; b has a gap (0, 2).
        let a1 = m.admit(tx(&a, 1, 0), account(0)).unwrap();
        let a0 = m.admit(tx(&a, 0, 0), account(0)).unwrap();
        let b0 = m.admit(tx(&b, 0, 0), account(0)).unwrap();
        let _b2 = m.admit(tx(&b, 2, 0), account(0)).unwrap();
        let now = Instant::now();
        let batch = m.take_batch(1 << 20, 100, now, LONG);
        // a1 waits for a0 in arrival order, so it is not in this batch; b2 has a gap.
        assert_eq!(batch, vec![a0, b0]);
        // Next batch: a1 follows a0 (in flight), b2 still has a gap.
        assert_eq!(m.take_batch(1 << 20, 100, now, LONG), vec![a1]);
        assert!(m.take_batch(1 << 20, 100, now, LONG).is_empty());
        // After the re-proposal delay, unfinished proposals come back (a1 again one batch
        // behind a0: one pass in arrival order).
        let later = now + Duration::from_secs(10);
        assert_eq!(
            m.take_batch(1 << 20, 100, later, Duration::from_secs(5)),
            vec![a0, b0]
        );
        // Byte limit.
        let mut m = Mempool::new(100, 1 << 20);
        let size = tx(&a, 0, 0).encoded().len();
        for i in 0..10u8 {
            m.admit(tx(&SecretKey::from_seed(&[i + 10; 32]), 0, 0), account(0))
                .unwrap();
        }
        assert_eq!(m.take_batch(size * 3, 100, now, LONG).len(), 3);
    }

    #[test]
    fn committed_transactions_leave_and_stale_ones_are_dropped() {
        let k = SecretKey::from_seed(&[1; 32]);
        let mut m = Mempool::new(100, 1 << 20);
        let h0 = m.admit(tx(&k, 0, 0), account(0)).unwrap();
        let h1 = m.admit(tx(&k, 1, 0), account(0)).unwrap();
        let h2 = m.admit(tx(&k, 2, 0), account(0)).unwrap();
        // Block: h0 committed, and the account's nonce moved to 2 (h1 committed elsewhere).
        let arrivals = m.on_block(&[h0], &[(k.public_key(), account(2))]);
        assert_eq!(arrivals.len(), 1);
        assert!(!m.contains(&h0) && !m.contains(&h1) && m.contains(&h2));
        // Bodies stay known for proposals that still name them.
        assert!(m.body(&h0).is_some() && m.body(&h1).is_some());
        assert_eq!(m.len(), 1);
        assert_eq!(m.bytes(), tx(&k, 2, 0).encoded().len());
    }

    /// Bodies waiting for their check are found by hash until their check is done; once the
    /// check has started only the hash is reported (the caller waits, it does not check the
    /// body again); the set is bounded.
    #[test]
    fn bodies_waiting_for_their_check() {
        let mut m = Mempool::new(100, 1 << 20);
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let none: (Vec<Vec<u8>>, Vec<Digest>) = (vec![], vec![]);
        assert!(m.checking_add(a, vec![1, 2, 3]));
        assert!(m.checking_add(c, vec![4]));
        assert_eq!(m.checking_bodies(&[a, b]), (vec![vec![1, 2, 3]], vec![]));
        m.checking_started(&c);
        m.checking_started(&b);
        assert_eq!(
            m.checking_bodies(&[a, b, c]),
            (vec![vec![1, 2, 3]], vec![c])
        );
        assert!(m.is_checking(&c) && !m.is_checking(&b));
        m.checking_done(&a);
        m.checking_done(&c);
        assert_eq!(m.checking_bodies(&[a, c]), none);
        assert!(!m.is_checking(&c));
        for i in 0..CHECKING_MAX {
            assert!(m.checking_add(Digest::of(&i.to_le_bytes()), vec![]));
        }
        assert!(!m.checking_add(b, vec![9]), "full");
        assert_eq!(m.checking_bodies(&[b]), none);
    }
}
