//! Transactions and their canonical encoding (specified byte by byte in
//! `docs/transactions.md`).

use tally_crypto::{
    ChainId, CryptoError, Digest, Domain, KeyCache, PublicKey, SecretKey, Signature,
    SignatureCheck, Verifiable,
};

use crate::TxError;

/// The domain every transaction signature binds.
pub const TX_DOMAIN: Domain = Domain::new("tally/tx/v1");
/// The only encoding version so far.
pub const TX_VERSION: u8 = 1;
/// The largest encoded signed transaction, in bytes.
pub const TX_BYTES_MAX: usize = 64 * 1024;
/// The smallest encoded transaction: version, a one-byte chain id, sender, nonce, a put of
/// a one-byte key and an empty value, signature (`1 + 2 + 32 + 8 + 8 + 64`). Bounds how many
/// transactions a batch of a given byte size can name.
pub const TX_BYTES_MIN: usize = 115;
/// The longest data key, in bytes.
pub const DATA_KEY_BYTES_MAX: usize = 256;

const TAG_TRANSFER: u8 = 0;
const TAG_PUT: u8 = 1;

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move `amount` from the sender's balance to `to`'s.
    Transfer { to: PublicKey, amount: u64 },
    /// Store `value` under `key` in the sender's namespace (replacing any earlier value).
    Put { key: Vec<u8>, value: Vec<u8> },
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub chain_id: ChainId,
    pub sender: PublicKey,
    /// Must equal the sender account's nonce: 0 for its first transaction, then one more for
    /// each transaction that succeeded.
    pub nonce: u64,
    pub action: Action,
}

/// A signed transaction, with its encoding and hash computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    tx: Transaction,
    signature: Signature,
    encoded: Vec<u8>,
    hash: Digest,
}

impl Transaction {
    /// The canonical body: the bytes the signature covers (after the domain and chain prefix).
    pub fn encode_body(&self) -> Vec<u8> {
        let chain = self.chain_id.as_str().as_bytes();
        let mut out = Vec::with_capacity(64 + chain.len() + self.action_len());
        out.push(TX_VERSION);
        out.push(chain.len() as u8);
        out.extend_from_slice(chain);
        out.extend_from_slice(&self.sender.0);
        out.extend_from_slice(&self.nonce.to_le_bytes());
        match &self.action {
            Action::Transfer { to, amount } => {
                out.push(TAG_TRANSFER);
                out.extend_from_slice(&to.0);
                out.extend_from_slice(&amount.to_le_bytes());
            }
            Action::Put { key, value } => {
                out.push(TAG_PUT);
                out.extend_from_slice(&(key.len() as u16).to_le_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }

    fn action_len(&self) -> usize {
        match &self.action {
            Action::Transfer { .. } => 41,
            Action::Put { key, value } => 7 + key.len() + value.len(),
        }
    }

    /// Signs the transaction. Fails when the encoding would break a size limit.
    pub fn sign(self, key: &SecretKey) -> Result<SignedTransaction, TxError> {
        if key.public_key() != self.sender {
            return Err(TxError::Malformed {
                reason: "the signing key is not the sender's".into(),
            });
        }
        if let Action::Put { key: k, .. } = &self.action {
            check_data_key(k)?;
        }
        let body = self.encode_body();
        let signature = key.sign(TX_DOMAIN, &self.chain_id, &body);
        let mut encoded = body;
        encoded.extend_from_slice(&signature.0);
        if encoded.len() > TX_BYTES_MAX {
            return Err(TxError::TooLarge {
                bytes: encoded.len(),
                max: TX_BYTES_MAX,
            });
        }
        let hash = Digest::of(&encoded);
        Ok(SignedTransaction {
            tx: self,
            signature,
            encoded,
            hash,
        })
    }
}

fn check_data_key(key: &[u8]) -> Result<(), TxError> {
    if key.is_empty() || key.len() > DATA_KEY_BYTES_MAX {
        return Err(TxError::Malformed {
            reason: format!(
                "data key is {} bytes; 1 to {DATA_KEY_BYTES_MAX} allowed",
                key.len()
            ),
        });
    }
    Ok(())
}

impl SignedTransaction {
    /// Decodes a signed transaction. Accepts exactly the canonical encoding (so
    /// `decode(b).encoded() == b`); checks sizes and the chain id's syntax, not the signature.
    pub fn decode(bytes: &[u8]) -> Result<SignedTransaction, TxError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(TxError::TooLarge {
                bytes: bytes.len(),
                max: TX_BYTES_MAX,
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != TX_VERSION {
            return Err(malformed(format!("unknown version {version}")));
        }
        let chain_len = r.u8()? as usize;
        let chain = r.take(chain_len)?;
        let chain = std::str::from_utf8(chain).map_err(|_| malformed("chain id is not ASCII"))?;
        let chain_id = ChainId::new(chain).map_err(|e| malformed(e.to_string()))?;
        let sender = PublicKey(r.array()?);
        let nonce = r.u64()?;
        let action = match r.u8()? {
            TAG_TRANSFER => Action::Transfer {
                to: PublicKey(r.array()?),
                amount: r.u64()?,
            },
            TAG_PUT => {
                let key_len = r.u16()? as usize;
                let key = r.take(key_len)?.to_vec();
                check_data_key(&key)?;
                let value_len = r.u32()? as usize;
                let value = r.take(value_len)?.to_vec();
                Action::Put { key, value }
            }
            tag => return Err(malformed(format!("unknown action tag {tag}"))),
        };
        let signature = Signature(r.array()?);
        if r.pos != bytes.len() {
            return Err(malformed(format!("{} trailing bytes", bytes.len() - r.pos)));
        }
        Ok(SignedTransaction {
            tx: Transaction {
                chain_id,
                sender,
                nonce,
                action,
            },
            signature,
            encoded: bytes.to_vec(),
            hash: Digest::of(bytes),
        })
    }

    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The canonical encoding: body ‖ signature.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    pub fn into_encoded(self) -> Vec<u8> {
        self.encoded
    }

    /// SHA-256 of [`Self::encoded`]: the transaction's id.
    pub fn hash(&self) -> Digest {
        self.hash
    }

    /// The signed body (the encoding without its last 64 bytes).
    pub fn body(&self) -> &[u8] {
        &self.encoded[..self.encoded.len() - 64]
    }
}

/// A transaction names its own signer; the context caches keys already validated.
impl Verifiable for SignedTransaction {
    type Context = KeyCache;

    fn signature_checks(
        &self,
        keys: &KeyCache,
        out: &mut Vec<SignatureCheck>,
    ) -> Result<(), CryptoError> {
        out.push(SignatureCheck {
            key: keys.get(&self.tx.sender)?,
            domain: TX_DOMAIN,
            body: self.body().to_vec(),
            signature: self.signature,
        });
        Ok(())
    }
}

fn malformed(reason: impl Into<String>) -> TxError {
    TxError::Malformed {
        reason: reason.into(),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TxError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| malformed(format!("truncated at byte {}", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TxError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u8(&mut self) -> Result<u8, TxError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TxError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, TxError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, TxError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(action: Action) -> Transaction {
        let key = SecretKey::from_seed(&[1; 32]);
        Transaction {
            chain_id: ChainId::new("t").unwrap(),
            sender: key.public_key(),
            nonce: 7,
            action,
        }
    }

    /// No transaction encodes smaller than [`TX_BYTES_MIN`]: the smallest one allowed is
    /// exactly that size.
    #[test]
    fn the_smallest_transaction_is_tx_bytes_min() {
        let key = SecretKey::from_seed(&[3; 32]);
        let tx = Transaction {
            chain_id: ChainId::new("c").unwrap(),
            sender: key.public_key(),
            nonce: 0,
            action: Action::Put {
                key: vec![1],
                value: vec![],
            },
        }
        .sign(&key)
        .unwrap();
        assert_eq!(tx.encoded().len(), TX_BYTES_MIN);
    }

    #[test]
    fn round_trip_and_exact_length() {
        let key = SecretKey::from_seed(&[1; 32]);
        for action in [
            Action::Transfer {
                to: PublicKey([2; 32]),
                amount: 5,
            },
            Action::Put {
                key: b"k".to_vec(),
                value: vec![9; 100],
            },
        ] {
            let signed = sample(action).sign(&key).unwrap();
            let decoded = SignedTransaction::decode(signed.encoded()).unwrap();
            assert_eq!(decoded, signed);
            // Every strict prefix is truncated; any extra byte is trailing.
            for cut in 0..signed.encoded().len() {
                assert!(SignedTransaction::decode(&signed.encoded()[..cut]).is_err());
            }
            let mut longer = signed.encoded().to_vec();
            longer.push(0);
            assert!(SignedTransaction::decode(&longer).is_err());
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let key = SecretKey::from_seed(&[1; 32]);
        let signed = sample(Action::Transfer {
            to: PublicKey([2; 32]),
            amount: 5,
        })
        .sign(&key)
        .unwrap();
        let mut b = signed.encoded().to_vec();
        b[0] = 2;
        assert!(matches!(
            SignedTransaction::decode(&b),
            Err(TxError::Malformed { .. })
        ));
        let mut b = signed.encoded().to_vec();
        b[2] = b' '; // chain id "t" -> " "
        assert!(SignedTransaction::decode(&b).is_err());
        let mut b = signed.encoded().to_vec();
        b[3 + 32 + 8] = 9; // action tag
        assert!(SignedTransaction::decode(&b).is_err());
        assert!(matches!(
            SignedTransaction::decode(&vec![0; TX_BYTES_MAX + 1]),
            Err(TxError::TooLarge { .. })
        ));
        let empty_key = sample(Action::Put {
            key: vec![],
            value: vec![],
        });
        assert!(empty_key.sign(&key).is_err());
        let big = sample(Action::Put {
            key: b"k".to_vec(),
            value: vec![0; TX_BYTES_MAX],
        });
        assert!(matches!(big.sign(&key), Err(TxError::TooLarge { .. })));
        let wrong_signer = sample(Action::Transfer {
            to: PublicKey([2; 32]),
            amount: 1,
        });
        assert!(wrong_signer.sign(&SecretKey::from_seed(&[2; 32])).is_err());
    }
}
