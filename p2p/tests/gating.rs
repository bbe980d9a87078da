//! The p2p layer's gates, with real libp2p swarms on loopback: only genesis validators and
//! configured observers may connect, a node of another network (different genesis hash) is
//! cut off, and a peer whose gossiped bundles are rejected loses peer score until its
//! messages are no longer delivered.

use std::net::TcpListener;
use std::time::Duration;

use tally_crypto::{Digest, PublicKey, SecretKey};
use tally_p2p::{P2pConfig, P2pEvent, P2pHandle};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

struct Node {
    key: PublicKey,
    handle: P2pHandle,
    events: mpsc::Receiver<P2pEvent>,
}

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i; 32])
}

/// Starts a node with `secret`, listening on `port`, knowing `validators` (key, port) and
/// allowing `observers`.
fn start(
    secret: &SecretKey,
    port: u16,
    genesis: Digest,
    validators: &[(PublicKey, u16)],
    observers: &[PublicKey],
) -> Node {
    let (handle, events) = tally_p2p::spawn(P2pConfig {
        secret_seed: secret.seed(),
        listen: format!("127.0.0.1:{port}"),
        genesis_hash: genesis,
        validators: validators
            .iter()
            .map(|(k, p)| (*k, format!("127.0.0.1:{p}")))
            .collect(),
        observers: observers.to_vec(),
    })
    .expect("p2p starts");
    Node {
        key: secret.public_key(),
        handle,
        events,
    }
}

/// Waits for the first event matching `pick`, skipping others; `None` after `within`.
async fn wait_for<T>(
    node: &mut Node,
    within: Duration,
    mut pick: impl FnMut(&P2pEvent) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, node.events.recv()).await {
            Ok(Some(e)) => {
                if let Some(t) = pick(&e) {
                    return Some(t);
                }
            }
            _ => return None,
        }
    }
}

async fn connected(node: &mut Node, peer: PublicKey, within: Duration) -> bool {
    wait_for(node, within, |e| match e {
        P2pEvent::PeerConnected(k) if *k == peer => Some(()),
        _ => None,
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_genesis_validators_and_observers_connect() {
    let genesis = Digest::of(b"gating test genesis");
    let (a, b, stranger, observer) = (key(1), key(2), key(3), key(4));
    let (pa, pb, ps, po) = (free_port(), free_port(), free_port(), free_port());
    let validators = [(a.public_key(), pa), (b.public_key(), pb)];

    // A allows one observer; B allows none.
    let mut na = start(&a, pa, genesis, &validators, &[observer.public_key()]);
    let mut nb = start(&b, pb, genesis, &validators, &[]);
    assert!(connected(&mut na, nb.key, WAIT).await, "A and B connect");
    assert!(connected(&mut nb, na.key, WAIT).await, "B sees A");

    // The stranger and the observer both believe they are validators and dial A and B.
    let theirs = [
        (a.public_key(), pa),
        (b.public_key(), pb),
        (stranger.public_key(), ps),
        (observer.public_key(), po),
    ];
    let mut ns = start(&stranger, ps, genesis, &theirs, &[]);
    let no = start(&observer, po, genesis, &theirs, &[]);

    assert!(
        connected(&mut na, no.key, WAIT).await,
        "A accepts its observer"
    );
    assert!(
        !connected(&mut na, ns.key, Duration::from_secs(3)).await,
        "A refuses a key that is neither validator nor observer"
    );
    assert!(
        !connected(&mut nb, ns.key, Duration::from_secs(1)).await,
        "B refuses the stranger"
    );
    assert!(
        !connected(&mut nb, no.key, Duration::from_secs(1)).await,
        "B has no observer list: refuses A's observer"
    );
    let peers_a = na.handle.peers().await;
    assert!(peers_a.contains(&nb.key) && peers_a.contains(&no.key));
    assert!(!peers_a.contains(&ns.key));
    let peers_b = nb.handle.peers().await;
    assert_eq!(peers_b, vec![na.key]);
    // The stranger's own view: it never completes a connection with A or B.
    assert!(
        !connected(&mut ns, na.key, Duration::from_millis(500)).await
            && !ns.handle.peers().await.contains(&nb.key)
    );
    drop(no);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_network_is_cut_off() {
    let (a, b) = (key(11), key(12));
    let (pa, pb) = (free_port(), free_port());
    let validators = [(a.public_key(), pa), (b.public_key(), pb)];
    // Same keys, different genesis: the identify check disconnects them.
    let mut na = start(&a, pa, Digest::of(b"network one"), &validators, &[]);
    let _nb = start(&b, pb, Digest::of(b"network two"), &validators, &[]);

    let deadline = Instant::now() + WAIT;
    while na
        .handle
        .stats
        .genesis_mismatch
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the genesis mismatch was never detected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever connection was opened is closed again and never carries traffic.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !na.handle.peers().await.contains(&b.public_key()),
        "A stays disconnected from a node of another network"
    );
    let consensus_in = na
        .handle
        .stats
        .consensus_in_messages
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(consensus_in, 0);
    while let Ok(e) = na.events.try_recv() {
        assert!(
            !matches!(e, P2pEvent::Gossip { .. } | P2pEvent::Consensus { .. }),
            "no traffic from another network"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_gossip_costs_the_sender_its_score() {
    let genesis = Digest::of(b"score test genesis");
    let (a, b) = (key(21), key(22));
    let (pa, pb) = (free_port(), free_port());
    let validators = [(a.public_key(), pa), (b.public_key(), pb)];
    let mut na = start(&a, pa, genesis, &validators, &[]);
    let mut nb = start(&b, pb, genesis, &validators, &[]);
    assert!(connected(&mut na, nb.key, WAIT).await);
    assert!(connected(&mut nb, na.key, WAIT).await);

    // Gossipsub needs a heartbeat or two to put the peers in each other's mesh; publish until
    // B sees a bundle (each publish has distinct bytes, so none is a duplicate).
    let mut n = 0u32;
    let first = loop {
        n += 1;
        assert!(n < 100, "B never received A's gossip");
        na.handle.publish(format!("good bundle {n}").into_bytes());
        let got = wait_for(&mut nb, Duration::from_millis(300), |e| match e {
            P2pEvent::Gossip { from, id, bytes } => Some((*from, id.clone(), bytes.clone())),
            _ => None,
        })
        .await;
        if let Some(g) = got {
            break g;
        }
    };
    assert_eq!(first.0, na.key);
    nb.handle.report_gossip(first.1, true);
    let score = |scores: Vec<(PublicKey, f64)>, k: PublicKey| {
        scores
            .into_iter()
            .find(|(p, _)| *p == k)
            .map(|(_, s)| s)
            .expect("a score for a connected peer")
    };
    let before = score(nb.handle.peer_scores().await, na.key);
    assert!(
        before >= 0.0,
        "an honest peer starts without penalty: {before}"
    );

    // A now sends bundles that B judges invalid.
    let mut rejected = 0;
    for i in 0..5 {
        na.handle.publish(format!("bad bundle {i}").into_bytes());
        if let Some(id) = wait_for(&mut nb, Duration::from_secs(2), |e| match e {
            P2pEvent::Gossip { id, .. } => Some(id.clone()),
            _ => None,
        })
        .await
        {
            nb.handle.report_gossip(id, false);
            rejected += 1;
        }
    }
    assert!(rejected >= 1, "B received none of the bad bundles");
    // Reports are processed in order by the p2p task; the score query comes after them.
    let after = score(nb.handle.peer_scores().await, na.key);
    assert!(
        after < -80.0,
        "after {rejected} rejected bundles A's score is {after} (was {before})"
    );
    assert_eq!(
        nb.handle
            .stats
            .gossip_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        rejected
    );

    // Below the graylist threshold, B ignores what A sends.
    for i in 0..5 {
        na.handle
            .publish(format!("after graylisting {i}").into_bytes());
    }
    let late = wait_for(&mut nb, Duration::from_secs(2), |e| match e {
        P2pEvent::Gossip { .. } => Some(()),
        _ => None,
    })
    .await;
    assert!(late.is_none(), "a graylisted peer's gossip was delivered");
}

/// Batches travel on their own stream: a frame of several MiB arrives whole, beside
/// consensus messages, only as a `Batches` event, and a broadcast reaches every validator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_travel_on_their_own_stream() {
    let genesis = Digest::of(b"batch stream test genesis");
    let (a, b, c) = (key(11), key(12), key(13));
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let validators = [
        (a.public_key(), pa),
        (b.public_key(), pb),
        (c.public_key(), pc),
    ];
    let na = start(&a, pa, genesis, &validators, &[]);
    let mut nb = start(&b, pb, genesis, &validators, &[]);
    let mut nc = start(&c, pc, genesis, &validators, &[]);
    assert!(connected(&mut nb, na.key, WAIT).await, "B sees A");
    assert!(connected(&mut nc, na.key, WAIT).await, "C sees A");

    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    na.handle.send_batches(nb.key, big.clone());
    na.handle.send(nb.key, b"a vote".to_vec());
    let (mut got_batch, mut got_vote) = (None, false);
    let deadline = Instant::now() + WAIT;
    while (got_batch.is_none() || !got_vote) && Instant::now() < deadline {
        match timeout(WAIT, nb.events.recv()).await {
            Ok(Some(P2pEvent::Batches { from, bytes })) => {
                assert_eq!(from, na.key);
                got_batch = Some(bytes);
            }
            Ok(Some(P2pEvent::Consensus { bytes, .. })) => {
                assert_eq!(bytes, b"a vote");
                got_vote = true;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert!(got_vote, "the consensus message arrived");
    assert_eq!(got_batch.expect("the batch frame arrived"), big);

    na.handle.broadcast_batches(b"to everyone".to_vec());
    for node in [&mut nb, &mut nc] {
        let got = wait_for(node, WAIT, |e| match e {
            P2pEvent::Batches { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .await;
        assert_eq!(got.as_deref(), Some(&b"to everyone"[..]));
    }
    assert!(
        na.handle
            .stats
            .batch_out_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= big.len() as u64 + 22
    );
}
