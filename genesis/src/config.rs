//! A node's config file, `HOME/config.toml` (documented in `docs/operator-guide.md`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tally_crypto::PublicKey;

pub const CONFIG_FILE: &str = "config.toml";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's validator name in the genesis (or any name, for an observer).
    pub name: String,
    /// Paths are relative to the home folder unless absolute.
    pub genesis_file: PathBuf,
    pub key_file: PathBuf,
    pub data_dir: PathBuf,
    pub p2p: P2pConfig,
    pub rpc: RpcConfig,
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub mempool: MempoolConfig,
    /// A tracing filter, e.g. `info` or `info,tally_p2p=debug`.
    #[serde(default = "default_log")]
    pub log: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Public keys of non-validator peers (observers) allowed to connect.
    #[serde(default)]
    pub observers: Vec<PublicKey>,
    /// Consensus and batch-stream frames a second (averaged over 10 s) beyond which a peer is
    /// banned as a flood, under PBFT (Raft and Multi-Paxos trust every validator); 0 turns
    /// the rule off (`docs/security.md`).
    #[serde(default = "default_flood_frames_per_second")]
    pub flood_frames_per_second: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcConfig {
    /// `host:port` for JSON-RPC over HTTP and WebSocket.
    pub listen: String,
    #[serde(default = "default_rpc_body")]
    pub max_body_bytes: u32,
    /// The most requests in one JSON-RPC batch, and transactions in one `tx_submit_batch`.
    #[serde(default = "default_rpc_batch")]
    pub max_batch: u32,
    /// TCP connections open at once, from all clients together.
    #[serde(default = "default_rpc_connections")]
    pub max_connections: u32,
    /// TCP connections open at once from one client address.
    #[serde(default = "default_rpc_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// JSON-RPC calls per second from one client address (every entry of a JSON-RPC batch
    /// counts), with bursts of up to twice that; 0 turns the limit off.
    #[serde(default = "default_rpc_requests_per_second")]
    pub requests_per_second_per_ip: u32,
    /// Request bytes per second from one client address (bodies, charged from their
    /// `Content-Length` before they are read; 1 MiB for a body without one), with bursts of
    /// up to twice that; 0 turns it off.
    #[serde(default = "default_rpc_bytes_per_second")]
    pub bytes_per_second_per_ip: u64,
    /// Transactions per second submitted from one client address (`tx_submit`, and every
    /// entry of a `tx_submit_batch`), with bursts of up to twice that; 0 turns it off.
    #[serde(default = "default_rpc_transactions_per_second")]
    pub transactions_per_second_per_ip: u32,
    /// A call (or a JSON-RPC batch) not answered within this is answered with -32010;
    /// `tx_wait` is bounded by its own `timeout_ms` instead. Also the time a client has to
    /// send a request's headers.
    #[serde(default = "default_rpc_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Block subscriptions open at once on this node, and on one WebSocket connection.
    #[serde(default = "default_rpc_subscriptions")]
    pub max_subscriptions: u32,
    #[serde(default = "default_rpc_subscriptions_per_connection")]
    pub max_subscriptions_per_connection: u32,
    /// Messages queued for one WebSocket connection. A subscriber that lets this many pile
    /// up (it reads slower than blocks commit) is dropped with an error notification.
    #[serde(default = "default_rpc_subscriber_buffer")]
    pub subscriber_buffer: u32,
    /// Which methods need `Authorization: Bearer TOKEN`: `none`, `writes` (`tx_submit`,
    /// `tx_submit_batch`, `admin_*`) or `all`.
    #[serde(default)]
    pub auth: RpcAuth,
    /// The file holding the token (one line, at least 16 characters, readable by the owner
    /// only). Required unless `auth = "none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// Serve the `admin_*` methods (leadership transfer). Off by default: turn it on only
    /// where the RPC address is reachable by operators alone (as `tally testnet` does, on
    /// loopback).
    #[serde(default)]
    pub admin: bool,
}

impl RpcConfig {
    /// Reads the bearer token named by `auth_token_file` (none when `auth = "none"`). The file
    /// must be readable by its owner only and hold one line of at least 16 characters.
    pub fn load_token(&self) -> Result<Option<String>, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let Some(path) = &self.auth_token_file else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        let read = |reason: String| ConfigError::Read {
            path: shown.clone(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| read(e.to_string()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(read(format!(
                "mode {mode:o}: a token must not be readable by group or others (chmod 600)"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        let token = text.trim();
        if token.len() < 16 || token.contains(char::is_whitespace) {
            return Err(read(
                "the token must be one word of at least 16 characters".into(),
            ));
        }
        Ok(Some(token.to_string()))
    }
}

/// Who must present the RPC bearer token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpcAuth {
    #[default]
    None,
    Writes,
    All,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for `/metrics` and `/health`.
    pub listen: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    #[serde(default = "default_mempool_txs")]
    pub max_txs: u32,
    #[serde(default = "default_mempool_bytes")]
    pub max_bytes: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: default_mempool_txs(),
            max_bytes: default_mempool_bytes(),
        }
    }
}

fn default_log() -> String {
    "info".into()
}
fn default_rpc_body() -> u32 {
    16 * 1024 * 1024
}
fn default_rpc_batch() -> u32 {
    2000
}
fn default_rpc_connections() -> u32 {
    256
}
fn default_flood_frames_per_second() -> u32 {
    2000
}
fn default_rpc_connections_per_ip() -> u32 {
    32
}
fn default_rpc_requests_per_second() -> u32 {
    1000
}
fn default_rpc_bytes_per_second() -> u64 {
    16 * 1024 * 1024
}
fn default_rpc_transactions_per_second() -> u32 {
    20_000
}
fn default_rpc_request_timeout_ms() -> u64 {
    10_000
}
fn default_rpc_subscriptions() -> u32 {
    128
}
fn default_rpc_subscriptions_per_connection() -> u32 {
    8
}
fn default_rpc_subscriber_buffer() -> u32 {
    64
}
fn default_mempool_txs() -> u32 {
    20_000
}
fn default_mempool_bytes() -> u64 {
    16 * 1024 * 1024
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: &'static str,
        reason: String,
    },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

impl NodeConfig {
    /// A config with default limits.
    pub fn new(name: &str, p2p: String, rpc: String, metrics: String) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            genesis_file: PathBuf::from("../genesis.json"),
            key_file: PathBuf::from("node.key"),
            data_dir: PathBuf::from("data"),
            p2p: P2pConfig {
                listen: p2p,
                observers: vec![],
                flood_frames_per_second: default_flood_frames_per_second(),
            },
            rpc: RpcConfig {
                listen: rpc,
                max_body_bytes: default_rpc_body(),
                max_batch: default_rpc_batch(),
                max_connections: default_rpc_connections(),
                max_connections_per_ip: default_rpc_connections_per_ip(),
                requests_per_second_per_ip: default_rpc_requests_per_second(),
                bytes_per_second_per_ip: default_rpc_bytes_per_second(),
                transactions_per_second_per_ip: default_rpc_transactions_per_second(),
                request_timeout_ms: default_rpc_request_timeout_ms(),
                max_subscriptions: default_rpc_subscriptions(),
                max_subscriptions_per_connection: default_rpc_subscriptions_per_connection(),
                subscriber_buffer: default_rpc_subscriber_buffer(),
                auth: RpcAuth::None,
                auth_token_file: None,
                admin: false,
            },
            metrics: MetricsConfig { listen: metrics },
            mempool: MempoolConfig::default(),
            log: default_log(),
        }
    }

    /// Loads `HOME/config.toml` and makes its relative paths absolute against `home`.
    pub fn load(home: &Path) -> Result<NodeConfig, ConfigError> {
        let path = home.join(CONFIG_FILE);
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        for (field, addr) in [
            ("p2p.listen", &config.p2p.listen),
            ("rpc.listen", &config.rpc.listen),
            ("metrics.listen", &config.metrics.listen),
        ] {
            crate::parse_address(addr).map_err(|reason| ConfigError::Invalid {
                path: shown.clone(),
                field,
                reason,
            })?;
        }
        if config.mempool.max_txs == 0 || config.mempool.max_bytes == 0 {
            return Err(ConfigError::Invalid {
                path: shown,
                field: "mempool",
                reason: "max_txs and max_bytes must be positive".into(),
            });
        }
        let rpc = &config.rpc;
        let invalid = |field, reason: &str| ConfigError::Invalid {
            path: shown.clone(),
            field,
            reason: reason.into(),
        };
        if rpc.max_connections == 0 || rpc.max_connections_per_ip == 0 {
            return Err(invalid(
                "rpc",
                "max_connections and max_connections_per_ip must be positive",
            ));
        }
        if !(100..=600_000).contains(&rpc.request_timeout_ms) {
            return Err(invalid(
                "rpc.request_timeout_ms",
                "must be between 100 and 600000",
            ));
        }
        if rpc.max_subscriptions_per_connection == 0 || rpc.subscriber_buffer < 2 {
            return Err(invalid(
                "rpc",
                "max_subscriptions_per_connection must be positive and subscriber_buffer at least 2",
            ));
        }
        if (rpc.auth == RpcAuth::None) != rpc.auth_token_file.is_none() {
            return Err(invalid(
                "rpc.auth_token_file",
                "set it exactly when rpc.auth is \"writes\" or \"all\"",
            ));
        }
        for p in [
            &mut config.genesis_file,
            &mut config.key_file,
            &mut config.data_dir,
        ]
        .into_iter()
        .chain(config.rpc.auth_token_file.as_mut())
        {
            if p.is_relative() {
                *p = home.join(&*p);
            }
        }
        Ok(config)
    }

    /// Writes `HOME/config.toml`.
    pub fn write(&self, home: &Path) -> Result<(), ConfigError> {
        let path = home.join(CONFIG_FILE);
        let text = format!(
            "# Tally node configuration (see docs/operator-guide.md).\n{}",
            toml::to_string_pretty(self).expect("config serialises")
        );
        std::fs::write(&path, text).map_err(|e| ConfigError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}
