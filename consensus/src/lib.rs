//! Tally's consensus protocols, as pure state machines: no I/O, no clock, no randomness, no
//! runtime. A driver (the node, or the simulator) feeds [`Input`]s and carries out
//! [`Output`]s in order; see [`protocol`] for the diagram and the ordering rule.
//!
//! * [`pbft`]: PBFT, the default (Byzantine faults);
//! * [`sim`]: a deterministic simulator that runs whole clusters under faults, with
//!   one checker per invariant.

pub mod availability;
pub mod batch;
pub mod certificate;
pub mod engine;
mod entropy;
pub mod paxos;
pub mod pbft;
pub mod protocol;
pub mod raft;
pub mod signer;
pub mod sim;
pub mod types;

pub use availability::{ATTEST_DOMAIN, BatchHeader, BatchProof, ProofError};
pub use batch::{Batch, batch_digest};
pub use certificate::{
    COMMIT_DOMAIN, CertificateError, CommitCertificate, LEADER_COMMIT_DOMAIN, commit_body,
};
pub use engine::Engine;
pub use protocol::{Event, Input, Millis, Output, PeerMessage, Protocol, WireMessage};
pub use signer::{KeySigner, Signer};
pub use types::{FaultModel, Seq, ValidatorId, ValidatorSet, View};
