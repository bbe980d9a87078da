//! Identifiers and the validator set.

use std::fmt;

use tally_crypto::{CryptoError, PublicKey, ValidKey};

/// A validator's index in the genesis validator list.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    serde::Serialize,
    serde::Deserialize,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct ValidatorId(pub u16);

/// A PBFT view number (a Raft term, a Paxos round).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct View(pub u64);

/// A consensus sequence number; equal to the block height it produces.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
    borsh::BorshSerialize,
    borsh::BorshDeserialize,
)]
pub struct Seq(pub u64);

impl View {
    pub fn next(self) -> View {
        View(self.0 + 1)
    }
}

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for ValidatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the validators may do wrong, which sets the quorum arithmetic and what a commit
/// proof must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FaultModel {
    /// PBFT: up to `f = ⌊(n − 1) / 3⌋` validators may lie; a commit proof is a quorum of
    /// signed COMMITs.
    #[default]
    Byzantine,
    /// Raft and Multi-Paxos: up to `f = ⌊(n − 1) / 2⌋` validators may crash, none lies; a
    /// commit proof is the signature of the leader that proposed the block.
    Crash,
}

/// The validators, in genesis order, with the quorum arithmetic of their fault model.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    keys: Vec<ValidKey>,
    model: FaultModel,
}

impl ValidatorSet {
    /// A Byzantine-fault set (PBFT).
    pub fn new(keys: &[PublicKey]) -> Result<ValidatorSet, CryptoError> {
        ValidatorSet::with_model(keys, FaultModel::Byzantine)
    }

    pub fn with_model(keys: &[PublicKey], model: FaultModel) -> Result<ValidatorSet, CryptoError> {
        assert!(!keys.is_empty() && keys.len() <= u16::MAX as usize);
        Ok(ValidatorSet {
            keys: keys.iter().map(ValidKey::new).collect::<Result<_, _>>()?,
            model,
        })
    }

    pub fn model(&self) -> FaultModel {
        self.model
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Faults tolerated: Byzantine `f = ⌊(n − 1) / 3⌋`, crash `f = ⌊(n − 1) / 2⌋`.
    pub fn f(&self) -> usize {
        match self.model {
            FaultModel::Byzantine => (self.len() - 1) / 3,
            FaultModel::Crash => (self.len() - 1) / 2,
        }
    }

    /// The Byzantine quorum `⌈(n + f + 1) / 2⌉`, which is `2f + 1` when `n = 3f + 1`: any two
    /// quorums share at least `f + 1` validators, so at least one honest one. With crash
    /// faults, a majority `⌊n / 2⌋ + 1`: any two share a validator.
    pub fn quorum(&self) -> usize {
        match self.model {
            FaultModel::Byzantine => (self.len() + self.f() + 1).div_ceil(2),
            FaultModel::Crash => self.len() / 2 + 1,
        }
    }

    /// `f + 1`: enough that at least one is honest (Byzantine), or alive (crash).
    pub fn weak_quorum(&self) -> usize {
        self.f() + 1
    }

    pub fn key(&self, id: ValidatorId) -> Option<&ValidKey> {
        self.keys.get(id.0 as usize)
    }

    pub fn public_key(&self, id: ValidatorId) -> Option<PublicKey> {
        self.key(id).map(|k| k.public_key())
    }

    pub fn id_of(&self, key: &PublicKey) -> Option<ValidatorId> {
        self.keys
            .iter()
            .position(|k| k.public_key() == *key)
            .map(|i| ValidatorId(i as u16))
    }

    pub fn ids(&self) -> impl Iterator<Item = ValidatorId> + '_ {
        (0..self.keys.len()).map(|i| ValidatorId(i as u16))
    }

    /// The PBFT primary of `view`: `validators[v mod n]`.
    pub fn primary(&self, view: View) -> ValidatorId {
        ValidatorId((view.0 % self.len() as u64) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_crypto::SecretKey;

    fn set(n: u8) -> ValidatorSet {
        let keys: Vec<_> = (1..=n)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect();
        ValidatorSet::new(&keys).unwrap()
    }

    /// Castro–Liskov OSDI'99 §4: n = 3f + 1, quorums of 2f + 1; for other n the quorum
    /// ⌈(n + f + 1)/2⌉ still makes any two quorums intersect in f + 1.
    #[test]
    fn quorum_arithmetic() {
        for (n, f, q) in [
            (4, 1, 3),
            (5, 1, 4),
            (6, 1, 4),
            (7, 2, 5),
            (10, 3, 7),
            (1, 0, 1),
        ] {
            let s = set(n);
            assert_eq!((s.f(), s.quorum()), (f, q), "n = {n}");
            // Two quorums overlap in 2q − n validators; that must exceed f.
            assert!(2 * s.quorum() - s.len() > s.f(), "n = {n}");
        }
    }

    #[test]
    fn primary_rotates() {
        let s = set(4);
        assert_eq!(s.primary(View(0)), ValidatorId(0));
        assert_eq!(s.primary(View(5)), ValidatorId(1));
    }
}
