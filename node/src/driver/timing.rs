//! Per-sequence-number timestamps for the phase and lateness metrics: how long each quorum
//! took, which validator completed it, how late each validator's vote came, and whose COMMIT
//! never came.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use tally_consensus::protocol::{Event, VoteKind};
use tally_consensus::{Seq, ValidatorId};
use tally_monitoring::{Metrics, PhaseValidatorLabels, ValidatorLabels};

#[derive(Default)]
pub(super) struct Timing {
    pre_prepared: BTreeMap<u64, Instant>,
    prepared: BTreeMap<u64, Instant>,
    pub committed: BTreeMap<u64, Instant>,
    /// Raft / Multi-Paxos: when this replica made each proposal durable (at most
    /// [`ACCEPTED_KEPT`], the latest).
    accepted: BTreeMap<u64, Instant>,
    /// Voters seen per (phase, seq) before the quorum completed.
    early_votes: HashMap<(VoteKind, u64), Vec<ValidatorId>>,
    commit_voters: BTreeMap<u64, HashSet<ValidatorId>>,
}

/// Proposals whose acceptance time is kept for the `accepted_to_committed` phase.
const ACCEPTED_KEPT: usize = 4096;

impl Timing {
    /// Raft / Multi-Paxos: `seq` committed here; the time since this replica accepted it.
    pub fn on_commit(&mut self, seq: Seq, m: &Metrics) {
        if let Some(at) = self.accepted.remove(&seq.0) {
            m.phase("accepted_to_committed", at.elapsed().as_secs_f64());
        }
        self.accepted = self.accepted.split_off(&(seq.0 + 1));
    }

    /// Records what `e` says about timing, in metrics `m`; `name` gives a validator's name.
    pub fn on_event(&mut self, e: &Event, m: &Metrics, name: &dyn Fn(ValidatorId) -> String) {
        let now = Instant::now();
        match *e {
            Event::PrePrepareAccepted { seq, .. } => {
                self.pre_prepared.insert(seq.0, now);
            }
            Event::Accepted { seq, .. } => {
                self.accepted.insert(seq.0, now);
                while self.accepted.len() > ACCEPTED_KEPT {
                    self.accepted.pop_first();
                }
            }
            Event::Prepared {
                seq, completed_by, ..
            } => {
                if let Some(at) = self.pre_prepared.get(&seq.0) {
                    m.phase("pre_prepare_to_prepared", (now - *at).as_secs_f64());
                }
                self.prepared.insert(seq.0, now);
                self.quorum(VoteKind::Prepare, seq, completed_by, m, name);
            }
            Event::CommittedLocal {
                seq, completed_by, ..
            } => {
                if let Some(at) = self.prepared.get(&seq.0) {
                    m.phase("prepared_to_committed", (now - *at).as_secs_f64());
                }
                self.committed.insert(seq.0, now);
                self.quorum(VoteKind::Commit, seq, completed_by, m, name);
            }
            Event::Vote {
                kind, seq, from, ..
            } => {
                if kind == VoteKind::Commit {
                    self.commit_voters.entry(seq.0).or_default().insert(from);
                }
                let quorum_at = match kind {
                    VoteKind::Prepare => self.prepared.get(&seq.0),
                    VoteKind::Commit => self.committed.get(&seq.0),
                };
                match quorum_at {
                    Some(at) => {
                        let late = (now - *at).as_secs_f64();
                        lateness(kind, &name(from), late, m);
                    }
                    None => {
                        // Bounded: only votes inside the window reach here (the core checks),
                        // and a stable checkpoint forgets those at or below it.
                        let early = self.early_votes.entry((kind, seq.0)).or_default();
                        if !early.contains(&from) {
                            early.push(from);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn quorum(
        &mut self,
        kind: VoteKind,
        seq: Seq,
        by: ValidatorId,
        m: &Metrics,
        name: &dyn Fn(ValidatorId) -> String,
    ) {
        let phase = match kind {
            VoteKind::Prepare => "prepared",
            VoteKind::Commit => "committed",
        };
        m.quorum_completed_by
            .get_or_create(&PhaseValidatorLabels {
                phase: phase.into(),
                validator: name(by),
            })
            .inc();
        if let Some(early) = self.early_votes.remove(&(kind, seq.0)) {
            for v in early {
                lateness(kind, &name(v), 0.0, m);
            }
        }
    }

    /// At a stable checkpoint: count validators whose COMMIT never came, forget the rest.
    pub fn gc(
        &mut self,
        stable: Seq,
        validators: impl Iterator<Item = ValidatorId>,
        me: Option<ValidatorId>,
        m: &Metrics,
        name: &dyn Fn(ValidatorId) -> String,
    ) {
        let validators: Vec<ValidatorId> = validators.collect();
        let done: Vec<u64> = self
            .commit_voters
            .range(..=stable.0)
            .map(|(s, _)| *s)
            .collect();
        for s in done {
            let voters = self.commit_voters.remove(&s).unwrap_or_default();
            if !self.committed.contains_key(&s) {
                continue;
            }
            for id in &validators {
                if Some(*id) != me && !voters.contains(id) {
                    m.votes_missing
                        .get_or_create(&ValidatorLabels {
                            validator: name(*id),
                        })
                        .inc();
                }
            }
        }
        let keep = stable.0 + 1;
        self.pre_prepared = self.pre_prepared.split_off(&keep);
        self.prepared = self.prepared.split_off(&keep);
        self.committed = self.committed.split_off(&keep);
        self.early_votes.retain(|(_, s), _| *s >= keep);
    }
}

fn lateness(kind: VoteKind, validator: &str, seconds: f64, m: &Metrics) {
    let phase = match kind {
        VoteKind::Prepare => "prepare",
        VoteKind::Commit => "commit",
    };
    m.vote_lateness
        .get_or_create(&PhaseValidatorLabels {
            phase: phase.into(),
            validator: validator.to_string(),
        })
        .observe(seconds);
}
