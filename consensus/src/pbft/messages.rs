//! PBFT messages (Castro & Liskov, TOCS'02 §4), each signed by its sender with a
//! domain-separated ed25519 signature.
//!
//! Wire and signing encodings are borsh (fixed-width little-endian integers, `u32` length
//! prefixes, one tag byte per enum variant). PRE-PREPARE, PREPARE and COMMIT sign
//! `view ‖ seq ‖ digest` (48 bytes); CHECKPOINT signs `seq ‖ block_hash`; VIEW-CHANGE and
//! NEW-VIEW sign their whole body.
//!
//! **Digests, not payloads, in everything that is about ordering.** As in the paper, a
//! PRE-PREPARE signs `(v, n, d)` and carries the batch beside the signed part; prepared
//! certificates, VIEW-CHANGE and NEW-VIEW carry only digests and signatures. A replica that
//! lacks the batch of a digest the NEW-VIEW re-proposes fetches it from its peers
//! ([`crate::protocol::Output::FetchPayload`]) and checks it against the digest. So the size of
//! a view-change message depends on the validator count and the watermark window only, never
//! on batch sizes: see [`worst_case_view_change_bytes`] and [`worst_case_new_view_bytes`].
//!
//! **Claims signed, proofs beside.** A VIEW-CHANGE signs its *claims* — for each sequence
//! number, the view and digest it prepared — and travels with one prepared certificate per
//! claim, which the receiver checks. A NEW-VIEW carries the 2f+1 signed VIEW-CHANGE bodies
//! (claims only), the certificate of the highest stable checkpoint among them, O, and the
//! prepared certificate of each non-null entry of O: every entry that O takes from a claim is
//! proven; the claims it does not take cannot change O. That keeps a NEW-VIEW at
//! `(2f+1)·L` claims plus `L` certificates instead of `(2f+1)·L` certificates.

use std::collections::HashSet;

use borsh::{BorshDeserialize, BorshSerialize};
use tally_crypto::{CryptoError, Digest, Domain, Signature, SignatureCheck, Verifiable};

use crate::{Batch, Seq, ValidatorId, ValidatorSet, View, batch::BATCH_TXS_MAX};

pub const PRE_PREPARE_DOMAIN: Domain = Domain::new("tally/pbft/pre-prepare/v1");
pub const PREPARE_DOMAIN: Domain = Domain::new("tally/pbft/prepare/v1");
pub use crate::certificate::COMMIT_DOMAIN;
pub const CHECKPOINT_DOMAIN: Domain = Domain::new("tally/pbft/checkpoint/v2");
pub const VIEW_CHANGE_DOMAIN: Domain = Domain::new("tally/pbft/view-change/v2");
pub const NEW_VIEW_DOMAIN: Domain = Domain::new("tally/pbft/new-view/v2");

/// A validator's signature on a body that many validators sign alike (certificates store
/// the body once).
pub type SignatureOf = (ValidatorId, Signature);

/// A message body with its sender and signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signed<T> {
    pub from: ValidatorId,
    pub body: T,
    pub signature: Signature,
}

/// The primary assigns `seq` to the batch with digest `digest` in `view`. On the wire the
/// batch travels beside it ([`Message::PrePrepare`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct PrePrepare {
    pub view: View,
    pub seq: Seq,
    pub digest: Digest,
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

/// The sender's block at height `seq` hashes to `block_hash`. The block hash covers the
/// state root and, through `prev_hash`, every earlier block: a checkpoint certificate
/// certifies the whole chain up to `seq` (`docs/transactions.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Checkpoint {
    pub seq: Seq,
    pub block_hash: Digest,
}

/// A prepared certificate: the primary's PRE-PREPARE and 2f PREPAREs from distinct backups
/// for the same `(view, seq, digest)`, stored as `(validator, signature)` pairs over that one
/// PREPARE body (sorted by validator).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PreparedCert {
    pub pre_prepare: Signed<PrePrepare>,
    pub prepares: Vec<SignatureOf>,
}

impl PreparedCert {
    pub fn claim(&self) -> PreparedClaim {
        let pp = &self.pre_prepare.body;
        PreparedClaim {
            seq: pp.seq,
            view: pp.view,
            digest: pp.digest,
        }
    }

    /// The PREPAREs as the signed messages they were (for evidence).
    pub fn prepare_messages(&self) -> impl Iterator<Item = Signed<Prepare>> + '_ {
        let pp = self.pre_prepare.body;
        self.prepares.iter().map(move |(from, signature)| Signed {
            from: *from,
            body: Prepare {
                view: pp.view,
                seq: pp.seq,
                digest: pp.digest,
            },
            signature: *signature,
        })
    }
}

/// A stable checkpoint's proof: a quorum of distinct validators signing the same
/// `(seq, block_hash)`. Sequence number 0, the genesis, needs no signatures.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CheckpointCert {
    pub seq: Seq,
    pub block_hash: Digest,
    pub signatures: Vec<SignatureOf>,
}

impl CheckpointCert {
    /// The CHECKPOINT messages it is made of (for evidence).
    pub fn checkpoint_messages(&self) -> impl Iterator<Item = Signed<Checkpoint>> + '_ {
        self.signatures.iter().map(|(from, signature)| Signed {
            from: *from,
            body: Checkpoint {
                seq: self.seq,
                block_hash: self.block_hash,
            },
            signature: *signature,
        })
    }
}

/// "I prepared `digest` at `seq` in `view`" (the highest view in which the sender prepared
/// at `seq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct PreparedClaim {
    pub seq: Seq,
    pub view: View,
    pub digest: Digest,
}

/// VIEW-CHANGE(v+1, n, C, P), signed: the sender's stable checkpoint `(stable_seq,
/// stable_hash)` and P as claims, sorted by sequence number, each in `(stable_seq,
/// stable_seq + L]`. The proofs (C and one prepared certificate per claim) travel beside it
/// ([`Message::ViewChange`]).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewChange {
    pub new_view: View,
    pub stable_seq: Seq,
    pub stable_hash: Digest,
    pub prepared: Vec<PreparedClaim>,
}

/// A VIEW-CHANGE with its proofs: the checkpoint certificate of `stable_seq` and a prepared
/// certificate for each claim, in the claims' order.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewChangeProofs {
    pub stable: CheckpointCert,
    pub prepared: Vec<PreparedCert>,
}

/// NEW-VIEW(v, V, O), signed: 2f+1 VIEW-CHANGE bodies from distinct validators, the proof of
/// the highest stable checkpoint among them, O (the PRE-PREPAREs of the new view, one per
/// sequence number from that checkpoint to the highest claim), and for each entry of O that
/// is not the null batch, the prepared certificate of the claim it re-issues.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<Signed<ViewChange>>,
    pub stable: CheckpointCert,
    pub pre_prepares: Vec<Signed<PrePrepare>>,
    pub proofs: Vec<PreparedCert>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Message {
    /// The signed PRE-PREPARE and the batch whose digest it names.
    PrePrepare(Signed<PrePrepare>, Batch),
    Prepare(Signed<Prepare>),
    Commit(Signed<Commit>),
    Checkpoint(Signed<Checkpoint>),
    ViewChange(Signed<ViewChange>, ViewChangeProofs),
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
        vsd(self.view, self.seq, &self.digest)
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
        out.extend_from_slice(&self.block_hash.0);
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

pub(crate) fn check_of(
    v: &ValidatorSet,
    from: ValidatorId,
    domain: Domain,
    body: Vec<u8>,
    signature: Signature,
) -> Result<SignatureCheck, CryptoError> {
    let key = v.key(from).ok_or(CryptoError::UnknownSigner {
        signer: from.to_string(),
    })?;
    Ok(SignatureCheck {
        key: *key,
        domain,
        body,
        signature,
    })
}

impl<T: SignedBody> Signed<T> {
    fn push_check(
        &self,
        v: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        out.push(check_of(
            v,
            self.from,
            T::DOMAIN,
            self.body.signing_bytes(),
            self.signature,
        )?);
        Ok(())
    }
}

impl PreparedCert {
    fn push_checks(
        &self,
        v: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        self.pre_prepare.push_check(v, out)?;
        let pp = &self.pre_prepare.body;
        let body = Prepare {
            view: pp.view,
            seq: pp.seq,
            digest: pp.digest,
        }
        .signing_bytes();
        for (from, sig) in &self.prepares {
            out.push(check_of(v, *from, PREPARE_DOMAIN, body.clone(), *sig)?);
        }
        Ok(())
    }
}

impl CheckpointCert {
    fn push_checks(
        &self,
        v: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        let body = Checkpoint {
            seq: self.seq,
            block_hash: self.block_hash,
        }
        .signing_bytes();
        for (from, sig) in &self.signatures {
            out.push(check_of(v, *from, CHECKPOINT_DOMAIN, body.clone(), *sig)?);
        }
        Ok(())
    }
}

/// Every signature in the message, nested ones included (prepared and checkpoint
/// certificates, the view changes inside a NEW-VIEW).
impl Verifiable for Message {
    type Context = ValidatorSet;

    fn signature_checks(
        &self,
        v: &ValidatorSet,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        match self {
            Message::PrePrepare(m, _) => m.push_check(v, out),
            Message::Prepare(m) => m.push_check(v, out),
            Message::Commit(m) => m.push_check(v, out),
            Message::Checkpoint(m) => m.push_check(v, out),
            Message::ViewChange(m, proofs) => {
                m.push_check(v, out)?;
                proofs.stable.push_checks(v, out)?;
                for p in &proofs.prepared {
                    p.push_checks(v, out)?;
                }
                Ok(())
            }
            Message::NewView(m) => {
                m.push_check(v, out)?;
                for vc in &m.body.view_changes {
                    vc.push_check(v, out)?;
                }
                m.body.stable.push_checks(v, out)?;
                for pp in &m.body.pre_prepares {
                    pp.push_check(v, out)?;
                }
                for p in &m.body.proofs {
                    p.push_checks(v, out)?;
                }
                Ok(())
            }
        }
    }
}

impl Message {
    pub fn from(&self) -> ValidatorId {
        match self {
            Message::PrePrepare(m, _) => m.from,
            Message::Prepare(m) => m.from,
            Message::Commit(m) => m.from,
            Message::Checkpoint(m) => m.from,
            Message::ViewChange(m, _) => m.from,
            Message::NewView(m) => m.from,
        }
    }

    /// The view the message belongs to (a checkpoint belongs to none).
    pub fn view(&self) -> Option<View> {
        match self {
            Message::PrePrepare(m, _) => Some(m.body.view),
            Message::Prepare(m) => Some(m.body.view),
            Message::Commit(m) => Some(m.body.view),
            Message::Checkpoint(_) => None,
            Message::ViewChange(m, _) => Some(m.body.new_view),
            Message::NewView(m) => Some(m.body.view),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Message::PrePrepare(..) => "pre_prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(..) => "view_change",
            Message::NewView(_) => "new_view",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding to memory cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        borsh::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The encoded size in bytes, computed without encoding (for memory accounting).
    pub fn wire_size(&self) -> usize {
        1 + match self {
            Message::PrePrepare(_, b) => SIGNED_VOTE_BYTES + batch_bytes(b),
            Message::Prepare(_) | Message::Commit(_) => SIGNED_VOTE_BYTES,
            Message::Checkpoint(_) => SIGNED_CHECKPOINT_BYTES,
            Message::ViewChange(m, p) => view_change_bytes(&m.body) + proofs_bytes(p),
            Message::NewView(m) => new_view_bytes(&m.body),
        }
    }
}

/// `from u16 ‖ view u64 ‖ seq u64 ‖ digest 32 ‖ signature 64`.
pub const SIGNED_VOTE_BYTES: usize = 2 + 48 + 64;
/// `from u16 ‖ seq u64 ‖ block_hash 32 ‖ signature 64`.
pub const SIGNED_CHECKPOINT_BYTES: usize = 2 + 40 + 64;
const SIGNATURE_OF_BYTES: usize = 2 + 64;
const CLAIM_BYTES: usize = 48;

pub(crate) fn batch_bytes(b: &Batch) -> usize {
    4 + 32 * b.txs.len()
}

pub(crate) fn cert_bytes(p: &PreparedCert) -> usize {
    SIGNED_VOTE_BYTES + 4 + SIGNATURE_OF_BYTES * p.prepares.len()
}

pub(crate) fn checkpoint_cert_bytes(c: &CheckpointCert) -> usize {
    40 + 4 + SIGNATURE_OF_BYTES * c.signatures.len()
}

pub(crate) fn view_change_bytes(vc: &ViewChange) -> usize {
    2 + 64 + 8 + 40 + 4 + CLAIM_BYTES * vc.prepared.len()
}

pub(crate) fn proofs_bytes(p: &ViewChangeProofs) -> usize {
    checkpoint_cert_bytes(&p.stable) + 4 + p.prepared.iter().map(cert_bytes).sum::<usize>()
}

pub(crate) fn new_view_bytes(nv: &NewView) -> usize {
    2 + 64
        + 8
        + 4
        + nv.view_changes
            .iter()
            .map(|v| view_change_bytes(&v.body))
            .sum::<usize>()
        + checkpoint_cert_bytes(&nv.stable)
        + 4
        + SIGNED_VOTE_BYTES * nv.pre_prepares.len()
        + 4
        + nv.proofs.iter().map(cert_bytes).sum::<usize>()
}

/// The largest VIEW-CHANGE message (with its proofs) that `n` validators with watermark
/// window `window` can produce: `window` claims, each with a certificate of 2f prepares,
/// and a checkpoint certificate of n signatures.
pub fn worst_case_view_change_bytes(n: usize, window: u64) -> u64 {
    let f = (n.max(1) - 1) / 3;
    let quorum = (n + f + 1).div_ceil(2);
    let w = window;
    let claims = (2 + 64 + 8 + 40 + 4) as u64 + CLAIM_BYTES as u64 * w;
    let cert = (SIGNED_VOTE_BYTES + 4 + SIGNATURE_OF_BYTES * quorum.saturating_sub(1)) as u64;
    let checkpoint = (40 + 4 + SIGNATURE_OF_BYTES * n) as u64;
    1 + claims + checkpoint + 4 + w * cert
}

/// The largest NEW-VIEW `n` validators with watermark window `window` can produce:
/// 2f+1 view-change bodies of `window` claims each, one checkpoint certificate, `window`
/// PRE-PREPAREs and `window` prepared certificates.
pub fn worst_case_new_view_bytes(n: usize, window: u64) -> u64 {
    let f = (n.max(1) - 1) / 3;
    let quorum = (n + f + 1).div_ceil(2) as u64;
    let w = window;
    let vc_body = (2 + 64 + 8 + 40 + 4) as u64 + CLAIM_BYTES as u64 * w;
    let cert =
        (SIGNED_VOTE_BYTES + 4 + SIGNATURE_OF_BYTES * (quorum as usize).saturating_sub(1)) as u64;
    let checkpoint = (40 + 4 + SIGNATURE_OF_BYTES * n) as u64;
    1 + 2
        + 64
        + 8
        + 4
        + quorum * vc_body
        + checkpoint
        + 4
        + w * SIGNED_VOTE_BYTES as u64
        + 4
        + w * cert
}

/// A structural rule a validly signed message broke. The core checks these itself: a
/// `Verified` message only proves who signed it, not that it is well formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("pre-prepare not from the primary of its view")]
    NotPrimary,
    #[error("batch too large")]
    BatchTooLarge,
    #[error("the batch does not hash to the pre-prepare's digest")]
    PayloadMismatch,
    #[error("prepared certificate: prepares do not match the pre-prepare")]
    ProofMismatch,
    #[error("prepared certificate: fewer than 2f prepares from distinct backups")]
    ProofTooSmall,
    #[error("checkpoint certificate: not a quorum of distinct validators")]
    BadCheckpointProof,
    #[error("view change: a claim outside (stable, new view), or claims not in order")]
    BadPreparedEntry,
    #[error("view change: the proofs do not match the claims")]
    ClaimWithoutProof,
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
            StructureError::PayloadMismatch => "payload_mismatch",
            StructureError::ProofMismatch => "proof_mismatch",
            StructureError::ProofTooSmall => "proof_too_small",
            StructureError::BadCheckpointProof => "bad_checkpoint_proof",
            StructureError::BadPreparedEntry => "bad_prepared_entry",
            StructureError::ClaimWithoutProof => "claim_without_proof",
            StructureError::WrongViewChange => "wrong_view_change",
            StructureError::TooFewViewChanges => "too_few_view_changes",
            StructureError::BadNewViewPrePrepare => "bad_new_view_pre_prepare",
        }
    }
}

/// Checks the rules that need only the validator set. (The window, the current view and the
/// configured batch limit are the core's checks.)
pub fn check_structure(msg: &Message, v: &ValidatorSet) -> Result<(), StructureError> {
    match msg {
        Message::PrePrepare(m, batch) => {
            check_pre_prepare(m, v)?;
            if batch.txs.len() > BATCH_TXS_MAX {
                return Err(StructureError::BatchTooLarge);
            }
            if batch.digest() != m.body.digest {
                return Err(StructureError::PayloadMismatch);
            }
            Ok(())
        }
        Message::ViewChange(m, proofs) => {
            check_view_change(&m.body, v)?;
            check_view_change_proofs(&m.body, proofs, v)
        }
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
            check_checkpoint_cert(&nv.stable, v)?;
            for pp in &nv.pre_prepares {
                if pp.body.view != nv.view || pp.from != m.from {
                    return Err(StructureError::BadNewViewPrePrepare);
                }
            }
            for p in &nv.proofs {
                check_prepared_cert(p, v)?;
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
    Ok(())
}

/// A prepared certificate is the primary's pre-prepare plus 2f prepares from distinct
/// backups, all for the same `(view, seq, digest)` (TOCS'02 §4.2).
pub fn check_prepared_cert(p: &PreparedCert, v: &ValidatorSet) -> Result<(), StructureError> {
    check_pre_prepare(&p.pre_prepare, v)?;
    let mut backups = HashSet::new();
    for (from, _) in &p.prepares {
        if *from == p.pre_prepare.from || v.key(*from).is_none() {
            return Err(StructureError::ProofMismatch);
        }
        if !backups.insert(*from) {
            return Err(StructureError::ProofMismatch);
        }
    }
    if backups.len() < v.quorum() - 1 {
        return Err(StructureError::ProofTooSmall);
    }
    Ok(())
}

/// A checkpoint certificate: a quorum of distinct known validators, or nothing for the
/// genesis (sequence number 0).
pub fn check_checkpoint_cert(c: &CheckpointCert, v: &ValidatorSet) -> Result<(), StructureError> {
    if c.seq == Seq(0) {
        return if c.signatures.is_empty() {
            Ok(())
        } else {
            Err(StructureError::BadCheckpointProof)
        };
    }
    let mut signers = HashSet::new();
    for (from, _) in &c.signatures {
        if v.key(*from).is_none() || !signers.insert(*from) {
            return Err(StructureError::BadCheckpointProof);
        }
    }
    if signers.len() < v.quorum() {
        return Err(StructureError::BadCheckpointProof);
    }
    Ok(())
}

/// Claims strictly increasing, above the stable checkpoint, from views before the new one.
fn check_view_change(vc: &ViewChange, _v: &ValidatorSet) -> Result<(), StructureError> {
    let mut last = vc.stable_seq;
    for c in &vc.prepared {
        if c.seq <= last || c.view >= vc.new_view {
            return Err(StructureError::BadPreparedEntry);
        }
        last = c.seq;
    }
    Ok(())
}

/// The proofs beside a VIEW-CHANGE: the certificate of its stable checkpoint and one prepared
/// certificate per claim, matching it exactly.
fn check_view_change_proofs(
    vc: &ViewChange,
    proofs: &ViewChangeProofs,
    v: &ValidatorSet,
) -> Result<(), StructureError> {
    if proofs.stable.seq != vc.stable_seq || proofs.stable.block_hash != vc.stable_hash {
        return Err(StructureError::BadCheckpointProof);
    }
    check_checkpoint_cert(&proofs.stable, v)?;
    if proofs.prepared.len() != vc.prepared.len() {
        return Err(StructureError::ClaimWithoutProof);
    }
    for (claim, cert) in vc.prepared.iter().zip(&proofs.prepared) {
        if cert.claim() != *claim {
            return Err(StructureError::ClaimWithoutProof);
        }
        check_prepared_cert(cert, v)?;
    }
    Ok(())
}
