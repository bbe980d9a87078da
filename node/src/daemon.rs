//! `tally start`: wires the node together.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tally_consensus::pbft::{Message, Pbft, PbftConfig};
use tally_consensus::{Engine, KeySigner, PeerMessage, Seq, ValidatorId};
use tally_crypto::{Digest, PublicKey, keyfile};
use tally_genesis::{Genesis, NodeConfig};
use tally_monitoring::{DirectionLabels, Metrics, NodeInfoLabels};
use tally_p2p::{P2pConfig, P2pEvent};
use tally_storage::{RocksStore, Store};
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{info, warn};

use crate::driver::{Driver, DriverInput, load_records, recent_digests};
use crate::execution::chain::Chain;
use crate::execution::snapshots::Snapshots;
use crate::execution::sync;
use crate::ingress::admission::{self, Admission};
use crate::ingress::mempool::Mempool;
use crate::rpc;
use crate::shared::{Shared, Status};
use crate::wire::{self, SyncRequest, SyncResponse};

// Every consensus message the genesis allows must fit in a p2p frame.
const _: () =
    assert!(tally_p2p::CONSENSUS_FRAME_MAX as u64 >= tally_genesis::CONSENSUS_MESSAGE_BYTES_MAX);

fn socket(address: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .with_context(|| format!("address {address}"))?
        .next()
        .with_context(|| format!("address {address} resolves to nothing"))
}

/// Gossiped bundles admitted concurrently.
const GOSSIP_IN_FLIGHT: usize = 64;

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(home: &Path) -> Result<()> {
    let config = NodeConfig::load(home)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .try_init();
    if let Some(every) = crate::memory::trim_interval() {
        crate::memory::spawn_trimmer(every);
    }
    let genesis = Genesis::load(&config.genesis_file)?;
    let genesis_hash = genesis.hash();
    let key = keyfile::load(&config.key_file)?;
    let validators = crate::shared::validator_set(&genesis)?;
    let Some(me) = validators.id_of(&key.public_key()) else {
        bail!(
            "the key in {} ({}) is not one of the genesis validators",
            config.key_file.display(),
            key.public_key()
        );
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(&config.data_dir)?);
    let chain = Chain::open(store.clone(), &genesis)?;
    info!(
        node = %config.name,
        chain_id = %genesis.chain_id,
        genesis = %genesis_hash,
        height = chain.height(),
        "starting"
    );

    let params = &genesis.consensus;
    let with_batches = params.payload == tally_genesis::Payload::Batches;
    // A proposal names at most one transaction per smallest transaction in its byte budget,
    // or (data batches) a bounded number of batch proofs.
    let batch_entries_max = if with_batches {
        crate::driver::PROPOSAL_PROOFS_MAX
    } else {
        ((params.batch_bytes_max as usize).div_ceil(tally_ledger::TX_BYTES_MIN) + 1)
            .min(tally_consensus::batch::BATCH_TXS_MAX)
    };
    let signer = Box::new(KeySigner::new(key.clone(), genesis.chain_id.clone()));
    let core = match params.protocol {
        tally_genesis::Protocol::Pbft => {
            let records =
                load_records(&*store).map_err(|e| anyhow::anyhow!("consensus records: {e}"))?;
            let stable = records
                .iter()
                .filter_map(|r| match r {
                    tally_consensus::pbft::Record::Stable(c) => Some(c.seq),
                    _ => None,
                })
                .max()
                .unwrap_or_default();
            let recent = recent_digests(&*store, stable, chain.height(), params.watermark_window);
            let mut pbft_config = PbftConfig::new(
                params.checkpoint_interval,
                params.watermark_window,
                params.view_change_timeout_ms,
            );
            pbft_config.batch_txs_max = batch_entries_max;
            Engine::Pbft(Box::new(Pbft::new(
                pbft_config,
                validators.clone(),
                me,
                signer,
                &records,
                Seq(chain.height()),
                &recent,
            )))
        }
        tally_genesis::Protocol::Multipaxos => {
            use tally_consensus::paxos;
            let stored = store.consensus_scan(paxos::storage::PREFIX)?;
            let durable = paxos::storage::restore(&stored)
                .map_err(|e| anyhow::anyhow!("multipaxos records: {e}"))?;
            let (q1, q2) = params.paxos_quorums(validators.len());
            let election_ms = params.raft_election_timeout_ms.min;
            let cfg = paxos::PaxosConfig {
                election_ms,
                heartbeat_ms: params.heartbeat_ms,
                q1: q1 as usize,
                q2: q2 as usize,
                // Half the minimum election timeout: a lease expires well before a follower
                // can start phase 1, even with clocks drifting by the documented bound.
                lease_ms: election_ms / 2,
                ..paxos::PaxosConfig::majorities(validators.len())
            };
            cfg.check(validators.len())
                .map_err(|e| anyhow::anyhow!("multipaxos settings: {e}"))?;
            // The driver's clock starts at zero with the process.
            let core = paxos::Paxos::new(
                cfg,
                me,
                validators.len(),
                durable,
                chain.height(),
                0,
                Some(signer),
            );
            Engine::Paxos(Box::new(tally_consensus::engine::PaxosEngine::new(
                core,
                batch_entries_max,
            )))
        }
        tally_genesis::Protocol::Raft => {
            use tally_consensus::raft;
            let stored = store.consensus_scan(raft::storage::PREFIX)?;
            let durable = raft::storage::restore(&stored)
                .map_err(|e| anyhow::anyhow!("raft records: {e}"))?;
            let cfg = raft::RaftConfig {
                election_ms: params.raft_election_timeout_ms.min,
                election_max_ms: params.raft_election_timeout_ms.max,
                heartbeat_ms: params.heartbeat_ms,
                ..raft::RaftConfig::default()
            };
            // The term of the chain's tip, from its block's commit proof: Raft checks its log
            // against it (a block sync may have replaced entries the log still holds).
            let tip_term = match chain.height() {
                0 => None,
                h => store
                    .block(h)?
                    .and_then(|b| crate::execution::block::StoredBlock::decode(&b).ok())
                    .and_then(|b| b.certificate)
                    .map(|c| c.view.0),
            };
            let core = raft::Raft::new(
                cfg,
                me,
                validators.len(),
                durable,
                chain.height(),
                tip_term,
                Some(signer),
            );
            Engine::Raft(Box::new(tally_consensus::engine::RaftEngine::new(
                core,
                batch_entries_max,
            )))
        }
    };

    let metrics = Arc::new(Metrics::new(NodeInfoLabels {
        chain_id: genesis.chain_id.to_string(),
        consensus: params.protocol.to_string(),
        validator: config.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    }));
    metrics.height.set(chain.height() as i64);
    metrics.validators.set(validators.len() as i64);
    metrics.quorum_size.set(validators.quorum() as i64);
    metrics.init_labels(
        &genesis
            .validators
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>(),
    );
    let (blocks, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        chain_id: genesis.chain_id.clone(),
        genesis: genesis.clone(),
        genesis_hash,
        validators: validators.clone(),
        me: Some(me),
        store: store.clone(),
        mempool: Mutex::new(if with_batches {
            Mempool::for_batches(
                config.mempool.max_txs as usize,
                config.mempool.max_bytes as usize,
            )
        } else {
            Mempool::new(
                config.mempool.max_txs as usize,
                config.mempool.max_bytes as usize,
            )
        }),
        status: std::sync::RwLock::new(Status {
            height: chain.height(),
            latest_hash: chain.last_hash(),
            ..Default::default()
        }),
        tx_waiters: Mutex::new(Default::default()),
        blocks,
        metrics: metrics.clone(),
        keys: Arc::new(tally_crypto::KeyCache::new(200_000)),
        mempool_changed: Notify::new(),
        checks_done: Notify::new(),
        gossip_flush: Notify::new(),
    });

    let (p2p, mut p2p_events) = tally_p2p::spawn(P2pConfig {
        secret_seed: key.seed(),
        listen: config.p2p.listen.clone(),
        genesis_hash,
        validators: genesis
            .validators
            .iter()
            .map(|v| (v.public_key, v.p2p.clone()))
            .collect(),
        observers: config.p2p.observers.clone(),
    })?;

    // Bans guard against a lying validator: under crash faults (Raft, Multi-Paxos) every
    // validator is trusted, and banning one over what can only be a bug would cost a
    // three-validator network its fault tolerance (docs/security.md).
    let conduct = crate::ingress::conduct::Conduct::new(
        p2p.clone(),
        shared.metrics.clone(),
        config.p2p.flood_frames_per_second,
        params.protocol == tally_genesis::Protocol::Pbft,
    );
    let (driver_tx, driver_rx) = mpsc::channel::<DriverInput>(65_536);
    let (exec_tx, exec_rx) = mpsc::channel(crate::execution::executor::COMMANDS_MAX);
    let (executed_tx, executed_rx) = mpsc::unbounded_channel();
    let (sync_tx, sync_rx) = mpsc::channel(sync::COMMANDS_MAX);
    let snapshots = Snapshots::spawn(store.clone());
    let batch_path = if with_batches {
        let rule = crate::batches::maker::CutRule {
            max_txs: crate::batches::maker::CutRule::default().max_txs,
            max_bytes: (params.batch_bytes_max as usize)
                .min(tally_consensus::availability::BATCH_BYTES_MAX as usize),
            max_delay_ms: params.batch_delay_ms,
        };
        Some(crate::batches::service::spawn(
            shared.clone(),
            p2p.clone(),
            key.clone(),
            rule,
            driver_tx.clone(),
            conduct.clone(),
        )?)
    } else {
        None
    };
    let admission = Admission::new(shared.clone(), p2p.clone(), batch_path.clone());
    let verifier = crate::ingress::consensus_verify::consensus_verifier(
        shared.clone(),
        driver_tx.clone(),
        conduct.clone(),
    );
    // Long-running tasks with timers: stopped before the runtime is dropped (a timer polled
    // while the runtime shuts down panics).
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // Transactions travel one by one only without data batches: then stashed gossip enters
    // the pool when there is room again, and a primary pulls peers' pending transactions
    // when its pool runs low. (With data batches a transaction stays with the validator
    // that admitted it until it is in one of that validator's batches.)
    if !with_batches {
        let a = admission.clone();
        tasks.push(every(Duration::from_millis(20), move || {
            let a = a.clone();
            async move { while a.promote_stashed(1024).await > 0 {} }
        }));
        let a = admission.clone();
        tasks.push(every(Duration::from_millis(200), move || {
            let a = a.clone();
            async move {
                a.pull_pending().await;
            }
        }));
    }

    // Transaction bodies a proposal names but this node lacks: fetched once at a time.
    let inflight: Arc<Mutex<crate::FastSet<Digest>>> = Arc::default();
    let fetch_for_driver: crate::driver::BodyFetch = if let Some(path) = batch_path.clone() {
        // Proofs a proposal names but this node lacks: asked of the primary (the service
        // tells the driver when proofs arrive).
        Arc::new(move |digests: Vec<Digest>, from: Option<ValidatorId>| {
            path.submit(crate::batches::service::ServiceInput::FetchProofs { digests, from });
        })
    } else {
        let (shared, p2p, driver_tx) = (shared.clone(), p2p.clone(), driver_tx.clone());
        Arc::new(move |hashes: Vec<Digest>, from: Option<ValidatorId>| {
            let fresh: Vec<Digest> = {
                let mut set = inflight.lock().unwrap_or_else(|e| e.into_inner());
                hashes.into_iter().filter(|h| set.insert(*h)).collect()
            };
            if fresh.is_empty() {
                return;
            }
            let (shared, p2p, driver_tx, inflight) = (
                shared.clone(),
                p2p.clone(),
                driver_tx.clone(),
                inflight.clone(),
            );
            let prefer = from.and_then(|id| shared.validators.public_key(id));
            tokio::spawn(async move {
                admission::fetch_bodies(&shared, &p2p, fresh.clone(), prefer).await;
                {
                    let mut set = inflight.lock().unwrap_or_else(|e| e.into_inner());
                    for h in &fresh {
                        set.remove(h);
                    }
                }
                let _ = driver_tx.send(DriverInput::BodiesArrived).await;
            });
        })
    };
    // Batches a NEW-VIEW re-proposed that this node lacks: asked of the validators that
    // claimed them first. The driver allows one fetch per sequence number in its window.
    let fetch_payload = {
        let (shared, p2p, driver_tx) = (shared.clone(), p2p.clone(), driver_tx.clone());
        Arc::new(move |seq: Seq, digest: Digest, from: Vec<ValidatorId>| {
            let (shared, p2p, driver_tx) = (shared.clone(), p2p.clone(), driver_tx.clone());
            tokio::spawn(async move {
                let mut peers: Vec<PublicKey> = from
                    .iter()
                    .filter_map(|id| shared.validators.public_key(*id))
                    .collect();
                for p in shared.status().peers {
                    if !peers.contains(&p) {
                        peers.push(p);
                    }
                }
                let request = wire::encode(&SyncRequest::Payload { seq: seq.0, digest });
                for peer in peers {
                    let Ok(Ok(bytes)) = tokio::time::timeout(
                        Duration::from_secs(5),
                        p2p.request(peer, request.clone()),
                    )
                    .await
                    else {
                        continue;
                    };
                    if let Some(SyncResponse::Payload(Some(batch))) = wire::decode(&bytes)
                        && batch.digest() == digest
                    {
                        let _ = driver_tx.send(DriverInput::Payload { seq, batch }).await;
                        return;
                    }
                }
            });
        })
    };
    let fetch_for_executor = {
        let (shared, p2p) = (shared.clone(), p2p.clone());
        let handle = tokio::runtime::Handle::current();
        Arc::new(move |hashes: Vec<Digest>| {
            handle.block_on(admission::fetch_bodies(&shared, &p2p, hashes, None))
        })
    };
    let _executor = crate::execution::executor::spawn(
        chain,
        shared.clone(),
        exec_rx,
        executed_tx,
        fetch_for_executor,
        crate::execution::executor::ExecutorParts {
            snapshots: snapshots.clone(),
            checkpoint_interval: params.checkpoint_interval,
            peers: Box::new(sync::P2pPeers {
                shared: shared.clone(),
                p2p: p2p.clone(),
                runtime: tokio::runtime::Handle::current(),
            }),
            batches: batch_path.clone(),
            runtime: tokio::runtime::Handle::current(),
        },
    );

    let driver = Driver::new(
        core,
        shared.clone(),
        p2p.clone(),
        exec_tx.clone(),
        sync_tx,
        fetch_for_driver,
        fetch_payload,
        params.batch_bytes_max as usize,
        Duration::from_millis(params.batch_delay_ms),
        Duration::from_millis(params.view_change_timeout_ms * 2),
        batch_path.clone(),
    );
    tasks.push(tokio::spawn(driver.run(driver_rx, executed_rx)));
    tasks.push(tokio::spawn(sync::run(
        shared.clone(),
        p2p.clone(),
        exec_tx,
        sync_rx,
    )));

    // p2p events → verifier, admission, sync server, status.
    let protocol = params.protocol;
    {
        let (shared, p2p, admission) = (shared.clone(), p2p.clone(), admission.clone());
        let driver_tx = driver_tx.clone();
        let batch_path = batch_path.clone();
        let gossip_slots = Arc::new(tokio::sync::Semaphore::new(GOSSIP_IN_FLIGHT));
        tokio::spawn(async move {
            while let Some(event) = p2p_events.recv().await {
                match event {
                    // PBFT messages are signed: checked by the verifier pool before the driver
                    // sees them. Raft's are not (crash faults): the sender is the validator
                    // whose key authenticated the connection.
                    P2pEvent::Consensus { from, bytes } => {
                        conduct.frame(&from);
                        match protocol {
                            tally_genesis::Protocol::Pbft => match Message::decode(&bytes) {
                                Ok(msg) => {
                                    if !verifier.submit(msg, from) {
                                        dropped_in(&shared);
                                    }
                                }
                                Err(_) => {
                                    Metrics::inc_reason(
                                        &shared.metrics.consensus_rejections,
                                        "undecodable",
                                    );
                                    conduct.offence(&from, "undecodable");
                                }
                            },
                            crash_protocol => {
                                let sender = shared.validators.id_of(&from);
                                let msg = match crash_protocol {
                                    tally_genesis::Protocol::Raft => {
                                        tally_consensus::raft::Message::decode(&bytes).map(
                                            |mut m| {
                                                m.from = sender.unwrap_or(m.from);
                                                PeerMessage::Raft(m)
                                            },
                                        )
                                    }
                                    _ => tally_consensus::paxos::Message::decode(&bytes).map(
                                        |mut m| {
                                            m.from = sender.unwrap_or(m.from);
                                            PeerMessage::Paxos(m)
                                        },
                                    ),
                                };
                                match (sender, msg) {
                                    (Some(_), Some(msg)) => {
                                        if driver_tx.try_send(DriverInput::Message(msg)).is_err() {
                                            dropped_in(&shared);
                                        }
                                    }
                                    _ => {
                                        Metrics::inc_reason(
                                            &shared.metrics.consensus_rejections,
                                            "undecodable",
                                        );
                                        conduct.offence(&from, "undecodable");
                                    }
                                }
                            }
                        }
                    }
                    P2pEvent::Gossip { id, from, bytes } => {
                        // At most GOSSIP_IN_FLIGHT bundles are being admitted at once (bounded
                        // memory); beyond that a bundle is stashed unverified.
                        match gossip_slots.clone().try_acquire_owned() {
                            Ok(permit) => {
                                let admission = admission.clone();
                                tokio::spawn(async move {
                                    admission.on_gossip(id, from, bytes).await;
                                    drop(permit);
                                });
                            }
                            Err(_) => admission.stash_gossip(id, bytes),
                        }
                    }
                    P2pEvent::SyncRequest { id, bytes, from } => {
                        let Some(request) = wire::decode::<SyncRequest>(&bytes) else {
                            conduct.offence(&from, "undecodable");
                            p2p.respond(
                                id,
                                wire::encode(&SyncResponse::Error("malformed request".into())),
                            );
                            continue;
                        };
                        if let SyncRequest::Payload { seq, digest } = request {
                            // The driver holds the batches; a full queue answers "none".
                            let (reply, answer) = tokio::sync::oneshot::channel();
                            let asked = driver_tx.try_send(DriverInput::PayloadRequest {
                                seq: Seq(seq),
                                digest,
                                reply,
                            });
                            let p2p = p2p.clone();
                            tokio::spawn(async move {
                                let batch = match asked {
                                    Ok(()) => tokio::time::timeout(Duration::from_secs(2), answer)
                                        .await
                                        .ok()
                                        .and_then(|r| r.ok())
                                        .flatten(),
                                    Err(_) => None,
                                };
                                p2p.respond(id, wire::encode(&SyncResponse::Payload(batch)));
                            });
                            continue;
                        }
                        let (shared, p2p, snapshots) =
                            (shared.clone(), p2p.clone(), snapshots.clone());
                        tokio::task::spawn_blocking(move || {
                            p2p.respond(id, sync::serve(&shared, &snapshots, request));
                        });
                    }
                    // Frames of the batch stream go to the batch task, which checks them
                    // before anything acts on them. Without data batches nobody should send
                    // any: counted and dropped.
                    P2pEvent::Batches { from, bytes } => match &batch_path {
                        Some(path) => {
                            conduct.frame(&from);
                            let input =
                                crate::batches::service::ServiceInput::Frame { from, bytes };
                            if !path.submit(input) {
                                dropped_in(&shared);
                            }
                        }
                        None => Metrics::inc_reason(
                            &shared.metrics.consensus_rejections,
                            "batch_stream",
                        ),
                    },
                    P2pEvent::Misbehaved { from, what } => conduct.offence(&from, what),
                    P2pEvent::PeerConnected(k) => shared.update_status(|s| {
                        if !s.peers.contains(&k) {
                            s.peers.push(k);
                        }
                    }),
                    P2pEvent::PeerDisconnected(k) => {
                        shared.update_status(|s| s.peers.retain(|p| *p != k))
                    }
                }
            }
        });
    }

    let rpc_addr = socket(&config.rpc.listen)?;
    let (rpc_runtime, rpc_handle) = rpc::server::launch(
        rpc_addr,
        &config.rpc,
        shared.clone(),
        admission,
        config.rpc.admin.then(|| driver_tx.clone()),
    )
    .await?;
    info!("JSON-RPC on http://{rpc_addr} (WebSocket on ws://{rpc_addr})");

    let metrics_addr = socket(&config.metrics.listen)?;
    let refresh =
        crate::metrics_refresh::refresher(shared.clone(), p2p.stats.clone(), batch_path.clone());
    tokio::spawn(async move {
        if let Err(e) = tally_monitoring::serve(metrics_addr, metrics, refresh).await {
            warn!("metrics endpoint: {e}");
        }
    });
    info!("metrics on http://{metrics_addr}/metrics");

    shutdown_signal().await;
    info!("shutting down");
    if protocol == tally_genesis::Protocol::Raft {
        hand_over_leadership(&shared, &driver_tx).await;
    }
    let _ = rpc_handle.stop();
    drop(rpc_runtime);
    for t in &tasks {
        t.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(tasks)).await;
    Ok(())
}

/// A Raft leader that is shut down hands leadership to its most caught-up follower first
/// (and waits up to 3 s for it to take over), so clients wait for no election timeout.
async fn hand_over_leadership(shared: &Shared, driver: &mpsc::Sender<DriverInput>) {
    let Some(me) = shared.me else {
        return;
    };
    if shared.status().leader != Some(me.0) {
        return;
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    if driver
        .send(DriverInput::TransferLeadership { to: None, reply })
        .await
        .is_err()
        || !answer.await.unwrap_or(false)
    {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Some(l) = shared.status().leader.filter(|l| *l != me.0) {
            info!(to = l, "leadership handed over");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!("leadership transfer did not complete in 3 s; stopping anyway");
}

/// Counts a peer's message dropped because a bounded inbound queue was full.
fn dropped_in(shared: &Shared) {
    shared
        .metrics
        .p2p_dropped
        .get_or_create(&DirectionLabels {
            direction: "in".into(),
        })
        .inc();
}

/// Runs `f` every `period` (a late tick is delayed, not bunched), until aborted.
fn every<F, Fut>(period: Duration, mut f: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            f().await;
        }
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
