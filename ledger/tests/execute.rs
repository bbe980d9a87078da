//! Execution rules, and the incremental state root against a recomputation from scratch.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use tally_crypto::{ChainId, Digest, PublicKey, SecretKey};
use tally_ledger::{
    Account, Action, CheckedTx, LtHash, StateError, StateView, Transaction, TxError, TxLocation,
    TxOutcome, check_transactions, execute_batch, genesis_state,
    state::{account_key, data_key},
};

#[derive(Default)]
struct MemState {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    index: HashMap<Digest, TxLocation>,
    hash: Option<LtHash>,
}

impl StateView for MemState {
    fn account(&self, who: &PublicKey) -> Result<Option<Account>, StateError> {
        Ok(self
            .entries
            .get(&account_key(who))
            .map(|v| Account::decode(v).unwrap()))
    }
    fn data(&self, owner: &PublicKey, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries.get(&data_key(owner, key)).cloned())
    }
    fn tx_location(&self, hash: &Digest) -> Result<Option<TxLocation>, StateError> {
        Ok(self.index.get(hash).copied())
    }
}

impl MemState {
    fn genesis(accounts: &[(PublicKey, u64)]) -> MemState {
        let (writes, hash) = genesis_state(accounts);
        let mut s = MemState::default();
        for (k, v) in writes {
            s.entries.insert(k, v.unwrap());
        }
        s.hash = Some(hash);
        s
    }

    fn run(&mut self, height: u64, txs: &[Vec<u8>]) -> Vec<TxOutcome> {
        let checked: Vec<CheckedTx> = check_transactions(&chain(), txs);
        let ex = execute_batch(self, self.hash.as_ref().unwrap(), height, &checked).unwrap();
        for (k, v) in ex.state_writes {
            match v {
                Some(v) => self.entries.insert(k, v),
                None => self.entries.remove(&k),
            };
        }
        for (h, l) in ex.index_writes {
            self.index.insert(h, l);
        }
        assert_eq!(ex.state_root, ex.state_hash.root());
        self.hash = Some(ex.state_hash);
        ex.outcomes
    }

    fn recomputed_root(&self) -> Digest {
        let mut h = LtHash::zero();
        for (k, v) in &self.entries {
            h.add(k, v);
        }
        h.root()
    }

    fn balance(&self, who: &SecretKey) -> u64 {
        self.account(&who.public_key())
            .unwrap()
            .unwrap_or_default()
            .balance
    }
}

fn chain() -> ChainId {
    ChainId::new("exec-test").unwrap()
}

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i; 32])
}

fn transfer(from: &SecretKey, nonce: u64, to: &SecretKey, amount: u64) -> Vec<u8> {
    Transaction {
        chain_id: chain(),
        sender: from.public_key(),
        nonce,
        action: Action::Transfer {
            to: to.public_key(),
            amount,
        },
    }
    .sign(from)
    .unwrap()
    .into_encoded()
}

fn put(from: &SecretKey, nonce: u64, k: &[u8], v: &[u8]) -> Vec<u8> {
    Transaction {
        chain_id: chain(),
        sender: from.public_key(),
        nonce,
        action: Action::Put {
            key: k.to_vec(),
            value: v.to_vec(),
        },
    }
    .sign(from)
    .unwrap()
    .into_encoded()
}

#[test]
fn transfers_nonces_and_failures_change_nothing() {
    let (a, b) = (key(1), key(2));
    let mut s = MemState::genesis(&[(a.public_key(), 100)]);
    let before_root = s.recomputed_root();
    // Bad nonce, insufficient balance: recorded, nothing changes.
    let out = s.run(1, &[transfer(&a, 1, &b, 10), transfer(&a, 0, &b, 1000)]);
    assert_eq!(
        out,
        vec![
            TxOutcome::Failed(TxError::BadNonce {
                expected: 0,
                got: 1
            }),
            TxOutcome::Failed(TxError::InsufficientBalance {
                balance: 100,
                amount: 1000
            })
        ]
    );
    assert_eq!(s.recomputed_root(), before_root);
    assert_eq!(s.hash.as_ref().unwrap().root(), before_root);
    assert_eq!(s.account(&a.public_key()).unwrap().unwrap().nonce, 0);

    let out = s.run(2, &[transfer(&a, 0, &b, 30), transfer(&a, 1, &b, 20)]);
    assert_eq!(out, vec![TxOutcome::Ok, TxOutcome::Ok]);
    assert_eq!((s.balance(&a), s.balance(&b)), (50, 50));
    assert_eq!(s.account(&a.public_key()).unwrap().unwrap().nonce, 2);
    assert_eq!(s.hash.as_ref().unwrap().root(), s.recomputed_root());

    // Replay of a committed transaction: bad nonce, and the index keeps the success.
    let replay = transfer(&a, 0, &b, 30);
    let out = s.run(3, std::slice::from_ref(&replay));
    assert!(matches!(
        out[0],
        TxOutcome::Failed(TxError::BadNonce { .. })
    ));
    let loc = s.index[&Digest::of(&replay)];
    assert_eq!((loc.height, loc.code), (2, 0));
    assert_eq!((s.balance(&a), s.balance(&b)), (50, 50));
}

#[test]
fn bad_signature_wrong_chain_and_garbage_are_recorded() {
    let (a, b) = (key(1), key(2));
    let mut s = MemState::genesis(&[(a.public_key(), 100)]);
    let mut forged = transfer(&a, 0, &b, 10);
    let n = forged.len();
    forged[n - 1] ^= 1;
    let other_chain = Transaction {
        chain_id: ChainId::new("other").unwrap(),
        sender: a.public_key(),
        nonce: 0,
        action: Action::Transfer {
            to: b.public_key(),
            amount: 5,
        },
    }
    .sign(&a)
    .unwrap()
    .into_encoded();
    let out = s.run(1, &[forged, other_chain, vec![1, 2, 3]]);
    assert_eq!(out[0], TxOutcome::Failed(TxError::InvalidSignature));
    assert!(matches!(
        out[1],
        TxOutcome::Failed(TxError::WrongChain { .. })
    ));
    assert!(matches!(
        out[2],
        TxOutcome::Failed(TxError::Malformed { .. })
    ));
    assert_eq!(s.balance(&a), 100);
}

#[test]
fn puts_self_transfers_and_overflow() {
    let (a, b) = (key(1), key(2));
    let mut s = MemState::genesis(&[(a.public_key(), 100), (b.public_key(), u64::MAX)]);
    let out = s.run(
        1,
        &[
            put(&a, 0, b"k", b"v1"),
            put(&a, 1, b"k", b"v2"),
            transfer(&a, 2, &a, 60),
            transfer(&a, 3, &b, 1),
        ],
    );
    assert_eq!(out[..3], [TxOutcome::Ok, TxOutcome::Ok, TxOutcome::Ok]);
    assert_eq!(out[3], TxOutcome::Failed(TxError::BalanceOverflow));
    assert_eq!(s.data(&a.public_key(), b"k").unwrap().unwrap(), b"v2");
    assert_eq!(s.balance(&a), 100);
    assert_eq!(s.hash.as_ref().unwrap().root(), s.recomputed_root());
}

#[test]
fn emptied_default_account_disappears_from_state() {
    // An account that receives nothing and sends nothing never appears; a zero-amount
    // transfer to a fresh account leaves it at the default and so absent.
    let (a, b) = (key(1), key(2));
    let mut s = MemState::genesis(&[(a.public_key(), 10)]);
    s.run(1, &[transfer(&a, 0, &b, 0)]);
    assert!(s.account(&b.public_key()).unwrap().is_none());
    assert_eq!(s.hash.as_ref().unwrap().root(), s.recomputed_root());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Random blocks of transfers and puts among five accounts: the incrementally updated
    /// root always equals the root recomputed over the whole state, and total balance is
    /// conserved.
    #[test]
    fn incremental_root_matches_full_recompute(ops in proptest::collection::vec((0u8..5, 0u8..5, 0u64..80, any::<bool>(), 0u64..3), 1..40)) {
        let keys: Vec<SecretKey> = (1..=5).map(key).collect();
        let mut s = MemState::genesis(&keys.iter().map(|k| (k.public_key(), 100)).collect::<Vec<_>>());
        let mut nonces = [0u64; 5];
        for (block, chunk) in ops.chunks(7).enumerate() {
            let txs: Vec<Vec<u8>> = chunk.iter().map(|&(from, to, amount, is_put, skew)| {
                let f = from as usize;
                let nonce = nonces[f] + if skew == 2 { 1 } else { 0 };
                if skew != 2 { nonces[f] += 1; }
                if is_put {
                    put(&keys[f], nonce, &[to], &amount.to_le_bytes())
                } else {
                    transfer(&keys[f], nonce, &keys[to as usize], amount)
                }
            }).collect();
            let outcomes = s.run(block as u64 + 1, &txs);
            // Resynchronise our nonce model with what really happened.
            for k in 0..5 {
                nonces[k] = s.account(&keys[k].public_key()).unwrap().unwrap_or_default().nonce;
            }
            prop_assert_eq!(outcomes.len(), txs.len());
            prop_assert_eq!(s.hash.as_ref().unwrap().root(), s.recomputed_root());
            let total: u64 = keys.iter().map(|k| s.balance(k)).sum();
            prop_assert_eq!(total, 500);
        }
    }
}
