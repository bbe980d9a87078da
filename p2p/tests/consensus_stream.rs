//! Consensus messages travel over one long-lived stream per connection: with real libp2p
//! swarms on loopback, a burst of messages of mixed sizes arrives complete and in order, in
//! both directions, and again after the connection is cut and redialled.

use std::net::TcpListener;
use std::time::Duration;

use tally_crypto::{Digest, PublicKey, SecretKey};
use tally_p2p::{P2pConfig, P2pEvent, P2pHandle};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn start(
    secret: &SecretKey,
    port: u16,
    validators: &[(PublicKey, u16)],
) -> (P2pHandle, mpsc::Receiver<P2pEvent>) {
    tally_p2p::spawn(P2pConfig {
        secret_seed: secret.seed(),
        listen: format!("127.0.0.1:{port}"),
        genesis_hash: Digest::of(b"consensus stream test"),
        validators: validators
            .iter()
            .map(|(k, p)| (*k, format!("127.0.0.1:{p}")))
            .collect(),
        observers: vec![],
    })
    .expect("p2p starts")
}

async fn wait_connected(events: &mut mpsc::Receiver<P2pEvent>, peer: PublicKey) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, events.recv()).await {
            Ok(Some(P2pEvent::PeerConnected(k))) if k == peer => return,
            Ok(Some(_)) => {}
            _ => panic!("no connection to {peer} within {WAIT:?}"),
        }
    }
}

/// Message `i` of a burst: its index, then filler; every 100th is 256 KiB.
fn message(i: u32) -> Vec<u8> {
    let len = if i.is_multiple_of(100) {
        256 * 1024
    } else {
        64 + (i as usize % 700)
    };
    let mut m = vec![(i % 251) as u8; len];
    m[..4].copy_from_slice(&i.to_be_bytes());
    m
}

/// Receives `n` consensus messages from `from` and checks each is the next of the burst.
async fn receive_burst(events: &mut mpsc::Receiver<P2pEvent>, from: PublicKey, n: u32) {
    let deadline = Instant::now() + WAIT;
    let mut next = 0u32;
    while next < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, events.recv()).await {
            Ok(Some(P2pEvent::Consensus { from: f, bytes })) => {
                assert_eq!(f, from, "sender");
                let got = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
                assert_eq!(got, next, "messages arrive in order");
                assert!(bytes == message(next), "message {next} arrives intact");
                next += 1;
            }
            Ok(Some(_)) => {}
            _ => panic!("{next} of {n} messages arrived within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_arrive_complete_and_in_order_also_after_a_reconnect() {
    let (a, b) = (
        SecretKey::from_seed(&[1; 32]),
        SecretKey::from_seed(&[2; 32]),
    );
    let (pa, pb) = (free_port(), free_port());
    let validators = [(a.public_key(), pa), (b.public_key(), pb)];
    let (ha, mut ea) = start(&a, pa, &validators);
    let (hb, mut eb) = start(&b, pb, &validators);
    wait_connected(&mut ea, b.public_key()).await;
    wait_connected(&mut eb, a.public_key()).await;

    const N: u32 = 2_000;
    for i in 0..N {
        ha.send(b.public_key(), message(i));
        hb.send(a.public_key(), message(i));
    }
    receive_burst(&mut eb, a.public_key(), N).await;
    receive_burst(&mut ea, b.public_key(), N).await;
    let sent = ha
        .stats
        .consensus_out_messages
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, u64::from(N));

    // B goes away and comes back on the same port: A redials, and a new stream carries the
    // next burst.
    drop(hb);
    drop(eb);
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, ea.recv()).await {
            Ok(Some(P2pEvent::PeerDisconnected(k))) if k == b.public_key() => break,
            Ok(Some(_)) => {}
            _ => panic!("A did not see B go within {WAIT:?}"),
        }
    }
    let (_hb, mut eb) = start(&b, pb, &validators);
    wait_connected(&mut eb, a.public_key()).await;
    wait_connected(&mut ea, b.public_key()).await;
    for i in 0..N {
        ha.send(b.public_key(), message(i));
    }
    receive_burst(&mut eb, a.public_key(), N).await;
}
