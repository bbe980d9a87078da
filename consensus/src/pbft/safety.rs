//! Safety rules: the one place that decides whether this replica may sign a message.
//!
//! Every signature goes through here. The rules:
//! 1. For each `(kind, view, seq)` — PRE-PREPARE, PREPARE, COMMIT — sign at most one digest.
//! 2. For each checkpoint sequence number, sign at most one state root.
//! 3. For each view, sign at most one VIEW-CHANGE and at most one NEW-VIEW.
//! 4. Record the decision (`Output::Persist`) *before* returning the signature, so the
//!    record is durable before the message can leave (the driver's ordering rule) and a
//!    restarted replica, restored from its records, refuses what it refused before.
//! 5. Asked twice for the same thing, return the same signature and persist nothing new.
//!
//! Without rule 4 a replica that crashes after voting and restarts can vote again
//! differently — the bug of asonnino/hotstuff issue #15 that STYLE.md warns about.

use std::collections::{BTreeMap, HashMap};

use tally_crypto::Digest;

use super::messages::{
    Checkpoint, Commit, NewView, PrePrepare, Prepare, Signed, SignedBody, ViewChange,
    ViewChangeProofs,
};
use super::records::{Record, VoteType};
use crate::protocol::Output;
use crate::signer::Signer;
use crate::{Batch, Seq, ValidatorId, View};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("safety rules refuse to sign a conflicting {kind:?} for view {view:?} seq {seq:?}")]
pub struct SafetyViolation {
    pub kind: &'static str,
    pub view: View,
    pub seq: Seq,
}

pub struct SafetyRules {
    signer: Box<dyn Signer>,
    me: ValidatorId,
    votes: HashMap<(VoteType, View, Seq), Digest>,
    view_changes: BTreeMap<View, (Signed<ViewChange>, ViewChangeProofs)>,
    new_views: BTreeMap<View, Signed<NewView>>,
}

impl SafetyRules {
    pub fn new(signer: Box<dyn Signer>, me: ValidatorId) -> SafetyRules {
        SafetyRules {
            signer,
            me,
            votes: HashMap::new(),
            view_changes: BTreeMap::new(),
            new_views: BTreeMap::new(),
        }
    }

    /// Restores the rules' memory from persisted records.
    pub fn restore(&mut self, records: &[Record]) {
        for r in records {
            match r {
                Record::Vote {
                    kind,
                    view,
                    seq,
                    digest,
                } => {
                    self.votes.insert((*kind, *view, *seq), *digest);
                }
                Record::OwnPrePrepare(pp, _) => {
                    self.votes.insert(
                        (VoteType::PrePrepare, pp.body.view, pp.body.seq),
                        pp.body.digest,
                    );
                }
                Record::OwnViewChange(vc, proofs) => {
                    self.view_changes
                        .insert(vc.body.new_view, (vc.clone(), proofs.clone()));
                }
                Record::OwnNewView(nv) => {
                    self.new_views.insert(nv.body.view, nv.clone());
                }
                _ => {}
            }
        }
    }

    fn vote<T: SignedBody>(
        &mut self,
        kind: VoteType,
        view: View,
        seq: Seq,
        digest: Digest,
        body: T,
        out: &mut Vec<Output>,
    ) -> Result<Signed<T>, SafetyViolation> {
        match self.votes.get(&(kind, view, seq)) {
            Some(d) if *d != digest => {
                return Err(SafetyViolation {
                    kind: match kind {
                        VoteType::PrePrepare => "pre-prepare",
                        VoteType::Prepare => "prepare",
                        VoteType::Commit => "commit",
                        VoteType::Checkpoint => "checkpoint",
                    },
                    view,
                    seq,
                });
            }
            Some(_) => {}
            None => {
                self.votes.insert((kind, view, seq), digest);
                out.push(Output::persist(Record::Vote {
                    kind,
                    view,
                    seq,
                    digest,
                }));
            }
        }
        let signature = self.signer.sign(T::DOMAIN, &body.signing_bytes());
        Ok(Signed {
            from: self.me,
            body,
            signature,
        })
    }

    /// Signs a PRE-PREPARE for `batch`; the persisted record is the whole signed message with
    /// its batch (see [`Record::OwnPrePrepare`]).
    pub fn sign_pre_prepare(
        &mut self,
        pp: PrePrepare,
        batch: &Batch,
        out: &mut Vec<Output>,
    ) -> Result<Signed<PrePrepare>, SafetyViolation> {
        let (view, seq, digest) = (pp.view, pp.seq, pp.digest);
        debug_assert_eq!(digest, batch.digest());
        let fresh = !self.votes.contains_key(&(VoteType::PrePrepare, view, seq));
        let mut scratch = Vec::new();
        let signed = self.vote(VoteType::PrePrepare, view, seq, digest, pp, &mut scratch)?;
        if fresh {
            out.push(Output::persist(Record::OwnPrePrepare(
                signed,
                batch.clone(),
            )));
        }
        Ok(signed)
    }

    /// Signs a PRE-PREPARE the new primary re-issues in a NEW-VIEW's O (it may not hold the
    /// batch; the NEW-VIEW it persists is what it retransmits).
    pub fn sign_pre_prepare_digest(
        &mut self,
        pp: PrePrepare,
        out: &mut Vec<Output>,
    ) -> Result<Signed<PrePrepare>, SafetyViolation> {
        self.vote(VoteType::PrePrepare, pp.view, pp.seq, pp.digest, pp, out)
    }

    pub fn sign_prepare(
        &mut self,
        p: Prepare,
        out: &mut Vec<Output>,
    ) -> Result<Signed<Prepare>, SafetyViolation> {
        self.vote(VoteType::Prepare, p.view, p.seq, p.digest, p, out)
    }

    pub fn sign_commit(
        &mut self,
        c: Commit,
        out: &mut Vec<Output>,
    ) -> Result<Signed<Commit>, SafetyViolation> {
        self.vote(VoteType::Commit, c.view, c.seq, c.digest, c, out)
    }

    pub fn sign_checkpoint(
        &mut self,
        c: Checkpoint,
        out: &mut Vec<Output>,
    ) -> Result<Signed<Checkpoint>, SafetyViolation> {
        self.vote(VoteType::Checkpoint, View(0), c.seq, c.block_hash, c, out)
    }

    /// The digest this replica pre-prepared at `(view, seq)`, if any (the primary resumes
    /// from it after a restart).
    pub fn pre_prepared(&self, view: View, seq: Seq) -> Option<Digest> {
        self.votes.get(&(VoteType::PrePrepare, view, seq)).copied()
    }

    /// The highest sequence number this replica pre-prepared in `view`.
    pub fn last_pre_prepared(&self, view: View) -> Option<Seq> {
        self.votes
            .keys()
            .filter(|(k, v, _)| *k == VoteType::PrePrepare && *v == view)
            .map(|(_, _, s)| *s)
            .max()
    }

    /// This replica's VIEW-CHANGE for `view` and its proofs, if it already signed one.
    pub fn own_view_change(&self, view: View) -> Option<&(Signed<ViewChange>, ViewChangeProofs)> {
        self.view_changes.get(&view)
    }

    pub fn own_new_view(&self, view: View) -> Option<&Signed<NewView>> {
        self.new_views.get(&view)
    }

    /// The highest view this replica sent a VIEW-CHANGE for.
    pub fn highest_view_change(&self) -> Option<View> {
        self.view_changes.keys().next_back().copied()
    }

    pub fn sign_view_change(
        &mut self,
        vc: ViewChange,
        proofs: ViewChangeProofs,
        out: &mut Vec<Output>,
    ) -> Result<Signed<ViewChange>, SafetyViolation> {
        if let Some((existing, _)) = self.view_changes.get(&vc.new_view) {
            return if existing.body == vc {
                Ok(existing.clone())
            } else {
                Err(SafetyViolation {
                    kind: "view-change",
                    view: vc.new_view,
                    seq: Seq(0),
                })
            };
        }
        let signature = self.signer.sign(ViewChange::DOMAIN, &vc.signing_bytes());
        let signed = Signed {
            from: self.me,
            body: vc,
            signature,
        };
        self.view_changes
            .insert(signed.body.new_view, (signed.clone(), proofs.clone()));
        out.push(Output::persist(Record::OwnViewChange(
            signed.clone(),
            proofs,
        )));
        Ok(signed)
    }

    pub fn sign_new_view(
        &mut self,
        nv: NewView,
        out: &mut Vec<Output>,
    ) -> Result<Signed<NewView>, SafetyViolation> {
        if let Some(existing) = self.new_views.get(&nv.view) {
            return if existing.body == nv {
                Ok(existing.clone())
            } else {
                Err(SafetyViolation {
                    kind: "new-view",
                    view: nv.view,
                    seq: Seq(0),
                })
            };
        }
        let signature = self.signer.sign(NewView::DOMAIN, &nv.signing_bytes());
        let signed = Signed {
            from: self.me,
            body: nv,
            signature,
        };
        self.new_views.insert(signed.body.view, signed.clone());
        out.push(Output::persist(Record::OwnNewView(signed.clone())));
        Ok(signed)
    }

    /// Forgets votes for sequence numbers `≤ up_to` (below the stable checkpoint no vote can
    /// matter: those sequence numbers are decided and outside the window).
    pub fn prune_seqs(&mut self, up_to: Seq, out: &mut Vec<Output>) {
        self.votes.retain(|(_, _, s), _| *s > up_to);
        out.push(Output::persist(Record::PruneSeqs { up_to }));
    }

    /// Forgets votes, view changes and new views of views `< below` (this replica is in
    /// `below` and never signs in an earlier view again). Checkpoint votes belong to no view
    /// and stay until [`SafetyRules::prune_seqs`].
    pub fn prune_views(&mut self, below: View, out: &mut Vec<Output>) {
        self.votes
            .retain(|(kind, view, _), _| *kind == VoteType::Checkpoint || *view >= below);
        self.view_changes = self.view_changes.split_off(&below);
        self.new_views = self.new_views.split_off(&below);
        out.push(Output::persist(Record::PruneViews { below }));
    }

    /// Signed votes remembered (for the memory bound).
    pub fn len(&self) -> usize {
        self.votes.len() + self.view_changes.len() + self.new_views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
