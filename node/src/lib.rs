//! The Tally node: the chain (execution + persistence), and the `tally` command.

pub mod block;
pub mod chain;
pub mod cli;
pub mod sim_cmd;
