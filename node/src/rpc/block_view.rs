//! A block as JSON-RPC serves it (`block_get`, `subscribe_blocks`; the shape is in
//! `docs/rpc.md`), serialized straight from the stored block: no `serde_json::Value` tree and
//! no `String` per hash. A `subscribe_blocks` notification is serialized once per block and
//! shared by every subscriber ([`crate::shared::CommittedBlock::notification`]): built per
//! subscriber as a `Value`, it cost ≈ 3 µs per transaction per subscriber (a third of the RPC
//! threads' CPU with the benchmark's one subscriber at 12,000 tx/s), so a node's CPU grew with
//! subscribers × transaction rate.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use tally_crypto::Digest;
use tally_ledger::TxOutcome;

use crate::execution::block::{BlockBatch, StoredBlock};
use tally_consensus::{CommitCertificate, ValidatorSet};

/// `block` as JSON; `tx_hashes` when the caller has them (else each body is hashed).
pub struct BlockView<'a> {
    pub validators: &'a ValidatorSet,
    pub block: &'a StoredBlock,
    pub tx_hashes: Option<&'a [Digest]>,
    pub include_txs: bool,
}

/// Bytes as lowercase hex digits; up to 64 bytes without allocating.
struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 128];
        if self.0.len() <= 64 {
            let out = &mut buf[..self.0.len() * 2];
            hex::encode_to_slice(self.0, out).expect("twice the length");
            s.serialize_str(std::str::from_utf8(out).expect("hex is ASCII"))
        } else {
            s.serialize_str(&hex::encode(self.0))
        }
    }
}

/// A sequence from an iterator that can be walked again (serialization takes `&self`).
struct Seq<F>(F);

impl<F, I, T> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: ExactSizeIterator<Item = T>,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let items = (self.0)();
        let mut seq = s.serialize_seq(Some(items.len()))?;
        for item in items {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

struct Outcome<'a>(&'a TxOutcome);

impl Serialize for Outcome<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TxOutcome::Ok => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("status", "ok")?;
                m.end()
            }
            TxOutcome::Failed(e) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("status", "failed")?;
                m.serialize_entry(
                    "error",
                    &serde_json::json!({ "code": e.code(), "name": e.name(), "message": e.to_string() }),
                )?;
                m.end()
            }
        }
    }
}

struct Batch<'a>(&'a BlockBatch);

impl Serialize for Batch<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = &self.0.header;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("author", &h.author.0)?;
        m.serialize_entry("index", &h.index)?;
        m.serialize_entry("tx_count", &h.tx_count)?;
        m.serialize_entry("bytes", &h.bytes)?;
        m.serialize_entry("tx_digest", &Hex(&h.tx_digest.0))?;
        m.serialize_entry("executed", &self.0.executed)?;
        m.end()
    }
}

struct Certificate<'a>(&'a ValidatorSet, &'a CommitCertificate);

impl Serialize for Certificate<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (validators, c) = (self.0, self.1);
        let signatures = Seq(|| {
            c.signatures.iter().map(|(id, sig)| {
                serde_json::json!({
                    "validator": id.0,
                    "public_key": validators.public_key(*id).map(|k| k.to_hex()),
                    "signature": sig.to_hex(),
                })
            })
        });
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("view", &c.view.0)?;
        m.serialize_entry("seq", &c.seq.0)?;
        m.serialize_entry("digest", &Hex(&c.digest.0))?;
        m.serialize_entry("signatures", &signatures)?;
        m.end()
    }
}

impl Serialize for BlockView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.block;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("height", &b.header.height)?;
        m.serialize_entry("hash", &Hex(&b.hash().0))?;
        m.serialize_entry("prev_hash", &Hex(&b.header.prev_hash.0))?;
        m.serialize_entry("batch_digest", &Hex(&b.header.batch_digest.0))?;
        m.serialize_entry("state_root", &Hex(&b.header.state_root.0))?;
        match self.tx_hashes {
            Some(hashes) => {
                m.serialize_entry("tx_hashes", &Seq(|| hashes.iter().map(|h| Hex(&h.0))))?
            }
            None => m.serialize_entry(
                "tx_hashes",
                &Seq(|| b.txs.iter().map(|t| HexDigest(Digest::of(t)))),
            )?,
        }
        m.serialize_entry("results", &Seq(|| b.outcomes.iter().map(Outcome)))?;
        m.serialize_entry(
            "certificate",
            &b.certificate
                .as_ref()
                .map(|c| Certificate(self.validators, c)),
        )?;
        if !b.batches.is_empty() {
            m.serialize_entry("batches", &Seq(|| b.batches.iter().map(Batch)))?;
        }
        if self.include_txs {
            m.serialize_entry("txs", &Seq(|| b.txs.iter().map(|t| Hex(t))))?;
        }
        m.end()
    }
}

/// An owned digest as hex (for hashes computed while serializing).
struct HexDigest(Digest);

impl Serialize for HexDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Hex(&self.0.0).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use tally_consensus::{BatchHeader, Seq as SeqNo, ValidatorId, View};
    use tally_crypto::{SecretKey, Signature};
    use tally_ledger::{BlockHeader, TxError};

    /// The shape `docs/rpc.md` documents, built the slow way (as the node did before).
    fn reference(
        validators: &ValidatorSet,
        b: &StoredBlock,
        hashes: Option<&[Digest]>,
        txs: bool,
    ) -> Value {
        let results: Vec<Value> = b
            .outcomes
            .iter()
            .map(|o| match o {
                TxOutcome::Ok => json!({ "status": "ok" }),
                TxOutcome::Failed(e) => json!({ "status": "failed",
                    "error": { "code": e.code(), "name": e.name(), "message": e.to_string() } }),
            })
            .collect();
        let certificate = b.certificate.as_ref().map(|c| {
            json!({ "view": c.view.0, "seq": c.seq.0, "digest": c.digest.to_hex(),
                "signatures": c.signatures.iter().map(|(id, sig)| json!({ "validator": id.0,
                    "public_key": validators.public_key(*id).map(|k| k.to_hex()),
                    "signature": sig.to_hex() })).collect::<Vec<_>>() })
        });
        let tx_hashes: Vec<String> = match hashes {
            Some(h) => h.iter().map(Digest::to_hex).collect(),
            None => b.txs.iter().map(|t| Digest::of(t).to_hex()).collect(),
        };
        let mut v = json!({ "height": b.header.height, "hash": b.hash().to_hex(),
            "prev_hash": b.header.prev_hash.to_hex(), "batch_digest": b.header.batch_digest.to_hex(),
            "state_root": b.header.state_root.to_hex(), "tx_hashes": tx_hashes,
            "results": results, "certificate": certificate });
        if !b.batches.is_empty() {
            v["batches"] = b
                .batches
                .iter()
                .map(|x| {
                    json!({ "author": x.header.author.0,
                "index": x.header.index, "tx_count": x.header.tx_count, "bytes": x.header.bytes,
                "tx_digest": x.header.tx_digest.to_hex(), "executed": x.executed })
                })
                .collect::<Vec<_>>()
                .into();
        }
        if txs {
            v["txs"] = b
                .txs
                .iter()
                .map(|t| tally_crypto::to_hex(t))
                .collect::<Vec<_>>()
                .into();
        }
        v
    }

    #[test]
    fn the_typed_view_serializes_the_documented_shape() {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect();
        let validators = ValidatorSet::new(&keys).unwrap();
        let txs = vec![vec![1u8; 40], vec![2u8; 700], vec![3u8; 64]];
        let header = |author, executed| BlockBatch {
            header: BatchHeader {
                author: ValidatorId(author),
                index: 7,
                tx_count: 2,
                bytes: 740,
                tx_digest: Digest([author as u8; 32]),
            },
            executed,
        };
        let mut block = StoredBlock {
            header: BlockHeader {
                height: 12,
                prev_hash: Digest([9; 32]),
                batch_digest: Digest([8; 32]),
                state_root: Digest([7; 32]),
            },
            txs: txs.clone(),
            outcomes: vec![
                TxOutcome::Ok,
                TxOutcome::Failed(TxError::InsufficientBalance {
                    balance: 1,
                    amount: 2,
                }),
                TxOutcome::Ok,
            ],
            certificate: Some(CommitCertificate {
                view: View(3),
                seq: SeqNo(12),
                digest: Digest([6; 32]),
                // Validator 9 is not in the set: its key is null.
                signatures: vec![
                    (ValidatorId(0), Signature([5; 64])),
                    (ValidatorId(9), Signature([4; 64])),
                ],
            }),
            batches: vec![header(1, true), header(2, false)],
        };
        let hashes: Vec<Digest> = txs.iter().map(|t| Digest::of(t)).collect();
        for _ in 0..2 {
            for (h, with_txs) in [
                (None, false),
                (None, true),
                (Some(&hashes[..]), false),
                (Some(&hashes[..]), true),
            ] {
                let view = BlockView {
                    validators: &validators,
                    block: &block,
                    tx_hashes: h,
                    include_txs: with_txs,
                };
                let typed: Value =
                    serde_json::from_str(&serde_json::to_string(&view).unwrap()).unwrap();
                assert_eq!(typed, reference(&validators, &block, h, with_txs));
            }
            // And a block without certificate or batches.
            block.certificate = None;
            block.batches.clear();
        }
    }
}
