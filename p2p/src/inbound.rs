//! Inbound connection attempts per remote IP address, checked when the TCP connection is
//! accepted — before the Noise handshake, the first thing that costs the node CPU (a key
//! exchange and a signature check). Anyone can open TCP connections; only genesis validators
//! and configured observers get past the handshake, but each attempt would otherwise cost a
//! handshake. With this, an address gets [`PER_SECOND`] attempts a second (bursts of
//! [`BURST`]) and the rest are closed unread: what a non-validator can make a node spend is
//! bounded per address, on top of `connection_limits` (64 pending, 512 established).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use libp2p::core::Endpoint;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Attempts a second per remote address; validators redial at most every 250 ms per peer.
pub const PER_SECOND: f64 = 10.0;
pub const BURST: f64 = 20.0;
/// Addresses tracked before full buckets (which a new one would equal) are pruned.
const TRACKED_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("too many connection attempts from {0}")]
pub struct TooManyAttempts(IpAddr);

#[derive(Default)]
pub struct Behaviour {
    buckets: HashMap<IpAddr, (f64, Instant)>,
    /// Attempts refused so far.
    pub refused: u64,
}

impl Behaviour {
    fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let level = |(tokens, at): (f64, Instant)| {
            (tokens + now.saturating_duration_since(at).as_secs_f64() * PER_SECOND).min(BURST)
        };
        if self.buckets.len() >= TRACKED_MAX && !self.buckets.contains_key(&ip) {
            self.buckets.retain(|_, b| level(*b) < BURST);
            if self.buckets.len() >= TRACKED_MAX {
                // Thousands of addresses, each with attempts in the last two seconds: refuse
                // new ones until some refill (the bound on memory holds).
                self.refused += 1;
                return false;
            }
        }
        let tokens = self.buckets.get(&ip).map_or(BURST, |b| level(*b));
        if tokens >= 1.0 {
            self.buckets.insert(ip, (tokens - 1.0, now));
            true
        } else {
            self.buckets.insert(ip, (tokens, now));
            self.refused += 1;
            false
        }
    }
}

fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match ip_of(remote) {
            Some(ip) if !self.admit(ip, Instant::now()) => {
                Err(ConnectionDenied::new(TooManyAttempts(ip)))
            }
            _ => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_address_gets_its_burst_then_its_rate_and_others_their_own() {
        let mut b = Behaviour::default();
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        assert_eq!((0..30).filter(|_| b.admit(a, t0)).count(), 20);
        assert!(b.admit(IpAddr::from([10, 0, 0, 2]), t0));
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..30).filter(|_| b.admit(a, t1)).count(), 5);
        assert_eq!(b.refused, 10 + 25);
    }
}
