//! A primary proposes only what its own pool holds. Transactions admitted by a backup while
//! the primary was down never reach it by gossip (gossip is not replayed); the primary pulls
//! them from its peers when its pool runs low. With data batches, the proofs broadcast
//! while it was down never reach it either; their authors announce them again every second.
//! Real processes on loopback.
//!
//! The view-change timeout is 60 s here, so without the pull (or the announcements) nothing
//! would commit for a minute: the test's 20 s bound fails.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::Net;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_pulls_what_its_peers_admitted_while_it_was_down() {
    restarted_primary("transactions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_hears_the_proofs_made_while_it_was_down() {
    restarted_primary("batches").await;
}

async fn restarted_primary(payload: &str) {
    let mut net = Net::start(
        4,
        &["--view-change-timeout-ms", "60000", "--payload", payload],
    );
    net.wait_up(&[0, 1, 2, 3]).await;
    net.until(30, "peers connected", || async {
        let s = net.status(1).await;
        s.is_some_and(|s| s["peers"].as_u64() == Some(3))
    })
    .await;

    // Node 0 is the primary of view 0. Down; ten transfers go to node 1 and spread to the
    // other two backups.
    net.kill(0);
    let key = net.account_key(0);
    let nonce = net.nonce(1, &key).await;
    let txs: Vec<_> = (0..10)
        .map(|i| net.transfer(&key, nonce + i, 1, 1))
        .collect();
    let hex_txs: Vec<String> = txs.iter().map(|t| hex::encode(t.encoded())).collect();
    let results = net
        .rpc(1, "tx_submit_batch", json!({ "txs": hex_txs }))
        .await
        .unwrap();
    for r in results.as_array().unwrap() {
        assert!(r.get("hash").is_some(), "refused: {r}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        net.height(1).await,
        0,
        "nothing can commit without the primary"
    );

    // Back up with an empty pool, still the primary.
    net.launch(0);
    let started = Instant::now();
    net.wait_up(&[0]).await;
    let last = txs.last().unwrap().hash().to_hex();
    let s = net
        .rpc(1, "tx_wait", json!({"hash": last, "timeout_ms": 20_000}))
        .await
        .unwrap();
    assert_eq!(s["status"], "committed", "{s}\n{}", net.log(0));
    let took = started.elapsed();
    for t in &txs {
        let s = net
            .rpc(1, "tx_status", json!({"hash": t.hash().to_hex()}))
            .await
            .unwrap();
        assert_eq!(s["status"], "committed", "{s}");
    }
    let metrics = net.metrics(0).await;
    let pulled = metrics
        .lines()
        .find(|l| l.starts_with("tally_mempool_admitted_total{source=\"pull\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    if payload == "transactions" {
        assert!(pulled >= 10.0, "pulled {pulled}");
    }
    let view = net.status(1).await.unwrap()["view"].as_u64().unwrap();
    assert_eq!(view, 0, "committed without a view change");
    println!(
        "restarted primary ({payload}): all 10 committed {:.2} s after its launch, {pulled} pulled",
        took.as_secs_f64()
    );
}
