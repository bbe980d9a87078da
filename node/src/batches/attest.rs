//! Attestations: the validity check an attester applies to a batch, the signature it makes,
//! who is asked, and how an author turns f + 1 attestations into a [`BatchProof`].
//!
//! **Who attests.** The author and f others, chosen by a rule every validator computes the
//! same way: the f validators following the author in genesis order, starting at an offset
//! that turns with the batch index (so the checking work spreads evenly over the others).
//! When one of them is slow or down, the author asks the remaining validators in the same
//! rotated order ([`ask_order`]); every validator stores every batch, so any of them can
//! attest.
//!
//! **What an attestation says.** "I hold this batch (durably), and every transaction in it
//! decodes canonically, names this chain and carries a valid signature under the one
//! validity rule." Nothing about nonces or balances: execution decides those, and records a
//! failed transaction with its error.

use std::collections::BTreeMap;

use tally_consensus::availability::attestation_body;
use tally_consensus::{ATTEST_DOMAIN, BatchHeader, BatchProof, ValidatorId, ValidatorSet};
use tally_crypto::{
    ChainId, CryptoError, KeyCache, SecretKey, Signature, SignatureCheck, verify_batch, verify_one,
};
use tally_ledger::{SignedTransaction, TxError, decode_for_chain};

use super::body::TxBatch;

/// The validators asked to attest `header`, in the order they are asked: first the author,
/// then the f designated attesters, then the others (fallbacks), each exactly once.
pub fn ask_order(validators: &ValidatorSet, header: &BatchHeader) -> Vec<ValidatorId> {
    let n = validators.len() as u64;
    let author = u64::from(header.author.0);
    let mut order = vec![header.author];
    if n > 1 {
        let offset = header.index % (n - 1);
        for j in 0..n - 1 {
            let step = 1 + (offset + j) % (n - 1);
            order.push(ValidatorId(((author + step) % n) as u16));
        }
    }
    order
}

/// The author and the f validators that attest `header` when nobody is slow.
pub fn designated(validators: &ValidatorSet, header: &BatchHeader) -> Vec<ValidatorId> {
    let mut d = ask_order(validators, header);
    d.truncate(validators.weak_quorum());
    d
}

/// Why a batch does not get this validator's attestation: its `index`-th transaction broke
/// the rule. An honest author never sends such a batch (it checked each transaction when
/// its client submitted it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {index} of the batch is invalid: {reason}")]
pub struct Invalid {
    pub index: usize,
    pub reason: String,
}

/// Decodes every transaction of `batch` for `chain_id` and checks every signature (one batch
/// verification). The decoded transactions are returned for whoever needs them next.
pub fn check_batch(
    batch: &TxBatch,
    chain_id: &ChainId,
    keys: &KeyCache,
) -> Result<Vec<SignedTransaction>, Invalid> {
    let txs: Vec<SignedTransaction> = batch
        .txs()
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            decode_for_chain(chain_id, bytes).map_err(|e: TxError| Invalid {
                index,
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(txs.len());
    for (index, result) in verify_batch(keys, chain_id, txs).into_iter().enumerate() {
        match result {
            Ok(tx) => out.push(tx.into_inner()),
            Err(e) => {
                return Err(Invalid {
                    index,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// This validator's attestation of `header`.
pub fn sign(key: &SecretKey, chain_id: &ChainId, header: &BatchHeader) -> Signature {
    key.sign(ATTEST_DOMAIN, chain_id, &attestation_body(header))
}

/// Why an attestation an author received is not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation from {0}, which is not a validator")]
    UnknownValidator(u16),
    #[error("attestation for a batch this node is not collecting")]
    NotCollecting,
    #[error(transparent)]
    Signature(#[from] CryptoError),
}

/// The attestations an author has for its batches that are not proven yet. Bounded by the
/// author's own batches in flight (it makes no more when too many are unproven) × n.
#[derive(Default)]
pub struct Collector {
    pending: BTreeMap<u64, (BatchHeader, BTreeMap<ValidatorId, Signature>)>,
}

impl Collector {
    /// Starts collecting for one of this node's batches.
    pub fn start(&mut self, header: BatchHeader) {
        self.pending
            .entry(header.index)
            .or_insert_with(|| (header, BTreeMap::new()));
    }

    /// Batches waiting for attestations.
    pub fn unproven(&self) -> usize {
        self.pending.len()
    }

    /// Who has attested the batch with `index` so far.
    pub fn attesters(&self, index: u64) -> Vec<ValidatorId> {
        self.pending
            .get(&index)
            .map(|(_, a)| a.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Counts `signature` from `from` for the batch with `header` after checking it. Returns
    /// the proof when this attestation completes f + 1 (and forgets the batch: it is proven).
    pub fn add(
        &mut self,
        validators: &ValidatorSet,
        chain_id: &ChainId,
        from: ValidatorId,
        header: &BatchHeader,
        signature: Signature,
    ) -> Result<Option<BatchProof>, AttestationError> {
        let key = *validators
            .key(from)
            .ok_or(AttestationError::UnknownValidator(from.0))?;
        let Some((held, attestations)) = self.pending.get_mut(&header.index) else {
            return Err(AttestationError::NotCollecting);
        };
        if held != header {
            return Err(AttestationError::NotCollecting);
        }
        verify_one(
            chain_id,
            &SignatureCheck {
                key,
                domain: ATTEST_DOMAIN,
                body: attestation_body(header),
                signature,
            },
        )?;
        attestations.insert(from, signature);
        if attestations.len() < validators.weak_quorum() {
            return Ok(None);
        }
        let (header, attestations) = self.pending.remove(&header.index).expect("present");
        Ok(Some(BatchProof {
            header,
            attestations: attestations.into_iter().collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_crypto::Digest;
    use tally_ledger::{Action, Transaction};

    fn setup(n: u8) -> (Vec<SecretKey>, ValidatorSet, ChainId) {
        let keys: Vec<SecretKey> = (1..=n).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let set =
            ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
        (keys, set, ChainId::new("attest-test").unwrap())
    }

    fn header(author: u16, index: u64) -> BatchHeader {
        BatchHeader {
            author: ValidatorId(author),
            index,
            tx_count: 1,
            bytes: 200,
            tx_digest: Digest::of(b"x"),
        }
    }

    #[test]
    fn every_validator_is_asked_once_and_the_work_turns_with_the_index() {
        for n in [1u8, 4, 7, 10] {
            let (_, set, _) = setup(n);
            let mut designated_count = vec![0usize; n as usize];
            for author in 0..n as u16 {
                for index in 0..(n as u64 - 1).max(1) * 3 {
                    let order = ask_order(&set, &header(author, index));
                    let mut sorted: Vec<u16> = order.iter().map(|v| v.0).collect();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..n as u16).collect::<Vec<_>>());
                    assert_eq!(order[0], ValidatorId(author));
                    let d = designated(&set, &header(author, index));
                    assert_eq!(d.len(), set.weak_quorum());
                    for v in &d[1..] {
                        designated_count[v.0 as usize] += 1;
                    }
                }
            }
            // Every validator attests others' batches equally often.
            assert!(designated_count.iter().all(|&c| c == designated_count[0]));
        }
    }

    fn signed(key: &SecretKey, chain: &ChainId, nonce: u64) -> Vec<u8> {
        Transaction {
            chain_id: chain.clone(),
            sender: key.public_key(),
            nonce,
            action: Action::Put {
                key: b"k".to_vec(),
                value: vec![7; 100],
            },
        }
        .sign(key)
        .unwrap()
        .into_encoded()
    }

    #[test]
    fn an_attester_checks_every_transaction() {
        let (keys, _, chain) = setup(4);
        let cache = KeyCache::new(100);
        let good: Vec<Vec<u8>> = (0..50)
            .map(|i| signed(&keys[i % 4], &chain, i as u64))
            .collect();
        let b = TxBatch::new(ValidatorId(0), 0, good.clone());
        assert_eq!(check_batch(&b, &chain, &cache).unwrap().len(), 50);

        let mut bad_sig = good.clone();
        let last = bad_sig[31].len() - 1;
        bad_sig[31][last] ^= 1;
        let b = TxBatch::new(ValidatorId(0), 1, bad_sig);
        assert_eq!(check_batch(&b, &chain, &cache).unwrap_err().index, 31);

        let mut other_chain = good.clone();
        other_chain[7] = signed(&keys[0], &ChainId::new("other").unwrap(), 7);
        let b = TxBatch::new(ValidatorId(0), 2, other_chain);
        assert_eq!(check_batch(&b, &chain, &cache).unwrap_err().index, 7);

        let mut garbage = good;
        garbage[0] = vec![0xff; 150];
        let b = TxBatch::new(ValidatorId(0), 3, garbage);
        assert_eq!(check_batch(&b, &chain, &cache).unwrap_err().index, 0);
    }

    #[test]
    fn f_plus_one_checked_attestations_make_a_proof_that_verifies() {
        let (keys, set, chain) = setup(7);
        let h = header(3, 9);
        let mut c = Collector::default();
        c.start(h);
        // Unknown batch, wrong signer, forged signature: not counted.
        assert_eq!(
            c.add(
                &set,
                &chain,
                ValidatorId(1),
                &header(3, 10),
                sign(&keys[1], &chain, &header(3, 10))
            ),
            Err(AttestationError::NotCollecting)
        );
        assert!(matches!(
            c.add(&set, &chain, ValidatorId(1), &h, sign(&keys[2], &chain, &h)),
            Err(AttestationError::Signature(_))
        ));
        assert_eq!(
            c.add(&set, &chain, ValidatorId(9), &h, sign(&keys[2], &chain, &h)),
            Err(AttestationError::UnknownValidator(9))
        );
        // The same attester twice counts once.
        for _ in 0..2 {
            assert_eq!(
                c.add(&set, &chain, ValidatorId(3), &h, sign(&keys[3], &chain, &h)),
                Ok(None)
            );
        }
        assert_eq!(
            c.add(&set, &chain, ValidatorId(5), &h, sign(&keys[5], &chain, &h)),
            Ok(None)
        );
        assert_eq!(c.attesters(9), vec![ValidatorId(3), ValidatorId(5)]);
        let proof = c
            .add(&set, &chain, ValidatorId(0), &h, sign(&keys[0], &chain, &h))
            .unwrap()
            .expect("f + 1 = 3");
        assert_eq!(c.unproven(), 0);
        assert_eq!(proof.verify(&set, &chain), Ok(()));
        assert_eq!(
            proof.holders().collect::<Vec<_>>(),
            vec![ValidatorId(0), ValidatorId(3), ValidatorId(5)]
        );
    }
}
