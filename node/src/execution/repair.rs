//! Repairing a diverged state: replacing it with the state a quorum certified, fetched from
//! a peer and verified, then rejoining.
//!
//! The consensus core finds the divergence (its block hash at a stable checkpoint differs
//! from the one 2f+1 validators signed) and asks for a repair to that checkpoint `k`. The
//! executor, which owns the chain, runs [`repair`], trusting no peer:
//!
//! 1. The peer lists the checkpoint snapshots it holds. Its blocks from the lowest of them
//!    up to `k` are fetched, and each is checked: its commit certificate (2f+1 signatures on
//!    its batch), its header's batch digest against its transactions, and the hash chain —
//!    block `k` hashes to the certified hash, each block's `prev_hash` is the hash of the one
//!    before. So every header down to the lowest snapshot is certified by the checkpoint.
//! 2. The start `s` is the highest snapshot height at which this node's own block is the
//!    certified one: its blocks up to `s` are right and stay. (If there is none — the
//!    divergence is older than any snapshot the peer holds — `s` is the lowest snapshot and
//!    this node's blocks back to where they match the certified chain are replaced by the
//!    peer's, checked the same way; their stored outcomes are then the peer's, since a block
//!    hash does not commit to outcomes.)
//! 3. The snapshot at `s` is read page by page: keys strictly increasing, at most
//!    `state_bytes_max` in all, and the lattice hash of every entry must equal the state root
//!    in the certified header of `s`.
//! 4. One atomic write installs the state at `s` (and the replaced blocks and index
//!    entries); the executor then executes the blocks `s+1..=k` as it does any certified
//!    block, and the block hash it computes at `k` must be the certified one
//!    ([`check_reached`]). Otherwise the repair fails (this node's execution differs from its
//!    peers': a bug, reported as such).
//!
//! Any failed check moves on to the next peer.

use std::collections::{HashMap, HashSet};

use tally_consensus::Seq;
use tally_consensus::pbft::CheckpointCert;
use tally_crypto::{Digest, PublicKey};
use tally_ledger::{LtHash, TxLocation};
use tally_storage::{Entry, StateInstall};

use crate::execution::block::StoredBlock;
use crate::execution::chain::Chain;

/// What checking a peer's blocks needs: the genesis validators and the chain id.
pub struct Trust<'a> {
    pub validators: &'a tally_consensus::ValidatorSet,
    pub chain_id: &'a tally_crypto::ChainId,
}

/// The network as a repair sees it: requests to one peer.
pub trait Peers {
    fn peers(&self) -> Vec<PublicKey>;
    /// The checkpoint heights whose state the peer holds.
    fn snapshots(&self, peer: PublicKey) -> Result<Vec<u64>, String>;
    /// Stored blocks from `from`, at most `max`.
    fn blocks(&self, peer: PublicKey, from: u64, max: u32) -> Result<Vec<Vec<u8>>, String>;
    /// A page of the peer's snapshot at `height` after `after`: entries and whether it is
    /// the last page.
    fn snapshot_page(
        &self,
        peer: PublicKey,
        height: u64,
        after: Option<Vec<u8>>,
    ) -> Result<(Vec<Entry>, bool), String>;
}

/// Blocks fetched per request.
const BLOCKS_PER_REQUEST: u32 = 64;
/// The most blocks a repair walks back to find where this node's chain matches.
const WALK_BACK_MAX: u64 = 100_000;

/// Why a repair from one peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("no peer could serve a verified state")]
    NoPeer,
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error(
        "re-executing the certified blocks {from}..={to} gave block hash {got} at {to}, the certificate says {expected}: this node's execution differs from its peers'"
    )]
    ExecutionDiffers {
        from: u64,
        to: u64,
        got: Digest,
        expected: Digest,
    },
    #[error(transparent)]
    Chain(#[from] crate::execution::chain::ChainError),
}

/// A state installed: the chain is at `start`; `blocks` are the certified blocks
/// `start+1..=k` still to execute (the caller executes them, then checks the block hash it
/// computes at `k` against the certificate: [`check_reached`]).
pub struct Installed {
    pub start: u64,
    pub blocks: Vec<StoredBlock>,
}

/// Installs in `chain` a verified state from the first peer that can serve one, for the
/// certified checkpoint `target`.
pub fn repair(
    chain: &mut Chain,
    trust: &Trust<'_>,
    peers: &dyn Peers,
    target: &CheckpointCert,
    state_bytes_max: usize,
) -> Result<Installed, RepairError> {
    let mut last_error = RepairError::NoPeer;
    for peer in peers.peers() {
        match repair_from(chain, trust, peers, peer, target, state_bytes_max) {
            Ok(done) => return Ok(done),
            Err(e @ RepairError::Chain(_)) => return Err(e),
            Err(e) => {
                tracing::warn!("state repair from {peer}: {e}");
                last_error = e;
            }
        }
    }
    Err(last_error)
}

/// After the certified blocks were executed: the chain must be at the target with its
/// certified block hash.
pub fn check_reached(
    chain: &Chain,
    start: u64,
    target: &CheckpointCert,
) -> Result<(Seq, Digest), RepairError> {
    let got = chain.last_hash();
    if chain.height() != target.seq.0 || got != target.block_hash {
        return Err(RepairError::ExecutionDiffers {
            from: start + 1,
            to: target.seq.0,
            got,
            expected: target.block_hash,
        });
    }
    Ok((target.seq, got))
}

fn fail(peer: PublicKey, reason: impl Into<String>) -> RepairError {
    RepairError::Peer {
        peer: peer.to_string(),
        reason: reason.into(),
    }
}

/// A block from a peer whose certificate and batch digest were checked.
struct Fetched {
    bytes: Vec<u8>,
    block: StoredBlock,
}

fn fetch_range(
    trust: &Trust<'_>,
    peers: &dyn Peers,
    peer: PublicKey,
    from: u64,
    to: u64,
) -> Result<Vec<Fetched>, RepairError> {
    let mut out = Vec::new();
    let mut next = from;
    while next <= to {
        let max = BLOCKS_PER_REQUEST.min((to - next + 1) as u32);
        let got = peers.blocks(peer, next, max).map_err(|e| fail(peer, e))?;
        if got.is_empty() {
            return Err(fail(peer, format!("has no block {next}")));
        }
        for bytes in got.into_iter().take(max as usize) {
            let block = check_block(trust, &bytes, next).map_err(|e| fail(peer, e))?;
            out.push(Fetched { bytes, block });
            next += 1;
        }
    }
    Ok(out)
}

/// A block is what it claims: the right height, a header naming its own transactions, and
/// a commit certificate for them.
fn check_block(trust: &Trust<'_>, bytes: &[u8], height: u64) -> Result<StoredBlock, String> {
    let block = StoredBlock::decode(bytes).map_err(|e| e.to_string())?;
    if block.header.height != height {
        return Err(format!("sent block {} for {height}", block.header.height));
    }
    let digest = block.ordered_digest().map_err(|e| e.to_string())?;
    if block.header.batch_digest != digest {
        return Err(format!(
            "block {height}'s header does not name its transactions"
        ));
    }
    if block.outcomes.len() != block.txs.len() {
        return Err(format!("block {height} has the wrong number of outcomes"));
    }
    let certificate = block
        .certificate
        .as_ref()
        .ok_or("block has no certificate")?;
    certificate
        .verify(
            trust.validators,
            trust.chain_id,
            Some((Seq(height), digest)),
        )
        .map_err(|e| format!("block {height}: {e}"))?;
    Ok(block)
}

/// Checks that `blocks` (ascending, consecutive) form a chain ending in `hash`.
fn check_chain(blocks: &[Fetched], hash: Digest) -> Result<(), String> {
    let mut expected = hash;
    for f in blocks.iter().rev() {
        if f.block.hash() != expected {
            return Err(format!(
                "block {} is not the certified chain's",
                f.block.header.height
            ));
        }
        expected = f.block.header.prev_hash;
    }
    Ok(())
}

fn repair_from(
    chain: &mut Chain,
    trust: &Trust<'_>,
    peers: &dyn Peers,
    peer: PublicKey,
    target: &CheckpointCert,
    state_bytes_max: usize,
) -> Result<Installed, RepairError> {
    let k = target.seq.0;
    let mut snapshots: Vec<u64> = peers
        .snapshots(peer)
        .map_err(|e| fail(peer, e))?
        .into_iter()
        .filter(|h| *h > 0 && *h <= k)
        .collect();
    snapshots.sort_unstable();
    let Some(&lowest) = snapshots.first() else {
        return Err(fail(peer, format!("holds no snapshot at or below {k}")));
    };
    // 1. The certified chain from the lowest snapshot to k.
    let mut certified = fetch_range(trust, peers, peer, lowest, k)?;
    check_chain(&certified, target.block_hash).map_err(|e| fail(peer, e))?;
    let certified_hash = |h: u64, blocks: &[Fetched]| -> Option<Digest> {
        let first = blocks.first()?.block.header.height;
        blocks
            .get((h.checked_sub(first)?) as usize)
            .map(|f| f.block.hash())
    };
    // 2. The start: the highest snapshot where our block is the certified one.
    let local_hash = |h: u64| -> Option<Digest> {
        let bytes = chain.store().block(h).ok()??;
        StoredBlock::decode(&bytes).ok().map(|b| b.hash())
    };
    let clean = snapshots
        .iter()
        .rev()
        .copied()
        .find(|&s| local_hash(s).is_some() && local_hash(s) == certified_hash(s, &certified));
    let (start, replaced) = match clean {
        Some(s) => (s, Vec::new()),
        None => {
            // Walk back below the lowest snapshot until our chain matches the certified one.
            let mut below: Vec<Fetched> = Vec::new();
            let mut anchor = certified[0].block.header.prev_hash;
            let mut top = lowest - 1;
            loop {
                if top == 0 || local_hash(top) == Some(anchor) || lowest - top > WALK_BACK_MAX {
                    break;
                }
                let from = top.saturating_sub(BLOCKS_PER_REQUEST as u64 - 1).max(1);
                let page = fetch_range(trust, peers, peer, from, top)?;
                check_chain(&page, anchor).map_err(|e| fail(peer, e))?;
                anchor = page[0].block.header.prev_hash;
                // Keep only the blocks above where our chain matches.
                let matched = page
                    .iter()
                    .rposition(|f| local_hash(f.block.header.height) == Some(f.block.hash()));
                let keep = matched.map_or(0, |i| i + 1);
                let done = matched.is_some();
                below.splice(0..0, page.into_iter().skip(keep));
                if done {
                    break;
                }
                top = from - 1;
            }
            if lowest - top > WALK_BACK_MAX {
                return Err(fail(
                    peer,
                    "the divergence is too far back to repair from snapshots",
                ));
            }
            below.extend(certified.drain(..1));
            (lowest, below)
        }
    };
    let head = match replaced.last() {
        Some(f) if f.block.header.height == start => f.block.clone(),
        _ => {
            let i = (start - certified[0].block.header.height) as usize;
            certified[i].block.clone()
        }
    };
    // 3. The state at the start, checked against its certified state root.
    let mut state: Vec<Entry> = Vec::new();
    let mut hash = LtHash::zero();
    let mut bytes = 0usize;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (entries, done) = peers
            .snapshot_page(peer, start, after.clone())
            .map_err(|e| fail(peer, e))?;
        if entries.is_empty() && !done {
            return Err(fail(peer, "sent an empty page"));
        }
        for (k, v) in entries {
            if after.as_ref().is_some_and(|a| k <= *a) {
                return Err(fail(peer, "sent state entries out of order"));
            }
            bytes += k.len() + v.len();
            if bytes > state_bytes_max {
                return Err(fail(
                    peer,
                    format!("sent more than {state_bytes_max} bytes of state"),
                ));
            }
            hash.add(&k, &v);
            after = Some(k.clone());
            state.push((k, v));
        }
        if done {
            break;
        }
    }
    if hash.root() != head.header.state_root {
        return Err(fail(
            peer,
            format!("its state at {start} does not hash to the certified state root"),
        ));
    }
    // 4. Install, then execute the certified blocks up to k.
    let install = build_install(chain, start, state, &replaced)?;
    let old_height = chain.height();
    chain.install(install, &head, hash)?;
    tracing::info!(
        peer = %peer,
        from = start,
        replaced = replaced.len(),
        old_height,
        "installed the certified state"
    );
    let next = certified
        .iter()
        .position(|f| f.block.header.height == start + 1)
        .unwrap_or(certified.len());
    Ok(Installed {
        start,
        blocks: certified.into_iter().skip(next).map(|f| f.block).collect(),
    })
}

/// The write that installs the state at `start`: the replaced blocks (their index entries
/// redone) and the removal of every index entry of this node's own blocks above the point
/// where its chain matched.
fn build_install(
    chain: &Chain,
    start: u64,
    state: Vec<Entry>,
    replaced: &[Fetched],
) -> Result<StateInstall, RepairError> {
    let keep_below = replaced
        .first()
        .map_or(start, |f| f.block.header.height - 1);
    let store = chain.store();
    let mut delete: HashSet<Digest> = HashSet::new();
    for h in keep_below + 1..=chain.height() {
        if let Some(bytes) = store
            .block(h)
            .map_err(crate::execution::chain::ChainError::from)?
            && let Ok(b) = StoredBlock::decode(&bytes)
        {
            // The markers of the data batches these blocks executed go with them, or the
            // certified blocks re-executed next would find their batches "already executed".
            let markers = b
                .batches
                .iter()
                .map(|x| crate::execution::chain::executed_batch_key(&x.header.digest()));
            for hash in b.txs.iter().map(|tx| Digest::of(tx)).chain(markers) {
                let indexed_here = store
                    .tx_index(&hash)
                    .map_err(crate::execution::chain::ChainError::from)?
                    .and_then(|v| TxLocation::decode(&v))
                    .is_some_and(|l| l.height > keep_below);
                if indexed_here {
                    delete.insert(hash);
                }
            }
        }
    }
    // Index entries of the replaced blocks: the first occurrence of each transaction, unless
    // one at or below `keep_below` already holds it.
    let mut put: HashMap<Digest, Vec<u8>> = HashMap::new();
    for f in replaced {
        for (i, (tx, outcome)) in f.block.txs.iter().zip(&f.block.outcomes).enumerate() {
            let hash = Digest::of(tx);
            if put.contains_key(&hash) {
                continue;
            }
            let earlier = !delete.contains(&hash)
                && store
                    .tx_index(&hash)
                    .map_err(crate::execution::chain::ChainError::from)?
                    .is_some();
            if earlier {
                continue;
            }
            let location = TxLocation {
                height: f.block.header.height,
                index: i as u32,
                code: outcome.code(),
            };
            put.insert(hash, location.encode().to_vec());
        }
        for (i, b) in f
            .block
            .batches
            .iter()
            .enumerate()
            .filter(|(_, b)| b.executed)
        {
            let key = crate::execution::chain::executed_batch_key(&b.header.digest());
            let earlier = !delete.contains(&key)
                && store
                    .tx_index(&key)
                    .map_err(crate::execution::chain::ChainError::from)?
                    .is_some();
            if put.contains_key(&key) || earlier {
                continue;
            }
            let location = TxLocation {
                height: f.block.header.height,
                index: i as u32,
                code: 0,
            };
            put.insert(key, location.encode().to_vec());
        }
    }
    Ok(StateInstall {
        height: start,
        state,
        blocks: replaced
            .iter()
            .map(|f| (f.block.header.height, f.bytes.clone()))
            .collect(),
        tx_index_delete: delete.into_iter().collect(),
        tx_index_put: put.into_iter().collect(),
        meta: vec![],
    })
}
