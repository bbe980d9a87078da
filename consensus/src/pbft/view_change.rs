//! View changes (TOCS'02 §4.4): a backup that suspects the primary moves to view v+1 and
//! sends VIEW-CHANGE(v+1, n, C, P); the new primary collects 2f+1 and sends NEW-VIEW(v+1, V,
//! O); every backup recomputes O from V and rejects a NEW-VIEW whose O differs.
//!
//! P travels as claims `(seq, view, digest)` under the sender's signature, each with its
//! prepared certificate beside it; the receiver checks every certificate before it keeps
//! the VIEW-CHANGE. A NEW-VIEW carries only the claims of V and the certificates of the
//! claims O re-issues (see [`super::messages`]).
//!
//! Timers (TOCS'02 §4.5.2): the view-change timer starts when a replica holds 2f+1
//! VIEW-CHANGEs for its new view, not when it sends its own; each successive view change
//! doubles the timeout, until a request commits in the new view.

use std::collections::BTreeMap;

use tally_crypto::Digest;

use super::evidence::Statement;
use super::messages::{
    CheckpointCert, Message, NewView, PrePrepare, PreparedClaim, Signed, ViewChange,
    ViewChangeProofs,
};
use super::records::Record;
use super::{Pbft, Status};
use crate::protocol::{Event, Output, ViewChangeReason};
use crate::{Batch, Seq, ValidatorId, View};

/// O, recomputed from a set V of view changes (TOCS'02 §4.4): `min_s` is the highest stable
/// checkpoint in V; for each sequence number above it up to the highest claimed one, the
/// claim from the highest view, or `None` (a null batch) where nobody claims one.
///
/// Picking the highest view is safe with proven claims: two prepared certificates of the same
/// view and sequence number always name the same digest (their quorums intersect in an honest
/// replica), and a digest committed in view v is prepared at f+1 honest replicas, one of which
/// is in any V, so no lower-view claim can win. Ties (impossible with proven claims and at
/// most f faults) break by digest so every replica computes the same O.
pub fn compute_o(view_changes: &[Signed<ViewChange>]) -> (Seq, Vec<(Seq, Option<PreparedClaim>)>) {
    let min_s = view_changes
        .iter()
        .map(|vc| vc.body.stable_seq)
        .max()
        .unwrap_or_default();
    let mut best: BTreeMap<Seq, PreparedClaim> = BTreeMap::new();
    for vc in view_changes {
        for c in &vc.body.prepared {
            if c.seq <= min_s {
                continue;
            }
            let better = best.get(&c.seq).is_none_or(|b| {
                (c.view, std::cmp::Reverse(c.digest)) > (b.view, std::cmp::Reverse(b.digest))
            });
            if better {
                best.insert(c.seq, *c);
            }
        }
    }
    let max_s = best.keys().next_back().copied().unwrap_or(min_s);
    let o = (min_s.0 + 1..=max_s.0)
        .map(|n| (Seq(n), best.get(&Seq(n)).copied()))
        .collect();
    (min_s, o)
}

/// The digest O re-issues at an entry: the claim's, or the null batch's.
fn o_digest(claim: &Option<PreparedClaim>) -> Digest {
    claim.map_or_else(|| Batch::null().digest(), |c| c.digest)
}

/// Checks a NEW-VIEW against its V (TOCS'02 §4.4): O is what V gives, each re-issued claim
/// comes with its certificate, and the checkpoint certificate is that of the highest stable
/// checkpoint V names. Signatures and the certificates' shapes were checked before.
pub fn new_view_valid(nv: &NewView) -> bool {
    let (min_s, o) = compute_o(&nv.view_changes);
    if nv.stable.seq != min_s
        || !nv
            .view_changes
            .iter()
            .any(|vc| vc.body.stable_seq == min_s && vc.body.stable_hash == nv.stable.block_hash)
    {
        return false;
    }
    if o.len() != nv.pre_prepares.len() {
        return false;
    }
    let mut proofs = nv.proofs.iter();
    for ((seq, claim), pp) in o.iter().zip(&nv.pre_prepares) {
        if pp.body.view != nv.view || pp.body.seq != *seq || pp.body.digest != o_digest(claim) {
            return false;
        }
        if let Some(c) = claim
            && proofs.next().map(|p| p.claim()) != Some(*c)
        {
            return false;
        }
    }
    proofs.next().is_none()
}

impl Pbft {
    /// Moves to view `to` (> the current one) and broadcasts VIEW-CHANGE(to, n, C, P).
    pub(crate) fn start_view_change(
        &mut self,
        to: View,
        reason: ViewChangeReason,
        out: &mut Vec<Output>,
    ) {
        if to <= self.view {
            return;
        }
        self.view = to;
        self.status = Status::ViewChanging;
        self.batch_requested = false;
        self.progress_deadline = None;
        self.view_change_deadline = None;
        self.backoff = self.backoff.saturating_add(1);
        out.push(Output::persist(Record::View {
            view: to,
            changing: true,
        }));
        out.push(Output::Event(Event::ViewChangeStarted { to, reason }));
        self.send_own_view_change(out);
        // Normal-case state of the old view is dead; what matters survives in P.
        for slot in self.log.values_mut() {
            slot.reset_view();
        }
        // Our VIEW-CHANGE of the view we leave stays: a peer still collecting it gets it again
        // (see `on_view_change`).
        self.safety.prune_views(View(to.0 - 1), out);
        self.view_changes = self.view_changes.split_off(&to);
        self.check_view_change_timer();
        self.try_send_new_view(out);
    }

    /// Signs (once per view) and broadcasts this replica's VIEW-CHANGE for the view it is
    /// moving to. Also called on retransmission, so a replica that could not sign when it
    /// started the view change (its state was being repaired) sends it once it can.
    pub(crate) fn send_own_view_change(&mut self, out: &mut Vec<Output>) {
        if self.status != Status::ViewChanging || !self.may_sign() {
            return;
        }
        let to = self.view;
        let own = match self.safety.own_view_change(to) {
            Some((vc, proofs)) => Some((vc.clone(), proofs.clone())),
            None => {
                let certs: Vec<_> = self
                    .log
                    .range(self.stable.seq.next()..)
                    .filter_map(|(_, s)| s.prepared_cert.clone())
                    .filter(|p| p.pre_prepare.body.view < to)
                    .collect();
                let body = ViewChange {
                    new_view: to,
                    stable_seq: self.stable.seq,
                    stable_hash: self.stable.block_hash,
                    prepared: certs.iter().map(|c| c.claim()).collect(),
                };
                let proofs = ViewChangeProofs {
                    stable: self.stable.clone(),
                    prepared: certs,
                };
                self.safety
                    .sign_view_change(body, proofs.clone(), out)
                    .ok()
                    .map(|vc| (vc, proofs))
            }
        };
        if let Some((vc, proofs)) = own {
            out.push(Output::broadcast(Message::ViewChange(
                vc.clone(),
                proofs.clone(),
            )));
            self.store_view_change(vc, proofs);
            self.check_view_change_timer();
        }
    }

    /// Keeps, per sender, the VIEW-CHANGE of the lowest view at or above the current one
    /// (it counts toward the quorum this replica is collecting, even after the sender moved
    /// on) and the one of the highest view: at most two per sender, whatever it sends.
    fn store_view_change(&mut self, vc: Signed<ViewChange>, proofs: ViewChangeProofs) {
        let (from, view) = (vc.from, vc.body.new_view);
        if view < self.view
            || self
                .view_changes
                .get(&view)
                .is_some_and(|m| m.contains_key(&from))
        {
            return;
        }
        self.view_changes
            .entry(view)
            .or_default()
            .insert(from, (vc, proofs));
        let held: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(_, m)| m.contains_key(&from))
            .map(|(v, _)| *v)
            .collect();
        if held.len() > 2 {
            for v in &held[1..held.len() - 1] {
                if let Some(m) = self.view_changes.get_mut(v) {
                    m.remove(&from);
                }
            }
            self.view_changes.retain(|_, m| !m.is_empty());
        }
    }

    /// A peer still collecting VIEW-CHANGEs for an earlier view: hand it ours for that view,
    /// if we still hold it (at most once per retransmission interval per peer). Without
    /// this, a replica that moved on after its timer expired could leave the others one
    /// VIEW-CHANGE short of the quorum that starts theirs.
    fn resend_old_view_change(&mut self, to: ValidatorId, view: View, out: &mut Vec<Output>) {
        let Some((vc, proofs)) = self.safety.own_view_change(view).cloned() else {
            return;
        };
        let last = self.view_change_resent.get(&to).copied();
        if last.is_some_and(|t| self.now < t + self.config.retransmit_ms) {
            return;
        }
        self.view_change_resent.insert(to, self.now);
        out.push(Output::Send {
            to,
            msg: Message::ViewChange(vc, proofs).into(),
        });
    }

    /// TOCS'02 §4.5.2: the view-change timer starts once this replica holds 2f+1
    /// VIEW-CHANGEs for the view it is moving to. Before that it waits (others may still be
    /// in the old view; f+1 of them in higher views make it join those).
    fn check_view_change_timer(&mut self) {
        if self.status != Status::ViewChanging || self.view_change_deadline.is_some() {
            return;
        }
        let held = self.view_changes.get(&self.view).map_or(0, |m| m.len());
        if held >= self.validators.quorum() {
            self.view_change_deadline = Some(self.now + self.timeout());
        }
    }

    /// Claims must lie in `(stable_seq, stable_seq + L]`: bounds the gaps a NEW-VIEW fills.
    fn view_change_in_bounds(&self, vc: &ViewChange) -> bool {
        let high = vc.stable_seq.0.saturating_add(self.config.watermark_window);
        vc.prepared.iter().all(|c| c.seq.0 <= high)
    }

    /// Feeds the evidence tracker the statements nested in a view change's proofs that fall
    /// inside this replica's window.
    fn observe_proofs(&mut self, proofs: &ViewChangeProofs, out: &mut Vec<Output>) {
        let mut found = Vec::new();
        for cert in &proofs.prepared {
            let seq = cert.pre_prepare.body.seq;
            if !self.in_window(seq) {
                continue;
            }
            found.extend(
                self.evidence
                    .observe(Statement::PrePrepare(cert.pre_prepare)),
            );
            for p in cert.prepare_messages() {
                found.extend(self.evidence.observe(Statement::Prepare(p)));
            }
        }
        self.observe_checkpoint_cert(&proofs.stable, &mut found);
        out.extend(found.into_iter().map(Output::Evidence));
    }

    fn observe_checkpoint_cert(&mut self, cert: &CheckpointCert, found: &mut Vec<super::Evidence>) {
        if self.in_window(cert.seq) {
            for c in cert.checkpoint_messages() {
                found.extend(self.evidence.observe(Statement::Checkpoint(c)));
            }
        }
    }

    pub(crate) fn on_view_change(
        &mut self,
        m: Signed<ViewChange>,
        proofs: ViewChangeProofs,
        out: &mut Vec<Output>,
    ) {
        if !self.view_change_in_bounds(&m.body) {
            out.push(Output::Event(Event::Rejected {
                reason: "view_change_out_of_bounds",
            }));
            return;
        }
        let (from, view) = (m.from, m.body.new_view);
        if let Some(e) = self.evidence.observe(Statement::ViewChange(m.clone())) {
            out.push(Output::Evidence(e));
        }
        self.observe_proofs(&proofs, out);
        // A checkpoint certificate in any valid view change tells us how far the others are.
        if proofs.stable.seq > self.stable.seq {
            self.adopt_stable(proofs.stable.clone(), out);
        }
        if view < self.view || (view == self.view && self.status == Status::Normal) {
            // A lagging replica: if we lead the current view, hand it our NEW-VIEW; if we
            // left its view ourselves, our VIEW-CHANGE for it.
            self.resend_new_view(from, out);
            if view < self.view {
                self.resend_old_view_change(from, view, out);
            }
            return;
        }
        self.store_view_change(m, proofs);
        if view == self.view {
            self.check_view_change_timer();
            self.try_send_new_view(out);
        }
    }

    /// Sends our NEW-VIEW of the current view to a replica still trying to leave an older
    /// view (at most once per retransmission interval per peer).
    fn resend_new_view(&mut self, to: ValidatorId, out: &mut Vec<Output>) {
        if self.status != Status::Normal || !self.is_primary() {
            return;
        }
        let Some(nv) = self.safety.own_new_view(self.view) else {
            return;
        };
        let last = self.new_view_resent.get(&to).copied();
        if last.is_some_and(|t| self.now < t + self.config.retransmit_ms) {
            return;
        }
        self.new_view_resent.insert(to, self.now);
        out.push(Output::Send {
            to,
            msg: Message::NewView(nv.clone()).into(),
        });
    }

    /// f + 1 replicas are in higher views: at least one honest replica moved, so follow
    /// (TOCS'02 §4.5.2, generalised from VIEW-CHANGEs to any message of a higher view).
    pub(crate) fn check_join(&mut self, out: &mut Vec<Output>) {
        let mut views: Vec<View> = self
            .peer_views
            .iter()
            .filter(|(id, _)| **id != self.me)
            .map(|(_, v)| *v)
            .filter(|v| *v > self.view)
            .collect();
        let need = self.validators.weak_quorum();
        if views.len() < need {
            return;
        }
        views.sort_unstable_by(|a, b| b.cmp(a));
        let target = views[need - 1];
        self.start_view_change(target, ViewChangeReason::JoinHigherView, out);
    }

    /// The new primary, with 2f+1 VIEW-CHANGEs for its view, sends NEW-VIEW.
    pub(crate) fn try_send_new_view(&mut self, out: &mut Vec<Output>) {
        if self.status != Status::ViewChanging || !self.is_primary() || !self.may_sign() {
            return;
        }
        if let Some(nv) = self.safety.own_new_view(self.view).cloned() {
            out.push(Output::broadcast(Message::NewView(nv.clone())));
            self.enter_new_view(&nv.body, out);
            return;
        }
        let quorum = self.validators.quorum();
        let Some(collected) = self.view_changes.get(&self.view) else {
            return;
        };
        if collected.len() < quorum {
            return;
        }
        let chosen: Vec<&(Signed<ViewChange>, ViewChangeProofs)> =
            collected.values().take(quorum).collect();
        let bodies: Vec<Signed<ViewChange>> = chosen.iter().map(|(vc, _)| vc.clone()).collect();
        let (min_s, o) = compute_o(&bodies);
        let Some(stable) = chosen
            .iter()
            .find(|(vc, _)| vc.body.stable_seq == min_s)
            .map(|(_, p)| p.stable.clone())
        else {
            return;
        };
        let mut proofs = Vec::new();
        for claim in o.iter().filter_map(|(_, c)| c.as_ref()) {
            let cert = chosen
                .iter()
                .flat_map(|(_, p)| &p.prepared)
                .find(|p| p.claim() == *claim);
            match cert {
                Some(c) => proofs.push(c.clone()),
                // Every stored VIEW-CHANGE had a certificate for each claim.
                None => return,
            }
        }
        let mut pre_prepares = Vec::with_capacity(o.len());
        for (seq, claim) in &o {
            let pp = PrePrepare {
                view: self.view,
                seq: *seq,
                digest: o_digest(claim),
            };
            match self.safety.sign_pre_prepare_digest(pp, out) {
                Ok(s) => pre_prepares.push(s),
                Err(_) => return,
            }
        }
        let nv = NewView {
            view: self.view,
            view_changes: bodies,
            stable,
            pre_prepares,
            proofs,
        };
        let Ok(signed) = self.safety.sign_new_view(nv, out) else {
            return;
        };
        out.push(Output::broadcast(Message::NewView(signed.clone())));
        self.enter_new_view(&signed.body, out);
    }

    /// A backup checks a NEW-VIEW by recomputing O from its V (TOCS'02 §4.4).
    pub(crate) fn on_new_view(&mut self, m: Signed<NewView>, out: &mut Vec<Output>) {
        let view = m.body.view;
        if view < self.view || (view == self.view && self.status == Status::Normal) {
            return;
        }
        if !m
            .body
            .view_changes
            .iter()
            .all(|vc| self.view_change_in_bounds(&vc.body))
        {
            out.push(Output::Event(Event::Rejected {
                reason: "view_change_out_of_bounds",
            }));
            return;
        }
        if !new_view_valid(&m.body) {
            out.push(Output::Event(Event::Rejected {
                reason: "new_view_o_mismatch",
            }));
            return;
        }
        let mut found = Vec::new();
        for vc in &m.body.view_changes {
            found.extend(self.evidence.observe(Statement::ViewChange(vc.clone())));
        }
        for pp in &m.body.pre_prepares {
            if self.in_window(pp.body.seq) {
                found.extend(self.evidence.observe(Statement::PrePrepare(*pp)));
            }
        }
        for cert in &m.body.proofs {
            if self.in_window(cert.pre_prepare.body.seq) {
                found.extend(
                    self.evidence
                        .observe(Statement::PrePrepare(cert.pre_prepare)),
                );
                for p in cert.prepare_messages() {
                    found.extend(self.evidence.observe(Statement::Prepare(p)));
                }
            }
        }
        self.observe_checkpoint_cert(&m.body.stable, &mut found);
        out.extend(found.into_iter().map(Output::Evidence));
        if view > self.view {
            out.push(Output::persist(Record::View {
                view,
                changing: true,
            }));
            self.view = view;
            self.status = Status::ViewChanging;
            self.backoff = self.backoff.saturating_add(1);
        }
        self.enter_new_view(&m.body, out);
    }

    /// Enters `nv.view`: adopts the highest stable checkpoint of V, installs O's
    /// pre-prepares, asks for their batches to be checked (or fetched) and resumes normal
    /// operation.
    fn enter_new_view(&mut self, nv: &NewView, out: &mut Vec<Output>) {
        let view = nv.view;
        self.view = view;
        self.status = Status::Normal;
        self.view_change_deadline = None;
        self.progress_deadline = None;
        self.batch_requested = false;
        out.push(Output::persist(Record::View {
            view,
            changing: false,
        }));
        self.safety.prune_views(view, out);
        self.view_changes = self.view_changes.split_off(&view.next());
        out.push(Output::Event(Event::NewView {
            view,
            primary: self.validators.primary(view),
        }));

        // The highest checkpoint in V may be ahead of ours.
        if nv.stable.seq > self.stable.seq {
            self.adopt_stable(nv.stable.clone(), out);
        }

        for slot in self.log.values_mut() {
            slot.reset_view();
        }
        let mut max_s = self.stable.seq;
        let mut installed = Vec::new();
        for pp in &nv.pre_prepares {
            let (seq, digest) = (pp.body.seq, pp.body.digest);
            max_s = max_s.max(seq);
            if !self.in_window(seq) {
                continue;
            }
            if !self.agrees_with_executed(seq, &digest) {
                out.push(Output::Event(Event::Rejected {
                    reason: "new_view_conflicts_with_executed",
                }));
                continue;
            }
            let holders: Vec<ValidatorId> = nv
                .view_changes
                .iter()
                .filter(|vc| {
                    vc.body
                        .prepared
                        .iter()
                        .any(|c| c.seq == seq && c.digest == digest)
                })
                .map(|vc| vc.from)
                .filter(|id| *id != self.me)
                .collect();
            let slot = self.log.entry(seq).or_default();
            if slot.committed.as_ref().is_some_and(|c| c.digest != digest) {
                out.push(Output::Event(Event::Rejected {
                    reason: "new_view_conflicts_with_commit",
                }));
                continue;
            }
            slot.pre_prepare = Some(*pp);
            slot.holders = holders;
            installed.push(seq);
        }
        self.next_propose = max_s.next();
        for seq in installed {
            self.request_validation(seq, out);
        }
        if !nv.pre_prepares.is_empty() {
            self.progress_deadline = Some(self.now + self.timeout());
        }
        self.replay_future(out);
        self.maybe_request_batch(out);
    }
}
