//! JSON-RPC 2.0 over HTTP and WebSocket (`docs/rpc.md` is the contract): the methods here,
//! the limits every call passes first in `limits`, the accept loop in `server`.

pub mod block_view;
pub mod limits;
pub mod params;
pub mod server;

use params::{
    AddressParams, DataParams, HashParams, HeightParams, TransferParams, TxParams, TxsParams,
    WaitParams, error, invalid_params, parse_digest, parse_hex_tx, subscribe_params,
};

use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::server::{PendingSubscriptionSink, RpcModule, ServerHandle, SubscriptionMessage};
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Value, json};
use tally_consensus::pbft::Evidence;
use tally_crypto::Digest;
use tally_ledger::{TxError, TxLocation, TxOutcome};
use tally_monitoring::{MethodLabels, Metrics};

use crate::execution::block::StoredBlock;
use crate::ingress::admission::{Admission, SubmitError};
use crate::ingress::mempool::AdmitError;
use crate::shared::Shared;

/// Error codes beyond JSON-RPC's standard ones (-32700 parse error, -32600 invalid request,
/// -32601 method not found, -32602 invalid params, -32603 internal error).
pub mod codes {
    pub const INVALID_SIGNATURE: i32 = -32001;
    pub const WRONG_CHAIN: i32 = -32002;
    pub const STALE_NONCE: i32 = -32003;
    pub const DUPLICATE: i32 = -32004;
    pub const MEMPOOL_FULL: i32 = -32005;
    pub const TOO_LARGE: i32 = -32006;
    pub const MALFORMED: i32 = -32007;
    pub const NONCE_TOO_FAR: i32 = -32008;
    pub const NONCE_TAKEN: i32 = -32009;
    pub const TIMEOUT: i32 = -32010;
    pub const NOT_FOUND: i32 = -32011;
    pub const OVERLOADED: i32 = -32012;
    /// An `admin_*` method on a node whose config does not enable them.
    pub const ADMIN_DISABLED: i32 = -32013;
    /// The request cannot be carried out in the node's current role (a leadership transfer
    /// asked of a node that does not lead, or under a protocol without transfers).
    pub const NOT_APPLICABLE: i32 = -32014;
    /// Past this client address's rate of calls or of transactions; `data.retry_after_ms`.
    pub const RATE_LIMITED: i32 = -32015;
    /// The method needs `Authorization: Bearer TOKEN` on this node.
    pub const UNAUTHORIZED: i32 = -32016;
    /// Past the node's or the connection's subscription cap.
    pub const TOO_MANY_SUBSCRIPTIONS: i32 = -32017;
    /// In a subscription's closing error notification: the subscriber read too slowly.
    pub const SUBSCRIBER_TOO_SLOW: i32 = -32018;
}

pub struct RpcCtx {
    pub shared: Arc<Shared>,
    pub admission: Admission,
    pub max_batch: usize,
    /// `admin_*` methods: the driver's queue, when the config enables them.
    pub admin: Option<tokio::sync::mpsc::Sender<crate::driver::DriverInput>>,
    pub policy: Arc<limits::Policy>,
    pub subscriptions: Arc<limits::Subscriptions>,
}

/// The retry hint given with `overloaded` when the node's batches wait for attestations:
/// about the time the other validators take to attest a few batches.
const UNPROVEN_RETRY_MS: u64 = 200;

pub fn submit_error(e: &SubmitError) -> ErrorObjectOwned {
    let reason = json!({ "reason": e.reason() });
    let code = match e {
        SubmitError::Tx(TxError::InvalidSignature) => codes::INVALID_SIGNATURE,
        SubmitError::Tx(TxError::WrongChain { .. }) => codes::WRONG_CHAIN,
        SubmitError::Tx(TxError::TooLarge { .. }) => codes::TOO_LARGE,
        SubmitError::Tx(_) => codes::MALFORMED,
        SubmitError::Admit(AdmitError::StaleNonce { expected, .. }) => {
            return error(
                codes::STALE_NONCE,
                e.to_string(),
                Some(json!({ "reason": e.reason(), "expected_nonce": expected })),
            );
        }
        SubmitError::Admit(AdmitError::GapFull { expected, .. }) => {
            return error(
                codes::MEMPOOL_FULL,
                e.to_string(),
                Some(json!({ "reason": e.reason(), "expected_nonce": expected })),
            );
        }
        SubmitError::Admit(AdmitError::Duplicate) => codes::DUPLICATE,
        SubmitError::Admit(AdmitError::Full { .. }) => codes::MEMPOOL_FULL,
        SubmitError::Admit(AdmitError::NonceTooFar { .. }) => codes::NONCE_TOO_FAR,
        SubmitError::Admit(AdmitError::NonceTaken { .. }) => codes::NONCE_TAKEN,
        SubmitError::Overloaded => codes::OVERLOADED,
        SubmitError::Unproven { .. } | SubmitError::Uncommitted { .. } => {
            return error(
                codes::OVERLOADED,
                e.to_string(),
                Some(json!({ "reason": e.reason(), "retry_after_ms": UNPROVEN_RETRY_MS })),
            );
        }
    };
    error(code, e.to_string(), Some(reason))
}

/// `tx_status`'s answer.
pub fn tx_status(shared: &Shared, hash: &Digest) -> Value {
    let location = shared
        .store
        .tx_index(hash)
        .ok()
        .flatten()
        .and_then(|v| TxLocation::decode(&v));
    match location {
        Some(l) if l.code == 0 => json!({
            "status": "committed", "height": l.height, "index": l.index,
        }),
        Some(l) => {
            let message = shared
                .store
                .block(l.height)
                .ok()
                .flatten()
                .and_then(|b| StoredBlock::decode(&b).ok())
                .and_then(|b| b.outcomes.get(l.index as usize).cloned())
                .map(|o| match o {
                    TxOutcome::Failed(e) => (e.name(), e.to_string()),
                    TxOutcome::Ok => ("ok", "ok".into()),
                });
            let (name, message) = message.unwrap_or(("failed", "failed".into()));
            json!({
                "status": "failed", "height": l.height, "index": l.index,
                "error": { "code": l.code, "name": name, "message": message },
            })
        }
        None if shared.mempool().contains(hash) => json!({ "status": "pending" }),
        None => json!({ "status": "unknown" }),
    }
}

/// A block as RPC shows it (see [`block_view::BlockView`]). `tx_hashes` are computed from
/// the bodies when not given; without `include_txs` the bodies are left out (not encoded at
/// all).
pub fn block_json(
    shared: &Shared,
    b: &StoredBlock,
    tx_hashes: Option<&[Digest]>,
    include_txs: bool,
) -> Value {
    serde_json::to_value(block_view::BlockView {
        validators: &shared.validators,
        block: b,
        tx_hashes,
        include_txs,
    })
    .expect("a block serializes")
}

fn block_at(shared: &Shared, height: u64) -> Result<Value, ErrorObjectOwned> {
    let bytes = shared
        .store
        .block(height)
        .map_err(|e| error(-32603, e.to_string(), None))?
        .ok_or_else(|| {
            error(
                codes::NOT_FOUND,
                format!("no block at height {height}"),
                None,
            )
        })?;
    let block = StoredBlock::decode(&bytes).map_err(|e| error(-32603, e.to_string(), None))?;
    Ok(block_json(shared, &block, None, true))
}

/// A piece of evidence as `evidence_list` serves it: who, what, and both signed statements
/// as the exact bytes signed, so a client holding only the genesis keys can check it
/// (`docs/rpc.md`); `raw` is the whole record, borsh-encoded, as `tally evidence` reads it.
pub fn evidence_json(shared: &Shared, e: &Evidence) -> Value {
    let (view, seq) = e.first.slot();
    let statement = |s: &tally_consensus::pbft::Statement| {
        json!({
            "domain": s.domain().tag(),
            "signed_bytes": tally_crypto::to_hex(&s.signing_bytes()),
            "signature": tally_crypto::to_hex(&s.signature().0),
        })
    };
    json!({
        "validator": e.validator().0,
        "name": shared.genesis.validators.get(e.validator().0 as usize).map(|v| v.name.clone()),
        "public_key": shared.validators.public_key(e.validator()).map(|k| k.to_hex()),
        "kind": e.kind(),
        "view": view.0,
        "seq": seq.0,
        "statements": [statement(&e.first), statement(&e.second)],
        "raw": tally_crypto::to_hex(&e.encode()),
    })
}

pub fn chain_status(shared: &Shared) -> Value {
    let s = shared.status();
    let g = &shared.genesis;
    json!({
        "chain_id": shared.chain_id.as_str(),
        "genesis_hash": shared.genesis_hash.to_hex(),
        "consensus": g.consensus.protocol.as_str(),
        "height": s.height,
        "latest_hash": s.latest_hash.to_hex(),
        "view": s.view,
        "leader": s.leader.and_then(|l| g.validators.get(l as usize)).map(|v| v.name.clone()),
        "leader_index": s.leader,
        "validators": g.validators.iter().map(|v| json!({
            "name": v.name, "public_key": v.public_key.to_hex(), "p2p": v.p2p,
        })).collect::<Vec<_>>(),
        "stable_checkpoint": s.stable_checkpoint,
        "lease_read": s.lease_read(),
        "peers": s.peers.len(),
        "syncing": s.syncing.is_some(),
        "state_diverged": s.diverged,
        "sync_target": s.syncing.map(|(_, t)| t),
        "node": shared.me.and_then(|id| g.validators.get(id.0 as usize)).map(|v| v.name.clone()),
        "mempool": { "transactions": shared.mempool().len(), "bytes": shared.mempool().bytes() },
    })
}

fn count(shared: &Shared, method: &str) {
    shared
        .metrics
        .rpc_requests
        .get_or_create(&MethodLabels {
            method: method.into(),
        })
        .inc();
}

pub async fn serve(
    listen: std::net::SocketAddr,
    limits: server::Limits,
    ctx: RpcCtx,
) -> anyhow::Result<ServerHandle> {
    let mut module = RpcModule::new(ctx);

    module.register_async_method("tx_submit", |params, ctx, ext| async move {
        count(&ctx.shared, "tx_submit");
        let p: TxParams = params.parse()?;
        ctx.policy
            .admit_transactions(ext.get::<limits::Caller>(), 1)?;
        let bytes = parse_hex_tx(&p.tx)?;
        let client = ext.get::<limits::Caller>().map(|c| c.ip);
        match ctx.admission.submit(&bytes, client).await {
            Ok(hash) => Ok::<Value, ErrorObjectOwned>(json!({ "hash": hash.to_hex() })),
            Err(e) => Err(submit_error(&e)),
        }
    })?;

    module.register_async_method("tx_submit_batch", |params, ctx, ext| async move {
        count(&ctx.shared, "tx_submit_batch");
        let p: TxsParams = params.parse()?;
        if p.txs.len() > ctx.max_batch {
            return Err(invalid_params(format!(
                "{} transactions; at most {} per call",
                p.txs.len(),
                ctx.max_batch
            )));
        }
        ctx.policy
            .admit_transactions(ext.get::<limits::Caller>(), p.txs.len())?;
        let mut decoded = Vec::with_capacity(p.txs.len());
        let mut slots = Vec::with_capacity(p.txs.len());
        for tx in &p.txs {
            match parse_hex_tx(tx) {
                Ok(b) => {
                    slots.push(None);
                    decoded.push(b);
                }
                Err(e) => slots.push(Some(e)),
            }
        }
        let client = ext.get::<limits::Caller>().map(|c| c.ip);
        let mut results = ctx
            .admission
            .submit_many(&decoded, client)
            .await
            .into_iter();
        let out: Vec<Value> = slots
            .into_iter()
            .map(|slot| match slot {
                Some(e) => json!({ "error": { "code": e.code(), "message": e.message(), "data": e.data() } }),
                None => match results.next().expect("one result per decoded transaction") {
                    Ok(hash) => json!({ "hash": hash.to_hex() }),
                    Err(e) => {
                        let e = submit_error(&e);
                        json!({ "error": { "code": e.code(), "message": e.message(), "data": e.data() } })
                    }
                },
            })
            .collect();
        Ok::<Value, ErrorObjectOwned>(Value::Array(out))
    })?;

    module.register_method("tx_status", |params, ctx, _| {
        count(&ctx.shared, "tx_status");
        let p: HashParams = params.parse()?;
        Ok::<Value, ErrorObjectOwned>(tx_status(&ctx.shared, &parse_digest(&p.hash)?))
    })?;

    module.register_async_method("tx_wait", |params, ctx, _| async move {
        count(&ctx.shared, "tx_wait");
        let p: WaitParams = params.parse()?;
        let hash = parse_digest(&p.hash)?;
        let timeout = Duration::from_millis(p.timeout_ms.min(120_000));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Bounded: a caller waiting for hashes that never commit holds one entry, only
            // while it waits.
            let Some(notify) = ctx.shared.tx_waiter(hash) else {
                return Err(error(
                    codes::OVERLOADED,
                    "too many transactions are being waited for; retry later",
                    None,
                ));
            };
            let notified = notify.notified();
            let status = tx_status(&ctx.shared, &hash);
            if matches!(status["status"].as_str(), Some("committed" | "failed")) {
                drop(notified);
                ctx.shared.tx_waiter_done(&hash, notify);
                return Ok(status);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                ctx.shared.tx_waiter_done(&hash, notify);
                return Err(error(
                    codes::TIMEOUT,
                    format!("not committed within {} ms", timeout.as_millis()),
                    Some(status),
                ));
            }
        }
    })?;

    module.register_method("block_get", |params, ctx, _| {
        count(&ctx.shared, "block_get");
        let p: HeightParams = params.parse()?;
        block_at(&ctx.shared, p.height)
    })?;

    module.register_method("block_latest", |_params, ctx, _| {
        count(&ctx.shared, "block_latest");
        let height = ctx.shared.status().height;
        if height == 0 {
            return Err(error(codes::NOT_FOUND, "no blocks yet", None));
        }
        block_at(&ctx.shared, height)
    })?;

    module.register_method("account_get", |params, ctx, _| {
        count(&ctx.shared, "account_get");
        let p: AddressParams = params.parse()?;
        let who = p.decode()?;
        use tally_ledger::StateView;
        let account = crate::execution::chain::StoreView(&*ctx.shared.store)
            .account(&who)
            .map_err(|e| error(-32603, e.to_string(), None))?
            .unwrap_or_default();
        // `lease_read`: a Multi-Paxos leader under its lease answers from its own state and
        // says so (no other leader can have committed anything it has not executed).
        let mut answer = json!({ "balance": account.balance, "nonce": account.nonce });
        if ctx.shared.status().lease_read() {
            answer["lease_read"] = json!(true);
        }
        Ok::<Value, ErrorObjectOwned>(answer)
    })?;

    module.register_method("data_get", |params, ctx, _| {
        count(&ctx.shared, "data_get");
        let p: DataParams = params.parse()?;
        let (owner, key) = p.decode()?;
        use tally_ledger::StateView;
        let value = crate::execution::chain::StoreView(&*ctx.shared.store)
            .data(&owner, &key)
            .map_err(|e| error(-32603, e.to_string(), None))?;
        Ok::<Value, ErrorObjectOwned>(json!({
            "value": value.map(|v| tally_crypto::to_hex(&v)),
            "height": ctx.shared.status().height,
        }))
    })?;

    module.register_async_method("admin_transfer_leadership", |params, ctx, _| async move {
        count(&ctx.shared, "admin_transfer_leadership");
        let Some(driver) = ctx.admin.clone() else {
            return Err(error(
                codes::ADMIN_DISABLED,
                "admin methods are disabled on this node ([rpc] admin = true enables them)",
                None,
            ));
        };
        let p: TransferParams = params.parse()?;
        let validators = &ctx.shared.genesis.validators;
        let to = match &p.to {
            Value::String(name) => validators.iter().position(|v| &v.name == name),
            Value::Number(n) => n
                .as_u64()
                .filter(|i| (*i as usize) < validators.len())
                .map(|i| i as usize),
            _ => None,
        }
        .ok_or_else(|| invalid_params("to: not a validator's name or index"))?;
        if ctx.shared.me.map(|m| m.0 as usize) == Some(to) {
            return Err(invalid_params("to: this node itself"));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let input = crate::driver::DriverInput::TransferLeadership {
            to: Some(tally_consensus::ValidatorId(to as u16)),
            reply,
        };
        if driver.try_send(input).is_err() {
            return Err(error(
                codes::OVERLOADED,
                "the consensus queue is full",
                None,
            ));
        }
        let started = tokio::time::timeout(std::time::Duration::from_secs(5), answer)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false);
        if !started {
            return Err(error(
                codes::NOT_APPLICABLE,
                "this node does not lead, or its protocol has no leadership transfer (raft only)",
                None,
            ));
        }
        Ok::<Value, ErrorObjectOwned>(json!({
            "transferring_to": validators[to].name,
        }))
    })?;

    module.register_method("chain_status", |_params, ctx, _| {
        count(&ctx.shared, "chain_status");
        Ok::<Value, ErrorObjectOwned>(chain_status(&ctx.shared))
    })?;

    module.register_method("evidence_list", |_params, ctx, _| {
        count(&ctx.shared, "evidence_list");
        let stored = ctx
            .shared
            .store
            .evidence_scan()
            .map_err(|e| error(-32603, e.to_string(), None))?;
        let out: Vec<Value> = stored
            .iter()
            .filter_map(|(_, v)| Evidence::decode(v).ok())
            .map(|e| evidence_json(&ctx.shared, &e))
            .collect();
        Ok::<Value, ErrorObjectOwned>(Value::Array(out))
    })?;

    module.register_subscription(
        "subscribe_blocks",
        "block",
        "unsubscribe_blocks",
        |params, pending: PendingSubscriptionSink, ctx, _| async move {
            count(&ctx.shared, "subscribe_blocks");
            let p = subscribe_params(params.as_str())?;
            let include_txs = p.include_txs.unwrap_or(true);
            let _permit = match ctx.subscriptions.try_open(pending.connection_id().0) {
                Ok(permit) => permit,
                Err(e) => {
                    pending.reject(e).await;
                    return Ok(());
                }
            };
            let mut rx = ctx.shared.blocks.subscribe();
            let mut sink = pending.accept().await?;
            loop {
                let block = tokio::select! {
                    r = rx.recv() => r,
                    _ = sink.closed() => break,
                };
                let c = match block {
                    Ok(c) => c,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        return Err(slow_subscriber(&ctx.shared, None));
                    }
                    Err(_) => break,
                };
                let result = c.notification(&ctx.shared, include_txs);
                let msg =
                    SubscriptionMessage::new(sink.method_name(), sink.subscription_id(), &result)?;
                // Never wait for a slow reader: what is queued for a connection is bounded by
                // `[rpc] subscriber_buffer`, and a subscriber that fills it is dropped.
                match sink.try_send(msg) {
                    Ok(()) => {}
                    Err(jsonrpsee::core::server::TrySendError::Full(_)) => {
                        return Err(slow_subscriber(&ctx.shared, Some(c.block.header.height)));
                    }
                    Err(jsonrpsee::core::server::TrySendError::Closed(_)) => break,
                }
            }
            SubscriptionResult::Ok(())
        },
    )?;

    server::start(listen, limits, module).await
}

/// The error notification that ends a subscription whose reader fell behind: the client
/// resubscribes and fills the gap with `block_get` from the last height it saw.
fn slow_subscriber(shared: &Shared, height: Option<u64>) -> jsonrpsee::core::SubscriptionError {
    Metrics::inc_reason(&shared.metrics.rpc_refusals, "slow_subscriber");
    let error = json!({
        "code": codes::SUBSCRIBER_TOO_SLOW,
        "message": "the subscriber read too slowly and was dropped; resubscribe and fill the gap with block_get",
        "data": { "reason": "slow_subscriber", "dropped_height": height },
    });
    jsonrpsee::core::SubscriptionError::from_json(
        serde_json::value::to_raw_value(&error).expect("a JSON value serialises"),
    )
}
