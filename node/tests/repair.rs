//! A diverged state, end to end (finding 4 of issue 18): four `tally` processes on
//! loopback; one node's database gets a corrupt state entry while it is stopped (an
//! account's balance changed, as a bad disk or an operator's edit would); it restarts
//! without noticing. Once it executes a transaction of that account its blocks differ from
//! the others', and at the next stable checkpoint it must notice, say so (log, metric), stop
//! voting, replace its state with the certified one from its peers — verified against the
//! checkpoint — and rejoin: same block hashes and balances as the others, and a quorum
//! that needs it commits.

mod support;

use std::time::Instant;

use serde_json::json;
use support::{Net, metric};
use tally_genesis::NodeConfig;
use tally_ledger::Account;
use tally_ledger::state::account_key;
use tally_storage::{RocksStore, StateInstall, Store};

/// Corrupted after 12 blocks: the divergence comes after the checkpoint at 8, whose snapshot
/// the peers still hold and where node3's chain is still right. The repair installs that
/// state and re-executes the certified blocks after it: nothing is taken on a peer's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_node_notices_repairs_from_its_peers_and_rejoins() {
    let log = diverge_and_repair(12, "batches").await;
    assert!(log.contains("replaced=0"), "{log}");
}

/// The same on a network that orders transactions one by one (`payload: transactions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_node_repairs_with_the_transaction_payload_too() {
    let log = diverge_and_repair(12, "transactions").await;
    assert!(log.contains("replaced=0"), "{log}");
}

/// Corrupted after 4 blocks: no snapshot predates the divergence, so node3's blocks after
/// the point where its chain matches the certified one are replaced by its peer's, checked
/// against the certified hash chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergence_older_than_any_snapshot_is_repaired_too() {
    let log = diverge_and_repair(4, "batches").await;
    assert!(!log.contains("replaced=0"), "{log}");
}

/// Submits a transfer from `sender` to node0 and waits until node1 executed it.
async fn transfer(net: &Net, sender: &tally_crypto::SecretKey, nonce: &mut u64) {
    let tx = net.transfer(sender, *nonce, 1, 1);
    *nonce += 1;
    net.submit_and_wait(0, 1, &tx).await;
}

/// Runs the scenario with `before` blocks committed before the corruption, on a network
/// ordering `payload`; returns node3's log. (With data batches the repair must also carry
/// the markers of the batches each block executed: before it did, a repaired node stopped.)
async fn diverge_and_repair(before: u64, payload: &str) -> String {
    let mut net = Net::start(
        4,
        &[
            "--view-change-timeout-ms",
            "1000",
            "--checkpoint-interval",
            "8",
            "--watermark-window",
            "32",
            "--payload",
            payload,
        ],
    );
    net.wait_up(&[0, 1, 2, 3]).await;
    let sender = net.account_key(0);
    let mut nonce = 0;
    // Some blocks everywhere.
    for _ in 0..before {
        transfer(&net, &sender, &mut nonce).await;
    }
    net.until(30, "node3 caught up", || async {
        net.height(3).await >= net.height(0).await
    })
    .await;

    // Corrupt node3's state: account 0's balance, in place, state hash untouched.
    net.kill(3);
    {
        let config = NodeConfig::load(&net.home(3)).unwrap();
        let data = if config.data_dir.is_absolute() {
            config.data_dir.clone()
        } else {
            net.home(3).join(&config.data_dir)
        };
        let store = RocksStore::open(&data).unwrap();
        let height = store.latest_height().unwrap();
        let key = account_key(&sender.public_key());
        let mut state = store.state_scan(None, usize::MAX).unwrap();
        let entry = state
            .iter_mut()
            .find(|(k, _)| *k == key)
            .expect("account 0");
        let mut account = Account::decode(&entry.1).unwrap();
        account.balance += 1_000;
        entry.1 = account.encode().to_vec();
        store
            .install_state(StateInstall {
                height,
                state,
                ..Default::default()
            })
            .unwrap();
    }
    net.launch(3);
    net.wait_up(&[3]).await;
    let corrupted_at = net.height(3).await;

    // Transactions of account 0 until well past the next checkpoints.
    let started = Instant::now();
    for _ in 0..30 {
        transfer(&net, &sender, &mut nonce).await;
    }
    let target = net.height(0).await;
    let took = net
        .until(60, "node3 repaired and caught up", || async {
            let text = net.metrics(3).await;
            metric(&text, "tally_state_repairs_total{outcome=\"ok\"}") >= 1.0
                && metric(&text, "tally_state_diverged ") == 0.0
                && net.height(3).await >= target
        })
        .await;
    let log = net.log(3);
    assert!(
        log.contains("state diverged from the checkpoint a quorum certified"),
        "node3 said nothing:\n{log}"
    );
    assert!(log.contains("installed the certified state"), "{log}");
    for line in log.lines().filter(|l| {
        l.contains("diverged") || l.contains("certified state") || l.contains("repaired")
    }) {
        eprintln!("node3: {line}");
    }
    // Without terminal colours (the log's fields are `name=value` then).
    let log: String = log
        .split('\x1b')
        .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
        .collect();
    eprintln!(
        "node3 corrupted at height {corrupted_at}; repaired and at height {target} {} ms after the load began ({} ms waiting after it)",
        started.elapsed().as_millis(),
        took.as_millis()
    );

    // Rejoined: the same chain and state as the others.
    net.assert_same_chain(&[0, 1, 2, 3], target).await;
    let balance = |i| {
        let net = &net;
        let address = sender.public_key().to_hex();
        async move {
            net.rpc(i, "account_get", json!({"address": address}))
                .await
                .unwrap()["balance"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(balance(3).await, balance(0).await);

    // And it votes: with node0 stopped, a quorum of 3 needs node3.
    net.kill(0);
    let tx = net.transfer(&sender, nonce, 1, 1);
    net.submit_and_wait(1, 2, &tx).await;
    let h = net.height(2).await;
    net.until(30, "node3 commits with nodes 1 and 2", || async {
        net.height(3).await >= h
    })
    .await;
    net.assert_same_chain(&[1, 2, 3], h).await;
    assert_eq!(
        net.status(3).await.unwrap()["state_diverged"],
        false,
        "chain_status reports the repair done"
    );
    log
}
