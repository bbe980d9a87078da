//! View changes (TOCS'02 §4.4): a backup that suspects the primary moves to view v+1 and
//! sends VIEW-CHANGE(v+1, n, C, P); the new primary collects 2f+1 and sends NEW-VIEW(v+1, V,
//! O); every backup recomputes O from V and rejects a NEW-VIEW whose O differs.

use std::collections::BTreeMap;

use super::messages::{Message, NewView, PrePrepare, Signed, ViewChange, check_checkpoint_proof};
use super::records::Record;
use super::{Pbft, Stable, Status};
use crate::protocol::{Event, Output, ViewChangeReason};
use crate::{Batch, Seq, ValidatorSet, View};

/// O, recomputed from a set V of view changes (TOCS'02 §4.4): `min_s` is the highest stable
/// checkpoint in V; for each sequence number above it up to the highest prepared one, the
/// batch of the prepared certificate from the highest view, or a null batch where none
/// prepared. Returns `(min_s, [(seq, batch)])`.
///
/// Picking the highest view is safe with signed prepared certificates: two certificates of
/// the same view and sequence number always name the same digest (their quorums intersect in
/// an honest replica), and a digest committed in view v is prepared at f+1 honest replicas, one
/// of which is in any V, so no lower-view certificate can win. Ties (impossible with at most f
/// faults) break by digest so every replica computes the same O.
pub fn compute_o(view_changes: &[Signed<ViewChange>]) -> (Seq, Vec<(Seq, Batch)>) {
    let min_s = view_changes
        .iter()
        .map(|vc| vc.body.stable_seq)
        .max()
        .unwrap_or_default();
    let mut best: BTreeMap<Seq, (View, tally_crypto::Digest, &Batch)> = BTreeMap::new();
    for vc in view_changes {
        for p in &vc.body.prepared {
            let pp = &p.pre_prepare.body;
            if pp.seq <= min_s {
                continue;
            }
            let candidate = (pp.view, pp.batch.digest(), &pp.batch);
            let better = best.get(&pp.seq).is_none_or(|b| {
                (candidate.0, std::cmp::Reverse(candidate.1)) > (b.0, std::cmp::Reverse(b.1))
            });
            if better {
                best.insert(pp.seq, candidate);
            }
        }
    }
    let max_s = best.keys().next_back().copied().unwrap_or(min_s);
    let o = (min_s.0 + 1..=max_s.0)
        .map(|n| {
            let batch = best
                .get(&Seq(n))
                .map(|(_, _, b)| (*b).clone())
                .unwrap_or_else(Batch::null);
            (Seq(n), batch)
        })
        .collect();
    (min_s, o)
}

impl Pbft {
    /// Moves to view `to` (> the current one) and broadcasts VIEW-CHANGE(to, n, C, P).
    pub(crate) fn start_view_change(
        &mut self,
        to: View,
        reason: ViewChangeReason,
        out: &mut Vec<Output>,
    ) {
        if to <= self.view && !(to == self.view && self.status == Status::Normal) {
            return;
        }
        if to == self.view {
            // Only reachable as "Normal in view v, change to v": never a view change.
            return;
        }
        self.view = to;
        self.status = Status::ViewChanging;
        self.batch_requested = false;
        self.progress_deadline = None;
        self.view_change_deadline = Some(self.now + self.timeout());
        out.push(Output::Persist(Record::View {
            view: to,
            changing: true,
        }));
        let vc = match self.safety.own_view_change(to) {
            Some(existing) => existing.clone(),
            None => {
                let body = ViewChange {
                    new_view: to,
                    stable_seq: self.stable.seq,
                    checkpoint_proof: self.stable.proof.clone(),
                    prepared: self
                        .log
                        .range(self.stable.seq.next()..)
                        .filter_map(|(_, s)| s.prepared_proof.clone())
                        .filter(|p| p.pre_prepare.body.view < to)
                        .collect(),
                };
                match self.safety.sign_view_change(body, out) {
                    Ok(s) => s,
                    Err(_) => return,
                }
            }
        };
        out.push(Output::Event(Event::ViewChangeStarted { to, reason }));
        out.push(Output::Broadcast(Message::ViewChange(vc.clone())));
        self.store_view_change(vc);
        // Normal-case state of the old view is dead; what matters survives in P.
        for slot in self.log.values_mut() {
            slot.reset_view();
        }
        self.try_send_new_view(out);
    }

    /// Keeps each sender's highest VIEW-CHANGE only (bounded memory whatever faulty replicas
    /// send).
    fn store_view_change(&mut self, vc: Signed<ViewChange>) {
        let (from, view) = (vc.from, vc.body.new_view);
        if self
            .view_changes
            .range(view.next()..)
            .any(|(_, m)| m.contains_key(&from))
        {
            return;
        }
        for (_, m) in self.view_changes.range_mut(..view) {
            m.remove(&from);
        }
        self.view_changes.retain(|_, m| !m.is_empty());
        self.view_changes
            .entry(view)
            .or_default()
            .entry(from)
            .or_insert(vc);
    }

    /// P entries must lie in `(stable_seq, stable_seq + L]`: bounds the gaps a NEW-VIEW fills.
    fn view_change_in_bounds(&self, vc: &ViewChange) -> bool {
        let high = vc.stable_seq.0 + self.config.watermark_window;
        vc.prepared.iter().all(|p| p.pre_prepare.body.seq.0 <= high)
    }

    pub(crate) fn on_view_change(&mut self, m: Signed<ViewChange>, out: &mut Vec<Output>) {
        if !self.view_change_in_bounds(&m.body) {
            out.push(Output::Event(Event::Rejected {
                reason: "view_change_out_of_bounds",
            }));
            return;
        }
        let (from, view) = (m.from, m.body.new_view);
        // A checkpoint proof in any valid view change tells us how far the others are.
        if let Ok(Some(root)) = check_checkpoint_proof(
            m.body.stable_seq,
            &m.body.checkpoint_proof,
            &self.validators,
        ) && m.body.stable_seq > self.stable.seq
        {
            let stable = Stable {
                seq: m.body.stable_seq,
                state_root: root,
                proof: m.body.checkpoint_proof.clone(),
            };
            self.adopt_stable(stable, out);
        }
        if view < self.view || (view == self.view && self.status == Status::Normal) {
            // A lagging replica: if we lead the current view, hand it our NEW-VIEW.
            self.resend_new_view(from, out);
            return;
        }
        self.store_view_change(m);
        if view == self.view {
            self.try_send_new_view(out);
        }
    }

    /// Sends our NEW-VIEW of the current view to a replica still trying to leave an older
    /// view (at most once per retransmission interval per peer).
    fn resend_new_view(&mut self, to: crate::ValidatorId, out: &mut Vec<Output>) {
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
            msg: Message::NewView(nv.clone()),
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
        if self.status != Status::ViewChanging || !self.is_primary() {
            return;
        }
        if let Some(nv) = self.safety.own_new_view(self.view).cloned() {
            out.push(Output::Broadcast(Message::NewView(nv.clone())));
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
        let chosen: Vec<Signed<ViewChange>> = collected.values().take(quorum).cloned().collect();
        let (_, o) = compute_o(&chosen);
        let mut pre_prepares = Vec::with_capacity(o.len());
        for (seq, batch) in o {
            let pp = PrePrepare {
                view: self.view,
                seq,
                batch,
            };
            match self.safety.sign_pre_prepare(pp, out) {
                Ok(s) => pre_prepares.push(s),
                Err(_) => return,
            }
        }
        let nv = NewView {
            view: self.view,
            view_changes: chosen,
            pre_prepares,
        };
        let Ok(signed) = self.safety.sign_new_view(nv, out) else {
            return;
        };
        out.push(Output::Broadcast(Message::NewView(signed.clone())));
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
        if !new_view_o_matches(&m.body, &self.validators) {
            out.push(Output::Event(Event::Rejected {
                reason: "new_view_o_mismatch",
            }));
            return;
        }
        if view > self.view {
            out.push(Output::Persist(Record::View {
                view,
                changing: true,
            }));
            self.view = view;
            self.status = Status::ViewChanging;
        }
        self.enter_new_view(&m.body, out);
    }

    /// Enters `nv.view`: adopts the highest stable checkpoint of V, installs O's
    /// pre-prepares, prepares them (backups) and resumes normal operation.
    fn enter_new_view(&mut self, nv: &NewView, out: &mut Vec<Output>) {
        let view = nv.view;
        self.view = view;
        self.status = Status::Normal;
        self.view_change_deadline = None;
        self.progress_deadline = None;
        self.batch_requested = false;
        out.push(Output::Persist(Record::View {
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
        if let Some(best) = nv.view_changes.iter().max_by_key(|vc| vc.body.stable_seq)
            && best.body.stable_seq > self.stable.seq
            && let Ok(Some(root)) = check_checkpoint_proof(
                best.body.stable_seq,
                &best.body.checkpoint_proof,
                &self.validators,
            )
        {
            self.adopt_stable(
                Stable {
                    seq: best.body.stable_seq,
                    state_root: root,
                    proof: best.body.checkpoint_proof.clone(),
                },
                out,
            );
        }

        for slot in self.log.values_mut() {
            slot.reset_view();
        }
        let mut max_s = self.stable.seq;
        for pp in &nv.pre_prepares {
            let seq = pp.body.seq;
            max_s = max_s.max(seq);
            if !self.in_window(seq) {
                continue;
            }
            let slot = self.log.entry(seq).or_default();
            if let Some((batch, _)) = &slot.committed
                && batch.digest() != pp.body.batch.digest()
            {
                out.push(Output::Event(Event::Rejected {
                    reason: "new_view_conflicts_with_commit",
                }));
                continue;
            }
            slot.pre_prepare = Some(pp.clone());
        }
        self.next_propose = max_s.next();
        let seqs: Vec<Seq> = nv
            .pre_prepares
            .iter()
            .map(|p| p.body.seq)
            .filter(|s| self.in_window(*s))
            .collect();
        for seq in seqs {
            self.send_prepare(seq, out);
        }
        if !nv.pre_prepares.is_empty() {
            self.progress_deadline = Some(self.now + self.timeout());
        }
        self.replay_future(out);
        self.maybe_request_batch(out);
    }
}

/// Recomputes O from the NEW-VIEW's V and compares it with the O it carries.
pub fn new_view_o_matches(nv: &NewView, validators: &ValidatorSet) -> bool {
    let _ = validators;
    let (_, expected) = compute_o(&nv.view_changes);
    expected.len() == nv.pre_prepares.len()
        && expected
            .iter()
            .zip(&nv.pre_prepares)
            .all(|((seq, batch), pp)| {
                pp.body.view == nv.view && pp.body.seq == *seq && pp.body.batch == *batch
            })
}
