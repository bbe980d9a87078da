//! The batch data path's per-transaction stages, against the budget in
//! `docs/architecture.md` ("The batch data path: budget"): what receiving and storing a batch
//! costs every validator, and what attesting it costs an attester. 512-byte signed puts from
//! many accounts, batches of `TALLY_BENCH_BATCH` (default 512) transactions.
//!
//! `cargo bench -p tally-node --bench batches` (TALLY_BENCH_TXS sets how many transactions).
//! Prints µs per transaction for each stage: the median of five rounds.

use std::sync::Arc;
use std::time::Instant;

use tally_consensus::{ValidatorId, ValidatorSet};
use tally_crypto::{ChainId, KeyCache, SecretKey};
use tally_ledger::{Action, Transaction};
use tally_node::batches::attest::check_batch;
use tally_node::batches::{BatchStore, Quota, TxBatch};
use tally_storage::{RocksStore, Store};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let total = env("TALLY_BENCH_TXS", 20_480);
    let per_batch = env("TALLY_BENCH_BATCH", 512).max(1);
    let chain = ChainId::new("bench").unwrap();
    let validators = ValidatorSet::new(
        &(1..=4u8)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let accounts: Vec<SecretKey> = (0..2000u64)
        .map(|i| {
            let mut seed = [0x5au8; 32];
            seed[..8].copy_from_slice(&i.to_le_bytes());
            SecretKey::from_seed(&seed)
        })
        .collect();
    let txs: Vec<Vec<u8>> = (0..total)
        .map(|i| {
            let key = &accounts[i % accounts.len()];
            let tx = Transaction {
                chain_id: chain.clone(),
                sender: key.public_key(),
                nonce: (i / accounts.len()) as u64,
                action: Action::Put {
                    key: format!("k{i}").into_bytes(),
                    value: vec![0xab; 400],
                },
            };
            tx.sign(key).unwrap().into_encoded()
        })
        .collect();
    let avg = txs.iter().map(Vec::len).sum::<usize>() / txs.len();
    let batches: Vec<TxBatch> = txs
        .chunks(per_batch)
        .enumerate()
        .map(|(i, c)| TxBatch::new(ValidatorId(1), i as u64, c.to_vec()))
        .collect();
    let encoded: Vec<Vec<u8>> = batches.iter().map(TxBatch::encode).collect();
    let per_tx = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / total as f64;

    let (mut decode, mut store_unsynced, mut store_synced, mut attest) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..5 {
        let t = Instant::now();
        let decoded: Vec<TxBatch> = encoded
            .iter()
            .map(|b| TxBatch::decode(b, &validators).unwrap())
            .collect();
        decode.push(per_tx(t));

        for (sync, out) in [(false, &mut store_unsynced), (true, &mut store_synced)] {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
            let mut s = BatchStore::open(
                store,
                validators.clone(),
                Quota {
                    batches: usize::MAX,
                    bytes: usize::MAX,
                },
            )
            .unwrap();
            let t = Instant::now();
            for b in decoded.iter().cloned() {
                s.insert(vec![b], sync).unwrap();
            }
            out.push(per_tx(t));
        }

        let keys = KeyCache::new(4096);
        let t = Instant::now();
        for b in &batches {
            check_batch(b, &chain, &keys).unwrap();
        }
        attest.push(per_tx(t));
    }
    println!(
        "{total} transactions of {avg} bytes in batches of {per_batch}; µs per transaction, median of 5:"
    );
    println!(
        "  receive: decode and check a batch against its header  {:>6.2}",
        median(decode)
    );
    println!(
        "  store: one RocksDB write per batch, unsynced          {:>6.2}",
        median(store_unsynced)
    );
    println!(
        "  store: one RocksDB write per batch, synced            {:>6.2}",
        median(store_synced)
    );
    println!(
        "  attest: decode every transaction, batch-verify        {:>6.2}",
        median(attest)
    );
}
