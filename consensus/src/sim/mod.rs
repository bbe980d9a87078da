//! A deterministic simulator of whole PBFT clusters (after TigerBeetle's VOPR).
//!
//! One seed decides everything: protocol parameters, message delay, loss (up to 30%),
//! duplication and reordering, symmetric and one-way partitions, crashes and restarts with
//! persisted state (losing writes that were not synced), clock drift, a corrupted state at
//! an honest replica (which must detect it and be repaired), the Byzantine validators and
//! their behaviours ([`byzantine`]: mutating what an honest core sends, and sending validly
//! signed messages of their own making), and twins (two replicas sharing one key). Each run
//! has a safety phase under faults, then a liveness phase: the network heals, every crashed
//! replica restarts, and requests submitted after healing must commit at every honest
//! replica within a bound. The checkers ([`checkers`]) run on every commit, every message
//! sent or delivered and every step of an honest replica (its memory).
//!
//! The simulator plays the node's driver: it checks the batches the core asks it to
//! validate (a batch is valid when it names only requests that were submitted), marks their
//! requests as proposed exactly when the node would, fetches payloads and state from peers
//! (Byzantine ones may answer wrongly) and repairs a diverged replica from a peer's state
//! that matches the certified checkpoint.
//!
//! Signatures are real: every message is signed with ed25519 and verified on delivery (a
//! cache keyed by the message's hash spares re-verifying duplicates).
//!
//! ```
//! use tally_consensus::sim::{SimConfig, run_seed};
//! let report = run_seed(&SimConfig::quick(4), 7);
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! ```

pub mod byzantine;
mod cft;
pub mod checkers;
pub mod dissemination;
mod driver;
pub mod links;
mod network;
pub mod paxos;
pub mod raft;
pub mod rng;

use std::collections::{BTreeMap, HashMap, HashSet};

use tally_crypto::{ChainId, Digest, SecretKey, Verified};

use crate::pbft::{CheckpointCert, Footprint, Message, Pbft, PbftConfig, Record};
use crate::protocol::{Input, Protocol};
use crate::{Batch, CommitCertificate, KeySigner, Seq, ValidatorId, ValidatorSet, View};
use byzantine::{Behavior, Byzantine};
use checkers::Checker;
use rng::Rng;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub validators: usize,
    /// Byzantine validators (each with a seed-chosen mix of behaviours).
    pub byzantine: usize,
    /// Validators run as two replicas sharing one key.
    pub twins: usize,
    /// Simulated milliseconds of the safety phase.
    pub safety_ms: u64,
    /// Simulated milliseconds allowed, after healing, for new requests to commit everywhere.
    pub liveness_bound_ms: u64,
    /// The Byzantine behaviour every Byzantine validator has; `None`: each gets a random
    /// mix of all of them.
    pub adversary: Option<Behavior>,
}

impl SimConfig {
    pub fn quick(validators: usize) -> SimConfig {
        SimConfig {
            validators,
            byzantine: 0,
            twins: 0,
            safety_ms: 4_000,
            liveness_bound_ms: 60_000,
            adversary: None,
        }
    }
}

/// What one seed did.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    pub seed: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    /// The highest sequence number committed by an honest replica.
    pub commits: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub events: BTreeMap<&'static str, u64>,
    pub violations: Vec<String>,
    pub liveness_ms: Option<u64>,
    pub simulated_ms: u64,
    /// The most any honest replica stored at once (messages and bytes, measured apart).
    pub peak_footprint: Footprint,
    /// The bound the configuration of this seed states ([`Pbft::footprint_bound`]).
    pub footprint_bound: Footprint,
    /// How long, after healing, the slowest request took to commit at every honest replica.
    pub censorship_worst_ms: Option<u64>,
    /// For failing runs: each replica's final state.
    pub diagnostics: Vec<String>,
}

/// Per-seed parameters.
struct Params {
    min_delay: u64,
    max_delay: u64,
    loss: f64,
    duplicate: f64,
    batch_max: u64,
    batch_delay: u64,
    request_every: u64,
    mid_step_crash: f64,
    /// A request set aside once proposed is proposed again after this long (the node's
    /// `repropose_after`: twice the view-change timeout).
    repropose_after: u64,
}

struct Node {
    validator: ValidatorId,
    faulty: bool,
    byz: Option<Byzantine>,
    key: SecretKey,
    core: Option<Pbft>,
    durable: BTreeMap<Vec<u8>, Record>,
    unsynced: Vec<Record>,
    executed: Vec<(Batch, CommitCertificate)>,
    roots: Vec<Digest>,
    clock_offset: u64,
    drift_ppm: i64,
    batch_requested: bool,
    /// Requests this node set aside as proposed (by itself or by a pre-prepare its core
    /// accepted), and when.
    inflight: HashMap<Digest, u64>,
    crash_armed: bool,
    rng: Rng,
    /// Checks under way: `(view, seq, digest)` → answered at.
    validating: HashSet<(View, Seq, Digest)>,
}

impl Node {
    pub(super) fn root(&self) -> Digest {
        self.roots.last().copied().unwrap_or(Digest::ZERO)
    }
}

enum Ev {
    Deliver {
        to: usize,
        msg: Message,
    },
    Tick {
        node: usize,
    },
    Crash {
        node: usize,
        mid_step: bool,
    },
    Restart {
        node: usize,
    },
    Partition,
    HealPartition,
    Requests,
    BatchReady {
        node: usize,
    },
    StateFetch {
        node: usize,
    },
    StateReply {
        node: usize,
        blocks: Vec<(Batch, CommitCertificate)>,
        first: u64,
    },
    Validated {
        node: usize,
        view: View,
        seq: Seq,
        digest: Digest,
    },
    PayloadFetch {
        node: usize,
        seq: Seq,
        digest: Digest,
        from: Vec<ValidatorId>,
    },
    PayloadReply {
        node: usize,
        seq: Seq,
        batch: Batch,
    },
    Repair {
        node: usize,
        certified: CheckpointCert,
    },
    CorruptState {
        node: usize,
    },
    Heal,
}

struct Partition {
    group: Vec<u8>,
    one_way: bool,
}

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    p: Params,
    pbft: PbftConfig,
    validators: ValidatorSet,
    chain: ChainId,
    nodes: Vec<Node>,
    queue: BTreeMap<(u64, u64), Ev>,
    counter: u64,
    now: u64,
    partition: Option<Partition>,
    pending: BTreeMap<u64, Digest>,
    /// Every request ever submitted: what makes a batch valid.
    issued: HashSet<Digest>,
    next_request: u64,
    liveness_requests: HashSet<Digest>,
    healed_at: Option<u64>,
    verified: HashMap<Digest, Option<Verified<Message>>>,
    signatures: HashSet<Digest>,
    checker: Checker,
    report: SeedReport,
}

const TICK_MS: u64 = 10;

/// Runs one seed and reports what happened and what broke.
pub fn run_seed(cfg: &SimConfig, seed: u64) -> SeedReport {
    let mut sim = Sim::new(cfg.clone(), seed);
    sim.run();
    sim.finish()
}

impl Sim {
    fn new(cfg: SimConfig, seed: u64) -> Sim {
        let n = cfg.validators;
        assert!(n >= 1 && cfg.twins <= n && cfg.byzantine + cfg.twins <= n);
        let mut rng = Rng::new(seed);
        let chain = ChainId::new("sim").expect("valid chain id");
        let keys: Vec<SecretKey> = (0..n)
            .map(|i| {
                let mut seed_bytes = [0u8; 32];
                seed_bytes[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                SecretKey::from_seed(&seed_bytes)
            })
            .collect();
        let validators =
            ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>())
                .expect("valid keys");
        let k = *rng.pick(&[2u64, 4, 8, 16]).expect("non-empty");
        let l = k * rng.range(2, 4);
        let mut pbft = PbftConfig::new(k, l, rng.range(100, 400));
        pbft.max_backoff_exponent = 4;
        pbft.batch_txs_max = 16;
        pbft.future_bytes_per_sender = 64 * 1024;
        let p = Params {
            min_delay: 1,
            max_delay: rng.range(2, 60),
            loss: if rng.chance(0.25) {
                0.0
            } else {
                rng.range(0, 30) as f64 / 100.0
            },
            duplicate: rng.range(0, 10) as f64 / 100.0,
            batch_max: rng.range(1, 8),
            batch_delay: rng.range(1, 20),
            request_every: rng.range(5, 60),
            mid_step_crash: rng.range(0, 3) as f64 / 1000.0,
            repropose_after: 2 * pbft.view_change_timeout_ms,
        };

        // Who is faulty: twins first, then Byzantine validators, disjoint.
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.range(0, i as u64) as usize;
            order.swap(i, j);
        }
        let twinned: HashSet<usize> = order[..cfg.twins].iter().copied().collect();
        let byzantine: HashSet<usize> = order[cfg.twins..cfg.twins + cfg.byzantine]
            .iter()
            .copied()
            .collect();

        let mut nodes = Vec::new();
        let make = |i: usize, rng: &mut Rng| {
            let byz = byzantine.contains(&i).then(|| {
                let behaviors: Vec<Behavior> = match cfg.adversary {
                    Some(b) => vec![b],
                    None => {
                        let mut mix: Vec<Behavior> = byzantine::ALL
                            .iter()
                            .copied()
                            .filter(|_| rng.chance(0.4))
                            .collect();
                        if mix.is_empty() {
                            mix.push(*rng.pick(&byzantine::ALL).expect("non-empty"));
                        }
                        mix
                    }
                };
                Byzantine {
                    behaviors,
                    id: ValidatorId(i as u16),
                    key: keys[i].clone(),
                    chain: chain.clone(),
                    n,
                    seen: vec![],
                    flood_seq: 0,
                }
            });
            let drift = if rng.chance(0.5) {
                rng.range(0, 100_000) as i64 - 50_000
            } else {
                0
            };
            Node {
                validator: ValidatorId(i as u16),
                faulty: twinned.contains(&i) || byzantine.contains(&i),
                byz,
                key: keys[i].clone(),
                core: None,
                durable: BTreeMap::new(),
                unsynced: vec![],
                executed: vec![],
                roots: vec![],
                clock_offset: rng.range(0, 10_000),
                drift_ppm: drift,
                batch_requested: false,
                inflight: HashMap::new(),
                crash_armed: false,
                rng: rng.fork(),
                validating: HashSet::new(),
            }
        };
        for i in 0..n {
            nodes.push(make(i, &mut rng));
        }
        for &i in order[..cfg.twins].iter() {
            nodes.push(make(i, &mut rng));
        }

        let checker = Checker::new(validators.clone(), chain.clone());
        let mut sim = Sim {
            cfg,
            rng,
            p,
            pbft,
            validators,
            chain,
            nodes,
            queue: BTreeMap::new(),
            counter: 0,
            now: 0,
            partition: None,
            pending: BTreeMap::new(),
            issued: HashSet::new(),
            next_request: 0,
            liveness_requests: HashSet::new(),
            healed_at: None,
            verified: HashMap::new(),
            signatures: HashSet::new(),
            checker,
            report: SeedReport {
                seed,
                ..Default::default()
            },
        };
        for i in 0..sim.nodes.len() {
            sim.start_core(i);
            let first_tick = sim.rng.range(0, TICK_MS);
            sim.schedule(first_tick, Ev::Tick { node: i });
        }
        if let Some(core) = &sim.nodes[0].core {
            sim.report.footprint_bound = core.footprint_bound();
        }
        let drifting = sim.nodes.iter().filter(|n| n.drift_ppm != 0).count() as u64;
        sim.fault_n("clock_drift_nodes", drifting);
        sim.schedule_faults();
        sim.schedule(0, Ev::Requests);
        let heal = sim.cfg.safety_ms;
        sim.schedule(heal, Ev::Heal);
        sim
    }

    fn schedule_faults(&mut self) {
        let safety = self.cfg.safety_ms;
        for _ in 0..self.rng.range(0, 4) {
            let at = self.rng.range(0, safety);
            self.schedule(at, Ev::Partition);
            let until = (at + self.rng.range(100, 2_000)).min(safety);
            self.schedule(until, Ev::HealPartition);
        }
        for _ in 0..self.rng.range(0, 3) {
            let node = self.rng.range(0, self.nodes.len() as u64 - 1) as usize;
            let at = self.rng.range(0, safety);
            let mid_step = self.rng.chance(0.5);
            self.schedule(at, Ev::Crash { node, mid_step });
            let back = (at + self.rng.range(50, 2_000)).min(safety);
            self.schedule(back, Ev::Restart { node });
        }
        // A corrupted disk (or an operator's edit) at one honest replica: its state diverges
        // from the others' from then on, until it notices and is repaired. It counts as a
        // fault until then, so only where one is to spare (fewer faulty validators than f).
        let spare = self.cfg.byzantine + self.cfg.twins < self.validators.f();
        if spare && self.rng.chance(0.2) {
            let honest: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| !self.nodes[i].faulty)
                .collect();
            if let Some(&node) = self.rng.pick(&honest) {
                let at = self.rng.range(0, safety);
                self.schedule(at, Ev::CorruptState { node });
            }
        }
    }

    pub(super) fn schedule(&mut self, delay: u64, ev: Ev) {
        self.counter += 1;
        self.queue.insert((self.now + delay, self.counter), ev);
    }

    pub(super) fn fault(&mut self, name: &'static str) {
        self.fault_n(name, 1);
    }

    pub(super) fn fault_n(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.report.faults.entry(name).or_default() += n;
        }
    }

    pub(super) fn local_now(&self, node: usize) -> u64 {
        let n = &self.nodes[node];
        let scaled = (self.now as i128 * (1_000_000 + n.drift_ppm as i128) / 1_000_000) as u64;
        n.clock_offset + scaled
    }

    pub(super) fn start_core(&mut self, i: usize) {
        let records: Vec<Record> = self.nodes[i].durable.values().cloned().collect();
        let node = &self.nodes[i];
        let keep = crate::pbft::EXECUTED_KEPT_WINDOWS * self.pbft.watermark_window as usize;
        let first = node.executed.len().saturating_sub(keep);
        let recent: Vec<(Seq, Digest)> = node.executed[first..]
            .iter()
            .enumerate()
            .map(|(j, (b, _))| (Seq((first + j + 1) as u64), b.digest()))
            .collect();
        let core = Pbft::new(
            self.pbft.clone(),
            self.validators.clone(),
            node.validator,
            Box::new(KeySigner::new(node.key.clone(), self.chain.clone())),
            &records,
            Seq(node.executed.len() as u64),
            &recent,
        );
        let view = core.view();
        let unsigned = core.unsigned_checkpoints();
        self.nodes[i].core = Some(core);
        self.nodes[i].batch_requested = false;
        self.nodes[i].validating.clear();
        self.checker.node_restarted(i);
        if !self.nodes[i].faulty {
            self.checker.check_view_grows(i, view);
        }
        // As the node's driver does at start: report executed checkpoints not yet signed.
        for seq in unsigned {
            let at = seq.0 as usize - 1;
            let digest = self.nodes[i].executed[at].0.digest();
            let block_hash = self.nodes[i].roots[at];
            self.step(
                i,
                Input::Executed {
                    seq,
                    digest,
                    block_hash,
                    epoch: View::default(),
                },
            );
        }
    }

    fn run(&mut self) {
        let mut last_liveness_check = 0;
        while let Some(((at, _), ev)) = self.queue.pop_first() {
            self.now = at;
            if let Some(healed) = self.healed_at {
                if self.now > healed + self.cfg.liveness_bound_ms {
                    break;
                }
                if self.now >= last_liveness_check + 100 {
                    last_liveness_check = self.now;
                    if self.liveness_missing().0 == 0 {
                        self.report.liveness_ms = Some(self.now - healed);
                        break;
                    }
                }
            }
            self.handle(ev);
        }
        self.report.simulated_ms = self.now;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, msg } => self.deliver(to, msg),
            Ev::Tick { node } => {
                self.schedule(TICK_MS, Ev::Tick { node });
                let pending = !self.pending.is_empty();
                self.step(
                    node,
                    Input::Tick {
                        pending_requests: pending,
                        entropy: 0,
                    },
                );
                self.byzantine_acts(node);
            }
            Ev::Crash { node, mid_step } => {
                if self.healed_at.is_none() && self.nodes[node].core.is_some() {
                    if mid_step {
                        self.nodes[node].crash_armed = true;
                    } else {
                        self.crash(node);
                    }
                }
            }
            Ev::Restart { node } => {
                self.nodes[node].crash_armed = false;
                if self.nodes[node].core.is_none() {
                    self.fault("restart");
                    self.start_core(node);
                }
            }
            Ev::Partition => self.partition(),
            Ev::HealPartition => self.partition = None,
            Ev::Requests => {
                if self.healed_at.is_none() {
                    for _ in 0..self.rng.range(1, 3) {
                        self.new_request(false);
                    }
                    let every = self.p.request_every;
                    self.schedule(every, Ev::Requests);
                }
            }
            Ev::BatchReady { node } => self.batch_ready(node),
            Ev::StateFetch { node } => self.state_fetch(node),
            Ev::StateReply {
                node,
                blocks,
                first,
            } => self.state_reply(node, blocks, first),
            Ev::Validated {
                node,
                view,
                seq,
                digest,
            } => {
                self.nodes[node].validating.remove(&(view, seq, digest));
                self.step(node, Input::Validated { view, seq, digest });
            }
            Ev::PayloadFetch {
                node,
                seq,
                digest,
                from,
            } => self.payload_fetch(node, seq, digest, from),
            Ev::PayloadReply { node, seq, batch } => {
                self.step(node, Input::Payload { seq, batch });
            }
            Ev::Repair { node, certified } => self.repair(node, certified),
            Ev::CorruptState { node } => {
                let n = &mut self.nodes[node];
                if n.core.is_some()
                    && let Some(last) = n.roots.last_mut()
                {
                    *last = Digest::of(&[last.0.as_slice(), b"corrupt"].concat());
                    self.fault("state_corrupted");
                }
            }
            Ev::Heal => self.heal(),
        }
    }

    pub(super) fn new_request(&mut self, liveness: bool) -> Digest {
        self.next_request += 1;
        let mut h = Digest::hasher();
        h.update(b"request")
            .update(&self.report.seed.to_le_bytes())
            .update(&self.next_request.to_le_bytes());
        let d = h.finalize();
        self.pending.insert(self.next_request, d);
        self.issued.insert(d);
        if liveness {
            self.liveness_requests.insert(d);
        }
        self.checker.request_submitted(d, self.now, liveness);
        d
    }

    pub(super) fn crash(&mut self, node: usize) {
        let lost = self.nodes[node].unsynced.len() as u64;
        self.nodes[node].unsynced.clear();
        self.nodes[node].core = None;
        self.nodes[node].crash_armed = false;
        self.fault("crash");
        self.fault_n("unsynced_records_lost", lost);
    }

    fn heal(&mut self) {
        self.partition = None;
        self.p.loss = 0.0;
        self.p.duplicate = 0.0;
        self.p.max_delay = self.p.max_delay.min(20);
        for i in 0..self.nodes.len() {
            self.nodes[i].crash_armed = false;
            if self.nodes[i].core.is_none() {
                self.fault("restart");
                self.start_core(i);
            }
        }
        self.healed_at = Some(self.now);
        for _ in 0..10 {
            self.new_request(true);
        }
    }

    pub(super) fn event(&mut self, name: &'static str) {
        *self.report.events.entry(name).or_default() += 1;
    }

    pub(super) fn validator_faulty(&self, id: ValidatorId) -> bool {
        self.nodes.iter().any(|n| n.validator == id && n.faulty)
    }

    /// (missing request count, honest nodes still missing some)
    pub(super) fn liveness_missing(&self) -> (usize, Vec<usize>) {
        let mut missing = 0;
        let mut laggards = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.faulty {
                continue;
            }
            let have: HashSet<&Digest> = n.executed.iter().flat_map(|(b, _)| &b.txs).collect();
            let m = self
                .liveness_requests
                .iter()
                .filter(|d| !have.contains(d))
                .count();
            if m > 0 {
                missing += m;
                laggards.push(i);
            }
        }
        (missing, laggards)
    }

    /// How long a request submitted after healing may take to commit everywhere once no
    /// request submitted before it is still waiting (requests are proposed oldest first, so
    /// a backlog left by the faults delays it without anyone censoring it): f + 1 view
    /// changes (f faulty primaries in a row, then an honest one), each at most two timeouts
    /// (the request timer, then the view-change timer) at the largest backoff, and two
    /// seconds for the rest.
    pub(super) fn censorship_bound_ms(&self) -> u64 {
        let f = self.validators.f() as u64;
        let t_max = self.pbft.view_change_timeout_ms << self.pbft.max_backoff_exponent;
        (f + 2) * 2 * t_max + 2_000
    }

    fn finish(mut self) -> SeedReport {
        if self.healed_at.is_some() {
            let honest: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| !self.nodes[i].faulty)
                .collect();
            let bound = self.censorship_bound_ms();
            let healed = self.healed_at.unwrap_or_default();
            self.report.censorship_worst_ms = self
                .checker
                .check_censorship(&honest, healed, bound, self.now);
        }
        self.checker.check_evidence_complete();
        if self.healed_at.is_some() && self.report.liveness_ms.is_none() {
            let (missing, laggards) = self.liveness_missing();
            self.checker
                .check_liveness(missing, self.cfg.liveness_bound_ms, &laggards);
            if missing > 0 {
                for (i, n) in self.nodes.iter().enumerate() {
                    let state = n.core.as_ref().map_or("down".into(), |c| c.debug_state());
                    self.report.diagnostics.push(format!(
                        "node {i} (validator {}{}, executed {}, batch requested {}): {state}",
                        n.validator.0,
                        match &n.byz {
                            Some(b) => format!(
                                ", byzantine: {}",
                                b.behaviors
                                    .iter()
                                    .map(|b| b.name())
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            ),
                            None if n.faulty => ", twin".to_string(),
                            None => String::new(),
                        },
                        n.executed.len(),
                        n.batch_requested
                    ));
                }
                self.report
                    .diagnostics
                    .push(format!("pending requests {}", self.pending.len()));
            }
        } else if self.healed_at.is_none() {
            self.checker
                .check_liveness(1, self.cfg.liveness_bound_ms, &[]);
        }
        self.report.commits = self.checker.committed_heights();
        self.report.violations = std::mem::take(&mut self.checker.violations);
        let views = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| c.view()))
            .max()
            .unwrap_or(View(0));
        self.report.events.insert("final_view", views.0);
        self.report
    }
}
