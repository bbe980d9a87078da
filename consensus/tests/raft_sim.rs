//! Raft under the simulator: many seeds with every fault, 0 violations; and the negative
//! control (replicas that forget their vote on restart) must be caught.
//!
//! `RAFT_SIM_SEEDS` sets how many seeds per cluster size (default 200 here; `make test` runs
//! more through `scripts/sim-suite.sh`).

use tally_consensus::sim::raft::{RaftSimConfig, run_seed, run_seeds};

fn seeds() -> u64 {
    std::env::var("RAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

#[test]
fn raft_holds_every_invariant_under_faults() {
    for n in [3, 5] {
        let failing = run_seeds(&RaftSimConfig::quick(n), 1, seeds());
        assert!(
            failing.is_empty(),
            "n = {n}: {} failing seeds, first: {:?}",
            failing.len(),
            failing.first()
        );
    }
}

#[test]
fn the_simulator_injects_what_it_claims() {
    let mut faults = std::collections::BTreeMap::new();
    let mut committed = 0;
    for seed in 1..=50 {
        let r = run_seed(&RaftSimConfig::quick(3), seed);
        committed += r.committed;
        for (k, v) in r.faults {
            *faults.entry(k).or_insert(0) += v;
        }
    }
    for kind in [
        "partition",
        "one_way_partition",
        "partial_partition",
        "leader_isolated",
        "crash",
        "restart",
        "crash_after_vote",
        "leadership_transfer",
    ] {
        assert!(
            faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in {faults:?}"
        );
    }
    assert!(
        committed > 50 * 20,
        "only {committed} entries committed over 50 seeds"
    );
}

#[test]
fn a_raft_that_forgets_its_vote_on_restart_is_caught() {
    let cfg = RaftSimConfig {
        forget_vote_on_restart: true,
        ..RaftSimConfig::quick(3)
    };
    let failing = run_seeds(&cfg, 1, 300);
    assert!(
        failing
            .iter()
            .any(|r| r.violations.iter().any(|v| v.contains("election safety"))),
        "no seed of 300 found two leaders in one term"
    );
}
