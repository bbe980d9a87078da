//! The swarm and its event loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, identify, noise,
    ping, tcp, yamux,
};
use tally_crypto::PublicKey;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::codec::FrameCodec;
use crate::{
    BATCH_FRAME_MAX, BATCH_INFLIGHT_PER_PEER_MAX, BATCH_QUEUED_BYTES_PER_PEER_MAX,
    CONSENSUS_FRAME_MAX, Command, EVENT_QUEUE, GOSSIP_MESSAGE_MAX, GossipId, INFLIGHT_PER_PEER_MAX,
    P2pConfig, P2pError, P2pEvent, P2pHandle, P2pStats, SYNC_FRAME_MAX, multiaddr, peer_id,
};

#[derive(NetworkBehaviour)]
struct Behaviour {
    inbound: crate::inbound::Behaviour,
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossip: gossipsub::Behaviour,
    consensus: crate::pipe::Behaviour,
    batches: crate::pipe::Behaviour,
    sync: request_response::Behaviour<FrameCodec>,
}

struct Peer {
    key: PublicKey,
    address: Option<Multiaddr>,
    connected: bool,
    backoff: Duration,
    next_dial: Option<Instant>,
    inflight_sync: usize,
}

struct Task {
    swarm: Swarm<Behaviour>,
    stats: Arc<P2pStats>,
    events: mpsc::Sender<P2pEvent>,
    peers: HashMap<PeerId, Peer>,
    validators: HashSet<PeerId>,
    me: PeerId,
    topic: IdentTopic,
    protocol_version: String,
    sync_requests: HashMap<OutboundRequestId, (PeerId, SyncReply)>,
    inbound_sync: HashMap<u64, ResponseChannel<Vec<u8>>>,
    next_inbound: u64,
    /// Banned peers and when their ban ends (at most one entry per known peer).
    bans: HashMap<PeerId, Instant>,
}

type SyncReply = oneshot::Sender<Result<Vec<u8>, P2pError>>;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Starts the p2p task; returns its handle and the stream of events for the node.
pub fn spawn(config: P2pConfig) -> Result<(P2pHandle, mpsc::Receiver<P2pEvent>), P2pError> {
    let mut seed = config.secret_seed.clone();
    let secret = libp2p::identity::ed25519::SecretKey::try_from_bytes(seed.as_mut())
        .map_err(|_| P2pError::Key)?;
    let keypair = libp2p::identity::Keypair::from(libp2p::identity::ed25519::Keypair::from(secret));
    let me = keypair.public().to_peer_id();
    let local_key = {
        let ed = keypair
            .public()
            .try_into_ed25519()
            .map_err(|_| P2pError::Key)?;
        PublicKey(ed.to_bytes())
    };
    let genesis = config.genesis_hash.to_hex();
    let tag = &genesis[..16];
    let consensus_protocol = StreamProtocol::try_from_owned(format!("/tally/{tag}/consensus/2"))
        .map_err(|e| P2pError::Libp2p(e.to_string()))?;
    let batches_protocol = StreamProtocol::try_from_owned(format!("/tally/{tag}/batches/1"))
        .map_err(|e| P2pError::Libp2p(e.to_string()))?;
    let sync_protocol = StreamProtocol::try_from_owned(format!("/tally/{tag}/sync/1"))
        .map_err(|e| P2pError::Libp2p(e.to_string()))?;
    let protocol_version = format!("tally/1/{genesis}");
    let topic = IdentTopic::new(format!("tally/{tag}/txs"));

    let mut peers = HashMap::new();
    let mut validators = HashSet::new();
    let mut allowed = Vec::new();
    for (key, address) in &config.validators {
        let id = peer_id(key)?;
        allowed.push(id);
        validators.insert(id);
        if id != me {
            peers.insert(
                id,
                Peer {
                    key: *key,
                    address: Some(multiaddr(address)?),
                    connected: false,
                    backoff: BACKOFF_MIN,
                    next_dial: Some(Instant::now()),
                    inflight_sync: 0,
                },
            );
        }
    }
    for key in &config.observers {
        let id = peer_id(key)?;
        allowed.push(id);
        peers.entry(id).or_insert(Peer {
            key: *key,
            address: None,
            connected: false,
            backoff: BACKOFF_MIN,
            next_dial: None,
            inflight_sync: 0,
        });
    }

    let rr_config = request_response::Config::default()
        .with_request_timeout(Duration::from_secs(30))
        .with_max_concurrent_streams(1024);
    let pv = protocol_version.clone();
    let score_topic = topic.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Libp2p(e.to_string()))?
        .with_behaviour(|key| {
            let mut allow = allow_block_list::Behaviour::default();
            for id in &allowed {
                allow.allow_peer(*id);
            }
            let gossip_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .validate_messages()
                .max_transmit_size(GOSSIP_MESSAGE_MAX)
                .heartbeat_interval(Duration::from_millis(500))
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(tally_crypto::Digest::of(&m.data).0.to_vec())
                })
                .build()
                .map_err(|e| e.to_string())?;
            // Client transactions carry their own signatures; gossipsub's would only cost.
            let mut gossip = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                gossip_config,
            )?;
            gossip.with_peer_score(
                peer_score_params(&score_topic),
                gossipsub::PeerScoreThresholds::default(),
            )?;
            Ok(Behaviour {
                inbound: crate::inbound::Behaviour::default(),
                allow,
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established_per_peer(Some(2))
                        .with_max_established(Some(512))
                        .with_max_pending_incoming(Some(64)),
                ),
                identify: identify::Behaviour::new(identify::Config::new(pv, key.public())),
                ping: ping::Behaviour::default(),
                gossip,
                consensus: crate::pipe::Behaviour::new(
                    consensus_protocol,
                    CONSENSUS_FRAME_MAX,
                    crate::pipe::Queueing {
                        frames_max: INFLIGHT_PER_PEER_MAX,
                        large_bytes_max: usize::MAX,
                        lanes: false,
                    },
                ),
                batches: crate::pipe::Behaviour::new(
                    batches_protocol,
                    BATCH_FRAME_MAX,
                    crate::pipe::Queueing {
                        frames_max: BATCH_INFLIGHT_PER_PEER_MAX,
                        large_bytes_max: BATCH_QUEUED_BYTES_PER_PEER_MAX,
                        lanes: true,
                    },
                ),
                sync: request_response::Behaviour::with_codec(
                    FrameCodec {
                        max_request: 1024 * 1024,
                        max_response: SYNC_FRAME_MAX,
                    },
                    [(sync_protocol, ProtocolSupport::Full)],
                    rr_config,
                ),
            })
        })
        .map_err(|e| P2pError::Libp2p(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm
        .behaviour_mut()
        .gossip
        .subscribe(&topic)
        .map_err(|e| P2pError::Libp2p(e.to_string()))?;
    swarm
        .listen_on(multiaddr(&config.listen)?)
        .map_err(|e| P2pError::Libp2p(e.to_string()))?;

    let stats = Arc::new(P2pStats::default());
    let (commands_tx, commands) = mpsc::channel(65_536);
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let task = Task {
        swarm,
        stats: stats.clone(),
        events,
        peers,
        validators,
        me,
        topic,
        protocol_version,
        sync_requests: HashMap::new(),
        inbound_sync: HashMap::new(),
        next_inbound: 0,
        bans: HashMap::new(),
    };
    tokio::spawn(task.run(commands));
    Ok((
        P2pHandle {
            commands: commands_tx,
            stats,
            local_key,
        },
        events_rx,
    ))
}

/// Gossip peer scoring for a small permissioned network. A bundle the node rejects (it does
/// not decode or a signature is invalid — never a judgement honest nodes could disagree on)
/// costs its sender 100 points, squared in the count and decaying by 10% a second: one such
/// bundle puts the sender below the graylist threshold (−80), where its gossip is ignored.
/// The positive terms are kept small so that no amount of good behaviour buys tolerance for
/// invalid bundles, and the under-delivery penalties are off: in a quiet network honest
/// validators deliver little, which is not misbehaviour.
fn peer_score_params(topic: &IdentTopic) -> gossipsub::PeerScoreParams {
    let mut params = gossipsub::PeerScoreParams::default();
    params.topics.insert(
        topic.hash(),
        gossipsub::TopicScoreParams {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.01,
            time_in_mesh_quantum: Duration::from_secs(1),
            time_in_mesh_cap: 100.0,
            first_message_deliveries_weight: 0.1,
            first_message_deliveries_decay: 0.5,
            first_message_deliveries_cap: 50.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_failure_penalty_weight: 0.0,
            invalid_message_deliveries_weight: -100.0,
            invalid_message_deliveries_decay: 0.9,
            ..Default::default()
        },
    );
    params
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut redial = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                command = commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = redial.tick() => self.redial(),
            }
        }
    }

    fn emit(&self, event: P2pEvent) {
        if self.events.try_send(event).is_err() {
            P2pStats::add(&self.stats.dropped_inbound, 1);
        }
    }

    fn key_of(&self, peer: &PeerId) -> Option<PublicKey> {
        self.peers.get(peer).map(|p| p.key)
    }

    fn redial(&mut self) {
        let now = Instant::now();
        let ended: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.bans.remove(&id);
            self.swarm.behaviour_mut().allow.allow_peer(id);
            if let Some(p) = self.peers.get_mut(&id) {
                info!(peer = %p.key, "ban ended");
                p.backoff = BACKOFF_MIN;
                if p.address.is_some() {
                    p.next_dial = Some(now);
                }
            }
        }
        let mut due = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            if p.connected || self.bans.contains_key(id) {
                continue;
            }
            if let (Some(at), Some(addr)) = (p.next_dial, &p.address)
                && at <= now
            {
                due.push((*id, addr.clone()));
                p.next_dial = Some(now + p.backoff);
                p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
            }
        }
        for (id, addr) in due {
            P2pStats::add(&self.stats.redials, 1);
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(id)
                .addresses(vec![addr])
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!("dial {id}: {e}");
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Send { to, bytes } => {
                if let Ok(id) = peer_id(&to) {
                    self.send_consensus(id, bytes);
                }
            }
            Command::Broadcast { bytes } => {
                let targets: Vec<PeerId> = self
                    .validators
                    .iter()
                    .filter(|id| **id != self.me)
                    .copied()
                    .collect();
                for id in targets {
                    self.send_consensus(id, bytes.clone());
                }
            }
            Command::SendBatches { to, bytes } => {
                if let Ok(id) = peer_id(&to) {
                    self.send_batches(id, bytes);
                }
            }
            Command::BroadcastBatches { bytes } => {
                let targets: Vec<PeerId> = self
                    .validators
                    .iter()
                    .filter(|id| **id != self.me)
                    .copied()
                    .collect();
                for id in targets {
                    self.send_batches(id, bytes.clone());
                }
            }
            Command::Publish { bytes } => {
                let len = bytes.len() as u64;
                let topic = self.topic.clone();
                match self.swarm.behaviour_mut().gossip.publish(topic, bytes) {
                    Ok(_) => {
                        P2pStats::add(&self.stats.gossip_out_messages, 1);
                        P2pStats::add(&self.stats.gossip_out_bytes, len);
                    }
                    Err(e) => {
                        debug!("gossip publish: {e}");
                        P2pStats::add(&self.stats.dropped_outbound, 1);
                    }
                }
            }
            Command::Report { id, accept } => {
                let acceptance = if accept {
                    MessageAcceptance::Accept
                } else {
                    P2pStats::add(&self.stats.gossip_rejected, 1);
                    MessageAcceptance::Reject
                };
                self.swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(&id.message_id, &id.source, acceptance);
            }
            Command::Ignore { id } => {
                self.swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(
                        &id.message_id,
                        &id.source,
                        MessageAcceptance::Ignore,
                    );
            }
            Command::Request { to, bytes, reply } => {
                let Ok(id) = peer_id(&to) else {
                    let _ = reply.send(Err(P2pError::Key));
                    return;
                };
                let Some(p) = self.peers.get_mut(&id) else {
                    let _ = reply.send(Err(P2pError::Request("unknown peer".into())));
                    return;
                };
                if p.inflight_sync >= INFLIGHT_PER_PEER_MAX / 16 {
                    P2pStats::add(&self.stats.dropped_outbound, 1);
                    let _ =
                        reply.send(Err(P2pError::Request("too many requests in flight".into())));
                    return;
                }
                p.inflight_sync += 1;
                P2pStats::add(&self.stats.sync_out_messages, 1);
                P2pStats::add(&self.stats.sync_out_bytes, bytes.len() as u64);
                let rid = self.swarm.behaviour_mut().sync.send_request(&id, bytes);
                self.sync_requests.insert(rid, (id, reply));
            }
            Command::Respond { id, bytes } => {
                if let Some(channel) = self.inbound_sync.remove(&id) {
                    P2pStats::add(&self.stats.sync_out_bytes, bytes.len() as u64);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, bytes);
                }
            }
            Command::Peers { reply } => {
                let keys = self
                    .peers
                    .values()
                    .filter(|p| p.connected)
                    .map(|p| p.key)
                    .collect();
                let _ = reply.send(keys);
            }
            Command::Ban { key, duration } => {
                let Ok(id) = peer_id(&key) else { return };
                if !self.peers.contains_key(&id) {
                    return;
                }
                warn!(peer = %key, seconds = duration.as_secs(), "peer banned");
                self.bans.insert(id, Instant::now() + duration);
                // Off the allow list: its connections close and new ones are denied.
                self.swarm.behaviour_mut().allow.disallow_peer(id);
                let _ = self.swarm.disconnect_peer_id(id);
            }
            Command::Scores { reply } => {
                let gossip = &self.swarm.behaviour().gossip;
                let scores = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.connected)
                    .filter_map(|(id, p)| gossip.peer_score(id).map(|s| (p.key, s)))
                    .collect();
                let _ = reply.send(scores);
            }
        }
    }

    fn send_consensus(&mut self, id: PeerId, bytes: Vec<u8>) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        if !p.connected {
            // Retransmission in the protocol recovers what is dropped here (and in the
            // connection's queue, when it is full or its stream breaks).
            P2pStats::add(&self.stats.dropped_outbound, 1);
            return;
        }
        P2pStats::add(&self.stats.consensus_out_messages, 1);
        P2pStats::add(&self.stats.consensus_out_bytes, bytes.len() as u64);
        self.swarm.behaviour_mut().consensus.send(id, bytes);
    }

    fn send_batches(&mut self, id: PeerId, bytes: Vec<u8>) {
        if !self.peers.get(&id).is_some_and(|p| p.connected) {
            P2pStats::add(&self.stats.dropped_outbound, 1);
            return;
        }
        P2pStats::add(&self.stats.batch_out_messages, 1);
        P2pStats::add(&self.stats.batch_out_bytes, bytes.len() as u64);
        self.swarm.behaviour_mut().batches.send(id, bytes);
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => info!("p2p listening on {address}"),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                // Not yet a peer: it becomes one when identify confirms it runs this network.
                debug!("connection to {peer_id} established");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0
                    && let Some(p) = self.peers.get_mut(&peer_id)
                    && p.connected
                {
                    p.connected = false;
                    p.inflight_sync = 0;
                    if p.address.is_some() {
                        p.next_dial = Some(Instant::now() + p.backoff);
                    }
                    self.stats
                        .connected_peers
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    let key = p.key;
                    warn!(peer = %key, "peer disconnected");
                    self.emit(P2pEvent::PeerDisconnected(key));
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!("outgoing connection to {peer_id:?} failed: {error}");
            }
            SwarmEvent::Behaviour(b) => self.on_behaviour(b),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != self.protocol_version {
                    P2pStats::add(&self.stats.genesis_mismatch, 1);
                    warn!(
                        "peer {peer_id} runs another network ({}); disconnecting",
                        info.protocol_version
                    );
                    if let Some(p) = self.peers.get_mut(&peer_id) {
                        // Not worth redialling often: it will not change its genesis soon.
                        p.backoff = BACKOFF_MAX;
                        if p.address.is_some() {
                            p.next_dial = Some(Instant::now() + BACKOFF_MAX);
                        }
                    }
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.backoff = BACKOFF_MIN;
                    p.next_dial = None;
                    if !p.connected {
                        p.connected = true;
                        P2pStats::add(&self.stats.connected_peers, 1);
                        let key = p.key;
                        info!(peer = %key, "peer connected");
                        self.emit(P2pEvent::PeerConnected(key));
                    }
                }
            }
            BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                P2pStats::add(&self.stats.gossip_in_messages, 1);
                P2pStats::add(&self.stats.gossip_in_bytes, message.data.len() as u64);
                let id = GossipId {
                    message_id,
                    source: propagation_source,
                };
                match self.key_of(&propagation_source) {
                    Some(from) => self.emit(P2pEvent::Gossip {
                        from,
                        id,
                        bytes: message.data,
                    }),
                    None => {
                        self.swarm
                            .behaviour_mut()
                            .gossip
                            .report_message_validation_result(
                                &id.message_id,
                                &id.source,
                                MessageAcceptance::Ignore,
                            );
                    }
                }
            }
            BehaviourEvent::Consensus(crate::pipe::Event::Frame { peer, bytes }) => {
                P2pStats::add(&self.stats.consensus_in_messages, 1);
                P2pStats::add(&self.stats.consensus_in_bytes, bytes.len() as u64);
                // Only validators take part in consensus.
                if self.validators.contains(&peer)
                    && let Some(from) = self.key_of(&peer)
                {
                    self.emit(P2pEvent::Consensus { from, bytes });
                }
            }
            BehaviourEvent::Consensus(crate::pipe::Event::Violation { peer, what })
            | BehaviourEvent::Batches(crate::pipe::Event::Violation { peer, what }) => {
                if let Some(from) = self.key_of(&peer) {
                    self.emit(P2pEvent::Misbehaved { from, what });
                }
            }
            BehaviourEvent::Consensus(crate::pipe::Event::Dropped { count }) => {
                P2pStats::add(&self.stats.dropped_outbound, count);
            }
            BehaviourEvent::Batches(crate::pipe::Event::Frame { peer, bytes }) => {
                P2pStats::add(&self.stats.batch_in_messages, 1);
                P2pStats::add(&self.stats.batch_in_bytes, bytes.len() as u64);
                // Only validators make, hold and attest batches.
                if self.validators.contains(&peer)
                    && let Some(from) = self.key_of(&peer)
                {
                    self.emit(P2pEvent::Batches { from, bytes });
                }
            }
            BehaviourEvent::Batches(crate::pipe::Event::Dropped { count }) => {
                P2pStats::add(&self.stats.dropped_outbound, count);
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        P2pStats::add(&self.stats.sync_in_messages, 1);
                        P2pStats::add(&self.stats.sync_in_bytes, request.len() as u64);
                        let Some(from) = self.key_of(&peer) else {
                            return;
                        };
                        if self.inbound_sync.len() >= 1024 {
                            P2pStats::add(&self.stats.dropped_inbound, 1);
                            return;
                        }
                        self.next_inbound += 1;
                        let id = self.next_inbound;
                        self.inbound_sync.insert(id, channel);
                        self.emit(P2pEvent::SyncRequest {
                            from,
                            id,
                            bytes: request,
                        });
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        P2pStats::add(&self.stats.sync_in_bytes, response.len() as u64);
                        if let Some((peer, reply)) = self.sync_requests.remove(&request_id) {
                            if let Some(p) = self.peers.get_mut(&peer) {
                                p.inflight_sync = p.inflight_sync.saturating_sub(1);
                            }
                            let _ = reply.send(Ok(response));
                        }
                    }
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) => {
                if let Some((peer, reply)) = self.sync_requests.remove(&request_id) {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.inflight_sync = p.inflight_sync.saturating_sub(1);
                    }
                    let _ = reply.send(Err(P2pError::Request(error.to_string())));
                }
            }
            _ => {}
        }
    }
}
