//! Verification: one rule, single or batched, and the [`Verified`] wrapper.

use std::ops::Deref;

use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use curve25519_dalek::{EdwardsPoint, Scalar, constants::ED25519_BASEPOINT_POINT};
use sha2::{Digest as _, Sha512};

use crate::keys::strict_point;
use crate::{ChainId, CryptoError, Domain, Signature, ValidKey, signing_message};

/// One signature to check: `signature` by `key` over `signing_message(domain, chain, body)`.
#[derive(Clone, Debug)]
pub struct SignatureCheck {
    pub key: ValidKey,
    pub domain: Domain,
    pub body: Vec<u8>,
    pub signature: Signature,
}

/// Something that carries signatures: a transaction, a consensus message, a certificate.
pub trait Verifiable {
    /// What resolves signers to keys (a validator set; `()` when the item names its key).
    type Context: ?Sized;

    /// Pushes every signature `self` carries. An item whose signers cannot be resolved, or
    /// that is malformed in a way that makes its signatures meaningless, returns an error.
    fn signature_checks(
        &self,
        context: &Self::Context,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError>;
}

/// A value all of whose signatures were checked. Only [`verify`] and [`verify_batch`] build
/// one, and [`Verified::vouched`] from another verified value that covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn into_inner(self) -> T {
        self.0
    }

    /// A value whose signatures others checked: `by` is a verified statement of signers
    /// that say so (a batch proof: f + 1 validators attest that every transaction of the
    /// batch is validly signed). The caller must have checked that `by` covers `value` — the
    /// value hashes into what `by` signs — which is why this takes the statement itself and
    /// is the only other constructor.
    pub fn vouched<A>(value: T, by: &Verified<A>) -> Verified<T> {
        let _ = by;
        Verified(value)
    }

    /// A value a trusted peer already checked: only for crash-fault networks (Raft), where
    /// validators do not lie and a transaction's signature is checked once, by the validator
    /// that admitted it. Never for a Byzantine-fault (PBFT) network.
    pub fn checked_by_peer(value: T) -> Verified<T> {
        Verified(value)
    }

    /// Maps the verified value to a part of it. Only for projections (`|m| m.field`): the
    /// result is as trustworthy as the part of `T` it came from.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Verified<U> {
        Verified(f(self.0))
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A signature whose encodings passed rules 1–3, ready for the equation.
struct Prepared {
    r_bytes: [u8; 32],
    a_bytes: [u8; 32],
    r: EdwardsPoint,
    a: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Rules 2 and 3 and the challenge `k`. Rule 1 holds because `key` is a [`ValidKey`].
fn prepare(key: &ValidKey, message: &[u8], signature: &Signature) -> Result<Prepared, CryptoError> {
    let r_bytes = signature.r_bytes();
    let r = strict_point(&r_bytes).ok_or(CryptoError::InvalidSignature)?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(signature.s_bytes()))
        .ok_or(CryptoError::InvalidSignature)?;
    let a_bytes = key.public_key().0;
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(a_bytes);
    h.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    Ok(Prepared {
        r_bytes,
        a_bytes,
        r,
        a: *key.point(),
        s,
        k,
    })
}

fn prepare_check(chain_id: &ChainId, check: &SignatureCheck) -> Result<Prepared, CryptoError> {
    let message = signing_message(check.domain, chain_id, &check.body);
    prepare(&check.key, &message, &check.signature)
}

/// Rule 4 for one signature.
fn equation_holds(p: &Prepared) -> bool {
    // [k](−A) + [S]B − R
    let rhs = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &-p.a, &p.s);
    (rhs - p.r).mul_by_cofactor().is_identity()
}

/// The validity rule, for one signature. A signature `R ‖ S` by key `A` over message `M`
/// (`M` = [`signing_message`]) is valid exactly when:
/// 1. `A` is a canonical encoding of a point that is not of small order;
/// 2. `R` is a canonical encoding of a point that is not of small order;
/// 3. `S` is canonical: `S < ℓ`;
/// 4. `[8]([S]B − R − [k]A) = 0` with `k = SHA-512(R ‖ A ‖ M) mod ℓ` (the cofactored
///    equation).
///
/// Why this rule (see `docs/transactions.md`, "Signature validity"): 1–3 are the encoding
/// checks of ed25519-dalek's `verify_strict`, which make signatures non-malleable (nobody
/// but the signer can turn one valid signature into another) and keys binding. The cofactored
/// equation 4 is the one a batch can check exactly: the cofactorless equation of
/// `verify_strict` lets a batch accept, with probability up to 1/2, a signature whose `R`
/// carries a torsion component, so nodes batching differently would disagree. With 4,
/// [`verify_one`] and [`verify_batch`] accept the same signatures (up to 2^-128). Every
/// honestly made signature satisfies both equations; they differ only on signatures a
/// signer crafts on purpose with torsion points (vector 4 of Chalkias et al., "Taming the
/// many EdDSAs", 2020).
pub fn verify_one(chain_id: &ChainId, check: &SignatureCheck) -> Result<(), CryptoError> {
    let p = prepare_check(chain_id, check)?;
    if equation_holds(&p) {
        Ok(())
    } else {
        Err(CryptoError::InvalidSignature)
    }
}

/// Verifies every signature `item` carries.
pub fn verify<T: Verifiable>(
    context: &T::Context,
    chain_id: &ChainId,
    item: T,
) -> Result<Verified<T>, CryptoError> {
    let mut checks = Vec::new();
    item.signature_checks(context, &mut checks)?;
    for check in &checks {
        verify_one(chain_id, check)?;
    }
    Ok(Verified(item))
}

/// Remembers signatures already found valid, so a signature relayed inside another message
/// (a VIEW-CHANGE inside a NEW-VIEW, the COMMITs inside a certificate) is checked once.
pub trait SignatureCache {
    fn contains(&self, key: &crate::Digest) -> bool;
    fn insert(&mut self, key: crate::Digest);
}

impl SignatureCache for std::collections::HashSet<crate::Digest> {
    fn contains(&self, key: &crate::Digest) -> bool {
        std::collections::HashSet::contains(self, key)
    }
    fn insert(&mut self, key: crate::Digest) {
        std::collections::HashSet::insert(self, key);
    }
}

/// The cache key of a check: SHA-256 of everything the rule looks at.
fn cache_key(chain_id: &ChainId, check: &SignatureCheck) -> crate::Digest {
    let mut h = crate::Digest::hasher();
    h.update(&check.key.public_key().0)
        .update(&signing_message(check.domain, chain_id, &check.body))
        .update(&check.signature.0);
    h.finalize()
}

/// [`verify`], skipping signatures `cache` holds and adding those that pass. The result is
/// the same as [`verify`]'s: only valid signatures ever enter the cache.
pub fn verify_cached<T: Verifiable>(
    context: &T::Context,
    chain_id: &ChainId,
    item: T,
    cache: &mut dyn SignatureCache,
) -> Result<Verified<T>, CryptoError> {
    let mut checks = Vec::new();
    item.signature_checks(context, &mut checks)?;
    for check in &checks {
        let key = cache_key(chain_id, check);
        if !cache.contains(&key) {
            verify_one(chain_id, check)?;
            cache.insert(key);
        }
    }
    Ok(Verified(item))
}

/// Verifies many items with one batch equation per 1,024 signatures (two to three times as
/// fast per signature as one by one). A failing equation is narrowed down by halving (see
/// `check_items`), so one bad signature rejects only its own item. The result for each
/// item is exactly what [`verify`] returns.
pub fn verify_batch<T: Verifiable>(
    context: &T::Context,
    chain_id: &ChainId,
    items: Vec<T>,
) -> Vec<Result<Verified<T>, CryptoError>> {
    // Per item: its prepared signatures, or the error that already rejects it.
    let prepared: Vec<Result<Vec<Prepared>, CryptoError>> = items
        .iter()
        .map(|item| {
            let mut checks = Vec::new();
            item.signature_checks(context, &mut checks)?;
            checks.iter().map(|c| prepare_check(chain_id, c)).collect()
        })
        .collect();

    // One equation per group of at most BATCH_EQUATION_MAX signatures; a group that fails is
    // halved until each failing item stands alone.
    let mut passed = vec![false; prepared.len()];
    let mut start = 0;
    while start < prepared.len() {
        let mut end = start;
        let mut signatures = 0;
        while end < prepared.len() {
            let n = prepared[end].as_ref().map_or(0, |p| p.len());
            if end > start && signatures + n > BATCH_EQUATION_MAX {
                break;
            }
            signatures += n;
            end += 1;
        }
        check_items(&prepared, start..end, &mut passed);
        start = end;
    }

    items
        .into_iter()
        .zip(prepared)
        .zip(passed)
        .map(|((item, p), passed)| match p {
            Err(e) => Err(e),
            Ok(_) if passed => Ok(Verified(item)),
            Ok(_) => Err(CryptoError::InvalidSignature),
        })
        .collect()
}

/// Signatures per batch equation. Up to a few hundred points the multiscalar multiplication
/// uses Straus's method, whose cost per point stays flat; from 190 points on it switches to
/// Pippenger's, whose cost per point falls as the batch grows (measured in
/// `docs/architecture.md`: ≈ 19 µs per signature for the equation in groups of 32, ≈ 12 in
/// groups of 1,024). Items are never split across equations.
const BATCH_EQUATION_MAX: usize = 1024;

/// Marks `passed` for the items of `range` whose signatures hold (items rejected while being
/// prepared stay unmarked). One equation for the range; when it fails, one for each half.
/// A half that fails while the other passes holds every bad item, and is halved in turn;
/// when both halves fail, bad items are dense and each item is checked on its own. So one
/// bad item among `m` costs about three equations over `m` signatures, and any number of
/// them at most one equation over the range, two over its halves and one per item.
fn check_items(
    prepared: &[Result<Vec<Prepared>, CryptoError>],
    range: std::ops::Range<usize>,
    passed: &mut [bool],
) {
    if !range_holds(prepared, range.clone()) {
        check_failed(prepared, range, passed);
        return;
    }
    mark(prepared, range, passed);
}

/// [`check_items`] for a range whose equation is known to fail.
fn check_failed(
    prepared: &[Result<Vec<Prepared>, CryptoError>],
    range: std::ops::Range<usize>,
    passed: &mut [bool],
) {
    if range.len() <= 1 {
        return;
    }
    let middle = range.start + range.len() / 2;
    let (left, right) = (range.start..middle, middle..range.end);
    match (
        range_holds(prepared, left.clone()),
        range_holds(prepared, right.clone()),
    ) {
        (true, false) => {
            mark(prepared, left, passed);
            check_failed(prepared, right, passed);
        }
        (false, true) => {
            mark(prepared, right, passed);
            check_failed(prepared, left, passed);
        }
        // Both fail (or, by a 2^-128 accident of the coefficients, both hold although the
        // whole failed): each item on its own, so the answer is exact either way.
        _ => {
            for i in range {
                passed[i] = range_holds(prepared, i..i + 1) && prepared[i].is_ok();
            }
        }
    }
}

fn range_holds(
    prepared: &[Result<Vec<Prepared>, CryptoError>],
    range: std::ops::Range<usize>,
) -> bool {
    let group: Vec<&Prepared> = prepared[range]
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .flatten()
        .collect();
    batch_equation_holds(&group)
}

fn mark(
    prepared: &[Result<Vec<Prepared>, CryptoError>],
    range: std::ops::Range<usize>,
    passed: &mut [bool],
) {
    for i in range {
        passed[i] = prepared[i].is_ok();
    }
}

/// `[8](Σ zᵢ([Sᵢ]B − Rᵢ − [kᵢ]Aᵢ)) = 0` for coefficients `zᵢ` of 128 bits. Each summand
/// multiplied by 8 lies in the prime-order subgroup, so a sum of non-zero summands is zero
/// with probability at most 2^-128: the batch holds exactly when every rule-4 equation does.
///
/// The `zᵢ` are derived by hashing every signature in the batch (Fiat–Shamir), so the check
/// is deterministic and needs no random source; a signer cannot choose its signature after
/// seeing its coefficient.
fn batch_equation_holds(sigs: &[&Prepared]) -> bool {
    match sigs {
        [] => return true,
        [one] => return equation_holds(one),
        _ => {}
    }
    let mut seed = Sha512::new();
    seed.update(b"tally/batch-verify/v1");
    for p in sigs {
        seed.update(p.r_bytes);
        seed.update(p.a_bytes);
        seed.update(p.s.as_bytes());
        seed.update(p.k.as_bytes());
    }
    let seed = seed.finalize();
    // Four 128-bit coefficients from each SHA-512(seed ‖ block number).
    let zs: Vec<Scalar> = (0..sigs.len().div_ceil(4) as u64)
        .flat_map(|block| {
            let mut h = Sha512::new();
            h.update(seed);
            h.update(block.to_le_bytes());
            let out = h.finalize();
            (0..4).map(move |j| {
                let z = u128::from_le_bytes(out[16 * j..16 * j + 16].try_into().expect("16 bytes"));
                Scalar::from(z.max(1))
            })
        })
        .take(sigs.len())
        .collect();

    let b_coefficient: Scalar = sigs.iter().zip(&zs).map(|(p, z)| p.s * z).sum();
    let scalars = std::iter::once(-b_coefficient)
        .chain(zs.iter().copied())
        .chain(sigs.iter().zip(&zs).map(|(p, z)| p.k * z));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(sigs.iter().map(|p| p.r))
        .chain(sigs.iter().map(|p| p.a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// The rule over raw messages, without the domain and chain prefix: only for checking
/// published Ed25519 test vectors, which sign bare messages. Returns no [`Verified`].
#[doc(hidden)]
pub mod raw {
    use super::*;

    pub fn verify_one_raw(
        key: &ValidKey,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), CryptoError> {
        let p = prepare(key, message, signature)?;
        if equation_holds(&p) {
            Ok(())
        } else {
            Err(CryptoError::InvalidSignature)
        }
    }

    /// Batch form over `(public key hex, message hex, signature hex)`; false when any member
    /// fails any rule.
    pub fn verify_batch_raw_ok(items: &[(&str, &str, &str)]) -> bool {
        let prepared: Option<Vec<Prepared>> = items
            .iter()
            .map(|(pk, msg, sig)| {
                let key = ValidKey::new(&crate::PublicKey::from_hex(pk).ok()?).ok()?;
                let sig = Signature::from_hex(sig).ok()?;
                prepare(&key, &hex::decode(msg).ok()?, &sig).ok()
            })
            .collect();
        match prepared {
            Some(p) => batch_equation_holds(&p.iter().collect::<Vec<_>>()),
            None => false,
        }
    }

    /// A plain RFC 8032 signature over `message`.
    pub fn sign_raw(key: &crate::SecretKey, message: &[u8]) -> Signature {
        key.sign_raw(message)
    }
}
