//! What the Raft and Multi-Paxos simulators share: the event queue and simulated time, the
//! fault and violation records, the plan of a run (requests and faults during the safety
//! phase, then healing), and the requests clients submit and the checks of their execution.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use tally_crypto::Digest;

use super::rng::Rng;
use crate::Batch;

/// Violations kept per seed (a run stops once it has this many).
const VIOLATIONS_MAX: usize = 20;
/// Events one seed may run. A run takes tens of thousands; a run past this is a message storm
/// (replicas answering each other without end, as a Raft leader and a follower that refused
/// its appends for ever once did) and is reported as a violation rather than left to run
/// until memory runs out.
const EVENTS_MAX: u64 = 5_000_000;

pub(super) struct Harness<E> {
    pub time: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, E>,
    pub rng: Rng,
    pub violations: Vec<String>,
    pub faults: BTreeMap<&'static str, u64>,
    pub events_run: u64,
    pub requests: Requests,
}

impl<E> Harness<E> {
    pub fn new(rng: Rng) -> Harness<E> {
        Harness {
            time: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            rng,
            violations: Vec::new(),
            faults: BTreeMap::new(),
            events_run: 0,
            requests: Requests::default(),
        }
    }

    /// Plans the safety phase: 20–120 requests, a fault every 100–600 ms, and healing at
    /// `safety_ms`.
    pub fn plan(
        &mut self,
        safety_ms: u64,
        submit: impl Fn(u64) -> E,
        fault: impl Fn() -> E,
        heal: E,
    ) {
        let mut t = 0;
        for id in 0..self.rng.range(20, 120) {
            t += self.rng.range(1, 60);
            if t < safety_ms {
                self.schedule(t, submit(id));
            }
        }
        let mut t = 0;
        loop {
            t += self.rng.range(100, 600);
            if t >= safety_ms {
                break;
            }
            self.schedule(t, fault());
        }
        self.schedule(safety_ms, heal);
    }

    pub fn schedule(&mut self, at: u64, ev: E) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    /// The next event at or before `end`, with the clock moved to it.
    pub fn next(&mut self, end: u64) -> Option<E> {
        let Reverse((at, id)) = self.queue.pop()?;
        if at > end || self.violations.len() >= VIOLATIONS_MAX {
            return None;
        }
        self.time = at;
        self.events_run += 1;
        if self.events_run > EVENTS_MAX {
            self.violation(format!(
                "message storm: {EVENTS_MAX} events by {at} ms, {} still queued",
                self.queue.len()
            ));
            return None;
        }
        self.events.remove(&id)
    }

    pub fn fault(&mut self, kind: &'static str) {
        *self.faults.entry(kind).or_default() += 1;
    }

    pub fn violation(&mut self, what: String) {
        if self.violations.len() < VIOLATIONS_MAX {
            self.violations.push(format!("t={} ms: {what}", self.time));
        }
    }
}

/// A simulated cluster: what the shared run loop needs from each simulator.
pub(super) trait Cluster {
    type Event;
    fn harness(&mut self) -> &mut Harness<Self::Event>;
    fn requests(&self) -> &Requests;
    fn handle(&mut self, ev: Self::Event);
    fn replicas(&self) -> usize;
    /// Replica `i`'s executed batches, in order.
    fn executed(&self, i: usize) -> Vec<&Batch>;
    /// One line on replica `i`'s state, for a liveness report.
    fn describe(&self, i: usize) -> String;

    fn executed_all(&self, i: usize) -> bool {
        self.requests().all_executed(self.executed(i).into_iter())
    }

    fn liveness_done(&self) -> bool {
        let r = self.requests();
        r.healed && r.awaited() > 0 && (0..self.replicas()).all(|i| self.executed_all(i))
    }

    /// Runs events until `end` (or until the requests after healing executed everywhere),
    /// then reports a liveness violation if they did not within `bound_ms`.
    fn run(&mut self, end: u64, bound_ms: u64) {
        while let Some(ev) = self.harness().next(end) {
            self.handle(ev);
            if self.liveness_done() {
                return;
            }
        }
        if !self.liveness_done() {
            let missing: Vec<usize> = (0..self.replicas())
                .filter(|&i| !self.executed_all(i))
                .collect();
            let states: Vec<String> = (0..self.replicas()).map(|i| self.describe(i)).collect();
            let awaited = self.requests().awaited();
            self.harness().violation(format!(
                "liveness: {awaited} requests submitted after healing not executed by replicas {missing:?} within {bound_ms} ms; replicas: {}",
                states.join("; ")
            ));
        }
    }
}

/// Client requests: a request is the batch of one digest; those submitted after healing
/// must be executed by every replica.
#[derive(Default)]
pub(super) struct Requests {
    pending: BTreeSet<u64>,
    must_execute: BTreeSet<u64>,
    by_digest: HashMap<Digest, u64>,
    pub healed: bool,
}

/// Requests submitted when the network heals (their ids, far above the safety phase's).
pub(super) const AFTER_HEALING: std::ops::Range<u64> = 1_000_000..1_000_005;

impl Requests {
    fn digest(id: u64) -> Digest {
        Digest::of(&id.to_le_bytes())
    }

    pub fn submit(&mut self, id: u64) {
        self.by_digest.insert(Self::digest(id), id);
        self.pending.insert(id);
        if self.healed {
            self.must_execute.insert(id);
        }
    }

    /// Up to four pending requests not among `in_flight`, as a batch to propose.
    pub fn next_batch(&self, in_flight: &BTreeSet<Digest>) -> Option<Batch> {
        let txs: Vec<Digest> = self
            .pending
            .iter()
            .map(|id| Self::digest(*id))
            .filter(|d| !in_flight.contains(d))
            .take(4)
            .collect();
        (!txs.is_empty()).then_some(Batch { txs })
    }

    /// A batch was executed somewhere: its requests are no longer pending.
    pub fn executed(&mut self, batch: &Batch) {
        for d in &batch.txs {
            if let Some(id) = self.by_digest.get(d) {
                self.pending.remove(id);
            }
        }
    }

    /// Whether `batches` (one replica's executions) hold every request that must execute.
    pub fn all_executed<'a>(&self, batches: impl Iterator<Item = &'a Batch>) -> bool {
        let seen: BTreeSet<u64> = batches
            .flat_map(|b| b.txs.iter().filter_map(|d| self.by_digest.get(d)))
            .copied()
            .collect();
        self.must_execute.is_subset(&seen)
    }

    /// Requests after healing were submitted (so liveness can be judged).
    pub fn awaited(&self) -> usize {
        self.must_execute.len()
    }
}
