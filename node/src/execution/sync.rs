//! Block sync (state transfer): serving peers, and catching up from them.
//!
//! A node catches up when consensus asks (`FetchState`), or when f + 1 peers (at least one
//! honest) report a height above its own. It fetches stored blocks from peers, checks each
//! block's commit certificate against the genesis validators — a quorum of valid COMMIT
//! signatures for exactly this height and this batch — and only then executes it itself. No
//! peer's word is taken for anything: a block whose certificate fails is discarded and the
//! peer is skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_consensus::Seq;
use tally_crypto::PublicKey;
use tally_p2p::P2pHandle;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::execution::block::StoredBlock;
use crate::execution::executor::ExecCommand;
use crate::execution::snapshots::Snapshots;
use crate::shared::Shared;
use crate::wire::{self, SYNC_BLOCKS_MAX, SyncRequest, SyncResponse};

pub enum SyncCommand {
    Fetch { target: u64 },
}

/// A pending transaction is offered to an asking primary only after it waited this long
/// (gossip reaches a primary with room sooner), and offered again only after this long.
const PENDING_MIN_AGE: Duration = Duration::from_millis(500);
const PENDING_REOFFER_AFTER: Duration = Duration::from_secs(2);

/// Answers a peer's sync request (payload requests go to the driver, which holds the
/// batches, before this is called).
pub fn serve(shared: &Shared, snapshots: &Snapshots, request: SyncRequest) -> Vec<u8> {
    let response = match request {
        SyncRequest::Payload { .. } => SyncResponse::Payload(None),
        SyncRequest::Snapshots => SyncResponse::Snapshots(snapshots.heights()),
        SyncRequest::SnapshotPage {
            height,
            after,
            max_bytes,
        } => match snapshots.read(height, after, max_bytes as usize) {
            Some(page) => SyncResponse::SnapshotPage {
                entries: page.entries,
                done: page.done,
            },
            None => SyncResponse::Error(format!("no snapshot at height {height}")),
        },
        SyncRequest::Status => {
            let s = shared.status();
            SyncResponse::Status {
                height: s.height,
                latest_hash: s.latest_hash,
            }
        }
        SyncRequest::Blocks { from, max } => {
            let mut blocks = Vec::new();
            let mut bytes = 0;
            for h in from..from.saturating_add(max.min(SYNC_BLOCKS_MAX) as u64) {
                match shared.store.block(h) {
                    Ok(Some(b)) => {
                        bytes += b.len();
                        blocks.push(b);
                        if bytes > 32 * 1024 * 1024 {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            SyncResponse::Blocks(blocks)
        }
        SyncRequest::Txs { hashes } => {
            let pool = shared.mempool();
            SyncResponse::Txs(
                hashes
                    .iter()
                    .take(wire::SYNC_TXS_MAX)
                    .filter_map(|h| pool.body(h).map(|t| t.encoded().to_vec()))
                    .collect(),
            )
        }
        SyncRequest::Pending { max } => SyncResponse::Txs(shared.mempool().offer_pending(
            Instant::now(),
            PENDING_MIN_AGE,
            PENDING_REOFFER_AFTER,
            (max as usize).min(wire::PENDING_TXS_MAX),
            wire::PENDING_BYTES_MAX,
        )),
    };
    wire::encode(&response)
}

/// Checks a block from a peer: its certificate must be a valid quorum for this height and
/// for the batch the block's transactions make.
pub fn verify_block(shared: &Shared, bytes: &[u8], height: u64) -> Result<StoredBlock, String> {
    let block = StoredBlock::decode(bytes).map_err(|e| e.to_string())?;
    if block.header.height != height {
        return Err(format!(
            "block for height {} instead of {height}",
            block.header.height
        ));
    }
    let digest = block.ordered_digest().map_err(|e| e.to_string())?;
    let certificate = block
        .certificate
        .as_ref()
        .ok_or("block has no certificate")?;
    certificate
        .verify(
            &shared.validators,
            &shared.chain_id,
            Some((Seq(height), digest)),
        )
        .map_err(|e| e.to_string())?;
    Ok(block)
}

/// Fetch commands queued for the sync task (the newest target wins; more are dropped).
pub const COMMANDS_MAX: usize = 16;

pub async fn run(
    shared: Arc<Shared>,
    p2p: P2pHandle,
    exec: mpsc::Sender<ExecCommand>,
    mut commands: mpsc::Receiver<SyncCommand>,
) {
    let mut target = 0u64;
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut next_peer = 0usize;
    let mut height_at_last_poll = 0u64;
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(SyncCommand::Fetch { target: t }) => target = target.max(t),
                None => return,
            },
            _ = poll.tick() => {
                // Peers a block or two ahead is normal pipelining; catch up when well behind,
                // or when consensus made no progress since the last poll.
                let height = shared.status().height;
                if let Some(t) = peers_height(&shared, &p2p).await
                    && (t >= height + 16 || height == height_at_last_poll)
                {
                    target = target.max(t);
                }
                height_at_last_poll = height;
            }
        }
        let height = shared.status().height;
        if target <= height {
            continue;
        }
        let started = Instant::now();
        let start_height = height;
        info!(height, target, "catching up from peers");
        shared.metrics.syncing.set(1);
        let mut last_log = Instant::now();
        let mut failures = 0;
        loop {
            let height = shared.status().height;
            shared.update_status(|s| s.syncing = Some((height, target)));
            if height >= target || failures > 20 {
                break;
            }
            let peers = shared.status().peers;
            if peers.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                failures += 1;
                continue;
            }
            next_peer = (next_peer + 1) % peers.len();
            let peer = peers[next_peer];
            match fetch_from(&shared, &p2p, &exec, peer, height).await {
                Ok(0) | Err(_) => failures += 1,
                Ok(n) => {
                    failures = 0;
                    // Let the executor catch up before asking for more.
                    let want = height + n;
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while shared.status().height < want && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            if last_log.elapsed() > Duration::from_secs(1) {
                last_log = Instant::now();
                let h = shared.status().height;
                let rate = (h - start_height) as f64 / started.elapsed().as_secs_f64();
                info!(
                    height = h,
                    target,
                    blocks_per_second = rate as u64,
                    "syncing"
                );
            }
        }
        let h = shared.status().height;
        info!(
            height = h,
            target,
            seconds = started.elapsed().as_secs_f64(),
            "caught up"
        );
        shared.update_status(|s| s.syncing = None);
        shared.metrics.syncing.set(0);
    }
}

/// Fetches, verifies and hands to the executor the blocks after `height` one peer has.
async fn fetch_from(
    shared: &Arc<Shared>,
    p2p: &P2pHandle,
    exec: &mpsc::Sender<ExecCommand>,
    peer: PublicKey,
    height: u64,
) -> Result<u64, String> {
    let request = wire::encode(&SyncRequest::Blocks {
        from: height + 1,
        max: SYNC_BLOCKS_MAX,
    });
    let response = tokio::time::timeout(Duration::from_secs(20), p2p.request(peer, request))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let Some(SyncResponse::Blocks(blocks)) = wire::decode::<SyncResponse>(&response) else {
        return Err("unexpected response".into());
    };
    // Certificates are checked on a blocking thread, off the event loop.
    let verified = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(blocks.len());
            for (i, bytes) in blocks.iter().enumerate() {
                let result = verify_block(&shared, bytes, height + 1 + i as u64);
                let failed = result.is_err();
                out.push(result);
                if failed {
                    break;
                }
            }
            out
        })
        .await
        .map_err(|e| e.to_string())?
    };
    let mut n = 0;
    for (i, result) in verified.into_iter().enumerate() {
        let h = height + 1 + i as u64;
        match result {
            Ok(block) => {
                let cmd = ExecCommand::Block {
                    height: h,
                    txs: block.txs,
                    batches: block.batches,
                    certificate: block.certificate,
                };
                if exec.send(cmd).await.is_err() {
                    return Err("the executor stopped".into());
                }
                n += 1;
            }
            Err(e) => {
                warn!(peer = %peer, height = h, "discarding block from peer: {e}");
                break;
            }
        }
    }
    Ok(n)
}

/// The height at least f + 1 peers report (so at least one honest peer has it); with crash
/// faults (no peer lies), the highest any peer reports.
async fn peers_height(shared: &Shared, p2p: &P2pHandle) -> Option<u64> {
    let peers = shared.status().peers;
    let need = match shared.validators.model() {
        tally_consensus::FaultModel::Byzantine => shared.f() + 1,
        tally_consensus::FaultModel::Crash => 1,
    };
    let mut heights = Vec::new();
    let request = wire::encode(&SyncRequest::Status);
    for peer in peers {
        if let Ok(Ok(bytes)) =
            tokio::time::timeout(Duration::from_secs(2), p2p.request(peer, request.clone())).await
            && let Some(SyncResponse::Status { height, .. }) = wire::decode(&bytes)
        {
            heights.push(height);
        }
    }
    if heights.len() < need {
        return None;
    }
    heights.sort_unstable_by(|a, b| b.cmp(a));
    Some(heights[need - 1])
}

/// The p2p network as a repair (`crate::execution::repair`) sees it. The repair runs on the executor's
/// thread, so requests block on the runtime.
pub struct P2pPeers {
    pub shared: Arc<Shared>,
    pub p2p: P2pHandle,
    pub runtime: tokio::runtime::Handle,
}

impl P2pPeers {
    fn ask(&self, peer: PublicKey, request: &SyncRequest) -> Result<SyncResponse, String> {
        let bytes = wire::encode(request);
        let response = self
            .runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(20), self.p2p.request(peer, bytes)).await
            })
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        match wire::decode::<SyncResponse>(&response) {
            Some(SyncResponse::Error(e)) => Err(e),
            Some(r) => Ok(r),
            None => Err("undecodable response".into()),
        }
    }
}

impl crate::execution::repair::Peers for P2pPeers {
    fn peers(&self) -> Vec<PublicKey> {
        self.shared.status().peers
    }

    fn snapshots(&self, peer: PublicKey) -> Result<Vec<u64>, String> {
        match self.ask(peer, &SyncRequest::Snapshots)? {
            SyncResponse::Snapshots(h) => Ok(h),
            _ => Err("unexpected response".into()),
        }
    }

    fn blocks(&self, peer: PublicKey, from: u64, max: u32) -> Result<Vec<Vec<u8>>, String> {
        match self.ask(peer, &SyncRequest::Blocks { from, max })? {
            SyncResponse::Blocks(b) => Ok(b),
            _ => Err("unexpected response".into()),
        }
    }

    fn snapshot_page(
        &self,
        peer: PublicKey,
        height: u64,
        after: Option<Vec<u8>>,
    ) -> Result<(Vec<tally_storage::Entry>, bool), String> {
        let request = SyncRequest::SnapshotPage {
            height,
            after,
            max_bytes: crate::execution::snapshots::PAGE_BYTES_MAX as u32,
        };
        match self.ask(peer, &request)? {
            SyncResponse::SnapshotPage { entries, done } => Ok((entries, done)),
            _ => Err("unexpected response".into()),
        }
    }
}
