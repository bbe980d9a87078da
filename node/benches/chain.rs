//! The executor's work alone: `Chain::apply` on RocksDB (execution, state hash, and the
//! block's one atomic write) for blocks of signed 512-byte puts from many accounts — the
//! workload of `tally bench`. Signatures are checked before the clock starts (a node checks
//! them at admission), so the figure is what a committed transaction costs the executor
//! thread once its signature is known good.
//!
//! `cargo bench -p tally-node --bench chain` (TALLY_BENCH_TXS sets how many transactions,
//! TALLY_BENCH_BLOCK the block size). Prints µs per transaction: the median of five rounds,
//! as wall time of the applying thread and as CPU time of the whole process (RocksDB's
//! flush and compaction threads included: they share a validator's cores). Each transaction
//! puts a new key, as in `tally bench`, so the state grows and compaction has work to do;
//! take at least 200,000 transactions to see it.

use std::sync::Arc;
use std::time::Instant;

use tally_crypto::{ChainId, SecretKey};
use tally_genesis::{ConsensusParams, Genesis, GenesisAccount, Protocol, Validator};
use tally_ledger::{Action, Transaction, check_transactions};
use tally_node::execution::chain::Chain;
use tally_storage::{RocksStore, Store};

const ACCOUNTS: usize = 2000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn account(i: usize) -> SecretKey {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SecretKey::from_seed(&seed)
}

fn main() {
    let total = env("TALLY_BENCH_TXS", 40_000);
    let block = env("TALLY_BENCH_BLOCK", 100).max(1);
    let chain_id = ChainId::new("bench").unwrap();
    let keys: Vec<SecretKey> = (0..ACCOUNTS).map(account).collect();
    let genesis = Genesis {
        chain_id: chain_id.clone(),
        consensus: ConsensusParams::new(Protocol::Pbft),
        validators: (1..=4u8)
            .map(|i| Validator {
                name: format!("v{i}"),
                public_key: SecretKey::from_seed(&[i; 32]).public_key(),
                p2p: format!("127.0.0.1:{}", 20000 + i as u16),
            })
            .collect(),
        accounts: keys
            .iter()
            .map(|k| GenesisAccount {
                address: k.public_key(),
                balance: 1_000_000,
            })
            .collect(),
    };
    // Every round writes its own database: a round's blocks are the same transactions.
    let prep = Instant::now();
    let txs: Vec<Vec<u8>> = (0..total)
        .map(|i| {
            let sender = i % ACCOUNTS;
            Transaction {
                chain_id: chain_id.clone(),
                sender: keys[sender].public_key(),
                nonce: (i / ACCOUNTS) as u64,
                action: Action::Put {
                    key: (i as u64).to_le_bytes().to_vec(),
                    value: vec![(i % 251) as u8; 386],
                },
            }
            .sign(&keys[sender])
            .unwrap()
            .into_encoded()
        })
        .collect();
    let blocks: Vec<(Vec<Vec<u8>>, Vec<_>)> = txs
        .chunks(block)
        .map(|c| (c.to_vec(), check_transactions(&chain_id, c)))
        .collect();
    eprintln!(
        "{total} transactions of {} bytes in blocks of {block}, prepared in {:.1} s",
        txs[0].len(),
        prep.elapsed().as_secs_f64()
    );
    let (mut rounds, mut cpu) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let mut chain = Chain::open(store, &genesis).unwrap();
        let blocks = blocks.clone();
        let started = Instant::now();
        let cpu_started = process_cpu_seconds();
        for (i, (raw, checked)) in blocks.into_iter().enumerate() {
            let applied = chain
                .apply(i as u64 + 1, raw, &checked, None, false)
                .unwrap();
            assert!(
                applied
                    .block
                    .outcomes
                    .iter()
                    .all(|o| *o == tally_ledger::TxOutcome::Ok)
            );
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / total as f64;
        let cpu_us = (process_cpu_seconds() - cpu_started) * 1e6 / total as f64;
        eprintln!("round {round}: {us:.2} µs per transaction, {cpu_us:.2} µs of process CPU");
        rounds.push(us);
        cpu.push(cpu_us);
    }
    rounds.sort_by(|a, b| a.total_cmp(b));
    cpu.sort_by(|a, b| a.total_cmp(b));
    println!(
        "chain apply: median {:.2} µs per transaction (min {:.2}, max {:.2}); process CPU \
         median {:.2} µs (min {:.2}, max {:.2})",
        rounds[2], rounds[0], rounds[4], cpu[2], cpu[0], cpu[4]
    );
}

/// User + system CPU of this process so far (every thread), from `/proc/self/stat`; 0 where
/// there is no procfs.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) end at the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}
