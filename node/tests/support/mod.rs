//! A real network of `tally` processes on loopback, for end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde_json::{Value, json};
use tally_crypto::{ChainId, SecretKey, keyfile};
use tally_genesis::testnet::NetworkInfo;
use tally_ledger::{Action, SignedTransaction, Transaction};

pub mod raw;

pub const TALLY: &str = env!("CARGO_BIN_EXE_tally");

pub struct Net {
    pub dir: tempfile::TempDir,
    pub info: NetworkInfo,
    pub procs: Vec<Option<Child>>,
    pub clients: Vec<HttpClient>,
    pub chain: ChainId,
    /// Per node, a command prefix for its process (e.g. `ip netns exec NS`); empty: none.
    pub wrap: Vec<Vec<String>>,
}

/// A base port with `count` consecutive free ports above it (probed, then released).
fn free_base(count: u16) -> u16 {
    // Tests of one binary run as threads of one process (`cargo test`): the wall clock's
    // nanoseconds and a counter keep two of them from probing the same range at once.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = std::process::id() as u64 ^ nanos ^ calls.wrapping_mul(0x9E37_79B9);
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(7919) + attempt * 997) % 2_000) as u16 * 20;
        if (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range");
}

impl Net {
    /// Writes a network with `tally testnet` (extra args passed through) and starts it.
    pub fn start(validators: usize, extra: &[&str]) -> Net {
        let (dir, out) = Net::write(validators, extra);
        let wrap = vec![Vec::new(); validators];
        Net::launch_written(dir, &out, wrap)
    }

    /// As [`Net::start`], after `edit` changed each node's `config.toml` (called with the
    /// node's index and home).
    pub fn start_with(
        validators: usize,
        extra: &[&str],
        edit: impl Fn(usize, &std::path::Path, &mut tally_genesis::NodeConfig),
    ) -> Net {
        let (dir, out) = Net::write(validators, extra);
        for i in 0..validators {
            let home = out.join(format!("node{i}"));
            let mut config = tally_genesis::NodeConfig::load(&home).unwrap();
            edit(i, &home, &mut config);
            config.write(&home).unwrap();
        }
        Net::launch_written(dir, &out, vec![Vec::new(); validators])
    }

    /// Writes a network with `tally testnet` without starting it (trying other free ports
    /// when one was taken between the probe and the write).
    pub fn write(validators: usize, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("net");
        let n = validators.to_string();
        let mut last = String::new();
        for _ in 0..5 {
            let base = free_base(validators as u16 * 10 + 3).to_string();
            let mut args = vec![
                "testnet",
                "--validators",
                &n,
                "--out",
                out.to_str().unwrap(),
                "--base-port",
                &base,
            ];
            args.extend_from_slice(extra);
            let o = Command::new(TALLY).args(&args).output().unwrap();
            if o.status.success() {
                return (dir, out);
            }
            last = String::from_utf8_lossy(&o.stderr).to_string();
            let _ = std::fs::remove_dir_all(&out);
        }
        panic!("tally testnet failed: {last}");
    }

    /// Starts a network written by [`Net::write`] (and perhaps edited), each node's process
    /// under its `wrap` prefix.
    pub fn launch_written(
        dir: tempfile::TempDir,
        out: &std::path::Path,
        wrap: Vec<Vec<String>>,
    ) -> Net {
        let info = NetworkInfo::load(&out.join("network.json")).unwrap();
        let clients = info
            .nodes
            .iter()
            .map(|n| {
                HttpClientBuilder::default()
                    .request_timeout(Duration::from_secs(30))
                    .build(&n.rpc)
                    .unwrap()
            })
            .collect();
        let chain = ChainId::new(info.chain_id.clone()).unwrap();
        let mut net = Net {
            dir,
            procs: (0..info.nodes.len()).map(|_| None).collect(),
            wrap,
            info,
            clients,
            chain,
        };
        for i in 0..net.info.nodes.len() {
            net.launch(i);
        }
        net
    }

    pub fn home(&self, i: usize) -> PathBuf {
        self.info.nodes[i].home.clone()
    }

    pub fn launch(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home(i).join("node.log"))
            .unwrap();
        let mut command = match self.wrap[i].split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(TALLY);
                c
            }
            None => Command::new(TALLY),
        };
        let child = command
            .args(["start", "--home", self.home(i).to_str().unwrap()])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.procs[i] = Some(child);
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.procs[i].as_ref().expect("running").id();
        assert!(
            Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.home(i).join("node.log")).unwrap_or_default()
    }

    /// A JSON-RPC call to node `i`. Refused as rate limited (-32015, or HTTP 429 before the
    /// body was read), it waits the hint and tries again, as a client should — tests that
    /// check thousands of transactions from one address go past the per-address rate.
    pub async fn rpc(&self, i: usize, method: &str, params: Value) -> Result<Value, String> {
        let mut p = ObjectParams::new();
        if let Value::Object(m) = params {
            for (k, v) in m {
                p.insert(&k, v).unwrap();
            }
        }
        let mut tries = 0;
        loop {
            let result = self.clients[i].request::<Value, _>(method, p.clone()).await;
            let retry_ms = match &result {
                Err(jsonrpsee::core::ClientError::Call(e)) if e.code() == -32015 => e
                    .data()
                    .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
                    .and_then(|d| d["retry_after_ms"].as_u64())
                    .unwrap_or(100),
                Err(e) if e.to_string().contains("429") => 100,
                _ => return result.map_err(|e| e.to_string()),
            };
            tries += 1;
            if tries > 100 {
                return result.map_err(|e| e.to_string());
            }
            tokio::time::sleep(Duration::from_millis(retry_ms.min(1000))).await;
        }
    }

    /// Node `i`'s /metrics page (raw HTTP response).
    pub async fn metrics(&self, i: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.info.nodes[i].metrics.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    pub async fn status(&self, i: usize) -> Option<Value> {
        self.rpc(i, "chain_status", json!({})).await.ok()
    }

    pub async fn height(&self, i: usize) -> u64 {
        self.status(i)
            .await
            .map_or(0, |s| s["height"].as_u64().unwrap())
    }

    /// Waits until every node in `nodes` answers.
    pub async fn wait_up(&self, nodes: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for &i in nodes {
            while self.status(i).await.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "node {i} did not come up:\n{}",
                    self.log(i)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits until `pred` holds, at most `secs` seconds; returns how long it took.
    pub async fn until<F, Fut>(&self, secs: u64, what: &str, mut pred: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !pred().await {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out: {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        start.elapsed()
    }

    pub fn account_key(&self, a: usize) -> SecretKey {
        keyfile::load(&self.info.accounts[a].key_file).unwrap()
    }

    pub fn transfer(
        &self,
        from: &SecretKey,
        nonce: u64,
        to: usize,
        amount: u64,
    ) -> SignedTransaction {
        Transaction {
            chain_id: self.chain.clone(),
            sender: from.public_key(),
            nonce,
            action: Action::Transfer {
                to: self.info.accounts[to].address,
                amount,
            },
        }
        .sign(from)
        .unwrap()
    }

    /// Submits `tx` to node `to` and waits (30 s at most) until node `wait_at` executed it;
    /// asserts it committed.
    pub async fn submit_and_wait(&self, to: usize, wait_at: usize, tx: &SignedTransaction) {
        self.rpc(to, "tx_submit", json!({"tx": hex::encode(tx.encoded())}))
            .await
            .unwrap();
        let s = self
            .rpc(
                wait_at,
                "tx_wait",
                json!({"hash": tx.hash().to_hex(), "timeout_ms": 30_000}),
            )
            .await
            .unwrap_or_else(|e| panic!("tx {}: {e}", tx.hash()));
        assert_eq!(s["status"], "committed", "{s}");
    }

    pub async fn nonce(&self, node: usize, key: &SecretKey) -> u64 {
        self.rpc(
            node,
            "account_get",
            json!({"address": key.public_key().to_hex()}),
        )
        .await
        .unwrap()["nonce"]
            .as_u64()
            .unwrap()
    }

    /// Identical block hashes at every height up to `height` on the given nodes.
    pub async fn assert_same_chain(&self, nodes: &[usize], height: u64) {
        for h in 1..=height {
            let mut hashes = Vec::new();
            for &i in nodes {
                let b = self
                    .rpc(i, "block_get", json!({"height": h}))
                    .await
                    .unwrap_or_else(|e| panic!("node {i} block {h}: {e}"));
                hashes.push(b["hash"].as_str().unwrap().to_string());
            }
            assert!(
                hashes.windows(2).all(|w| w[0] == w[1]),
                "height {h}: {hashes:?}"
            );
        }
    }
}

/// Validator `index`'s key and p2p address taken over by this process (its own process
/// stopped first): the fixture for a lying validator. Returns the p2p handle, its events, the
/// key and the genesis.
pub fn impersonate(
    net: &Net,
    index: usize,
) -> (
    tally_p2p::P2pHandle,
    tokio::sync::mpsc::Receiver<tally_p2p::P2pEvent>,
    SecretKey,
    tally_genesis::Genesis,
) {
    let config = tally_genesis::NodeConfig::load(&net.home(index)).unwrap();
    let key = keyfile::load(&config.key_file).unwrap();
    let genesis = tally_genesis::Genesis::load(&config.genesis_file).unwrap();
    let (p2p, events) = tally_p2p::spawn(tally_p2p::P2pConfig {
        secret_seed: key.seed(),
        listen: config.p2p.listen.clone(),
        genesis_hash: genesis.hash(),
        validators: genesis
            .validators
            .iter()
            .map(|v| (v.public_key, v.p2p.clone()))
            .collect(),
        observers: vec![],
    })
    .unwrap();
    (p2p, events, key, genesis)
}

/// The sum of the samples of `name` (a metric name, with labels or a trailing space to pin
/// it) in a /metrics page.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
