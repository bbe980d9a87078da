//! The executor: applies committed batches (from consensus) and certified blocks (from state
//! transfer) strictly in height order. Each block with all its effects is one RocksDB write;
//! then RPC waiters, subscribers, the mempool and the driver hear of it. After a block at a
//! checkpoint height it takes a snapshot of the state (for peers that repair theirs), and
//! when the core finds this node's state diverged it runs the repair (`crate::execution::repair`):
//! the executor owns the chain, so nothing else writes it meanwhile.
//!
//! Its command queue is bounded ([`COMMANDS_MAX`]): consensus never has more than a window
//! of commits outstanding, and state transfer waits for room. Each command yields at most one
//! report, a repair at most one per block it executes, so the report queue stays within the
//! same bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tally_consensus::pbft::CheckpointCert;
use tally_consensus::{Batch, CommitCertificate, Seq};
use tally_crypto::Digest;
use tally_ledger::{CheckedTx, check_transactions_with};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::batches::resolve::resolve;
use crate::batches::service::BatchPath;
use crate::execution::block::BlockBatch;
use crate::execution::chain::{BatchesOrdered, Chain};
use crate::execution::repair::{self, Peers};
use crate::execution::snapshots::Snapshots;
use crate::shared::Shared;

/// Commands queued for the executor: a window of commits and a few state-transfer pages.
pub const COMMANDS_MAX: usize = 4096;

/// The most state bytes a repair accepts from a peer (the certified state must fit: it is
/// held in memory until written in one atomic write).
pub const REPAIR_STATE_BYTES_MAX: usize = 4 * 1024 * 1024 * 1024;

pub enum ExecCommand {
    /// Consensus committed `batch` (transaction hashes) at `seq`.
    Commit {
        seq: Seq,
        batch: Batch,
        certificate: CommitCertificate,
        committed_at: Instant,
    },
    /// A block fetched by state transfer, its certificate already verified (and, with data
    /// batches, its transactions checked against its batch headers).
    Block {
        height: u64,
        txs: Vec<Vec<u8>>,
        batches: Vec<BlockBatch>,
        certificate: Option<CommitCertificate>,
    },
    /// The state diverged from this certified checkpoint: replace it from peers.
    Repair { target: CheckpointCert },
}

/// What the executor tells the driver.
pub enum ExecReport {
    /// A block was applied: its batch digest, block hash and its commit proof's epoch.
    Executed {
        seq: Seq,
        digest: Digest,
        block_hash: Digest,
        epoch: tally_consensus::View,
    },
    /// The chain now holds the certified state at `seq`.
    Repaired { seq: Seq, block_hash: Digest },
    /// No peer could serve a verified state (the core asks again).
    RepairFailed { reason: String },
}

/// What the executor needs besides the chain.
pub struct ExecutorParts {
    pub snapshots: Snapshots,
    pub checkpoint_interval: u64,
    pub peers: Box<dyn Peers + Send>,
    /// With `payload: batches`: where committed batches' proofs and bodies are.
    pub batches: Option<Arc<BatchPath>>,
    pub runtime: tokio::runtime::Handle,
}

/// Fetches missing transaction bodies from peers (blocking the executor until it has them).
pub type BodyFetcher = Arc<dyn Fn(Vec<Digest>) -> bool + Send + Sync>;

pub fn spawn(
    mut chain: Chain,
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<ExecCommand>,
    reports: mpsc::UnboundedSender<ExecReport>,
    fetch: BodyFetcher,
    parts: ExecutorParts,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("executor".into())
        .spawn(move || {
            let mut pending: BTreeMap<u64, ExecCommand> = BTreeMap::new();
            let mut tried = std::time::Instant::now();
            loop {
                // With data batches a commit whose bodies could not be had waits in `pending`
                // and is tried again each second (an honest holder may be restarting), and
                // as soon as the command for its height is replaced (a block from sync).
                let next = match &parts.batches {
                    None => commands.blocking_recv().map(Some),
                    // The timer is made inside the runtime (this thread is not one of its).
                    Some(_) => match parts.runtime.block_on(async {
                        tokio::time::timeout(std::time::Duration::from_secs(1), commands.recv())
                            .await
                    }) {
                        Ok(c) => c.map(Some),
                        Err(_) => Some(None),
                    },
                };
                let Some(next) = next else {
                    return;
                };
                let Some(cmd) = next else {
                    tried = std::time::Instant::now();
                    drain(&mut chain, &shared, &mut pending, &reports, &fetch, &parts);
                    continue;
                };
                let height = match &cmd {
                    ExecCommand::Commit { seq, .. } => seq.0,
                    ExecCommand::Block { height, .. } => *height,
                    ExecCommand::Repair { target } => {
                        let target = target.clone();
                        let report = run_repair(&mut chain, &shared, &parts, target, &fetch);
                        pending.retain(|k, _| *k > chain.height());
                        if reports.send(report).is_err() {
                            return;
                        }
                        continue;
                    }
                };
                if height <= chain.height() {
                    continue;
                }
                pending.insert(height, cmd);
                // Only a command for the next height can move the chain; one further ahead
                // waits. (Trying the waiting head again for every command queued behind it
                // cost up to 0.5 s each: a follower with hundreds of commits queued took
                // minutes to reach the block sync's blocks queued behind them.)
                let retry = tried.elapsed() >= std::time::Duration::from_secs(1);
                if height == chain.height() + 1 || retry {
                    tried = std::time::Instant::now();
                    if !drain(&mut chain, &shared, &mut pending, &reports, &fetch, &parts) {
                        return;
                    }
                }
            }
        })
        .expect("spawning the executor thread")
}

/// Applies the pending commands that follow the chain, in order, until one is missing or
/// cannot be applied yet (a commit with data batches whose bodies did not come stays pending;
/// other commands are dropped then, and state transfer brings the block). False when the
/// driver is gone.
fn drain(
    chain: &mut Chain,
    shared: &Shared,
    pending: &mut BTreeMap<u64, ExecCommand>,
    reports: &mpsc::UnboundedSender<ExecReport>,
    fetch: &BodyFetcher,
    parts: &ExecutorParts,
) -> bool {
    while let Some(cmd) = pending.remove(&(chain.height() + 1)) {
        let retry = match &cmd {
            ExecCommand::Commit {
                seq,
                batch,
                certificate,
                committed_at,
            } if parts.batches.is_some() => Some(ExecCommand::Commit {
                seq: *seq,
                batch: batch.clone(),
                certificate: certificate.clone(),
                committed_at: *committed_at,
            }),
            _ => None,
        };
        match apply(chain, shared, cmd, fetch, parts) {
            Ok(Some(e)) => {
                if reports.send(e).is_err() {
                    return false;
                }
            }
            Ok(None) => {
                if let Some(c) = retry {
                    pending.insert(chain.height() + 1, c);
                }
                break;
            }
            Err(e) => {
                // A node that cannot write its chain must not go on voting.
                error!("execution failed, stopping: {e}");
                std::process::exit(70);
            }
        }
    }
    // Anything at or below the chain is done.
    let h = chain.height();
    pending.retain(|k, _| *k > h);
    true
}

/// Replaces the diverged state with the certified one, executes the certified blocks up to
/// the target and checks the block hash reached.
fn run_repair(
    chain: &mut Chain,
    shared: &Shared,
    parts: &ExecutorParts,
    target: CheckpointCert,
    fetch: &BodyFetcher,
) -> ExecReport {
    let trust = repair::Trust {
        validators: &shared.validators,
        chain_id: &shared.chain_id,
    };
    let installed = match repair::repair(
        chain,
        &trust,
        &*parts.peers,
        &target,
        REPAIR_STATE_BYTES_MAX,
    ) {
        Ok(i) => i,
        Err(e) => {
            return ExecReport::RepairFailed {
                reason: e.to_string(),
            };
        }
    };
    // The snapshots held show the state that was replaced.
    parts.snapshots.clear();
    let start = installed.start;
    shared.update_status(|s| {
        s.height = chain.height();
        s.latest_hash = chain.last_hash();
    });
    for b in installed.blocks {
        let cmd = ExecCommand::Block {
            height: b.header.height,
            txs: b.txs,
            batches: b.batches,
            certificate: b.certificate,
        };
        if let Err(e) = apply(chain, shared, cmd, fetch, parts) {
            error!("execution failed during a repair, stopping: {e}");
            std::process::exit(70);
        }
    }
    match repair::check_reached(chain, start, &target) {
        Ok((seq, block_hash)) => ExecReport::Repaired { seq, block_hash },
        Err(e) => {
            error!("{e}");
            ExecReport::RepairFailed {
                reason: e.to_string(),
            }
        }
    }
}

fn apply(
    chain: &mut Chain,
    shared: &Shared,
    cmd: ExecCommand,
    fetch: &BodyFetcher,
    parts: &ExecutorParts,
) -> Result<Option<ExecReport>, crate::execution::chain::ChainError> {
    let started = Instant::now();
    let mut ordered: Option<BatchesOrdered> = None;
    let (height, raw, checked, certificate, committed_at, from_sync) = match cmd {
        ExecCommand::Commit {
            seq,
            batch,
            certificate,
            committed_at,
        } if parts.batches.is_some() => {
            let path = parts.batches.as_ref().expect("checked");
            let Some(e) = expand(chain, shared, path, &parts.runtime, &batch.txs)? else {
                warn!(
                    seq = seq.0,
                    "committed batches unavailable; waiting for state transfer"
                );
                return Ok(None);
            };
            ordered = Some(BatchesOrdered {
                digest: batch.digest(),
                batches: e.batches,
            });
            (
                seq.0,
                e.raw,
                e.checked,
                Some(certificate),
                Some(committed_at),
                false,
            )
        }
        ExecCommand::Commit {
            seq,
            batch,
            certificate,
            committed_at,
        } => {
            // Bodies come from the mempool, already verified at admission: each transaction's
            // signature is checked once per validator.
            let mut missing: Vec<Digest> = {
                let pool = shared.mempool();
                batch
                    .txs
                    .iter()
                    .filter(|h| pool.body(h).is_none())
                    .copied()
                    .collect()
            };
            let mut attempts = 0;
            while !missing.is_empty() {
                attempts += 1;
                if attempts > 1 {
                    warn!(
                        seq = seq.0,
                        missing = missing.len(),
                        "fetching transaction bodies"
                    );
                }
                fetch(missing.clone());
                missing = {
                    let pool = shared.mempool();
                    missing
                        .into_iter()
                        .filter(|h| pool.body(h).is_none())
                        .collect()
                };
                if attempts >= 50 && !missing.is_empty() {
                    warn!(
                        seq = seq.0,
                        "bodies unavailable; waiting for state transfer"
                    );
                    return Ok(None);
                }
            }
            let pool = shared.mempool();
            let mut raw = Vec::with_capacity(batch.txs.len());
            let mut checked = Vec::with_capacity(batch.txs.len());
            for h in &batch.txs {
                let tx = pool.body(h).expect("checked above").clone();
                raw.push(tx.encoded().to_vec());
                checked.push(CheckedTx {
                    hash: *h,
                    tx: Ok(tx),
                });
            }
            drop(pool);
            (
                seq.0,
                raw,
                checked,
                Some(certificate),
                Some(committed_at),
                false,
            )
        }
        ExecCommand::Block {
            height,
            txs,
            batches,
            certificate,
        } => {
            if !batches.is_empty() {
                // Which batches run is execution's decision: the block's flags must be this
                // chain's (a batch already executed is skipped).
                let mine = executed_flags(chain, batches.iter().map(|b| b.header.digest()))?;
                if mine.iter().zip(&batches).any(|(m, b)| *m != b.executed) {
                    error!(
                        height,
                        "a peer's block marks batches executed that this chain does not; refused"
                    );
                    return Ok(None);
                }
                ordered = Some(BatchesOrdered {
                    digest: tally_consensus::batch_digest(
                        &batches
                            .iter()
                            .map(|b| b.header.digest())
                            .collect::<Vec<_>>(),
                    ),
                    batches,
                });
            }
            let checked = check_transactions_with(&shared.chain_id, &txs, &shared.keys);
            (height, txs, checked, certificate, None, true)
        }
        ExecCommand::Repair { .. } => return Ok(None),
    };
    let write_started = Instant::now();
    let crate::execution::chain::Applied { block, touched } =
        chain.apply_ordered(height, raw, &checked, certificate, ordered, false)?;
    if let Some(path) = &parts.batches
        && !block.batches.is_empty()
    {
        let headers: Vec<_> = block.batches.iter().map(|b| b.header).collect();
        path.on_block(&headers)?;
    }
    let m = &shared.metrics;
    m.storage_write_duration
        .get_or_create(&tally_monitoring::KindLabels {
            kind: "block".into(),
        })
        .observe(write_started.elapsed().as_secs_f64());
    let encoded_len = block.txs.iter().map(|t| t.len() as u64 + 21).sum::<u64>() + 300;
    tally_monitoring::Metrics::inc_kind(&m.storage_written_bytes, "block", encoded_len);
    if let Some(t) = committed_at {
        m.phase("committed_to_executed", t.elapsed().as_secs_f64());
    }
    if from_sync {
        m.state_transfer_blocks.inc();
    }
    m.blocks_committed.inc();
    m.height.set(height as i64);
    m.block_transactions.observe(block.txs.len() as f64);
    // Counted per outcome first: a labelled counter costs a lock and a label allocation.
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    for o in &block.outcomes {
        let outcome = match o {
            tally_ledger::TxOutcome::Ok => "ok",
            tally_ledger::TxOutcome::Failed(e) => e.name(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    for (outcome, n) in outcomes {
        m.transactions_committed
            .get_or_create(&tally_monitoring::OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc_by(n);
    }

    // The mempool drops what committed; local transactions report their latency.
    let hashes: Vec<Digest> = checked.iter().map(|c| c.hash).collect();
    let arrivals = shared.mempool().on_block(&hashes, &touched);
    for (_, arrived) in arrivals {
        m.transaction_latency
            .observe(arrived.elapsed().as_secs_f64());
    }
    shared.wake_txs(&hashes);
    let hash = block.hash();
    let digest = block.header.batch_digest;
    let epoch = block
        .certificate
        .as_ref()
        .map_or(tally_consensus::View(0), |c| c.view);
    if height.is_multiple_of(parts.checkpoint_interval) {
        // Before the next block changes it: the state this block's hash commits to.
        parts.snapshots.take(height);
    }
    shared.update_status(|s| {
        s.height = height;
        s.latest_hash = hash;
    });
    if height.is_multiple_of(1000) {
        info!(
            height,
            txs = block.txs.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "block"
        );
    }
    let _ = shared
        .blocks
        .send(Arc::new(crate::shared::CommittedBlock::new(block, hashes)));
    Ok(Some(ExecReport::Executed {
        seq: Seq(height),
        digest,
        block_hash: hash,
        epoch,
    }))
}

/// A committed list of batch headers, expanded into the block's transactions.
struct Expanded {
    raw: Vec<Vec<u8>>,
    checked: Vec<CheckedTx>,
    batches: Vec<BlockBatch>,
}

/// For each batch digest: whether it runs in this block (not executed in an earlier block,
/// nor earlier in this one).
fn executed_flags(
    chain: &Chain,
    digests: impl Iterator<Item = Digest>,
) -> Result<Vec<bool>, crate::execution::chain::ChainError> {
    let mut seen = crate::FastSet::default();
    let mut out = Vec::new();
    for d in digests {
        out.push(seen.insert(d) && !chain.batch_executed(&d)?);
    }
    Ok(out)
}

/// Resolves each committed batch digest to its proof and body (fetching missing ones from
/// the proof's holders) and lists the transactions of the batches that run, batch after
/// batch. Their signatures are not checked again: each batch's proof carries f + 1
/// attestations that they are valid, one of them from an honest validator. `None` when the
/// bodies could not be fetched in time.
fn expand(
    chain: &Chain,
    shared: &Shared,
    path: &BatchPath,
    runtime: &tokio::runtime::Handle,
    digests: &[Digest],
) -> Result<Option<Expanded>, crate::execution::chain::ChainError> {
    let flags = executed_flags(chain, digests.iter().copied())?;
    let run: Vec<Digest> = digests
        .iter()
        .zip(&flags)
        .filter(|(_, f)| **f)
        .map(|(d, _)| *d)
        .collect();
    // While a block sync runs, the blocks it brings carry the bodies: a commit whose batches
    // are not here is left to it at once (each wait would hold up the sync's next block).
    let attempts = if shared.status().syncing.is_some() {
        1
    } else {
        crate::batches::resolve::RESOLVE_ATTEMPTS
    };
    let Some(resolved) = resolve(path, runtime, &run, attempts) else {
        return Ok(None);
    };
    let mut by_digest: crate::FastMap<Digest, _> = crate::FastMap::default();
    for (proof, body) in resolved {
        by_digest.insert(proof.header.digest(), (proof, body));
    }
    let mut raw = Vec::new();
    let mut checked = Vec::new();
    let mut batches = Vec::with_capacity(digests.len());
    for (d, executed) in digests.iter().zip(flags) {
        if !executed {
            let Some(header) = earlier_header(chain, d, &batches)? else {
                return Ok(None);
            };
            batches.push(BlockBatch {
                header,
                executed: false,
            });
            continue;
        }
        let (proof, body) = by_digest.get(d).expect("resolved above");
        for (bytes, hash) in body.txs().iter().zip(body.tx_hashes()) {
            let tx = tally_ledger::decode_for_chain(&shared.chain_id, bytes)
                .map(|t| Arc::new(tally_crypto::Verified::vouched(t, proof)));
            raw.push(bytes.clone());
            checked.push(CheckedTx { hash: *hash, tx });
        }
        batches.push(BlockBatch {
            header: proof.header,
            executed: true,
        });
    }
    Ok(Some(Expanded {
        raw,
        checked,
        batches,
    }))
}

/// The header of a batch ordered again: from earlier in this block, or from the block that
/// executed it.
fn earlier_header(
    chain: &Chain,
    digest: &Digest,
    this_block: &[BlockBatch],
) -> Result<Option<tally_consensus::BatchHeader>, crate::execution::chain::ChainError> {
    if let Some(b) = this_block.iter().find(|b| b.header.digest() == *digest) {
        return Ok(Some(b.header));
    }
    let key = crate::execution::chain::executed_batch_key(digest);
    let Some(at) = chain.tx_location(&key)? else {
        return Ok(None);
    };
    Ok(chain
        .block(at.height)?
        .and_then(|b| b.batches.get(at.index as usize).map(|x| x.header)))
}
