//! The invariants, one function each, checked throughout every run. Each records a
//! violation rather than panicking, so a run reports all it found with its seed.
//!
//! Sources: agreement, validity and the view rules are Castro–Liskov TOCS'02 §4.5 (safety)
//! and §2 (the service properties); "committed prefix never changes" and "views only grow"
//! follow openraft's invariants; "honest replicas never sign conflicting messages" is what
//! the safety rules guarantee (Aptos safety-rules); bounded memory, censorship resistance and
//! complete evidence are this project's fault model (`docs/consensus.md`).

use std::collections::{HashMap, HashSet};

use tally_crypto::{ChainId, Digest};

use crate::pbft::evidence::StatementKind;
use crate::pbft::{Evidence, Footprint, Message, Statement};
use crate::{Batch, CommitCertificate, Seq, ValidatorId, ValidatorSet, View};

type StatementKey = (usize, StatementKind, View, Seq, ValidatorId);

pub struct Checker {
    validators: ValidatorSet,
    chain: ChainId,
    /// The first digest any honest replica committed at each sequence number.
    committed: HashMap<Seq, (Digest, usize)>,
    /// What each honest validator signed, per (kind, view, seq).
    signed: HashMap<(ValidatorId, &'static str, View, Seq), Digest>,
    /// PRE-PREPAREs signed by the primary of their view: (view, seq, digest).
    proposed: HashSet<(View, Seq, Digest)>,
    /// The highest view each node has been seen in.
    views: HashMap<usize, View>,
    /// Statements delivered to honest replicas where they examine them: the first content.
    delivered: HashMap<StatementKey, Digest>,
    /// Conflicting pairs delivered so, which must have produced evidence.
    equivocations: HashSet<StatementKey>,
    reported: HashSet<StatementKey>,
    /// Every request in submission order; those submitted after healing, when; when each
    /// was first committed at an honest replica; when each honest node committed the
    /// post-healing ones.
    order: Vec<Digest>,
    submitted: HashMap<Digest, u64>,
    first_commit: HashMap<Digest, u64>,
    commit_times: HashMap<(Digest, usize), u64>,
    pub violations: Vec<String>,
}

impl Checker {
    pub fn new(validators: ValidatorSet, chain: ChainId) -> Checker {
        Checker {
            validators,
            chain,
            committed: HashMap::new(),
            signed: HashMap::new(),
            proposed: HashSet::new(),
            views: HashMap::new(),
            delivered: HashMap::new(),
            equivocations: HashSet::new(),
            reported: HashSet::new(),
            order: Vec::new(),
            submitted: HashMap::new(),
            first_commit: HashMap::new(),
            commit_times: HashMap::new(),
            violations: Vec::new(),
        }
    }

    fn violation(&mut self, v: String) {
        if self.violations.len() < 20 {
            self.violations.push(v);
        }
    }

    /// Agreement (TOCS'02 §4.5.1): no two honest replicas commit different batches at one
    /// sequence number.
    pub fn check_agreement(&mut self, node: usize, seq: Seq, digest: Digest) {
        match self.committed.get(&seq) {
            Some((d, other)) if *d != digest => {
                let other = *other;
                self.violation(format!(
                    "agreement: node {node} committed {digest:?} at {seq:?}, node {other} committed {d:?}"
                ))
            }
            Some(_) => {}
            None => {
                self.committed.insert(seq, (digest, node));
            }
        }
    }

    /// The committed prefix never changes: a replica commits each sequence number once, in
    /// order, after every earlier one (across restarts too).
    pub fn check_prefix(&mut self, node: usize, executed_len: u64, seq: Seq) {
        if seq.0 != executed_len + 1 {
            self.violation(format!(
                "prefix: node {node} committed {seq:?} after executing {executed_len} batches"
            ));
        }
    }

    /// Views only grow at an honest replica, restarts included.
    pub fn check_view_grows(&mut self, node: usize, view: View) {
        let last = self.views.entry(node).or_default();
        if view < *last {
            let l = *last;
            self.violation(format!(
                "views: node {node} went from {l:?} back to {view:?}"
            ));
        } else {
            *last = view;
        }
    }

    /// Records PRE-PREPAREs signed by the primary of their view (normal case or NEW-VIEW).
    pub fn record_proposals_in(&mut self, msg: &Message) {
        let pre_prepares = match msg {
            Message::PrePrepare(m, _) => std::slice::from_ref(m),
            Message::NewView(m) => m.body.pre_prepares.as_slice(),
            _ => return,
        };
        for pp in pre_prepares {
            if pp.from == self.validators.primary(pp.body.view) {
                self.proposed
                    .insert((pp.body.view, pp.body.seq, pp.body.digest));
            }
        }
    }

    /// Validity: every committed batch was proposed by the primary of the view it committed
    /// in (a null batch included: the new primary proposes it in O).
    pub fn check_validity(&mut self, node: usize, cert: &CommitCertificate) {
        if !self.proposed.contains(&(cert.view, cert.seq, cert.digest)) {
            self.violation(format!(
                "validity: node {node} committed {:?} at {:?} in {:?}, never proposed by that view's primary",
                cert.digest, cert.seq, cert.view
            ));
        }
    }

    /// Every commit carries a certificate that verifies with only the genesis keys, for the
    /// batch committed.
    pub fn check_certificate(
        &mut self,
        node: usize,
        seq: Seq,
        batch: &Batch,
        cert: &CommitCertificate,
        cache: &mut dyn tally_crypto::SignatureCache,
    ) {
        let target = Some((seq, batch.digest()));
        if let Err(e) = cert.verify_cached(&self.validators, &self.chain, target, cache) {
            self.violation(format!(
                "certificate: node {node} committed {seq:?} with an invalid certificate: {e}"
            ));
        }
    }

    /// No honest replica signs two conflicting messages for one (kind, view, seq).
    pub fn check_honest_signature(&mut self, node: usize, msg: &Message) {
        let from = msg.from();
        let (kind, view, seq, digest) = match msg {
            Message::PrePrepare(m, _) => ("pre_prepare", m.body.view, m.body.seq, m.body.digest),
            Message::Prepare(m) => ("prepare", m.body.view, m.body.seq, m.body.digest),
            Message::Commit(m) => ("commit", m.body.view, m.body.seq, m.body.digest),
            Message::Checkpoint(m) => ("checkpoint", View(0), m.body.seq, m.body.block_hash),
            Message::ViewChange(m, _) => (
                "view_change",
                m.body.new_view,
                Seq(0),
                Digest::of(&borsh::to_vec(&m.body).expect("encodes")),
            ),
            Message::NewView(m) => (
                "new_view",
                m.body.view,
                Seq(0),
                Digest::of(&borsh::to_vec(&m.body).expect("encodes")),
            ),
        };
        match self.signed.get(&(from, kind, view, seq)) {
            Some(d) if *d != digest => self.violation(format!(
                "signatures: honest node {node} (validator {from}) signed two different {kind} for {view:?} {seq:?}"
            )),
            Some(_) => {}
            None => {
                self.signed.insert((from, kind, view, seq), digest);
            }
        }
    }

    /// Evidence never names an honest validator.
    pub fn check_evidence(&mut self, against: ValidatorId, honest: bool) {
        if honest {
            self.violation(format!(
                "evidence: reported against honest validator {against}"
            ));
        }
    }

    /// Evidence verifies with only the genesis keys.
    pub fn violation_evidence_invalid(&mut self, node: usize, against: ValidatorId) {
        self.violation(format!(
            "evidence: node {node} reported evidence against validator {against} that does not verify"
        ));
    }

    /// A restarted replica starts with an empty evidence tracker: what it saw before does
    /// not count.
    pub fn node_restarted(&mut self, node: usize) {
        self.delivered.retain(|k, _| k.0 != node);
    }

    /// A statement reached honest replica `node` where it examines it (its current view in
    /// normal operation, inside its window). A second one from the same validator for the
    /// same slot with other content is an equivocation the replica must report.
    pub fn statement_delivered(&mut self, node: usize, s: &Statement) {
        let (view, seq) = s.slot();
        let key = (node, s.kind(), view, seq, s.from());
        match self.delivered.get(&key) {
            None => {
                self.delivered.insert(key, s.content());
            }
            Some(d) if *d != s.content() => {
                self.equivocations.insert(key);
            }
            Some(_) => {}
        }
    }

    pub fn evidence_reported(&mut self, node: usize, e: &Evidence) {
        let (view, seq) = e.first.slot();
        self.reported
            .insert((node, e.first.kind(), view, seq, e.validator()));
    }

    /// Every equivocation that reached an honest replica where it examines statements
    /// produced evidence there.
    pub fn check_evidence_complete(&mut self) {
        let missed: Vec<StatementKey> = self
            .equivocations
            .iter()
            .filter(|k| !self.reported.contains(k))
            .copied()
            .collect();
        for (node, kind, view, seq, from) in missed.into_iter().take(3) {
            self.violation(format!(
                "evidence: node {node} received conflicting {} from validator {from} at {view:?} {seq:?} and reported nothing",
                kind.as_str()
            ));
        }
    }

    /// Bounded memory: what an honest replica stores never exceeds the bound its
    /// configuration states, whatever the Byzantine validators send.
    pub fn check_memory(&mut self, node: usize, now: Footprint, bound: &Footprint) {
        if !now.within(bound) {
            self.violation(format!(
                "memory: node {node} stores {} messages / {} bytes, over the stated bound of {} / {}",
                now.messages, now.bytes, bound.messages, bound.bytes
            ));
        }
    }

    /// A request was submitted (`liveness`: after healing).
    pub fn request_submitted(&mut self, d: Digest, at: u64, liveness: bool) {
        self.order.push(d);
        if liveness {
            self.submitted.insert(d, at);
        }
    }

    pub fn request_committed(&mut self, node: usize, d: Digest, at: u64) {
        self.first_commit.entry(d).or_insert(at);
        if self.submitted.contains_key(&d) {
            self.commit_times.entry((d, node)).or_insert(at);
        }
    }

    /// Censorship resistance: every request submitted after healing — held by every honest
    /// validator — commits at every honest replica within `bound_ms` of the moment no request
    /// submitted before it is still waiting (and of healing), whoever is Byzantine. Returns
    /// the slowest such time.
    pub fn check_censorship(
        &mut self,
        honest: &[usize],
        healed: u64,
        bound_ms: u64,
        now: u64,
    ) -> Option<u64> {
        let mut worst = None;
        let mut late = Vec::new();
        // The moment every request before the i-th had committed somewhere.
        let mut ahead_done = Some(healed);
        for d in self.order.clone() {
            if let Some(&submitted) = self.submitted.get(&d)
                && let Some(ready) = ahead_done
            {
                let ready = ready.max(submitted);
                let done = honest
                    .iter()
                    .map(|n| self.commit_times.get(&(d, *n)).copied())
                    .try_fold(ready, |acc, t| t.map(|t| acc.max(t)));
                let took = done.unwrap_or(now.max(ready + bound_ms + 1)) - ready;
                worst = Some(worst.unwrap_or(0).max(took));
                if took > bound_ms {
                    late.push(d);
                }
            }
            ahead_done = match (ahead_done, self.first_commit.get(&d)) {
                (Some(a), Some(t)) => Some(a.max(*t)),
                _ => None,
            };
        }
        if let Some(d) = late.first() {
            self.violation(format!(
                "censorship: {} requests submitted after healing (e.g. {d:?}) did not commit at every honest replica within {bound_ms} ms of nothing older waiting",
                late.len()
            ));
        }
        worst
    }

    /// Liveness after healing: every request submitted after the network healed committed
    /// at every honest replica within the bound.
    pub fn check_liveness(&mut self, missing: usize, bound_ms: u64, laggards: &[usize]) {
        if missing > 0 {
            self.violation(format!(
                "liveness: {missing} requests submitted after healing were not committed at every honest replica within {bound_ms} ms (lagging nodes {laggards:?})"
            ));
        }
    }

    pub fn committed_heights(&self) -> u64 {
        self.committed.keys().map(|s| s.0).max().unwrap_or(0)
    }
}
