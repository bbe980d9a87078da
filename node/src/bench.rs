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
    /// Offered load, transactions per second (open loop). Several rates, comma-separated
    /// (`--rate 3000,4000,5000`), make a sweep: each rate on fresh networks, one row of
    /// medians per rate, and the highest rate that met the latency bounds.
    #[arg(
        long = "rate",
        value_delimiter = ',',
        num_args = 1,
        default_value = "2000"
    )]
    pub rates: Vec<u64>,
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
    /// First port of the started network (each validator takes a few from here on).
    #[arg(long, default_value_t = 36600)]
    pub base_port: u16,
    /// Genesis knob of the started network: longest wait before a batch is proposed
    /// (default 10).
    #[arg(long)]
    pub batch_delay_ms: Option<u64>,
    /// Genesis knob: largest batch in bytes (default 1 MiB).
    #[arg(long)]
    pub batch_bytes_max: Option<u64>,
    /// Genesis knob: sequence numbers the primary may run ahead of the last stable
    /// checkpoint (default 256).
    #[arg(long)]
    pub watermark_window: Option<u64>,
    /// Genesis knob: sequence numbers between checkpoints (default 64).
    #[arg(long)]
    pub checkpoint_interval: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw an SVG: throughput and latency over time (one rate), or latency against
    /// throughput, one point per rate (a sweep).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Keep the started network's folder (printed).
    #[arg(long)]
    pub keep: bool,
    /// Repeat the whole benchmark this many times, each on a fresh network, and report every
    /// run and the median of each figure (a shared machine's runs differ; quote medians).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// A sweep's latency bound on the median p50 (admitted submission → commit).
    #[arg(long, default_value_t = 150)]
    pub p50_max_ms: u64,
    /// A sweep's latency bound on the median p99.
    #[arg(long, default_value_t = 1000)]
    pub p99_max_ms: u64,
}

/// Most rates one sweep accepts.
pub const RATES_MAX: usize = 20;

/// Highest offered rate accepted (a sanity bound, far above what one machine can verify).
pub const RATE_MAX: u64 = 1_000_000;

/// Most bytes of pre-signed transactions one run may hold in memory.
pub const PRESIGNED_BYTES_MAX: u64 = 4 << 30;

/// Share of the offered rate a sweep's row must commit to count as sustained.
pub const SUSTAINED_SHARE: f64 = 0.98;

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
    /// Each child's name and log file, in the same order.
    logs: Vec<(String, PathBuf)>,
    _dir: Option<tempfile::TempDir>,
}

impl Nodes {
    /// The first validator this benchmark started that is no longer running, with the end of
    /// its log: a fault-free benchmark with a dead validator measures nothing worth keeping.
    fn exited(&self) -> Option<String> {
        self.children
            .iter()
            .zip(&self.logs)
            .find(|(c, _)| has_exited(c.id()))
            .map(|(_, (name, log))| {
                format!(
                    "validator {name} exited; the end of its log ({}):\n{}",
                    log.display(),
                    log_tail(log, 12)
                )
            })
    }
}

/// Whether a child process has ended (a zombie until it is waited for) or is gone.
fn has_exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X") | None)
}

/// The last `lines` lines of a log file.
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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
                logs: vec![],
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
    let mut logs = Vec::new();
    for n in &info.nodes {
        // Quieter logs: a benchmark measures the node, not its terminal.
        let config = n.home.join("config.toml");
        let text = std::fs::read_to_string(&config)?.replace("log = \"info\"", "log = \"warn\"");
        std::fs::write(&config, text)?;
        let log_path = n.home.join("node.log");
        let log = std::fs::File::create(&log_path)?;
        logs.push((n.name.clone(), log_path));
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
                logs,
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
            logs,
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

/// Refuses bad options before anything starts.
fn validate(a: &BenchArgs) -> Result<()> {
    if a.tx_bytes < 200 || a.tx_bytes > tally_ledger::TX_BYTES_MAX {
        bail!(
            "--tx-bytes must be between 200 and {}",
            tally_ledger::TX_BYTES_MAX
        );
    }
    if a.runs == 0 || a.runs > RUNS_MAX {
        bail!("--runs must be between 1 and {RUNS_MAX}");
    }
    if a.duration == 0 {
        bail!("--duration must be at least 1s");
    }
    if a.rates.is_empty() || a.rates.len() > RATES_MAX {
        bail!("--rate takes between 1 and {RATES_MAX} rates");
    }
    if let Some(r) = a.rates.iter().find(|r| **r == 0 || **r > RATE_MAX) {
        bail!("--rate {r}: each rate must be between 1 and {RATE_MAX} tx/s");
    }
    let top = a.rates.iter().copied().max().unwrap_or(0);
    let bytes = top
        .saturating_mul(a.warmup.saturating_add(a.duration))
        .saturating_mul(a.tx_bytes as u64);
    if bytes > PRESIGNED_BYTES_MAX {
        bail!(
            "--rate {top} for {} s (warm-up included) of {}-byte transactions needs {} MiB of pre-signed transactions; at most {} MiB: lower the rate or the duration",
            a.warmup.saturating_add(a.duration),
            a.tx_bytes,
            bytes >> 20,
            PRESIGNED_BYTES_MAX >> 20
        );
    }
    let mut distinct = a.rates.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if (a.runs > 1 || distinct.len() > 1) && a.network.is_some() {
        bail!(
            "--runs and a sweep of several rates need networks the benchmark starts itself: against a running network the second run's transactions would reuse the first run's nonces"
        );
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> Result<()> {
    validate(&a)?;
    let mut rates = a.rates.clone();
    rates.sort_unstable();
    rates.dedup();
    if let [rate] = rates[..] {
        return run_rate(&a, rate);
    }
    sweep(&a, &rates)
}

/// One rate, `--runs` times.
fn run_rate(a: &BenchArgs, rate: u64) -> Result<()> {
    let mut reports = Vec::with_capacity(a.runs);
    for i in 0..a.runs {
        if a.runs > 1 {
            eprintln!("run {} of {}", i + 1, a.runs);
        }
        reports.push(run_once(a, rate)?);
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

/// The latency bounds a sweep's rows are held to.
#[derive(serde::Serialize, Clone, Copy)]
struct Bounds {
    /// Median committed rate at least this share of the offered one.
    committed_share_min: f64,
    p50_max_ms: f64,
    p99_max_ms: f64,
    /// And no view change in any run.
    view_changes_max: f64,
}

impl Bounds {
    fn of(a: &BenchArgs) -> Bounds {
        Bounds {
            committed_share_min: SUSTAINED_SHARE,
            p50_max_ms: a.p50_max_ms as f64,
            p99_max_ms: a.p99_max_ms as f64,
            view_changes_max: 0.0,
        }
    }

    /// Whether a rate's medians stayed within the bounds.
    fn met(&self, offered: u64, s: &Summary) -> bool {
        s.committed_tx_per_s.median >= self.committed_share_min * offered as f64
            && s.latency_p50_ms.median <= self.p50_max_ms
            && s.latency_p99_ms.median <= self.p99_max_ms
            && s.view_changes.max <= self.view_changes_max
    }
}

/// One row of a sweep.
#[derive(serde::Serialize)]
struct SweepPoint {
    offered_tx_per_s: u64,
    /// Whether the medians met the bounds.
    met: bool,
    median: Summary,
    runs: Vec<Report>,
}

/// The highest offered rate whose row met the bounds.
fn sustainable(points: &[SweepPoint]) -> Option<u64> {
    points
        .iter()
        .filter(|p| p.met)
        .map(|p| p.offered_tx_per_s)
        .max()
}

/// Several rates, lowest first, each `--runs` times on fresh networks.
fn sweep(a: &BenchArgs, rates: &[u64]) -> Result<()> {
    let bounds = Bounds::of(a);
    // Setup per run: two ceiling measurements, start-up, pre-signing, shut-down.
    let per_run = a.warmup + a.duration + 20;
    eprintln!(
        "sweep of {} rates, {} run(s) each: about {} minutes",
        rates.len(),
        a.runs,
        (rates.len() * a.runs) as u64 * per_run / 60 + 1
    );
    let mut points = Vec::with_capacity(rates.len());
    for (i, &rate) in rates.iter().enumerate() {
        let mut reports = Vec::with_capacity(a.runs);
        for run in 0..a.runs {
            eprintln!(
                "rate {rate} tx/s ({} of {}), run {} of {}",
                i + 1,
                rates.len(),
                run + 1,
                a.runs
            );
            reports.push(run_once(a, rate)?);
        }
        let median = Summary::of(&reports);
        points.push(SweepPoint {
            offered_tx_per_s: rate,
            met: bounds.met(rate, &median),
            median,
            runs: reports,
        });
    }
    let best = sustainable(&points);
    if let Some(path) = &a.plot {
        std::fs::write(path, sweep_svg(&points, &bounds))?;
        eprintln!("throughput-latency plot written to {}", path.display());
    }
    if a.json {
        let out = json!({
            "sweep": points,
            "bounds": bounds,
            "sustainable_tx_per_s": best,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_sweep(&points, &bounds, best);
    }
    Ok(())
}

fn print_sweep(points: &[SweepPoint], b: &Bounds, best: Option<u64>) {
    let Some(first) = points.first().and_then(|p| p.runs.first()) else {
        return;
    };
    println!(
        "tally bench sweep: {} validators, {}-byte transactions, {} s measured per run, {} run(s) per rate; medians",
        first.validators,
        first.tx_bytes,
        first.duration_s,
        points[0].runs.len()
    );
    println!(
        "  offered  committed tx/s  p50 ms  p90 ms  p99 ms  max ms  refusals  view changes  peak RSS MB  CPU (cores)  ceiling tx/s  committed/ceiling  met"
    );
    for p in points {
        let [rate, p50, p90, p99, max, refused, vcs, rss, cpu, ratio] = p.median.medians();
        let ceiling = p.median.ceiling_tx_per_s.median;
        let met = if p.met { "yes" } else { "no" };
        println!(
            "  {:>7}  {rate:>14.0}  {p50:>6.0}  {p90:>6.0}  {p99:>6.0}  {max:>6.0}  {refused:>8.0}  {vcs:>12.0}  {rss:>11.0}  {cpu:>11.2}  {ceiling:>12.0}  {ratio:>17.2}  {met}",
            p.offered_tx_per_s,
        );
    }
    let rule = format!(
        "committed ≥ {:.0}% of offered, p50 ≤ {:.0} ms, p99 ≤ {:.0} ms, no view change",
        b.committed_share_min * 100.0,
        b.p50_max_ms,
        b.p99_max_ms
    );
    match best {
        Some(r) => println!("  sustainable: {r} tx/s, the highest rate that met: {rule}"),
        None => println!("  sustainable: none of these rates met: {rule}"),
    }
}

/// One whole benchmark: the ceiling before, a network, the load, the ceiling after.
fn run_once(a: &BenchArgs, rate: u64) -> Result<Report> {
    let n = if a.network.is_some() { 0 } else { a.validators };
    eprintln!("measuring the signature-verification ceiling on all cores…");
    let before = measure_ceiling(CEILING_ROUNDS);
    let (info, nodes) = start_network(a)?;
    let n = if n == 0 { info.nodes.len() } else { n };
    let chain = ChainId::new(info.chain_id.clone())?;

    // Pre-sign everything, before any clock starts.
    let total = rate * (a.warmup + a.duration);
    eprintln!(
        "signing {total} transactions of {} bytes from {} accounts…",
        a.tx_bytes, a.accounts
    );
    let txs = presign(&chain, total as usize, a.accounts, a.tx_bytes);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut report = runtime.block_on(drive(a, rate, &info, &nodes, txs, n, before.clone()))?;
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
    /// The medians in the column order of the tables: committed tx/s, p50, p90, p99, max,
    /// refusals, view changes, peak RSS, CPU, committed/ceiling.
    fn medians(&self) -> [f64; 10] {
        [
            self.committed_tx_per_s.median,
            self.latency_p50_ms.median,
            self.latency_p90_ms.median,
            self.latency_p99_ms.median,
            self.latency_max_ms.median,
            self.refusals.median,
            self.view_changes.median,
            self.peak_rss_mb.median,
            self.cpu_cores_nodes.median,
            self.committed_over_ceiling.median,
        ]
    }

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
    row("median", s.medians());
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
    rate: u64,
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
            if let Some(e) = nodes.exited() {
                bail!("the network did not start: {e}");
            }
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
    let per_tick = rate as f64 / 100.0;
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
            if let Some(e) = nodes.exited() {
                progress.finish_and_clear();
                bail!("stopped after {elapsed:.0} s: {e}");
            }
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

/// A sweep's throughput-latency curve: median committed rate across, median p50 and p99
/// latency up, one point per offered rate, and the latency bounds as dashed lines.
fn sweep_svg(points: &[SweepPoint], b: &Bounds) -> String {
    let (w, h, pad) = (900.0, 520.0, 60.0);
    let max_x = points
        .iter()
        .map(|p| (p.offered_tx_per_s as f64).max(p.median.committed_tx_per_s.median))
        .fold(1.0f64, f64::max);
    let max_y = points
        .iter()
        .map(|p| p.median.latency_p99_ms.median)
        .fold(b.p50_max_ms, f64::max)
        .max(1.0);
    let x = |v: f64| pad + (w - 2.0 * pad) * v / max_x;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max_y;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\
         <text x=\"{pad}\" y=\"25\" font-size=\"14\">latency (ms) against committed throughput (tx/s): p50 (green), p99 (red); labels: offered tx/s</text>\
         <line x1=\"{pad}\" y1=\"{b0}\" x2=\"{r}\" y2=\"{b0}\" stroke=\"#888\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b0}\" stroke=\"#888\"/>\
         <text x=\"5\" y=\"{t}\" font-size=\"11\">{max_y:.0} ms</text>\
         <text x=\"{r}\" y=\"{xl}\" font-size=\"11\" text-anchor=\"end\">{max_x:.0} tx/s</text>\
         <text x=\"{pad}\" y=\"{xl}\" font-size=\"11\">0</text>",
        b0 = h - pad,
        r = w - pad,
        t = pad + 4.0,
        xl = h - pad + 15.0,
    );
    for (bound, label) in [(b.p50_max_ms, "p50 bound"), (b.p99_max_ms, "p99 bound")] {
        if bound <= max_y {
            s.push_str(&format!(
                "<line x1=\"{pad}\" y1=\"{yy:.1}\" x2=\"{r}\" y2=\"{yy:.1}\" stroke=\"#bbb\" stroke-dasharray=\"6 4\"/>\
                 <text x=\"{r}\" y=\"{ly:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#888\">{label} {bound:.0} ms</text>",
                yy = y(bound),
                r = w - pad,
                ly = y(bound) - 3.0,
            ));
        }
    }
    for (pick, color) in [
        (
            &(|p: &SweepPoint| p.median.latency_p50_ms.median) as &dyn Fn(&SweepPoint) -> f64,
            "#2ca02c",
        ),
        (&|p: &SweepPoint| p.median.latency_p99_ms.median, "#d62728"),
    ] {
        let pts: Vec<String> = points
            .iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    x(p.median.committed_tx_per_s.median),
                    y(pick(p))
                )
            })
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        ));
        for p in points {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>",
                x(p.median.committed_tx_per_s.median),
                y(pick(p))
            ));
        }
    }
    for p in points {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x(p.median.committed_tx_per_s.median),
            y(p.median.latency_p99_ms.median) - 8.0,
            p.offered_tx_per_s
        ));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn args(line: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("bench").chain(line.iter().copied())).map(|c| c.a)
    }

    fn refusal(line: &[&str]) -> String {
        validate(&args(line).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn rates_are_one_or_a_list() {
        assert_eq!(args(&[]).unwrap().rates, vec![2000]);
        assert_eq!(args(&["--rate", "5000"]).unwrap().rates, vec![5000]);
        assert_eq!(
            args(&["--rate", "3000,4000,5000"]).unwrap().rates,
            vec![3000, 4000, 5000]
        );
        assert!(args(&["--rate", "3000,x"]).is_err());
        assert!(args(&["--rate", "-5"]).is_err());
        validate(&args(&["--rate", "3000,4000"]).unwrap()).unwrap();
    }

    #[test]
    fn bad_options_are_refused_before_anything_starts() {
        assert!(refusal(&["--rate", "0"]).contains("between 1 and"));
        assert!(refusal(&["--rate", "1000,2000000"]).contains("--rate 2000000"));
        let many: Vec<String> = (1..=21).map(|r| (r * 100).to_string()).collect();
        assert!(refusal(&["--rate", &many.join(",")]).contains("between 1 and 20 rates"));
        assert!(refusal(&["--duration", "0s"]).contains("--duration"));
        assert!(refusal(&["--rate", "200000", "--duration", "60s"]).contains("MiB"));
        assert!(refusal(&["--runs", "0"]).contains("--runs"));
        assert!(refusal(&["--tx-bytes", "10"]).contains("--tx-bytes"));
        assert!(
            refusal(&["--rate", "1000,2000", "--network", "n.json"]).contains("running network")
        );
        assert!(refusal(&["--runs", "2", "--network", "n.json"]).contains("running network"));
        validate(&args(&["--network", "n.json"]).unwrap()).unwrap();
        // The same rate twice is one rate.
        validate(&args(&["--rate", "500,500", "--network", "n.json"]).unwrap()).unwrap();
    }

    fn spread(v: f64) -> Spread {
        Spread {
            median: v,
            min: v,
            max: v,
        }
    }

    fn summary(committed: f64, p50: f64, p99: f64, view_changes: f64) -> Summary {
        Summary {
            runs: 1,
            median_run: 0,
            committed_tx_per_s: spread(committed),
            latency_p50_ms: spread(p50),
            latency_p90_ms: spread(p99),
            latency_p99_ms: spread(p99),
            latency_max_ms: spread(p99),
            cpu_cores_nodes: spread(1.0),
            peak_rss_mb: spread(100.0),
            view_changes: spread(view_changes),
            refusals: spread(0.0),
            ceiling_tx_per_s: spread(20_000.0),
            committed_over_ceiling: spread(committed / 20_000.0),
        }
    }

    #[test]
    fn a_rate_is_sustained_only_within_every_bound() {
        let b = Bounds::of(&args(&[]).unwrap());
        assert!(b.met(5000, &summary(4900.0, 150.0, 1000.0, 0.0)));
        assert!(
            !b.met(5000, &summary(4899.0, 100.0, 500.0, 0.0)),
            "committed"
        );
        assert!(!b.met(5000, &summary(5000.0, 151.0, 500.0, 0.0)), "p50");
        assert!(!b.met(5000, &summary(5000.0, 100.0, 1001.0, 0.0)), "p99");
        assert!(
            !b.met(5000, &summary(5000.0, 100.0, 500.0, 1.0)),
            "view change"
        );
        // The bounds are the operator's to set.
        let loose = Bounds::of(&args(&["--p50-max-ms", "500", "--p99-max-ms", "3000"]).unwrap());
        assert!(loose.met(5000, &summary(5000.0, 400.0, 2500.0, 0.0)));
    }

    #[test]
    fn the_sustainable_rate_is_the_highest_that_met() {
        let point = |offered, met| SweepPoint {
            offered_tx_per_s: offered,
            met,
            median: summary(offered as f64, 50.0, 100.0, 0.0),
            runs: Vec::new(),
        };
        assert_eq!(
            sustainable(&[point(3000, true), point(4000, true), point(5000, false)]),
            Some(4000)
        );
        // A noisy machine can fail a lower rate and pass a higher one: the row says so.
        assert_eq!(
            sustainable(&[point(3000, true), point(4000, false), point(5000, true)]),
            Some(5000)
        );
        assert_eq!(sustainable(&[point(3000, false)]), None);
        let svg = sweep_svg(
            &[point(3000, true), point(4000, true)],
            &Bounds::of(&args(&[]).unwrap()),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn an_ended_validator_is_seen_with_the_end_of_its_log() {
        assert!(!has_exited(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        // Not yet waited for: a zombie once it ends.
        let until = Instant::now() + Duration::from_secs(10);
        while !has_exited(child.id()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(has_exited(child.id()));
        child.wait().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node.log");
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(log_tail(&log, 3), "line 18\nline 19\nline 20");
        assert_eq!(log_tail(&dir.path().join("none.log"), 3), "");
        let nodes = Nodes {
            children: vec![Command::new("true").spawn().unwrap()],
            logs: vec![("v1".into(), log.clone())],
            _dir: None,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while nodes.exited().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let e = nodes.exited().unwrap();
        assert!(
            e.starts_with("validator v1 exited") && e.ends_with("line 20"),
            "{e}"
        );
    }

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
