//! A deterministic simulator of Multi-Paxos clusters with flexible quorums and leases.
//!
//! The same faults as the Raft simulator ([`super::raft`]): delay and reordering, loss,
//! duplication, partitions of every shape ([`super::links`]), crashes and restarts that lose
//! unsynced executions, clocks up to 5% fast or slow; the quorums `(q1, q2)` are drawn per
//! seed among those with `q1 + q2 > n`. Checked at every step: state-machine safety (one value
//! per chosen slot, across every replica's executions), execution in slot order, one leader
//! per ballot, promised ballots and commit indexes never going back, and the lease: while a
//! leader holds a valid lease, no replica leads a higher ballot (a lease read across a leader
//! change would be stale). Liveness after healing, as for Raft.
//!
//! The negative control (`unsafe_quorums`) runs `q1 + q2 ≤ n`, which [`PaxosConfig::check`]
//! refuses; the checkers must find two values chosen for one slot.
//!
//! ```
//! use tally_consensus::sim::paxos::{PaxosSimConfig, run_seed};
//! let report = run_seed(&PaxosSimConfig::quick(3), 7);
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use tally_crypto::Digest;

use super::cft::{AFTER_HEALING, Cluster, Harness, Requests};
use super::links::{Links, MAX_DELAY_MS};
use super::rng::Rng;
use crate::paxos::{
    Ballot, Durable, Message, Paxos, PaxosConfig, PaxosEvent, PaxosInput, PaxosOutput, Payload,
    Role, Slot, Value,
};
use crate::{Batch, ValidatorId};

#[derive(Clone, Debug)]
pub struct PaxosSimConfig {
    pub validators: usize,
    pub safety_ms: u64,
    pub liveness_bound_ms: u64,
    /// Quorums `(q1, q2)`; `None`: drawn per seed among the valid ones.
    pub quorums: Option<(usize, usize)>,
    /// Negative control: run the given quorums even though `q1 + q2 ≤ n`.
    pub unsafe_quorums: bool,
}

impl PaxosSimConfig {
    pub fn quick(validators: usize) -> PaxosSimConfig {
        PaxosSimConfig {
            validators,
            safety_ms: 3_000,
            liveness_bound_ms: 10_000,
            quorums: None,
            unsafe_quorums: false,
        }
    }
}

pub use super::raft::SeedReport;

/// Runs one seed. Quorums that [`PaxosConfig::check`] refuses are an error, unless
/// `unsafe_quorums` asks for them.
pub fn run_seed(cfg: &PaxosSimConfig, seed: u64) -> SeedReport {
    let mut sim = Sim::new(cfg.clone(), seed);
    if !sim.h.violations.is_empty() {
        return sim.report(seed);
    }
    let (end, bound) = (
        sim.cfg.safety_ms + sim.cfg.liveness_bound_ms,
        sim.cfg.liveness_bound_ms,
    );
    sim.run(end, bound);
    sim.report(seed)
}

pub fn run_seeds(cfg: &PaxosSimConfig, first: u64, count: u64) -> Vec<SeedReport> {
    (first..first + count)
        .map(|s| run_seed(cfg, s))
        .filter(|r| !r.violations.is_empty())
        .collect()
}

const TICK_MS: u64 = 10;

#[derive(Clone, Debug)]
enum Ev {
    Deliver { to: usize, msg: Message },
    Tick(usize),
    Fault,
    Submit(u64),
    Heal,
    Fetch { node: usize, run: u64, slot: Slot },
    CaughtUp { node: usize, run: u64, slot: Slot },
}

struct Node {
    paxos: Option<Paxos>,
    disk: Durable,
    executed: Vec<Payload>,
    synced: usize,
    rate: u64,
    /// Bumped at every start: block syncs asked for by an earlier run are dropped.
    incarnation: u64,
    last_promised: Ballot,
    last_commit: Slot,
}

struct Sim {
    cfg: PaxosSimConfig,
    paxos_cfg: PaxosConfig,
    h: Harness<Ev>,
    nodes: Vec<Node>,
    links: Links,
    committed: BTreeMap<Slot, Digest>,
    leaders: BTreeMap<Ballot, usize>,
}

impl Sim {
    fn new(cfg: PaxosSimConfig, seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let n = cfg.validators;
        let (q1, q2) = cfg.quorums.unwrap_or_else(|| {
            // Any q1 with the smallest q2 that still intersects it.
            let q1 = rng.range(n as u64 / 2 + 1, n as u64) as usize;
            (q1, n + 1 - q1)
        });
        let paxos_cfg = PaxosConfig {
            election_ms: 150,
            heartbeat_ms: 30,
            q1,
            q2,
            lease_ms: 100,
            drift_per_mille: 100,
            max_open: 32,
            max_entries: rng.range(1, 8) as usize,
            keep_executed: rng.range(0, 20),
        };
        let nodes = (0..n)
            .map(|_| Node {
                paxos: None,
                disk: Durable::default(),
                executed: Vec::new(),
                synced: 0,
                rate: rng.range(950, 1050),
                incarnation: 0,
                last_promised: Ballot::default(),
                last_commit: 0,
            })
            .collect();
        let links = Links::new(n, &mut rng);
        let mut sim = Sim {
            cfg,
            paxos_cfg,
            h: Harness::new(rng),
            nodes,
            links,
            committed: BTreeMap::new(),
            leaders: BTreeMap::new(),
        };
        if let Err(e) = sim.paxos_cfg.check(n)
            && !sim.cfg.unsafe_quorums
        {
            sim.h.violation(format!("configuration refused: {e}"));
            return sim;
        }
        for i in 0..n {
            sim.start(i);
            let first = sim.h.rng.range(0, TICK_MS);
            sim.h.schedule(first, Ev::Tick(i));
        }
        let safety_ms = sim.cfg.safety_ms;
        sim.h.plan(safety_ms, Ev::Submit, || Ev::Fault, Ev::Heal);
        sim
    }

    fn report(&self, seed: u64) -> SeedReport {
        SeedReport {
            seed,
            violations: self.h.violations.clone(),
            faults: self.h.faults.clone(),
            committed: self.committed.keys().next_back().copied().unwrap_or(0),
            leaders: self.leaders.len() as u64,
            events: self.h.events_run,
        }
    }

    fn local_now(&self, node: usize) -> u64 {
        self.h.time * self.nodes[node].rate / 1000
    }

    fn start(&mut self, i: usize) {
        let now = self.local_now(i);
        let node = &mut self.nodes[i];
        node.executed.truncate(node.synced);
        node.incarnation += 1;
        node.paxos = Some(Paxos::new(
            self.paxos_cfg.clone(),
            ValidatorId(i as u16),
            self.cfg.validators,
            node.disk.clone(),
            node.executed.len() as Slot,
            now,
            None,
        ));
        node.last_commit = 0;
    }

    fn crash(&mut self, x: usize) {
        self.nodes[x].paxos = None;
        let synced = self.nodes[x].synced;
        self.nodes[x].executed.truncate(synced);
        self.h.fault("crash");
    }

    fn describe_replica(&self, i: usize) -> String {
        let node = &self.nodes[i];
        match &node.paxos {
            None => format!("{i}: down"),
            Some(p) => format!(
                "{i}: {:?} ballot {:?} promised {:?} leader {:?} commit {} executed {} synced {}",
                p.role(),
                p.ballot(),
                p.promised(),
                p.leader(),
                p.commit_index(),
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
                self.step(i, PaxosInput::Tick { entropy });
            }
            Ev::Deliver { to, msg } => self.step(to, PaxosInput::Message(msg)),
            Ev::Submit(id) => self.h.requests.submit(id),
            Ev::Fault => self.inject_fault(),
            Ev::Heal => {
                self.h.requests.healed = true;
                self.links.loss = 0.0;
                self.links.heal();
                for i in 0..self.nodes.len() {
                    if self.nodes[i].paxos.is_none() {
                        self.start(i);
                    }
                }
                for (k, id) in AFTER_HEALING.enumerate() {
                    let at = self.h.time + 10 * k as u64;
                    self.h.schedule(at, Ev::Submit(id));
                }
            }
            Ev::Fetch { node, run, slot } if run == self.nodes[node].incarnation => {
                self.fetch(node, slot)
            }
            Ev::CaughtUp { node, run, slot } if run == self.nodes[node].incarnation => {
                self.step(node, PaxosInput::CaughtUp { slot })
            }
            Ev::Fetch { .. } | Ev::CaughtUp { .. } => {}
        }
    }

    fn inject_fault(&mut self) {
        let n = self.nodes.len();
        if self.h.rng.chance(0.4) {
            let leader = self.current_leader();
            if let Some(kind) = self.links.partition(&mut self.h.rng, leader) {
                self.h.fault(kind);
            }
        } else {
            let x = self.h.rng.range(0, n as u64 - 1) as usize;
            if self.nodes[x].paxos.is_some() {
                self.crash(x);
            } else {
                self.start(x);
                self.h.fault("restart");
            }
        }
    }

    fn current_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .paxos
                    .as_ref()
                    .is_some_and(|p| *p.role() == Role::Leader)
            })
            .max_by_key(|&i| self.nodes[i].paxos.as_ref().map(|p| p.ballot()))
    }

    fn step(&mut self, i: usize, input: PaxosInput) {
        let now = self.local_now(i);
        let mut out = Vec::new();
        {
            let Some(p) = self.nodes[i].paxos.as_mut() else {
                return;
            };
            p.step(now, input, &mut out);
        }
        let mut sends = Vec::new();
        let mut executed = false;
        for o in out {
            match o {
                PaxosOutput::Persist(record) => self.nodes[i].disk.apply(&record),
                PaxosOutput::Send { to, msg } => sends.push((to, msg)),
                PaxosOutput::Commit { slot, payload } => {
                    self.execute(i, slot, payload);
                    executed = true;
                }
                PaxosOutput::RequestBatch => self.propose(i),
                PaxosOutput::FetchState { slot, .. } => {
                    let at = self.h.time + self.h.rng.range(5, 50);
                    let run = self.nodes[i].incarnation;
                    self.h.schedule(at, Ev::Fetch { node: i, run, slot });
                }
                PaxosOutput::Event(e) => self.on_event(i, e),
            }
        }
        for (to, msg) in sends {
            for _ in 0..self.links.copies(&mut self.h.rng, i, to.0 as usize) {
                let at = self.h.time + self.h.rng.range(1, MAX_DELAY_MS);
                self.h.schedule(
                    at,
                    Ev::Deliver {
                        to: to.0 as usize,
                        msg: msg.clone(),
                    },
                );
            }
        }
        self.check_step(i);
        if executed && self.h.rng.chance(0.3) {
            let node = &mut self.nodes[i];
            node.synced = node.executed.len();
            let slot = node.synced as Slot;
            let mut out = Vec::new();
            let now = self.local_now(i);
            if let Some(p) = self.nodes[i].paxos.as_mut() {
                p.step(now, PaxosInput::Executed { slot }, &mut out);
            }
            for o in out {
                if let PaxosOutput::Persist(record) = o {
                    self.nodes[i].disk.apply(&record);
                }
            }
        }
    }

    fn propose(&mut self, i: usize) {
        let Some(p) = self.nodes[i].paxos.as_ref() else {
            return;
        };
        let open: BTreeSet<Digest> = p
            .open_payloads()
            .filter_map(|x| match &x.value {
                Value::Batch(b) => Some(b.txs.iter().copied()),
                Value::Noop => None,
            })
            .flatten()
            .collect();
        if let Some(batch) = self.h.requests.next_batch(&open) {
            self.step(i, PaxosInput::Propose(batch));
        }
    }

    fn execute(&mut self, i: usize, slot: Slot, payload: Payload) {
        let expected = self.nodes[i].executed.len() as Slot + 1;
        if slot != expected {
            self.h.violation(format!(
                "replica {i} was told to execute slot {slot}, expected {expected}"
            ));
            return;
        }
        let digest = payload.digest();
        match self.committed.get(&slot) {
            Some(d) if *d != digest => self.h.violation(format!(
                "state-machine safety: replica {i} executed {digest:?} at slot {slot}, another replica {d:?}"
            )),
            Some(_) => {}
            None => {
                self.committed.insert(slot, digest);
            }
        }
        if let Value::Batch(b) = &payload.value {
            self.h.requests.executed(b);
        }
        self.nodes[i].executed.push(payload);
    }

    fn fetch(&mut self, node: usize, slot: Slot) {
        if self.nodes[node].paxos.is_none() {
            return;
        }
        let source = (0..self.nodes.len()).find(|&j| {
            j != node
                && self.nodes[j].paxos.is_some()
                && self.nodes[j].executed.len() as Slot >= slot
        });
        let Some(j) = source else {
            let at = self.h.time + 100;
            let run = self.nodes[node].incarnation;
            self.h.schedule(at, Ev::Fetch { node, run, slot });
            return;
        };
        let have = self.nodes[node].executed.len();
        let blocks: Vec<Payload> =
            self.nodes[j].executed[have.min(slot as usize)..slot as usize].to_vec();
        for (k, p) in blocks.into_iter().enumerate() {
            self.execute(node, (have + k + 1) as Slot, p);
        }
        let n = &mut self.nodes[node];
        n.synced = n.executed.len();
        self.h.fault("block_sync");
        let at = self.h.time + self.h.rng.range(1, 20);
        let run = self.nodes[node].incarnation;
        self.h.schedule(at, Ev::CaughtUp { node, run, slot });
    }

    fn on_event(&mut self, i: usize, e: PaxosEvent) {
        if let PaxosEvent::BecameLeader { ballot } = e {
            match self.leaders.get(&ballot) {
                Some(&other) if other != i => self.h.violation(format!(
                    "replicas {other} and {i} both led ballot {ballot:?}"
                )),
                _ => {
                    self.leaders.insert(ballot, i);
                }
            }
        }
    }

    /// The lease and monotonicity, after every step of replica `i`.
    fn check_step(&mut self, i: usize) {
        let Some(p) = self.nodes[i].paxos.as_ref() else {
            return;
        };
        let (promised, commit) = (p.promised(), p.commit_index());
        let node = &self.nodes[i];
        let (last_promised, last_commit) = (node.last_promised, node.last_commit);
        if promised < last_promised || node.disk.promised < last_promised {
            self.h.violation(format!(
                "replica {i}'s promised ballot went back from {last_promised:?} to {promised:?}"
            ));
        }
        if commit < last_commit {
            self.h.violation(format!(
                "replica {i}'s commit index went back from {last_commit} to {commit}"
            ));
        }
        let node = &mut self.nodes[i];
        node.last_promised = promised;
        node.last_commit = commit;
        // No replica leads a higher ballot while a leader holds its lease.
        let holders: Vec<(usize, Ballot)> = (0..self.nodes.len())
            .filter_map(|x| {
                let p = self.nodes[x].paxos.as_ref()?;
                p.lease_valid(self.local_now(x)).then(|| (x, p.ballot()))
            })
            .collect();
        for (x, b) in holders {
            let higher = (0..self.nodes.len()).find(|&y| {
                self.nodes[y]
                    .paxos
                    .as_ref()
                    .is_some_and(|q| *q.role() == Role::Leader && q.ballot() > b)
            });
            if let Some(y) = higher {
                self.h.violation(format!(
                    "lease: replica {x} holds a lease for {b:?} while replica {y} leads a higher ballot"
                ));
            }
        }
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
            .filter_map(|x| match &x.value {
                Value::Batch(b) => Some(b),
                Value::Noop => None,
            })
            .collect()
    }

    fn describe(&self, i: usize) -> String {
        self.describe_replica(i)
    }
}
