//! The RPC server's limits against a real node (`docs/rpc.md`, "Limits"): per-address call and
//! transaction rates, bearer-token authentication, per-address connection caps, headers that
//! never finish, subscription caps and a subscriber that stops reading. Clients come from
//! different loopback addresses (127.0.0.2, …) because every limit is per client address.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::raw::{self, Http};
use support::{Net, metric};
use tally_genesis::config::RpcAuth;
use tally_ledger::{Action, Transaction};

const TOKEN: &str = "test-token-0123456789";

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(0)
}

/// Node 0 with small limits and `auth = "writes"`; the others with the defaults.
fn network() -> Net {
    Net::start_with(4, &[], |i, home, config| {
        if i != 0 {
            return;
        }
        let token = home.join("rpc.token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        config.rpc.auth = RpcAuth::Writes;
        config.rpc.auth_token_file = Some(token);
        config.rpc.requests_per_second_per_ip = 50;
        config.rpc.bytes_per_second_per_ip = 64 * 1024;
        config.rpc.transactions_per_second_per_ip = 20;
        config.rpc.max_connections_per_ip = 4;
        config.rpc.request_timeout_ms = 1000;
        config.rpc.max_subscriptions = 3;
        config.rpc.max_subscriptions_per_connection = 2;
        config.rpc.subscriber_buffer = 4;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_limits_refuse_with_typed_errors_and_spare_other_clients() {
    let net = network();
    net.wait_up(&[0, 1, 2, 3]).await;
    let node0 = raw::addr(&net.info.nodes[0].rpc);
    let key = net.account_key(0);
    let tx = net.transfer(&key, 0, 1, 5);
    let tx_hex = hex::encode(tx.encoded());

    // Authentication: writes need the token, reads do not; a wrong token is refused.
    let mut c = Http::open(ip(2), node0).await.unwrap();
    let r = c.call("tx_submit", json!({"tx": tx_hex})).await.unwrap();
    assert_eq!(code(&r), -32016, "{r}");
    assert_eq!(r["error"]["data"]["reason"], "unauthorized");
    c.token = Some("wrong-token-0123456789".into());
    let r = c.call("tx_submit", json!({"tx": tx_hex})).await.unwrap();
    assert_eq!(code(&r), -32016, "{r}");
    let r = c.call("chain_status", json!({})).await.unwrap();
    assert!(r["result"]["height"].is_u64(), "{r}");
    c.token = Some(TOKEN.into());
    let r = c.call("tx_submit", json!({"tx": tx_hex})).await.unwrap();
    assert_eq!(r["result"]["hash"], tx.hash().to_hex(), "{r}");
    // The refused attempts changed nothing: the one admitted commits once.
    let s = net
        .rpc(
            1,
            "tx_wait",
            json!({"hash": tx.hash().to_hex(), "timeout_ms": 30_000}),
        )
        .await
        .unwrap();
    assert_eq!(s["status"], "committed", "{s}");

    // The call rate: 50 a second, bursts of 100. 150 calls at once from one address: the
    // burst passes, the rest are refused with a retry hint; another address is unaffected.
    let mut flood = Http::open(ip(3), node0).await.unwrap();
    let mut refused = 0;
    let mut retry_hint = 0;
    for i in 0..150 {
        let r = flood.call("chain_status", json!({})).await.unwrap();
        if code(&r) == -32015 {
            assert!(i >= 100, "call {i} refused within the burst: {r}");
            refused += 1;
            retry_hint = r["error"]["data"]["retry_after_ms"].as_u64().unwrap();
        }
    }
    // 150 calls take well under a second here, so fewer than 50 tokens came back.
    assert!((1..=50).contains(&refused), "{refused} refused of 150");
    assert!((1..=100).contains(&retry_hint), "{retry_hint}");
    let mut other = Http::open(ip(4), node0).await.unwrap();
    let r = other.call("chain_status", json!({})).await.unwrap();
    assert!(r["result"].is_object(), "{r}");
    // In a JSON-RPC batch each entry counts, and the refused ones are answered one by one.
    let mut batcher = Http::open(ip(5), node0).await.unwrap();
    let batch: Vec<Value> = (0..120)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "chain_status", "params": {}}))
        .collect();
    let (status, body) = batcher
        .post(Value::Array(batch).to_string().as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answers: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(answers.len(), 120);
    let limited = answers.iter().filter(|a| code(a) == -32015).count();
    assert!((15..=25).contains(&limited), "{limited} of 120 refused");

    // The transaction rate: 20 a second, bursts of 40. A batch of 100 from a full bucket
    // passes and leaves a debt of 60 (3 s); the next transaction from that address waits.
    let mut submitter = Http::open(ip(6), node0).await.unwrap();
    submitter.token = Some(TOKEN.into());
    let txs: Vec<String> = (0..100u64)
        .map(|n| hex::encode(net.transfer(&net.account_key(1), n, 2, 1).encoded()))
        .collect();
    let r = submitter
        .call("tx_submit_batch", json!({"txs": txs}))
        .await
        .unwrap();
    assert!(r["result"].is_array(), "{r}");
    let next = hex::encode(net.transfer(&net.account_key(2), 0, 3, 1).encoded());
    let r = submitter
        .call("tx_submit", json!({"tx": next}))
        .await
        .unwrap();
    assert_eq!(code(&r), -32015, "{r}");
    assert!(
        r["error"]["data"]["retry_after_ms"].as_u64().unwrap() >= 1000,
        "{r}"
    );

    // Bytes: 64 KiB a second, bursts of 128 KiB. A 100 KB body passes; a second one, right
    // after, is refused from its Content-Length with HTTP 429, unread.
    let mut big = Http::open(ip(10), node0).await.unwrap();
    let padding = "x".repeat(100_000);
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "chain_status", "params": {}, "pad": padding});
    let (status, _) = big.post(body.to_string().as_bytes()).await.unwrap();
    assert_eq!(status, 200);
    let (status, out) = big.post(body.to_string().as_bytes()).await.unwrap();
    assert_eq!(status, 429);
    let r: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(code(&r), -32015, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("bytes"),
        "{r}"
    );

    // Connections: 4 per address. A fifth is closed at once; another address still connects.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut h = Http::open(ip(7), node0).await.unwrap();
        assert!(h.call("chain_status", json!({})).await.is_ok());
        held.push(h);
    }
    let mut fifth = Http::open(ip(7), node0).await.unwrap();
    assert!(fifth.call("chain_status", json!({})).await.is_err());
    let mut elsewhere = Http::open(ip(8), node0).await.unwrap();
    assert!(elsewhere.call("chain_status", json!({})).await.is_ok());
    drop(held);

    // Headers that never finish: the connection is closed after the request timeout (1 s).
    let mut slow = raw::connect(ip(9), node0).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    slow.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "a half-sent request was kept open for 10 s"
    );

    let metrics = net.metrics(0).await;
    for reason in ["rate_limited", "unauthorized", "connection_limit"] {
        let name = format!("tally_rpc_refusals_total{{reason=\"{reason}\"}}");
        assert!(metric(&metrics, &name) >= 1.0, "{name} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_capped_and_a_subscriber_that_stops_reading_is_dropped() {
    let net = network();
    net.wait_up(&[0, 1, 2, 3]).await;
    let node0 = raw::addr(&net.info.nodes[0].rpc);
    let host = node0.to_string();
    let subscribe = |id: u32| {
        json!({"jsonrpc": "2.0", "id": id, "method": "subscribe_blocks",
               "params": {"include_txs": true}})
        .to_string()
    };

    // The reader that never reads: subscribes, then leaves every byte in its socket.
    let mut stalled = raw::connect_small(ip(20), node0).await.unwrap();
    raw::websocket_send(&mut stalled, &host, &subscribe(1))
        .await
        .unwrap();

    // Two more on one connection reach the node's cap of 3; a third on it, or a fourth
    // anywhere, is refused with -32017.
    let mut second = raw::connect(ip(21), node0).await.unwrap();
    raw::websocket_send(&mut second, &host, &subscribe(1))
        .await
        .unwrap();
    assert!(raw::read_until(&mut second, b"\"result\"", Duration::from_secs(10)).await);
    raw::websocket_send_more(&mut second, &subscribe(2))
        .await
        .unwrap();
    assert!(raw::read_until(&mut second, b"\"id\":2,\"result\"", Duration::from_secs(10)).await);
    raw::websocket_send_more(&mut second, &subscribe(3))
        .await
        .unwrap();
    assert!(raw::read_until(&mut second, b"-32017", Duration::from_secs(10)).await);
    drop(second);
    net.until(
        10,
        "the closed connection's subscriptions released",
        || async { metric(&net.metrics(0).await, "tally_rpc_subscriptions ") == 1.0 },
    )
    .await;

    // Blocks of large transactions (30 KB values, 60 KB of hex each in a notification with
    // bodies) until the stalled reader's socket and its 4-message queue are full.
    let key = net.account_key(3);
    let mut nonce = 0u64;
    let dropped = |text: &str| metric(text, "tally_rpc_refusals_total{reason=\"slow_subscriber\"}");
    for round in 0..40 {
        if dropped(&net.metrics(0).await) >= 1.0 {
            break;
        }
        assert!(round < 39, "the stalled subscriber was never dropped");
        let txs: Vec<String> = (0..20)
            .map(|i| {
                let tx = Transaction {
                    chain_id: net.chain.clone(),
                    sender: key.public_key(),
                    nonce: nonce + i,
                    action: Action::Put {
                        key: format!("k{}", nonce + i).into_bytes(),
                        value: vec![round as u8; 30_000],
                    },
                }
                .sign(&key)
                .unwrap();
                hex::encode(tx.encoded())
            })
            .collect();
        nonce += 20;
        let r = net
            .rpc(1, "tx_submit_batch", json!({"txs": txs}))
            .await
            .unwrap();
        assert!(
            r.as_array().unwrap().iter().all(|x| x["hash"].is_string()),
            "{r}"
        );
        net.until(30, "the round's transactions committed", || async {
            net.nonce(1, &key).await >= nonce
        })
        .await;
    }
    net.until(10, "the dropped subscription released", || async {
        metric(&net.metrics(0).await, "tally_rpc_subscriptions ") == 0.0
    })
    .await;
    // What it finally reads, after the blocks queued before the drop, is the error
    // notification saying why.
    assert!(
        raw::read_until(&mut stalled, b"slow_subscriber", Duration::from_secs(20)).await,
        "no slow_subscriber notification"
    );
    // The node kept committing throughout.
    let before = net.height(0).await;
    let tx = net.transfer(&net.account_key(0), 0, 1, 1);
    net.submit_and_wait(1, 0, &tx).await;
    assert!(net.height(0).await > before);
}
