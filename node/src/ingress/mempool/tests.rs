//! The mempool's rules, one test each.

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

/// Batch mode: what is cut is each sender's run of nonces without gaps, in the order the
/// transactions became cuttable; a transaction behind a gap joins when the gap fills or a
/// block moves the nonce past it; nothing is cut twice; the cuttable bytes follow.
#[test]
fn batch_cuts_follow_nonces_and_never_repeat() {
    let (a, b) = (
        SecretKey::from_seed(&[1; 32]),
        SecretKey::from_seed(&[2; 32]),
    );
    let now = Instant::now();
    let mut m = Mempool::for_batches(100, 1 << 20);
    let a0 = tx(&a, 0, 0);
    let a2 = tx(&a, 2, 0);
    let b0 = tx(&b, 0, 0);
    let a1 = tx(&a, 1, 0);
    let len = a0.encoded().len();
    let (h_a0, h_a1, h_a2, h_b0) = (a0.hash(), a1.hash(), a2.hash(), b0.hash());
    m.admit(a0, account(0)).unwrap();
    m.admit(a2, account(0)).unwrap();
    m.admit(b0, account(0)).unwrap();
    assert_eq!(m.cuttable().map(|(_, bytes)| bytes), Some(2 * len));
    assert_eq!(m.take_for_batch(1 << 20, 1, now), vec![h_a0]);
    assert_eq!(m.take_for_batch(1 << 20, 100, now), vec![h_b0]);
    assert_eq!(m.cuttable(), None, "a2 waits behind the gap at nonce 1");
    // The gap fills: a1 and then a2 become cuttable, in nonce order.
    m.admit(a1, account(0)).unwrap();
    assert_eq!(m.cuttable().map(|(_, bytes)| bytes), Some(2 * len));
    // A byte bound smaller than two transactions cuts one.
    assert_eq!(m.take_for_batch(len + 1, 100, now), vec![h_a1]);
    assert_eq!(m.take_for_batch(1 << 20, 100, now), vec![h_a2]);
    assert!(m.take_for_batch(1 << 20, 100, now).is_empty());

    // A block that commits a sender's transactions another way (moving its nonce past a
    // gap) makes what is behind the gap cuttable, and drops what it made stale.
    let c = SecretKey::from_seed(&[3; 32]);
    let (c0, c2, c3) = (tx(&c, 0, 0), tx(&c, 2, 0), tx(&c, 3, 0));
    let (h_c0, h_c3) = (c0.hash(), c3.hash());
    m.admit(c0, account(0)).unwrap();
    m.admit(c2, account(0)).unwrap();
    m.admit(c3, account(0)).unwrap();
    assert_eq!(m.cuttable().map(|(_, bytes)| bytes), Some(len));
    m.on_block(&[h_c0], &[(c.public_key(), account(3))]);
    assert_eq!(m.cuttable().map(|(_, bytes)| bytes), Some(len));
    assert_eq!(m.take_for_batch(1 << 20, 100, now), vec![h_c3]);
    assert_eq!(m.cuttable(), None);
    // Cut and not yet committed: a0, b0, a1, a2, c3; a block committing a0 leaves four.
    assert_eq!(m.cut_uncommitted(), 5);
    m.on_block(&[h_a0], &[(a.public_key(), account(1))]);
    assert_eq!(m.cut_uncommitted(), 4);
}

/// Batch mode: transactions committed before they were cut (by another validator's batch)
/// do not stay in the cut queue: it is compacted like the arrival queue.
#[test]
fn the_cut_queue_does_not_keep_committed_transactions() {
    let mut m = Mempool::for_batches(100_000, 1 << 30);
    let mut committed = Vec::new();
    let mut accounts = Vec::new();
    for i in 0..(QUEUE_SLACK as u32 + 100) {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let k = SecretKey::from_seed(&seed);
        let t = tx(&k, 0, 0);
        committed.push(t.hash());
        accounts.push((k.public_key(), account(1)));
        m.admit(t, account(0)).unwrap();
    }
    assert_eq!(m.cuts.as_ref().unwrap().ready.len(), QUEUE_SLACK + 100);
    m.on_block(&committed, &accounts);
    assert!(m.cuts.as_ref().unwrap().ready.is_empty());
    assert_eq!(m.cuttable(), None);
    assert_eq!(m.cut_uncommitted(), 0);
}
