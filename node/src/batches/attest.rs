//! Attestations: the validity check an attester applies to a batch and the signature it
//! makes. Who attests, when, and how attestations become a proof is protocol, decided by
//! `tally_consensus::availability::Disseminator`.
//!
//! **What an attestation says.** "I hold this batch (durably), and every transaction in it
//! decodes canonically, names this chain and carries a valid signature under the one
//! validity rule." Nothing about nonces or balances: execution decides those, and records a
//! failed transaction with its error.

use tally_crypto::{ChainId, KeyCache, verify_batch};
use tally_ledger::{SignedTransaction, TxError, decode_for_chain};

use super::body::TxBatch;

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
/// Crash-fault networks: every transaction of `batch` decodes for `chain_id` (signatures
/// are not checked again: the author checked them at admission).
pub fn check_batch_decoding(batch: &TxBatch, chain_id: &ChainId) -> Result<(), Invalid> {
    for (index, bytes) in batch.txs().iter().enumerate() {
        decode_for_chain(chain_id, bytes).map_err(|e: TxError| Invalid {
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use tally_consensus::{ValidatorId, ValidatorSet};
    use tally_crypto::SecretKey;
    use tally_ledger::{Action, Transaction};

    fn setup(n: u8) -> (Vec<SecretKey>, ValidatorSet, ChainId) {
        let keys: Vec<SecretKey> = (1..=n).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let set =
            ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
        (keys, set, ChainId::new("attest-test").unwrap())
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
}
