//! Transactions in: decode and stateless checks, the signature check off the event loop
//! ([`verify`]), the mempool, and gossip of what this node admitted ([`admission`]); and what
//! a peer's misbehaviour costs it ([`conduct`]).

pub mod admission;
pub mod conduct;
pub mod consensus_verify;
pub mod mempool;
pub mod shares;
pub mod verify;
