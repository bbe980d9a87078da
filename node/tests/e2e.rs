//! End to end, with real processes on loopback: a 4-validator network from `tally
//! testnet`, real libp2p and RocksDB. One scenario after another on one network:
//! 1. 1,000 signed transactions over JSON-RPC, spread over all nodes: all commit, and every
//!    node has the same block hash at every height;
//! 2. SIGKILL the primary: a view change happens and new transactions commit;
//! 3. restart it: it catches up to the same hash;
//! 4. wipe one node's data: it resyncs, verifying certificates, to the same hash;
//! 5. SIGSTOP one node for 10 s: the others keep committing; it catches up after SIGCONT;
//! 6. bad input (replayed, other chain, bad signature, malformed JSON) gets its documented
//!    error and changes nothing;
//! 7. a put reads back with `data_get`; an untouched account is zero, not an error;
//! 8. `tx_wait` for hashes that never commit leaves no entry behind once it times out.
//!
//! Figures (kill → first commit in the new view, catch-up times) are printed.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Net, metric};
use tally_crypto::SecretKey;

/// Submits `count` transfers from each account (spread over all live nodes in batches),
/// waits until all commit; returns the hashes.
async fn load(net: &Net, nodes: &[usize], per_account: u64) -> Vec<String> {
    let keys: Vec<SecretKey> = (0..net.info.accounts.len())
        .map(|a| net.account_key(a))
        .collect();
    let mut nonces = Vec::new();
    for k in &keys {
        nonces.push(net.nonce(nodes[0], k).await);
    }
    let mut hashes = Vec::new();
    let mut txs = Vec::new();
    for round in 0..per_account {
        for (a, k) in keys.iter().enumerate() {
            let tx = net.transfer(k, nonces[a] + round, (a + 1) % keys.len(), 1);
            hashes.push(tx.hash().to_hex());
            txs.push(hex::encode(tx.encoded()));
        }
    }
    // Each account's transactions go to one node, in nonce order (what docs/transactions.md
    // asks of a client: with data batches, a node keeps an account's nonces in order, nodes
    // do not keep them in order between each other).
    let mut per_node: Vec<Vec<String>> = vec![Vec::new(); nodes.len()];
    for (i, tx) in txs.into_iter().enumerate() {
        per_node[(i % keys.len()) % nodes.len()].push(tx);
    }
    for (slot, txs) in per_node.iter().enumerate() {
        for chunk in txs.chunks(50) {
            let results = net
                .rpc(nodes[slot], "tx_submit_batch", json!({ "txs": chunk }))
                .await
                .unwrap();
            for r in results.as_array().unwrap() {
                assert!(r.get("hash").is_some(), "refused: {r}");
            }
        }
    }
    for h in &hashes {
        let node = nodes[0];
        let s = net
            .rpc(node, "tx_wait", json!({"hash": h, "timeout_ms": 60_000}))
            .await
            .unwrap_or_else(|e| panic!("tx {h} not committed: {e}"));
        assert_eq!(s["status"], "committed", "{s}");
    }
    hashes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_end_to_end() {
    scenario("transactions").await;
}

/// The same scenario with `payload: batches`: transactions travel in data batches, proofs
/// are ordered, bodies come from the batch store (or are fetched from a proof's holders).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_end_to_end_with_data_batches() {
    scenario("batches").await;
}

async fn scenario(payload: &str) {
    let mut net = Net::start(
        4,
        &[
            "--view-change-timeout-ms",
            "1000",
            "--checkpoint-interval",
            "16",
            "--watermark-window",
            "64",
            "--payload",
            payload,
        ],
    );
    let all = [0, 1, 2, 3];
    net.wait_up(&all).await;

    // Block subscription over WebSocket, on the RPC port.
    use jsonrpsee::core::client::SubscriptionClientT;
    let ws_url = net.info.nodes[1].rpc.replace("http://", "ws://");
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(&ws_url)
        .await
        .unwrap();
    let mut blocks = ws
        .subscribe::<serde_json::Value, _>(
            "subscribe_blocks",
            jsonrpsee::rpc_params![],
            "unsubscribe_blocks",
        )
        .await
        .unwrap();

    // 1. A thousand transactions, all committed, identical chains.
    let started = Instant::now();
    let hashes = load(&net, &all, 250).await;
    assert_eq!(hashes.len(), 1000);
    let secs = started.elapsed().as_secs_f64();
    let height = net.height(0).await;
    net.until(30, "all nodes at the same height", || async {
        let mut ok = true;
        for i in all {
            ok &= net.height(i).await >= height;
        }
        ok
    })
    .await;
    net.assert_same_chain(&all, height).await;
    eprintln!(
        "1000 transactions committed in {secs:.2} s ({:.0} tx/s) in {height} blocks; chains identical",
        1000.0 / secs
    );
    let first = tokio::time::timeout(Duration::from_secs(10), blocks.next())
        .await
        .expect("a block notification")
        .expect("the subscription is open")
        .expect("a block");
    assert_eq!(
        first["height"], 1,
        "subscription delivers block 1 first: {first}"
    );
    assert!(first["certificate"]["signatures"].as_array().unwrap().len() >= 3);
    // The hashes a subscriber gets (from the executor) are those of the bodies.
    let (bodies, tx_hashes) = (
        first["txs"].as_array().unwrap(),
        first["tx_hashes"].as_array().unwrap(),
    );
    assert!(!bodies.is_empty());
    assert_eq!(bodies.len(), tx_hashes.len());
    for (body, hash) in bodies.iter().zip(tx_hashes) {
        let raw = hex::decode(body.as_str().unwrap()).unwrap();
        assert_eq!(
            tally_crypto::Digest::of(&raw).to_hex(),
            hash.as_str().unwrap()
        );
    }

    // The CLI's client commands against the live network.
    let network = net.dir.path().join("net/network.json");
    let nw = network.to_str().unwrap();
    let key0 = net.info.accounts[0].key_file.to_str().unwrap().to_string();
    let to = net.info.accounts[3].address.to_hex();
    let out = std::process::Command::new(support::TALLY)
        .args([
            "tx",
            "send",
            "--network",
            nw,
            "--from",
            &key0,
            "transfer",
            "--to",
            &to,
            "--amount",
            "3",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tx send: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("committed in block") && text.contains("certificate valid"),
        "{text}"
    );
    let out = std::process::Command::new(support::TALLY)
        .args(["block", "3", "--verify", "--network", nw])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("2f+1 nodes agree")
            && text.contains("certificate valid"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        vec!["account", to.as_str(), "--verify", "--network", nw],
        vec!["status", "--verify", "--network", nw],
    ] {
        let out = std::process::Command::new(support::TALLY)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // 2. Kill the primary.
    let status = net.status(1).await.unwrap();
    let view = status["view"].as_u64().unwrap();
    let primary = status["leader_index"].as_u64().unwrap() as usize;
    let live: Vec<usize> = all.iter().copied().filter(|i| *i != primary).collect();
    let killed_at = Instant::now();
    net.kill(primary);
    let key = net.account_key(0);
    let nonce = net.nonce(live[0], &key).await;
    let tx = net.transfer(&key, nonce, 1, 7);
    net.rpc(
        live[0],
        "tx_submit",
        json!({"tx": hex::encode(tx.encoded())}),
    )
    .await
    .unwrap();
    let s = net
        .rpc(
            live[0],
            "tx_wait",
            json!({"hash": tx.hash().to_hex(), "timeout_ms": 60_000}),
        )
        .await
        .unwrap();
    let failover = killed_at.elapsed();
    assert_eq!(s["status"], "committed");
    let new_view = net.status(live[0]).await.unwrap()["view"].as_u64().unwrap();
    assert!(
        new_view > view,
        "a view change happened ({view} → {new_view})"
    );
    eprintln!(
        "primary node{primary} killed: first commit in view {new_view} after {:.2} s",
        failover.as_secs_f64()
    );
    load(&net, &live, 10).await;

    // 3. Restart it: it catches up to the same hash.
    let target = net.height(live[0]).await;
    let restarted_at = Instant::now();
    net.launch(primary);
    net.wait_up(&[primary]).await;
    let catch_up = net
        .until(60, "restarted node catches up", || async {
            net.height(primary).await >= target
        })
        .await;
    net.assert_same_chain(&[primary, live[0]], target).await;
    eprintln!(
        "restarted node{primary} caught up {target} blocks in {:.2} s ({:.2} s after launch)",
        catch_up.as_secs_f64(),
        restarted_at.elapsed().as_secs_f64()
    );

    // 4. Wipe one node's data: it resyncs from peers, verifying every certificate.
    let wiped = live[1];
    net.signal(wiped, "-TERM");
    net.procs[wiped].take().unwrap().wait().unwrap();
    std::fs::remove_dir_all(net.home(wiped).join("data")).unwrap();
    load(&net, &[live[0], live[2]], 5).await;
    let target = net.height(live[0]).await;
    let wiped_at = Instant::now();
    net.launch(wiped);
    net.wait_up(&[wiped]).await;
    let resync = net
        .until(120, "wiped node resyncs", || async {
            net.height(wiped).await >= target
        })
        .await;
    net.assert_same_chain(&[wiped, live[0]], target).await;
    let log = net.log(wiped);
    assert!(
        log.contains("catching up from peers"),
        "sync progress is logged"
    );
    let metrics = net.metrics(wiped).await;
    let fetched = metric(&metrics, "tally_state_transfer_blocks_total");
    assert!(
        fetched >= 1.0,
        "blocks were fetched and verified: {fetched}"
    );
    eprintln!(
        "wiped node{wiped} resynced {target} blocks ({fetched} fetched with certificates) in {:.2} s ({:.2} s after launch)",
        resync.as_secs_f64(),
        wiped_at.elapsed().as_secs_f64()
    );

    // 5. SIGSTOP one node for 10 s: the others keep committing.
    let paused = live[2];
    let others: Vec<usize> = all.iter().copied().filter(|i| *i != paused).collect();
    net.signal(paused, "-STOP");
    let before = net.height(others[0]).await;
    let pause = Instant::now();
    load(&net, &others, 5).await;
    let during = net.height(others[0]).await;
    assert!(
        during > before,
        "others commit while node{paused} is stopped"
    );
    let rest = Duration::from_secs(10).saturating_sub(pause.elapsed());
    tokio::time::sleep(rest).await;
    net.signal(paused, "-CONT");
    let target = net.height(others[0]).await;
    let resumed = net
        .until(60, "paused node catches up", || async {
            net.height(paused).await >= target
        })
        .await;
    net.assert_same_chain(&[paused, others[0]], target).await;
    eprintln!(
        "node{paused} stopped 10 s: others went {before} → {during}; it caught up in {:.2} s",
        resumed.as_secs_f64()
    );

    // 6. Bad input gets its documented error and changes nothing.
    let node = others[0];
    let sender = net.account_key(2);
    let account_before = net
        .rpc(
            node,
            "account_get",
            json!({"address": sender.public_key().to_hex()}),
        )
        .await
        .unwrap();
    let height_before = net.height(node).await;
    // Replayed: an already committed transaction.
    let replay = &hashes[2];
    let committed = net
        .rpc(node, "tx_status", json!({"hash": replay}))
        .await
        .unwrap();
    let h = committed["height"].as_u64().unwrap();
    let block = net
        .rpc(node, "block_get", json!({"height": h}))
        .await
        .unwrap();
    let raw = block["txs"][committed["index"].as_u64().unwrap() as usize]
        .as_str()
        .unwrap()
        .to_string();
    let err = net
        .rpc(node, "tx_submit", json!({"tx": raw}))
        .await
        .unwrap_err();
    assert!(
        err.contains("-32003") || err.contains("stale nonce"),
        "replay: {err}"
    );
    // Another chain id.
    let other_chain = tally_ledger::Transaction {
        chain_id: tally_crypto::ChainId::new("another-chain").unwrap(),
        sender: sender.public_key(),
        nonce: account_before["nonce"].as_u64().unwrap(),
        action: tally_ledger::Action::Transfer {
            to: net.info.accounts[0].address,
            amount: 1,
        },
    }
    .sign(&sender)
    .unwrap();
    let err = net
        .rpc(
            node,
            "tx_submit",
            json!({"tx": hex::encode(other_chain.encoded())}),
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("-32002") && err.contains("wrong chain"),
        "other chain: {err}"
    );
    // A bad signature.
    let good = net.transfer(&sender, account_before["nonce"].as_u64().unwrap(), 0, 1);
    let mut bad = good.encoded().to_vec();
    let n = bad.len();
    bad[n - 5] ^= 1;
    let err = net
        .rpc(node, "tx_submit", json!({"tx": hex::encode(&bad)}))
        .await
        .unwrap_err();
    assert!(
        err.contains("-32001") && err.contains("invalid signature"),
        "bad signature: {err}"
    );
    // Malformed JSON.
    let body = raw_post(
        &net.info.nodes[node].rpc,
        "{\"jsonrpc\": \"2.0\", \"method\": tx_submit",
    )
    .await;
    assert!(body.contains("-32700"), "malformed JSON: {body}");
    let body = raw_post(
        &net.info.nodes[node].rpc,
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tx_submit\", \"params\": {\"tx\": 5}}",
    )
    .await;
    assert!(body.contains("-32602"), "bad params: {body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let account_after = net
        .rpc(
            node,
            "account_get",
            json!({"address": sender.public_key().to_hex()}),
        )
        .await
        .unwrap();
    assert_eq!(account_before, account_after, "nothing changed");
    let status = net
        .rpc(node, "tx_status", json!({"hash": good.hash().to_hex()}))
        .await
        .unwrap();
    assert_eq!(status["status"], "unknown");
    assert!(net.height(node).await >= height_before);

    // 7. A put's value reads back (and an untouched address or key is not an error).
    let put = tally_ledger::Transaction {
        chain_id: net.chain.clone(),
        sender: sender.public_key(),
        nonce: account_before["nonce"].as_u64().unwrap(),
        action: tally_ledger::Action::Put {
            key: b"greeting".to_vec(),
            value: b"hello".to_vec(),
        },
    }
    .sign(&sender)
    .unwrap();
    net.rpc(node, "tx_submit", json!({"tx": hex::encode(put.encoded())}))
        .await
        .unwrap();
    let s = net
        .rpc(
            node,
            "tx_wait",
            json!({"hash": put.hash().to_hex(), "timeout_ms": 30_000}),
        )
        .await
        .unwrap();
    assert_eq!(s["status"], "committed", "{s}");
    let owner = sender.public_key().to_hex();
    let got = net
        .rpc(
            node,
            "data_get",
            json!({"owner": owner, "key": hex::encode(b"greeting")}),
        )
        .await
        .unwrap();
    assert_eq!(got["value"], hex::encode(b"hello"), "{got}");
    let none = net
        .rpc(node, "data_get", json!({"owner": owner, "key": "00"}))
        .await
        .unwrap();
    assert!(none["value"].is_null(), "{none}");
    let nobody = net
        .rpc(node, "account_get", json!({"address": "ab".repeat(32)}))
        .await
        .unwrap();
    assert_eq!(nobody, json!({"balance": 0, "nonce": 0}));
    // 8. Waiting for transactions that never commit holds nothing once the callers give up.
    for i in 0..50u32 {
        let hash = tally_crypto::Digest::of(&i.to_le_bytes()).to_hex();
        let err = net
            .rpc(node, "tx_wait", json!({"hash": hash, "timeout_ms": 20}))
            .await
            .unwrap_err();
        assert!(err.contains("not committed within"), "{err}");
    }
    let text = net.metrics(node).await;
    let waiters = text
        .lines()
        .find(|l| l.starts_with("tally_rpc_waiters "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(waiters, Some(0.0), "tx_wait entries left behind");
    let err = net
        .rpc(node, "data_get", json!({"owner": owner, "key": ""}))
        .await
        .unwrap_err();
    assert!(
        err.contains("InvalidParams") && err.contains("1 to 256"),
        "{err}"
    );
}

/// A raw HTTP POST (for malformed JSON a client library would refuse to send).
async fn raw_post(url: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
