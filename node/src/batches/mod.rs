//! Data batches (`consensus.payload = "batches"`): what travels between validators instead of
//! single transactions. A validator packs the transactions its clients sent it into a [`TxBatch`],
//! streams it once to every other validator, and f + 1 validators attest it; consensus then
//! orders the batch's header with its proof (`tally_consensus::availability`).
//!
//! * [`attest`]: the check an attester applies (who attests, and when, is decided by
//!   `tally_consensus::availability::Disseminator`);
//! * [`body`]: the batch's encoding and the checks a receiver applies before storing it;
//! * [`maker`]: cutting batches from admitted transactions, with batch numbers that survive
//!   restarts;
//! * [`pool`]: the verified proofs a primary proposes from, bounded per author;
//! * [`resolve`]: the executor waiting for a committed block's batches, fetching missing ones;
//! * [`service`]: the task that runs all of it between admission and consensus;
//! * [`store`]: the batches a validator holds until they are in a block, bounded per author
//!   and kept in RocksDB across restarts;
//! * [`wire`]: the frames of the batch stream, checked before anything acts on them.

pub mod attest;
pub mod body;
pub mod maker;
pub mod pool;
pub mod resolve;
pub mod service;
pub mod store;
pub mod wire;

pub use body::{BatchError, TxBatch};
pub use store::{BatchStore, Inserted, Quota, Refused};
