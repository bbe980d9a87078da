//! What nodes send each other besides consensus messages (borsh-encoded).

use borsh::{BorshDeserialize, BorshSerialize};
use tally_consensus::Batch;
use tally_crypto::Digest;

/// Gossiped transactions: the node that admitted them bundles a few milliseconds' worth.
#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub struct TxBundle {
    pub txs: Vec<Vec<u8>>,
}

/// The most blocks one sync response carries, and transactions one body request asks for.
pub const SYNC_BLOCKS_MAX: u32 = 64;
pub const SYNC_TXS_MAX: usize = 8192;
/// The most pending transactions one `Pending` request is answered with, and their bytes.
pub const PENDING_TXS_MAX: usize = 4096;
pub const PENDING_BYTES_MAX: usize = 4 * 1024 * 1024;

#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub enum SyncRequest {
    /// Height and latest hash.
    Status,
    /// Stored blocks (with their certificates) from `from`, at most `max`.
    Blocks { from: u64, max: u32 },
    /// Transaction bodies by hash (to complete a proposal's batch).
    Txs { hashes: Vec<Digest> },
    /// Up to `max` of the peer's oldest orderable pending transactions (answered with
    /// `Txs`). A primary asks when its own pool runs low: it can propose only what its pool
    /// holds, and gossip it was too busy or full to take is otherwise lost to it.
    Pending { max: u32 },
    /// The batch (transaction hashes) with `digest` at sequence number `seq`, which a
    /// NEW-VIEW re-proposed (answered with `Payload`).
    Payload { seq: u64, digest: Digest },
    /// The checkpoint heights whose state snapshot the peer holds (answered with
    /// `Snapshots`).
    Snapshots,
    /// State entries of the snapshot at `height` after key `after`, at most `max_bytes`
    /// (answered with `SnapshotPage`).
    SnapshotPage {
        height: u64,
        after: Option<Vec<u8>>,
        max_bytes: u32,
    },
}

#[derive(BorshSerialize, BorshDeserialize, Debug, Clone)]
pub enum SyncResponse {
    Status {
        height: u64,
        latest_hash: Digest,
    },
    Blocks(Vec<Vec<u8>>),
    Txs(Vec<Vec<u8>>),
    Payload(Option<Batch>),
    Snapshots(Vec<u64>),
    SnapshotPage {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        done: bool,
    },
    Error(String),
}

pub fn encode<T: BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).expect("encoding to memory cannot fail")
}

pub fn decode<T: BorshDeserialize>(bytes: &[u8]) -> Option<T> {
    borsh::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batches::wire::BatchFrame;
    use tally_consensus::ValidatorSet;
    use tally_crypto::SecretKey;

    /// One frame of each kind a peer can send outside the consensus stream, as the
    /// `node_frames` fuzz target reads them (a selector byte, then the frame). Each round-trips
    /// here; with `TALLY_FUZZ_SEEDS=DIR` they are also written to DIR as the fuzz seeds
    /// (`fuzz/corpus/node_frames` in the repository).
    #[test]
    fn node_frames_round_trip_and_make_the_fuzz_seeds() {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect();
        let set = ValidatorSet::new(&keys).unwrap();
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for frame in crate::batches::wire::tests::sample_frames() {
            let bytes = frame.encode();
            assert_eq!(BatchFrame::decode(&bytes, &set), Ok(frame));
            seeds.push([&[0u8][..], &bytes].concat());
        }
        let bundle = encode(&TxBundle {
            txs: vec![vec![1; 40], vec![2; 3]],
        });
        seeds.push([&[1u8][..], &bundle].concat());
        for request in [
            SyncRequest::Status,
            SyncRequest::Blocks { from: 3, max: 64 },
            SyncRequest::Txs {
                hashes: vec![Digest([9; 32])],
            },
            SyncRequest::Pending { max: 10 },
            SyncRequest::Payload {
                seq: 4,
                digest: Digest([8; 32]),
            },
            SyncRequest::Snapshots,
            SyncRequest::SnapshotPage {
                height: 16,
                after: Some(vec![1, 2]),
                max_bytes: 4096,
            },
        ] {
            let bytes = encode(&request);
            assert_eq!(encode(&decode::<SyncRequest>(&bytes).unwrap()), bytes);
            seeds.push([&[2u8][..], &bytes].concat());
        }
        for response in [
            SyncResponse::Status {
                height: 5,
                latest_hash: Digest([3; 32]),
            },
            SyncResponse::Blocks(vec![vec![1, 2, 3]]),
            SyncResponse::Txs(vec![vec![4; 10]]),
            SyncResponse::Payload(Some(Batch {
                txs: vec![Digest([5; 32])],
            })),
            SyncResponse::Snapshots(vec![16, 32]),
            SyncResponse::SnapshotPage {
                entries: vec![(vec![1], vec![2, 3])],
                done: true,
            },
            SyncResponse::Error("no".into()),
        ] {
            let bytes = encode(&response);
            assert_eq!(encode(&decode::<SyncResponse>(&bytes).unwrap()), bytes);
            seeds.push([&[3u8][..], &bytes].concat());
        }
        if let Some(dir) = std::env::var_os("TALLY_FUZZ_SEEDS") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
            }
        }
    }
}
