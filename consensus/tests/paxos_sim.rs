//! Multi-Paxos under the simulator: flexible quorums drawn per seed, every fault, 0
//! violations; quorums that do not intersect are refused, and when forced they are caught.
//!
//! `PAXOS_SIM_SEEDS` sets how many seeds per cluster size (default 200 here; `make test` runs
//! more through `scripts/sim-suite.sh`).

use tally_consensus::paxos::{PaxosConfig, QuorumError};
use tally_consensus::sim::paxos::{PaxosSimConfig, run_seed, run_seeds};

fn seeds() -> u64 {
    std::env::var("PAXOS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

#[test]
fn multipaxos_holds_every_invariant_under_faults() {
    for n in [3, 5] {
        let failing = run_seeds(&PaxosSimConfig::quick(n), 1, seeds());
        assert!(
            failing.is_empty(),
            "n = {n}: {} failing seeds, first: {:?}",
            failing.len(),
            failing.first()
        );
    }
}

#[test]
fn quorums_that_do_not_intersect_are_refused() {
    let mut cfg = PaxosConfig::majorities(5);
    (cfg.q1, cfg.q2) = (2, 3);
    assert_eq!(
        cfg.check(5),
        Err(QuorumError::NoIntersection { q1: 2, q2: 3, n: 5 })
    );
    (cfg.q1, cfg.q2) = (4, 2);
    assert_eq!(cfg.check(5), Ok(()));
    let r = run_seed(
        &PaxosSimConfig {
            quorums: Some((2, 3)),
            ..PaxosSimConfig::quick(5)
        },
        1,
    );
    assert!(r.violations[0].contains("configuration refused"), "{r:?}");
}

#[test]
fn quorums_that_do_not_intersect_lose_agreement() {
    let cfg = PaxosSimConfig {
        quorums: Some((1, 2)),
        unsafe_quorums: true,
        ..PaxosSimConfig::quick(3)
    };
    let failing = run_seeds(&cfg, 1, 300);
    assert!(
        failing.iter().any(|r| r
            .violations
            .iter()
            .any(|v| v.contains("state-machine safety"))),
        "no seed of 300 chose two values for one slot with q1 + q2 = n"
    );
}

#[test]
fn the_simulator_injects_what_it_claims() {
    let mut faults = std::collections::BTreeMap::new();
    let mut committed = 0;
    for seed in 1..=50 {
        let r = run_seed(&PaxosSimConfig::quick(3), seed);
        committed += r.committed;
        for (k, v) in r.faults {
            *faults.entry(k).or_insert(0) += v;
        }
    }
    for kind in [
        "partition",
        "partial_partition",
        "leader_isolated",
        "crash",
        "restart",
    ] {
        assert!(
            faults.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in {faults:?}"
        );
    }
    assert!(
        committed > 50 * 20,
        "only {committed} slots committed over 50 seeds"
    );
}
