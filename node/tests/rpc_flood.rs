//! A flood of RPC requests against one validator of a real four-validator network, with the
//! default limits (`docs/security.md`, "RPC under abuse"): 64 connections from eight client
//! addresses send as fast as they can a mix of bad-signature transactions (alone and in
//! batches of 1,000), JSON-RPC batches of 1,000 reads, single reads, malformed JSON and 1 MiB
//! bodies, while an honest
//! client on its own address submits a transfer, waits for its commit (`tx_wait`), and sends
//! the next one at most every 50 ms.
//!
//! Checked: every honest submission is admitted and commits; the flooded node keeps
//! committing (its height grows in every 3 s window); its peak RSS stays under 600 MB; the
//! flood was refused by the per-address limits; the chains agree at the end.
//!
//! `RPC_FLOOD_SECONDS` sizes it (10 in `make test`; 60 by hand:
//! `RPC_FLOOD_SECONDS=60 cargo test --release -p tally-node --test rpc_flood -- --nocapture`).

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Net;
use support::raw::{self, Http};
use tally_crypto::SecretKey;

const ADDRESSES: u8 = 8;
const CONNECTIONS_PER_ADDRESS: usize = 8;
const PEAK_RSS_MAX_MB: u64 = 600;

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    calls: AtomicU64,
    rate_limited: AtomicU64,
    refused_other: AtomicU64,
    answered_ok: AtomicU64,
    reconnects: AtomicU64,
}

fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One flooding connection: requests in a fixed rotation until `deadline`.
async fn flood(
    from: IpAddr,
    to: std::net::SocketAddr,
    bodies: Arc<Vec<(u64, Vec<u8>)>>,
    deadline: Instant,
    tally: Arc<Tally>,
    offset: usize,
) {
    let mut conn: Option<Http> = None;
    let mut k = offset;
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Http::open(from, to).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let (calls, body) = &bodies[k % bodies.len()];
        k += 1;
        tally.requests.fetch_add(1, Ordering::Relaxed);
        tally.calls.fetch_add(*calls, Ordering::Relaxed);
        match c.post(body).await {
            Ok((_, out)) => {
                let text = String::from_utf8_lossy(&out);
                let limited = text.matches("-32015").count() as u64;
                tally.rate_limited.fetch_add(limited, Ordering::Relaxed);
                if limited == 0 {
                    if text.contains("\"error\"") {
                        tally.refused_other.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.answered_ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                tally.reconnects.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// What the honest client saw: per transfer, the time to be admitted and to commit.
#[derive(Default)]
struct Probe {
    submit: Vec<Duration>,
    commit: Vec<Duration>,
    /// (when, node 0's height), about once a second.
    heights: Vec<(Instant, u64)>,
}

impl Probe {
    fn summary(&mut self) -> String {
        self.submit.sort();
        self.commit.sort();
        format!(
            "{} transfers, submit p50 {:?} p99 {:?}; commit p50 {:?} p99 {:?} max {:?}",
            self.submit.len(),
            percentile(&self.submit, 0.5),
            percentile(&self.submit, 0.99),
            percentile(&self.commit, 0.5),
            percentile(&self.commit, 0.99),
            self.commit.last().copied().unwrap_or_default(),
        )
    }
}

/// The honest client until `deadline`: a transfer from `key` (next nonce `*nonce`), waited for
/// on the same connection (it holds one), then the next, at most one every 50 ms.
async fn honest(
    net: &Net,
    c: &mut Http,
    key: &SecretKey,
    nonce: &mut u64,
    deadline: Instant,
) -> Probe {
    let mut probe = Probe {
        heights: vec![(Instant::now(), net.height(0).await)],
        ..Probe::default()
    };
    while Instant::now() < deadline {
        let tx = net.transfer(key, *nonce, 1, 1);
        let sent = Instant::now();
        let r = c
            .call("tx_submit", json!({"tx": hex::encode(tx.encoded())}))
            .await
            .expect("the honest client's connection");
        probe.submit.push(sent.elapsed());
        assert_eq!(
            r["result"]["hash"],
            tx.hash().to_hex(),
            "honest submission {nonce} refused: {r}"
        );
        *nonce += 1;
        let s = c
            .call(
                "tx_wait",
                json!({"hash": tx.hash().to_hex(), "timeout_ms": 20_000}),
            )
            .await
            .expect("the honest client's connection");
        assert_eq!(s["result"]["status"], "committed", "honest transfer: {s}");
        probe.commit.push(sent.elapsed());
        if probe.heights.last().unwrap().0.elapsed() >= Duration::from_secs(1) {
            probe.heights.push((Instant::now(), net.height(0).await));
        }
        tokio::time::sleep(Duration::from_millis(50).saturating_sub(sent.elapsed())).await;
    }
    probe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_does_not_stop_commits_or_honest_clients() {
    let seconds: u64 = std::env::var("RPC_FLOOD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let net = Net::start(4, &[]);
    net.wait_up(&[0, 1, 2, 3]).await;
    let node0 = raw::addr(&net.info.nodes[0].rpc);
    let pid = net.procs[0].as_ref().unwrap().id();
    let rss_before = peak_rss_mb(pid);

    // The flood's requests, built once. Bad-signature transactions are well formed and signed
    // for this chain by a key without an account, with one signature byte changed: each
    // costs the node a signature check unless the limits refuse it first.
    let stranger = SecretKey::generate();
    let bad_tx = |n: u64| {
        let tx = tally_ledger::Transaction {
            chain_id: net.chain.clone(),
            sender: stranger.public_key(),
            nonce: n,
            action: tally_ledger::Action::Put {
                key: b"k".to_vec(),
                value: vec![7; 400],
            },
        }
        .sign(&stranger)
        .unwrap();
        let mut bytes = tx.encoded().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        hex::encode(bytes)
    };
    let call = |method: &str, params: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
    };
    let batch_of_reads: Vec<Value> = (0..1000)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "chain_status", "params": {}}))
        .collect();
    let bodies: Vec<(u64, Vec<u8>)> = vec![
        (1, call("tx_submit", json!({"tx": bad_tx(0)})).into_bytes()),
        (1, call("chain_status", json!({})).into_bytes()),
        (1, call("block_get", json!({"height": 1})).into_bytes()),
        (
            1,
            call(
                "account_get",
                json!({"address": stranger.public_key().to_hex()}),
            )
            .into_bytes(),
        ),
        (1, b"{\"jsonrpc\": \"2.0\", \"method\": ".to_vec()),
        (1000, Value::Array(batch_of_reads).to_string().into_bytes()),
        (
            1,
            call(
                "tx_submit_batch",
                json!({"txs": (1..=1000).map(bad_tx).collect::<Vec<_>>()}),
            )
            .into_bytes(),
        ),
        (1, vec![b'x'; 1 << 20]),
    ];
    let bodies = Arc::new(bodies);

    // The honest client alone first, for comparison.
    let key = net.account_key(0);
    let mut client = Http::open(IpAddr::from([127, 0, 0, 1]), node0)
        .await
        .unwrap();
    let mut nonce = 0u64;
    let mut baseline = honest(
        &net,
        &mut client,
        &key,
        &mut nonce,
        Instant::now() + Duration::from_secs(5),
    )
    .await;

    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    // The flood runs on its own thread and runtime: its 64 busy connections must not delay
    // the honest client's tasks in this test's runtime (they compete for the CPU as two
    // programs would, through the OS scheduler).
    let flood_thread = {
        let (bodies, tally) = (bodies.clone(), tally.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut flooders = Vec::new();
                for a in 0..ADDRESSES {
                    for c in 0..CONNECTIONS_PER_ADDRESS {
                        flooders.push(tokio::spawn(flood(
                            IpAddr::from([127, 0, 0, 2 + a]),
                            node0,
                            bodies.clone(),
                            deadline,
                            tally.clone(),
                            a as usize * 3 + c,
                        )));
                    }
                }
                for f in flooders {
                    f.await.unwrap();
                }
            })
        })
    };
    let mut probe = honest(&net, &mut client, &key, &mut nonce, deadline).await;
    let elapsed = start.elapsed().as_secs_f64();
    flood_thread.join().unwrap();
    let peak = peak_rss_mb(pid);
    let requests = tally.requests.load(Ordering::Relaxed);
    let calls = tally.calls.load(Ordering::Relaxed);
    eprintln!(
        "flood: {seconds} s, {} connections from {ADDRESSES} addresses: {:.0} requests/s \
         ({:.0} JSON-RPC calls/s counting batch entries); {} calls refused as rate_limited, \
         {} requests answered with another error, {} answered ok, {} reconnects",
        ADDRESSES as usize * CONNECTIONS_PER_ADDRESS,
        requests as f64 / elapsed,
        calls as f64 / elapsed,
        tally.rate_limited.load(Ordering::Relaxed),
        tally.refused_other.load(Ordering::Relaxed),
        tally.answered_ok.load(Ordering::Relaxed),
        tally.reconnects.load(Ordering::Relaxed),
    );
    eprintln!("honest client alone (5 s): {}", baseline.summary());
    eprintln!("honest client under the flood: {}", probe.summary());
    eprintln!(
        "node 0: peak RSS {rss_before} MB before, {peak} MB after; heights {:?}",
        probe.heights.iter().map(|(_, h)| *h).collect::<Vec<_>>()
    );

    assert!(
        tally.rate_limited.load(Ordering::Relaxed) > 0,
        "the flood was never rate limited"
    );
    for w in probe.heights.windows(4) {
        assert!(
            w[3].1 > w[0].1,
            "node 0 committed nothing for 3 s under the flood"
        );
    }
    assert!(
        percentile(&probe.submit, 0.99) < Duration::from_secs(1),
        "honest submissions p99 {:?}",
        percentile(&probe.submit, 0.99)
    );
    assert!(peak <= PEAK_RSS_MAX_MB, "peak RSS {peak} MB");
    let height = net.height(0).await;
    net.until(30, "every node at node 0's height", || async {
        for i in 1..4 {
            if net.height(i).await < height {
                return false;
            }
        }
        true
    })
    .await;
    net.assert_same_chain(&[0, 1, 2, 3], height).await;
}
