//! One test suite, run against both backends.

use tally_crypto::Digest;
use tally_storage::{BlockCommit, MemStore, RocksStore, StateInstall, StorageError, Store};

fn commit(height: u64) -> BlockCommit {
    BlockCommit {
        height,
        block: format!("block {height}").into_bytes(),
        tx_index: vec![(Digest::of(&height.to_le_bytes()), vec![height as u8])],
        state: vec![
            (format!("k{height}").into_bytes(), Some(vec![height as u8])),
            (b"counter".to_vec(), Some(height.to_le_bytes().to_vec())),
        ],
        meta: vec![(b"state_hash".to_vec(), vec![height as u8; 4])],
        sync: height.is_multiple_of(2),
    }
}

fn blocks_commit_in_order(s: &dyn Store) {
    assert_eq!(s.latest_height().unwrap(), 0);
    assert_eq!(s.block(1).unwrap(), None);
    assert_eq!(
        s.commit_block(commit(2)),
        Err(StorageError::OutOfOrder {
            expected: 1,
            got: 2
        })
    );
    for h in 1..=5 {
        s.commit_block(commit(h)).unwrap();
    }
    assert_eq!(s.latest_height().unwrap(), 5);
    assert!(matches!(
        s.commit_block(commit(5)),
        Err(StorageError::OutOfOrder { .. })
    ));
    // A refused commit wrote nothing.
    assert_eq!(s.latest_height().unwrap(), 5);
    assert_eq!(s.block(3).unwrap().unwrap(), b"block 3");
    assert_eq!(
        s.tx_index(&Digest::of(&3u64.to_le_bytes())).unwrap(),
        Some(vec![3])
    );
    assert_eq!(s.tx_index(&Digest::of(b"nope")).unwrap(), None);
    assert_eq!(
        s.state_get(b"counter").unwrap(),
        Some(5u64.to_le_bytes().to_vec())
    );
    assert_eq!(s.meta_get(b"state_hash").unwrap(), Some(vec![5; 4]));
}

fn state_deletes_and_scans(s: &dyn Store) {
    let mut c = commit(1);
    c.state = (0..10u8).map(|i| (vec![b's', i], Some(vec![i]))).collect();
    s.commit_block(c).unwrap();
    let mut c = commit(2);
    c.state = vec![(vec![b's', 3], None), (vec![b's', 4], Some(vec![44]))];
    s.commit_block(c).unwrap();
    assert_eq!(s.state_get(&[b's', 3]).unwrap(), None);
    assert_eq!(s.state_get(&[b's', 4]).unwrap(), Some(vec![44]));
    let all = s.state_scan(None, 100).unwrap();
    assert_eq!(all.len(), 9);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    let page1 = s.state_scan(None, 4).unwrap();
    let page2 = s.state_scan(Some(&page1.last().unwrap().0), 4).unwrap();
    let page3 = s.state_scan(Some(&page2.last().unwrap().0), 4).unwrap();
    let paged: Vec<_> = page1.into_iter().chain(page2).chain(page3).collect();
    assert_eq!(paged, all);
}

fn consensus_records(s: &dyn Store) {
    s.write_consensus(
        &[
            (b"pbft/a/1".to_vec(), Some(vec![1])),
            (b"pbft/a/2".to_vec(), Some(vec![2])),
            (b"pbft/b/1".to_vec(), Some(vec![3])),
            (b"raft/x".to_vec(), Some(vec![4])),
        ],
        &[],
        true,
    )
    .unwrap();
    assert_eq!(s.consensus_get(b"pbft/a/2").unwrap(), Some(vec![2]));
    let a = s.consensus_scan(b"pbft/a/").unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(s.consensus_scan(b"pbft/").unwrap().len(), 3);
    s.write_consensus(&[(b"pbft/a/1".to_vec(), None)], &[], false)
        .unwrap();
    assert_eq!(s.consensus_scan(b"pbft/a/").unwrap().len(), 1);
    assert_eq!(s.consensus_get(b"pbft/a/1").unwrap(), None);
    // A range delete takes exactly [start, end), in the same write as the puts after it.
    s.write_consensus(
        &[(b"pbft/c".to_vec(), Some(vec![5]))],
        &[(b"pbft/".to_vec(), b"pbft/b/2".to_vec())],
        true,
    )
    .unwrap();
    assert_eq!(s.consensus_scan(b"pbft/").unwrap().len(), 1);
    assert_eq!(s.consensus_get(b"pbft/c").unwrap(), Some(vec![5]));
    assert_eq!(s.consensus_get(b"raft/x").unwrap(), Some(vec![4]));
    // Consensus records and blocks are separate: no block was written.
    assert_eq!(s.latest_height().unwrap(), 0);
}

fn batches_stored_and_removed(s: &dyn Store) {
    s.batches_put(
        &[
            (b"b2".to_vec(), b"second".to_vec()),
            (b"b1".to_vec(), b"first".to_vec()),
        ],
        true,
    )
    .unwrap();
    s.batches_put(&[(b"b3".to_vec(), b"third".to_vec())], false)
        .unwrap();
    // What a validator does before attesting a batch it stored unsynced.
    s.sync_writes().unwrap();
    assert_eq!(s.batch_get(b"b1").unwrap(), Some(b"first".to_vec()));
    assert_eq!(s.batch_get(b"b9").unwrap(), None);
    s.batches_delete(&[b"b2".to_vec(), b"b9".to_vec()]).unwrap();
    assert_eq!(
        s.batches_scan().unwrap(),
        vec![
            (b"b1".to_vec(), b"first".to_vec()),
            (b"b3".to_vec(), b"third".to_vec())
        ]
    );
    // Batches are not state, blocks or consensus records.
    assert_eq!(s.state_get(b"b1").unwrap(), None);
    assert_eq!(s.consensus_get(b"b1").unwrap(), None);
}

fn evidence_kept(s: &dyn Store) {
    s.evidence_put(b"b", b"two").unwrap();
    s.evidence_put(b"a", b"one").unwrap();
    s.evidence_put(b"b", b"two again").unwrap();
    assert_eq!(
        s.evidence_scan().unwrap(),
        vec![
            (b"a".to_vec(), b"one".to_vec()),
            (b"b".to_vec(), b"two again".to_vec())
        ]
    );
}

/// A snapshot keeps seeing the state of when it was taken; an install replaces the state
/// and the blocks above its height in one write.
fn snapshots_and_installs(s: &dyn Store) {
    for h in 1..=3 {
        s.commit_block(commit(h)).unwrap();
    }
    {
        let snap = s.snapshot();
        s.commit_block(commit(4)).unwrap();
        assert_eq!(snap.latest_height().unwrap(), 3);
        let seen = snap.state_scan(None, 100).unwrap();
        assert!(seen.iter().all(|(k, _)| k != b"k4"), "{seen:?}");
        assert!(
            seen.contains(&(b"counter".to_vec(), 3u64.to_le_bytes().to_vec())),
            "{seen:?}"
        );
        let page = snap.state_scan(None, 2).unwrap();
        let rest = snap.state_scan(Some(&page[1].0), 100).unwrap();
        assert_eq!(page.len() + rest.len(), seen.len());
    }
    assert_eq!(s.state_get(b"k4").unwrap(), Some(vec![4]));
    s.install_state(StateInstall {
        height: 2,
        state: vec![(b"x".to_vec(), vec![1]), (b"counter".to_vec(), vec![2])],
        blocks: vec![(2, b"block 2 from a peer".to_vec())],
        tx_index_delete: vec![
            Digest::of(&3u64.to_le_bytes()),
            Digest::of(&4u64.to_le_bytes()),
        ],
        tx_index_put: vec![(Digest::of(b"t"), vec![9])],
        meta: vec![(b"state_hash".to_vec(), vec![2; 4])],
    })
    .unwrap();
    assert_eq!(s.latest_height().unwrap(), 2);
    assert_eq!(
        s.state_scan(None, 100).unwrap(),
        vec![(b"counter".to_vec(), vec![2]), (b"x".to_vec(), vec![1])]
    );
    assert_eq!(s.block(1).unwrap().unwrap(), b"block 1");
    assert_eq!(s.block(2).unwrap().unwrap(), b"block 2 from a peer");
    assert_eq!(s.block(3).unwrap(), None);
    assert_eq!(s.block(4).unwrap(), None);
    assert_eq!(s.tx_index(&Digest::of(&3u64.to_le_bytes())).unwrap(), None);
    assert_eq!(s.tx_index(&Digest::of(b"t")).unwrap(), Some(vec![9]));
    assert_eq!(s.meta_get(b"state_hash").unwrap(), Some(vec![2; 4]));
    // The chain goes on from the installed height.
    s.commit_block(commit(3)).unwrap();
    assert_eq!(s.latest_height().unwrap(), 3);
}

fn meta_outside_blocks(s: &dyn Store) {
    s.meta_put(&[(b"genesis_hash".to_vec(), vec![7; 32])], true)
        .unwrap();
    assert_eq!(s.meta_get(b"genesis_hash").unwrap(), Some(vec![7; 32]));
    assert_eq!(s.latest_height().unwrap(), 0);
}

fn initialize_once(s: &dyn Store) {
    s.initialize(
        vec![(b"a".to_vec(), vec![1])],
        vec![(b"g".to_vec(), vec![2])],
    )
    .unwrap();
    assert_eq!(s.state_get(b"a").unwrap(), Some(vec![1]));
    assert_eq!(s.meta_get(b"g").unwrap(), Some(vec![2]));
    assert_eq!(
        s.initialize(vec![(b"b".to_vec(), vec![1])], vec![]),
        Err(StorageError::AlreadyInitialized)
    );
    assert_eq!(s.state_get(b"b").unwrap(), None);
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn blocks_commit_in_order() {
                let (_guard, s) = $make;
                super::blocks_commit_in_order(&s);
            }
            #[test]
            fn state_deletes_and_scans() {
                let (_guard, s) = $make;
                super::state_deletes_and_scans(&s);
            }
            #[test]
            fn consensus_records() {
                let (_guard, s) = $make;
                super::consensus_records(&s);
            }
            #[test]
            fn initialize_once() {
                let (_guard, s) = $make;
                super::initialize_once(&s);
            }
            #[test]
            fn meta_outside_blocks() {
                let (_guard, s) = $make;
                super::meta_outside_blocks(&s);
            }
            #[test]
            fn batches_stored_and_removed() {
                let (_guard, s) = $make;
                super::batches_stored_and_removed(&s);
            }
            #[test]
            fn evidence_kept() {
                let (_guard, s) = $make;
                super::evidence_kept(&s);
            }
            #[test]
            fn snapshots_and_installs() {
                let (_guard, s) = $make;
                super::snapshots_and_installs(&s);
            }
        }
    };
}

suite!(mem, ((), MemStore::new()));
suite!(rocks, {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path()).unwrap();
    (dir, s)
});

#[test]
fn rocks_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksStore::open(dir.path()).unwrap();
        for h in 1..=3 {
            s.commit_block(commit(h)).unwrap();
        }
        s.write_consensus(&[(b"c".to_vec(), Some(vec![9]))], &[], true)
            .unwrap();
        s.evidence_put(b"e", b"proof").unwrap();
        s.batches_put(&[(b"batch".to_vec(), b"body".to_vec())], true)
            .unwrap();
    }
    let s = RocksStore::open(dir.path()).unwrap();
    assert_eq!(s.batch_get(b"batch").unwrap(), Some(b"body".to_vec()));
    assert_eq!(s.latest_height().unwrap(), 3);
    assert_eq!(s.block(2).unwrap().unwrap(), b"block 2");
    assert_eq!(s.consensus_get(b"c").unwrap(), Some(vec![9]));
    assert_eq!(
        s.evidence_scan().unwrap(),
        vec![(b"e".to_vec(), b"proof".to_vec())]
    );
    assert!(s.size_bytes() > 0 || s.block(1).unwrap().is_some());
}

/// Total bytes of the write-ahead log files in `dir`.
fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn rocks_write_ahead_log_stays_bounded() {
    // Large blocks, and a meta entry per block as the chain writes: the small meta family
    // must not keep every log alive. 192 MiB written; the log stays near its 64 MiB bound.
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path()).unwrap();
    for h in 1..=384u64 {
        let mut c = commit(h);
        c.block = vec![h as u8; 512 * 1024];
        c.sync = false;
        s.commit_block(c).unwrap();
    }
    let wal = wal_bytes(dir.path());
    assert!(
        wal <= 100 * 1024 * 1024,
        "write-ahead log holds {} MiB after 192 MiB written",
        wal >> 20
    );
    drop(s);
    let s = RocksStore::open(dir.path()).unwrap();
    assert_eq!(s.latest_height().unwrap(), 384);
    assert_eq!(s.block(7).unwrap().unwrap(), vec![7u8; 512 * 1024]);
}

#[test]
fn rocks_reports_the_memory_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksStore::open(dir.path()).unwrap();
    let before = s.memory_usage();
    for h in 1..=200 {
        s.commit_block(commit(h)).unwrap();
    }
    let after = s.memory_usage();
    assert!(
        after.memtables > before.memtables,
        "writes land in the memtables: {before:?} → {after:?}"
    );
    // One cache shared by every column family, counted once: never above its 32 MiB.
    assert!(after.block_cache <= 32 * 1024 * 1024, "{after:?}");
    assert_eq!(MemStore::new().memory_usage(), Default::default());
}
