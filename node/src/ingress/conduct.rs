//! What a peer's misbehaviour costs it: offences are counted per peer, and a peer that
//! commits too many — or sends frames faster than any honest validator does — is banned
//! (disconnected, its connections refused) for a while (`docs/security.md`, "Peers under
//! abuse").
//!
//! An offence is something an honest peer of the same version never does, judged on the
//! bytes alone with no view of the protocol's state: a frame that does not decode, a bad
//! signature, a frame over the stream's limit. Messages honest nodes may send by timing
//! (stale views, duplicates, retransmissions) are not offences; a flood of them is caught by
//! the frame rate. Every peer that can reach the node is a validator or a configured
//! observer (the handshake refuses anyone else), so the table has a bounded number of rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_crypto::PublicKey;
use tally_monitoring::Metrics;
use tally_p2p::P2pHandle;
use tracing::warn;

/// Offences within [`OFFENCE_WINDOW`] that get a peer banned. Not 1: a single garbled frame
/// (a bug, a version skew caught mid-upgrade) should be seen in the logs and metrics, not cost
/// a validator its connections.
pub const OFFENCES_MAX: u32 = 10;
pub const OFFENCE_WINDOW: Duration = Duration::from_secs(60);

/// The window over which a peer's frames are counted against `[p2p] flood_frames_per_second`
/// (default 2,000 a second, against ≈ 150 a second from each honest validator measured here at
/// 20,000 tx/s offered to four validators: votes, batches, attestations and proofs). Until
/// it is cut off, each frame costs at most one signature check (≈ 30 µs): a flooding
/// validator can take ≈ 6% of one core for a window.
pub const FRAME_WINDOW: Duration = Duration::from_secs(10);

/// The first ban; each further ban of the same peer doubles it, up to [`BAN_MAX`].
pub const BAN_FIRST: Duration = Duration::from_secs(60);
pub const BAN_MAX: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Record {
    offences: u32,
    offences_since: Option<Instant>,
    frames: u32,
    frames_since: Option<Instant>,
    bans: u32,
    banned_until: Option<Instant>,
}

pub struct Conduct {
    /// Frames per [`FRAME_WINDOW`] beyond which a peer is banned; 0: no limit.
    frames_max: u32,
    /// Whether offences get a peer banned: under crash faults (Raft, Multi-Paxos) every
    /// validator is trusted, an offence can only be a bug, and a ban would cost a network of
    /// three its fault tolerance, so they are counted and logged only.
    bans: bool,
    p2p: P2pHandle,
    metrics: Arc<Metrics>,
    peers: Mutex<HashMap<PublicKey, Record>>,
}

/// What a peer did: the label of `tally_peer_offences_total{reason}`.
pub type Offence = &'static str;

impl Conduct {
    /// `byzantine`: the protocol tolerates lying validators (PBFT); only then do offences and
    /// floods cost a peer its connections.
    pub fn new(
        p2p: P2pHandle,
        metrics: Arc<Metrics>,
        frames_per_second: u32,
        byzantine: bool,
    ) -> Arc<Conduct> {
        Arc::new(Conduct {
            frames_max: if byzantine {
                frames_per_second.saturating_mul(FRAME_WINDOW.as_secs() as u32)
            } else {
                0
            },
            bans: byzantine,
            p2p,
            metrics,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// Records one offence by `peer`; bans it at [`OFFENCES_MAX`] within the window.
    pub fn offence(&self, peer: &PublicKey, what: Offence) {
        Metrics::inc_reason(&self.metrics.peer_offences, what);
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let r = peers.entry(*peer).or_default();
        if r.banned_until.is_some_and(|t| t > now) {
            return;
        }
        if r.offences_since
            .is_none_or(|t| now.duration_since(t) > OFFENCE_WINDOW)
        {
            r.offences = 0;
            r.offences_since = Some(now);
        }
        r.offences += 1;
        if r.offences >= OFFENCES_MAX {
            let reason = format!(
                "{} offences in {} s, the last {what}",
                r.offences,
                OFFENCE_WINDOW.as_secs()
            );
            if self.bans {
                self.ban(peer, r, now, &reason);
            } else {
                warn!(peer = %peer, "not banning a trusted validator (crash faults): {reason}");
                r.offences = 0;
                r.offences_since = None;
            }
        }
    }

    /// Counts one consensus or batch-stream frame from `peer`; bans it past the flood limit
    /// within the window.
    pub fn frame(&self, peer: &PublicKey) {
        if self.frames_max == 0 {
            return;
        }
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let r = peers.entry(*peer).or_default();
        if r.frames_since
            .is_none_or(|t| now.duration_since(t) > FRAME_WINDOW)
        {
            r.frames = 0;
            r.frames_since = Some(now);
        }
        r.frames += 1;
        if r.frames == self.frames_max + 1 && r.banned_until.is_none_or(|t| t <= now) {
            Metrics::inc_reason(&self.metrics.peer_offences, "flood");
            let reason = format!(
                "more than {} frames in {} s",
                self.frames_max,
                FRAME_WINDOW.as_secs()
            );
            self.ban(peer, r, now, &reason);
        }
    }

    fn ban(&self, peer: &PublicKey, r: &mut Record, now: Instant, reason: &str) {
        let duration = BAN_FIRST
            .saturating_mul(1u32 << r.bans.min(16))
            .min(BAN_MAX);
        r.bans += 1;
        r.banned_until = Some(now + duration);
        r.offences = 0;
        r.offences_since = None;
        warn!(peer = %peer, seconds = duration.as_secs(), "banning peer: {reason}");
        self.metrics.peer_bans.inc();
        self.p2p.ban(*peer, duration);
    }
}
