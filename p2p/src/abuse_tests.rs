//! A peer holding a validator's key that breaks the framing rules, with real swarms on
//! loopback: its frame over the limit is reported (`P2pEvent::Misbehaved`) without the body
//! being read, and a ban disconnects it and refuses it — frames included — until it ends.
//! The adversary is a raw swarm built here (the node's own sender refuses oversized frames).

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use tally_crypto::{Digest, SecretKey};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::pipe::{self, Queueing};
use crate::{BATCH_FRAME_MAX, P2pConfig, P2pEvent, peer_id};

enum Do {
    Dial,
    Send(Vec<u8>),
}

#[derive(Debug, PartialEq)]
enum Saw {
    Connected,
    Closed,
}

/// The adversary's swarm, driven by a task: dials `to` and sends raw batch-stream frames of
/// any size on command.
fn adversary(
    secret: &SecretKey,
    genesis: Digest,
    to: PeerId,
    address: Multiaddr,
) -> (mpsc::UnboundedSender<Do>, mpsc::UnboundedReceiver<Saw>) {
    let mut seed = secret.seed().to_vec();
    let key = libp2p::identity::ed25519::SecretKey::try_from_bytes(seed.as_mut_slice()).unwrap();
    let keypair = libp2p::identity::Keypair::from(libp2p::identity::ed25519::Keypair::from(key));
    let tag = &genesis.to_hex()[..16];
    let protocol = StreamProtocol::try_from_owned(format!("/tally/{tag}/batches/1")).unwrap();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            pipe::Behaviour::new(
                protocol,
                usize::MAX,
                Queueing {
                    frames_max: 64,
                    large_bytes_max: usize::MAX,
                    lanes: false,
                },
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let (commands, mut rx) = mpsc::unbounded_channel();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(Do::Dial) => {
                        let opts = DialOpts::peer_id(to).addresses(vec![address.clone()]).build();
                        let _ = swarm.dial(opts);
                    }
                    Some(Do::Send(bytes)) => swarm.behaviour_mut().send(to, bytes),
                    None => break,
                },
                e = swarm.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        let _ = seen_tx.send(Saw::Connected);
                    }
                    SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                        let _ = seen_tx.send(Saw::Closed);
                    }
                    _ => {}
                },
            }
        }
    });
    (commands, seen)
}

/// The next event `pick` accepts within `within`.
async fn next<T>(
    events: &mut mpsc::Receiver<P2pEvent>,
    within: Duration,
    mut pick: impl FnMut(&P2pEvent) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => {
                if let Some(t) = pick(&e) {
                    return Some(t);
                }
            }
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_reported_and_a_banned_peer_is_refused_until_the_ban_ends() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (honest, liar) = (
        SecretKey::from_seed(&[1; 32]),
        SecretKey::from_seed(&[2; 32]),
    );
    let genesis = Digest::of(b"abuse test");
    let (handle, mut events) = crate::spawn(P2pConfig {
        secret_seed: honest.seed(),
        listen: format!("127.0.0.1:{port}"),
        genesis_hash: genesis,
        validators: vec![
            (honest.public_key(), format!("127.0.0.1:{port}")),
            // An address nobody listens on: the honest node's redials fail quietly.
            (liar.public_key(), "127.0.0.1:9".into()),
        ],
        observers: vec![],
    })
    .unwrap();
    let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let (act, mut saw) = adversary(
        &liar,
        genesis,
        peer_id(&honest.public_key()).unwrap(),
        address,
    );
    act.send(Do::Dial).unwrap();
    assert_eq!(
        timeout(Duration::from_secs(10), saw.recv()).await.unwrap(),
        Some(Saw::Connected)
    );

    // A frame in the limit arrives; one byte over it is reported, unread.
    act.send(Do::Send(vec![1; 100])).unwrap();
    let got = next(&mut events, Duration::from_secs(10), |e| match e {
        P2pEvent::Batches { from, bytes } => Some((*from, bytes.len())),
        _ => None,
    })
    .await;
    assert_eq!(got, Some((liar.public_key(), 100)));
    act.send(Do::Send(vec![2; BATCH_FRAME_MAX + 1])).unwrap();
    let got = next(&mut events, Duration::from_secs(10), |e| match e {
        P2pEvent::Misbehaved { from, what } => Some((*from, *what)),
        P2pEvent::Batches { .. } => panic!("an oversized frame was delivered"),
        _ => None,
    })
    .await;
    assert_eq!(got, Some((liar.public_key(), "oversized_frame")));

    // Banned for 3 s: disconnected; its redials carry nothing through.
    handle.ban(liar.public_key(), Duration::from_secs(3));
    assert_eq!(
        timeout(Duration::from_secs(10), saw.recv()).await.unwrap(),
        Some(Saw::Closed)
    );
    let banned_at = tokio::time::Instant::now();
    act.send(Do::Dial).unwrap();
    act.send(Do::Send(vec![3; 10])).unwrap();
    let leaked = next(&mut events, Duration::from_secs(2), |e| match e {
        P2pEvent::Batches { .. } => Some(()),
        _ => None,
    })
    .await;
    assert!(leaked.is_none(), "a banned peer's frame was delivered");
    assert!(handle.peers().await.is_empty());

    // After the ban it connects and is heard again.
    tokio::time::sleep_until(banned_at + Duration::from_millis(3500)).await;
    while saw.try_recv().is_ok() {}
    act.send(Do::Dial).unwrap();
    assert_eq!(
        timeout(Duration::from_secs(10), saw.recv()).await.unwrap(),
        Some(Saw::Connected)
    );
    act.send(Do::Send(vec![4; 10])).unwrap();
    let got = next(&mut events, Duration::from_secs(10), |e| match e {
        P2pEvent::Batches { bytes, .. } => Some(bytes[0]),
        _ => None,
    })
    .await;
    assert_eq!(got, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempts_past_an_addresss_rate_are_closed_before_the_handshake() {
    use tokio::io::AsyncReadExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let honest = SecretKey::from_seed(&[1; 32]);
    let (_handle, _events) = crate::spawn(P2pConfig {
        secret_seed: honest.seed(),
        listen: format!("127.0.0.1:{port}"),
        genesis_hash: Digest::of(b"attempts"),
        validators: vec![(honest.public_key(), format!("127.0.0.1:{port}"))],
        observers: vec![],
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 40 TCP connections at once from one address that never speaks: the first 20 (the
    // burst) wait for a handshake; the others are closed at once.
    let mut sockets = Vec::new();
    for _ in 0..40 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        sockets.push(
            s.connect(format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    let reads = sockets.iter_mut().map(|s| async move {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    });
    let closed = futures::future::join_all(reads)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert!((18..=22).contains(&closed), "{closed} of 40 closed at once");
    // Another address is not affected.
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.4:0".parse().unwrap()).unwrap();
    let mut other = s
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), other.read(&mut buf))
            .await
            .is_err(),
        "another address's attempt was closed"
    );
}
