//! After commit: the [`executor`] turns committed batches into blocks ([`block`], [`chain`]:
//! execution and one RocksDB write per block); [`sync`] serves and fetches blocks with their
//! certificates; [`snapshots`] and [`repair`] replace a diverged state with the certified one.

pub mod block;
pub mod chain;
pub mod executor;
pub mod repair;
pub mod snapshots;
pub mod sync;
