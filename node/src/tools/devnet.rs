//! `tally devnet`: a local network, one process per validator, with a stream of demo
//! transactions and a live status line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tally_crypto::{ChainId, SecretKey, keyfile};
use tally_genesis::Protocol;
use tally_genesis::testnet::{NetworkInfo, TestnetOptions, generate};
use tally_ledger::{Action, Transaction};

use crate::tools::client::{call, client};

#[derive(Args, Debug, Clone)]
pub struct DevnetArgs {
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    #[arg(long, default_value = "pbft")]
    pub consensus: Protocol,
    /// Folder of the network (created with `tally testnet` rules if missing; reused if it
    /// holds a network.json, unless --fresh).
    #[arg(long, default_value = "devnet-data")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 26600)]
    pub base_port: u16,
    /// Demo transfers per second (0: none).
    #[arg(long, default_value_t = 200)]
    pub demo_rate: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Delete the folder first.
    #[arg(long)]
    pub fresh: bool,
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM, then wait: each node shuts down cleanly.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

pub fn run(a: DevnetArgs) -> Result<()> {
    if a.fresh && a.data.exists() {
        std::fs::remove_dir_all(&a.data)?;
    }
    let network_file = a.data.join("network.json");
    let info = if network_file.exists() {
        eprintln!("reusing the network in {}", a.data.display());
        NetworkInfo::load(&network_file)?
    } else {
        let mut opts = TestnetOptions::new(a.validators, a.consensus, a.data.clone());
        opts.chain_id = "tally-devnet".into();
        opts.base_port = a.base_port;
        opts.accounts = 8;
        generate(&opts)?
    };
    write_prometheus_config(&a.data, &info)?;

    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    for n in &info.nodes {
        let log = std::fs::File::create(n.home.join("node.log"))?;
        let child = Command::new(&exe)
            .args(["start", "--home"])
            .arg(&n.home)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", n.name))?;
        children.0.push(child);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        wait_ready(&info).await?;
        println!(
            "Tally devnet: {} {} validators, chain id {}",
            info.nodes.len(),
            info.consensus,
            info.chain_id
        );
        for n in &info.nodes {
            println!(
                "  {}  rpc {}  metrics {}/metrics  log {}",
                n.name,
                n.rpc,
                n.metrics,
                n.home.join("node.log").display()
            );
        }
        println!(
            "Prometheus: prometheus --config.file={}",
            a.data.join("prometheus.yml").display()
        );
        println!(
            "Grafana: import monitoring/grafana/tally.json, with that Prometheus as data source"
        );
        println!(
            "Try: tally tx send --network {} --from {} transfer --to {} --amount 5",
            network_file.display(),
            info.accounts[0].key_file.display(),
            info.accounts[1].address
        );
        let stop = a.duration.map(|s| Instant::now() + Duration::from_secs(s));
        if a.demo_rate > 0 {
            tokio::spawn(demo_load(info.clone(), a.demo_rate));
        }
        live_line(&info, stop).await
    })
}

async fn wait_ready(info: &NetworkInfo) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in &info.nodes {
        loop {
            if let Ok(c) = client(&n.rpc)
                && call(&c, "chain_status", json!({})).await.is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer on {} (see {})",
                    n.name,
                    n.rpc,
                    n.home.join("node.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Transfers among the funded accounts, each tracking its nonce, spread over all nodes.
async fn demo_load(info: NetworkInfo, rate: u64) -> Result<()> {
    let chain = ChainId::new(info.chain_id.clone())?;
    let keys: Vec<SecretKey> = info
        .accounts
        .iter()
        .map(|a| keyfile::load(&a.key_file))
        .collect::<Result<_, _>>()?;
    let clients: Vec<_> = info
        .nodes
        .iter()
        .filter_map(|n| client(&n.rpc).ok())
        .collect();
    let mut nonces = Vec::new();
    for k in &keys {
        let a = call(
            &clients[0],
            "account_get",
            json!({"address": k.public_key().to_hex()}),
        )
        .await?;
        nonces.push(a["nonce"].as_u64().unwrap_or(0));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let per_tick = rate.div_ceil(10).max(1);
    let mut i = 0usize;
    loop {
        tick.tick().await;
        let mut txs = Vec::new();
        for _ in 0..per_tick {
            let from = i % keys.len();
            let to = (from + 1) % keys.len();
            i += 1;
            let tx = Transaction {
                chain_id: chain.clone(),
                sender: keys[from].public_key(),
                nonce: nonces[from],
                action: Action::Transfer {
                    to: keys[to].public_key(),
                    amount: 1,
                },
            }
            .sign(&keys[from])?;
            nonces[from] += 1;
            txs.push(tally_crypto::to_hex(tx.encoded()));
        }
        let c = &clients[i % clients.len()];
        if call(c, "tx_submit_batch", json!({"txs": txs}))
            .await
            .is_err()
        {
            // A node down: resynchronise nonces from the chain.
            for (k, n) in keys.iter().zip(nonces.iter_mut()) {
                if let Ok(a) = call(
                    &clients[0],
                    "account_get",
                    json!({"address": k.public_key().to_hex()}),
                )
                .await
                {
                    *n = a["nonce"].as_u64().unwrap_or(*n);
                }
            }
        }
    }
}

async fn live_line(info: &NetworkInfo, stop: Option<Instant>) -> Result<()> {
    let c = client(&info.nodes[0].rpc)?;
    let mut last_height = call(&c, "chain_status", json!({})).await?["height"]
        .as_u64()
        .unwrap_or(0);
    let mut window: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut total_txs = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break,
        }
        if stop.is_some_and(|s| Instant::now() >= s) {
            break;
        }
        let Ok(s) = call(&c, "chain_status", json!({})).await else {
            continue;
        };
        let height = s["height"].as_u64().unwrap_or(last_height);
        for h in last_height + 1..=height.min(last_height + 500) {
            if let Ok(b) = call(&c, "block_get", json!({"height": h})).await {
                total_txs += b["txs"].as_array().map_or(0, |t| t.len() as u64);
            }
        }
        last_height = height;
        window.push_back((Instant::now(), total_txs));
        while window.len() > 5 {
            window.pop_front();
        }
        let rate = match (window.front(), window.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / (*t1 - *t0).as_secs_f64()
            }
            _ => 0.0,
        };
        print!(
            "\rheight {height:>7}  view {:>3}  leader {:<8}  committed {rate:>8.1} tx/s  total {total_txs:>9}  peers {}   ",
            s["view"],
            s["leader"].as_str().unwrap_or("?"),
            s["peers"]
        );
        let _ = std::io::stdout().flush();
    }
    println!("\nstopping the devnet");
    Ok(())
}

fn write_prometheus_config(dir: &Path, info: &NetworkInfo) -> Result<()> {
    let targets: Vec<String> = info
        .nodes
        .iter()
        .map(|n| format!("'{}'", n.metrics.trim_start_matches("http://")))
        .collect();
    let rules = std::env::current_dir()?.join("monitoring/alerts.yml");
    let text = format!(
        "# Written by `tally devnet`: scrapes every node of this devnet.\nglobal:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nrule_files:\n  - '{}'\nscrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), text)?;
    Ok(())
}
