//! Batch dissemination under Byzantine authors and attesters, simulated: `SIM_DISSEMINATION_SEEDS`
//! seeds (default 200) at n = 4 with one Byzantine validator and n = 7 with two. Long runs by
//! hand: `SIM_DISSEMINATION_SEEDS=5000 cargo test --release -p tally-consensus --test
//! dissemination_sim -- --nocapture`.

use tally_consensus::sim::dissemination::{DisseminationConfig, run_dissemination_seed};

fn seeds() -> u64 {
    std::env::var("SIM_DISSEMINATION_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn run(n: usize, byzantine: usize, first_seed: u64) {
    let cfg = DisseminationConfig::new(n, byzantine);
    let (mut proofs, mut frames, mut peak, mut bound, mut restarts) = (0, 0, 0, 0, 0);
    let mut failed = Vec::new();
    for seed in first_seed..first_seed + seeds() {
        let r = run_dissemination_seed(&cfg, seed);
        proofs += r.proofs;
        frames += r.frames;
        restarts += r.restarts;
        peak = peak.max(r.peak_footprint);
        bound = bound.max(r.footprint_bound);
        if !r.violations.is_empty() {
            failed.push((seed, r.byzantine, r.violations));
        }
    }
    println!(
        "n = {n}, byzantine {byzantine}: {} seeds, {proofs} proofs, {frames} frames, {restarts} honest restarts, peak footprint {peak} entries (bound up to {bound}), {} failing seeds",
        seeds(),
        failed.len()
    );
    assert!(failed.is_empty(), "{:#?}", &failed[..failed.len().min(3)]);
}

#[test]
fn four_validators_one_byzantine() {
    run(4, 1, 10_000);
}

#[test]
fn seven_validators_two_byzantine() {
    run(7, 2, 20_000);
}

/// The checkers can fail: with f + 1 validators attesting falsely (one more than the
/// protocol tolerates), proofs without an honest holder appear.
#[test]
fn negative_control_more_than_f_false_attesters() {
    let mut cfg = DisseminationConfig::new(4, 2);
    cfg.beyond_f = true;
    let found = (0..20).any(|seed| {
        run_dissemination_seed(&cfg, seed)
            .violations
            .iter()
            .any(|v| v.starts_with("availability"))
    });
    assert!(found, "no proof without an honest holder with 2 of 4 lying");
}
