//! The invariants, one function each, checked throughout every run. Each records a
//! violation rather than panicking, so a run reports all it found with its seed.
//!
//! Sources: agreement, validity and the view rules are Castro–Liskov TOCS'02 §4.5 (safety)
//! and §2 (the service properties); "committed prefix never changes" and "views only grow"
//! follow openraft's invariants; "honest replicas never sign conflicting messages" is what
//! the safety rules guarantee (Aptos safety-rules).

use std::collections::{HashMap, HashSet};

use tally_crypto::{ChainId, Digest};

use crate::pbft::Message;
use crate::{Batch, CommitCertificate, Seq, ValidatorId, ValidatorSet, View};

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
            Message::PrePrepare(m) => std::slice::from_ref(m),
            Message::NewView(m) => m.body.pre_prepares.as_slice(),
            _ => return,
        };
        for pp in pre_prepares {
            if pp.from == self.validators.primary(pp.body.view) {
                self.proposed
                    .insert((pp.body.view, pp.body.seq, pp.body.batch.digest()));
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
            Message::PrePrepare(m) => (
                "pre_prepare",
                m.body.view,
                m.body.seq,
                m.body.batch.digest(),
            ),
            Message::Prepare(m) => ("prepare", m.body.view, m.body.seq, m.body.digest),
            Message::Commit(m) => ("commit", m.body.view, m.body.seq, m.body.digest),
            Message::Checkpoint(m) => ("checkpoint", View(0), m.body.seq, m.body.state_root),
            Message::ViewChange(m) => (
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
