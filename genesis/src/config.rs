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
    #[serde(default = "default_rpc_connections")]
    pub max_connections: u32,
    /// Serve the `admin_*` methods (leadership transfer). Off by default: turn it on only
    /// where the RPC address is reachable by operators alone (as `tally testnet` does, on
    /// loopback).
    #[serde(default)]
    pub admin: bool,
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
            },
            rpc: RpcConfig {
                listen: rpc,
                max_body_bytes: default_rpc_body(),
                max_batch: default_rpc_batch(),
                max_connections: default_rpc_connections(),
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
        for p in [
            &mut config.genesis_file,
            &mut config.key_file,
            &mut config.data_dir,
        ] {
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
