//! Multi-Paxos's key layout in the consensus store, and how a restart reads it back.
//!
//! ```text
//! paxos/base             every slot up to here executed (Compact record)
//! paxos/promise          the highest ballot promised (Promise record)
//! paxos/slot/‖slot BE    the value accepted in a slot, with its ballot (Accept record)
//! ```
//!
//! Keys sort base < promise < slot, so a restart applies the base first.

use crate::protocol::StoreOp;

use super::{Durable, Record, Slot};

const BASE: &[u8] = b"paxos/base";
const PROMISE: &[u8] = b"paxos/promise";
const SLOT: &[u8] = b"paxos/slot/";
/// Every key of this protocol starts with it.
pub const PREFIX: &[u8] = b"paxos/";

fn slot_key(slot: Slot) -> Vec<u8> {
    let mut k = SLOT.to_vec();
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

fn encode(r: &Record) -> Vec<u8> {
    borsh::to_vec(r).expect("in-memory encoding cannot fail")
}

/// The writes that make `record` durable, in order.
pub fn ops(record: &Record) -> Vec<StoreOp> {
    match record {
        // A promise only ever rises (an Accept of a higher ballot also promises it; the
        // restart takes the highest of both).
        Record::Promise { .. } => vec![StoreOp::Put {
            key: PROMISE.to_vec(),
            value: encode(record),
        }],
        Record::Accept { slot, .. } => vec![StoreOp::Put {
            key: slot_key(*slot),
            value: encode(record),
        }],
        Record::Compact { slot } => vec![
            StoreOp::DeleteRange {
                start: slot_key(0),
                end: slot_key(slot + 1),
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
            .map_err(|e| format!("paxos record {}: {e}", String::from_utf8_lossy(key)))?;
        durable.apply(&record);
    }
    Ok(durable)
}
