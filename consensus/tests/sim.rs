//! The simulator as a test: a handful of seeds per configuration (the README's test command
//! runs thousands through `tally sim`), and the negative control that proves the checkers can
//! fail.

use tally_consensus::sim::byzantine::{ALL, Behavior};
use tally_consensus::sim::{SimConfig, run_seed};

fn assert_clean(cfg: &SimConfig, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let r = run_seed(cfg, seed);
        assert!(r.violations.is_empty(), "seed {seed}: {:?}", r.violations);
        assert!(
            r.liveness_ms.is_some(),
            "seed {seed}: not live after healing"
        );
        assert!(r.commits > 0, "seed {seed}: nothing committed");
        assert!(
            r.peak_footprint.messages > 0 && r.peak_footprint.within(&r.footprint_bound),
            "seed {seed}: {:?} within {:?}",
            r.peak_footprint,
            r.footprint_bound
        );
    }
}

/// Every adversary alone, so none hides behind another's effects.
#[test]
fn each_adversary_alone() {
    for (i, b) in ALL.iter().enumerate() {
        let cfg = SimConfig {
            byzantine: 1,
            adversary: Some(*b),
            ..SimConfig::quick(4)
        };
        let first = 400 + 10 * i as u64;
        assert_clean(&cfg, first..first + 2);
        let r = run_seed(&cfg, first);
        assert!(
            r.faults.contains_key(b.fault_name())
                || matches!(
                    b,
                    Behavior::EquivocatingPrimary
                        | Behavior::WrongNewView
                        | Behavior::LyingViewChange
                ),
            "{}: the adversary did nothing: {:?}",
            b.name(),
            r.faults
        );
    }
}

/// A flooding adversary fills the stores it can reach, and the bound still holds.
#[test]
fn floods_meet_the_memory_bound() {
    for b in [
        Behavior::CheckpointFlood,
        Behavior::VoteFlood,
        Behavior::ForgedPrePrepare,
    ] {
        let cfg = SimConfig {
            byzantine: 1,
            adversary: Some(b),
            ..SimConfig::quick(4)
        };
        assert_clean(&cfg, 500..503);
    }
}

#[test]
fn four_validators_crashes_and_network_faults() {
    assert_clean(&SimConfig::quick(4), 0..8);
}

#[test]
fn four_validators_one_byzantine() {
    let cfg = SimConfig {
        byzantine: 1,
        ..SimConfig::quick(4)
    };
    assert_clean(&cfg, 100..108);
}

#[test]
fn seven_validators_two_byzantine() {
    let cfg = SimConfig {
        byzantine: 2,
        ..SimConfig::quick(7)
    };
    assert_clean(&cfg, 200..204);
}

#[test]
fn one_twin_is_tolerated() {
    let cfg = SimConfig {
        twins: 1,
        ..SimConfig::quick(4)
    };
    assert_clean(&cfg, 300..306);
}

/// More faulty validators than f: the checkers must find a violation in some seeds. A run
/// that never finds one means the checkers cannot fail.
#[test]
fn negative_control_two_twins_break_agreement() {
    let cfg = SimConfig {
        twins: 2,
        liveness_bound_ms: 5_000,
        ..SimConfig::quick(4)
    };
    let found = (0..40).find(|seed| {
        run_seed(&cfg, *seed)
            .violations
            .iter()
            .any(|v| v.starts_with("agreement"))
    });
    assert!(
        found.is_some(),
        "no agreement violation in 40 seeds with 2 twins at n = 4"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig {
        byzantine: 1,
        ..SimConfig::quick(4)
    };
    let a = run_seed(&cfg, 42);
    let b = run_seed(&cfg, 42);
    assert_eq!(a.messages_delivered, b.messages_delivered);
    assert_eq!(a.commits, b.commits);
    assert_eq!(a.faults, b.faults);
    assert_eq!(a.events, b.events);
}
