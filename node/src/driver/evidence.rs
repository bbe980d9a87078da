//! Evidence the core produced: logged, counted per offending validator, and persisted as the
//! raw signed statements (`docs/rpc.md`, `evidence_list`) so that anyone holding the genesis
//! keys can check it. At most [`EVIDENCE_PER_VALIDATOR`] pieces are kept per validator: one
//! proves the fault; the rest are counted.

use std::collections::HashMap;

use tally_consensus::ValidatorId;
use tally_consensus::pbft::Evidence;
use tally_monitoring::ValidatorKindLabels;
use tracing::warn;

use crate::shared::Shared;

/// Pieces of evidence stored per validator.
pub const EVIDENCE_PER_VALIDATOR: usize = 64;

/// The storage key of a piece of evidence: `validator u16 BE ‖ kind u8 ‖ view u64 BE ‖ seq
/// u64 BE` (one per validator, kind and slot).
pub fn evidence_key(e: &Evidence) -> Vec<u8> {
    let (view, seq) = e.first.slot();
    let mut k = Vec::with_capacity(19);
    k.extend_from_slice(&e.validator().0.to_be_bytes());
    k.push(e.first.kind() as u8);
    k.extend_from_slice(&view.0.to_be_bytes());
    k.extend_from_slice(&seq.0.to_be_bytes());
    k
}

/// Evidence stored so far, per validator (loaded at start).
#[derive(Default)]
pub(super) struct EvidenceLog {
    stored: HashMap<ValidatorId, usize>,
}

impl EvidenceLog {
    pub fn load(shared: &Shared) -> EvidenceLog {
        let mut stored: HashMap<ValidatorId, usize> = HashMap::new();
        for (k, _) in shared.store.evidence_scan().unwrap_or_default() {
            if k.len() >= 2 {
                *stored
                    .entry(ValidatorId(u16::from_be_bytes([k[0], k[1]])))
                    .or_default() += 1;
            }
        }
        EvidenceLog { stored }
    }

    /// Logs, counts and (within the bound) persists a piece of evidence. The write runs off
    /// the event loop.
    pub fn record(&mut self, shared: &std::sync::Arc<Shared>, e: Evidence, name: &str) {
        let validator = e.validator();
        let kind = e.kind();
        let (view, seq) = e.first.slot();
        warn!(
            validator = name,
            kind,
            view = view.0,
            seq = seq.0,
            "equivocation evidence: two validly signed, conflicting statements"
        );
        shared
            .metrics
            .evidence
            .get_or_create(&ValidatorKindLabels {
                validator: name.to_string(),
                kind: kind.to_string(),
            })
            .inc();
        let stored = self.stored.entry(validator).or_default();
        if *stored >= EVIDENCE_PER_VALIDATOR {
            return;
        }
        *stored += 1;
        let (key, value) = (evidence_key(&e), e.encode());
        let store = shared.store.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = store.evidence_put(&key, &value) {
                warn!("cannot store evidence: {err}");
            }
        });
    }
}
