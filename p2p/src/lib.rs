//! Tally's peer-to-peer layer on libp2p: TCP with noise and yamux, one identity per
//! validator (its ed25519 key), and three channels:
//!
//! * **transaction gossip** (gossipsub, topic per genesis): bundles of client-signed
//!   transactions. Validation is on: the node checks every bundle and reports the result;
//!   invalid bundles cost the sender its peer score.
//! * **consensus**: signed consensus messages sent directly to a validator, over one
//!   long-lived stream per connection (frames queued during a write go out together).
//! * **sync** (request-response): blocks with their certificates, and transaction bodies, on
//!   request.
//!
//! Only peers whose keys are in the genesis (or the config's observer list) may connect; the
//! genesis hash is part of every protocol name and checked through identify, so nodes of
//! different networks cannot talk. Frames are bounded, per-peer in-flight requests are
//! bounded (the excess is dropped and counted), and dropped connections to validators are
//! redialled with exponential backoff.

mod codec;
mod inbound;
mod pipe;
mod swarm;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tally_crypto::{Digest, PublicKey};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

pub use swarm::spawn;

/// Bounds.
pub const CONSENSUS_FRAME_MAX: usize = 64 * 1024 * 1024;
pub const SYNC_FRAME_MAX: usize = 64 * 1024 * 1024;
pub const GOSSIP_MESSAGE_MAX: usize = 4 * 1024 * 1024;
/// The largest frame on the batch stream: a data batch of 4 MiB of transactions with its
/// length prefixes and header, with room to spare.
pub const BATCH_FRAME_MAX: usize = 6 * 1024 * 1024;
/// Frames queued per peer on the batch stream, in each of its two lanes (small frames —
/// attestations, proofs, requests — are written before batch bodies; see
/// `pipe::Queueing`). Batch frames are large (up to [`BATCH_FRAME_MAX`]), so fewer are
/// queued than on the consensus stream; beyond it new ones are dropped (and counted), and
/// the author asks again.
pub const BATCH_INFLIGHT_PER_PEER_MAX: usize = 256;
/// Bytes of large frames (batch bodies) queued per peer on the batch stream: a peer that
/// reads slowly costs at most this much memory, whatever the frame count.
pub const BATCH_QUEUED_BYTES_PER_PEER_MAX: usize = 64 * 1024 * 1024;
/// Outbound requests in flight per peer (sync), and consensus messages queued per
/// connection; beyond it new ones are dropped.
pub const INFLIGHT_PER_PEER_MAX: usize = 4096;
/// Events queued for the node; beyond it the oldest kind of traffic is dropped.
pub const EVENT_QUEUE: usize = 65_536;

pub struct P2pConfig {
    /// The validator's ed25519 seed: the libp2p identity is the same key.
    pub secret_seed: Zeroizing<[u8; 32]>,
    /// `host:port` to listen on.
    pub listen: String,
    pub genesis_hash: Digest,
    /// Genesis validators in order: key and `host:port`.
    pub validators: Vec<(PublicKey, String)>,
    /// Other keys allowed to connect (observers).
    pub observers: Vec<PublicKey>,
}

#[derive(Debug)]
pub enum P2pEvent {
    /// A consensus message from a validator (not yet verified).
    Consensus {
        from: PublicKey,
        bytes: Vec<u8>,
    },
    /// A frame on the batch stream from a validator (a data batch, an attestation, a
    /// request for a batch: the node decodes and checks it).
    Batches {
        from: PublicKey,
        bytes: Vec<u8>,
    },
    /// A gossiped transaction bundle; answer with [`P2pHandle::report_gossip`].
    Gossip {
        from: PublicKey,
        id: GossipId,
        bytes: Vec<u8>,
    },
    /// A sync request; answer with [`P2pHandle::respond`].
    SyncRequest {
        from: PublicKey,
        id: u64,
        bytes: Vec<u8>,
    },
    /// A peer broke a stream's framing rules (`what`: `oversized_frame`); the stream was
    /// closed. The node decides what that costs the peer ([`P2pHandle::ban`]).
    Misbehaved {
        from: PublicKey,
        what: &'static str,
    },
    PeerConnected(PublicKey),
    PeerDisconnected(PublicKey),
}

/// Identifies a gossip message for its validation result.
#[derive(Debug, Clone)]
pub struct GossipId {
    pub(crate) message_id: libp2p::gossipsub::MessageId,
    pub(crate) source: libp2p::PeerId,
}

#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("bad address {0}: {1}")]
    Address(String, String),
    #[error("invalid identity key")]
    Key,
    #[error("libp2p: {0}")]
    Libp2p(String),
    #[error("the p2p task has stopped")]
    Stopped,
    #[error("request failed: {0}")]
    Request(String),
}

/// Counters, read by the metrics exporter.
#[derive(Default, Debug)]
pub struct P2pStats {
    pub connected_peers: AtomicU64,
    pub consensus_in_messages: AtomicU64,
    pub consensus_in_bytes: AtomicU64,
    pub consensus_out_messages: AtomicU64,
    pub consensus_out_bytes: AtomicU64,
    pub batch_in_messages: AtomicU64,
    pub batch_in_bytes: AtomicU64,
    pub batch_out_messages: AtomicU64,
    pub batch_out_bytes: AtomicU64,
    pub gossip_in_messages: AtomicU64,
    pub gossip_in_bytes: AtomicU64,
    pub gossip_out_messages: AtomicU64,
    pub gossip_out_bytes: AtomicU64,
    pub sync_in_messages: AtomicU64,
    pub sync_in_bytes: AtomicU64,
    pub sync_out_messages: AtomicU64,
    pub sync_out_bytes: AtomicU64,
    pub dropped_outbound: AtomicU64,
    pub dropped_inbound: AtomicU64,
    pub gossip_rejected: AtomicU64,
    pub genesis_mismatch: AtomicU64,
    pub redials: AtomicU64,
}

impl P2pStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) enum Command {
    Send {
        to: PublicKey,
        bytes: Vec<u8>,
    },
    Broadcast {
        bytes: Vec<u8>,
    },
    SendBatches {
        to: PublicKey,
        bytes: Vec<u8>,
    },
    BroadcastBatches {
        bytes: Vec<u8>,
    },
    Publish {
        bytes: Vec<u8>,
    },
    Report {
        id: GossipId,
        accept: bool,
    },
    Ignore {
        id: GossipId,
    },
    Request {
        to: PublicKey,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, P2pError>>,
    },
    Respond {
        id: u64,
        bytes: Vec<u8>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PublicKey>>,
    },
    Scores {
        reply: oneshot::Sender<Vec<(PublicKey, f64)>>,
    },
    Ban {
        key: PublicKey,
        duration: std::time::Duration,
    },
}

/// The node's side of the p2p task.
#[derive(Clone)]
pub struct P2pHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub stats: Arc<P2pStats>,
    pub local_key: PublicKey,
}

impl P2pHandle {
    fn command(&self, c: Command) {
        if self.commands.try_send(c).is_err() {
            P2pStats::add(&self.stats.dropped_outbound, 1);
        }
    }

    /// Sends a consensus message to one validator (dropped, and counted, when its queue is
    /// full).
    pub fn send(&self, to: PublicKey, bytes: Vec<u8>) {
        self.command(Command::Send { to, bytes });
    }

    /// Sends a consensus message to every other validator.
    pub fn broadcast(&self, bytes: Vec<u8>) {
        self.command(Command::Broadcast { bytes });
    }

    /// Sends a frame on the batch stream to one validator (dropped, and counted, when its
    /// queue is full). The batch stream is separate from the consensus stream, so large
    /// batches never hold up votes.
    pub fn send_batches(&self, to: PublicKey, bytes: Vec<u8>) {
        self.command(Command::SendBatches { to, bytes });
    }

    /// Sends a frame on the batch stream to every other validator.
    pub fn broadcast_batches(&self, bytes: Vec<u8>) {
        self.command(Command::BroadcastBatches { bytes });
    }

    /// Gossips a transaction bundle.
    pub fn publish(&self, bytes: Vec<u8>) {
        self.command(Command::Publish { bytes });
    }

    /// The node's verdict on a gossiped bundle: accepted ones are forwarded, rejected ones
    /// cost the sender peer score.
    pub fn report_gossip(&self, id: GossipId, accept: bool) {
        self.command(Command::Report { id, accept });
    }

    /// Drops a gossiped bundle without judging it (no forwarding, no score change).
    pub fn ignore_gossip(&self, id: GossipId) {
        self.command(Command::Ignore { id });
    }

    /// A sync request to one peer; resolves with its response.
    pub async fn request(&self, to: PublicKey, bytes: Vec<u8>) -> Result<Vec<u8>, P2pError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request { to, bytes, reply })
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)?
    }

    pub fn respond(&self, id: u64, bytes: Vec<u8>) {
        self.command(Command::Respond { id, bytes });
    }

    /// Keys of the peers currently connected.
    pub async fn peers(&self) -> Vec<PublicKey> {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Peers { reply }).await.is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }

    /// Disconnects `key` and refuses its connections (both ways) for `duration`; a later ban
    /// replaces an earlier one. Only peers this node knows (validators, observers) can be
    /// banned: nobody else gets past the handshake anyway.
    pub fn ban(&self, key: PublicKey, duration: std::time::Duration) {
        self.command(Command::Ban { key, duration });
    }

    /// The gossip peer score of each connected peer (negative after invalid bundles; below
    /// the gossip thresholds its messages are ignored).
    pub async fn peer_scores(&self) -> Vec<(PublicKey, f64)> {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Scores { reply }).await.is_err() {
            return vec![];
        }
        rx.await.unwrap_or_default()
    }
}

/// The libp2p peer id of a Tally key.
pub fn peer_id(key: &PublicKey) -> Result<libp2p::PeerId, P2pError> {
    let pk =
        libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0).map_err(|_| P2pError::Key)?;
    Ok(libp2p::PeerId::from_public_key(
        &libp2p::identity::PublicKey::from(pk),
    ))
}

/// `host:port` to a multiaddr (`/ip4`, `/ip6` or `/dns`).
pub fn multiaddr(address: &str) -> Result<libp2p::Multiaddr, P2pError> {
    let bad = |why: &str| P2pError::Address(address.to_string(), why.to_string());
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let text = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        match ip {
            std::net::IpAddr::V4(v4) => format!("/ip4/{v4}/tcp/{port}"),
            std::net::IpAddr::V6(v6) => format!("/ip6/{v6}/tcp/{port}"),
        }
    } else {
        format!("/dns/{host}/tcp/{port}")
    };
    text.parse().map_err(|_| bad("not a valid address"))
}

#[cfg(test)]
mod abuse_tests;
