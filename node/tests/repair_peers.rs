//! The repair (`tally_node::execution::repair`) against lying peers: each serves a state or blocks
//! that do not match the certified checkpoint in one way, and is refused; an honest peer
//! after them repairs the diverged chain to exactly the certified one. In memory (the real
//! network path is `tests/repair.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use tally_consensus::pbft::CheckpointCert;
use tally_consensus::{COMMIT_DOMAIN, CommitCertificate, Seq, ValidatorId, ValidatorSet, View};
use tally_consensus::{batch_digest, commit_body};
use tally_crypto::{ChainId, Digest, PublicKey, SecretKey};
use tally_genesis::{ConsensusParams, Genesis, GenesisAccount, Protocol, Validator};
use tally_ledger::{Account, Action, Transaction, check_transactions, state::account_key};
use tally_node::execution::block::StoredBlock;
use tally_node::execution::chain::Chain;
use tally_node::execution::repair::{Peers, RepairError, Trust, check_reached, repair};
use tally_storage::{Entry, MemStore, StateInstall, Store};

fn validator(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i + 1; 32])
}

fn account(i: u8) -> SecretKey {
    SecretKey::from_seed(&[50 + i; 32])
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: ChainId::new("repair-test").unwrap(),
        consensus: ConsensusParams::new(Protocol::Pbft),
        validators: (0..4u8)
            .map(|i| Validator {
                name: format!("v{i}"),
                public_key: validator(i).public_key(),
                p2p: format!("127.0.0.1:{}", 21000 + i as u16),
            })
            .collect(),
        accounts: (0..4u8)
            .map(|i| GenesisAccount {
                address: account(i).public_key(),
                balance: 1_000_000,
            })
            .collect(),
    }
}

/// Transactions for `height`: transfers between the four accounts.
fn txs(g: &Genesis, height: u64) -> Vec<Vec<u8>> {
    (0..4u8)
        .map(|i| {
            Transaction {
                chain_id: g.chain_id.clone(),
                sender: account(i).public_key(),
                nonce: height - 1,
                action: Action::Transfer {
                    to: account((i + 1) % 4).public_key(),
                    amount: height * 10 + i as u64,
                },
            }
            .sign(&account(i))
            .unwrap()
            .into_encoded()
        })
        .collect()
}

/// A commit certificate for `txs` at `height`, signed by validators 0, 1, 2.
fn certificate(g: &Genesis, height: u64, txs: &[Vec<u8>]) -> CommitCertificate {
    let hashes: Vec<Digest> = txs.iter().map(|t| Digest::of(t)).collect();
    let digest = batch_digest(&hashes);
    let body = commit_body(View(0), Seq(height), &digest);
    CommitCertificate {
        view: View(0),
        seq: Seq(height),
        digest,
        signatures: (0..3u8)
            .map(|i| {
                (
                    ValidatorId(i as u16),
                    validator(i).sign(COMMIT_DOMAIN, &g.chain_id, &body),
                )
            })
            .collect(),
    }
}

fn apply(chain: &mut Chain, g: &Genesis, height: u64) {
    let txs = txs(g, height);
    let checked = check_transactions(&g.chain_id, &txs);
    let cert = certificate(g, height, &txs);
    chain
        .apply(height, txs, &checked, Some(cert), false)
        .unwrap();
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Lie {
    Honest,
    /// One state entry changed.
    AlteredState,
    /// Two entries swapped.
    Unordered,
    /// A block whose header names another state root (the hash chain breaks).
    AlteredHeader,
    /// A block whose certificate has two signatures only.
    WeakCertificate,
    /// Endless state: more than the repair accepts.
    Endless,
}

struct Peer {
    key: PublicKey,
    blocks: Vec<Vec<u8>>,
    snapshots: BTreeMap<u64, Vec<Entry>>,
    lie: Lie,
}

struct Network(Vec<Peer>);

impl Network {
    fn peer(&self, key: PublicKey) -> &Peer {
        self.0.iter().find(|p| p.key == key).unwrap()
    }
}

impl Peers for Network {
    fn peers(&self) -> Vec<PublicKey> {
        self.0.iter().map(|p| p.key).collect()
    }

    fn snapshots(&self, peer: PublicKey) -> Result<Vec<u64>, String> {
        Ok(self.peer(peer).snapshots.keys().copied().collect())
    }

    fn blocks(&self, peer: PublicKey, from: u64, max: u32) -> Result<Vec<Vec<u8>>, String> {
        let p = self.peer(peer);
        let mut out: Vec<Vec<u8>> = p
            .blocks
            .iter()
            .skip(from as usize - 1)
            .take(max as usize)
            .cloned()
            .collect();
        for (i, bytes) in out.iter_mut().enumerate() {
            let height = from + i as u64;
            let mut b = StoredBlock::decode(bytes).unwrap();
            match p.lie {
                Lie::AlteredHeader if height == 12 => b.header.state_root = Digest::of(b"lie"),
                Lie::WeakCertificate if height == 14 => {
                    b.certificate.as_mut().unwrap().signatures.truncate(2)
                }
                _ => continue,
            }
            *bytes = b.encode();
        }
        Ok(out)
    }

    fn snapshot_page(
        &self,
        peer: PublicKey,
        height: u64,
        after: Option<Vec<u8>>,
    ) -> Result<(Vec<Entry>, bool), String> {
        let p = self.peer(peer);
        let mut state = p.snapshots.get(&height).ok_or("no snapshot")?.clone();
        match p.lie {
            Lie::AlteredState => state[1].1[0] ^= 1,
            Lie::Unordered => state.swap(1, 2),
            Lie::Endless => {
                let n = after.as_ref().map_or(0, |a| a.len());
                return Ok((vec![(vec![0xff; n + 1], vec![0; 1 << 20])], false));
            }
            _ => {}
        }
        let rest: Vec<Entry> = state
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .collect();
        let done = rest.len() <= 3;
        Ok((rest.into_iter().take(3).collect(), done))
    }
}

/// The genesis, the certified chain, the diverged one, the certified blocks, snapshots.
type Setup = (
    Genesis,
    Chain,
    Chain,
    Vec<Vec<u8>>,
    BTreeMap<u64, Vec<Entry>>,
);

/// The certified chain (16 blocks, snapshots at 8 and 16) and a chain that diverged at
/// height 13 (a corrupt balance, then the same certified blocks executed on it).
fn setup() -> Setup {
    let g = genesis();
    let good_store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut good = Chain::open(good_store.clone(), &g).unwrap();
    let mut snapshots = BTreeMap::new();
    for h in 1..=16 {
        apply(&mut good, &g, h);
        if h % 8 == 0 {
            snapshots.insert(h, good_store.state_scan(None, usize::MAX).unwrap());
        }
    }
    let blocks: Vec<Vec<u8>> = (1..=16)
        .map(|h| good_store.block(h).unwrap().unwrap())
        .collect();
    let bad_store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut bad = Chain::open(bad_store.clone(), &g).unwrap();
    for h in 1..=12 {
        apply(&mut bad, &g, h);
    }
    let key = account_key(&account(2).public_key());
    let mut state = bad_store.state_scan(None, usize::MAX).unwrap();
    let e = state.iter_mut().find(|(k, _)| *k == key).unwrap();
    let mut a = Account::decode(&e.1).unwrap();
    a.balance += 5;
    e.1 = a.encode().to_vec();
    bad_store
        .install_state(StateInstall {
            height: 12,
            state,
            ..Default::default()
        })
        .unwrap();
    drop(bad);
    let mut bad = Chain::open(bad_store, &g).unwrap();
    for h in 13..=16 {
        apply(&mut bad, &g, h);
    }
    assert_ne!(bad.last_hash(), good.last_hash(), "diverged");
    (g, good, bad, blocks, snapshots)
}

fn finish(chain: &mut Chain, g: &Genesis, installed: tally_node::execution::repair::Installed) {
    for b in installed.blocks {
        let checked = check_transactions(&g.chain_id, &b.txs);
        chain
            .apply(b.header.height, b.txs, &checked, b.certificate, false)
            .unwrap();
    }
}

/// The genesis validator set, and the certified checkpoint at 16 (the good chain's hash).
fn trust_and_target(g: &Genesis, good: &Chain) -> (ValidatorSet, CheckpointCert) {
    let keys: Vec<PublicKey> = g.validators.iter().map(|v| v.public_key).collect();
    let target = CheckpointCert {
        seq: Seq(16),
        block_hash: good.last_hash(),
        signatures: vec![],
    };
    (ValidatorSet::new(&keys).unwrap(), target)
}

#[test]
fn lying_peers_are_refused_and_an_honest_one_repairs() {
    let (g, good, mut bad, blocks, snapshots) = setup();
    let (set, target) = trust_and_target(&g, &good);
    let trust = Trust {
        validators: &set,
        chain_id: &g.chain_id,
    };
    let peer = |i: u8, lie| Peer {
        key: validator(i).public_key(),
        blocks: blocks.clone(),
        snapshots: snapshots.clone(),
        lie,
    };
    let liars = [
        Lie::AlteredState,
        Lie::Unordered,
        Lie::AlteredHeader,
        Lie::WeakCertificate,
        Lie::Endless,
    ];
    // Liars only: every one refused, nothing installed.
    for lie in liars {
        let net = Network(vec![peer(0, lie)]);
        let err = match repair(&mut bad, &trust, &net, &target, 64 * 1024 * 1024) {
            Err(e) => e,
            Ok(_) => panic!("{lie:?} was believed"),
        };
        assert!(matches!(err, RepairError::Peer { .. }), "{lie:?}: {err}");
        assert_eq!(bad.height(), 16, "{lie:?}: nothing installed");
    }
    // Liars, then an honest peer: repaired from the snapshot at 8 (the diverged chain still
    // matches there), the certified blocks after it executed here.
    let net = Network(
        liars
            .iter()
            .enumerate()
            .map(|(i, l)| peer(i as u8 % 3, *l))
            .chain([peer(3, Lie::Honest)])
            .collect(),
    );
    let installed = repair(&mut bad, &trust, &net, &target, 64 * 1024 * 1024).unwrap();
    assert_eq!(installed.start, 8);
    assert_eq!(bad.height(), 8);
    let start = installed.start;
    finish(&mut bad, &g, installed);
    check_reached(&bad, start, &target).unwrap();
    assert_eq!(bad.last_hash(), good.last_hash());
    assert_eq!(
        bad.store().state_scan(None, usize::MAX).unwrap(),
        good.store().state_scan(None, usize::MAX).unwrap()
    );
    assert_eq!(bad.recompute_state_root().unwrap(), good.state_root());
    for h in 1..=16 {
        assert_eq!(
            bad.block(h).unwrap().unwrap().hash(),
            good.block(h).unwrap().unwrap().hash(),
            "block {h}"
        );
    }
}

/// With no snapshot before the divergence (the peer holds only 16), the diverged blocks are
/// replaced by the peer's back to where the chains match, each checked against the
/// certified hash chain and its commit certificate; transactions are indexed again.
#[test]
fn a_divergence_older_than_the_snapshots_replaces_blocks() {
    let (g, good, mut bad, blocks, mut snapshots) = setup();
    snapshots.remove(&8);
    let (set, target) = trust_and_target(&g, &good);
    let trust = Trust {
        validators: &set,
        chain_id: &g.chain_id,
    };
    let net = Network(vec![Peer {
        key: validator(1).public_key(),
        blocks,
        snapshots,
        lie: Lie::Honest,
    }]);
    let installed = repair(&mut bad, &trust, &net, &target, 64 * 1024 * 1024).unwrap();
    assert_eq!(installed.start, 16);
    assert!(installed.blocks.is_empty());
    check_reached(&bad, 16, &target).unwrap();
    for h in 1..=16 {
        assert_eq!(
            bad.block(h).unwrap().unwrap().hash(),
            good.block(h).unwrap().unwrap().hash()
        );
    }
    for t in txs(&g, 14) {
        let hash = Digest::of(&t);
        assert_eq!(
            bad.tx_location(&hash).unwrap(),
            good.tx_location(&hash).unwrap()
        );
    }
    assert_eq!(bad.recompute_state_root().unwrap(), good.state_root());
}
