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

mod ceiling;
mod load;
mod network;
mod plot;
mod report;
mod sweep;

use ceiling::*;
pub use ceiling::{CEILING_ROUNDS, measure_ceiling};
use load::*;
use network::*;
use plot::*;
use report::*;
use sweep::*;

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
    /// Genesis knob of the started network: what consensus orders, `batches` (default) or
    /// `transactions`.
    #[arg(long)]
    pub payload: Option<tally_genesis::Payload>,
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
