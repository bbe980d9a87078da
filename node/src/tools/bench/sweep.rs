//! Sweeps: several offered rates, the latency bounds each row is held to, the sustainable rate.

use super::*;

/// The latency bounds a sweep's rows are held to.
#[derive(serde::Serialize, Clone, Copy)]
pub(super) struct Bounds {
    /// Median committed rate at least this share of the offered one.
    pub(super) committed_share_min: f64,
    pub(super) p50_max_ms: f64,
    pub(super) p99_max_ms: f64,
    /// And no view change in any run.
    pub(super) view_changes_max: f64,
}

impl Bounds {
    pub(super) fn of(a: &BenchArgs) -> Bounds {
        Bounds {
            committed_share_min: SUSTAINED_SHARE,
            p50_max_ms: a.p50_max_ms as f64,
            p99_max_ms: a.p99_max_ms as f64,
            view_changes_max: 0.0,
        }
    }

    /// Whether a rate's medians stayed within the bounds.
    pub(super) fn met(&self, offered: u64, s: &Summary) -> bool {
        s.committed_tx_per_s.median >= self.committed_share_min * offered as f64
            && s.latency_p50_ms.median <= self.p50_max_ms
            && s.latency_p99_ms.median <= self.p99_max_ms
            && s.view_changes.max <= self.view_changes_max
    }
}

/// One row of a sweep.
#[derive(serde::Serialize)]
pub(super) struct SweepPoint {
    pub(super) offered_tx_per_s: u64,
    /// Whether the medians met the bounds.
    pub(super) met: bool,
    pub(super) median: Summary,
    pub(super) runs: Vec<Report>,
}

/// The highest offered rate whose row met the bounds.
pub(super) fn sustainable(points: &[SweepPoint]) -> Option<u64> {
    points
        .iter()
        .filter(|p| p.met)
        .map(|p| p.offered_tx_per_s)
        .max()
}

/// Several rates, lowest first, each `--runs` times on fresh networks.
pub(super) fn sweep(a: &BenchArgs, rates: &[u64]) -> Result<()> {
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

pub(super) fn print_sweep(points: &[SweepPoint], b: &Bounds, best: Option<u64>) {
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
