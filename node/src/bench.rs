//! `tally bench`: open-loop load through the public JSON-RPC against a local network of
//! validator processes (or a running one), with throughput, latency, resource use and the
//! signature-verification ceiling measured in the same run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use serde_json::{Value, json};
use tally_crypto::{ChainId, Digest, Domain, SecretKey, SignatureCheck, ValidKey, Verifiable};
use tally_genesis::Protocol;
use tally_genesis::testnet::{NetworkInfo, TestnetOptions, generate};
use tally_ledger::{Action, Transaction};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    #[arg(long, default_value = "pbft")]
    pub consensus: Protocol,
    /// Size of each transaction (a data put padded to this many bytes).
    #[arg(long, default_value_t = 512)]
    pub tx_bytes: usize,
    /// Offered load, transactions per second (open loop).
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Measured duration, e.g. 60s.
    #[arg(long, default_value = "30s", value_parser = parse_secs)]
    pub duration: u64,
    /// Load before measuring starts.
    #[arg(long, default_value = "5s", value_parser = parse_secs)]
    pub warmup: u64,
    /// Distinct sending accounts.
    #[arg(long, default_value_t = 2000)]
    pub accounts: usize,
    /// Target a running network (its network.json) instead of starting one.
    #[arg(long)]
    pub network: Option<PathBuf>,
    #[arg(long, default_value_t = 36600)]
    pub base_port: u16,
    #[arg(long)]
    pub batch_delay_ms: Option<u64>,
    #[arg(long)]
    pub batch_bytes_max: Option<u64>,
    #[arg(long)]
    pub watermark_window: Option<u64>,
    #[arg(long)]
    pub checkpoint_interval: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw throughput and latency over time into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Keep the started network's folder (printed).
    #[arg(long)]
    pub keep: bool,
    /// Repeat the whole benchmark this many times, each on a fresh network, and report every
    /// run and the median of each figure (a shared machine's runs differ; quote medians).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
}

/// Most runs `--runs` accepts.
pub const RUNS_MAX: usize = 20;

fn parse_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (n, mult) = if let Some(m) = t.strip_suffix("ms") {
        return m
            .parse::<u64>()
            .map(|v| v.div_ceil(1000))
            .map_err(|e| e.to_string());
    } else if let Some(m) = t.strip_suffix('m') {
        (m, 60)
    } else if let Some(sec) = t.strip_suffix('s') {
        (sec, 1)
    } else {
        (t, 1)
    };
    n.parse::<u64>()
        .map(|v| v * mult)
        .map_err(|e| e.to_string())
}

/// Rounds of the ceiling measurement; the best round is the ceiling.
pub const CEILING_ROUNDS: usize = 5;

/// Batch verifications per second on all cores, with the validity rule the nodes use: one
/// figure per round. A round is ≈ 0.2–0.4 s; on a shared machine single rounds vary by up
/// to 1.8× (other guests, frequency), so the caller takes the best round as the machine's
/// capacity and reports the spread.
pub fn measure_ceiling(rounds: usize) -> Vec<f64> {
    const D: Domain = Domain::new("bench/ceiling/v1");
    struct Item(SignatureCheck);
    impl Verifiable for Item {
        type Context = ();
        fn signature_checks(
            &self,
            _: &(),
            out: &mut Vec<SignatureCheck>,
        ) -> Result<(), tally_crypto::CryptoError> {
            out.push(self.0.clone());
            Ok(())
        }
    }
    let chain = ChainId::new("ceiling").expect("valid");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let keys: Vec<SecretKey> = (0..64u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
    let per_thread = 8192;
    let checks: Vec<SignatureCheck> = (0..per_thread)
        .map(|i| {
            let k = &keys[i % keys.len()];
            let body = vec![i as u8; 512];
            SignatureCheck {
                key: ValidKey::new(&k.public_key()).expect("valid"),
                domain: D,
                signature: k.sign(D, &chain, &body),
                body,
            }
        })
        .collect();
    (0..rounds.max(1))
        .map(|_| {
            let started = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        for chunk in checks.chunks(256) {
                            let items: Vec<Item> = chunk.iter().cloned().map(Item).collect();
                            let ok = tally_crypto::verify_batch(&(), &chain, items);
                            assert!(ok.iter().all(|r| r.is_ok()));
                        }
                    });
                }
            });
            (threads * per_thread) as f64 / started.elapsed().as_secs_f64()
        })
        .collect()
}

struct Nodes {
    children: Vec<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

fn proc_stat(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some((cpu, hwm * 1024))
}

async fn metric_sum(url: &str, name: &str) -> f64 {
    let addr = url.trim_start_matches("http://").to_string();
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return 0.0;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0.0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn start_network(a: &BenchArgs) -> Result<(NetworkInfo, Nodes)> {
    if let Some(path) = &a.network {
        return Ok((
            NetworkInfo::load(path)?,
            Nodes {
                children: vec![],
                _dir: None,
            },
        ));
    }
    let dir = tempfile::Builder::new().prefix("tally-bench").tempdir()?;
    let out = dir.path().join("net");
    let mut opts = TestnetOptions::new(a.validators, a.consensus, out.clone());
    opts.chain_id = "tally-bench".into();
    opts.base_port = a.base_port;
    opts.accounts = 1;
    let mut params = tally_genesis::ConsensusParams::new(a.consensus);
    if let Some(v) = a.batch_delay_ms {
        params.batch_delay_ms = v;
    }
    if let Some(v) = a.batch_bytes_max {
        params.batch_bytes_max = v;
    }
    if let Some(v) = a.watermark_window {
        params.watermark_window = v;
    }
    if let Some(v) = a.checkpoint_interval {
        params.checkpoint_interval = v;
    }
    opts.params = Some(params);
    let info = generate(&opts)?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for n in &info.nodes {
        // Quieter logs: a benchmark measures the node, not its terminal.
        let config = n.home.join("config.toml");
        let text = std::fs::read_to_string(&config)?.replace("log = \"info\"", "log = \"warn\"");
        std::fs::write(&config, text)?;
        let log = std::fs::File::create(n.home.join("node.log"))?;
        children.push(
            Command::new(&exe)
                .args(["start", "--home"])
                .arg(&n.home)
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()?,
        );
    }
    let keep = a.keep.then(|| dir.path().to_path_buf());
    if let Some(k) = keep {
        eprintln!("network folder: {} (kept)", k.display());
        return Ok((
            info,
            Nodes {
                children,
                _dir: None,
            },
        ))
        .map(|(i, n)| {
            std::mem::forget(dir);
            (i, n)
        });
    }
    Ok((
        info,
        Nodes {
            children,
            _dir: Some(dir),
        },
    ))
}

/// Per-second samples for the report's timeline and plot.
#[derive(Default, Clone)]
struct Second {
    offered: u64,
    committed: u64,
    /// From the submission that was admitted.
    latencies: Vec<f64>,
    /// From the transaction's first submission (including refusals and resubmissions).
    latencies_first: Vec<f64>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.tx_bytes < 200 || a.tx_bytes > tally_ledger::TX_BYTES_MAX {
        bail!(
            "--tx-bytes must be between 200 and {}",
            tally_ledger::TX_BYTES_MAX
        );
    }
    if a.runs == 0 || a.runs > RUNS_MAX {
        bail!("--runs must be between 1 and {RUNS_MAX}");
    }
    if a.runs > 1 && a.network.is_some() {
        bail!(
            "--runs needs networks the benchmark starts itself: against a running network the second run's transactions would reuse the first run's nonces"
        );
    }
    let mut reports = Vec::with_capacity(a.runs);
    for i in 0..a.runs {
        if a.runs > 1 {
            eprintln!("run {} of {}", i + 1, a.runs);
        }
        reports.push(run_once(&a)?);
    }
    if a.runs == 1 {
        let report = reports.pop().expect("one run");
        if let Some(path) = &a.plot {
            std::fs::write(path, plot_svg(&report))?;
            eprintln!("plot written to {}", path.display());
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_table(&report);
        }
        return Ok(());
    }
    let summary = Summary::of(&reports);
    if let Some(path) = &a.plot {
        // The run whose committed rate is the median one.
        std::fs::write(path, plot_svg(&reports[summary.median_run]))?;
        eprintln!(
            "plot of run {} (the median committed rate) written to {}",
            summary.median_run + 1,
            path.display()
        );
    }
    if a.json {
        let out = json!({ "runs": reports, "median": summary });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_summary(&reports, &summary);
    }
    Ok(())
}

/// One whole benchmark: the ceiling before, a network, the load, the ceiling after.
fn run_once(a: &BenchArgs) -> Result<Report> {
    let n = if a.network.is_some() { 0 } else { a.validators };
    eprintln!("measuring the signature-verification ceiling on all cores…");
    let before = measure_ceiling(CEILING_ROUNDS);
    let (info, nodes) = start_network(a)?;
    let n = if n == 0 { info.nodes.len() } else { n };
    let chain = ChainId::new(info.chain_id.clone())?;

    // Pre-sign everything, before any clock starts.
    let total = a.rate * (a.warmup + a.duration);
    eprintln!(
        "signing {total} transactions of {} bytes from {} accounts…",
        a.tx_bytes, a.accounts
    );
    let txs = presign(&chain, total as usize, a.accounts, a.tx_bytes);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = runtime.block_on(drive(a, &info, &nodes, txs, n, before.clone()))?;
    drop(nodes);
    // Again once the network is gone: the machine's speed drifts over minutes (other
    // guests), and the ceiling should describe the machine the run had, not one moment.
    eprintln!("measuring the ceiling again…");
    let after = measure_ceiling(CEILING_ROUNDS);
    report.ceiling = Ceiling::new(before, after, n, report.committed_tx_per_s);
    Ok(report)
}

/// A figure over several runs.
#[derive(serde::Serialize, Debug, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    /// `None` for no values. With an even count the median is the lower middle value, so
    /// that it is always one a run measured.
    fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            median: *v.get((v.len().checked_sub(1)?) / 2)?,
            min: *v.first()?,
            max: *v.last()?,
        })
    }
}

/// The medians of several runs.
#[derive(serde::Serialize)]
struct Summary {
    runs: usize,
    /// Index (from 0) of the run with the median committed rate: the one plotted.
    median_run: usize,
    committed_tx_per_s: Spread,
    latency_p50_ms: Spread,
    latency_p90_ms: Spread,
    latency_p99_ms: Spread,
    latency_max_ms: Spread,
    /// CPU of all validators together.
    cpu_cores_nodes: Spread,
    /// The largest peak RSS of any validator in each run.
    peak_rss_mb: Spread,
    view_changes: Spread,
    refusals: Spread,
    ceiling_tx_per_s: Spread,
    committed_over_ceiling: Spread,
}

impl Summary {
    fn of(reports: &[Report]) -> Summary {
        let spread = |f: &dyn Fn(&Report) -> f64| {
            Spread::of(reports.iter().map(f)).unwrap_or(Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            })
        };
        let committed = spread(&|r| r.committed_tx_per_s);
        let median_run = reports
            .iter()
            .position(|r| r.committed_tx_per_s == committed.median)
            .unwrap_or(0);
        Summary {
            runs: reports.len(),
            median_run,
            committed_tx_per_s: committed,
            latency_p50_ms: spread(&|r| r.latency_ms.p50),
            latency_p90_ms: spread(&|r| r.latency_ms.p90),
            latency_p99_ms: spread(&|r| r.latency_ms.p99),
            latency_max_ms: spread(&|r| r.latency_ms.max),
            cpu_cores_nodes: spread(&|r| r.nodes.iter().map(|n| n.cpu_cores).sum()),
            peak_rss_mb: spread(&|r| r.nodes.iter().map(|n| n.peak_rss_mb).fold(0.0, f64::max)),
            view_changes: spread(&|r| r.view_changes),
            refusals: spread(&|r| {
                (r.refused_mempool_full + r.refused_overloaded + r.refused_other) as f64
            }),
            ceiling_tx_per_s: spread(&|r| r.ceiling.ceiling_tx_per_s),
            committed_over_ceiling: spread(&|r| r.ceiling.committed_over_ceiling),
        }
    }
}

fn print_summary(reports: &[Report], s: &Summary) {
    let first = &reports[0];
    println!(
        "tally bench: {} runs, {} validators, {}-byte transactions, {:.0} tx/s offered for {} s each",
        s.runs, first.validators, first.tx_bytes, first.offered_tx_per_s, first.duration_s
    );
    println!(
        "  {:>6}  committed tx/s  p50 ms  p90 ms  p99 ms  max ms  refusals  view changes  peak RSS MB  CPU (cores)  committed/ceiling",
        "run"
    );
    let row = |label: &str, figures: [f64; 10]| {
        let [rate, p50, p90, p99, max, refused, vcs, rss, cpu, ratio] = figures;
        println!(
            "  {label:>6}  {rate:>14.0}  {p50:>6.0}  {p90:>6.0}  {p99:>6.0}  {max:>6.0}  {refused:>8.0}  {vcs:>12.0}  {rss:>11.0}  {cpu:>11.2}  {ratio:>17.2}"
        );
    };
    for (i, r) in reports.iter().enumerate() {
        row(
            &(i + 1).to_string(),
            [
                r.committed_tx_per_s,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max,
                (r.refused_mempool_full + r.refused_overloaded + r.refused_other) as f64,
                r.view_changes,
                r.nodes.iter().map(|n| n.peak_rss_mb).fold(0.0, f64::max),
                r.nodes.iter().map(|n| n.cpu_cores).sum::<f64>(),
                r.ceiling.committed_over_ceiling,
            ],
        );
    }
    row(
        "median",
        [
            s.committed_tx_per_s.median,
            s.latency_p50_ms.median,
            s.latency_p90_ms.median,
            s.latency_p99_ms.median,
            s.latency_max_ms.median,
            s.refusals.median,
            s.view_changes.median,
            s.peak_rss_mb.median,
            s.cpu_cores_nodes.median,
            s.committed_over_ceiling.median,
        ],
    );
    println!(
        "  (each column's median on its own; run {} has the median committed rate: the one --plot draws)",
        s.median_run + 1
    );
}

fn presign(
    chain: &ChainId,
    total: usize,
    accounts: usize,
    tx_bytes: usize,
) -> Vec<(Digest, Vec<u8>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let keys: Vec<SecretKey> = (0..accounts)
        .map(|i| {
            let mut seed = [0x5au8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SecretKey::from_seed(&seed)
        })
        .collect();
    // The put's value pads the encoding to tx_bytes: overhead is 64 (signature) + header.
    let probe = |len: usize| {
        Transaction {
            chain_id: chain.clone(),
            sender: keys[0].public_key(),
            nonce: 0,
            action: Action::Put {
                key: 0u64.to_le_bytes().to_vec(),
                value: vec![0; len],
            },
        }
        .sign(&keys[0])
        .map(|t| t.encoded().len())
        .unwrap_or(0)
    };
    let pad = tx_bytes.saturating_sub(probe(0));
    let mut out: Vec<(Digest, Vec<u8>)> = vec![(Digest::ZERO, vec![]); total];
    let chunk = total.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(chunk).enumerate() {
            let keys = &keys;
            s.spawn(move || {
                for (j, slot) in part.iter_mut().enumerate() {
                    let i = t * chunk + j;
                    let sender = i % accounts;
                    let nonce = (i / accounts) as u64;
                    let tx = Transaction {
                        chain_id: chain.clone(),
                        sender: keys[sender].public_key(),
                        nonce,
                        action: Action::Put {
                            key: (i as u64).to_le_bytes().to_vec(),
                            value: vec![(i % 251) as u8; pad],
                        },
                    }
                    .sign(&keys[sender])
                    .expect("signs");
                    *slot = (tx.hash(), tx.into_encoded());
                }
            });
        }
    });
    out
}

#[derive(serde::Serialize)]
struct Report {
    validators: usize,
    tx_bytes: usize,
    duration_s: u64,
    offered_tx_per_s: f64,
    committed_tx_per_s: f64,
    /// Admitted submission → commit.
    latency_ms: Percentiles,
    /// First submission → commit (includes waiting out "mempool full" refusals).
    latency_from_first_submission_ms: Percentiles,
    committed: u64,
    submitted: u64,
    /// Submissions of a transaction sent before (after a refusal).
    resubmitted: u64,
    refused_mempool_full: u64,
    /// Refused with "node overloaded" (its verification queue was full): sent again too.
    refused_overloaded: u64,
    refused_other: u64,
    view_changes: f64,
    blocks_per_s: f64,
    transactions_per_block: f64,
    /// CPU of this benchmark process itself (it shares the machine with the nodes).
    client_cpu_cores: f64,
    /// The whole machine over the measured window: how busy it was, and with what else.
    machine: MachineUse,
    nodes: Vec<NodeUse>,
    ceiling: Ceiling,
    timeline: Vec<TimelinePoint>,
}

#[derive(serde::Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(serde::Serialize)]
struct NodeUse {
    name: String,
    cpu_cores: f64,
    peak_rss_mb: f64,
}

#[derive(serde::Serialize)]
struct MachineUse {
    cores: usize,
    /// CPU in use on the whole machine (user, system and interrupts), in cores.
    busy_cores: f64,
    /// Busy CPU spent neither by the validators nor by this client: other programs sharing the
    /// machine. Absent when the benchmark targets a running network.
    other_programs_cores: Option<f64>,
    /// CPU the hypervisor gave to other guests while this one wanted to run.
    steal_cores: f64,
}

/// Whole-machine CPU seconds so far, `(busy, steal)`, from the first line of `/proc/stat`.
fn machine_cpu() -> Option<(f64, f64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_proc_stat(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal …, in clock ticks (100 per second).
    let f: Vec<f64> = fields.map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?;
    Some((busy / 100.0, f.get(7).copied().unwrap_or(0.0) / 100.0))
}

fn machine_use(
    start: Option<(f64, f64)>,
    end: Option<(f64, f64)>,
    window: f64,
    ours: Option<f64>,
) -> MachineUse {
    let (busy, steal) = match (start, end) {
        (Some((b0, s0)), Some((b1, s1))) if window > 0.0 => {
            ((b1 - b0) / window, (s1 - s0) / window)
        }
        _ => (0.0, 0.0),
    };
    MachineUse {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        busy_cores: busy,
        other_programs_cores: ours.map(|o| (busy - o).max(0.0)),
        steal_cores: steal,
    }
}

#[derive(serde::Serialize)]
struct Ceiling {
    /// The best of all rounds, before and after.
    verifications_per_s_all_cores: f64,
    /// Each round's figure, in order: before the network started…
    rounds_before_per_s: Vec<f64>,
    /// … and after it stopped.
    rounds_after_per_s: Vec<f64>,
    ceiling_tx_per_s: f64,
    committed_over_ceiling: f64,
}

impl Ceiling {
    fn new(before: Vec<f64>, after: Vec<f64>, validators: usize, committed: f64) -> Ceiling {
        let best = before.iter().chain(&after).copied().fold(0.0, f64::max);
        let ceiling = best / validators.max(1) as f64;
        Ceiling {
            verifications_per_s_all_cores: best,
            rounds_before_per_s: before,
            rounds_after_per_s: after,
            ceiling_tx_per_s: ceiling,
            committed_over_ceiling: committed / ceiling,
        }
    }

    fn worst(&self) -> f64 {
        self.rounds_before_per_s
            .iter()
            .chain(&self.rounds_after_per_s)
            .copied()
            .fold(f64::INFINITY, f64::min)
    }
}

#[derive(serde::Serialize, Clone)]
struct TimelinePoint {
    second: u64,
    offered: u64,
    committed: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

async fn drive(
    a: &BenchArgs,
    info: &NetworkInfo,
    nodes: &Nodes,
    txs: Vec<(Digest, Vec<u8>)>,
    validators: usize,
    ceiling_before: Vec<f64>,
) -> Result<Report> {
    // Wait for the network.
    let clients: Vec<_> = info
        .nodes
        .iter()
        .map(|n| crate::client::client(&n.rpc))
        .collect::<Result<_>>()?;
    let ready = Instant::now();
    for c in &clients {
        while crate::client::call(c, "chain_status", json!({}))
            .await
            .is_err()
        {
            if ready.elapsed() > Duration::from_secs(60) {
                bail!("the network did not start");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let total_secs = a.warmup + a.duration;
    let submitted_at: Arc<Mutex<HashMap<Digest, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(txs.len())));
    let first_sent: Arc<Mutex<HashMap<Digest, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(txs.len())));
    let seconds: Arc<Mutex<Vec<Second>>> = Arc::new(Mutex::new(vec![
        Second::default();
        total_secs as usize + 30
    ]));
    let committed_total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    // Commits: a block subscription (without bodies) on the first node.
    let ws_url = info.nodes[0].rpc.replace("http://", "ws://");
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .max_response_size(256 * 1024 * 1024)
        .build(&ws_url)
        .await?;
    let mut sub = ws
        .subscribe::<Value, _>(
            "subscribe_blocks",
            {
                let mut p = jsonrpsee::core::params::ObjectParams::new();
                p.insert("include_txs", false)?;
                p
            },
            "unsubscribe_blocks",
        )
        .await
        .context("subscribe_blocks")?;
    {
        let (submitted_at, first_sent, seconds, committed_total) = (
            submitted_at.clone(),
            first_sent.clone(),
            seconds.clone(),
            committed_total.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(block)) = sub.next().await {
                let now = Instant::now();
                let sec = (now - start).as_secs() as usize;
                let hashes: Vec<Digest> = block["tx_hashes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|h| Digest::from_hex(h.as_str()?).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
                let mut first = first_sent.lock().unwrap_or_else(|e| e.into_inner());
                let mut secs = seconds.lock().unwrap_or_else(|e| e.into_inner());
                for h in hashes {
                    let first_at = first.remove(&h);
                    if let Some(t) = at.remove(&h) {
                        committed_total.fetch_add(1, Ordering::Relaxed);
                        if let Some(s) = secs.get_mut(sec) {
                            s.committed += 1;
                            s.latencies.push((now - t).as_secs_f64() * 1000.0);
                            let t0 = first_at.unwrap_or(t);
                            s.latencies_first.push((now - t0).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
        });
    }

    // Open loop: every 10 ms, the transactions due go out, whatever happened to earlier ones.
    let refused_full = Arc::new(AtomicU64::new(0));
    let refused_overloaded = Arc::new(AtomicU64::new(0));
    let refused_other = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(AtomicU64::new(0));
    let progress = indicatif::ProgressBar::new(total_secs);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut cpu_start = Vec::new();
    let mut measuring = false;
    let mut machine_start = None;
    let mut view_changes_start = 0.0;
    let mut blocks_start = 0.0;
    let mut client_cpu_start = 0.0;
    let per_tick = a.rate as f64 / 100.0;
    let cursors: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.accounts).map(|_| AtomicU64::new(0)).collect());
    let resubmitted = Arc::new(AtomicU64::new(0));
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut k = 0u64;
    let txs = Arc::new(txs);
    loop {
        tick.tick().await;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= total_secs as f64 {
            break;
        }
        if !measuring && elapsed >= a.warmup as f64 {
            measuring = true;
            machine_start = machine_cpu();
            cpu_start = nodes.children.iter().map(|c| proc_stat(c.id())).collect();
            client_cpu_start = proc_stat(std::process::id()).map_or(0.0, |(c, _)| c);
            for n in &info.nodes {
                view_changes_start += metric_sum(&n.metrics, "tally_view_changes_total").await;
            }
            blocks_start = metric_sum(&info.nodes[0].metrics, "tally_blocks_committed_total").await;
        }
        let due = ((k + 1) as f64 * per_tick) as usize;
        k += 1;
        let end = due.min(txs.len());
        if end <= sent {
            continue;
        }
        // Each slot is one account's turn (round robin); the account sends its next nonce.
        // A transaction refused with "mempool full" or "overloaded" (both mean: retry later)
        // moves the account's cursor back to it,
        // so it is sent again at the account's next turn, as a client would retry it; the
        // slots stay the open-loop schedule.
        let mut picked = Vec::with_capacity(end - sent);
        for slot in sent..end {
            let account = slot % a.accounts;
            let nonce = cursors[account].fetch_add(1, Ordering::Relaxed) as usize;
            let i = nonce * a.accounts + account;
            if i < txs.len() {
                picked.push(i);
            }
        }
        sent = end;
        let sec = (start.elapsed()).as_secs() as usize;
        {
            let now = Instant::now();
            let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
            let mut first = first_sent.lock().unwrap_or_else(|e| e.into_inner());
            for &i in &picked {
                at.entry(txs[i].0).or_insert(now);
                match first.entry(txs[i].0) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        resubmitted.fetch_add(1, Ordering::Relaxed);
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(now);
                    }
                }
            }
            let mut secs = seconds.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = secs.get_mut(sec) {
                s.offered += picked.len() as u64;
            }
        }
        let client = clients[(k as usize) % clients.len()].clone();
        let (txs, full, overloaded, other, inflight, submitted_at, first_sent, cursors) = (
            txs.clone(),
            refused_full.clone(),
            refused_overloaded.clone(),
            refused_other.clone(),
            inflight.clone(),
            submitted_at.clone(),
            first_sent.clone(),
            cursors.clone(),
        );
        let accounts = a.accounts;
        inflight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let batch: Vec<String> = picked
                .iter()
                .map(|&i| tally_crypto::to_hex(&txs[i].1))
                .collect();
            let mut p = jsonrpsee::core::params::ObjectParams::new();
            let _ = p.insert("txs", batch);
            let result: Result<Value, _> = client.request("tx_submit_batch", p).await;
            let retry = |i: usize| {
                cursors[i % accounts].fetch_min((i / accounts) as u64, Ordering::Relaxed);
            };
            match result {
                Ok(Value::Array(results)) => {
                    let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
                    for (r, &i) in results.iter().zip(&picked) {
                        let Some(e) = r.get("error") else { continue };
                        let reason = e["data"]["reason"].as_str().unwrap_or("");
                        match reason {
                            // Already pending from an earlier attempt: still on its way.
                            "duplicate" => {}
                            // Already committed (an earlier attempt got in).
                            "stale_nonce" => {
                                at.remove(&txs[i].0);
                                first_sent
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .remove(&txs[i].0);
                            }
                            _ => {
                                at.remove(&txs[i].0);
                                if e["code"] == crate::rpc::codes::MEMPOOL_FULL {
                                    full.fetch_add(1, Ordering::Relaxed);
                                    retry(i);
                                } else if e["code"] == crate::rpc::codes::OVERLOADED {
                                    overloaded.fetch_add(1, Ordering::Relaxed);
                                    retry(i);
                                } else {
                                    other.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
                _ => {
                    other.fetch_add(picked.len() as u64, Ordering::Relaxed);
                    let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
                    for &i in &picked {
                        at.remove(&txs[i].0);
                        retry(i);
                    }
                }
            }
            inflight.fetch_sub(1, Ordering::Relaxed);
        });
        if k.is_multiple_of(100) {
            progress.set_position(elapsed as u64);
            progress.set_message(format!(
                "committed {}  refused {}",
                committed_total.load(Ordering::Relaxed),
                refused_full.load(Ordering::Relaxed)
                    + refused_overloaded.load(Ordering::Relaxed)
                    + refused_other.load(Ordering::Relaxed)
            ));
        }
    }
    let cpu_end: Vec<_> = nodes.children.iter().map(|c| proc_stat(c.id())).collect();
    let client_cpu_end = proc_stat(std::process::id()).map_or(0.0, |(c, _)| c);
    let machine_end = machine_cpu();
    let window = start.elapsed().as_secs_f64() - a.warmup as f64;
    let client_cpu = (client_cpu_end - client_cpu_start) / window;
    let mut view_changes_end = 0.0;
    for n in &info.nodes {
        view_changes_end += metric_sum(&n.metrics, "tally_view_changes_total").await;
    }
    let blocks =
        metric_sum(&info.nodes[0].metrics, "tally_blocks_committed_total").await - blocks_start;
    // Let the last ones commit.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(10)
        && !submitted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish_and_clear();

    let secs = seconds.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let measured = &secs[a.warmup as usize..total_secs as usize];
    let offered: u64 = measured.iter().map(|s| s.offered).sum();
    let committed: u64 = measured.iter().map(|s| s.committed).sum();
    let mut lat: Vec<f64> = measured
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut lat_first: Vec<f64> = measured
        .iter()
        .flat_map(|s| s.latencies_first.iter().copied())
        .collect();
    lat_first.sort_by(|a, b| a.total_cmp(b));
    let percentiles = |l: &[f64]| Percentiles {
        p50: percentile(l, 0.5),
        p90: percentile(l, 0.9),
        p99: percentile(l, 0.99),
        max: l.last().copied().unwrap_or(0.0),
    };
    let nodes_use: Vec<NodeUse> = info
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (cpu, rss) = match (
                cpu_start.get(i).copied().flatten(),
                cpu_end.get(i).copied().flatten(),
            ) {
                (Some((c0, _)), Some((c1, rss))) => ((c1 - c0) / window, rss as f64 / 1e6),
                _ => (0.0, 0.0),
            };
            NodeUse {
                name: n.name.clone(),
                cpu_cores: cpu,
                peak_rss_mb: rss,
            }
        })
        .collect();
    let committed_rate = committed as f64 / a.duration as f64;
    let timeline = secs[..total_secs as usize]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut l = s.latencies.clone();
            l.sort_by(|a, b| a.total_cmp(b));
            TimelinePoint {
                second: i as u64,
                offered: s.offered,
                committed: s.committed,
                latency_p50_ms: percentile(&l, 0.5),
                latency_p99_ms: percentile(&l, 0.99),
            }
        })
        .collect();
    Ok(Report {
        validators: info.nodes.len(),
        tx_bytes: a.tx_bytes,
        duration_s: a.duration,
        offered_tx_per_s: offered as f64 / a.duration as f64,
        committed_tx_per_s: committed_rate,
        latency_ms: percentiles(&lat),
        latency_from_first_submission_ms: percentiles(&lat_first),
        committed,
        submitted: sent as u64,
        resubmitted: resubmitted.load(Ordering::Relaxed),
        refused_mempool_full: refused_full.load(Ordering::Relaxed),
        refused_overloaded: refused_overloaded.load(Ordering::Relaxed),
        refused_other: refused_other.load(Ordering::Relaxed),
        view_changes: view_changes_end - view_changes_start,
        blocks_per_s: blocks / window,
        transactions_per_block: if blocks > 0.0 {
            committed as f64 / blocks
        } else {
            0.0
        },
        client_cpu_cores: client_cpu,
        machine: machine_use(
            machine_start,
            machine_end,
            window,
            // Only when this run started the validators is their CPU known.
            (!nodes.children.is_empty())
                .then(|| nodes_use.iter().map(|n| n.cpu_cores).sum::<f64>() + client_cpu),
        ),
        nodes: nodes_use,
        ceiling: Ceiling::new(ceiling_before, Vec::new(), validators, committed_rate),
        timeline,
    })
}

fn print_table(r: &Report) {
    println!(
        "tally bench: {} validators, {}-byte transactions, {} s measured",
        r.validators, r.tx_bytes, r.duration_s
    );
    println!("  offered            {:>10.0} tx/s", r.offered_tx_per_s);
    println!(
        "  committed          {:>10.0} tx/s  ({} transactions)",
        r.committed_tx_per_s, r.committed
    );
    println!(
        "  latency (admitted) p50 {:.0} ms  p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
    );
    println!(
        "  from first submit  p50 {:.0} ms  p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        r.latency_from_first_submission_ms.p50,
        r.latency_from_first_submission_ms.p90,
        r.latency_from_first_submission_ms.p99,
        r.latency_from_first_submission_ms.max
    );
    println!(
        "  refused            {} mempool full and {} overloaded (sent again), {} other; \
         {} resubmissions",
        r.refused_mempool_full, r.refused_overloaded, r.refused_other, r.resubmitted
    );
    println!("  view changes       {}", r.view_changes);
    println!(
        "  blocks             {:.1} /s, {:.0} transactions each",
        r.blocks_per_s, r.transactions_per_block
    );
    for n in &r.nodes {
        println!(
            "  {:<8}           cpu {:.2} cores  peak RSS {:.0} MB",
            n.name, n.cpu_cores, n.peak_rss_mb
        );
    }
    println!("  bench client       cpu {:.2} cores", r.client_cpu_cores);
    let m = &r.machine;
    let other = m
        .other_programs_cores
        .map_or(String::new(), |o| format!(", {o:.2} of it other programs"));
    println!(
        "  machine            {} cores, {:.2} busy{other}; steal {:.2}",
        m.cores, m.busy_cores, m.steal_cores
    );
    println!(
        "  ceiling            {:.0} verifications/s on all cores (best of {} rounds before and {} after, worst {:.0}) / {} validators = {:.0} tx/s; committed/ceiling = {:.2}",
        r.ceiling.verifications_per_s_all_cores,
        r.ceiling.rounds_before_per_s.len(),
        r.ceiling.rounds_after_per_s.len(),
        r.ceiling.worst(),
        r.validators,
        r.ceiling.ceiling_tx_per_s,
        r.ceiling.committed_over_ceiling
    );
}

/// Two stacked line charts: throughput (offered, committed) and latency (p50, p99).
fn plot_svg(r: &Report) -> String {
    let (w, h, pad) = (900.0, 260.0, 50.0);
    let t = &r.timeline;
    let n = t.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let max_tp = t
        .iter()
        .map(|p| p.offered.max(p.committed))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_lat = t.iter().map(|p| p.latency_p99_ms).fold(1.0f64, f64::max);
    let line = |vals: Vec<f64>, max: f64, top: f64, color: &str| {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    x(i),
                    top + h - pad - (h - 2.0 * pad) * v / max
                )
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    let axes = |top: f64, title: &str, max: f64, unit: &str| {
        format!(
            "<text x=\"{pad}\" y=\"{}\" font-size=\"14\">{title}</text><line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{pad}\" y1=\"{}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#888\"/><text x=\"5\" y=\"{}\" font-size=\"11\">{max:.0} {unit}</text><text x=\"5\" y=\"{}\" font-size=\"11\">0</text><text x=\"{}\" y=\"{}\" font-size=\"11\">{} s</text>",
            top + 20.0,
            top + h - pad,
            w - pad,
            top + h - pad,
            top + pad,
            top + h - pad,
            top + pad + 4.0,
            top + h - pad,
            w - pad - 20.0,
            top + h - pad + 15.0,
            t.len()
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\">",
        2.0 * h
    );
    s.push_str(&axes(
        0.0,
        "throughput (tx/s): offered (grey), committed (blue)",
        max_tp,
        "tx/s",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.offered as f64).collect(),
        max_tp,
        0.0,
        "#999",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.committed as f64).collect(),
        max_tp,
        0.0,
        "#1f77b4",
    ));
    s.push_str(&axes(
        h,
        "latency (ms): p50 (green), p99 (red)",
        max_lat,
        "ms",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.latency_p50_ms).collect(),
        max_lat,
        h,
        "#2ca02c",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.latency_p99_ms).collect(),
        max_lat,
        h,
        "#d62728",
    ));
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_a_measured_median() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        // Even count: the lower middle value, one a run measured.
        assert_eq!(Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Spread::of([5.0]).unwrap().median, 5.0);
        assert_eq!(Spread::of([]), None);
    }

    #[test]
    fn machine_cpu_is_read_from_the_first_line_of_proc_stat() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let text = "cpu  1000 50 300 9000 20 10 40 70 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let (busy, steal) = parse_proc_stat(text).unwrap();
        assert!((busy - 14.0).abs() < 1e-9, "{busy}");
        assert!((steal - 0.7).abs() < 1e-9, "{steal}");
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 x 3\n"), None);
    }

    #[test]
    fn other_programs_are_the_busy_cpu_not_ours() {
        let m = machine_use(Some((100.0, 1.0)), Some((120.0, 2.0)), 10.0, Some(1.5));
        assert!((m.busy_cores - 2.0).abs() < 1e-9);
        assert!((m.steal_cores - 0.1).abs() < 1e-9);
        assert!((m.other_programs_cores.unwrap() - 0.5).abs() < 1e-9);
        // A running network's validators are not ours to count: no estimate.
        let m = machine_use(Some((100.0, 1.0)), Some((120.0, 2.0)), 10.0, None);
        assert_eq!(m.other_programs_cores, None);
    }
}
