//! Subcommands of the `tally` binary that are not the daemon: the benchmark, the local devnet,
//! the JSON-RPC client commands and the simulator front end. They use the daemon only as a
//! separate process (through the CLI and RPC), except `sim`, which runs the consensus core.

pub mod bench;
pub mod client;
pub mod devnet;
pub mod sim;
