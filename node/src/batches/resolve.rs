//! The executor's side of the batch path: a committed block names batches by digest, and
//! before executing it the executor needs each one's proof and body. Missing ones are asked
//! of the validators that hold them (the proof's attesters), for a bounded number of rounds;
//! after that the block sync brings the block with its bodies.

use std::sync::Arc;
use std::time::Duration;

use tally_consensus::{BatchProof, ValidatorId};
use tally_crypto::{Digest, Verified};
use tracing::warn;

use super::body::TxBatch;
use super::service::{BatchPath, ServiceInput};
use crate::FastMap;

/// Rounds of asking (each waits up to 500 ms) before the executor gives up on a commit.
pub const RESOLVE_ATTEMPTS: usize = 8;

/// A committed batch's proof and body.
pub type Resolved = (Arc<Verified<BatchProof>>, Arc<TxBatch>);

/// Waits (on the executor's thread) until the proof and body of every batch in `digests`
/// are held, asking peers for the missing ones; `None` when they did not come in time.
pub fn resolve(
    path: &BatchPath,
    runtime: &tokio::runtime::Handle,
    digests: &[Digest],
    attempts: usize,
) -> Option<Vec<Resolved>> {
    // A node that fell behind cannot get its peers' proofs and bodies once their blocks are
    // written (they keep neither): after a few attempts the executor waits for the block
    // sync instead, which carries the bodies with their certificates.
    for attempt in 0..attempts.max(1) {
        let mut missing_proofs = Vec::new();
        let mut missing_bodies: FastMap<ValidatorId, Vec<Digest>> = FastMap::default();
        let mut out = Vec::with_capacity(digests.len());
        for d in digests {
            let Some(proof) = path.pool().get(d) else {
                missing_proofs.push(*d);
                continue;
            };
            match path.body(d) {
                Some(body) => out.push((proof, body)),
                None => {
                    let holders: Vec<ValidatorId> = proof.holders().collect();
                    let from = holders[attempt % holders.len()];
                    missing_bodies.entry(from).or_default().push(*d);
                }
            }
        }
        if missing_proofs.is_empty() && missing_bodies.is_empty() {
            return Some(out);
        }
        if attempt > 0 {
            warn!(
                proofs = missing_proofs.len(),
                bodies = missing_bodies.values().map(Vec::len).sum::<usize>(),
                "fetching committed batches"
            );
        }
        let notified = path.arrived.notified();
        let last = attempt + 1 == attempts.max(1);
        if !missing_proofs.is_empty() {
            // Any validator that voted for the block has the proofs; ask them all.
            path.submit(ServiceInput::FetchProofs {
                digests: missing_proofs,
                from: None,
            });
        }
        for (from, digests) in missing_bodies {
            path.submit(ServiceInput::FetchBodies { digests, from });
        }
        if last {
            // Asked; what arrives is used by the next try. Waiting here would only hold up
            // the executor (and a block sync queued behind this commit).
            break;
        }
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
        });
    }
    None
}
