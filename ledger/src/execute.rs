//! Deterministic execution of a batch.

use std::collections::{BTreeMap, HashMap};

/// Per-batch maps keyed by account keys and digests: foldhash (seeded per process) instead
/// of SipHash, which showed in profiles of block execution.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use tally_crypto::{ChainId, Digest, KeyCache, PublicKey, Verified, verify_batch};

use crate::state::{Account, LtHash, account_key, data_key};
use crate::tx::{Action, SignedTransaction};
use crate::{TxError, TxOutcome};

/// Read access to the committed state, as of the end of the previous block.
pub trait StateView {
    fn account(&self, who: &PublicKey) -> Result<Option<Account>, StateError>;
    fn data(&self, owner: &PublicKey, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Where this transaction was recorded, if it ever was.
    fn tx_location(&self, hash: &Digest) -> Result<Option<TxLocation>, StateError>;
}

/// Reading the state failed (a storage error). Execution stops: a node that cannot read its
/// state cannot execute deterministically.
#[derive(Debug, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct StateError(pub String);

/// Where a transaction is recorded, and whether it succeeded there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
    /// 0 for success, else the [`TxError::code`] it failed with.
    pub code: u8,
}

impl TxLocation {
    pub fn encode(&self) -> [u8; 13] {
        let mut out = [0; 13];
        out[..8].copy_from_slice(&self.height.to_le_bytes());
        out[8..12].copy_from_slice(&self.index.to_le_bytes());
        out[12] = self.code;
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TxLocation> {
        let bytes: &[u8; 13] = bytes.try_into().ok()?;
        Some(TxLocation {
            height: u64::from_le_bytes(bytes[..8].try_into().ok()?),
            index: u32::from_le_bytes(bytes[8..12].try_into().ok()?),
            code: bytes[12],
        })
    }
}

/// One transaction of a batch after the stateless checks: its hash, and either the verified
/// transaction (shared: the mempool holds the same one) or why it failed them.
#[derive(Clone, Debug)]
pub struct CheckedTx {
    pub hash: Digest,
    pub tx: Result<Arc<Verified<SignedTransaction>>, TxError>,
}

/// The stateless checks for a batch of encoded transactions: decoding, chain id and the
/// signature (batch-verified). Deterministic: every node gets the same result.
pub fn check_transactions(chain_id: &ChainId, raw: &[Vec<u8>]) -> Vec<CheckedTx> {
    check_transactions_with(chain_id, raw, &KeyCache::new(4096))
}

/// [`check_transactions`] with a cache of validated sender keys.
pub fn check_transactions_with(
    chain_id: &ChainId,
    raw: &[Vec<u8>],
    keys: &KeyCache,
) -> Vec<CheckedTx> {
    let mut out: Vec<Option<CheckedTx>> = Vec::with_capacity(raw.len());
    let mut to_verify = Vec::new();
    let mut slots = Vec::new();
    for (i, bytes) in raw.iter().enumerate() {
        let hash = Digest::of(bytes);
        match decode_for_chain(chain_id, bytes) {
            Ok(tx) => {
                to_verify.push(tx);
                slots.push(i);
                out.push(None);
            }
            Err(e) => out.push(Some(CheckedTx { hash, tx: Err(e) })),
        }
    }
    for (slot, result) in slots
        .into_iter()
        .zip(verify_batch(keys, chain_id, to_verify))
    {
        out[slot] = Some(CheckedTx {
            hash: Digest::of(&raw[slot]),
            tx: result.map(Arc::new).map_err(|_| TxError::InvalidSignature),
        });
    }
    out.into_iter()
        .map(|c| c.expect("every slot is filled"))
        .collect()
}

/// Decodes and checks the chain id: the stateless checks other than the signature.
pub fn decode_for_chain(chain_id: &ChainId, bytes: &[u8]) -> Result<SignedTransaction, TxError> {
    let tx = SignedTransaction::decode(bytes)?;
    if tx.tx().chain_id != *chain_id {
        return Err(TxError::WrongChain {
            expected: chain_id.to_string(),
            got: tx.tx().chain_id.to_string(),
        });
    }
    Ok(tx)
}

/// What executing a batch produced: one outcome per transaction, the state writes, the
/// transaction-index writes and the new state hash.
#[derive(Debug)]
pub struct Executed {
    pub outcomes: Vec<TxOutcome>,
    pub tx_hashes: Vec<Digest>,
    /// State entries to write (`Some`) or delete (`None`), sorted by key.
    pub state_writes: Vec<StateWrite>,
    /// Transaction-index entries to write.
    pub index_writes: Vec<(Digest, TxLocation)>,
    pub state_hash: LtHash,
    pub state_root: Digest,
    /// Accounts whose balance or nonce changed, with their new values.
    pub touched_accounts: Vec<(PublicKey, Account)>,
}

/// Executes `batch` at `height` on top of `view` (whose state hash is `state_hash`).
///
/// Rules, for each transaction in order:
/// 1. it must have passed the stateless checks ([`check_transactions`]);
/// 2. its nonce must equal the sender's account nonce;
/// 3. a transfer needs `balance ≥ amount`, and the recipient's balance must not overflow;
/// 4. on success the effects apply and the sender's nonce grows by one; on failure nothing
///    changes and the transaction is recorded with its error.
///
/// A transaction hash is indexed at its first success; a failure is indexed only if the hash
/// has no success recorded, so `tx_status` of a transaction that committed never turns into
/// a later replay's failure.
pub fn execute_batch(
    view: &dyn StateView,
    state_hash: &LtHash,
    height: u64,
    batch: &[CheckedTx],
) -> Result<Executed, StateError> {
    let mut overlay = Overlay {
        view,
        accounts: Map::default(),
        data: BTreeMap::new(),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut index: Map<Digest, TxLocation> = Map::default();
    let mut index_order: Vec<Digest> = Vec::new();

    for (i, checked) in batch.iter().enumerate() {
        let outcome = match &checked.tx {
            Err(e) => TxOutcome::Failed(e.clone()),
            Ok(tx) => match apply(&mut overlay, tx)? {
                Ok(()) => TxOutcome::Ok,
                Err(e) => TxOutcome::Failed(e),
            },
        };
        let location = TxLocation {
            height,
            index: i as u32,
            code: outcome.code(),
        };
        // A success is always this hash's first (its nonce was unused), so only a failure
        // needs to look for an earlier entry.
        let write = if location.code == 0 {
            true
        } else {
            let earlier = match index.get(&checked.hash) {
                Some(l) => Some(*l),
                None => view.tx_location(&checked.hash)?,
            };
            earlier.is_none()
        };
        if write {
            if !index.contains_key(&checked.hash) {
                index_order.push(checked.hash);
            }
            index.insert(checked.hash, location);
        }
        outcomes.push(outcome);
    }

    // Fold the changes into the state hash: remove each old entry, add each new one.
    let mut hash = state_hash.clone();
    let mut state_writes = Vec::new();
    let mut touched_accounts = Vec::new();
    let mut accounts: Vec<_> = overlay.accounts.into_iter().collect();
    accounts.sort_by_key(|(k, _)| *k);
    for (who, (old, new)) in accounts {
        if old == new {
            continue;
        }
        let key = account_key(&who);
        if !old.is_default() {
            hash.remove(&key, &old.encode());
        }
        if new.is_default() {
            state_writes.push((key, None));
        } else {
            hash.add(&key, &new.encode());
            state_writes.push((key, Some(new.encode().to_vec())));
        }
        touched_accounts.push((who, new));
    }
    for ((owner, k), (old, new)) in overlay.data {
        if old == new {
            continue;
        }
        let key = data_key(&owner, &k);
        if let Some(old) = &old {
            hash.remove(&key, old);
        }
        if let Some(new) = &new {
            hash.add(&key, new);
        }
        state_writes.push((key, new));
    }
    state_writes.sort_by(|a, b| a.0.cmp(&b.0));

    Ok(Executed {
        outcomes,
        tx_hashes: batch.iter().map(|c| c.hash).collect(),
        state_writes,
        index_writes: index_order.into_iter().map(|h| (h, index[&h])).collect(),
        state_root: hash.root(),
        state_hash: hash,
        touched_accounts,
    })
}

/// A state entry write: `Some(value)` puts, `None` deletes.
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);

/// A data entry's value before the block and now.
type DataChange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Changes made so far in this block: `(value before the block, value now)`.
struct Overlay<'a> {
    view: &'a dyn StateView,
    accounts: Map<PublicKey, (Account, Account)>,
    data: BTreeMap<(PublicKey, Vec<u8>), DataChange>,
}

impl Overlay<'_> {
    fn account(&mut self, who: &PublicKey) -> Result<Account, StateError> {
        if let Some((_, now)) = self.accounts.get(who) {
            return Ok(*now);
        }
        let before = self.view.account(who)?.unwrap_or_default();
        self.accounts.insert(*who, (before, before));
        Ok(before)
    }

    fn set_account(&mut self, who: &PublicKey, account: Account) {
        self.accounts
            .get_mut(who)
            .expect("set_account follows account()")
            .1 = account;
    }

    fn put(&mut self, owner: &PublicKey, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let slot = (*owner, key.to_vec());
        if !self.data.contains_key(&slot) {
            let before = self.view.data(owner, key)?;
            self.data.insert(slot.clone(), (before.clone(), before));
        }
        self.data.get_mut(&slot).expect("inserted above").1 = Some(value.to_vec());
        Ok(())
    }
}

fn apply(
    overlay: &mut Overlay<'_>,
    tx: &SignedTransaction,
) -> Result<Result<(), TxError>, StateError> {
    let t = tx.tx();
    let mut sender = overlay.account(&t.sender)?;
    if t.nonce != sender.nonce {
        return Ok(Err(TxError::BadNonce {
            expected: sender.nonce,
            got: t.nonce,
        }));
    }
    match &t.action {
        Action::Transfer { to, amount } => {
            if sender.balance < *amount {
                return Ok(Err(TxError::InsufficientBalance {
                    balance: sender.balance,
                    amount: *amount,
                }));
            }
            if *to == t.sender {
                sender.nonce += 1;
                overlay.set_account(&t.sender, sender);
                return Ok(Ok(()));
            }
            let mut recipient = overlay.account(to)?;
            let Some(new_balance) = recipient.balance.checked_add(*amount) else {
                return Ok(Err(TxError::BalanceOverflow));
            };
            recipient.balance = new_balance;
            sender.balance -= amount;
            sender.nonce += 1;
            overlay.set_account(to, recipient);
            overlay.set_account(&t.sender, sender);
        }
        Action::Put { key, value } => {
            overlay.put(&t.sender, key, value)?;
            sender.nonce += 1;
            overlay.set_account(&t.sender, sender);
        }
    }
    Ok(Ok(()))
}

/// The genesis state: its entries and its state hash.
pub fn genesis_state(accounts: &[(PublicKey, u64)]) -> (Vec<StateWrite>, LtHash) {
    let mut hash = LtHash::zero();
    let mut writes = Vec::new();
    for (who, balance) in accounts {
        let account = Account {
            balance: *balance,
            nonce: 0,
        };
        if account.is_default() {
            continue;
        }
        let key = account_key(who);
        hash.add(&key, &account.encode());
        writes.push((key, Some(account.encode().to_vec())));
    }
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    (writes, hash)
}
