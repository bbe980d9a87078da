//! `tally sim`: runs the deterministic simulator over many seeds, in parallel.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use tally_consensus::pbft::Footprint;
use tally_consensus::sim::byzantine::{self, Behavior};
use tally_consensus::sim::{SeedReport, SimConfig, run_seed};

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Protocol to simulate.
    #[arg(long, default_value = "pbft")]
    pub protocol: String,
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// How many seeds to run (consecutive, from --seed).
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed; with --seeds 1 it replays exactly one run. Default: from the clock
    /// (printed, so any run can be replayed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Byzantine validators (at most f for safety to be guaranteed).
    #[arg(long, default_value_t = 0)]
    pub byzantine: usize,
    /// Validators run as twins: two replicas sharing one key.
    #[arg(long, default_value_t = 0)]
    pub twins: usize,
    /// What the Byzantine validators do: `all` (each a random mix of every behaviour) or
    /// one behaviour by name (see `--adversary list`).
    #[arg(long, default_value = "all")]
    pub adversary: String,
    /// Simulated milliseconds of the safety phase.
    #[arg(long, default_value_t = 4000)]
    pub safety_ms: u64,
    /// Simulated milliseconds allowed for liveness after healing.
    #[arg(long, default_value_t = 60000)]
    pub liveness_bound_ms: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one line per seed.
    #[arg(long)]
    pub verbose: bool,
    /// Raft negative control: replicas forget the vote they cast when they restart (the
    /// checkers must then find two leaders of one term).
    #[arg(long)]
    pub forget_vote_on_restart: bool,
    /// Multi-Paxos quorums `Q1,Q2` (default: drawn per seed among those with Q1 + Q2 > n).
    /// Quorums with Q1 + Q2 ≤ n are the negative control: they run, and must lose agreement.
    #[arg(long, value_parser = parse_quorums)]
    pub quorums: Option<(usize, usize)>,
}

/// `--seed`, or one from the clock (printed by the caller, so any run can be replayed).
fn first_seed(a: &SimArgs) -> u64 {
    a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_000_000
    })
}

fn parse_quorums(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected Q1,Q2"))?;
    let q = |x: &str| x.trim().parse::<usize>().map_err(|e| format!("{x:?}: {e}"));
    Ok((q(a)?, q(b)?))
}

pub fn run(a: SimArgs) -> Result<()> {
    match a.protocol.as_str() {
        "pbft" => {}
        "raft" | "multipaxos" => return run_cft(a),
        other => bail!("unknown protocol {other:?}: the simulator runs pbft, raft and multipaxos"),
    }
    if a.validators == 0 || a.byzantine + a.twins > a.validators {
        bail!("--byzantine plus --twins must not exceed --validators");
    }
    let names: Vec<&str> = byzantine::ALL.iter().map(|b| b.name()).collect();
    let adversary = match a.adversary.as_str() {
        "all" => None,
        "list" => {
            println!("adversaries: all, {}", names.join(", "));
            return Ok(());
        }
        name => match Behavior::from_name(name) {
            Some(b) => Some(b),
            None => bail!(
                "--adversary {name:?} is not one of: all, {}",
                names.join(", ")
            ),
        },
    };
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let f = (a.validators - 1) / 3;
    let first = first_seed(&a);
    let config = SimConfig {
        validators: a.validators,
        byzantine: a.byzantine,
        twins: a.twins,
        safety_ms: a.safety_ms,
        liveness_bound_ms: a.liveness_bound_ms,
        adversary,
    };
    println!(
        "tally sim: pbft, n = {} (f = {}), byzantine {} (adversary {}), twins {}, seeds {}..{} ({} seeds)",
        a.validators,
        f,
        a.byzantine,
        a.adversary,
        a.twins,
        first,
        first + a.seeds - 1,
        a.seeds
    );
    if a.byzantine + a.twins > f {
        println!(
            "  note: {} faulty validators exceed f = {}: violations are expected (negative control)",
            a.byzantine + a.twins,
            f
        );
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                    if i >= a.seeds {
                        break;
                    }
                    let r = run_seed(&config, first + i);
                    if a.verbose {
                        println!(
                            "  seed {}: {} messages, {} commits, {} violations{}",
                            r.seed,
                            r.messages_delivered,
                            r.commits,
                            r.violations.len(),
                            r.liveness_ms
                                .map(|ms| format!(", live {ms} ms after healing"))
                                .unwrap_or_default()
                        );
                    }
                    reports.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| r.seed);

    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut events: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut messages, mut commits, mut live) = (0u64, 0u64, 0u64);
    let mut liveness: Vec<u64> = Vec::new();
    let mut censorship: Vec<u64> = Vec::new();
    let (mut peak, mut bound) = (Footprint::default(), Footprint::default());
    let mut peak_share = 0.0f64;
    for r in &reports {
        peak = peak.max(r.peak_footprint);
        bound = bound.max(r.footprint_bound);
        if r.footprint_bound.bytes > 0 {
            peak_share =
                peak_share.max(r.peak_footprint.bytes as f64 / r.footprint_bound.bytes as f64);
        }
        censorship.extend(r.censorship_worst_ms);
        messages += r.messages_delivered;
        commits += r.commits;
        for (k, v) in &r.faults {
            *faults.entry(k).or_default() += v;
        }
        for (k, v) in &r.events {
            if *k != "final_view" {
                *events.entry(k).or_default() += v;
            }
        }
        if let Some(ms) = r.liveness_ms {
            live += 1;
            liveness.push(ms);
        }
    }
    liveness.sort_unstable();
    let failing: Vec<&SeedReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    println!(
        "  {} seeds in {:.1} s ({:.1} seeds/s, {} threads)",
        reports.len(),
        elapsed,
        reports.len() as f64 / elapsed,
        threads
    );
    println!("  simulated messages delivered: {messages}");
    println!("  commits (sum of highest sequence per seed): {commits}");
    if !liveness.is_empty() {
        println!(
            "  liveness: {live}/{} seeds committed every post-healing request at every honest replica; time after healing p50 {} ms, max {} ms",
            reports.len(),
            liveness[liveness.len() / 2],
            liveness[liveness.len() - 1]
        );
    }
    censorship.sort_unstable();
    if !censorship.is_empty() {
        println!(
            "  censorship: once nothing older was waiting, the slowest post-healing request committed at every honest replica after p50 {} ms, max {} ms (per seed)",
            censorship[censorship.len() / 2],
            censorship[censorship.len() - 1]
        );
    }
    let over = reports
        .iter()
        .filter(|r| r.violations.iter().any(|v| v.starts_with("memory")))
        .count();
    println!(
        "  memory per honest replica: peak {} messages / {} bytes over all seeds, at most {:.1}% of its seed's stated byte bound (largest bound {} messages / {} bytes); {over} seeds exceeded their bound",
        peak.messages,
        peak.bytes,
        peak_share * 100.0,
        bound.messages,
        bound.bytes,
    );
    println!("  faults injected:");
    for (k, v) in &faults {
        println!("    {k:<32} {v}");
    }
    println!("  protocol events:");
    for (k, v) in &events {
        println!("    {k:<32} {v}");
    }
    println!("  violations: {} seeds", failing.len());
    if failing.len() > 10 {
        let seeds: Vec<String> = failing.iter().map(|r| r.seed.to_string()).collect();
        println!("  failing seeds: {}", seeds.join(" "));
    }
    for r in failing.iter().take(10) {
        println!("  seed {} violated:", r.seed);
        for v in r.violations.iter().take(5) {
            println!("    {v}");
        }
        for d in &r.diagnostics {
            println!("    {d}");
        }
        println!(
            "    replay: tally sim --protocol pbft --validators {} --seeds 1 --seed {} --byzantine {} --adversary {} --twins {} --safety-ms {} --liveness-bound-ms {}",
            a.validators,
            r.seed,
            a.byzantine,
            a.adversary,
            a.twins,
            a.safety_ms,
            a.liveness_bound_ms
        );
    }
    if !failing.is_empty() {
        bail!(
            "{} of {} seeds violated an invariant",
            failing.len(),
            reports.len()
        );
    }
    Ok(())
}

/// `tally sim --protocol raft|multipaxos`: crash faults only (no Byzantine validators, no
/// twins).
fn run_cft(a: SimArgs) -> Result<()> {
    use tally_consensus::sim::{paxos, raft};
    let multipaxos = a.protocol == "multipaxos";
    if a.validators == 0 || a.byzantine > 0 || a.twins > 0 {
        bail!(
            "{}: --validators must be at least 1, with no --byzantine or --twins",
            a.protocol
        );
    }
    if a.forget_vote_on_restart && multipaxos {
        bail!("--forget-vote-on-restart is a Raft control; Multi-Paxos's is --quorums");
    }
    if a.quorums.is_some() && !multipaxos {
        bail!("--quorums is for --protocol multipaxos");
    }
    let mut control = a.forget_vote_on_restart;
    if let Some((q1, q2)) = a.quorums {
        let mut probe = tally_consensus::paxos::PaxosConfig::majorities(a.validators);
        (probe.q1, probe.q2) = (q1, q2);
        if let Err(e) = probe.check(a.validators) {
            if q1 == 0 || q2 == 0 || q1 > a.validators || q2 > a.validators {
                bail!("--quorums: {e}");
            }
            println!("  note: a node refuses these quorums ({e}); run as the negative control");
            control = true;
        }
    }
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let first = first_seed(&a);
    let raft_config = raft::RaftSimConfig {
        validators: a.validators,
        safety_ms: a.safety_ms,
        liveness_bound_ms: a.liveness_bound_ms,
        forget_vote_on_restart: a.forget_vote_on_restart,
    };
    let paxos_config = paxos::PaxosSimConfig {
        validators: a.validators,
        safety_ms: a.safety_ms,
        liveness_bound_ms: a.liveness_bound_ms,
        quorums: a.quorums,
        unsafe_quorums: control,
    };
    let quorums = match a.quorums {
        Some((q1, q2)) => format!("q1 {q1}, q2 {q2}"),
        None if multipaxos => "quorums drawn per seed".to_string(),
        None => format!("majority {}", a.validators / 2 + 1),
    };
    println!(
        "tally sim: {}, n = {} ({quorums}), seeds {}..{} ({} seeds){}",
        a.protocol,
        a.validators,
        first,
        first + a.seeds - 1,
        a.seeds,
        if control {
            " — negative control: violations expected"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut committed, mut leaders, mut failing) = (0u64, 0u64, Vec::new());
    for seed in first..first + a.seeds {
        let r = if multipaxos {
            paxos::run_seed(&paxos_config, seed)
        } else {
            raft::run_seed(&raft_config, seed)
        };
        committed += r.committed;
        leaders += r.leaders;
        for (k, v) in &r.faults {
            *faults.entry(k).or_default() += v;
        }
        if a.verbose {
            println!(
                "  seed {seed}: committed {}, leaders {}, violations {}",
                r.committed,
                r.leaders,
                r.violations.len()
            );
        }
        if !r.violations.is_empty() {
            failing.push(r);
        }
    }
    println!(
        "  {} seeds in {:.1} s: entries committed {committed}, terms or ballots with a leader {leaders}",
        a.seeds,
        started.elapsed().as_secs_f64()
    );
    let faults: Vec<String> = faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  faults: {}", faults.join(", "));
    println!("  violations: {} failing seeds", failing.len());
    for r in failing.iter().take(3) {
        println!("    seed {}: {}", r.seed, r.violations.join(" | "));
        let extra = match (a.forget_vote_on_restart, a.quorums) {
            (true, _) => " --forget-vote-on-restart".to_string(),
            (_, Some((q1, q2))) => format!(" --quorums {q1},{q2}"),
            _ => String::new(),
        };
        println!(
            "    replay: tally sim --protocol {} --validators {} --seeds 1 --seed {} --safety-ms {} --liveness-bound-ms {}{extra}",
            a.protocol, a.validators, r.seed, a.safety_ms, a.liveness_bound_ms,
        );
    }
    if !failing.is_empty() {
        bail!(
            "{} of {} seeds violated an invariant",
            failing.len(),
            a.seeds
        );
    }
    Ok(())
}
