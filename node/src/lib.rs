//! The Tally node. The daemon's modules follow the data path:
//!
//! * [`batches`]: data batches and their store (the batch data path, being built);
//! * [`ingress`]: transactions in (JSON-RPC and gossip) — decode, signature check, mempool;
//! * [`driver`]: the one event loop around the consensus core (verify, validate, persist, send);
//! * [`execution`]: committed batches into blocks, RocksDB, block sync, state repair;
//! * [`rpc`]: the JSON-RPC server; [`daemon`] wires them together;
//! * [`memory`]: the allocator's free memory given back to the system.
//!
//! [`tools`] holds the other subcommands of the `tally` binary (bench, devnet, the RPC client,
//! sim); nothing in the daemon depends on them.

pub mod batches;
pub mod cli;
pub mod daemon;
pub mod driver;
pub mod execution;
pub mod ingress;
pub mod memory;
pub mod metrics_refresh;
pub mod rpc;
pub mod shared;
pub mod tools;
pub mod wire;

/// Hash maps on the hot path (keyed by transaction digests and account keys): foldhash with
/// a per-process random seed. SipHash, the standard library's default, cost 3–4% of a node's
/// CPU under load; a random seed keeps clients from choosing colliding keys.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set counterpart of [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
