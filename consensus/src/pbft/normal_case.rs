//! Normal-case operation (TOCS'02 §4.2–4.3): the primary assigns sequence numbers to
//! batches, backups check them and PREPARE, everyone COMMITs, and batches execute in
//! sequence order.
//!
//! A backup accepts a PRE-PREPARE only after every check that needs no transaction body:
//! the sender is the primary of the backup's current view, the view is current and normal,
//! the sequence number lies inside the watermarks, the batch is within the configured limit,
//! no other digest was accepted for `(view, seq)`, and no other digest was executed at
//! `seq`. Only then does it ask the driver to check the batch's transactions
//! ([`Output::Validate`]), and only once the driver answers ([`Input::Validated`]) does it
//! PREPARE. Votes are kept one per sender per slot, so a peer cannot grow a slot by signing
//! many digests.

use tally_crypto::Digest;

use super::evidence::Statement;
use super::messages::{Commit, Message, PrePrepare, Prepare, PreparedCert, Signed};
use super::records::Record;
use super::{Pbft, Status};
use crate::protocol::{Event, Output, VoteKind};
use crate::{Batch, CommitCertificate, Seq, ValidatorId, View};

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
            && self.may_sign()
    }

    /// The primary assigns the next sequence number to `batch` (pipelining: it does not wait
    /// for earlier ones to commit, only for room below the high watermark).
    pub(crate) fn on_propose(&mut self, batch: Batch, out: &mut Vec<Output>) {
        self.batch_requested = false;
        // Never at a sequence number this replica already executed (it would conflict with
        // the block it holds).
        if self.next_propose <= self.last_executed {
            self.next_propose = self.last_executed.next();
        }
        if batch.is_null() || batch.txs.len() > self.config.batch_txs_max || !self.can_propose() {
            self.maybe_request_batch(out);
            return;
        }
        let seq = self.next_propose;
        let digest = batch.digest();
        let pp = PrePrepare {
            view: self.view,
            seq,
            digest,
        };
        let signed = match self.safety.sign_pre_prepare(pp, &batch, out) {
            Ok(s) => s,
            Err(_) => {
                // Signed something else here before a restart: skip the number.
                self.next_propose = seq.next();
                return;
            }
        };
        self.next_propose = seq.next();
        out.push(Output::broadcast(Message::PrePrepare(
            signed,
            batch.clone(),
        )));
        let slot = self.log.entry(seq).or_default();
        slot.pre_prepare = Some(signed);
        slot.validated = true;
        slot.keep_batch(digest, batch);
        out.push(Output::Event(Event::PrePrepareAccepted {
            view: self.view,
            seq,
        }));
        self.progress_deadline
            .get_or_insert(self.now + self.timeout());
        self.maybe_request_batch(out);
    }

    /// A backup accepts a PRE-PREPARE only in its current view, inside the watermarks, within
    /// the batch limit, and if it has accepted no other digest for `(view, seq)` (TOCS'02
    /// §4.2) and executed no other at `seq`. The sender being the primary of `view` and the
    /// batch matching the digest were checked by [`super::messages::check_structure`].
    pub(crate) fn on_pre_prepare(
        &mut self,
        m: Signed<PrePrepare>,
        batch: Batch,
        out: &mut Vec<Output>,
    ) {
        let (view, seq, digest) = (m.body.view, m.body.seq, m.body.digest);
        if view > self.view || (view == self.view && self.status != Status::Normal) {
            self.buffer_future(Message::PrePrepare(m, batch));
            return;
        }
        if view < self.view {
            out.push(Output::Event(Event::Rejected {
                reason: "stale_view",
            }));
            return;
        }
        if !self.in_window(seq) {
            out.push(Output::Event(Event::Rejected {
                reason: "outside_window",
            }));
            return;
        }
        if batch.txs.len() > self.config.batch_txs_max {
            out.push(Output::Event(Event::Rejected {
                reason: "batch_too_large",
            }));
            return;
        }
        if let Some(e) = self.evidence.observe(Statement::PrePrepare(m)) {
            out.push(Output::Evidence(e));
        }
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
        if slot.committed.as_ref().is_some_and(|c| c.digest != digest) {
            out.push(Output::Event(Event::Rejected {
                reason: "pre_prepare_conflicts_with_commit",
            }));
            return;
        }
        if !self.agrees_with_executed(seq, &digest) {
            out.push(Output::Event(Event::Rejected {
                reason: "pre_prepare_conflicts_with_executed",
            }));
            return;
        }
        let slot = self.log.entry(seq).or_default();
        slot.pre_prepare = Some(m);
        slot.keep_batch(digest, batch);
        out.push(Output::Event(Event::PrePrepareAccepted { view, seq }));
        self.progress_deadline
            .get_or_insert(self.now + self.timeout());
        self.request_validation(seq, out);
        self.check_prepared(seq, self.validators.primary(view), out);
    }

    /// For an accepted pre-prepare at `seq`: a null batch is valid at once; otherwise the
    /// driver checks the batch's transactions (or fetches the batch first when only its
    /// digest is known, as after a NEW-VIEW).
    pub(crate) fn request_validation(&mut self, seq: Seq, out: &mut Vec<Output>) {
        let view = self.view;
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let Some(digest) = slot.digest() else {
            return;
        };
        if slot.validated {
            return;
        }
        if digest == Batch::null().digest() {
            slot.keep_batch(digest, Batch::null());
            slot.validated = true;
            self.send_prepare(seq, out);
            return;
        }
        // Also at the primary re-issuing a NEW-VIEW's entry: it does not PREPARE, but its
        // driver sets the batch's transactions aside (it must not propose them again) and
        // gathers their bodies to execute them.
        match slot.batch(&digest) {
            Some(batch) => out.push(Output::Validate {
                view,
                seq,
                batch: batch.clone(),
            }),
            None => {
                let from = self.payload_holders(seq);
                out.push(Output::FetchPayload { seq, digest, from });
            }
        }
    }

    /// Validators whose VIEW-CHANGEs (in the NEW-VIEW of the current view) claimed the
    /// digest at `seq`: they prepared it, so they hold its batch.
    fn payload_holders(&self, seq: Seq) -> Vec<ValidatorId> {
        self.log
            .get(&seq)
            .map(|s| s.holders.clone())
            .unwrap_or_default()
    }

    /// The driver found every transaction of the batch at `(view, seq)` held and valid.
    pub(crate) fn on_validated(
        &mut self,
        view: View,
        seq: Seq,
        digest: Digest,
        out: &mut Vec<Output>,
    ) {
        if view != self.view || self.status != Status::Normal {
            return;
        }
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        if slot.validated || slot.digest() != Some(digest) || slot.batch(&digest).is_none() {
            return;
        }
        slot.validated = true;
        self.send_prepare(seq, out);
        self.check_prepared(seq, self.me, out);
    }

    /// A batch fetched from a peer: kept only if it hashes to a digest this replica needs at
    /// `seq`, within the batch limit.
    pub(crate) fn on_payload(&mut self, seq: Seq, batch: Batch, out: &mut Vec<Output>) {
        if batch.txs.len() > self.config.batch_txs_max || !self.in_window(seq) {
            return;
        }
        let digest = batch.digest();
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        if !slot.wants(&digest) || slot.batch(&digest).is_some() {
            return;
        }
        slot.keep_batch(digest, batch);
        if slot.digest() == Some(digest) && self.status == Status::Normal {
            self.request_validation(seq, out);
            self.check_prepared(seq, self.me, out);
        }
        self.emit_commits(out);
    }

    /// Signs and broadcasts this backup's PREPARE for the accepted, validated pre-prepare at
    /// `seq`.
    pub(crate) fn send_prepare(&mut self, seq: Seq, out: &mut Vec<Output>) {
        if self.is_primary() || !self.may_sign() {
            return;
        }
        let Some(slot) = self.log.get(&seq) else {
            return;
        };
        let (Some(digest), true) = (slot.digest(), slot.validated) else {
            return;
        };
        if !self.agrees_with_executed(seq, &digest) {
            return;
        }
        let prepare = Prepare {
            view: self.view,
            seq,
            digest,
        };
        let Ok(signed) = self.safety.sign_prepare(prepare, out) else {
            return;
        };
        out.push(Output::broadcast(Message::Prepare(signed)));
        let slot = self.log.entry(seq).or_default();
        slot.prepares.entry(self.me).or_insert(signed);
        slot.own_prepare = Some(signed);
    }

    pub(crate) fn on_prepare(&mut self, m: Signed<Prepare>, out: &mut Vec<Output>) {
        let (view, seq, from) = (m.body.view, m.body.seq, m.from);
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
        if let Some(e) = self.evidence.observe(Statement::Prepare(m)) {
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
            .entry(from)
            .or_insert(m);
        self.check_prepared(seq, from, out);
    }

    /// Prepared: the pre-prepare and 2f PREPAREs for its digest from distinct backups
    /// (TOCS'02 §4.2). The certificate is persisted with the batch, then this replica
    /// COMMITs.
    fn check_prepared(&mut self, seq: Seq, completed_by: ValidatorId, out: &mut Vec<Output>) {
        let need = self.validators.quorum() - 1;
        let Some(slot) = self.log.get_mut(&seq) else {
            return;
        };
        let (Some(pp), false) = (&slot.pre_prepare, slot.prepared) else {
            return;
        };
        let digest = pp.body.digest;
        let Some(batch) = slot.batch(&digest).cloned() else {
            return;
        };
        let votes: Vec<_> = slot
            .prepares
            .values()
            .filter(|p| p.body.digest == digest)
            .take(need)
            .map(|p| (p.from, p.signature))
            .collect();
        if votes.len() < need {
            return;
        }
        let cert = PreparedCert {
            pre_prepare: *pp,
            prepares: votes,
        };
        slot.prepared = true;
        slot.prepared_cert = Some(cert.clone());
        out.push(Output::Event(Event::Prepared {
            view: self.view,
            seq,
            completed_by,
        }));
        if !self.may_sign() || !self.agrees_with_executed(seq, &digest) {
            return;
        }
        out.push(Output::persist(Record::Prepared(cert, batch)));
        let commit = Commit {
            view: self.view,
            seq,
            digest,
        };
        let Ok(signed) = self.safety.sign_commit(commit, out) else {
            return;
        };
        out.push(Output::broadcast(Message::Commit(signed)));
        let slot = self.log.get_mut(&seq).expect("slot exists");
        slot.commits.entry(self.me).or_insert(signed);
        slot.own_commit = Some(signed);
        self.check_committed(seq, self.me, out);
    }

    pub(crate) fn on_commit(&mut self, m: Signed<Commit>, out: &mut Vec<Output>) {
        let (view, seq, from) = (m.body.view, m.body.seq, m.from);
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
        if let Some(e) = self.evidence.observe(Statement::Commit(m)) {
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
        let Some(digest) = slot.digest() else {
            return;
        };
        let signatures: Vec<_> = slot
            .commits
            .values()
            .filter(|c| c.body.digest == digest)
            .take(quorum)
            .map(|c| (c.from, c.signature))
            .collect();
        if signatures.len() < quorum {
            return;
        }
        slot.committed = Some(CommitCertificate {
            view,
            seq,
            digest,
            signatures,
        });
        out.push(Output::Event(Event::CommittedLocal {
            view,
            seq,
            completed_by,
        }));
        self.emit_commits(out);
    }

    /// Emits `Commit` for every committed sequence number from `next_commit` on, in order:
    /// execution is strictly sequential, whatever order the quorums completed in. A commit
    /// whose batch is still being fetched waits for it. A replica whose state diverged
    /// executes nothing until it is repaired.
    pub(crate) fn emit_commits(&mut self, out: &mut Vec<Output>) {
        if self.diverged.is_some() {
            return;
        }
        while let Some(slot) = self.log.get(&self.next_commit) {
            let Some(certificate) = &slot.committed else {
                break;
            };
            let Some(batch) = slot.batch(&certificate.digest) else {
                break;
            };
            let current_request = !batch.is_null() && certificate.view == self.view;
            out.push(Output::Commit {
                seq: self.next_commit,
                batch: batch.clone(),
                certificate: certificate.clone(),
            });
            self.next_commit = self.next_commit.next();
            self.on_progress();
            if current_request && self.status == Status::Normal {
                // TOCS'02 §4.5.2: a request executed in the new view ends the backoff.
                self.backoff = 0;
            }
        }
    }

    /// Sends again what peers may have missed: the primary's pre-prepares, this replica's
    /// votes on uncommitted slots, its latest commits (for laggards) and checkpoint, its
    /// view change; and asks the driver again for validations and payloads it has not
    /// answered. Duplicates are harmless: every handler is idempotent.
    pub(crate) fn retransmit(&mut self, out: &mut Vec<Output>) {
        const RECENT_COMMITS: usize = 4;
        match self.status {
            super::Status::ViewChanging => {
                self.send_own_view_change(out);
                self.try_send_new_view(out);
            }
            super::Status::Normal => {
                let primary = self.is_primary();
                let mut recent = 0;
                let mut unvalidated = Vec::new();
                for (seq, slot) in self.log.iter().rev() {
                    let pre_prepare = || {
                        let pp = slot.pre_prepare?;
                        let batch = slot.batch(&pp.body.digest)?.clone();
                        Some(Output::broadcast(Message::PrePrepare(pp, batch)))
                    };
                    if slot.committed.is_some() {
                        if recent < RECENT_COMMITS {
                            if primary && let Some(o) = pre_prepare() {
                                out.push(o);
                            }
                            if let Some(c) = &slot.own_commit {
                                out.push(Output::broadcast(Message::Commit(*c)));
                            }
                            recent += 1;
                        }
                        continue;
                    }
                    if primary && let Some(o) = pre_prepare() {
                        out.push(o);
                    }
                    if slot.pre_prepare.is_some() && !slot.validated {
                        unvalidated.push(*seq);
                    }
                    if let Some(p) = &slot.own_prepare {
                        out.push(Output::broadcast(Message::Prepare(*p)));
                    }
                    if let Some(c) = &slot.own_commit {
                        out.push(Output::broadcast(Message::Commit(*c)));
                    }
                }
                for seq in unvalidated {
                    self.request_validation(seq, out);
                }
                // Committed slots whose batch is still missing.
                let missing: Vec<(Seq, Digest)> = self
                    .log
                    .range(self.next_commit..)
                    .filter_map(|(s, slot)| {
                        let c = slot.committed.as_ref()?;
                        slot.batch(&c.digest).is_none().then_some((*s, c.digest))
                    })
                    .collect();
                for (seq, digest) in missing {
                    let from = self.payload_holders(seq);
                    out.push(Output::FetchPayload { seq, digest, from });
                }
            }
        }
        self.retransmit_checkpoint(out);
    }
}
