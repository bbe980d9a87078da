//! Each client address's share of the signature-check queue. The queue is what every
//! submission waits in before its signature is checked, and a full queue refuses with
//! `overloaded`; without shares, a few addresses sending bad-signature transactions as fast
//! as the RPC allows would keep it full, and every other client would be refused. Here one
//! address holds at most half the queue, and the last [`RESERVE`] slots are kept for clients
//! with fewer than [`LIGHT`] transactions waiting — an honest client sending one transaction
//! at a time always finds room unless hundreds of addresses flood at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Slots kept for light clients.
pub const RESERVE: usize = 512;
/// A client with fewer transactions than this waiting may use the reserve.
pub const LIGHT: usize = 16;

pub struct QueueShares {
    queue: usize,
    per_client: usize,
    /// (slots held in total, slots held per address); an address is in the map only while it
    /// holds slots, so the map is bounded by the queue's size.
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Slots granted to one call; released when dropped (after the verdicts are in).
pub struct Held {
    shares: Arc<QueueShares>,
    ip: Option<IpAddr>,
    pub granted: usize,
}

impl QueueShares {
    pub fn new(queue: usize) -> Arc<QueueShares> {
        Arc::new(QueueShares {
            queue,
            per_client: queue / 2,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// Up to `wanted` slots for `ip` (all of them when the caller is not a client: gossip,
    /// internal use).
    pub fn take(self: &Arc<Self>, ip: Option<IpAddr>, wanted: usize) -> Held {
        let Some(client) = ip else {
            return Held {
                shares: self.clone(),
                ip: None,
                granted: wanted,
            };
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per) = &mut *held;
        let mine = per.get(&client).copied().unwrap_or(0);
        let mut granted = 0;
        while granted < wanted {
            let now_mine = mine + granted;
            let now_total = *total + granted;
            let in_share = now_mine < self.per_client;
            let room =
                now_total < self.queue - RESERVE || (now_mine < LIGHT && now_total < self.queue);
            if !(in_share && room) {
                break;
            }
            granted += 1;
        }
        if granted > 0 {
            *total += granted;
            *per.entry(client).or_insert(0) += granted;
        }
        Held {
            shares: self.clone(),
            ip,
            granted,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        if self.granted == 0 {
            return;
        }
        let mut held = self.shares.held.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per) = &mut *held;
        *total -= self.granted;
        if let Some(n) = per.get_mut(&ip) {
            *n -= self.granted;
            if *n == 0 {
                per.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_half_the_queue_and_light_clients_keep_the_reserve() {
        let shares = QueueShares::new(4096);
        let ip = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
        let a = shares.take(ip(2), 5000);
        assert_eq!(a.granted, 2048, "half the queue");
        let b = shares.take(ip(3), 5000);
        assert_eq!(b.granted, 4096 - RESERVE - 2048, "up to the reserve");
        let c = shares.take(ip(4), 100);
        assert_eq!(c.granted, LIGHT, "a light client dips into the reserve");
        let c2 = shares.take(ip(4), 1);
        assert_eq!(c2.granted, 0, "no longer light");
        // Internal callers are not counted.
        assert_eq!(shares.take(None, 10_000).granted, 10_000);
        drop(a);
        assert_eq!(shares.take(ip(5), 100).granted, 100);
        drop((b, c, c2));
        assert_eq!(*shares.held.lock().unwrap(), (0, HashMap::new()));
    }
}
