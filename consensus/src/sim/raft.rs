//! A deterministic simulator of Raft clusters, with one checker per Raft invariant.
//!
//! One seed decides everything: message delay (so reordering), loss, duplication,
//! partitions (two groups, one-way, partial: one replica cut from some peers but not others,
//! and the leader isolated alone), crashes at random moments and right after a replica made
//! a vote durable, restarts that lose the executions not yet synced, clock drift (each
//! replica's clock runs up to 5% fast or slow), and leadership transfers. A safety phase
//! under faults is followed by a liveness phase: the network heals, every replica restarts,
//! and requests submitted then must be executed by every replica within a bound.
//!
//! Checked after every step (Raft §5.2–5.4 and Figure 3): election safety (one leader per
//! term), log matching, leader completeness, state-machine safety (one entry per committed
//! index, everywhere), committed entries never overwritten, terms and commit indexes never
//! going back. The negative control (`forget_vote_on_restart`) runs replicas that lose their
//! vote when they restart; the checkers must catch the two leaders of one term that allows.
//!
//! ```
//! use tally_consensus::sim::raft::{RaftSimConfig, run_seed};
//! let report = run_seed(&RaftSimConfig::quick(3), 7);
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use tally_crypto::Digest;

use super::cft::{AFTER_HEALING, Cluster, Harness, Requests};
use super::links::{Links, MAX_DELAY_MS};
use super::rng::Rng;
use crate::raft::{
    Durable, Entry, Index, Message, Payload, Raft, RaftConfig, RaftEvent, RaftInput, RaftOutput,
    Record, Role, Term,
};
use crate::{Batch, ValidatorId};

#[derive(Clone, Debug)]
pub struct RaftSimConfig {
    pub validators: usize,
    /// Simulated milliseconds under faults.
    pub safety_ms: u64,
    /// Simulated milliseconds allowed, after healing, for new requests to execute everywhere.
    pub liveness_bound_ms: u64,
    /// Negative control: a restarted replica forgets the vote it cast in its current term.
    pub forget_vote_on_restart: bool,
}

impl RaftSimConfig {
    pub fn quick(validators: usize) -> RaftSimConfig {
        RaftSimConfig {
            validators,
            safety_ms: 3_000,
            liveness_bound_ms: 10_000,
            forget_vote_on_restart: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    pub seed: u64,
    pub violations: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Entries committed (the highest index executed by some replica).
    pub committed: u64,
    /// Distinct terms that had a leader.
    pub leaders: u64,
    pub events: u64,
}

/// Runs one seed.
pub fn run_seed(cfg: &RaftSimConfig, seed: u64) -> SeedReport {
    let mut sim = Sim::new(cfg.clone(), seed);
    let (end, bound) = (
        sim.cfg.safety_ms + sim.cfg.liveness_bound_ms,
        sim.cfg.liveness_bound_ms,
    );
    sim.run(end, bound);
    let committed = sim.committed.keys().next_back().copied().unwrap_or(0);
    SeedReport {
        seed,
        violations: sim.h.violations,
        faults: sim.h.faults,
        committed,
        leaders: sim.leaders.len() as u64,
        events: sim.h.events_run,
    }
}

const TICK_MS: u64 = 10;

#[derive(Clone, Debug)]
enum Ev {
    Deliver {
        to: usize,
        msg: Message,
    },
    Tick(usize),
    Fault,
    Submit(u64),
    Heal,
    CaughtUp {
        node: usize,
        run: u64,
        index: Index,
        term: Term,
    },
    Fetch {
        node: usize,
        run: u64,
        index: Index,
        term: Term,
    },
    Restart(usize),
}

struct Node {
    raft: Option<Raft>,
    disk: Durable,
    /// Executed entries, in order (entry `i` at position `i - 1`).
    executed: Vec<Entry>,
    /// Executions that survive a crash.
    synced: usize,
    /// Clock rate, in parts per thousand of the simulated time.
    rate: u64,
    /// Bumped at every start: block syncs asked for by an earlier run are dropped.
    incarnation: u64,
    last_term: Term,
    last_commit: Index,
}

struct Sim {
    cfg: RaftSimConfig,
    raft_cfg: RaftConfig,
    h: Harness<Ev>,
    nodes: Vec<Node>,
    links: Links,
    committed: BTreeMap<Index, (Term, Digest)>,
    leaders: BTreeMap<Term, usize>,
    crash_after_vote: f64,
    candidates: BTreeMap<Term, BTreeSet<usize>>,
}

impl Sim {
    fn new(cfg: RaftSimConfig, seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let n = cfg.validators;
        let raft_cfg = RaftConfig {
            election_ms: 150,
            election_max_ms: 300,
            heartbeat_ms: 30,
            pre_vote: true,
            check_quorum: true,
            max_inflight: rng.range(1, 4) as usize,
            max_entries: rng.range(1, 8) as usize,
            max_uncommitted: 32,
            keep_executed: rng.range(0, 20),
        };
        let nodes = (0..n)
            .map(|_| Node {
                raft: None,
                disk: Durable::default(),
                executed: Vec::new(),
                synced: 0,
                rate: rng.range(950, 1050),
                incarnation: 0,
                last_term: 0,
                last_commit: 0,
            })
            .collect();
        let links = Links::new(n, &mut rng);
        let crash_after_vote = if cfg.forget_vote_on_restart {
            0.5
        } else {
            0.05
        };
        let mut sim = Sim {
            cfg,
            raft_cfg,
            h: Harness::new(rng),
            nodes,
            links,
            committed: BTreeMap::new(),
            leaders: BTreeMap::new(),
            crash_after_vote,
            candidates: BTreeMap::new(),
        };
        for i in 0..n {
            sim.start(i);
            let first = sim.h.rng.range(0, TICK_MS);
            sim.h.schedule(first, Ev::Tick(i));
        }
        let safety_ms = sim.cfg.safety_ms;
        sim.h.plan(safety_ms, Ev::Submit, || Ev::Fault, Ev::Heal);
        sim
    }

    fn local_now(&self, node: usize) -> u64 {
        self.h.time * self.nodes[node].rate / 1000
    }

    fn start(&mut self, i: usize) {
        let mut durable = self.nodes[i].disk.clone();
        if self.cfg.forget_vote_on_restart {
            durable.voted_for = None;
        }
        let node = &mut self.nodes[i];
        node.executed.truncate(node.synced);
        node.incarnation += 1;
        let executed = node.executed.len() as Index;
        let executed_term = node.executed.last().map(|e| e.term);
        node.raft = Some(Raft::new(
            self.raft_cfg.clone(),
            ValidatorId(i as u16),
            self.cfg.validators,
            durable,
            executed,
            executed_term,
            None,
        ));
        node.last_commit = 0;
    }

    fn describe_replica(&self, i: usize) -> String {
        let node = &self.nodes[i];
        match &node.raft {
            None => format!("{i}: down"),
            Some(r) => format!(
                "{i}: {:?} term {} leader {:?} commit {} base {} last {} fetching {:?} executed {} synced {}",
                r.role(),
                r.term(),
                r.leader(),
                r.commit_index(),
                r.base_index(),
                r.last_index(),
                r.fetching(),
                node.executed.len(),
                node.synced
            ),
        }
    }

    fn on_event_due(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(i) => {
                let every = TICK_MS * 1000 / self.nodes[i].rate;
                self.h.schedule(self.h.time + every.max(1), Ev::Tick(i));
                let entropy = self.h.rng.next_u64();
                self.step(i, RaftInput::Tick { entropy });
            }
            Ev::Deliver { to, msg } => self.step(to, RaftInput::Message(msg)),
            Ev::Submit(id) => self.h.requests.submit(id),
            Ev::Fault => self.inject_fault(),
            Ev::Heal => self.heal(),
            Ev::Fetch {
                node,
                run,
                index,
                term,
            } if run == self.nodes[node].incarnation => self.fetch(node, index, term),
            Ev::Restart(i) => {
                if self.nodes[i].raft.is_none() && !self.h.requests.healed {
                    self.start(i);
                    self.h.fault("quick_restart");
                }
            }
            Ev::CaughtUp {
                node,
                run,
                index,
                term,
            } if run == self.nodes[node].incarnation => {
                self.step(node, RaftInput::CaughtUp { index, term });
            }
            // Asked for by a run of the replica that has since crashed.
            Ev::Fetch { .. } | Ev::CaughtUp { .. } => {}
        }
    }

    fn heal(&mut self) {
        self.h.requests.healed = true;
        self.links.loss = 0.0;
        self.links.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                self.start(i);
            }
        }
        for (k, id) in AFTER_HEALING.enumerate() {
            let at = self.h.time + 10 * k as u64;
            self.h.schedule(at, Ev::Submit(id));
        }
    }

    fn inject_fault(&mut self) {
        let n = self.nodes.len();
        match self.h.rng.range(0, 3) {
            0 => {
                let leader = self.current_leader();
                if let Some(kind) = self.links.partition(&mut self.h.rng, leader) {
                    self.h.fault(kind);
                }
            }
            1 | 2 => {
                let x = self.h.rng.range(0, n as u64 - 1) as usize;
                if self.nodes[x].raft.is_some() {
                    self.crash(x);
                } else {
                    self.start(x);
                    self.h.fault("restart");
                }
            }
            _ => {
                if let Some(l) = self.current_leader() {
                    let to = self.h.rng.range(0, n as u64 - 1) as usize;
                    self.h.fault("leadership_transfer");
                    self.step(
                        l,
                        RaftInput::TransferLeadership {
                            to: ValidatorId(to as u16),
                        },
                    );
                }
            }
        }
    }

    fn crash(&mut self, x: usize) {
        self.nodes[x].raft = None;
        let synced = self.nodes[x].synced;
        self.nodes[x].executed.truncate(synced);
        self.h.fault("crash");
    }

    fn current_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| *r.role() == Role::Leader)
            })
            .max_by_key(|&i| self.nodes[i].raft.as_ref().map_or(0, |r| r.term()))
    }

    fn step(&mut self, i: usize, input: RaftInput) {
        let now = self.local_now(i);
        let mut out = Vec::new();
        {
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                return;
            };
            raft.step(now, input, &mut out);
        }
        let mut voted = false;
        let mut sends = Vec::new();
        let mut executed_to = None;
        for o in out {
            match o {
                RaftOutput::Persist(record) => {
                    if let Record::HardState {
                        voted_for: Some(v), ..
                    } = record
                        && v.0 as usize != i
                    {
                        voted = true;
                    }
                    self.check_persist(i, &record);
                    self.nodes[i].disk.apply(&record);
                }
                RaftOutput::Send { to, msg } => sends.push((to, msg)),
                RaftOutput::Commit(entry) => {
                    self.execute(i, entry);
                    executed_to = Some(self.nodes[i].executed.len() as Index);
                }
                RaftOutput::RequestBatch => self.propose(i),
                RaftOutput::FetchState { index, term, .. } => {
                    let at = self.h.time + self.h.rng.range(5, 50);
                    let run = self.nodes[i].incarnation;
                    self.h.schedule(
                        at,
                        Ev::Fetch {
                            node: i,
                            run,
                            index,
                            term,
                        },
                    );
                }
                RaftOutput::Event(e) => self.on_event(i, e),
            }
        }
        // Every record of the step is durable before its messages leave.
        for (to, msg) in sends {
            self.transmit(i, to.0 as usize, msg);
        }
        self.check_monotonic(i);
        if voted && !self.h.requests.healed && self.h.rng.chance(self.crash_after_vote) {
            self.h.fault("crash_after_vote");
            self.crash(i);
            // Often straight back, while the election it voted in is still running.
            if self.h.rng.chance(0.7) {
                let at = self.h.time + self.h.rng.range(1, MAX_DELAY_MS / 3);
                self.h.schedule(at, Ev::Restart(i));
            }
            return;
        }
        if executed_to.is_some() && self.h.rng.chance(0.3) {
            // The executor's synced write (a block commit with sync).
            let node = &mut self.nodes[i];
            node.synced = node.executed.len();
            let index = node.synced as Index;
            let mut out = Vec::new();
            let now = self.local_now(i);
            if let Some(r) = self.nodes[i].raft.as_mut() {
                r.step(now, RaftInput::Executed { index }, &mut out);
            }
            for o in out {
                if let RaftOutput::Persist(record) = o {
                    self.check_persist(i, &record);
                    self.nodes[i].disk.apply(&record);
                }
            }
        }
    }

    fn transmit(&mut self, from: usize, to: usize, msg: Message) {
        for _ in 0..self.links.copies(&mut self.h.rng, from, to) {
            let at = self.h.time + self.h.rng.range(1, MAX_DELAY_MS);
            self.h.schedule(
                at,
                Ev::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn propose(&mut self, i: usize) {
        let Some(raft) = self.nodes[i].raft.as_ref() else {
            return;
        };
        let mut in_log = BTreeSet::new();
        for idx in raft.commit_index() + 1..=raft.last_index() {
            if let Some(Entry {
                payload: Payload::Batch(b),
                ..
            }) = raft.entry(idx)
            {
                in_log.extend(b.txs.iter().copied());
            }
        }
        if let Some(batch) = self.h.requests.next_batch(&in_log) {
            self.step(i, RaftInput::Propose(batch));
        }
    }

    fn execute(&mut self, i: usize, entry: Entry) {
        let node = &mut self.nodes[i];
        let expected = node.executed.len() as Index + 1;
        if entry.index != expected {
            let got = entry.index;
            self.h.violation(format!(
                "replica {i} was told to execute index {got}, expected {expected}"
            ));
            return;
        }
        node.executed.push(entry.clone());
        let digest = entry.payload.digest();
        match self.committed.get(&entry.index) {
            Some(&(term, d)) if (term, d) != (entry.term, digest) => self.h.violation(format!(
                "state-machine safety: replica {i} executed ({}, {:?}) at index {}, another ({term}, {:?})",
                entry.term, digest, entry.index, d
            )),
            Some(_) => {}
            None => {
                self.committed.insert(entry.index, (entry.term, digest));
            }
        }
        if let Payload::Batch(b) = &entry.payload {
            self.h.requests.executed(b);
        }
    }

    fn fetch(&mut self, node: usize, index: Index, term: Term) {
        if self.nodes[node].raft.is_none() {
            return;
        }
        // Block sync from any running replica that has executed that far.
        let source = (0..self.nodes.len()).find(|&j| {
            j != node
                && self.nodes[j].raft.is_some()
                && self.nodes[j].executed.len() as Index >= index
        });
        let Some(j) = source else {
            let at = self.h.time + 100;
            let run = self.nodes[node].incarnation;
            self.h.schedule(
                at,
                Ev::Fetch {
                    node,
                    run,
                    index,
                    term,
                },
            );
            return;
        };
        let have = self.nodes[node].executed.len();
        let blocks: Vec<Entry> =
            self.nodes[j].executed[have.min(index as usize)..index as usize].to_vec();
        for e in blocks {
            self.execute(node, e);
        }
        let n = &mut self.nodes[node];
        n.synced = n.executed.len();
        self.h.fault("block_sync");
        let at = self.h.time + self.h.rng.range(1, 20);
        let run = self.nodes[node].incarnation;
        self.h.schedule(
            at,
            Ev::CaughtUp {
                node,
                run,
                index,
                term,
            },
        );
    }

    fn on_event(&mut self, i: usize, e: RaftEvent) {
        if let RaftEvent::Campaign { term } = e {
            let c = self.candidates.entry(term).or_default();
            c.insert(i);
            if c.len() == 2 {
                self.h.fault("split_election");
            }
        }
        if let RaftEvent::BecameLeader { term } = e {
            match self.leaders.get(&term) {
                Some(&other) if other != i => self.h.violation(format!(
                    "election safety: replicas {other} and {i} both led term {term}"
                )),
                _ => {
                    self.leaders.insert(term, i);
                }
            }
            self.check_leader_completeness(i, term);
        }
    }

    /// A new leader's log holds every committed entry (§5.4.1).
    fn check_leader_completeness(&mut self, i: usize, term: Term) {
        let disk = &self.nodes[i].disk;
        let mut missing = None;
        for (&index, &(t, d)) in self.committed.range(disk.base_index + 1..) {
            let held = disk
                .entries
                .get((index - disk.base_index - 1) as usize)
                .map(|e| (e.term, e.payload.digest()));
            if held != Some((t, d)) {
                missing = Some(index);
                break;
            }
        }
        if let Some(index) = missing {
            self.h.violation(format!(
                "leader completeness: replica {i}, leader of term {term}, lacks committed index {index}"
            ));
        }
    }

    /// Before a record is applied to replica `i`'s disk: committed entries are never
    /// overwritten or removed, and the log keeps matching every other replica's.
    fn check_persist(&mut self, i: usize, record: &Record) {
        let Record::Append { entries } = record else {
            return;
        };
        let Some(first) = entries.first() else {
            return;
        };
        let start = first.index;
        let disk = &self.nodes[i].disk;
        let old_last = disk.base_index + disk.entries.len() as Index;
        let new_last = entries.last().map_or(start, |e| e.index);
        let mut bad = None;
        for index in start..=old_last.max(new_last) {
            let Some(&(t, d)) = self.committed.get(&index) else {
                continue;
            };
            let new = entries
                .get((index - start) as usize)
                .map(|e| (e.term, e.payload.digest()));
            let old = (index > disk.base_index)
                .then(|| disk.entries.get((index - disk.base_index - 1) as usize))
                .flatten()
                .map(|e| (e.term, e.payload.digest()));
            // The committed entry was held here and is now replaced or gone.
            if old == Some((t, d)) && new != Some((t, d)) {
                bad = Some(index);
                break;
            }
        }
        if let Some(index) = bad {
            self.h.violation(format!(
                "replica {i} overwrote or removed committed index {index}"
            ));
        }
        let mut after = self.nodes[i].disk.clone();
        after.apply(record);
        for j in 0..self.nodes.len() {
            if j != i
                && let Some(index) = log_mismatch(&after, &self.nodes[j].disk, start)
            {
                self.h.violation(format!(
                    "log matching: replicas {i} and {j} agree on the term at some index but differ at {index}"
                ));
            }
        }
    }

    fn check_monotonic(&mut self, i: usize) {
        let Some(r) = self.nodes[i].raft.as_ref() else {
            return;
        };
        let (term, commit) = (r.term(), r.commit_index());
        let (last_term, last_commit) = (self.nodes[i].last_term, self.nodes[i].last_commit);
        if term < last_term {
            let last = last_term;
            self.h.violation(format!(
                "replica {i}'s term went back from {last} to {term}"
            ));
        }
        if commit < last_commit {
            let last = last_commit;
            self.h.violation(format!(
                "replica {i}'s commit index went back from {last} to {commit}"
            ));
        }
        let node = &mut self.nodes[i];
        node.last_term = term;
        node.last_commit = commit;
    }
}

impl Cluster for Sim {
    type Event = Ev;

    fn harness(&mut self) -> &mut Harness<Ev> {
        &mut self.h
    }

    fn requests(&self) -> &Requests {
        &self.h.requests
    }

    fn handle(&mut self, ev: Ev) {
        self.on_event_due(ev)
    }

    fn replicas(&self) -> usize {
        self.nodes.len()
    }

    fn executed(&self, i: usize) -> Vec<&Batch> {
        self.nodes[i]
            .executed
            .iter()
            .filter_map(|x| match &x.payload {
                Payload::Batch(b) => Some(b),
                Payload::Noop => None,
            })
            .collect()
    }

    fn describe(&self, i: usize) -> String {
        self.describe_replica(i)
    }
}

/// Log matching (§5.3) between `a`, just changed from index `start` on, and `b`: where both
/// hold an entry of the same term at some index, they hold the same entries up to it. Returns
/// an index where that fails.
fn log_mismatch(a: &Durable, b: &Durable, start: Index) -> Option<Index> {
    let get = |d: &Durable, i: Index| -> Option<(Term, Digest)> {
        if i <= d.base_index {
            return None;
        }
        d.entries
            .get((i - d.base_index - 1) as usize)
            .map(|e| (e.term, e.payload.digest()))
    };
    let last =
        (a.base_index + a.entries.len() as Index).min(b.base_index + b.entries.len() as Index);
    let low = a.base_index.max(b.base_index) + 1;
    let mut i = last;
    while i >= low.max(start) && i > 0 {
        if let (Some(x), Some(y)) = (get(a, i), get(b, i))
            && x.0 == y.0
        {
            // Same term here: the same entries down to where `a` did not change.
            let mut j = i;
            while j >= low && j > 0 {
                if get(a, j) != get(b, j) {
                    return Some(j);
                }
                if j < start {
                    break;
                }
                j -= 1;
            }
            return None;
        }
        i -= 1;
    }
    None
}

/// Runs `count` seeds from `first` and returns the reports of those with violations.
pub fn run_seeds(cfg: &RaftSimConfig, first: u64, count: u64) -> Vec<SeedReport> {
    (first..first + count)
        .map(|s| run_seed(cfg, s))
        .filter(|r| !r.violations.is_empty())
        .collect()
}
