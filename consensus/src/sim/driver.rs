//! The simulator's node driver: it steps a replica's core and carries out its outputs as the
//! node's driver does — persist then send, commit then execute, validate batches, fetch
//! payloads and state from peers (which may lie), repair a diverged replica.

use std::collections::{HashSet, VecDeque};

use tally_crypto::Digest;

use super::{Ev, Sim, byzantine};
use crate::pbft::CheckpointCert;
use crate::protocol::{Event, Input, Output, Protocol, Record, WireMessage};
use crate::{Batch, CommitCertificate, Seq, ValidatorId, View};

impl Sim {
    /// A Byzantine validator's messages of its own making.
    pub(super) fn byzantine_acts(&mut self, node: usize) {
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

    pub(super) fn step(&mut self, node: usize, input: Input) {
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
    pub(super) fn process(&mut self, node: usize, outputs: Vec<Output>) {
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
                Output::Persist(Record::Pbft(r)) => self.nodes[node].unsynced.push(r),
                Output::Send {
                    to,
                    msg: WireMessage::Pbft(msg),
                } => {
                    self.sync(node);
                    self.send(node, to, msg);
                }
                Output::Broadcast(WireMessage::Pbft(msg)) => {
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
                // Another protocol's records and messages: a PBFT core emits none.
                Output::Persist(_) | Output::Send { .. } | Output::Broadcast(_) => {
                    unreachable!("a PBFT core emits only PBFT records and messages")
                }
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
    pub(super) fn validate(&mut self, node: usize, view: View, seq: Seq, batch: Batch) {
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
    pub(super) fn payload_fetch(
        &mut self,
        node: usize,
        seq: Seq,
        digest: Digest,
        from: Vec<ValidatorId>,
    ) {
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
    pub(super) fn repair(&mut self, node: usize, certified: CheckpointCert) {
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
        // The repaired replica now holds every request of the installed blocks: for the
        // censorship checker they reach it now (those it committed itself keep their time).
        if !self.nodes[node].faulty {
            for tx in executed.iter().flat_map(|(b, _)| b.txs.iter()) {
                self.checker.request_committed(node, *tx, self.now);
            }
        }
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

    pub(super) fn on_event(&mut self, node: usize, e: Event) {
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

    pub(super) fn sync(&mut self, node: usize) {
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

    /// Executes a committed batch at a node, after the checks.
    pub(super) fn execute(
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
            epoch: View::default(),
        })
    }

    pub(super) fn batch_ready(&mut self, node: usize) {
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

    pub(super) fn state_fetch(&mut self, node: usize) {
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
    pub(super) fn state_reply(
        &mut self,
        node: usize,
        blocks: Vec<(Batch, CommitCertificate)>,
        first: u64,
    ) {
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
}
