//! Normal-case operation (TOCS'02 §4.2–4.3): the primary assigns sequence numbers to
//! batches, backups PREPARE, everyone COMMITs, and batches execute in sequence order.

use super::messages::{Commit, Message, PrePrepare, Prepare, PreparedProof, Signed};
use super::records::Record;
use super::{Pbft, Status};
use crate::protocol::{Event, Output, VoteKind};
use crate::{Batch, CommitCertificate, Seq, ValidatorId};

impl Pbft {
    /// Asks the driver for a batch when this replica is the primary with room in its window.
    pub(crate) fn maybe_request_batch(&mut self, out: &mut Vec<Output>) {
        if !self.batch_requested && self.can_propose() {
            self.batch_requested = true;
            out.push(Output::RequestBatch);
        }
    }

    fn can_propose(&self) -> bool {
        self.status == Status::Normal
            && self.is_primary()
            && self.in_window(self.next_propose)
            && self.fetching.is_none()
    }

    /// The primary assigns the next sequence number to `batch` (pipelining: it does not wait
    /// for earlier ones to commit, only for room below the high watermark).
    pub(crate) fn on_propose(&mut self, batch: Batch, out: &mut Vec<Output>) {
        self.batch_requested = false;
        if batch.is_null() || !self.can_propose() {
            self.maybe_request_batch(out);
            return;
        }
        let seq = self.next_propose;
        let pp = PrePrepare {
            view: self.view,
            seq,
            batch,
        };
        let signed = match self.safety.sign_pre_prepare(pp, out) {
            Ok(s) => s,
            Err(_) => {
                // Signed something else here before a restart: skip the number.
                self.next_propose = seq.next();
                return;
            }
        };
        self.next_propose = seq.next();
        out.push(Output::Broadcast(Message::PrePrepare(signed.clone())));
        self.log.entry(seq).or_default().pre_prepare = Some(signed);
        out.push(Output::Event(Event::PrePrepareAccepted {
            view: self.view,
            seq,
        }));
        self.progress_deadline
            .get_or_insert(self.now + self.timeout());
        self.maybe_request_batch(out);
    }

    /// A backup accepts a PRE-PREPARE only in its current view, inside the watermarks, and if
    /// it has not accepted a different digest for `(view, seq)` (TOCS'02 §4.2).
    pub(crate) fn on_pre_prepare(&mut self, m: Signed<PrePrepare>, out: &mut Vec<Output>) {
        let (view, seq) = (m.body.view, m.body.seq);
        if view > self.view || (view == self.view && self.status != Status::Normal) {
            self.buffer_future(Message::PrePrepare(m));
            return;
        }
        if view < self.view || !self.in_window(seq) {
            return;
        }
        if let Some(e) = self.evidence.observe(&Message::PrePrepare(m.clone())) {
            out.push(Output::Evidence(e));
        }
        let digest = m.body.batch.digest();
        let slot = self.log.entry(seq).or_default();
        match slot.digest() {
            Some(d) if d == digest => return,
            Some(_) => {
                out.push(Output::Event(Event::Rejected {
                    reason: "conflicting_pre_prepare",
                }));
                return;
            }
            None => {}
        }
        if let Some((batch, _)) = &slot.committed
            && batch.digest() != digest
        {
            out.push(Output::Event(Event::Rejected {
                reason: "pre_prepare_conflicts_with_commit",
            }));
            return;
        }
        slot.pre_prepare = Some(m);
        out.push(Output::Event(Event::PrePrepareAccepted { view, seq }));
        self.progress_deadline
            .get_or_insert(self.now + self.timeout());
        self.send_prepare(seq, out);
        self.check_prepared(seq, self.validators.primary(view), out);
    }

    /// Signs and broadcasts this backup's PREPARE for the accepted pre-prepare at `seq`.
    pub(crate) fn send_prepare(&mut self, seq: Seq, out: &mut Vec<Output>) {
        if self.is_primary() {
            return;
        }
        let Some(digest) = self.log.get(&seq).and_then(|s| s.digest()) else {
            return;
        };
        let prepare = Prepare {
            view: self.view,
            seq,
            digest,
        };
        let Ok(signed) = self.safety.sign_prepare(prepare, out) else {
            return;
        };
        out.push(Output::Broadcast(Message::Prepare(signed.clone())));
        let slot = self.log.entry(seq).or_default();
        slot.prepares
            .entry(digest)
            .or_default()
            .insert(self.me, signed.clone());
        slot.own_prepare = Some(signed);
    }

    pub(crate) fn on_prepare(&mut self, m: Signed<Prepare>, out: &mut Vec<Output>) {
        let (view, seq, digest, from) = (m.body.view, m.body.seq, m.body.digest, m.from);
        if view > self.view || (view == self.view && self.status != Status::Normal) {
            self.buffer_future(Message::Prepare(m));
            return;
        }
        if view < self.view || !self.in_window(seq) {
            return;
        }
        if from == self.validators.primary(view) {
            out.push(Output::Event(Event::Rejected {
                reason: "prepare_from_primary",
            }));
            return;
        }
        if let Some(e) = self.evidence.observe(&Message::Prepare(m.clone())) {
            out.push(Output::Evidence(e));
        }
        out.push(Output::Event(Event::Vote {
            kind: VoteKind::Prepare,
            view,
            seq,
            from,
        }));
        self.log
            .entry(seq)
            .or_default()
            .prepares
            .entry(digest)
            .or_default()
            .entry(from)
            .or_insert(m);
        self.check_prepared(seq, from, out);
    }

    /// Prepared: the pre-prepare and 2f matching PREPAREs from distinct backups
    /// (TOCS'02 §4.2). The certificate is persisted, then this replica COMMITs.
    fn check_prepared(&mut self, seq: Seq, completed_by: ValidatorId, out: &mut Vec<Output>) {
        let need = self.validators.quorum() - 1;
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let (Some(pp), false) = (&slot.pre_prepare, slot.prepared) else {
            return;
        };
        let digest = pp.body.batch.digest();
        let Some(votes) = slot.prepares.get(&digest) else {
            return;
        };
        if votes.len() < need {
            return;
        }
        let proof = PreparedProof {
            pre_prepare: pp.clone(),
            prepares: votes.values().take(need).cloned().collect(),
        };
        slot.prepared = true;
        slot.prepared_proof = Some(proof.clone());
        out.push(Output::Persist(Record::Prepared(proof)));
        out.push(Output::Event(Event::Prepared {
            view: self.view,
            seq,
            completed_by,
        }));
        let commit = Commit {
            view: self.view,
            seq,
            digest,
        };
        let Ok(signed) = self.safety.sign_commit(commit, out) else {
            return;
        };
        out.push(Output::Broadcast(Message::Commit(signed.clone())));
        let slot = self.log.get_mut(&seq).expect("slot exists");
        slot.commits
            .entry(digest)
            .or_default()
            .insert(self.me, signed.clone());
        slot.own_commit = Some(signed);
        self.check_committed(seq, self.me, out);
    }

    pub(crate) fn on_commit(&mut self, m: Signed<Commit>, out: &mut Vec<Output>) {
        let (view, seq, digest, from) = (m.body.view, m.body.seq, m.body.digest, m.from);
        if view > self.view || (view == self.view && self.status != Status::Normal) {
            self.buffer_future(Message::Commit(m));
            return;
        }
        let seen = self.peer_commits.entry(from).or_default();
        if seq > *seen {
            *seen = seq;
        }
        if view < self.view || !self.in_window(seq) {
            return;
        }
        if let Some(e) = self.evidence.observe(&Message::Commit(m.clone())) {
            out.push(Output::Evidence(e));
        }
        out.push(Output::Event(Event::Vote {
            kind: VoteKind::Commit,
            view,
            seq,
            from,
        }));
        self.log
            .entry(seq)
            .or_default()
            .commits
            .entry(digest)
            .or_default()
            .entry(from)
            .or_insert(m);
        self.check_committed(seq, from, out);
    }

    /// Committed-local: prepared, and 2f+1 matching COMMITs from distinct replicas
    /// (TOCS'02 §4.3). Those COMMITs are the block's commit certificate.
    ///
    /// A replica that holds the PRE-PREPARE but missed the PREPAREs (it lagged) also commits
    /// on 2f+1 matching COMMITs: at least f+1 of their senders are honest and prepared the
    /// digest, which is exactly what makes committed-local safe, and the COMMITs are the same
    /// certificate that state transfer would hand it.
    fn check_committed(&mut self, seq: Seq, completed_by: ValidatorId, out: &mut Vec<Output>) {
        let quorum = self.validators.quorum();
        let view = self.view;
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        if slot.committed.is_some() {
            return;
        }
        let Some(pp) = slot.pre_prepare.as_ref() else {
            return;
        };
        let digest = pp.body.batch.digest();
        let Some(votes) = slot.commits.get(&digest) else {
            return;
        };
        if votes.len() < quorum {
            return;
        }
        let certificate = CommitCertificate {
            view,
            seq,
            digest,
            signatures: votes
                .values()
                .take(quorum)
                .map(|c| (c.from, c.signature))
                .collect(),
        };
        slot.committed = Some((pp.body.batch.clone(), certificate));
        out.push(Output::Event(Event::CommittedLocal {
            view,
            seq,
            completed_by,
        }));
        self.emit_commits(out);
    }

    /// Emits `Commit` for every committed sequence number from `next_commit` on, in order:
    /// execution is strictly sequential, whatever order the quorums completed in.
    pub(crate) fn emit_commits(&mut self, out: &mut Vec<Output>) {
        while let Some(slot) = self.log.get(&self.next_commit) {
            let Some((batch, certificate)) = &slot.committed else {
                break;
            };
            out.push(Output::Commit {
                seq: self.next_commit,
                batch: batch.clone(),
                certificate: certificate.clone(),
            });
            self.next_commit = self.next_commit.next();
            self.on_progress();
        }
    }

    /// Sends again what peers may have missed: the primary's pre-prepares, this replica's
    /// votes on uncommitted slots, its latest commits (for laggards) and checkpoint, its
    /// view change. Duplicates are harmless: every handler is idempotent.
    pub(crate) fn retransmit(&mut self, out: &mut Vec<Output>) {
        const RECENT_COMMITS: usize = 4;
        match self.status {
            super::Status::ViewChanging => {
                if let Some(vc) = self.safety.own_view_change(self.view) {
                    out.push(Output::Broadcast(Message::ViewChange(vc.clone())));
                }
                self.try_send_new_view(out);
            }
            super::Status::Normal => {
                let primary = self.is_primary();
                let mut recent = 0;
                for (_, slot) in self.log.iter().rev() {
                    if slot.committed.is_some() {
                        if recent < RECENT_COMMITS {
                            if primary && let Some(pp) = &slot.pre_prepare {
                                out.push(Output::Broadcast(Message::PrePrepare(pp.clone())));
                            }
                            if let Some(c) = &slot.own_commit {
                                out.push(Output::Broadcast(Message::Commit(c.clone())));
                            }
                            recent += 1;
                        }
                        continue;
                    }
                    if primary && let Some(pp) = &slot.pre_prepare {
                        out.push(Output::Broadcast(Message::PrePrepare(pp.clone())));
                    }
                    if let Some(p) = &slot.own_prepare {
                        out.push(Output::Broadcast(Message::Prepare(p.clone())));
                    }
                    if let Some(c) = &slot.own_commit {
                        out.push(Output::Broadcast(Message::Commit(c.clone())));
                    }
                }
            }
        }
        self.retransmit_checkpoint(out);
    }
}
