//! PBFT messages (Castro & Liskov, TOCS'02 §4), each signed by its sender with a
//! domain-separated ed25519 signature.
//!
//! Wire and signing encodings are borsh (fixed-width little-endian integers, `u32` length
//! prefixes, one tag byte per enum variant). PRE-PREPARE, PREPARE and COMMIT sign
//! `view ‖ seq ‖ digest` (48 bytes); CHECKPOINT signs `seq ‖ state_root`; VIEW-CHANGE and
//! NEW-VIEW sign their whole body.

use std::collections::HashSet;

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::{CryptoError, Digest, Domain, Signature, SignatureCheck, Verifiable};

use crate::{Batch, Seq, ValidatorId, ValidatorSet, View, batch::BATCH_TXS_MAX};

pub const PRE_PREPARE_DOMAIN: Domain = Domain::new("tally/pbft/pre-prepare/v1");
pub const PREPARE_DOMAIN: Domain = Domain::new("tally/pbft/prepare/v1");
pub use crate::certificate::COMMIT_DOMAIN;
pub const CHECKPOINT_DOMAIN: Domain = Domain::new("tally/pbft/checkpoint/v1");
pub const VIEW_CHANGE_DOMAIN: Domain = Domain::new("tally/pbft/view-change/v1");
pub const NEW_VIEW_DOMAIN: Domain = Domain::new("tally/pbft/new-view/v1");

/// A message body with its sender and signature.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signed<T> {
    pub from: ValidatorId,
    pub body: T,
    pub signature: Signature,
}

/// The primary assigns `seq` to `batch` in `view`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PrePrepare {
    pub view: View,
    pub seq: Seq,
    pub batch: Batch,
}

/// A backup accepted the pre-prepare of `digest` at `(view, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Prepare {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

/// The sender has a prepared certificate for `digest` at `(view, seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Commit {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
}

/// The sender's state after executing `seq` has root `state_root`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Checkpoint {
    pub seq: Seq,
    pub state_root: Digest,
}

/// A prepared certificate: the primary's PRE-PREPARE and 2f matching PREPAREs from distinct
/// backups.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PreparedProof {
    pub pre_prepare: Signed<PrePrepare>,
    pub prepares: Vec<Signed<Prepare>>,
}

/// VIEW-CHANGE(v+1, n, C, P): `stable_seq` with its proof C (2f+1 CHECKPOINTs), and P, a
/// prepared certificate for every sequence number above it that prepared at the sender.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewChange {
    pub new_view: View,
    pub stable_seq: Seq,
    pub checkpoint_proof: Vec<Signed<Checkpoint>>,
    pub prepared: Vec<PreparedProof>,
}

/// NEW-VIEW(v, V, O): 2f+1 VIEW-CHANGEs and the PRE-PREPAREs recomputed from them.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Message {
    PrePrepare(Signed<PrePrepare>),
    Prepare(Signed<Prepare>),
    Commit(Signed<Commit>),
    Checkpoint(Signed<Checkpoint>),
    ViewChange(Signed<ViewChange>),
    NewView(Signed<NewView>),
}

/// What a body signs, and under which domain.
pub trait SignedBody {
    const DOMAIN: Domain;
    fn signing_bytes(&self) -> Vec<u8>;
}

fn vsd(view: View, seq: Seq, digest: &Digest) -> Vec<u8> {
    crate::certificate::commit_body(view, seq, digest)
}

impl SignedBody for PrePrepare {
    const DOMAIN: Domain = PRE_PREPARE_DOMAIN;
    fn signing_bytes(&self) -> Vec<u8> {
        vsd(self.view, self.seq, &self.batch.digest())
    }
}

impl SignedBody for Prepare {
    const DOMAIN: Domain = PREPARE_DOMAIN;
    fn signing_bytes(&self) -> Vec<u8> {
        vsd(self.view, self.seq, &self.digest)
    }
}

impl SignedBody for Commit {
    const DOMAIN: Domain = COMMIT_DOMAIN;
    fn signing_bytes(&self) -> Vec<u8> {
        vsd(self.view, self.seq, &self.digest)
    }
}

impl SignedBody for Checkpoint {
    const DOMAIN: Domain = CHECKPOINT_DOMAIN;
    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = self.seq.0.to_le_bytes().to_vec();
        out.extend_from_slice(&self.state_root.0);
        out
    }
}

impl SignedBody for ViewChange {
    const DOMAIN: Domain = VIEW_CHANGE_DOMAIN;
    fn signing_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding to memory cannot fail")
    }
}

impl SignedBody for NewView {
    const DOMAIN: Domain = NEW_VIEW_DOMAIN;
    fn signing_bytes(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding to memory cannot fail")
    }
}

impl<T: SignedBody> Signed<T> {
    fn push_check(
        &self,
        validators: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        let key = validators
            .key(self.from)
            .ok_or(CryptoError::UnknownSigner {
                signer: self.from.to_string(),
            })?;
        out.push(SignatureCheck {
            key: *key,
            domain: T::DOMAIN,
            body: self.body.signing_bytes(),
            signature: self.signature,
        });
        Ok(())
    }
}

/// Every signature in the message, nested ones included (prepared proofs, checkpoint proofs,
/// the view changes inside a NEW-VIEW).
impl Verifiable for Message {
    type Context = ValidatorSet;

    fn signature_checks(
        &self,
        v: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        match self {
            Message::PrePrepare(m) => m.push_check(v, out),
            Message::Prepare(m) => m.push_check(v, out),
            Message::Commit(m) => m.push_check(v, out),
            Message::Checkpoint(m) => m.push_check(v, out),
            Message::ViewChange(m) => view_change_checks(m, v, out),
            Message::NewView(m) => {
                m.push_check(v, out)?;
                for vc in &m.body.view_changes {
                    view_change_checks(vc, v, out)?;
                }
                for pp in &m.body.pre_prepares {
                    pp.push_check(v, out)?;
                }
                Ok(())
            }
        }
    }
}

fn view_change_checks(
    m: &Signed<ViewChange>,
    v: &ValidatorSet,
    out: &mut Vec<SignatureCheck>,
) -> Result<(), CryptoError> {
    m.push_check(v, out)?;
    for c in &m.body.checkpoint_proof {
        c.push_check(v, out)?;
    }
    for p in &m.body.prepared {
        p.pre_prepare.push_check(v, out)?;
        for pr in &p.prepares {
            pr.push_check(v, out)?;
        }
    }
    Ok(())
}

impl Message {
    pub fn from(&self) -> ValidatorId {
        match self {
            Message::PrePrepare(m) => m.from,
            Message::Prepare(m) => m.from,
            Message::Commit(m) => m.from,
            Message::Checkpoint(m) => m.from,
            Message::ViewChange(m) => m.from,
            Message::NewView(m) => m.from,
        }
    }

    /// The view the message belongs to (a checkpoint belongs to none).
    pub fn view(&self) -> Option<View> {
        match self {
            Message::PrePrepare(m) => Some(m.body.view),
            Message::Prepare(m) => Some(m.body.view),
            Message::Commit(m) => Some(m.body.view),
            Message::Checkpoint(_) => None,
            Message::ViewChange(m) => Some(m.body.new_view),
            Message::NewView(m) => Some(m.body.view),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Message::PrePrepare(_) => "pre_prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view_change",
            Message::NewView(_) => "new_view",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding to memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        borsh::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A structural rule a validly signed message broke. The core checks these itself: a
/// `Verified` message only proves who signed it, not that it is well formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("pre-prepare not from the primary of its view")]
    NotPrimary,
    #[error("batch too large")]
    BatchTooLarge,
    #[error("prepared proof: prepares do not match the pre-prepare")]
    ProofMismatch,
    #[error("prepared proof: fewer than 2f prepares from distinct backups")]
    ProofTooSmall,
    #[error("checkpoint proof: not a quorum of matching checkpoints")]
    BadCheckpointProof,
    #[error("view change: prepared entry outside (stable, new view)")]
    BadPreparedEntry,
    #[error("view change: two prepared entries for one sequence number")]
    DuplicatePreparedEntry,
    #[error("new view: view changes for another view")]
    WrongViewChange,
    #[error("new view: fewer than 2f + 1 view changes from distinct validators")]
    TooFewViewChanges,
    #[error("new view: a pre-prepare not from the new primary or for another view")]
    BadNewViewPrePrepare,
}

impl StructureError {
    pub fn as_str(self) -> &'static str {
        match self {
            StructureError::NotPrimary => "not_primary",
            StructureError::BatchTooLarge => "batch_too_large",
            StructureError::ProofMismatch => "proof_mismatch",
            StructureError::ProofTooSmall => "proof_too_small",
            StructureError::BadCheckpointProof => "bad_checkpoint_proof",
            StructureError::BadPreparedEntry => "bad_prepared_entry",
            StructureError::DuplicatePreparedEntry => "duplicate_prepared_entry",
            StructureError::WrongViewChange => "wrong_view_change",
            StructureError::TooFewViewChanges => "too_few_view_changes",
            StructureError::BadNewViewPrePrepare => "bad_new_view_pre_prepare",
        }
    }
}

/// Checks the rules that need only the validator set.
pub fn check_structure(msg: &Message, v: &ValidatorSet) -> Result<(), StructureError> {
    match msg {
        Message::PrePrepare(m) => check_pre_prepare(m, v),
        Message::ViewChange(m) => check_view_change(&m.body, v),
        Message::NewView(m) => {
            let nv = &m.body;
            if m.from != v.primary(nv.view) {
                return Err(StructureError::NotPrimary);
            }
            let mut senders = HashSet::new();
            for vc in &nv.view_changes {
                if vc.body.new_view != nv.view {
                    return Err(StructureError::WrongViewChange);
                }
                check_view_change(&vc.body, v)?;
                senders.insert(vc.from);
            }
            if senders.len() < v.quorum() || senders.len() != nv.view_changes.len() {
                return Err(StructureError::TooFewViewChanges);
            }
            for pp in &nv.pre_prepares {
                if pp.body.view != nv.view || pp.from != m.from {
                    return Err(StructureError::BadNewViewPrePrepare);
                }
                if pp.body.batch.txs.len() > BATCH_TXS_MAX {
                    return Err(StructureError::BatchTooLarge);
                }
            }
            Ok(())
        }
        Message::Prepare(_) | Message::Commit(_) | Message::Checkpoint(_) => Ok(()),
    }
}

fn check_pre_prepare(m: &Signed<PrePrepare>, v: &ValidatorSet) -> Result<(), StructureError> {
    if m.from != v.primary(m.body.view) {
        return Err(StructureError::NotPrimary);
    }
    if m.body.batch.txs.len() > BATCH_TXS_MAX {
        return Err(StructureError::BatchTooLarge);
    }
    Ok(())
}

/// A prepared certificate is the primary's pre-prepare plus 2f prepares from distinct
/// backups, all for the same `(view, seq, digest)` (TOCS'02 §4.2).
pub fn check_prepared_proof(p: &PreparedProof, v: &ValidatorSet) -> Result<(), StructureError> {
    check_pre_prepare(&p.pre_prepare, v)?;
    let pp = &p.pre_prepare.body;
    let digest = pp.batch.digest();
    let mut backups = HashSet::new();
    for pr in &p.prepares {
        if pr.body.view != pp.view || pr.body.seq != pp.seq || pr.body.digest != digest {
            return Err(StructureError::ProofMismatch);
        }
        if pr.from == p.pre_prepare.from {
            return Err(StructureError::ProofMismatch);
        }
        backups.insert(pr.from);
    }
    if backups.len() < v.quorum() - 1 {
        return Err(StructureError::ProofTooSmall);
    }
    Ok(())
}

/// A checkpoint proof: a quorum of distinct validators signing the same `(seq, root)`.
/// Sequence 0 (the genesis state) needs no proof.
pub fn check_checkpoint_proof(
    seq: Seq,
    proof: &[Signed<Checkpoint>],
    v: &ValidatorSet,
) -> Result<Option<Digest>, StructureError> {
    if seq == Seq(0) {
        return if proof.is_empty() {
            Ok(None)
        } else {
            Err(StructureError::BadCheckpointProof)
        };
    }
    let root = proof
        .first()
        .ok_or(StructureError::BadCheckpointProof)?
        .body
        .state_root;
    let mut signers = HashSet::new();
    for c in proof {
        if c.body.seq != seq || c.body.state_root != root {
            return Err(StructureError::BadCheckpointProof);
        }
        signers.insert(c.from);
    }
    if signers.len() < v.quorum() {
        return Err(StructureError::BadCheckpointProof);
    }
    Ok(Some(root))
}

fn check_view_change(vc: &ViewChange, v: &ValidatorSet) -> Result<(), StructureError> {
    check_checkpoint_proof(vc.stable_seq, &vc.checkpoint_proof, v)?;
    let mut seqs = HashSet::new();
    for p in &vc.prepared {
        let pp = &p.pre_prepare.body;
        if pp.seq <= vc.stable_seq || pp.view >= vc.new_view {
            return Err(StructureError::BadPreparedEntry);
        }
        if !seqs.insert(pp.seq) {
            return Err(StructureError::DuplicatePreparedEntry);
        }
        check_prepared_proof(p, v)?;
    }
    Ok(())
}
