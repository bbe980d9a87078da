//! The `tally` command line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tally_crypto::{ChainId, PublicKey, SecretKey, keyfile};
use tally_genesis::Protocol;
use tally_genesis::testnet::{TestnetOptions, generate};
use tally_ledger::{Action, Transaction};

#[derive(Parser, Debug)]
#[command(
    name = "tally",
    version,
    about = "Tally: a node daemon for permissioned ledger networks (PBFT, Raft, Multi-Paxos)",
    long_about = "Tally orders client-signed transactions into a hash-chained ledger among a known set of validators.\n\nStart here:\n  tally testnet --validators 4 --out ./net   write a 4-validator network\n  tally tx sign --help                       sign a transaction offline"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate an ed25519 key pair and write it to a key file (mode 0600).
    Keygen(KeygenArgs),
    /// Write a ready-to-start local network: genesis, one home folder per validator, funded
    /// client accounts, and network.json.
    Testnet(TestnetArgs),
    /// Transactions: sign offline.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Run a local network (one process per validator) with demo transactions and a live
    /// status line.
    Devnet(crate::tools::devnet::DevnetArgs),
    /// Chain status from a node (--verify: 2f+1 nodes agree on a recent block).
    Status {
        #[command(flatten)]
        endpoints: crate::tools::client::Endpoints,
        #[arg(long)]
        verify: bool,
    },
    /// A block (--verify: 2f+1 nodes agree, and its commit certificate checks out against
    /// the genesis keys).
    Block {
        height: u64,
        #[command(flatten)]
        endpoints: crate::tools::client::Endpoints,
        #[arg(long)]
        verify: bool,
    },
    /// Equivocation evidence the nodes hold: validators that signed two conflicting
    /// statements (--verify: each piece checked against the genesis keys alone).
    Evidence {
        #[command(flatten)]
        endpoints: crate::tools::client::Endpoints,
        #[arg(long)]
        verify: bool,
    },
    /// An account's balance and next nonce (--verify: 2f+1 nodes agree).
    Account {
        address: String,
        #[command(flatten)]
        endpoints: crate::tools::client::Endpoints,
        #[arg(long)]
        verify: bool,
    },
    /// Benchmark: open-loop load through JSON-RPC against a local network of validator
    /// processes; throughput, latency, CPU, memory and the verification ceiling.
    Bench(crate::tools::bench::BenchArgs),
    /// Run a validator node from its home folder (config.toml, key, data).
    Start {
        #[arg(long)]
        home: PathBuf,
    },
    /// Run the deterministic consensus simulator over many seeds (faults, Byzantine
    /// validators, twins) and check every invariant.
    Sim(crate::tools::sim::SimArgs),
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key file.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct TestnetArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Consensus protocol: pbft, raft or multipaxos.
    #[arg(long, default_value = "pbft")]
    pub consensus: Protocol,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "tally-testnet")]
    pub chain_id: String,
    /// Number of funded client accounts.
    #[arg(long, default_value_t = 4)]
    pub accounts: usize,
    /// Initial balance of each client account.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub balance: u64,
    /// Node i listens on base+10i (p2p), base+10i+1 (RPC), base+10i+2 (metrics).
    #[arg(long, default_value_t = 26600)]
    pub base_port: u16,
    /// Loopback (or other) address every node listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Consensus parameters (defaults in docs/genesis.md).
    #[arg(long)]
    pub view_change_timeout_ms: Option<u64>,
    #[arg(long)]
    pub batch_delay_ms: Option<u64>,
    #[arg(long)]
    pub batch_bytes_max: Option<u64>,
    #[arg(long)]
    pub checkpoint_interval: Option<u64>,
    #[arg(long)]
    pub watermark_window: Option<u64>,
    /// What consensus orders: `transactions` or `batches` (docs/genesis.md). Default:
    /// `batches`, written into the genesis.
    #[arg(long)]
    pub payload: Option<tally_genesis::Payload>,
}

#[derive(Subcommand, Debug)]
pub enum TxCommand {
    /// Sign a transaction offline and print `{"hash": HEX, "tx": HEX}`.
    Sign(SignArgs),
    /// Sign, submit and wait: prints the block and a summary of its commit certificate.
    Send(SendArgs),
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The sender's key file.
    #[arg(long)]
    pub from: PathBuf,
    /// Default: the node's chain id.
    #[arg(long)]
    pub chain_id: Option<String>,
    /// Default: the account's next nonce, from the node.
    #[arg(long)]
    pub nonce: Option<u64>,
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub endpoints: crate::tools::client::Endpoints,
    #[command(subcommand)]
    pub action: ActionArgs,
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The sender's key file.
    #[arg(long)]
    pub from: PathBuf,
    #[arg(long)]
    pub chain_id: String,
    /// The sender's next nonce (0 for its first transaction).
    #[arg(long)]
    pub nonce: u64,
    #[command(subcommand)]
    pub action: ActionArgs,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ActionArgs {
    /// Move funds to another account.
    Transfer {
        /// The recipient's address (its public key in hex).
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
    },
    /// Store a value under a key in the sender's namespace.
    Put {
        /// The key (UTF-8 text, 1 to 256 bytes).
        #[arg(long)]
        data_key: String,
        /// The value as UTF-8 text.
        #[arg(
            long,
            conflicts_with = "data_value_hex",
            required_unless_present = "data_value_hex"
        )]
        data_value: Option<String>,
        /// The value as hex bytes.
        #[arg(long)]
        data_value_hex: Option<String>,
    },
}

impl ActionArgs {
    pub fn to_action(&self) -> Result<Action> {
        Ok(match self {
            ActionArgs::Transfer { to, amount } => Action::Transfer {
                to: PublicKey::from_hex(to).context("--to")?,
                amount: *amount,
            },
            ActionArgs::Put {
                data_key,
                data_value,
                data_value_hex,
            } => Action::Put {
                key: data_key.as_bytes().to_vec(),
                value: match (data_value, data_value_hex) {
                    (Some(v), _) => v.as_bytes().to_vec(),
                    (None, Some(h)) => hex::decode(h.strip_prefix("0x").unwrap_or(h))
                        .context("--data-value-hex is not hex")?,
                    (None, None) => bail!("--data-value or --data-value-hex is required"),
                },
            },
        })
    }
}

fn client_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Signs a transaction from CLI arguments.
pub fn sign_tx(
    key: &SecretKey,
    chain_id: &str,
    nonce: u64,
    action: &ActionArgs,
) -> Result<tally_ledger::SignedTransaction> {
    let tx = Transaction {
        chain_id: ChainId::new(chain_id).context("--chain-id")?,
        sender: key.public_key(),
        nonce,
        action: action.to_action()?,
    };
    Ok(tx.sign(key)?)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen(a) => {
            let key = SecretKey::generate();
            keyfile::write(&a.out, &key, a.force)?;
            println!(
                "{}",
                serde_json::json!({
                    "address": key.public_key().to_hex(),
                    "key_file": a.out.display().to_string(),
                })
            );
            Ok(())
        }
        Command::Testnet(a) => {
            let mut opts = TestnetOptions::new(a.validators, a.consensus, a.out.clone());
            opts.chain_id = a.chain_id;
            opts.accounts = a.accounts;
            opts.account_balance = a.balance;
            opts.base_port = a.base_port;
            opts.host = a.host;
            let mut params = tally_genesis::ConsensusParams::new(a.consensus);
            if let Some(v) = a.view_change_timeout_ms {
                params.view_change_timeout_ms = v;
            }
            if let Some(v) = a.batch_delay_ms {
                params.batch_delay_ms = v;
            }
            if let Some(v) = a.batch_bytes_max {
                params.batch_bytes_max = v;
            }
            if let Some(v) = a.checkpoint_interval {
                params.checkpoint_interval = v;
            }
            if let Some(v) = a.watermark_window {
                params.watermark_window = v;
            }
            // New networks order data batches (the path built for throughput); a genesis file
            // without the field still means `transactions`, so existing networks keep theirs.
            params.payload = a.payload.unwrap_or(tally_genesis::Payload::Batches);
            opts.params = Some(params);
            let info = generate(&opts)?;
            eprintln!(
                "wrote a {}-validator {} network (chain id {}, genesis {}) to {}",
                info.nodes.len(),
                info.consensus,
                info.chain_id,
                &info.genesis_hash[..16],
                a.out.display()
            );
            for n in &info.nodes {
                eprintln!("  {}  rpc {}  home {}", n.name, n.rpc, n.home.display());
            }
            eprintln!(
                "  {} funded accounts in {}/accounts",
                info.accounts.len(),
                a.out.display()
            );
            eprintln!("details: {}/network.json", a.out.display());
            Ok(())
        }
        Command::Sim(a) => crate::tools::sim::run(a),
        Command::Devnet(a) => crate::tools::devnet::run(a),
        Command::Bench(a) => crate::tools::bench::run(a),
        Command::Status { endpoints, verify } => {
            client_runtime()?.block_on(crate::tools::client::status(&endpoints, verify))
        }
        Command::Evidence { endpoints, verify } => {
            client_runtime()?.block_on(crate::tools::client::evidence(&endpoints, verify))
        }
        Command::Block {
            height,
            endpoints,
            verify,
        } => client_runtime()?.block_on(crate::tools::client::block(&endpoints, height, verify)),
        Command::Account {
            address,
            endpoints,
            verify,
        } => {
            client_runtime()?.block_on(crate::tools::client::account(&endpoints, &address, verify))
        }
        Command::Tx(TxCommand::Send(a)) => client_runtime()?.block_on(crate::tools::client::send(
            &a.endpoints,
            &a.from,
            a.chain_id,
            a.nonce,
            &a.action,
            a.timeout_ms,
        )),
        Command::Start { home } => {
            // One event-loop thread: the node's async work is light (CPU-heavy work runs on
            // the verification, execution and blocking threads), and a single thread saves the
            // cross-thread wake-ups a work-stealing pool costs on every message.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("tally")
                .build()?;
            runtime.block_on(crate::daemon::run(&home))
        }
        Command::Tx(TxCommand::Sign(a)) => {
            let key = keyfile::load(&a.from)?;
            let signed = sign_tx(&key, &a.chain_id, a.nonce, &a.action)?;
            println!(
                "{}",
                serde_json::json!({
                    "hash": signed.hash().to_hex(),
                    "tx": hex::encode(signed.encoded()),
                })
            );
            Ok(())
        }
    }
}
