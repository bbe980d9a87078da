//! A data batch's body: its header and its transactions' encodings, in order.
//!
//! Encoding (borsh): `header (BatchHeader) ‖ count u32 LE ‖ (length u32 LE ‖ bytes)*`. The
//! header's claims are checked against the body on receipt: the count, the byte total, each
//! transaction's length bounds, and the digest of the transactions' hashes. A transaction's
//! hash is SHA-256 of its encoding, so a receiver checks a batch without decoding a single
//! transaction; only attesters decode them and check their signatures.

use borsh::{BorshDeserialize, BorshSerialize};
use tally_consensus::availability::{BATCH_BYTES_MAX, BATCH_TXS_MAX};
use tally_consensus::{BatchHeader, ValidatorId, ValidatorSet, batch_digest};
use tally_crypto::Digest;
use tally_ledger::{TX_BYTES_MAX, TX_BYTES_MIN};

/// A batch whose header matches its body (only [`TxBatch::new`] and [`TxBatch::decode`] make
/// one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxBatch {
    header: BatchHeader,
    txs: Vec<Vec<u8>>,
    tx_hashes: Vec<Digest>,
    digest: Digest,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct Wire {
    header: BatchHeader,
    txs: Vec<Vec<u8>>,
}

/// Why a received batch is refused. Each means the sender (or the author it relays) broke
/// the protocol: honest validators never produce such a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch encoding is malformed")]
    Malformed,
    #[error("batch author {0} is not a validator")]
    UnknownAuthor(u16),
    #[error(
        "batch is outside the limits (1..={BATCH_TXS_MAX} transactions, {BATCH_BYTES_MAX} bytes)"
    )]
    Limits,
    #[error("a transaction of {0} bytes is outside {TX_BYTES_MIN}..={TX_BYTES_MAX}")]
    TxLength(usize),
    #[error("batch header claims {claimed} but the body has {actual}")]
    HeaderMismatch { claimed: String, actual: String },
}

impl TxBatch {
    /// The batch `author` makes as its `index`-th from `txs` (encodings of transactions it
    /// admitted). Panics only on a caller's bug: more than the limits allow.
    pub fn new(author: ValidatorId, index: u64, txs: Vec<Vec<u8>>) -> TxBatch {
        let tx_hashes: Vec<Digest> = txs.iter().map(|t| Digest::of(t)).collect();
        let bytes: usize = txs.iter().map(Vec::len).sum();
        let header = BatchHeader {
            author,
            index,
            tx_count: u32::try_from(txs.len()).expect("a batch holds at most BATCH_TXS_MAX"),
            bytes: u32::try_from(bytes).expect("a batch holds at most BATCH_BYTES_MAX"),
            tx_digest: batch_digest(&tx_hashes),
        };
        assert!(header.within_limits(), "batch cut beyond the limits");
        TxBatch {
            digest: header.digest(),
            header,
            txs,
            tx_hashes,
        }
    }

    /// Decodes a batch a peer sent and checks that its header matches its body.
    pub fn decode(bytes: &[u8], validators: &ValidatorSet) -> Result<TxBatch, BatchError> {
        if bytes.len() > BATCH_BYTES_MAX as usize + 4 * BATCH_TXS_MAX as usize + 64 {
            return Err(BatchError::Limits);
        }
        let Wire { header, txs } = borsh::from_slice(bytes).map_err(|_| BatchError::Malformed)?;
        if validators.key(header.author).is_none() {
            return Err(BatchError::UnknownAuthor(header.author.0));
        }
        if !header.within_limits() {
            return Err(BatchError::Limits);
        }
        if let Some(t) = txs
            .iter()
            .find(|t| t.len() < TX_BYTES_MIN || t.len() > TX_BYTES_MAX)
        {
            return Err(BatchError::TxLength(t.len()));
        }
        let total: usize = txs.iter().map(Vec::len).sum();
        if (txs.len(), total) != (header.tx_count as usize, header.bytes as usize) {
            return Err(BatchError::HeaderMismatch {
                claimed: format!("{} transactions, {} bytes", header.tx_count, header.bytes),
                actual: format!("{} transactions, {total} bytes", txs.len()),
            });
        }
        let tx_hashes: Vec<Digest> = txs.iter().map(|t| Digest::of(t)).collect();
        let tx_digest = batch_digest(&tx_hashes);
        if tx_digest != header.tx_digest {
            return Err(BatchError::HeaderMismatch {
                claimed: format!("transactions digest {}", header.tx_digest),
                actual: format!("transactions digest {tx_digest}"),
            });
        }
        Ok(TxBatch {
            digest: header.digest(),
            header,
            txs,
            tx_hashes,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(&Wire {
            header: self.header,
            txs: self.txs.clone(),
        })
        .expect("encoding to memory cannot fail")
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The header's digest: the batch's name.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn txs(&self) -> &[Vec<u8>] {
        &self.txs
    }

    pub fn tx_hashes(&self) -> &[Digest] {
        &self.tx_hashes
    }

    /// Bytes of transactions (the header's claim, checked).
    pub fn bytes(&self) -> usize {
        self.header.bytes as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_crypto::SecretKey;

    fn validators(n: u8) -> ValidatorSet {
        let keys: Vec<_> = (1..=n)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect();
        ValidatorSet::new(&keys).unwrap()
    }

    fn txs(count: usize, len: usize) -> Vec<Vec<u8>> {
        (0..count).map(|i| vec![i as u8; len]).collect()
    }

    #[test]
    fn a_batch_round_trips_and_names_itself_by_its_header() {
        let set = validators(4);
        let b = TxBatch::new(ValidatorId(2), 5, txs(3, 200));
        assert_eq!(b.header().tx_count, 3);
        assert_eq!(b.header().bytes, 600);
        assert_eq!(b.digest(), b.header().digest());
        assert_eq!(b.tx_hashes()[1], Digest::of(&[1u8; 200]));
        let back = TxBatch::decode(&b.encode(), &set).unwrap();
        assert_eq!(back, b);
    }

    fn tampered(f: impl FnOnce(&mut Wire)) -> Vec<u8> {
        let b = TxBatch::new(ValidatorId(1), 0, txs(4, 150));
        let mut w = Wire {
            header: *b.header(),
            txs: b.txs().to_vec(),
        };
        f(&mut w);
        borsh::to_vec(&w).unwrap()
    }

    #[test]
    fn a_header_that_lies_about_its_body_is_refused() {
        let set = validators(4);
        let check = |bytes: Vec<u8>| TxBatch::decode(&bytes, &set);
        assert!(matches!(
            check(tampered(|w| w.txs[2][0] ^= 1)),
            Err(BatchError::HeaderMismatch { .. })
        ));
        assert!(matches!(
            check(tampered(|w| {
                w.txs.pop();
            })),
            Err(BatchError::HeaderMismatch { .. })
        ));
        assert!(matches!(
            check(tampered(|w| w.txs.swap(0, 1))),
            Err(BatchError::HeaderMismatch { .. })
        ));
        assert!(matches!(
            check(tampered(|w| w.header.bytes += 1)),
            Err(BatchError::HeaderMismatch { .. })
        ));
        assert_eq!(
            check(tampered(|w| w.header.author = ValidatorId(4))),
            Err(BatchError::UnknownAuthor(4))
        );
        assert_eq!(
            check(tampered(|w| w.txs[0] = vec![0; 10])),
            Err(BatchError::TxLength(10))
        );
        assert_eq!(
            check(tampered(|w| {
                w.txs.clear();
                w.header.tx_count = 0;
            })),
            Err(BatchError::Limits)
        );
        let mut bytes = tampered(|_| {});
        bytes.push(0);
        assert_eq!(check(bytes), Err(BatchError::Malformed));
        assert_eq!(check(vec![1, 2, 3]), Err(BatchError::Malformed));
    }
}
