//! Every metric Tally exports. Names follow Prometheus conventions: `tally_` prefix,
//! counters end in `_total`, durations in `_seconds`, sizes in `_bytes`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseValidatorLabels {
    pub phase: String,
    pub validator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidatorLabels {
    pub validator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValidatorKindLabels {
    pub validator: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct P2pLabels {
    pub protocol: String,
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeInfoLabels {
    pub chain_id: String,
    pub consensus: String,
    pub validator: String,
    pub version: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~33 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

fn size_histogram() -> Histogram {
    // 1 … 65536 transactions
    Histogram::new(exponential_buckets(1.0, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub transactions_committed: Family<OutcomeLabels, Counter>,
    pub blocks_committed: Counter,
    pub height: Gauge,
    pub block_transactions: Histogram,
    pub phase_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub quorum_completed_by: Family<PhaseValidatorLabels, Counter>,
    pub vote_lateness: Family<PhaseValidatorLabels, Histogram, fn() -> Histogram>,
    pub votes_missing: Family<ValidatorLabels, Counter>,
    pub transaction_latency: Histogram,
    /// The epoch (PBFT view, Raft term, Multi-Paxos ballot round), labelled by protocol.
    pub epoch: Family<ProtocolLabels, Gauge>,
    pub leader: Gauge,
    pub view_changes: Family<ReasonLabels, Counter>,
    pub stable_checkpoint: Gauge,
    pub state_transfers: Counter,
    pub state_transfer_blocks: Counter,
    pub syncing: Gauge,
    pub mempool_transactions: Gauge,
    pub mempool_bytes: Gauge,
    pub mempool_ready: Gauge,
    pub mempool_admitted: Family<SourceLabels, Counter>,
    pub mempool_rejected: Family<ReasonLabels, Counter>,
    pub batch_store_batches: Gauge,
    pub batch_store_bytes: Gauge,
    pub proof_pool_proofs: Gauge,
    pub batches_unproven: Gauge,
    pub batch_frames_queued_bytes: Gauge,
    pub batch_order_gaps: Counter,
    pub peers: Gauge,
    pub p2p_messages: Family<P2pLabels, Counter>,
    pub p2p_bytes: Family<P2pLabels, Counter>,
    pub p2p_dropped: Family<DirectionLabels, Counter>,
    pub p2p_gossip_rejected: Counter,
    pub p2p_genesis_mismatch: Counter,
    pub storage_write_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub storage_written_bytes: Family<KindLabels, Counter>,
    pub storage_size: Gauge,
    pub storage_memory: Family<KindLabels, Gauge>,
    pub evidence: Family<ValidatorKindLabels, Counter>,
    pub state_diverged: Gauge,
    pub state_repairs: Family<OutcomeLabels, Counter>,
    pub consensus_stored_messages: Gauge,
    pub consensus_stored_bytes: Gauge,
    pub consensus_stored_messages_bound: Gauge,
    pub consensus_stored_bytes_bound: Gauge,
    pub consensus_pending_validations: Gauge,
    pub rpc_waiters: Gauge,
    pub consensus_rejections: Family<ReasonLabels, Counter>,
    pub signature_rejections: Family<KindLabels, Counter>,
    pub signatures_checked: Family<KindLabels, Counter>,
    pub process_cpu: Counter<f64, AtomicU64>,
    pub process_resident_memory: Gauge,
    pub process_open_fds: Gauge,
    pub rpc_requests: Family<MethodLabels, Counter>,
    pub rpc_refusals: Family<ReasonLabels, Counter>,
    pub peer_offences: Family<ReasonLabels, Counter>,
    pub peer_bans: Counter,
    pub rpc_subscriptions: Gauge,
    pub validators: Gauge,
    pub quorum_size: Gauge,
}

impl Metrics {
    pub fn new(info: NodeInfoLabels) -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            transactions_committed: Family::default(),
            blocks_committed: Counter::default(),
            height: Gauge::default(),
            block_transactions: size_histogram(),
            phase_duration: Family::new_with_constructor(latency_histogram),
            quorum_completed_by: Family::default(),
            vote_lateness: Family::new_with_constructor(latency_histogram),
            votes_missing: Family::default(),
            transaction_latency: latency_histogram(),
            epoch: Family::default(),
            leader: Gauge::default(),
            view_changes: Family::default(),
            stable_checkpoint: Gauge::default(),
            state_transfers: Counter::default(),
            state_transfer_blocks: Counter::default(),
            syncing: Gauge::default(),
            mempool_transactions: Gauge::default(),
            mempool_bytes: Gauge::default(),
            mempool_ready: Gauge::default(),
            mempool_admitted: Family::default(),
            mempool_rejected: Family::default(),
            batch_store_batches: Gauge::default(),
            batch_store_bytes: Gauge::default(),
            proof_pool_proofs: Gauge::default(),
            batches_unproven: Gauge::default(),
            batch_frames_queued_bytes: Gauge::default(),
            batch_order_gaps: Counter::default(),
            peers: Gauge::default(),
            p2p_messages: Family::default(),
            p2p_bytes: Family::default(),
            p2p_dropped: Family::default(),
            p2p_gossip_rejected: Counter::default(),
            p2p_genesis_mismatch: Counter::default(),
            storage_write_duration: Family::new_with_constructor(latency_histogram),
            storage_written_bytes: Family::default(),
            storage_size: Gauge::default(),
            storage_memory: Family::default(),
            evidence: Family::default(),
            state_diverged: Gauge::default(),
            state_repairs: Family::default(),
            consensus_stored_messages: Gauge::default(),
            consensus_stored_bytes: Gauge::default(),
            consensus_stored_messages_bound: Gauge::default(),
            consensus_stored_bytes_bound: Gauge::default(),
            consensus_pending_validations: Gauge::default(),
            rpc_waiters: Gauge::default(),
            consensus_rejections: Family::default(),
            signature_rejections: Family::default(),
            signatures_checked: Family::default(),
            process_cpu: Counter::default(),
            process_resident_memory: Gauge::default(),
            process_open_fds: Gauge::default(),
            rpc_requests: Family::default(),
            rpc_refusals: Family::default(),
            peer_offences: Family::default(),
            peer_bans: Counter::default(),
            rpc_subscriptions: Gauge::default(),
            validators: Gauge::default(),
            quorum_size: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "tally_node",
            "Static facts about this node",
            Info::new(info),
        );
        r.register(
            "tally_transactions_committed",
            "Transactions in committed blocks, by outcome (ok or the error's name)",
            m.transactions_committed.clone(),
        );
        r.register(
            "tally_blocks_committed",
            "Blocks committed and executed",
            m.blocks_committed.clone(),
        );
        r.register(
            "tally_height",
            "Height of the latest executed block",
            m.height.clone(),
        );
        r.register(
            "tally_block_transactions",
            "Transactions per committed block",
            m.block_transactions.clone(),
        );
        r.register_with_unit(
            "tally_consensus_phase_duration",
            "Time between consensus phases at this node: pre_prepare_to_prepared, prepared_to_committed, committed_to_executed",
            Unit::Seconds,
            m.phase_duration.clone(),
        );
        r.register(
            "tally_quorum_completed_by",
            "Which validator's vote completed a quorum, by phase (prepared, committed)",
            m.quorum_completed_by.clone(),
        );
        r.register_with_unit(
            "tally_vote_lateness",
            "How long after this node's quorum a validator's vote arrived (0 when it was part of the quorum), by phase",
            Unit::Seconds,
            m.vote_lateness.clone(),
        );
        r.register(
            "tally_votes_missing",
            "Sequence numbers that committed without a vote from this validator",
            m.votes_missing.clone(),
        );
        r.register_with_unit(
            "tally_transaction_latency",
            "Time from admission at this node to commit, for transactions submitted to it",
            Unit::Seconds,
            m.transaction_latency.clone(),
        );
        r.register(
            "tally_epoch",
            "Current consensus epoch: PBFT view, Raft term, Multi-Paxos ballot round",
            m.epoch.clone(),
        );
        r.register(
            "tally_leader",
            "Index of the current primary (leader) in the genesis",
            m.leader.clone(),
        );
        r.register(
            "tally_view_changes",
            "View changes started, by reason",
            m.view_changes.clone(),
        );
        r.register(
            "tally_stable_checkpoint",
            "Sequence number of the latest stable checkpoint",
            m.stable_checkpoint.clone(),
        );
        r.register(
            "tally_state_transfers",
            "State transfers started",
            m.state_transfers.clone(),
        );
        r.register(
            "tally_state_transfer_blocks",
            "Blocks fetched from peers, verified and applied",
            m.state_transfer_blocks.clone(),
        );
        r.register(
            "tally_syncing",
            "1 while catching up from peers, else 0",
            m.syncing.clone(),
        );
        r.register(
            "tally_mempool_transactions",
            "Transactions in the mempool",
            m.mempool_transactions.clone(),
        );
        r.register_with_unit(
            "tally_mempool",
            "Size of the transactions in the mempool",
            Unit::Bytes,
            m.mempool_bytes.clone(),
        );
        r.register(
            "tally_mempool_ready_transactions",
            "Mempool transactions that could be ordered now (not waiting behind a nonce gap)",
            m.mempool_ready.clone(),
        );
        r.register(
            "tally_batch_store_batches",
            "Data batch bodies held (every author's), not yet in a block",
            m.batch_store_batches.clone(),
        );
        r.register_with_unit(
            "tally_batch_store",
            "Size of the data batch bodies held",
            Unit::Bytes,
            m.batch_store_bytes.clone(),
        );
        r.register(
            "tally_proof_pool_proofs",
            "Batch proofs held until their batch is in a block (proposed or not)",
            m.proof_pool_proofs.clone(),
        );
        r.register(
            "tally_batches_unproven",
            "This node's batches waiting for attestations (admission stops at 64)",
            m.batches_unproven.clone(),
        );
        r.register_with_unit(
            "tally_batch_frames_queued",
            "Peers' batch-stream frames received and not yet handled by the batch task",
            Unit::Bytes,
            m.batch_frames_queued_bytes.clone(),
        );
        r.register(
            "tally_batch_order_gaps",
            "Times a proposer passed over a missing earlier batch of an author after waiting",
            m.batch_order_gaps.clone(),
        );
        r.register(
            "tally_mempool_admitted",
            "Transactions admitted to the mempool, by source (rpc, gossip, fetch)",
            m.mempool_admitted.clone(),
        );
        r.register(
            "tally_mempool_rejected",
            "Transactions refused at admission, by reason",
            m.mempool_rejected.clone(),
        );
        r.register("tally_peers_connected", "Connected peers", m.peers.clone());
        r.register(
            "tally_p2p_messages",
            "p2p messages, by protocol and direction",
            m.p2p_messages.clone(),
        );
        r.register_with_unit(
            "tally_p2p",
            "p2p payload, by protocol and direction",
            Unit::Bytes,
            m.p2p_bytes.clone(),
        );
        r.register(
            "tally_p2p_dropped_messages",
            "Messages dropped by bounded queues, by direction",
            m.p2p_dropped.clone(),
        );
        r.register(
            "tally_p2p_gossip_rejected",
            "Gossiped bundles judged invalid (their sender loses peer score)",
            m.p2p_gossip_rejected.clone(),
        );
        r.register(
            "tally_p2p_genesis_mismatch",
            "Connections closed because the peer runs another network",
            m.p2p_genesis_mismatch.clone(),
        );
        r.register_with_unit(
            "tally_storage_write_duration",
            "Duration of storage writes, by kind (block, consensus)",
            Unit::Seconds,
            m.storage_write_duration.clone(),
        );
        r.register_with_unit(
            "tally_storage_written",
            "Bytes written to storage, by kind",
            Unit::Bytes,
            m.storage_written_bytes.clone(),
        );
        r.register_with_unit(
            "tally_storage_memory",
            "Memory the storage engine holds, by kind (memtables, block_cache, table_readers)",
            Unit::Bytes,
            m.storage_memory.clone(),
        );
        r.register_with_unit(
            "tally_storage_size",
            "Approximate size of the database",
            Unit::Bytes,
            m.storage_size.clone(),
        );
        r.register(
            "tally_evidence",
            "Equivocation evidence seen, by offending validator and statement kind",
            m.evidence.clone(),
        );
        r.register(
            "tally_state_diverged",
            "1 while this node's state differs from a checkpoint a quorum certified (it votes on nothing until repaired)",
            m.state_diverged.clone(),
        );
        r.register(
            "tally_state_repairs",
            "Attempts to replace a diverged state with the certified one from peers, by outcome",
            m.state_repairs.clone(),
        );
        r.register(
            "tally_consensus_stored_messages",
            "Messages and entries the consensus core holds for peers (bounded by tally_consensus_stored_messages_bound)",
            m.consensus_stored_messages.clone(),
        );
        r.register_with_unit(
            "tally_consensus_stored",
            "Bytes the consensus core holds for peers (bounded by tally_consensus_stored_bound_bytes)",
            Unit::Bytes,
            m.consensus_stored_bytes.clone(),
        );
        r.register(
            "tally_consensus_stored_messages_bound",
            "The most messages the consensus core can hold with this genesis, whatever peers send",
            m.consensus_stored_messages_bound.clone(),
        );
        r.register_with_unit(
            "tally_consensus_stored_bound",
            "The most bytes the consensus core can hold with this genesis, whatever peers send",
            Unit::Bytes,
            m.consensus_stored_bytes_bound.clone(),
        );
        r.register(
            "tally_rpc_waiters",
            "Transaction hashes tx_wait callers are waiting for (at most 65,536)",
            m.rpc_waiters.clone(),
        );
        r.register(
            "tally_consensus_pending_validations",
            "Accepted pre-prepares whose transactions are being fetched or checked",
            m.consensus_pending_validations.clone(),
        );
        r.register(
            "tally_consensus_rejections",
            "Validly signed consensus messages the protocol refused, by reason",
            m.consensus_rejections.clone(),
        );
        r.register(
            "tally_signature_rejections",
            "Messages or transactions refused for an invalid signature, by kind",
            m.signature_rejections.clone(),
        );
        r.register(
            "tally_signatures_checked",
            "Signatures checked, by what they were on: transaction (client or gossip admission), \
             transaction_fetched (bodies fetched for a proposal), transaction_pulled (pulled \
             from peers or kept aside while the pool was full), consensus",
            m.signatures_checked.clone(),
        );
        r.register_with_unit(
            "tally_process_cpu",
            "CPU time used by the node process",
            Unit::Seconds,
            m.process_cpu.clone(),
        );
        r.register_with_unit(
            "tally_process_resident_memory",
            "Resident memory of the node process",
            Unit::Bytes,
            m.process_resident_memory.clone(),
        );
        r.register(
            "tally_process_open_fds",
            "Open file descriptors of the node process",
            m.process_open_fds.clone(),
        );
        r.register(
            "tally_rpc_requests",
            "JSON-RPC calls, by method",
            m.rpc_requests.clone(),
        );
        r.register(
            "tally_rpc_refusals",
            "RPC connections, calls and subscriptions refused or dropped by the node's limits, \
             by reason",
            m.rpc_refusals.clone(),
        );
        r.register(
            "tally_peer_offences",
            "Things peers did that honest ones never do (undecodable frames, bad signatures, \
             frames over a limit, batch-stream misbehaviour, floods), by reason",
            m.peer_offences.clone(),
        );
        r.register(
            "tally_peer_bans",
            "Peers banned (disconnected and refused for a while) for their offences",
            m.peer_bans.clone(),
        );
        r.register(
            "tally_rpc_subscriptions",
            "Block subscriptions open on this node",
            m.rpc_subscriptions.clone(),
        );
        r.register(
            "tally_validators",
            "Validators in the genesis (n)",
            m.validators.clone(),
        );
        r.register(
            "tally_quorum_size",
            "Votes a quorum needs (2f+1 for PBFT), this node included",
            m.quorum_size.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Creates every series whose label values are known in advance, at zero, so that
    /// queries and dashboards see them before the first event (Prometheus practice).
    pub fn init_labels(&self, validators: &[String]) {
        for v in validators {
            for phase in ["prepared", "committed"] {
                let _ = self
                    .quorum_completed_by
                    .get_or_create(&PhaseValidatorLabels {
                        phase: phase.into(),
                        validator: v.clone(),
                    });
            }
            for phase in ["prepare", "commit"] {
                let _ = self.vote_lateness.get_or_create(&PhaseValidatorLabels {
                    phase: phase.into(),
                    validator: v.clone(),
                });
            }
            let _ = self.votes_missing.get_or_create(&ValidatorLabels {
                validator: v.clone(),
            });
            for kind in [
                "pre_prepare",
                "prepare",
                "commit",
                "checkpoint",
                "view_change",
            ] {
                let _ = self.evidence.get_or_create(&ValidatorKindLabels {
                    validator: v.clone(),
                    kind: kind.into(),
                });
            }
        }
        for phase in [
            "pre_prepare_to_prepared",
            "prepared_to_committed",
            "committed_to_executed",
        ] {
            let _ = self.phase_duration.get_or_create(&PhaseLabels {
                phase: phase.into(),
            });
        }
        for reason in ["timeout", "join_higher_view", "view_change_timeout"] {
            let _ = self.view_changes.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        for reason in [
            "malformed",
            "too_large",
            "wrong_chain",
            "invalid_signature",
            "duplicate",
            "stale_nonce",
            "nonce_too_far",
            "nonce_taken",
            "full",
            "overloaded",
        ] {
            let _ = self.mempool_rejected.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        for source in ["rpc", "gossip"] {
            let _ = self.mempool_admitted.get_or_create(&SourceLabels {
                source: source.into(),
            });
        }
        for outcome in ["ok", "failed"] {
            let _ = self.state_repairs.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        for kind in ["transaction", "gossip", "consensus"] {
            let _ = self
                .signature_rejections
                .get_or_create(&KindLabels { kind: kind.into() });
        }
        for kind in ["block", "consensus"] {
            let _ = self
                .storage_write_duration
                .get_or_create(&KindLabels { kind: kind.into() });
            let _ = self
                .storage_written_bytes
                .get_or_create(&KindLabels { kind: kind.into() });
        }
        for outcome in [
            "ok",
            "bad_nonce",
            "insufficient_balance",
            "invalid_signature",
        ] {
            let _ = self.transactions_committed.get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            });
        }
        for direction in ["in", "out"] {
            let _ = self.p2p_dropped.get_or_create(&DirectionLabels {
                direction: direction.into(),
            });
        }
        let _ = self.consensus_rejections.get_or_create(&ReasonLabels {
            reason: "none".into(),
        });
        for reason in [
            "connection_limit",
            "rate_limited",
            "unauthorized",
            "timeout",
            "subscription_limit",
            "slow_subscriber",
        ] {
            let _ = self.rpc_refusals.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        for reason in [
            "undecodable",
            "bad_signature",
            "oversized_frame",
            "batch_misbehaviour",
            "flood",
        ] {
            let _ = self.peer_offences.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
    }

    pub fn encode_openmetrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }

    pub fn phase(&self, phase: &str, seconds: f64) {
        self.phase_duration
            .get_or_create(&PhaseLabels {
                phase: phase.to_string(),
            })
            .observe(seconds);
    }

    pub fn inc_reason(family: &Family<ReasonLabels, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn inc_kind(family: &Family<KindLabels, Counter>, kind: &str, by: u64) {
        family
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc_by(by);
    }
}

/// Reads this process's CPU seconds, resident bytes and open file descriptors from /proc.
pub fn process_usage() -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields after the command: state is index 0; utime 11, stime 12 (in clock ticks).
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(((utime + stime) / ticks, resident_pages * 4096, fds))
}
