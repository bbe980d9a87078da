//! `tally testnet`: a ready-to-start local network in one folder.
//!
//! ```text
//! OUT/genesis.json
//! OUT/network.json            machine-readable summary (absolute paths, URLs)
//! OUT/node0/config.toml       one home folder per validator
//! OUT/node0/node.key          its validator key (mode 0600)
//! OUT/accounts/account0.key   funded client accounts
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tally_crypto::{ChainId, PublicKey, SecretKey, keyfile};

use crate::{
    ConsensusParams, Genesis, GenesisAccount, GenesisError, NodeConfig, Protocol, Validator,
};

#[derive(Clone, Debug)]
pub struct TestnetOptions {
    pub validators: usize,
    pub protocol: Protocol,
    pub out: PathBuf,
    pub chain_id: String,
    pub accounts: usize,
    pub account_balance: u64,
    /// Node i uses ports `base_port + 10·i` (p2p), `+1` (RPC) and `+2` (metrics).
    pub base_port: u16,
    pub host: String,
    /// Overrides of the default consensus parameters.
    pub params: Option<ConsensusParams>,
}

impl TestnetOptions {
    pub fn new(validators: usize, protocol: Protocol, out: PathBuf) -> TestnetOptions {
        TestnetOptions {
            validators,
            protocol,
            out,
            chain_id: "tally-testnet".into(),
            accounts: 4,
            account_balance: 1_000_000_000,
            base_port: 26600,
            host: "127.0.0.1".into(),
            params: None,
        }
    }
}

/// `network.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkInfo {
    pub chain_id: String,
    pub genesis: PathBuf,
    pub genesis_hash: String,
    pub consensus: Protocol,
    pub nodes: Vec<NodeInfo>,
    pub accounts: Vec<AccountInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub public_key: PublicKey,
    pub home: PathBuf,
    /// `host:port`
    pub p2p: String,
    /// `http://host:port`
    pub rpc: String,
    /// `http://host:port`
    pub metrics: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccountInfo {
    pub address: PublicKey,
    pub key_file: PathBuf,
    pub balance: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    #[error("{path} already exists and is not empty (choose another --out or remove it)")]
    OutNotEmpty { path: String },
    #[error("port {port} on {host} is in use (choose another --base-port)")]
    PortInUse { host: String, port: u16 },
    #[error("ports from --base-port {base} for {validators} validators go past 65535")]
    PortRange { base: u16, validators: usize },
    #[error("{0}")]
    Io(String),
}

fn io(path: &Path, e: impl ToString) -> TestnetError {
    TestnetError::Io(format!("{}: {}", path.display(), e.to_string()))
}

/// Writes the network and returns what `network.json` holds.
impl TestnetOptions {
    /// Whether the nodes listen on a loopback address only.
    pub fn host_is_loopback(&self) -> bool {
        self.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            || self.host == "localhost"
    }
}

pub fn generate(opts: &TestnetOptions) -> Result<NetworkInfo, TestnetError> {
    if opts.out.exists()
        && std::fs::read_dir(&opts.out)
            .map_err(|e| io(&opts.out, e))?
            .next()
            .is_some()
    {
        return Err(TestnetError::OutNotEmpty {
            path: opts.out.display().to_string(),
        });
    }
    let chain_id = ChainId::new(opts.chain_id.clone()).map_err(|_| GenesisError::EmptyChainId)?;
    let last = opts.base_port as usize + 10 * opts.validators.max(1) + 2;
    if last > u16::MAX as usize {
        return Err(TestnetError::PortRange {
            base: opts.base_port,
            validators: opts.validators,
        });
    }
    let port = |i: usize, k: usize| opts.base_port + (10 * i + k) as u16;
    for i in 0..opts.validators {
        for k in 0..3 {
            let p = port(i, k);
            if TcpListener::bind((opts.host.as_str(), p)).is_err() {
                return Err(TestnetError::PortInUse {
                    host: opts.host.clone(),
                    port: p,
                });
            }
        }
    }

    let node_keys: Vec<SecretKey> = (0..opts.validators)
        .map(|_| SecretKey::generate())
        .collect();
    let account_keys: Vec<SecretKey> = (0..opts.accounts).map(|_| SecretKey::generate()).collect();
    let addr = |p: u16| format!("{}:{p}", opts.host);
    let mut params = opts.params.clone().unwrap_or_else(|| ConsensusParams {
        // New networks order data batches (see `docs/genesis.md`).
        payload: crate::Payload::Batches,
        ..ConsensusParams::new(opts.protocol)
    });
    params.protocol = opts.protocol;
    let genesis = Genesis {
        chain_id: chain_id.clone(),
        consensus: params,
        validators: node_keys
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                name: format!("node{i}"),
                public_key: k.public_key(),
                p2p: addr(port(i, 0)),
            })
            .collect(),
        accounts: account_keys
            .iter()
            .map(|k| GenesisAccount {
                address: k.public_key(),
                balance: opts.account_balance,
            })
            .collect(),
    };
    genesis.validate()?;

    std::fs::create_dir_all(&opts.out).map_err(|e| io(&opts.out, e))?;
    let out = opts.out.canonicalize().map_err(|e| io(&opts.out, e))?;
    let genesis_path = out.join("genesis.json");
    std::fs::write(&genesis_path, genesis.to_json()).map_err(|e| io(&genesis_path, e))?;

    let mut nodes = Vec::new();
    for (i, key) in node_keys.iter().enumerate() {
        let name = format!("node{i}");
        let home = out.join(&name);
        std::fs::create_dir_all(&home).map_err(|e| io(&home, e))?;
        let mut config =
            NodeConfig::new(&name, addr(port(i, 0)), addr(port(i, 1)), addr(port(i, 2)));
        // A local test network: its operator is the only RPC client that can reach it when
        // it listens on loopback, so the admin methods are on.
        config.rpc.admin = opts.host_is_loopback();
        config.write(&home).map_err(|e| io(&home, e))?;
        keyfile::write(&home.join(&config.key_file), key, false).map_err(|e| io(&home, e))?;
        nodes.push(NodeInfo {
            name,
            public_key: key.public_key(),
            home,
            p2p: addr(port(i, 0)),
            rpc: format!("http://{}", addr(port(i, 1))),
            metrics: format!("http://{}", addr(port(i, 2))),
        });
    }

    let accounts_dir = out.join("accounts");
    std::fs::create_dir_all(&accounts_dir).map_err(|e| io(&accounts_dir, e))?;
    let mut accounts = Vec::new();
    for (i, key) in account_keys.iter().enumerate() {
        let path = accounts_dir.join(format!("account{i}.key"));
        keyfile::write(&path, key, false).map_err(|e| io(&path, e))?;
        accounts.push(AccountInfo {
            address: key.public_key(),
            key_file: path,
            balance: opts.account_balance,
        });
    }

    let info = NetworkInfo {
        chain_id: chain_id.to_string(),
        genesis: genesis_path,
        genesis_hash: genesis.hash().to_hex(),
        consensus: opts.protocol,
        nodes,
        accounts,
    };
    let network_path = out.join("network.json");
    let text = serde_json::to_string_pretty(&info).expect("network info serialises") + "\n";
    std::fs::write(&network_path, text).map_err(|e| io(&network_path, e))?;
    Ok(info)
}

impl NetworkInfo {
    pub fn load(path: &Path) -> Result<NetworkInfo, TestnetError> {
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        serde_json::from_str(&text).map_err(|e| io(path, e))
    }
}
