//! The network definition: the genesis file (`docs/genesis.md`), its validation and hash,
//! each node's config file, and the `tally testnet` generator.
//!
//! ```
//! use tally_genesis::{Genesis, Protocol};
//!
//! let text = r#"{
//!   "chain_id": "demo",
//!   "consensus": { "protocol": "raft" },
//!   "validators": [{ "name": "a", "public_key": "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737", "p2p": "127.0.0.1:26600" }],
//!   "accounts": []
//! }"#;
//! let genesis = Genesis::from_json(text).unwrap();
//! assert_eq!(genesis.consensus.protocol, Protocol::Raft);
//! println!("genesis hash {}", genesis.hash());
//! ```

pub mod config;
mod encode;
pub mod testnet;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tally_crypto::{ChainId, Digest, PublicKey, ValidKey};

pub use config::NodeConfig;

/// The largest validator set a genesis may name.
pub const VALIDATORS_MAX: usize = 128;

/// The largest consensus message a node sends or accepts (the p2p frame limit). A VIEW-CHANGE
/// or NEW-VIEW grows with the validator count and the watermark window; the genesis refuses
/// a window whose worst case would not fit.
pub const CONSENSUS_MESSAGE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The largest watermark window `n` validators can use: their worst-case NEW-VIEW (2f+1
/// view changes claiming every sequence number of the window, with a certificate for each
/// one O re-issues) and VIEW-CHANGE fit in [`CONSENSUS_MESSAGE_BYTES_MAX`].
pub fn max_watermark_window(n: usize) -> u64 {
    use tally_consensus::pbft::messages::{
        worst_case_new_view_bytes, worst_case_view_change_bytes,
    };
    let fits = |w: u64| {
        worst_case_new_view_bytes(n, w) <= CONSENSUS_MESSAGE_BYTES_MAX
            && worst_case_view_change_bytes(n, w) <= CONSENSUS_MESSAGE_BYTES_MAX
    };
    // The sizes grow with the window: binary search for the largest that fits.
    let (mut lo, mut hi) = (0u64, 1_000_000u64);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The genesis: everything the validators must agree on before block 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: ChainId,
    pub consensus: ConsensusParams,
    pub validators: Vec<Validator>,
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Practical Byzantine Fault Tolerance (Castro & Liskov): tolerates f Byzantine validators
    /// of n ≥ 3f + 1.
    Pbft,
    /// Raft: tolerates f crashed validators of n ≥ 2f + 1.
    Raft,
    /// Multi-Paxos with flexible quorums (Q1 + Q2 > n).
    Multipaxos,
}

impl Protocol {
    pub fn min_validators(self) -> usize {
        match self {
            Protocol::Pbft => 4,
            Protocol::Raft | Protocol::Multipaxos => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pbft => "pbft",
            Protocol::Raft => "raft",
            Protocol::Multipaxos => "multipaxos",
        }
    }
}

impl Protocol {
    /// What the protocol calls the period of one leader: view, term or ballot.
    pub fn epoch_name(self) -> &'static str {
        match self {
            Protocol::Pbft => "view",
            Protocol::Raft => "term",
            Protocol::Multipaxos => "ballot",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pbft" => Ok(Protocol::Pbft),
            "raft" => Ok(Protocol::Raft),
            "multipaxos" => Ok(Protocol::Multipaxos),
            other => Err(format!(
                "unknown consensus protocol {other:?} (expected pbft, raft or multipaxos)"
            )),
        }
    }
}

/// Consensus parameters. Every field but `protocol` has a default (see `docs/genesis.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusParams {
    pub protocol: Protocol,
    /// A batch is cut when its transactions reach this many bytes…
    #[serde(default = "defaults::batch_bytes_max")]
    pub batch_bytes_max: u64,
    /// …or when its oldest transaction has waited this long.
    #[serde(default = "defaults::batch_delay_ms")]
    pub batch_delay_ms: u64,
    /// PBFT: a checkpoint every K sequence numbers (also the snapshot interval of Raft and
    /// Multi-Paxos).
    #[serde(default = "defaults::checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// PBFT: the watermark window L; the primary has at most L sequence numbers in flight
    /// above the stable checkpoint. At least `checkpoint_interval`.
    #[serde(default = "defaults::watermark_window")]
    pub watermark_window: u64,
    /// PBFT: how long a backup waits for a known request to commit before it starts a view
    /// change. Doubles on each successive view change.
    #[serde(default = "defaults::view_change_timeout_ms")]
    pub view_change_timeout_ms: u64,
    /// Raft: election timeouts are drawn from `[min, max]` milliseconds.
    #[serde(default = "defaults::raft_election_timeout_ms")]
    pub raft_election_timeout_ms: ElectionTimeout,
    /// Raft and Multi-Paxos: the leader's heartbeat interval.
    #[serde(default = "defaults::heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Multi-Paxos: phase-1 quorum size; default a majority.
    #[serde(default)]
    pub paxos_q1: Option<u32>,
    /// Multi-Paxos: phase-2 quorum size; default a majority. Q1 + Q2 must exceed n.
    #[serde(default)]
    pub paxos_q2: Option<u32>,
    /// What consensus orders: transaction hashes, or proofs of data batches.
    #[serde(default)]
    pub payload: Payload,
}

/// What the validators order (`docs/architecture.md`, "Data path").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// Transactions travel one by one (gossip); a proposal names each by its hash.
    #[default]
    Transactions,
    /// Transactions travel in data batches streamed once by the validator that admitted
    /// them; f + 1 validators attest each batch, and a proposal names batch headers.
    Batches,
}

impl Payload {
    pub fn as_str(self) -> &'static str {
        match self {
            Payload::Transactions => "transactions",
            Payload::Batches => "batches",
        }
    }
}

impl std::str::FromStr for Payload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "transactions" => Ok(Payload::Transactions),
            "batches" => Ok(Payload::Batches),
            other => Err(format!(
                "unknown payload {other:?} (expected transactions or batches)"
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionTimeout {
    pub min: u64,
    pub max: u64,
}

mod defaults {
    pub fn batch_bytes_max() -> u64 {
        1024 * 1024
    }
    pub fn batch_delay_ms() -> u64 {
        10
    }
    pub fn checkpoint_interval() -> u64 {
        64
    }
    pub fn watermark_window() -> u64 {
        256
    }
    pub fn view_change_timeout_ms() -> u64 {
        2000
    }
    pub fn raft_election_timeout_ms() -> super::ElectionTimeout {
        super::ElectionTimeout {
            min: 500,
            max: 1000,
        }
    }
    pub fn heartbeat_ms() -> u64 {
        100
    }
}

impl ConsensusParams {
    /// Defaults for `protocol`.
    pub fn new(protocol: Protocol) -> ConsensusParams {
        ConsensusParams {
            protocol,
            batch_bytes_max: defaults::batch_bytes_max(),
            batch_delay_ms: defaults::batch_delay_ms(),
            checkpoint_interval: defaults::checkpoint_interval(),
            watermark_window: defaults::watermark_window(),
            view_change_timeout_ms: defaults::view_change_timeout_ms(),
            raft_election_timeout_ms: defaults::raft_election_timeout_ms(),
            heartbeat_ms: defaults::heartbeat_ms(),
            paxos_q1: None,
            paxos_q2: None,
            payload: Payload::default(),
        }
    }

    /// Multi-Paxos quorum sizes for `n` validators (majorities unless set).
    pub fn paxos_quorums(&self, n: usize) -> (u32, u32) {
        let majority = (n / 2 + 1) as u32;
        (
            self.paxos_q1.unwrap_or(majority),
            self.paxos_q2.unwrap_or(majority),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// A short unique name: 1 to 64 ASCII letters, digits, `-`, `_`, `.`.
    pub name: String,
    pub public_key: PublicKey,
    /// Where other validators reach it: `host:port` (an IPv4 address, `[IPv6]`, or a DNS
    /// name).
    pub p2p: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub address: PublicKey,
    pub balance: u64,
}

/// A mistake in a genesis file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenesisError {
    #[error("cannot read genesis file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("genesis is not valid JSON for the format in docs/genesis.md: {0}")]
    Parse(String),
    #[error("chain_id is empty")]
    EmptyChainId,
    #[error(
        "{protocol} needs at least {min} validators, the genesis lists {n}{hint}",
        hint = if *protocol == Protocol::Pbft { " (PBFT tolerates f faults with n ≥ 3f + 1)" } else { "" }
    )]
    TooFewValidators {
        protocol: Protocol,
        n: usize,
        min: usize,
    },
    #[error("the genesis lists {n} validators; at most {max} are supported")]
    TooManyValidators { n: usize, max: usize },
    #[error("validator name {name:?} is used twice")]
    DuplicateValidatorName { name: String },
    #[error("validator name {name:?} is invalid: 1 to 64 ASCII letters, digits, '-', '_', '.'")]
    InvalidValidatorName { name: String },
    #[error("validators {first:?} and {second:?} have the same public key {key}")]
    DuplicateValidatorKey {
        first: String,
        second: String,
        key: PublicKey,
    },
    #[error("validator {name:?}: public key {key} is not a valid ed25519 key")]
    InvalidValidatorKey { name: String, key: PublicKey },
    #[error("validator {name:?}: bad p2p address {address:?}: {reason}")]
    BadAddress {
        name: String,
        address: String,
        reason: String,
    },
    #[error("validators {first:?} and {second:?} have the same p2p address {address:?}")]
    DuplicateAddress {
        first: String,
        second: String,
        address: String,
    },
    #[error("account {address} appears twice")]
    DuplicateAccount { address: PublicKey },
    #[error("account {address} is not a valid ed25519 public key")]
    InvalidAccountKey { address: PublicKey },
    #[error("the sum of the initial balances overflows a u64")]
    SupplyOverflow,
    #[error("consensus.{field}: {reason}")]
    BadParameter { field: &'static str, reason: String },
    #[error(
        "Multi-Paxos quorums Q1 = {q1} and Q2 = {q2} must intersect: Q1 + Q2 must exceed n = {n}"
    )]
    QuorumsDoNotIntersect { q1: u32, q2: u32, n: usize },
}

impl Genesis {
    /// Parses and validates a genesis document.
    pub fn from_json(text: &str) -> Result<Genesis, GenesisError> {
        let genesis: Genesis = serde_json::from_str(text).map_err(|e| {
            // serde's message names the bad field; an empty chain id is common enough to
            // deserve its own error.
            if e.to_string().contains("invalid chain id \"\"") {
                GenesisError::EmptyChainId
            } else {
                GenesisError::Parse(e.to_string())
            }
        })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Reads, parses and validates a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|e| GenesisError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Genesis::from_json(&text)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("genesis serialises");
        s.push('\n');
        s
    }

    /// Checks every rule of `docs/genesis.md`; the first broken one is the error.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let p = &self.consensus;
        let n = self.validators.len();
        if n < p.protocol.min_validators() {
            return Err(GenesisError::TooFewValidators {
                protocol: p.protocol,
                n,
                min: p.protocol.min_validators(),
            });
        }
        if n > VALIDATORS_MAX {
            return Err(GenesisError::TooManyValidators {
                n,
                max: VALIDATORS_MAX,
            });
        }
        let mut names = HashSet::new();
        let mut keys = std::collections::HashMap::new();
        let mut addresses = std::collections::HashMap::new();
        for v in &self.validators {
            if !valid_name(&v.name) {
                return Err(GenesisError::InvalidValidatorName {
                    name: v.name.clone(),
                });
            }
            if !names.insert(v.name.as_str()) {
                return Err(GenesisError::DuplicateValidatorName {
                    name: v.name.clone(),
                });
            }
            if let Some(first) = keys.insert(v.public_key, v.name.as_str()) {
                return Err(GenesisError::DuplicateValidatorKey {
                    first: first.to_string(),
                    second: v.name.clone(),
                    key: v.public_key,
                });
            }
            if ValidKey::new(&v.public_key).is_err() {
                return Err(GenesisError::InvalidValidatorKey {
                    name: v.name.clone(),
                    key: v.public_key,
                });
            }
            parse_address(&v.p2p).map_err(|reason| GenesisError::BadAddress {
                name: v.name.clone(),
                address: v.p2p.clone(),
                reason,
            })?;
            if let Some(first) = addresses.insert(v.p2p.to_ascii_lowercase(), v.name.as_str()) {
                return Err(GenesisError::DuplicateAddress {
                    first: first.to_string(),
                    second: v.name.clone(),
                    address: v.p2p.clone(),
                });
            }
        }
        let mut accounts = HashSet::new();
        let mut supply: u64 = 0;
        for a in &self.accounts {
            if !accounts.insert(a.address) {
                return Err(GenesisError::DuplicateAccount { address: a.address });
            }
            if ValidKey::new(&a.address).is_err() {
                return Err(GenesisError::InvalidAccountKey { address: a.address });
            }
            supply = supply
                .checked_add(a.balance)
                .ok_or(GenesisError::SupplyOverflow)?;
        }
        self.validate_params(n)
    }

    fn validate_params(&self, n: usize) -> Result<(), GenesisError> {
        let p = &self.consensus;
        let bad = |field, reason: &str| {
            Err(GenesisError::BadParameter {
                field,
                reason: reason.to_string(),
            })
        };
        if !(1024..=64 * 1024 * 1024).contains(&p.batch_bytes_max) {
            return bad("batch_bytes_max", "must be between 1 KiB and 64 MiB");
        }
        if p.batch_delay_ms == 0 || p.batch_delay_ms > 60_000 {
            return bad("batch_delay_ms", "must be between 1 and 60000");
        }
        if p.checkpoint_interval == 0 || p.checkpoint_interval > 1_000_000 {
            return bad("checkpoint_interval", "must be between 1 and 1000000");
        }
        if p.watermark_window < p.checkpoint_interval || p.watermark_window > 1_000_000 {
            return bad(
                "watermark_window",
                "must be at least checkpoint_interval (so a checkpoint can become stable inside the window) and at most 1000000",
            );
        }
        let max_window = max_watermark_window(n);
        if p.watermark_window > max_window {
            return bad(
                "watermark_window",
                &format!(
                    "{} is too large for {n} validators: a view change could exceed the {} MiB message limit; at most {max_window}",
                    p.watermark_window,
                    CONSENSUS_MESSAGE_BYTES_MAX >> 20
                ),
            );
        }
        if p.view_change_timeout_ms < 10 || p.view_change_timeout_ms > 600_000 {
            return bad("view_change_timeout_ms", "must be between 10 and 600000");
        }
        if p.heartbeat_ms == 0 || p.heartbeat_ms > 60_000 {
            return bad("heartbeat_ms", "must be between 1 and 60000");
        }
        let e = p.raft_election_timeout_ms;
        if e.min == 0 || e.min >= e.max {
            return bad("raft_election_timeout_ms", "needs 0 < min < max");
        }
        if e.min <= p.heartbeat_ms {
            return bad(
                "raft_election_timeout_ms",
                "min must exceed heartbeat_ms, or followers time out between heartbeats",
            );
        }
        if p.protocol != Protocol::Multipaxos && (p.paxos_q1.is_some() || p.paxos_q2.is_some()) {
            return bad(
                "paxos_q1",
                "paxos_q1 and paxos_q2 only apply to protocol \"multipaxos\"",
            );
        }
        let (q1, q2) = p.paxos_quorums(n);
        if q1 == 0 || q2 == 0 || q1 as usize > n || q2 as usize > n {
            return bad(
                "paxos_q1",
                &format!("quorums must be between 1 and n = {n}"),
            );
        }
        if (q1 + q2) as usize <= n {
            return Err(GenesisError::QuorumsDoNotIntersect { q1, q2, n });
        }
        Ok(())
    }

    /// The genesis hash: SHA-256 of the canonical encoding in `docs/genesis.md`. Nodes check
    /// it at start (against their database) and on every p2p connection.
    pub fn hash(&self) -> Digest {
        Digest::of(&encode::canonical(self))
    }

    /// Byzantine faults tolerated (PBFT) or crash faults tolerated (Raft, Multi-Paxos).
    pub fn faults_tolerated(&self) -> usize {
        let n = self.validators.len();
        match self.consensus.protocol {
            Protocol::Pbft => (n - 1) / 3,
            Protocol::Raft | Protocol::Multipaxos => (n - 1) / 2,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Parses `host:port`: host an IPv4 address, a bracketed IPv6 address or a DNS name; port
/// 1–65535. Returns `(host, port)`.
pub fn parse_address(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or("expected host:port, e.g. 127.0.0.1:26600")?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0 is not allowed".into());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
        return Ok((v6.to_string(), port));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok((host.to_string(), port));
    }
    if host.contains(':') {
        return Err("an IPv6 address must be written in brackets: [::1]:26600".into());
    }
    let dns_ok = !host.is_empty()
        && host.len() <= 253
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !dns_ok {
        return Err(format!(
            "{host:?} is neither an IPv4 address, a bracketed IPv6 address nor a DNS name"
        ));
    }
    Ok((host.to_string(), port))
}
