//! Equivocation evidence: two validly signed, conflicting statements from one validator —
//! two PRE-PREPAREs, PREPAREs or COMMITs for one `(view, seq)` with different digests, two
//! CHECKPOINTs for one sequence number with different block hashes, or two VIEW-CHANGEs for
//! one view with different contents. Anyone holding the genesis validator keys can check a
//! piece of evidence ([`Evidence::verify`]); it names the validator beyond doubt, since the
//! safety rules of an honest one never sign both.
//!
//! The tracker sees every statement the core examines: live messages inside the watermark
//! window, and the pre-prepares, prepares and checkpoints nested in VIEW-CHANGE proofs and
//! NEW-VIEWs. Its memory is bounded: per `(kind, seq, validator)` it keeps the statements
//! of the [`VIEWS_KEPT`] highest views, sequence numbers at or below the stable checkpoint
//! are forgotten, and per validator only the [`VIEWS_KEPT`] latest VIEW-CHANGEs are kept.

use std::collections::{BTreeMap, HashMap};

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::{ChainId, CryptoError, Digest, Domain, SignatureCheck, Verifiable};

use super::messages::{
    Checkpoint, Commit, PrePrepare, Prepare, SIGNED_CHECKPOINT_BYTES, SIGNED_VOTE_BYTES, Signed,
    SignedBody, ViewChange, view_change_bytes,
};
use crate::{Seq, ValidatorId, ValidatorSet, View};

/// Views remembered per `(kind, seq, validator)`, and VIEW-CHANGEs per validator.
pub const VIEWS_KEPT: usize = 4;

/// One signed statement of a validator.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Statement {
    PrePrepare(Signed<PrePrepare>),
    Prepare(Signed<Prepare>),
    Commit(Signed<Commit>),
    Checkpoint(Signed<Checkpoint>),
    ViewChange(Signed<ViewChange>),
}

/// The kinds of statement, in the order of [`Statement`]'s variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementKind {
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::PrePrepare => "pre_prepare",
            StatementKind::Prepare => "prepare",
            StatementKind::Commit => "commit",
            StatementKind::Checkpoint => "checkpoint",
            StatementKind::ViewChange => "view_change",
        }
    }
}

impl Statement {
    pub fn from(&self) -> ValidatorId {
        match self {
            Statement::PrePrepare(m) => m.from,
            Statement::Prepare(m) => m.from,
            Statement::Commit(m) => m.from,
            Statement::Checkpoint(m) => m.from,
            Statement::ViewChange(m) => m.from,
        }
    }

    pub fn kind(&self) -> StatementKind {
        match self {
            Statement::PrePrepare(_) => StatementKind::PrePrepare,
            Statement::Prepare(_) => StatementKind::Prepare,
            Statement::Commit(_) => StatementKind::Commit,
            Statement::Checkpoint(_) => StatementKind::Checkpoint,
            Statement::ViewChange(_) => StatementKind::ViewChange,
        }
    }

    /// Where a validator may make only one statement of this kind: `(view, seq)`; a
    /// checkpoint has no view (0), a view change no sequence number (0).
    pub fn slot(&self) -> (View, Seq) {
        match self {
            Statement::PrePrepare(m) => (m.body.view, m.body.seq),
            Statement::Prepare(m) => (m.body.view, m.body.seq),
            Statement::Commit(m) => (m.body.view, m.body.seq),
            Statement::Checkpoint(m) => (View(0), m.body.seq),
            Statement::ViewChange(m) => (m.body.new_view, Seq(0)),
        }
    }

    /// The domain the statement is signed under.
    pub fn domain(&self) -> Domain {
        match self {
            Statement::PrePrepare(_) => PrePrepare::DOMAIN,
            Statement::Prepare(_) => Prepare::DOMAIN,
            Statement::Commit(_) => Commit::DOMAIN,
            Statement::Checkpoint(_) => Checkpoint::DOMAIN,
            Statement::ViewChange(_) => ViewChange::DOMAIN,
        }
    }

    /// The exact bytes the validator signed (after the domain and chain id).
    pub fn signing_bytes(&self) -> Vec<u8> {
        match self {
            Statement::PrePrepare(m) => m.body.signing_bytes(),
            Statement::Prepare(m) => m.body.signing_bytes(),
            Statement::Commit(m) => m.body.signing_bytes(),
            Statement::Checkpoint(m) => m.body.signing_bytes(),
            Statement::ViewChange(m) => m.body.signing_bytes(),
        }
    }

    pub fn signature(&self) -> tally_crypto::Signature {
        match self {
            Statement::PrePrepare(m) => m.signature,
            Statement::Prepare(m) => m.signature,
            Statement::Commit(m) => m.signature,
            Statement::Checkpoint(m) => m.signature,
            Statement::ViewChange(m) => m.signature,
        }
    }

    /// What the statement says at its slot: the digest voted for, the block hash
    /// checkpointed, or (for a view change) the hash of its signed bytes.
    pub fn content(&self) -> Digest {
        match self {
            Statement::PrePrepare(m) => m.body.digest,
            Statement::Prepare(m) => m.body.digest,
            Statement::Commit(m) => m.body.digest,
            Statement::Checkpoint(m) => m.body.block_hash,
            Statement::ViewChange(m) => Digest::of(&m.body.signing_bytes()),
        }
    }

    fn size(&self) -> usize {
        match self {
            Statement::Checkpoint(_) => SIGNED_CHECKPOINT_BYTES,
            Statement::ViewChange(m) => view_change_bytes(&m.body),
            _ => SIGNED_VOTE_BYTES,
        }
    }
}

/// Proof that one validator made two conflicting statements.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Evidence {
    pub first: Statement,
    pub second: Statement,
}

/// Why a piece of evidence does not prove an equivocation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("the two statements are of different kinds or validators")]
    Mismatched,
    #[error("the two statements are for different slots (view, sequence number)")]
    DifferentSlots,
    #[error("the two statements say the same thing")]
    NoConflict,
    #[error("a signature does not verify against the validator's genesis key: {0}")]
    Signature(#[from] CryptoError),
    #[error("evidence is malformed: {0}")]
    Malformed(String),
}

impl Evidence {
    pub fn validator(&self) -> ValidatorId {
        self.first.from()
    }

    pub fn kind(&self) -> &'static str {
        self.first.kind().as_str()
    }

    /// Checks that the two statements are by one validator, of one kind, for one slot, say
    /// different things, and are both validly signed by that validator's genesis key for
    /// `chain_id`.
    pub fn verify(
        &self,
        validators: &ValidatorSet,
        chain_id: &ChainId,
    ) -> Result<(), EvidenceError> {
        self.check_conflict()?;
        tally_crypto::verify(validators, chain_id, self.clone())?;
        Ok(())
    }

    fn check_conflict(&self) -> Result<(), EvidenceError> {
        let (a, b) = (&self.first, &self.second);
        if a.kind() != b.kind() || a.from() != b.from() {
            return Err(EvidenceError::Mismatched);
        }
        if a.slot() != b.slot() {
            return Err(EvidenceError::DifferentSlots);
        }
        if a.content() == b.content() {
            return Err(EvidenceError::NoConflict);
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding to memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Evidence, EvidenceError> {
        borsh::from_slice(bytes).map_err(|e| EvidenceError::Malformed(e.to_string()))
    }
}

impl Verifiable for Evidence {
    type Context = ValidatorSet;

    fn signature_checks(
        &self,
        v: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        for s in [&self.first, &self.second] {
            out.push(super::messages::check_of(
                v,
                s.from(),
                s.domain(),
                s.signing_bytes(),
                s.signature(),
            )?);
        }
        Ok(())
    }
}

type Key = (StatementKind, Seq, ValidatorId);

/// A statement kept, and whether a conflict with it was already reported.
struct Kept {
    view: View,
    statement: Statement,
    reported: bool,
}

/// First-seen statements, bounded as the module documentation says.
#[derive(Default)]
pub struct EvidenceTracker {
    /// Per key, up to [`VIEWS_KEPT`] statements, ascending by view.
    seen: HashMap<Key, Vec<Kept>>,
    /// Per validator, its latest VIEW-CHANGEs by view.
    view_changes: HashMap<ValidatorId, BTreeMap<View, Kept>>,
    bytes: usize,
}

impl EvidenceTracker {
    /// Records a validly signed statement; returns evidence when it conflicts with one seen
    /// before from the same validator (reported once per slot and validator).
    pub fn observe(&mut self, s: Statement) -> Option<Evidence> {
        let (view, seq) = s.slot();
        let from = s.from();
        let size = s.size();
        let kept: &mut Kept = if matches!(s, Statement::ViewChange(_)) {
            let by_view = self.view_changes.entry(from).or_default();
            if !by_view.contains_key(&view) {
                if by_view.len() >= VIEWS_KEPT
                    && by_view.first_key_value().is_some_and(|(v, _)| *v > view)
                {
                    return None;
                }
                self.bytes += size;
                by_view.insert(
                    view,
                    Kept {
                        view,
                        statement: s,
                        reported: false,
                    },
                );
                while by_view.len() > VIEWS_KEPT {
                    if let Some((_, old)) = by_view.pop_first() {
                        self.bytes -= old.statement.size();
                    }
                }
                return None;
            }
            by_view.get_mut(&view).expect("present")
        } else {
            let entries = self.seen.entry((s.kind(), seq, from)).or_default();
            match entries.iter().position(|k| k.view == view) {
                Some(i) => &mut entries[i],
                None => {
                    if entries.len() >= VIEWS_KEPT && entries[0].view > view {
                        // Older than every view kept: nothing to compare it with.
                        return None;
                    }
                    self.bytes += size;
                    let at = entries.partition_point(|k| k.view < view);
                    entries.insert(
                        at,
                        Kept {
                            view,
                            statement: s,
                            reported: false,
                        },
                    );
                    if entries.len() > VIEWS_KEPT {
                        let old = entries.remove(0);
                        self.bytes -= old.statement.size();
                    }
                    return None;
                }
            }
        };
        if kept.reported || kept.statement.content() == s.content() {
            return None;
        }
        kept.reported = true;
        Some(Evidence {
            first: kept.statement.clone(),
            second: s,
        })
    }

    /// Forgets everything at or below the stable checkpoint.
    pub fn prune(&mut self, up_to: Seq) {
        let mut freed = 0;
        self.seen.retain(|(_, s, _), entries| {
            let keep = *s > up_to;
            if !keep {
                freed += entries.iter().map(|k| k.statement.size()).sum::<usize>();
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Forgets view-change statements of views `< below`.
    pub fn prune_view_changes(&mut self, below: View) {
        for by_view in self.view_changes.values_mut() {
            while by_view.first_key_value().is_some_and(|(v, _)| *v < below) {
                if let Some((_, old)) = by_view.pop_first() {
                    self.bytes -= old.statement.size();
                }
            }
        }
        self.view_changes.retain(|_, k| !k.is_empty());
    }

    /// `(statements kept, their bytes)`.
    pub fn footprint(&self) -> (usize, usize) {
        let statements = self.seen.values().map(Vec::len).sum::<usize>()
            + self.view_changes.values().map(BTreeMap::len).sum::<usize>();
        (statements, self.bytes)
    }
}
