//! One run's report, the medians of several, and their tables.

use super::*;

/// A figure over several runs.
#[derive(serde::Serialize, Debug, PartialEq)]
pub(super) struct Spread {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

impl Spread {
    /// `None` for no values. With an even count the median is the lower middle value, so
    /// that it is always one a run measured.
    pub(super) fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
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
pub(super) struct Summary {
    pub(super) runs: usize,
    /// Index (from 0) of the run with the median committed rate: the one plotted.
    pub(super) median_run: usize,
    pub(super) committed_tx_per_s: Spread,
    pub(super) latency_p50_ms: Spread,
    pub(super) latency_p90_ms: Spread,
    pub(super) latency_p99_ms: Spread,
    pub(super) latency_max_ms: Spread,
    /// CPU of all validators together.
    pub(super) cpu_cores_nodes: Spread,
    /// The largest peak RSS of any validator in each run.
    pub(super) peak_rss_mb: Spread,
    pub(super) view_changes: Spread,
    pub(super) refusals: Spread,
    pub(super) ceiling_tx_per_s: Spread,
    pub(super) committed_over_ceiling: Spread,
}

impl Summary {
    /// The medians in the column order of the tables: committed tx/s, p50, p90, p99, max,
    /// refusals, view changes, peak RSS, CPU, committed/ceiling.
    pub(super) fn medians(&self) -> [f64; 10] {
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

    pub(super) fn of(reports: &[Report]) -> Summary {
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

pub(super) fn print_summary(reports: &[Report], s: &Summary) {
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

#[derive(serde::Serialize)]
pub(super) struct Report {
    pub(super) validators: usize,
    pub(super) tx_bytes: usize,
    pub(super) duration_s: u64,
    pub(super) offered_tx_per_s: f64,
    pub(super) committed_tx_per_s: f64,
    /// Admitted submission → commit.
    pub(super) latency_ms: Percentiles,
    /// First submission → commit (includes waiting out "mempool full" refusals).
    pub(super) latency_from_first_submission_ms: Percentiles,
    pub(super) committed: u64,
    /// Included in a block but failed (e.g. "bad nonce"): not in `committed`.
    pub(super) failed: u64,
    pub(super) submitted: u64,
    /// Submissions of a transaction sent before (after a refusal).
    pub(super) resubmitted: u64,
    pub(super) refused_mempool_full: u64,
    /// Refused with "node overloaded" (its verification queue was full): sent again too.
    pub(super) refused_overloaded: u64,
    pub(super) refused_other: u64,
    pub(super) view_changes: f64,
    /// The view changes the nodes started during the measured window, by reason (summed
    /// over the nodes, as `view_changes` is).
    pub(super) view_change_reasons: std::collections::BTreeMap<String, f64>,
    pub(super) blocks_per_s: f64,
    pub(super) transactions_per_block: f64,
    /// CPU of this benchmark process itself (it shares the machine with the nodes).
    pub(super) client_cpu_cores: f64,
    /// The whole machine over the measured window: how busy it was, and with what else.
    pub(super) machine: MachineUse,
    pub(super) nodes: Vec<NodeUse>,
    pub(super) ceiling: Ceiling,
    pub(super) timeline: Vec<TimelinePoint>,
}

#[derive(serde::Serialize)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

pub(super) fn print_table(r: &Report) {
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
        "  failed in blocks   {:>10} transactions (not counted as committed)",
        r.failed
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
    if r.view_change_reasons.is_empty() {
        println!("  view changes       {}", r.view_changes);
    } else {
        let why: Vec<String> = r
            .view_change_reasons
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "  view changes       {} ({})",
            r.view_changes,
            why.join(", ")
        );
    }
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
