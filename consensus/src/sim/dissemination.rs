//! A deterministic simulator of batch dissemination ([`crate::availability::Disseminator`])
//! with Byzantine authors and attesters.
//!
//! Honest validators make batches, stream them and attest what they are designated for or
//! asked about, on a network that loses, duplicates and delays frames until it heals. Up to
//! f Byzantine validators (a seed-chosen mix of [`Lie`]s) equivocate batch numbers, make
//! batches whose transactions fail the validity rule, attest batches they never received,
//! withhold bodies from some validators, stay silent, or flood numbers far ahead. Signatures
//! are real; an author counts only attestations whose signature verifies, as a node would.
//! Honest validators also crash and restart, as a node does: the state machine starts empty,
//! the batch store survives (it refuses a second batch with a stored `(author, index)`), the
//! author resumes numbering far above its last number (the node's reserved mark) and resends
//! every batch it stored.
//!
//! Checkers, on every proof an honest author makes and every attestation an honest
//! validator sends:
//! * **availability and validity**: every proof verifies, and among its attesters is an
//!   honest validator that holds the body and found every transaction valid;
//! * **one per number**: no honest validator attests two batches with one `(author, index)`;
//! * **liveness**: after the network heals, every batch an honest author made is proven;
//! * **memory**: what each honest state machine holds stays within its stated bound;
//! * **honest means unreported**: no honest validator, restarted or not, is reported as
//!   misbehaving (that would cost it its connections).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use tally_crypto::{ChainId, Digest, SecretKey, Signature, SignatureCheck, verify_one};

use super::rng::Rng;
use crate::availability::{
    ATTEST_DOMAIN, BatchHeader, BatchProof, Disseminator, DisseminatorInput, DisseminatorOutput,
    Frame, attestation_body,
};
use crate::{KeySigner, Millis, ValidatorId, ValidatorSet};

/// What a Byzantine validator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lie {
    /// Makes two batches with one number and sends each to half of the validators.
    Equivocate,
    /// Makes batches whose transactions fail the validity rule, and asks everyone to attest.
    InvalidBody,
    /// Attests every batch it hears of, without checking, and headers it never received.
    FalseAttest,
    /// Sends its batches to the designated attesters only, and not always.
    Withhold,
    /// Sends nothing at all.
    Silent,
    /// Sends batch numbers far ahead of its last, many at a time.
    FloodNumbers,
}

const LIES: [Lie; 6] = [
    Lie::Equivocate,
    Lie::InvalidBody,
    Lie::FalseAttest,
    Lie::Withhold,
    Lie::Silent,
    Lie::FloodNumbers,
];

#[derive(Clone, Debug)]
pub struct DisseminationConfig {
    pub validators: usize,
    /// Byzantine validators; at most f.
    pub byzantine: usize,
    /// Frames are lost, duplicated and delayed until this time; afterwards only delayed.
    pub heal_ms: Millis,
    /// Honest authors make batches until this time.
    pub make_until_ms: Millis,
    /// Every honest batch must be proven by this time.
    pub end_ms: Millis,
    pub retry_ms: Millis,
    pub window: u64,
    /// A negative control: allows more than f Byzantine validators, all of which make
    /// invalid batches and attest falsely. The checkers must then fail.
    pub beyond_f: bool,
    /// Per batch an honest author is about to make, the chance it restarts first.
    pub restart_chance: f64,
    /// How far an author's numbers jump at a restart (the node resumes at its reserved mark;
    /// here above the window, the case that once got honest authors banned).
    pub restart_jump: u64,
}

impl DisseminationConfig {
    pub fn new(validators: usize, byzantine: usize) -> DisseminationConfig {
        DisseminationConfig {
            validators,
            byzantine,
            heal_ms: 1_000,
            make_until_ms: 1_200,
            end_ms: 4_000,
            retry_ms: 100,
            window: 256,
            beyond_f: false,
            restart_chance: 0.02,
            restart_jump: 1_000,
        }
    }
}

#[derive(Debug, Default)]
pub struct DisseminationReport {
    pub proofs: usize,
    pub frames: usize,
    pub byzantine: Vec<(ValidatorId, Vec<Lie>)>,
    pub restarts: usize,
    /// Largest footprint of any honest state machine, in entries, and its bound.
    pub peak_footprint: usize,
    pub footprint_bound: usize,
    pub violations: Vec<String>,
}

struct Node {
    machine: Disseminator,
    /// Digests whose body this node holds.
    bodies: HashSet<Digest>,
    /// The batch store's `(author, index) → digest`: survives a restart.
    stored: BTreeMap<(u16, u64), Digest>,
    /// This node's own stored batches, resent after a restart.
    own: Vec<BatchHeader>,
    made: u64,
}

struct Sim<'a> {
    cfg: &'a DisseminationConfig,
    rng: Rng,
    chain: ChainId,
    validators: ValidatorSet,
    keys: Vec<SecretKey>,
    nodes: Vec<Node>,
    lies: BTreeMap<usize, Vec<Lie>>,
    /// Validity of every body that exists: digest → valid.
    valid: BTreeMap<Digest, bool>,
    /// (deliver at, sequence, to, from, frame)
    queue: BTreeMap<(Millis, u64), (usize, usize, Frame)>,
    inputs: BTreeMap<(Millis, u64), (usize, DisseminatorInput)>,
    counter: u64,
    honest_made: BTreeMap<Digest, (usize, Millis)>,
    proven: BTreeSet<Digest>,
    honest_attested: BTreeMap<(usize, ValidatorId, u64), Digest>,
    /// Attestations Byzantine authors collect for their own batches: any f + 1 of them make
    /// a proof the author could propose, and it is checked like an honest author's.
    byzantine_collected: BTreeMap<Digest, (BatchHeader, BTreeMap<ValidatorId, Signature>)>,
    report: DisseminationReport,
}

/// Runs one seed.
pub fn run_dissemination_seed(cfg: &DisseminationConfig, seed: u64) -> DisseminationReport {
    let n = cfg.validators;
    let mut rng = Rng::new(seed);
    let keys: Vec<SecretKey> = (0..n)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s[8] = i as u8;
            SecretKey::from_seed(&s)
        })
        .collect();
    let validators =
        ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
    assert!(
        cfg.byzantine <= validators.f() || cfg.beyond_f,
        "at most f Byzantine validators"
    );
    let chain = ChainId::new("dissemination-sim").unwrap();
    let mut ids: Vec<usize> = (0..n).collect();
    let mut lies = BTreeMap::new();
    for _ in 0..cfg.byzantine {
        let at = rng.range(0, ids.len() as u64 - 1) as usize;
        let id = ids.swap_remove(at);
        let mut mine: Vec<Lie> = LIES.iter().copied().filter(|_| rng.chance(0.5)).collect();
        if cfg.beyond_f {
            mine = vec![Lie::InvalidBody, Lie::FalseAttest];
        }
        if mine.is_empty() {
            mine.push(*rng.pick(&LIES).unwrap());
        }
        lies.insert(id, mine);
    }
    let nodes = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Node {
            machine: Disseminator::new(
                ValidatorId(i as u16),
                validators.clone(),
                Box::new(KeySigner::new(k.clone(), chain.clone())),
                cfg.retry_ms,
                cfg.window,
            ),
            bodies: HashSet::new(),
            stored: BTreeMap::new(),
            own: Vec::new(),
            made: 0,
        })
        .collect();
    let mut sim = Sim {
        cfg,
        rng,
        chain,
        validators,
        keys,
        nodes,
        report: DisseminationReport {
            byzantine: lies
                .iter()
                .map(|(i, l): (&usize, &Vec<Lie>)| (ValidatorId(*i as u16), l.clone()))
                .collect(),
            ..Default::default()
        },
        lies,
        valid: BTreeMap::new(),
        queue: BTreeMap::new(),
        inputs: BTreeMap::new(),
        counter: 0,
        honest_made: BTreeMap::new(),
        proven: BTreeSet::new(),
        honest_attested: BTreeMap::new(),
        byzantine_collected: BTreeMap::new(),
    };
    sim.run();
    sim.report
}

impl Sim<'_> {
    fn honest(&self, i: usize) -> bool {
        !self.lies.contains_key(&i)
    }

    fn lies(&self, i: usize, lie: Lie) -> bool {
        self.lies.get(&i).is_some_and(|l| l.contains(&lie))
    }

    fn new_header(&mut self, author: usize, index: u64, valid: bool) -> BatchHeader {
        let mut tag = [0u8; 24];
        tag[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        tag[8..16].copy_from_slice(&index.to_le_bytes());
        tag[16] = author as u8;
        let h = BatchHeader {
            author: ValidatorId(author as u16),
            index,
            tx_count: self.rng.range(1, 500) as u32,
            bytes: 100_000,
            tx_digest: Digest::of(&tag),
        };
        self.valid.insert(h.digest(), valid);
        h
    }

    fn send(&mut self, now: Millis, from: usize, to: usize, frame: Frame) {
        if let Frame::Batch { header, .. } = &frame
            && !self.honest(from)
            && header.author.0 as usize == from
        {
            let signature = self.sign(from, header);
            self.collect(from, ValidatorId(from as u16), *header, signature);
        }
        let healed = now >= self.cfg.heal_ms;
        if !healed && self.rng.chance(0.1) {
            return;
        }
        let copies = if !healed && self.rng.chance(0.03) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + self.rng.range(1, if healed { 20 } else { 60 });
            self.counter += 1;
            self.queue
                .insert((at, self.counter), (to, from, frame.clone()));
        }
    }

    fn input(&mut self, at: Millis, node: usize, input: DisseminatorInput) {
        self.counter += 1;
        self.inputs.insert((at, self.counter), (node, input));
    }

    fn run(&mut self) {
        let n = self.cfg.validators;
        let mut next_make: Vec<Millis> = (0..n).map(|_| self.rng.range(0, 30)).collect();
        for now in 0..=self.cfg.end_ms {
            for (i, at) in next_make.iter_mut().enumerate() {
                if *at == now && now <= self.cfg.make_until_ms {
                    *at = now + self.rng.range(15, 45);
                    self.make(now, i);
                }
            }
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (to, from, frame) = entry.remove();
                self.report.frames += 1;
                self.deliver(now, to, from, frame);
            }
            while let Some(entry) = self.inputs.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let (node, input) = entry.remove();
                self.step(now, node, input);
            }
            if now % 10 == 0 {
                for i in 0..n {
                    if self.honest(i) {
                        self.step(now, i, DisseminatorInput::Tick);
                    }
                }
            }
        }
        for (digest, (author, at)) in &self.honest_made {
            if !self.proven.contains(digest) {
                self.report.violations.push(format!(
                    "liveness: batch {} of honest {author} made at {at} ms not proven by {} ms",
                    &digest.to_hex()[..8],
                    self.cfg.end_ms
                ));
            }
        }
    }

    fn make(&mut self, now: Millis, author: usize) {
        let n = self.cfg.validators;
        if self.honest(author) {
            if self.rng.chance(self.cfg.restart_chance) {
                self.restart(now, author);
            }
            let index = self.nodes[author].made;
            self.nodes[author].made += 1;
            let h = self.new_header(author, index, true);
            self.nodes[author].bodies.insert(h.digest());
            self.nodes[author].own.push(h);
            self.honest_made.insert(h.digest(), (author, now));
            self.step(now, author, DisseminatorInput::Made { header: h });
            return;
        }
        if self.lies(author, Lie::Silent) {
            return;
        }
        let index = self.nodes[author].made;
        self.nodes[author].made += 1;
        let others: Vec<usize> = (0..n).filter(|&i| i != author).collect();
        if self.lies(author, Lie::Equivocate) && self.rng.chance(0.5) {
            let (a, b) = (
                self.new_header(author, index, true),
                self.new_header(author, index, true),
            );
            for (k, &to) in others.iter().enumerate() {
                let header = if k % 2 == 0 { a } else { b };
                self.send(
                    now,
                    author,
                    to,
                    Frame::Batch {
                        header,
                        attest: true,
                    },
                );
            }
            return;
        }
        if self.lies(author, Lie::FloodNumbers) && self.rng.chance(0.3) {
            for _ in 0..50 {
                let far = self.nodes[author].made + self.rng.range(1, 10_000);
                self.nodes[author].made = far + 1;
                let header = self.new_header(author, far, true);
                for &to in &others {
                    self.send(
                        now,
                        author,
                        to,
                        Frame::Batch {
                            header,
                            attest: true,
                        },
                    );
                }
            }
            return;
        }
        let valid = !(self.lies(author, Lie::InvalidBody) && self.rng.chance(0.7));
        let header = self.new_header(author, index, valid);
        let targets: Vec<usize> = if self.lies(author, Lie::Withhold) {
            crate::availability::designated(&self.validators, &header)
                .into_iter()
                .map(|v| v.0 as usize)
                .filter(|&v| v != author && self.rng.chance(0.6))
                .collect()
        } else {
            others
        };
        for to in targets {
            self.send(
                now,
                author,
                to,
                Frame::Batch {
                    header,
                    attest: !valid,
                },
            );
        }
    }

    /// An honest node crashes and restarts: its state machine starts empty, its numbers
    /// resume `restart_jump` higher, and it resends every batch of its own it stored.
    fn restart(&mut self, now: Millis, node: usize) {
        self.report.restarts += 1;
        let id = ValidatorId(node as u16);
        self.nodes[node].machine = Disseminator::new(
            id,
            self.validators.clone(),
            Box::new(KeySigner::new(self.keys[node].clone(), self.chain.clone())),
            self.cfg.retry_ms,
            self.cfg.window,
        );
        self.nodes[node].made += self.cfg.restart_jump;
        for header in self.nodes[node].own.clone() {
            self.step(now, node, DisseminatorInput::Made { header });
        }
    }

    fn deliver(&mut self, now: Millis, to: usize, from: usize, frame: Frame) {
        if !self.honest(to) {
            self.byzantine_receives(now, to, from, frame);
            return;
        }
        match frame {
            Frame::Batch { header, attest } => {
                // The body travels with the frame; the node checked it against the header.
                // Its store refuses a second batch with a stored number, before the state
                // machine sees it (and reports the author, as the node does).
                if from == header.author.0 as usize {
                    let digest = header.digest();
                    let key = (header.author.0, header.index);
                    match self.nodes[to].stored.get(&key) {
                        Some(d) if *d != digest => {
                            self.reported(to, header.author);
                            return;
                        }
                        _ => {
                            self.nodes[to].stored.insert(key, digest);
                        }
                    }
                    self.nodes[to].bodies.insert(digest);
                }
                self.step(
                    now,
                    to,
                    DisseminatorInput::Received {
                        from: ValidatorId(from as u16),
                        header,
                        attest,
                    },
                );
            }
            Frame::Attestation { header, signature } => {
                // The node verifies the signature before the state machine sees it.
                let check = SignatureCheck {
                    key: *self.validators.key(ValidatorId(from as u16)).unwrap(),
                    domain: ATTEST_DOMAIN,
                    body: attestation_body(&header),
                    signature,
                };
                if verify_one(&self.chain, &check).is_ok() {
                    self.step(
                        now,
                        to,
                        DisseminatorInput::Attested {
                            from: ValidatorId(from as u16),
                            header,
                            signature,
                        },
                    );
                }
            }
        }
    }

    /// A Byzantine author counts an attestation of one of its batches; at f + 1 it has a
    /// proof.
    fn collect(&mut self, me: usize, from: ValidatorId, header: BatchHeader, signature: Signature) {
        if header.author.0 as usize != me {
            return;
        }
        let need = self.validators.weak_quorum();
        let entry = self
            .byzantine_collected
            .entry(header.digest())
            .or_insert_with(|| (header, BTreeMap::new()));
        if entry.1.len() >= need {
            return;
        }
        entry.1.insert(from, signature);
        if entry.1.len() == need {
            let proof = BatchProof {
                header,
                attestations: entry.1.iter().map(|(v, s)| (*v, *s)).collect(),
            };
            self.check_proof(me, &proof);
        }
    }

    fn byzantine_receives(&mut self, now: Millis, me: usize, from: usize, frame: Frame) {
        if let Frame::Attestation { header, signature } = &frame {
            let check = SignatureCheck {
                key: *self.validators.key(ValidatorId(from as u16)).unwrap(),
                domain: ATTEST_DOMAIN,
                body: attestation_body(header),
                signature: *signature,
            };
            if verify_one(&self.chain, &check).is_ok() {
                self.collect(me, ValidatorId(from as u16), *header, *signature);
            }
            return;
        }
        if self.lies(me, Lie::Silent) {
            return;
        }
        if let Frame::Batch { header, .. } = frame
            && self.lies(me, Lie::FalseAttest)
        {
            let signature = self.sign(me, &header);
            self.send(now, me, from, Frame::Attestation { header, signature });
            // And a made-up header in the author's name.
            let fake = self.new_header(header.author.0 as usize, header.index + 1, true);
            let signature = self.sign(me, &fake);
            self.send(
                now,
                me,
                from,
                Frame::Attestation {
                    header: fake,
                    signature,
                },
            );
        }
    }

    fn sign(&self, me: usize, header: &BatchHeader) -> Signature {
        self.keys[me].sign(ATTEST_DOMAIN, &self.chain, &attestation_body(header))
    }

    fn step(&mut self, now: Millis, node: usize, input: DisseminatorInput) {
        let mut out = Vec::new();
        self.nodes[node].machine.step(now, input, &mut out);
        let machine = &self.nodes[node].machine;
        let footprint = machine.footprint();
        let n = self.cfg.validators;
        let bound = machine.unproven() * (n + 1) + 2 * n * (self.cfg.window as usize + 1);
        self.report.peak_footprint = self.report.peak_footprint.max(footprint);
        self.report.footprint_bound = self.report.footprint_bound.max(bound);
        if footprint > bound {
            self.report.violations.push(format!(
                "memory: node {node} holds {footprint} entries, bound {bound}"
            ));
        }
        for o in out {
            match o {
                DisseminatorOutput::Send { to, frame } => {
                    if let Frame::Attestation { header, .. } = &frame {
                        let key = (node, header.author, header.index);
                        let digest = header.digest();
                        if let Some(d) = self.honest_attested.insert(key, digest)
                            && d != digest
                        {
                            self.report.violations.push(format!(
                                "one per number: honest {node} attested two batches of {} numbered {}",
                                header.author, header.index
                            ));
                        }
                    }
                    let targets: Vec<usize> = match to {
                        Some(t) => vec![t.0 as usize],
                        None => (0..n).filter(|&i| i != node).collect(),
                    };
                    for t in targets {
                        self.send(now, node, t, frame.clone());
                    }
                }
                DisseminatorOutput::Check { header } => {
                    let digest = header.digest();
                    let valid = self.nodes[node].bodies.contains(&digest)
                        && self.valid.get(&digest).copied().unwrap_or(false);
                    let at = now + self.rng.range(1, 5);
                    self.input(at, node, DisseminatorInput::Checked { header, valid });
                }
                DisseminatorOutput::Proven(proof) => self.check_proof(node, &proof),
                DisseminatorOutput::Misbehaved { by, .. } => self.reported(node, by),
                DisseminatorOutput::Ignored { .. } => {}
            }
        }
    }

    fn reported(&mut self, node: usize, by: ValidatorId) {
        if self.honest(by.0 as usize) {
            self.report
                .violations
                .push(format!("honest {by} reported as misbehaving by {node}"));
        }
    }

    fn check_proof(&mut self, node: usize, proof: &BatchProof) {
        self.report.proofs += 1;
        let digest = proof.header.digest();
        self.proven.insert(digest);
        if let Err(e) = proof.verify(&self.validators, &self.chain) {
            self.report
                .violations
                .push(format!("proof by {node} does not verify: {e}"));
        }
        let backed = proof.holders().any(|v| {
            let v = v.0 as usize;
            self.honest(v)
                && self.nodes[v].bodies.contains(&digest)
                && self.valid.get(&digest).copied().unwrap_or(false)
        });
        if !backed {
            self.report.violations.push(format!(
                "availability: proof of {} has no honest attester holding a valid body",
                &digest.to_hex()[..8]
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_free_run_proves_every_batch() {
        let r = run_dissemination_seed(&DisseminationConfig::new(4, 0), 1);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.proofs > 100, "{} proofs", r.proofs);
    }
}
