//! A child process commits blocks to RocksDB in a loop; the parent kills it with SIGKILL at
//! random moments, several times. After every kill the database must reopen with every block
//! whole, the hash chain intact and the running state root equal to one recomputed from the
//! whole state; at the end a replay of every block from genesis (in memory) must reproduce
//! every block hash — nothing half-written, nothing lost.
//!
//! The child is this test binary re-executed on the ignored test `crash_child`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_crypto::{ChainId, SecretKey};
use tally_genesis::{ConsensusParams, Genesis, GenesisAccount, Protocol, Validator};
use tally_ledger::{Action, Transaction, check_transactions};
use tally_node::execution::chain::Chain;
use tally_storage::{MemStore, RocksStore, Store};

const CHILD_ENV: &str = "TALLY_CRASH_CHILD_DIR";
const ACCOUNTS: u8 = 8;

fn account(i: u8) -> SecretKey {
    SecretKey::from_seed(&[100 + i; 32])
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: ChainId::new("crash-test").unwrap(),
        consensus: ConsensusParams::new(Protocol::Pbft),
        validators: (1..=4u8)
            .map(|i| Validator {
                name: format!("v{i}"),
                public_key: SecretKey::from_seed(&[i; 32]).public_key(),
                p2p: format!("127.0.0.1:{}", 20000 + i as u16),
            })
            .collect(),
        accounts: (0..ACCOUNTS)
            .map(|i| GenesisAccount {
                address: account(i).public_key(),
                balance: 1_000_000,
            })
            .collect(),
    }
}

/// The batch for `height`, derived from the height and the chain's current state only, so a
/// replay from genesis regenerates exactly the same batches. Some transactions fail on
/// purpose (bad nonce, insufficient balance); puts make blocks a few tens of KiB.
fn batch_for(chain: &Chain, height: u64) -> Vec<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(height);
    let chain_id = chain.chain_id().clone();
    let mut nonces: Vec<u64> = (0..ACCOUNTS)
        .map(|i| chain.account(&account(i).public_key()).unwrap().nonce)
        .collect();
    (0..40)
        .map(|_| {
            let from = rng.random_range(0..ACCOUNTS);
            let key = account(from);
            let skew = rng.random_range(0..20) == 0;
            let nonce = nonces[from as usize] + skew as u64;
            let action = if rng.random_bool(0.5) {
                Action::Transfer {
                    to: account(rng.random_range(0..ACCOUNTS)).public_key(),
                    amount: if rng.random_range(0..20) == 0 {
                        u64::MAX
                    } else {
                        rng.random_range(0..1000)
                    },
                }
            } else {
                Action::Put {
                    key: vec![rng.random_range(0..32u8)],
                    value: vec![height as u8; rng.random_range(0..1500)],
                }
            };
            if !skew {
                nonces[from as usize] += 1;
            }
            Transaction {
                chain_id: chain_id.clone(),
                sender: key.public_key(),
                nonce,
                action,
            }
            .sign(&key)
            .unwrap()
            .into_encoded()
        })
        .collect()
}

fn commit_next(chain: &mut Chain) {
    let height = chain.height() + 1;
    let txs = batch_for(chain, height);
    let checked = check_transactions(chain.chain_id(), &txs);
    chain.apply(height, txs, &checked, None, false).unwrap();
}

/// Runs only when re-executed by `kill_during_commit`: commits blocks until killed.
#[test]
#[ignore = "helper process for kill_during_commit"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.as_ref()).unwrap());
    let mut chain = Chain::open(store, &genesis()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        commit_next(&mut chain);
    }
}

/// Reopens the database and checks it; returns its height.
fn check_after_kill(dir: &std::path::Path) -> u64 {
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir).unwrap());
    // `open` itself checks that the stored state hash matches the latest block's root.
    let chain = Chain::open(store, &genesis()).unwrap();
    let mut prev = chain.genesis_hash();
    for h in 1..=chain.height() {
        let block = chain
            .block(h)
            .unwrap()
            .unwrap_or_else(|| panic!("block {h} missing"));
        assert_eq!(block.header.height, h);
        assert_eq!(block.header.prev_hash, prev, "chain broken at {h}");
        assert_eq!(block.txs.len(), block.outcomes.len());
        prev = block.hash();
    }
    assert_eq!(prev, chain.last_hash());
    assert_eq!(chain.recompute_state_root().unwrap(), chain.state_root());
    chain.height()
}

#[test]
fn kill_during_commit() {
    let kills: usize = std::env::var("TALLY_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut height = 0;
    let mut progressed = 0;
    for round in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child must die by the signal"
        );
        let now = check_after_kill(dir.path());
        // Process death loses nothing a returned write put in the OS: height never goes back.
        assert!(
            now >= height,
            "round {round}: height went back from {height} to {now}"
        );
        progressed += (now > height) as usize;
        eprintln!("round {round}: killed at height {now}");
        height = now;
    }
    assert!(
        progressed >= kills / 2,
        "the child made too little progress to test anything"
    );

    // Replay every block from genesis in memory: the same batches, the same block hashes.
    let disk: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    let disk_chain = Chain::open(disk, &genesis()).unwrap();
    let mut replay = Chain::open(Arc::new(MemStore::new()), &genesis()).unwrap();
    while replay.height() < disk_chain.height() {
        let h = replay.height() + 1;
        let stored = disk_chain.block(h).unwrap().unwrap();
        assert_eq!(stored.txs, batch_for(&replay, h), "batch {h}");
        commit_next(&mut replay);
        assert_eq!(
            replay.last_hash(),
            stored.hash(),
            "block {h} differs on replay"
        );
    }
    assert_eq!(replay.state_root(), disk_chain.state_root());
    eprintln!("replayed {} blocks after {kills} kills", replay.height());
}

#[test]
fn wrong_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
    Chain::open(store.clone(), &genesis()).unwrap();
    let mut other = genesis();
    other.chain_id = ChainId::new("another").unwrap();
    let err = Chain::open(store, &other).err().unwrap();
    assert!(err.to_string().contains("genesis hash"), "{err}");
}
