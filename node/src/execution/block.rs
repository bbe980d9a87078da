//! Blocks as stored and served: header, transactions, their outcomes, and the commit
//! certificate.

use tally_consensus::CommitCertificate;
use tally_crypto::Digest;
use tally_ledger::{BlockHeader, TxOutcome};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    pub header: BlockHeader,
    pub txs: Vec<Vec<u8>>,
    pub outcomes: Vec<TxOutcome>,
    /// `None` only for blocks made outside consensus (tests, tools).
    pub certificate: Option<CommitCertificate>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stored block is corrupt: {0}")]
pub struct BlockDecodeError(pub String);

impl StoredBlock {
    pub fn hash(&self) -> Digest {
        self.header.hash()
    }

    /// `height u64 ‖ prev_hash ‖ batch_digest ‖ state_root ‖ count u32 ‖ (len u32 ‖ tx)* ‖
    /// outcome(17)* ‖ cert_len u32 ‖ cert`, integers little-endian; `cert_len` 0 means none.
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self.txs.iter().map(|t| t.len() + 4 + 17).sum();
        let mut out = Vec::with_capacity(112 + body + 400);
        let h = &self.header;
        out.extend_from_slice(&h.height.to_le_bytes());
        out.extend_from_slice(&h.prev_hash.0);
        out.extend_from_slice(&h.batch_digest.0);
        out.extend_from_slice(&h.state_root.0);
        out.extend_from_slice(&(self.txs.len() as u32).to_le_bytes());
        for tx in &self.txs {
            out.extend_from_slice(&(tx.len() as u32).to_le_bytes());
            out.extend_from_slice(tx);
        }
        for o in &self.outcomes {
            out.extend_from_slice(&o.encode());
        }
        let cert = self
            .certificate
            .as_ref()
            .map(|c| c.encode())
            .unwrap_or_default();
        out.extend_from_slice(&(cert.len() as u32).to_le_bytes());
        out.extend_from_slice(&cert);
        out
    }

    /// The header alone (the first 104 bytes), without reading the transactions.
    pub fn decode_header(bytes: &[u8]) -> Result<BlockHeader, BlockDecodeError> {
        if bytes.len() < 104 {
            return Err(BlockDecodeError("truncated header".into()));
        }
        let digest = |b: &[u8]| Digest(b.try_into().expect("32 bytes"));
        Ok(BlockHeader {
            height: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            prev_hash: digest(&bytes[8..40]),
            batch_digest: digest(&bytes[40..72]),
            state_root: digest(&bytes[72..104]),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredBlock, BlockDecodeError> {
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8], BlockDecodeError> {
            let end = pos
                .checked_add(n)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| BlockDecodeError(format!("truncated at byte {pos}")))?;
            let s = &bytes[pos..end];
            pos = end;
            Ok(s)
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
        let digest = |b: &[u8]| Digest(b.try_into().expect("32 bytes"));
        let height = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let prev_hash = digest(take(32)?);
        let batch_digest = digest(take(32)?);
        let state_root = digest(take(32)?);
        let count = u32_of(take(4)?);
        let mut txs = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let len = u32_of(take(4)?);
            txs.push(take(len)?.to_vec());
        }
        let mut outcomes = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let raw: &[u8; 17] = take(17)?.try_into().expect("17 bytes");
            outcomes.push(
                TxOutcome::decode(raw).ok_or_else(|| BlockDecodeError("bad outcome".into()))?,
            );
        }
        let cert_len = u32_of(take(4)?);
        let cert = take(cert_len)?;
        let certificate = if cert_len == 0 {
            None
        } else {
            Some(CommitCertificate::decode(cert).map_err(|e| BlockDecodeError(e.to_string()))?)
        };
        if pos != bytes.len() {
            return Err(BlockDecodeError("trailing bytes".into()));
        }
        Ok(StoredBlock {
            header: BlockHeader {
                height,
                prev_hash,
                batch_digest,
                state_root,
            },
            txs,
            outcomes,
            certificate,
        })
    }
}
