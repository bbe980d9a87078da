//! The Tally node: the chain (execution + persistence), the driver (the one consensus event
//! loop), the mempool, p2p admission, block sync, JSON-RPC, and the `tally` command.

pub mod admission;
pub mod bench;
pub mod block;
pub mod chain;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod devnet;
pub mod driver;
pub mod executor;
pub mod mempool;
pub mod repair;
pub mod rpc;
pub mod shared;
pub mod sim_cmd;
pub mod snapshots;
pub mod sync;
pub mod verify;
pub mod wire;

/// Hash maps on the hot path (keyed by transaction digests and account keys): foldhash with
/// a per-process random seed. SipHash, the standard library's default, cost 3–4% of a node's
/// CPU under load; a random seed keeps clients from choosing colliding keys.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set counterpart of [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
