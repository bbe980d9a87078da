//! Tally's consensus protocols, as pure state machines (no I/O, clock, RNG or runtime).

pub mod certificate;
pub mod types;

pub use certificate::{COMMIT_DOMAIN, CommitCertificate, commit_body};
pub use types::{Seq, ValidatorId, ValidatorSet, View};
