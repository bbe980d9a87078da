//! Raft's key layout in the consensus store, and how a restart reads it back.
//!
//! ```text
//! raft/base             the log's base (Compact or Reset record)
//! raft/hard             term and vote (HardState record)
//! raft/log/‖index BE    one entry (an Append record of that entry)
//! ```
//!
//! Keys sort base < hard < log, so a restart applies the base first, then the hard state,
//! then the entries in index order.

use crate::protocol::StoreOp;

use super::{Durable, Index, Record};

const BASE: &[u8] = b"raft/base";
const HARD: &[u8] = b"raft/hard";
const LOG: &[u8] = b"raft/log/";
/// Every key of this protocol starts with it.
pub const PREFIX: &[u8] = b"raft/";

fn log_key(index: Index) -> Vec<u8> {
    let mut k = LOG.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn log_end() -> Vec<u8> {
    let mut k = LOG.to_vec();
    k.extend_from_slice(&[0xff; 9]);
    k
}

fn encode(r: &Record) -> Vec<u8> {
    borsh::to_vec(r).expect("in-memory encoding cannot fail")
}

/// The writes that make `record` durable, in order.
pub fn ops(record: &Record) -> Vec<StoreOp> {
    match record {
        Record::HardState { .. } => vec![StoreOp::Put {
            key: HARD.to_vec(),
            value: encode(record),
        }],
        Record::Append { entries } => {
            let Some(first) = entries.first() else {
                return Vec::new();
            };
            // Entries at and after the first are replaced (a conflicting suffix goes).
            let mut ops = vec![StoreOp::DeleteRange {
                start: log_key(first.index),
                end: log_end(),
            }];
            ops.extend(entries.iter().map(|e| StoreOp::Put {
                key: log_key(e.index),
                value: encode(&Record::Append {
                    entries: vec![e.clone()],
                }),
            }));
            ops
        }
        Record::Compact { index, .. } => vec![
            StoreOp::DeleteRange {
                start: log_key(0),
                end: log_key(index + 1),
            },
            StoreOp::Put {
                key: BASE.to_vec(),
                value: encode(record),
            },
        ],
        Record::Reset { .. } => vec![
            StoreOp::DeleteRange {
                start: log_key(0),
                end: log_end(),
            },
            StoreOp::Put {
                key: BASE.to_vec(),
                value: encode(record),
            },
        ],
    }
}

/// The durable state the stored records (every key under [`PREFIX`], in key order) leave.
pub fn restore(stored: &[(Vec<u8>, Vec<u8>)]) -> Result<Durable, String> {
    let mut durable = Durable::default();
    for (key, value) in stored {
        let record: Record = borsh::from_slice(value)
            .map_err(|e| format!("raft record {}: {e}", String::from_utf8_lossy(key)))?;
        if let Record::Append { entries } = &record
            && let Some(e) = entries.first()
            && e.index != durable.base_index + durable.entries.len() as Index + 1
        {
            return Err(format!(
                "raft log has a gap: entry {} follows {}",
                e.index,
                durable.base_index + durable.entries.len() as Index
            ));
        }
        durable.apply(&record);
    }
    Ok(durable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, Payload};
    use std::collections::BTreeMap;

    fn entry(term: u64, index: Index) -> Entry {
        Entry {
            term,
            index,
            payload: Payload::Noop,
            leader: crate::ValidatorId(0),
            signature: tally_crypto::Signature([0; 64]),
        }
    }

    /// Carries out ops on an ordered map, as the consensus store does.
    fn apply(store: &mut BTreeMap<Vec<u8>, Vec<u8>>, record: &Record) {
        for op in ops(record) {
            match op {
                StoreOp::Put { key, value } => {
                    store.insert(key, value);
                }
                StoreOp::DeleteRange { start, end } => store.retain(|k, _| *k < start || *k >= end),
            }
        }
    }

    /// Whatever sequence of records, reading the store back gives what applying the records
    /// in memory gives.
    #[test]
    fn restore_matches_the_records() {
        let records = vec![
            Record::HardState {
                term: 2,
                voted_for: Some(crate::ValidatorId(1)),
            },
            Record::Append {
                entries: (1..=5).map(|i| entry(1, i)).collect(),
            },
            Record::Append {
                entries: vec![entry(2, 4)],
            },
            Record::Compact { index: 2, term: 1 },
            Record::Append {
                entries: vec![entry(2, 5), entry(2, 6)],
            },
        ];
        let mut store = BTreeMap::new();
        let mut expected = Durable::default();
        for r in &records {
            apply(&mut store, r);
            expected.apply(r);
            let stored: Vec<_> = store.clone().into_iter().collect();
            assert_eq!(restore(&stored).unwrap(), expected);
        }
        assert_eq!(expected.entries.len(), 4);
        apply(&mut store, &Record::Reset { index: 9, term: 3 });
        expected.apply(&Record::Reset { index: 9, term: 3 });
        let stored: Vec<_> = store.into_iter().collect();
        assert_eq!(restore(&stored).unwrap(), expected);
    }
}
