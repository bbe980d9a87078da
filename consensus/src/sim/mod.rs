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
pub mod checkers;
pub mod rng;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tally_crypto::{ChainId, Digest, SecretKey, Verified};

use crate::pbft::{CheckpointCert, Footprint, Message, Pbft, PbftConfig, Record, Statement};
use crate::protocol::{Event, Input, Output, Protocol};
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
    fn root(&self) -> Digest {
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
        // from the others' from then on, until it notices and is repaired.
        if self.rng.chance(0.2) {
            let honest: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| !self.nodes[i].faulty)
                .collect();
            if let Some(&node) = self.rng.pick(&honest) {
                let at = self.rng.range(0, safety);
                self.schedule(at, Ev::CorruptState { node });
            }
        }
    }

    fn schedule(&mut self, delay: u64, ev: Ev) {
        self.counter += 1;
        self.queue.insert((self.now + delay, self.counter), ev);
    }

    fn fault(&mut self, name: &'static str) {
        self.fault_n(name, 1);
    }

    fn fault_n(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.report.faults.entry(name).or_default() += n;
        }
    }

    fn local_now(&self, node: usize) -> u64 {
        let n = &self.nodes[node];
        let scaled = (self.now as i128 * (1_000_000 + n.drift_ppm as i128) / 1_000_000) as u64;
        n.clock_offset + scaled
    }

    fn start_core(&mut self, i: usize) {
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

    /// A Byzantine validator's messages of its own making.
    fn byzantine_acts(&mut self, node: usize) {
        let Some(core) = &self.nodes[node].core else {
            return;
        };
        if self.nodes[node].byz.is_none() {
            return;
        }
        let pending: Vec<Digest> = self.pending.values().copied().collect();
        let ctx = byzantine::Context {
            view: core.view(),
            stable: core.stable_checkpoint(),
            window: self.pbft.watermark_window,
            checkpoint_interval: self.pbft.checkpoint_interval,
            batch_txs_max: self.pbft.batch_txs_max,
            pending: &pending,
        };
        let mut faults = Vec::new();
        let byz = self.nodes[node].byz.as_mut().expect("checked");
        let msgs = byz.act(&ctx, &mut self.rng, &mut faults);
        for f in faults {
            self.fault(f);
        }
        for (to, msg) in msgs {
            let targets: Vec<ValidatorId> = match to {
                Some(t) => vec![t],
                None => self.validators.ids().collect(),
            };
            for t in targets {
                if t != self.nodes[node].validator {
                    self.transmit_to_validator(node, t, msg.clone());
                }
            }
        }
    }

    fn new_request(&mut self, liveness: bool) -> Digest {
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
            self.checker.request_submitted(d, self.now);
        }
        d
    }

    fn partition(&mut self) {
        let count = self.nodes.len();
        let mut group: Vec<u8> = (0..count).map(|_| self.rng.range(0, 1) as u8).collect();
        if group.iter().all(|g| *g == group[0]) {
            group[self.rng.range(0, count as u64 - 1) as usize] ^= 1;
        }
        let one_way = self.rng.chance(0.3);
        self.fault(if one_way {
            "one_way_partition"
        } else {
            "symmetric_partition"
        });
        self.partition = Some(Partition { group, one_way });
    }

    fn blocked(&self, from: usize, to: usize) -> bool {
        match &self.partition {
            None => false,
            Some(p) if p.one_way => p.group[from] == 0 && p.group[to] == 1,
            Some(p) => p.group[from] != p.group[to],
        }
    }

    fn crash(&mut self, node: usize) {
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

    fn step(&mut self, node: usize, input: Input) {
        let now = self.local_now(node);
        let Some(core) = self.nodes[node].core.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        core.step(now, input, &mut out);
        self.process(node, out);
        // Checked once the step's records are synced: a view the replica moved to and then
        // lost in a crash before syncing was never acted in (nothing was sent in it).
        if let Some(core) = &self.nodes[node].core
            && !self.nodes[node].faulty
        {
            let view = core.view();
            let footprint = core.footprint();
            self.checker.check_view_grows(node, view);
            self.checker
                .check_memory(node, footprint, &self.report.footprint_bound);
            self.report.peak_footprint = self.report.peak_footprint.max(footprint);
        }
    }

    /// Carries out a step's outputs in order, as the node's driver does: persist, then (one
    /// sync) send, commit → execute → `Executed`.
    fn process(&mut self, node: usize, outputs: Vec<Output>) {
        let mut follow_up: VecDeque<Input> = VecDeque::new();
        let crash_at = if self.nodes[node].crash_armed
            && outputs.iter().any(|o| matches!(o, Output::Persist(_)))
        {
            Some(self.rng.range(0, outputs.len() as u64 - 1) as usize)
        } else if self.p.mid_step_crash > 0.0
            && self.healed_at.is_none()
            && outputs.len() > 1
            && self.rng.chance(self.p.mid_step_crash)
        {
            Some(self.rng.range(1, outputs.len() as u64 - 1) as usize)
        } else {
            None
        };
        for (i, o) in outputs.into_iter().enumerate() {
            if crash_at == Some(i) {
                self.fault("crash_mid_step");
                self.crash(node);
                let back = self.rng.range(50, 1_000);
                self.schedule(back, Ev::Restart { node });
                return;
            }
            match o {
                Output::Persist(r) => self.nodes[node].unsynced.push(r),
                Output::Send { to, msg } => {
                    self.sync(node);
                    self.send(node, to, msg);
                }
                Output::Broadcast(msg) => {
                    self.sync(node);
                    for id in self.validators.ids().collect::<Vec<_>>() {
                        if id != self.nodes[node].validator {
                            self.send(node, id, msg.clone());
                        }
                    }
                }
                Output::Commit {
                    seq,
                    batch,
                    certificate,
                } => {
                    if let Some(input) = self.execute(node, seq, batch, certificate) {
                        follow_up.push_back(input);
                    }
                }
                Output::RequestBatch => {
                    self.nodes[node].batch_requested = true;
                    let d = self.p.batch_delay;
                    self.schedule(d, Ev::BatchReady { node });
                }
                Output::Validate { view, seq, batch } => self.validate(node, view, seq, batch),
                Output::FetchPayload { seq, digest, from } => {
                    self.event("payload_fetches");
                    let d = self.rng.range(2, 30);
                    self.schedule(
                        d,
                        Ev::PayloadFetch {
                            node,
                            seq,
                            digest,
                            from,
                        },
                    );
                }
                Output::FetchState { .. } => {
                    self.event("state_transfer_requests");
                    let d = self.rng.range(5, 50);
                    self.schedule(d, Ev::StateFetch { node });
                }
                Output::RepairState {
                    certified,
                    own_hash,
                } => {
                    if own_hash.is_some() {
                        self.event("divergences_detected");
                    }
                    let d = self.rng.range(20, 200);
                    self.schedule(d, Ev::Repair { node, certified });
                }
                Output::Evidence(e) => {
                    self.fault("evidence_reported");
                    let against = e.validator();
                    let honest = !self.validator_faulty(against);
                    self.checker.check_evidence(against, honest);
                    if e.verify(&self.validators, &self.chain).is_err() {
                        self.checker.violation_evidence_invalid(node, against);
                    }
                    self.checker.evidence_reported(node, &e);
                }
                Output::Event(e) => self.on_event(node, e),
            }
        }
        // Persists without a following send still reach the disk by the end of the step.
        self.sync(node);
        while let Some(input) = follow_up.pop_front() {
            self.step(node, input);
        }
    }

    /// The node's driver checks a batch the core accepted: the requests are set aside as
    /// proposed at once (as `mark_proposed` does), and the batch is valid when it names only
    /// submitted requests (their bodies exist and were checked).
    fn validate(&mut self, node: usize, view: View, seq: Seq, batch: Batch) {
        let now = self.now;
        let digest = batch.digest();
        let valid = batch.txs.iter().all(|d| self.issued.contains(d));
        let n = &mut self.nodes[node];
        for tx in &batch.txs {
            n.inflight.insert(*tx, now);
        }
        if !valid {
            self.fault("invalid_batch_refused");
            return;
        }
        if n.validating.insert((view, seq, digest)) {
            let d = n.rng.range(0, 5);
            self.schedule(
                d,
                Ev::Validated {
                    node,
                    view,
                    seq,
                    digest,
                },
            );
        }
    }

    /// Asks a peer (those named first) for the batch of `digest` at `seq`. A Byzantine peer
    /// may answer with another batch; the core checks it against the digest.
    fn payload_fetch(&mut self, node: usize, seq: Seq, digest: Digest, from: Vec<ValidatorId>) {
        if self.nodes[node].core.is_none() {
            return;
        }
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                i != node
                    && self.nodes[i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.payload(seq, &digest).is_some())
            })
            .collect();
        let preferred: Vec<usize> = holders
            .iter()
            .copied()
            .filter(|&i| from.contains(&self.nodes[i].validator))
            .collect();
        let pool = if preferred.is_empty() {
            &holders
        } else {
            &preferred
        };
        let Some(&source) = self.rng.pick(pool) else {
            return;
        };
        let mut batch = self.nodes[source]
            .core
            .as_ref()
            .and_then(|c| c.payload(seq, &digest).cloned())
            .expect("holder");
        if self.nodes[source].byz.is_some() && self.rng.chance(0.5) {
            self.fault("byz_bad_payload_reply");
            batch.txs.push(Digest::of(b"made up"));
        }
        let d = self.rng.range(2, 30);
        self.schedule(d, Ev::PayloadReply { node, seq, batch });
    }

    /// The node's repair: replace the diverged replica's chain and state up to the certified
    /// checkpoint with a peer's, after checking the peer's block hash there against the
    /// certificate (a peer whose chain does not match is skipped).
    fn repair(&mut self, node: usize, certified: CheckpointCert) {
        if self.nodes[node]
            .core
            .as_ref()
            .is_none_or(|c| !c.is_diverged())
        {
            return;
        }
        let seq = certified.seq.0 as usize;
        let sources: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                i != node
                    && self.nodes[i].roots.len() >= seq
                    && seq > 0
                    && self.nodes[i].roots[seq - 1] == certified.block_hash
            })
            .collect();
        let Some(&source) = self.rng.pick(&sources) else {
            // Nobody holds it (yet): the core asks again.
            return;
        };
        let executed = self.nodes[source].executed[..seq].to_vec();
        let roots = self.nodes[source].roots[..seq].to_vec();
        let n = &mut self.nodes[node];
        n.executed = executed;
        n.roots = roots;
        self.event("repairs");
        self.step(
            node,
            Input::Repaired {
                seq: certified.seq,
                block_hash: certified.block_hash,
            },
        );
    }

    fn on_event(&mut self, node: usize, e: Event) {
        let name = match e {
            Event::ViewChangeStarted { .. } => "view_changes_started",
            Event::NewView { .. } => {
                // As the node's driver: what the old view proposed may be proposed again,
                // except what the NEW-VIEW carried over.
                let carried: HashSet<Digest> = self.nodes[node]
                    .core
                    .as_ref()
                    .map(|c| c.uncommitted_txs().into_iter().collect())
                    .unwrap_or_default();
                self.nodes[node].inflight.retain(|d, _| carried.contains(d));
                "new_views_entered"
            }
            Event::StableCheckpoint { .. } => "stable_checkpoints",
            Event::Rejected { .. } => "protocol_rejections",
            Event::Repaired { .. } => "repaired",
            _ => return,
        };
        self.event(name);
    }

    fn event(&mut self, name: &'static str) {
        *self.report.events.entry(name).or_default() += 1;
    }

    fn validator_faulty(&self, id: ValidatorId) -> bool {
        self.nodes.iter().any(|n| n.validator == id && n.faulty)
    }

    fn sync(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        for r in n.unsynced.drain(..) {
            match r.key() {
                Some(k) => {
                    n.durable.insert(k, r);
                }
                None => n.durable.retain(|k, _| !r.prunes(k)),
            }
        }
    }

    fn verify(&mut self, msg: &Message) -> Option<Verified<Message>> {
        let key = Digest::of(&msg.encode());
        if let Some(v) = self.verified.get(&key) {
            return v.clone();
        }
        let v = tally_crypto::verify_cached(
            &self.validators,
            &self.chain,
            msg.clone(),
            &mut self.signatures,
        )
        .ok();
        self.verified.insert(key, v.clone());
        v
    }

    fn send(&mut self, from_node: usize, to: ValidatorId, msg: Message) {
        if !self.nodes[from_node].faulty && msg.from() == self.nodes[from_node].validator {
            self.checker.check_honest_signature(from_node, &msg);
        }
        let msgs = if let Some(byz) = &self.nodes[from_node].byz {
            let mut faults = Vec::new();
            let out = byz.mutate(&msg, to, &mut self.rng, &mut faults);
            for f in faults {
                self.fault(f);
            }
            out
        } else {
            vec![msg]
        };
        for m in msgs {
            self.transmit_to_validator(from_node, to, m);
        }
    }

    fn transmit_to_validator(&mut self, from_node: usize, to: ValidatorId, m: Message) {
        if self.verify(&m).is_some() {
            self.checker.record_proposals_in(&m);
        }
        for dest in 0..self.nodes.len() {
            if dest != from_node && self.nodes[dest].validator == to {
                self.transmit(from_node, dest, m.clone());
            }
        }
    }

    fn transmit(&mut self, from: usize, to: usize, msg: Message) {
        self.report.messages_sent += 1;
        if self.blocked(from, to) {
            self.fault("partition_drop");
            return;
        }
        if self.rng.chance(self.p.loss) {
            self.fault("message_loss");
            return;
        }
        let mut delay = self.rng.range(self.p.min_delay, self.p.max_delay);
        if self.nodes[from]
            .byz
            .as_ref()
            .is_some_and(|b| b.has(Behavior::Withhold))
            && self.rng.chance(0.3)
        {
            self.fault(Behavior::Withhold.fault_name());
            delay += self.rng.range(500, 5_000);
        }
        if self.rng.chance(self.p.duplicate) {
            self.fault("message_duplicate");
            let d2 = self.rng.range(self.p.min_delay, self.p.max_delay * 2);
            self.schedule(
                d2,
                Ev::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(delay, Ev::Deliver { to, msg });
    }

    fn deliver(&mut self, to: usize, msg: Message) {
        if self.nodes[to].core.is_none() {
            self.fault("delivered_to_crashed");
            return;
        }
        if let Some(byz) = &mut self.nodes[to].byz {
            byz.observe(&msg, &mut self.rng);
        }
        match self.verify(&msg) {
            None => self.fault("invalid_signature_rejected"),
            Some(v) => {
                self.report.messages_delivered += 1;
                if !self.nodes[to].faulty {
                    self.expect_evidence(to, &msg);
                }
                self.step(to, Input::Message(v));
            }
        }
    }

    /// Tells the evidence checker about a statement delivered to an honest replica where it
    /// examines it: the current view in normal operation, inside the window.
    fn expect_evidence(&mut self, to: usize, msg: &Message) {
        let Some(core) = &self.nodes[to].core else {
            return;
        };
        let (view, stable, high) = (core.view(), core.stable_checkpoint(), core.high_watermark());
        let normal = core.status() == crate::pbft::Status::Normal;
        let in_window = |s: Seq| s > stable && s <= high;
        let primary = self.validators.primary(view);
        let statement = match msg {
            Message::PrePrepare(m, b)
                if m.body.view == view
                    && normal
                    && in_window(m.body.seq)
                    && b.txs.len() <= self.pbft.batch_txs_max
                    && m.from == primary =>
            {
                Statement::PrePrepare(*m)
            }
            Message::Prepare(m)
                if m.body.view == view && normal && in_window(m.body.seq) && m.from != primary =>
            {
                Statement::Prepare(*m)
            }
            Message::Commit(m) if m.body.view == view && normal && in_window(m.body.seq) => {
                Statement::Commit(*m)
            }
            Message::Checkpoint(m)
                if in_window(m.body.seq)
                    && m.body.seq.0.is_multiple_of(self.pbft.checkpoint_interval) =>
            {
                Statement::Checkpoint(*m)
            }
            _ => return,
        };
        if statement.from() != self.nodes[to].validator {
            self.checker.statement_delivered(to, &statement);
        }
    }

    /// Executes a committed batch at a node, after the checks.
    fn execute(
        &mut self,
        node: usize,
        seq: Seq,
        batch: Batch,
        cert: CommitCertificate,
    ) -> Option<Input> {
        let honest = !self.nodes[node].faulty;
        let executed = self.nodes[node].executed.len() as u64;
        if honest {
            self.checker.check_prefix(node, executed, seq);
            self.checker
                .check_certificate(node, seq, &batch, &cert, &mut self.signatures);
            self.checker.check_agreement(node, seq, batch.digest());
            self.checker.check_validity(node, &cert);
        }
        if seq.0 != executed + 1 {
            return None;
        }
        if honest {
            for tx in &batch.txs {
                self.pending.retain(|_, d| d != tx);
            }
        }
        let digest = batch.digest();
        let mut h = Digest::hasher();
        h.update(&self.nodes[node].root().0).update(&digest.0);
        let root = h.finalize();
        let n = &mut self.nodes[node];
        for tx in &batch.txs {
            n.inflight.remove(tx);
        }
        n.executed.push((batch, cert));
        n.roots.push(root);
        if honest {
            let txs: Vec<Digest> = n.executed.last().expect("pushed").0.txs.clone();
            for tx in txs {
                self.checker.request_committed(node, tx, self.now);
            }
        }
        Some(Input::Executed {
            seq,
            digest,
            block_hash: root,
        })
    }

    fn batch_ready(&mut self, node: usize) {
        if self.nodes[node].core.is_none() || !self.nodes[node].batch_requested {
            return;
        }
        let now = self.now;
        let repropose_after = self.p.repropose_after;
        let n = &mut self.nodes[node];
        let want = n.rng.range(1, self.p.batch_max) as usize;
        let txs: Vec<Digest> = self
            .pending
            .values()
            .filter(|d| n.inflight.get(*d).is_none_or(|t| now > t + repropose_after))
            .take(want)
            .copied()
            .collect();
        if txs.is_empty() {
            self.schedule(20, Ev::BatchReady { node });
            return;
        }
        for d in &txs {
            n.inflight.insert(*d, now);
        }
        n.batch_requested = false;
        self.step(node, Input::Propose(Batch { txs }));
    }

    fn state_fetch(&mut self, node: usize) {
        if self.nodes[node].core.is_none() {
            return;
        }
        let have = self.nodes[node].executed.len();
        let sources: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                i != node && self.nodes[i].core.is_some() && self.nodes[i].executed.len() > have
            })
            .collect();
        let Some(&source) = self.rng.pick(&sources) else {
            return;
        };
        let end = self.nodes[source].executed.len().min(have + 64);
        let mut blocks: Vec<(Batch, CommitCertificate)> =
            self.nodes[source].executed[have..end].to_vec();
        if self.nodes[source].byz.is_some() && self.rng.chance(0.5) {
            self.fault("byz_bad_state_reply");
            let i = self.rng.range(0, blocks.len() as u64 - 1) as usize;
            if self.rng.chance(0.5) {
                blocks[i].0.txs.push(Digest::of(b"made up"));
            } else {
                blocks[i].1.signatures.truncate(1);
            }
        }
        let d = self.rng.range(5, 50);
        self.schedule(
            d,
            Ev::StateReply {
                node,
                blocks,
                first: have as u64 + 1,
            },
        );
    }

    /// The driver's side of state transfer: check every block's certificate against the
    /// validator set, then execute it. Nothing from a peer is trusted unverified.
    fn state_reply(&mut self, node: usize, blocks: Vec<(Batch, CommitCertificate)>, first: u64) {
        if self.nodes[node]
            .core
            .as_ref()
            .is_none_or(|c| c.is_diverged())
        {
            return;
        }
        for (i, (batch, cert)) in blocks.into_iter().enumerate() {
            let seq = Seq(first + i as u64);
            if seq.0 != self.nodes[node].executed.len() as u64 + 1 {
                continue;
            }
            if cert
                .verify_cached(
                    &self.validators,
                    &self.chain,
                    Some((seq, batch.digest())),
                    &mut self.signatures,
                )
                .is_err()
            {
                self.fault("state_transfer_block_rejected");
                return;
            }
            self.event("state_transfer_blocks");
            if let Some(input) = self.execute(node, seq, batch, cert) {
                self.step(node, input);
            }
        }
    }

    /// (missing request count, honest nodes still missing some)
    fn liveness_missing(&self) -> (usize, Vec<usize>) {
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

    /// How long the slowest request after healing may take to commit everywhere: f + 1
    /// view changes (f faulty primaries in a row, then an honest one), each at most two
    /// timeouts (the request timer, then the view-change timer) at the largest backoff, and
    /// two seconds for the rest.
    fn censorship_bound_ms(&self) -> u64 {
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
            self.report.censorship_worst_ms =
                self.checker.check_censorship(&honest, bound, self.now);
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
