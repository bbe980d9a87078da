//! Transactions in: decode and stateless checks, the signature check off the event loop
//! ([`verify`]), the mempool, and gossip of what this node admitted ([`admission`]).

pub mod admission;
pub mod mempool;
pub mod verify;
