//! Crashes under load, for every consensus mode: while clients submit transfers, random
//! validators — the leader every third time — are killed with SIGKILL at random moments and
//! restarted. At the end every transaction the RPC acknowledged as committed is in the same
//! block at the same index on every node, every node holds the same chain, and no node holds
//! evidence of an equivocation (nobody here lies, so evidence would mean a restarted validator
//! contradicted itself). Prints kills, restarts, acknowledged and lost (which must be 0).
//!
//! `CRASH_KILLS` (default 10) kills per protocol; `CRASH_SEED` fixes the random choices.
//! By hand: `CRASH_KILLS=50 cargo test --release -p tally-node --test crash_load -- --nocapture`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::Net;
use tokio::sync::Mutex;

fn kills() -> usize {
    std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbft_survives_kills_under_load() {
    scenario("pbft", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_survives_kills_under_load() {
    scenario("raft", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipaxos_survives_kills_under_load() {
    scenario("multipaxos", 3).await;
}

/// A transaction the RPC reported committed: its hash, block height and index there.
type Acked = (String, u64, u64);

async fn scenario(protocol: &str, validators: usize) {
    let seed = seed();
    eprintln!("{protocol}: CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let net = Net::start(validators, &["--consensus", protocol]);
    let all: Vec<usize> = (0..validators).collect();
    net.wait_up(&all).await;
    let net = Arc::new(Mutex::new(net));
    let down: Arc<Vec<AtomicBool>> =
        Arc::new((0..validators).map(|_| AtomicBool::new(false)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<Vec<Acked>>> = Arc::default();
    let submitted = Arc::new(AtomicUsize::new(0));

    // One client per account: the next transfer goes to one live node, and is waited for
    // there (5 s); committed ones are recorded. Whatever else happens to a transaction (its
    // node killed before it committed, a refusal) is not an acknowledgement and is not counted.
    let accounts = net.lock().await.info.accounts.len();
    let mut clients = Vec::new();
    for a in 0..accounts {
        let (net, down, stop, acked, submitted) = (
            net.clone(),
            down.clone(),
            stop.clone(),
            acked.clone(),
            submitted.clone(),
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (a as u64 + 1));
        let (key, rpcs, chain, to) = {
            let n = net.lock().await;
            (
                n.account_key(a),
                n.clients.clone(),
                n.chain.clone(),
                n.info.accounts[(a + 1) % accounts].address,
            )
        };
        clients.push(tokio::spawn(async move {
            use jsonrpsee::core::client::ClientT;
            let call = |node: usize, method: &'static str, params: Value| {
                let client = rpcs[node].clone();
                async move {
                    let mut p = jsonrpsee::core::params::ObjectParams::new();
                    if let Value::Object(m) = params {
                        for (k, v) in m {
                            p.insert(&k, v).unwrap();
                        }
                    }
                    client.request::<Value, _>(method, p).await
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let node = rng.random_range(0..validators);
                if down[node].load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let address = key.public_key().to_hex();
                let Ok(account) = call(node, "account_get", json!({ "address": address })).await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let nonce = account["nonce"].as_u64().unwrap();
                let tx = tally_ledger::Transaction {
                    chain_id: chain.clone(),
                    sender: key.public_key(),
                    nonce,
                    action: tally_ledger::Action::Transfer { to, amount: 1 },
                }
                .sign(&key)
                .unwrap();
                let hash = tx.hash().to_hex();
                let submit = json!({ "tx": hex::encode(tx.encoded()) });
                if call(node, "tx_submit", submit).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                submitted.fetch_add(1, Ordering::Relaxed);
                let wait = json!({ "hash": hash, "timeout_ms": 5_000 });
                if let Ok(s) = call(node, "tx_wait", wait).await
                    && s["status"] == "committed"
                {
                    let (h, i) = (s["height"].as_u64().unwrap(), s["index"].as_u64().unwrap());
                    acked.lock().unwrap().push((hash, h, i));
                }
            }
        }));
    }

    // Kills: one validator down at a time (a quorum stays up), the leader every third time.
    let started = Instant::now();
    let (mut killed, mut restarted) = (0, 0);
    for k in 0..kills() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2_000))).await;
        let victim = {
            let n = net.lock().await;
            let mut leader = None;
            for i in 0..validators {
                if let Some(s) = n.status(i).await {
                    leader = s["leader_index"].as_u64().map(|l| l as usize);
                    break;
                }
            }
            match leader {
                Some(l) if k % 3 == 0 => l,
                _ => rng.random_range(0..validators),
            }
        };
        {
            let mut n = net.lock().await;
            down[victim].store(true, Ordering::Relaxed);
            n.kill(victim);
            killed += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1_500))).await;
        {
            let mut n = net.lock().await;
            n.launch(victim);
            n.wait_up(&[victim]).await;
            down[victim].store(false, Ordering::Relaxed);
            restarted += 1;
        }
    }
    // Load a little longer with everyone up, then stop the clients.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }

    // Every node reaches the same height and holds the same chain.
    let net = net.lock().await;
    let mut target = 0;
    for i in 0..validators {
        target = target.max(net.height(i).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..validators {
        while net.height(i).await < target {
            if Instant::now() > deadline {
                let mut report = String::new();
                for j in 0..validators {
                    let log = net.log(j);
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    // Bans and errors from the whole log: the tail alone loses them.
                    let marked: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains("banning") || l.contains("ERROR"))
                        .collect();
                    let marked = &marked[marked.len().saturating_sub(20)..];
                    report += &format!(
                        "--- node {j}: {:?}\nbans and errors:\n{}\nlast lines:\n{}\n",
                        net.status(j).await,
                        marked.join("\n"),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                panic!("node {i} did not reach height {target} in 60 s\n{report}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    net.assert_same_chain(&all, target).await;
    // With the load stopped, every batch gets ordered and leaves the stores: one that stays
    // is held for good against its author's quota (as resent batches already in a block once
    // were, until the author's quota filled and its new batches were refused).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stored = Vec::new();
        for i in 0..validators {
            stored.push(support::metric(
                &net.metrics(i).await,
                "tally_batch_store_batches ",
            ));
        }
        if stored.iter().all(|&b| b == 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "batches still stored 30 s after the load stopped: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every acknowledged transaction is where the RPC said, on every node.
    let acked = acked.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (hash, height, index) in &acked {
        for i in 0..validators {
            let s = net
                .rpc(i, "tx_status", json!({"hash": hash}))
                .await
                .unwrap();
            if s["status"] != "committed" || s["height"] != *height || s["index"] != *index {
                lost.push(format!(
                    "{hash} on node {i}: {s} (acknowledged at {height}/{index})"
                ));
            }
        }
    }
    // Nobody lies here: evidence would mean a restarted validator contradicted itself.
    for i in 0..validators {
        let evidence = net.rpc(i, "evidence_list", json!({})).await.unwrap();
        assert_eq!(evidence, json!([]), "node {i} holds evidence");
    }
    // Nor may a restarted validator look like one that lies: no node banned a peer, or (under
    // crash faults, where nobody is banned) counted enough offences to ban one.
    for i in 0..validators {
        let bans: Vec<String> = net
            .log(i)
            .lines()
            .filter(|l| l.contains("banning peer") || l.contains("not banning"))
            .map(str::to_owned)
            .collect();
        assert!(
            bans.is_empty(),
            "node {i} banned a peer:\n{}",
            bans.join("\n")
        );
    }
    eprintln!(
        "{protocol}: {killed} kills, {restarted} restarts in {:.0} s; {} submitted, {} acknowledged, {} lost; chains identical up to {target}",
        started.elapsed().as_secs_f64(),
        submitted.load(Ordering::Relaxed),
        acked.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "lost acknowledged transactions:\n{}",
        lost.join("\n")
    );
    assert!(
        acked.len() >= kills(),
        "too few transactions committed under the kills: {}",
        acked.len()
    );
}
