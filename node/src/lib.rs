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
pub mod rpc;
pub mod shared;
pub mod sim_cmd;
pub mod sync;
pub mod verify;
pub mod wire;
