//! Consensus messages over one long-lived stream per connection and direction.
//!
//! A request-response exchange per message cost a new yamux stream, a protocol negotiation,
//! a response and two stream closes — six to eight frames, each its own encrypted write, and
//! a timer per request — for a message of a few hundred bytes. At 50 blocks a second that
//! overhead was about a third of an idle-ish validator's CPU. Here each connection keeps one
//! outbound stream open; messages queued while a write is in progress go out together in the
//! next one (`len u32 BE ‖ bytes` frames, as in the request-response codec). Messages to a
//! peer all use its oldest connection, so they arrive in the order they were sent.
//!
//! Delivery is best effort, as before: a message is dropped (and counted) when its peer is
//! not connected, its queue is full, the stream fails, or the connection closes with it
//! still queued; the consensus protocol's retransmission and view changes recover.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::prelude::*;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, Stream, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol};

/// Inbound streams kept per connection; a peer opening more replaces the oldest.
const INBOUND_STREAMS_MAX: usize = 2;
/// One write carries at most this many bytes of queued frames (more wait for the next).
const WRITE_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug)]
pub enum Event {
    /// A frame from `peer`.
    Frame { peer: PeerId, bytes: Vec<u8> },
    /// Frames that were not sent: a connection's queue was full or its stream failed.
    Dropped { count: u64 },
    /// `peer` broke the stream's rules (a frame longer than the limit): its stream was
    /// closed. Never done by an honest peer of the same version.
    Violation { peer: PeerId, what: &'static str },
}

/// Frames of at most this many bytes take the small-frame lane when lanes are on.
pub const SMALL_FRAME_MAX: usize = 32 * 1024;

/// How a connection queues frames for one peer.
#[derive(Clone, Copy, Debug)]
pub struct Queueing {
    /// Frames queued per lane; beyond it new ones are dropped (and counted).
    pub frames_max: usize,
    /// Bytes queued in the large-frame lane; beyond it new large frames are dropped.
    pub large_bytes_max: usize,
    /// Two lanes: frames up to [`SMALL_FRAME_MAX`] (attestations, proofs, requests) are
    /// written before larger ones (batch bodies), so that a backlog of bodies to a slow
    /// peer neither delays nor drops them. Order is kept within each lane, not across.
    pub lanes: bool,
}

pub struct Behaviour {
    protocol: StreamProtocol,
    frame_max: usize,
    queueing: Queueing,
    events: VecDeque<ToSwarm<Event, Vec<u8>>>,
    /// Established connections per peer, oldest first: messages use the oldest, so that
    /// they stay in order when two validators dialled each other at once.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
}

impl Behaviour {
    pub fn new(protocol: StreamProtocol, frame_max: usize, queueing: Queueing) -> Behaviour {
        Behaviour {
            protocol,
            frame_max,
            queueing,
            events: VecDeque::new(),
            connections: HashMap::new(),
        }
    }

    /// Queues `bytes` for `peer` on one of its connections (dropped if it has none).
    pub fn send(&mut self, peer: PeerId, bytes: Vec<u8>) {
        let Some(&connection) = self.connections.get(&peer).and_then(|c| c.first()) else {
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::Dropped { count: 1 }));
            return;
        };
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event: bytes,
        });
    }

    fn handler(&self) -> Handler {
        Handler {
            protocol: self.protocol.clone(),
            frame_max: self.frame_max,
            queueing: self.queueing,
            small: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            out: Out::Idle,
            inbound: VecDeque::new(),
            dropped: 0,
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let event = match event {
            HandlerOut::Frame(bytes) => Event::Frame { peer, bytes },
            HandlerOut::Dropped(count) => Event::Dropped { count },
            HandlerOut::Violation(what) => Event::Violation { peer, what },
        };
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections
                    .entry(e.peer_id)
                    .or_default()
                    .push(e.connection_id);
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(c) = self.connections.get_mut(&e.peer_id) {
                    c.retain(|id| *id != e.connection_id);
                    if c.is_empty() {
                        self.connections.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(e) => Poll::Ready(e),
            None => Poll::Pending,
        }
    }
}

#[derive(Debug)]
pub enum HandlerOut {
    Frame(Vec<u8>),
    Dropped(u64),
    Violation(&'static str),
}

enum Out {
    /// No stream; one is requested when there is something to send.
    Idle,
    Requested,
    Ready(Stream),
    /// A write of this many frames is in progress.
    Writing(BoxFuture<'static, io::Result<Stream>>, u64),
}

type ReadFuture = BoxFuture<'static, io::Result<(Stream, Vec<u8>)>>;

pub struct Handler {
    protocol: StreamProtocol,
    frame_max: usize,
    queueing: Queueing,
    /// The small-frame lane (empty unless lanes are on); written first.
    small: VecDeque<Vec<u8>>,
    queue: VecDeque<Vec<u8>>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    out: Out,
    inbound: VecDeque<ReadFuture>,
    /// Frames dropped and not yet reported.
    dropped: u64,
}

async fn read_frame(mut s: Stream, max: usize) -> io::Result<(Stream, Vec<u8>)> {
    let frame = crate::codec::read_frame(&mut s, max).await?;
    Ok((s, frame))
}

async fn write_frames(mut s: Stream, buf: Vec<u8>) -> io::Result<Stream> {
    s.write_all(&buf).await?;
    s.flush().await?;
    Ok(s)
}

impl Handler {
    fn drop_queue(&mut self) {
        self.dropped += self.queued_frames() as u64;
        self.small.clear();
        self.queue.clear();
        self.queued_bytes = 0;
    }

    fn queued_frames(&self) -> usize {
        self.small.len() + self.queue.len()
    }

    /// Queues a frame, or counts it dropped when its lane is full.
    fn enqueue(&mut self, bytes: Vec<u8>) {
        let q = self.queueing;
        if bytes.len() > self.frame_max {
            self.dropped += 1;
        } else if q.lanes && bytes.len() <= SMALL_FRAME_MAX {
            if self.small.len() >= q.frames_max {
                self.dropped += 1;
            } else {
                self.small.push_back(bytes);
            }
        } else if self.queue.len() >= q.frames_max
            || self.queued_bytes + bytes.len() > q.large_bytes_max
        {
            self.dropped += 1;
        } else {
            self.queued_bytes += bytes.len();
            self.queue.push_back(bytes);
        }
    }

    /// Takes queued frames, small-frame lane first, up to [`WRITE_BYTES_MAX`] (at least
    /// one), as one buffer.
    fn take_write(&mut self) -> (Vec<u8>, u64) {
        let mut buf = Vec::with_capacity(WRITE_BYTES_MAX.min(64 * 1024));
        let mut n = 0;
        let (_, emptied) = drain_lane(&mut self.small, &mut buf, &mut n);
        if emptied {
            let (taken, _) = drain_lane(&mut self.queue, &mut buf, &mut n);
            self.queued_bytes -= taken;
        }
        (buf, n)
    }
}

/// Moves frames from the front of `lane` into `buf` (`len u32 BE ‖ bytes` each, counted in
/// `n`) while the write stays within [`WRITE_BYTES_MAX`] (a first frame always goes).
/// Returns the payload bytes taken and whether the lane was emptied.
fn drain_lane(lane: &mut VecDeque<Vec<u8>>, buf: &mut Vec<u8>, n: &mut u64) -> (usize, bool) {
    let mut taken = 0;
    while let Some(f) = lane.front() {
        if *n > 0 && buf.len() + 4 + f.len() > WRITE_BYTES_MAX {
            return (taken, false);
        }
        let f = lane.pop_front().expect("front exists");
        taken += f.len();
        buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
        buf.extend_from_slice(&f);
        *n += 1;
    }
    (taken, true)
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Vec<u8>;
    type ToBehaviour = HandlerOut;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.queued_frames() > 0 || !matches!(self.out, Out::Idle) || !self.inbound.is_empty()
    }

    /// The connection is closing: frames still queued are lost; report them.
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Option<HandlerOut>> {
        let lost = std::mem::take(&mut self.dropped) + self.queued_frames() as u64;
        self.small.clear();
        self.queue.clear();
        self.queued_bytes = 0;
        Poll::Ready((lost > 0).then_some(HandlerOut::Dropped(lost)))
    }

    fn on_behaviour_event(&mut self, bytes: Vec<u8>) {
        self.enqueue(bytes);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol, (), ()>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => {
                if self.inbound.len() >= INBOUND_STREAMS_MAX {
                    self.inbound.pop_front();
                }
                self.inbound
                    .push_back(read_frame(stream, self.frame_max).boxed());
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                self.out = Out::Ready(stream);
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { .. }) => {
                // The peer does not speak the protocol or the stream could not be opened:
                // what waits for it is dropped; the next message tries again.
                self.out = Out::Idle;
                self.drop_queue();
            }
            _ => {}
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if self.dropped > 0 {
            let n = std::mem::take(&mut self.dropped);
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                HandlerOut::Dropped(n),
            ));
        }
        // Inbound: one frame at a time per stream.
        for _ in 0..self.inbound.len() {
            let Some(mut read) = self.inbound.pop_front() else {
                break;
            };
            match read.poll_unpin(cx) {
                Poll::Ready(Ok((stream, frame))) => {
                    self.inbound
                        .push_back(read_frame(stream, self.frame_max).boxed());
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                        HandlerOut::Frame(frame),
                    ));
                }
                // A frame over the limit (the length prefix says so before any body is
                // read): the stream is dropped and the peer reported.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                        HandlerOut::Violation("oversized_frame"),
                    ));
                }
                // Closed or broken: the peer opens another when it has something to send.
                Poll::Ready(Err(_)) => {}
                Poll::Pending => self.inbound.push_back(read),
            }
        }
        // Outbound.
        loop {
            match std::mem::replace(&mut self.out, Out::Idle) {
                Out::Idle => {
                    if self.queued_frames() == 0 {
                        return Poll::Pending;
                    }
                    self.out = Out::Requested;
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(
                            ReadyUpgrade::new(self.protocol.clone()),
                            (),
                        ),
                    });
                }
                Out::Requested => {
                    self.out = Out::Requested;
                    return Poll::Pending;
                }
                Out::Ready(stream) => {
                    if self.queued_frames() == 0 {
                        self.out = Out::Ready(stream);
                        return Poll::Pending;
                    }
                    let (buf, n) = self.take_write();
                    self.out = Out::Writing(write_frames(stream, buf).boxed(), n);
                }
                Out::Writing(mut write, n) => match write.poll_unpin(cx) {
                    Poll::Ready(Ok(stream)) => self.out = Out::Ready(stream),
                    Poll::Ready(Err(_)) => {
                        // The stream broke: this write is lost, the queue waits for a new one.
                        self.dropped += n;
                        self.out = Out::Idle;
                        return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                            HandlerOut::Dropped(std::mem::take(&mut self.dropped)),
                        ));
                    }
                    Poll::Pending => {
                        self.out = Out::Writing(write, n);
                        return Poll::Pending;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(lanes: bool) -> Handler {
        Behaviour::new(
            StreamProtocol::new("/test/1"),
            1 << 20,
            Queueing {
                frames_max: 3,
                large_bytes_max: 200_000,
                lanes,
            },
        )
        .handler()
    }

    /// Splits a write buffer back into its frames.
    fn frames(mut buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            out.push(buf[4..4 + len].to_vec());
            buf = &buf[4 + len..];
        }
        out
    }

    #[test]
    fn small_frames_overtake_queued_bodies_and_each_lane_keeps_its_order() {
        let mut h = handler(true);
        let body = |b: u8| vec![b; 100_000];
        h.enqueue(body(1));
        h.enqueue(vec![10]);
        h.enqueue(body(2));
        h.enqueue(vec![11]);
        // A third body would pass the lane's byte bound: dropped, counted.
        h.enqueue(body(3));
        assert_eq!(h.dropped, 1);
        // A full small-frame lane drops small frames, not bodies.
        h.enqueue(vec![12]);
        h.enqueue(vec![13]);
        assert_eq!(h.dropped, 2);
        let (buf, n) = h.take_write();
        assert_eq!(n, 5);
        assert_eq!(
            frames(&buf),
            vec![vec![10], vec![11], vec![12], body(1), body(2)]
        );
        assert_eq!((h.queued_frames(), h.queued_bytes), (0, 0));
    }

    #[test]
    fn without_lanes_frames_keep_their_order() {
        let mut h = handler(false);
        h.enqueue(vec![1; 100_000]);
        h.enqueue(vec![2]);
        h.enqueue(vec![3; 50_000]);
        h.enqueue(vec![4]);
        assert_eq!(h.dropped, 1, "three frames at most");
        let (buf, _) = h.take_write();
        assert_eq!(
            frames(&buf),
            vec![vec![1; 100_000], vec![2], vec![3; 50_000]]
        );
    }
}
