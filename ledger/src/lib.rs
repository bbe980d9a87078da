//! Tally's ledger: what a transaction is, how it is encoded and signed, and how a batch of
//! them changes the state — deterministically, so every node computes the same state root.
//!
//! * [`tx`]: [`Transaction`] (transfer or data put), its canonical encoding and signature;
//! * [`state`]: accounts, state entries, and the [`LtHash`] state root, updated in time
//!   proportional to a block's changes;
//! * [`execute`]: [`check_transactions`] (stateless checks, batch-verified) and
//!   [`execute_batch`];
//! * [`block`]: [`BlockHeader`] and [`batch_digest`].
//!
//! ```
//! use tally_crypto::{ChainId, SecretKey};
//! use tally_ledger::{Action, SignedTransaction, Transaction};
//!
//! let alice = SecretKey::from_seed(&[1; 32]);
//! let bob = SecretKey::from_seed(&[2; 32]).public_key();
//! let tx = Transaction {
//!     chain_id: ChainId::new("demo").unwrap(),
//!     sender: alice.public_key(),
//!     nonce: 0,
//!     action: Action::Transfer { to: bob, amount: 10 },
//! }
//! .sign(&alice)
//! .unwrap();
//! let decoded = SignedTransaction::decode(tx.encoded()).unwrap();
//! assert_eq!(decoded.hash(), tx.hash());
//! ```

pub mod block;
pub mod execute;
pub mod state;
pub mod tx;
mod xof;

pub use block::{BlockHeader, batch_digest};
pub use execute::{
    CheckedTx, Executed, StateError, StateView, StateWrite, TxLocation, check_transactions,
    check_transactions_with, decode_for_chain, execute_batch, genesis_state,
};
pub use state::{Account, LtHash};
pub use tx::{Action, SignedTransaction, TX_BYTES_MAX, TX_BYTES_MIN, TX_DOMAIN, Transaction};

/// Why a transaction was refused or failed. `code()` is stable: it is stored in blocks and
/// mapped to RPC error codes (see `docs/rpc.md`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("malformed transaction: {reason}")]
    Malformed { reason: String },
    #[error("transaction is {bytes} bytes; at most {max} allowed")]
    TooLarge { bytes: usize, max: usize },
    #[error("wrong chain id: this chain is {expected:?}, the transaction is for {got:?}")]
    WrongChain { expected: String, got: String },
    #[error("invalid signature")]
    InvalidSignature,
    #[error("bad nonce: the account expects {expected}, the transaction has {got}")]
    BadNonce { expected: u64, got: u64 },
    #[error("insufficient balance: {balance} available, {amount} needed")]
    InsufficientBalance { balance: u64, amount: u64 },
    #[error("the recipient's balance would overflow")]
    BalanceOverflow,
}

impl TxError {
    /// The stable code stored in blocks: 1 malformed, 2 too large, 3 wrong chain, 4 invalid
    /// signature, 5 bad nonce, 6 insufficient balance, 7 balance overflow.
    pub fn code(&self) -> u8 {
        match self {
            TxError::Malformed { .. } => 1,
            TxError::TooLarge { .. } => 2,
            TxError::WrongChain { .. } => 3,
            TxError::InvalidSignature => 4,
            TxError::BadNonce { .. } => 5,
            TxError::InsufficientBalance { .. } => 6,
            TxError::BalanceOverflow => 7,
        }
    }

    /// A short machine-readable name (`"bad_nonce"`), used in RPC results and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            TxError::Malformed { .. } => "malformed",
            TxError::TooLarge { .. } => "too_large",
            TxError::WrongChain { .. } => "wrong_chain",
            TxError::InvalidSignature => "invalid_signature",
            TxError::BadNonce { .. } => "bad_nonce",
            TxError::InsufficientBalance { .. } => "insufficient_balance",
            TxError::BalanceOverflow => "balance_overflow",
        }
    }
}

/// The recorded result of one transaction in a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    Ok,
    Failed(TxError),
}

impl TxOutcome {
    /// 0 for success, else [`TxError::code`].
    pub fn code(&self) -> u8 {
        match self {
            TxOutcome::Ok => 0,
            TxOutcome::Failed(e) => e.code(),
        }
    }

    /// The stored form: `code u8 ‖ a u64 LE ‖ b u64 LE`, where `(a, b)` are `(expected, got)`
    /// for a bad nonce, `(balance, amount)` for an insufficient balance, else zero. (The text
    /// of a "malformed" reason is not stored; the code is.)
    pub fn encode(&self) -> [u8; 17] {
        let (a, b) = match self {
            TxOutcome::Failed(TxError::BadNonce { expected, got }) => (*expected, *got),
            TxOutcome::Failed(TxError::InsufficientBalance { balance, amount }) => {
                (*balance, *amount)
            }
            _ => (0, 0),
        };
        let mut out = [0; 17];
        out[0] = self.code();
        out[1..9].copy_from_slice(&a.to_le_bytes());
        out[9..].copy_from_slice(&b.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; 17]) -> Option<TxOutcome> {
        let a = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
        let b = u64::from_le_bytes(bytes[9..].try_into().ok()?);
        Some(match bytes[0] {
            0 => TxOutcome::Ok,
            1 => TxOutcome::Failed(TxError::Malformed {
                reason: "malformed".into(),
            }),
            2 => TxOutcome::Failed(TxError::TooLarge {
                bytes: 0,
                max: TX_BYTES_MAX,
            }),
            3 => TxOutcome::Failed(TxError::WrongChain {
                expected: String::new(),
                got: String::new(),
            }),
            4 => TxOutcome::Failed(TxError::InvalidSignature),
            5 => TxOutcome::Failed(TxError::BadNonce {
                expected: a,
                got: b,
            }),
            6 => TxOutcome::Failed(TxError::InsufficientBalance {
                balance: a,
                amount: b,
            }),
            7 => TxOutcome::Failed(TxError::BalanceOverflow),
            _ => return None,
        })
    }
}
