//! Checking the batches the core accepted ([`Output::Validate`]) and fetching the batches it
//! lacks ([`Output::FetchPayload`]).
//!
//! Nothing here acts on a peer's message directly: the core asks only for pre-prepares it
//! accepted (from the primary of its current view, inside its window, the first for that
//! slot), so a validator that is not the primary cannot make this node look up, fetch or set
//! aside a transaction. Both stores are keyed by sequence number — at most one entry per
//! sequence number in the window, L in all — and forget entries of past views and below the
//! stable checkpoint.
//!
//! [`Output::Validate`]: tally_consensus::Output::Validate
//! [`Output::FetchPayload`]: tally_consensus::Output::FetchPayload

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tally_consensus::protocol::{Input, Protocol};
use tally_consensus::{Batch, Seq, ValidatorId, View};
use tally_crypto::Digest;
use tally_monitoring::Metrics;

use super::Driver;

/// How long an accepted pre-prepare waits for its transaction bodies before the driver
/// gives up on it (the core asks again on its next retransmission).
const BODY_WAIT: Duration = Duration::from_secs(5);

/// The most transactions the batches of one proposal may hold together (`payload: batches`).
pub const BLOCK_TXS_MAX: usize = 65_536;

/// How long a validation waits for missing entries before asking for them again.
const ASK_AGAIN: Duration = Duration::from_millis(500);

/// How long a payload fetch may take before it may be asked for again.
const PAYLOAD_WAIT: Duration = Duration::from_secs(2);

/// A validation waiting for bodies.
pub(super) struct Validation {
    view: View,
    digest: Digest,
    txs: Vec<Digest>,
    since: Instant,
    /// When the missing entries were last asked for.
    asked: Instant,
}

#[derive(Default)]
pub(super) struct Pending {
    validations: BTreeMap<Seq, Validation>,
    payloads: BTreeMap<Seq, (Digest, Instant)>,
}

impl Pending {
    pub fn validations(&self) -> usize {
        self.validations.len()
    }
}

impl Driver {
    /// The core accepted the pre-prepare of `batch` at `(view, seq)`: its transactions are
    /// set aside as proposed, and once every body is held (they were checked when admitted)
    /// the core hears that the batch is valid.
    pub(super) fn on_validate(&mut self, view: View, seq: Seq, batch: Batch) {
        let now = Instant::now();
        let digest = batch.digest();
        self.mark_proposed(&batch.txs, now);
        let missing = self.missing(&batch.txs);
        if missing.is_empty() {
            self.pending.validations.remove(&seq);
            self.validated(view, seq, digest, &batch.txs);
            return;
        }
        let already = self
            .pending
            .validations
            .get(&seq)
            .is_some_and(|v| v.view == view && v.digest == digest && now < v.since + BODY_WAIT);
        if already {
            return;
        }
        let primary = self.shared.validators.primary(view);
        (self.fetch_bodies)(missing, Some(primary));
        self.pending.validations.insert(
            seq,
            Validation {
                view,
                digest,
                txs: batch.txs,
                since: now,
                asked: now,
            },
        );
    }

    /// Bodies arrived, or time passed: validations whose bodies are all held complete; those
    /// of past views, below the stable checkpoint or waiting too long are dropped.
    pub(super) fn retry_validations(&mut self) {
        if self.pending.validations.is_empty() {
            return;
        }
        let now = Instant::now();
        let (view, stable) = (self.core.view(), self.core.stable_checkpoint());
        let mut ready = Vec::new();
        let mut again = Vec::new();
        let mut pending = std::mem::take(&mut self.pending.validations);
        pending.retain(|seq, v| {
            if v.view != view || *seq <= stable {
                return false;
            }
            if self.missing(&v.txs).is_empty() {
                ready.push((v.view, *seq, v.digest, std::mem::take(&mut v.txs)));
                return false;
            }
            if now >= v.since + BODY_WAIT {
                Metrics::inc_reason(&self.shared.metrics.consensus_rejections, "missing_bodies");
                return false;
            }
            // A request or its answer may have been dropped by a full queue: ask again.
            if now >= v.asked + ASK_AGAIN {
                v.asked = now;
                again.push(self.missing(&v.txs));
            }
            true
        });
        let primary = self.shared.validators.primary(view);
        for missing in again {
            (self.fetch_bodies)(missing, Some(primary));
        }
        self.pending.validations = pending;
        for (view, seq, digest, entries) in ready {
            self.validated(view, seq, digest, &entries);
        }
    }

    /// The entries a proposal names are in flight: not to be proposed again by this node
    /// (as the next primary) until a view change drops the proposal.
    fn mark_proposed(&self, entries: &[Digest], now: Instant) {
        match &self.batches {
            Some(path) => path.pool().mark_proposed(entries),
            None => self.shared.mempool().mark_proposed(entries, now),
        }
    }

    /// The entries of a proposal this node cannot vouch for yet: transactions whose body
    /// (checked at admission) it lacks, or batches whose proof (checked on arrival) it lacks.
    fn missing(&self, entries: &[Digest]) -> Vec<Digest> {
        match &self.batches {
            Some(path) => {
                let pool = path.pool();
                entries
                    .iter()
                    .filter(|d| !pool.contains(d))
                    .copied()
                    .collect()
            }
            None => {
                let pool = self.shared.mempool();
                entries
                    .iter()
                    .filter(|h| pool.body(h).is_none())
                    .copied()
                    .collect()
            }
        }
    }

    /// Every entry is vouched for: the proposal is valid — unless, with data batches, its
    /// batches hold more transactions than a block may (a primary that does so gets no
    /// PREPARE from this node, and is replaced after the view-change timeout).
    fn validated(&mut self, view: View, seq: Seq, digest: Digest, entries: &[Digest]) {
        if let Some(path) = &self.batches {
            let txs: u64 = {
                let pool = path.pool();
                entries
                    .iter()
                    .filter_map(|d| pool.get(d))
                    .map(|p| u64::from(p.header.tx_count))
                    .sum()
            };
            if txs > BLOCK_TXS_MAX as u64 {
                Metrics::inc_reason(
                    &self.shared.metrics.consensus_rejections,
                    "proposal_too_large",
                );
                return;
            }
        }
        self.step(Input::Validated { view, seq, digest });
    }

    /// The core needs the batch of `digest` at `seq` (a NEW-VIEW re-proposed it): ask the
    /// validators that claimed it first, then the others. One fetch per sequence number at a
    /// time.
    pub(super) fn on_fetch_payload(&mut self, seq: Seq, digest: Digest, from: Vec<ValidatorId>) {
        let now = Instant::now();
        let stable = self.core.stable_checkpoint();
        self.pending.payloads.retain(|s, _| *s > stable);
        if self
            .pending
            .payloads
            .get(&seq)
            .is_some_and(|(d, at)| *d == digest && now < *at + PAYLOAD_WAIT)
        {
            return;
        }
        self.pending.payloads.insert(seq, (digest, now));
        (self.fetch_payload)(seq, digest, from);
    }

    /// A batch a peer sent for `seq`: the core keeps it only if it hashes to what it needs.
    pub(super) fn on_payload(&mut self, seq: Seq, batch: Batch) {
        if self
            .pending
            .payloads
            .get(&seq)
            .is_some_and(|(d, _)| *d == batch.digest())
        {
            self.pending.payloads.remove(&seq);
        }
        self.step(Input::Payload { seq, batch });
    }
}
