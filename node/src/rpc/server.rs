//! The RPC server's accept loop: jsonrpsee serves the methods, this loop decides which TCP
//! connections it gets and tells every request who sent it.
//!
//! jsonrpsee's own loop does not expose the client's address to its middleware, and does not
//! bound the time a client takes to send headers; both are needed here (per-address limits,
//! slow-header clients), so the node accepts connections itself and hands each to jsonrpsee's
//! tower service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{
    BatchRequestConfig, Methods, PingConfig, Server, ServerConfig, ServerHandle, stop_channel,
};
use tokio::net::TcpListener;
use tracing::debug;

use super::limits::{
    Caller, ConnectionLimiter, Gate, Guard, Policy, RateLimiter, Subscriptions, Token,
};

/// Everything the accept loop and the per-call checks need from `[rpc]`.
pub struct Limits {
    pub max_body_bytes: u32,
    pub max_batch: u32,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub subscriber_buffer: u32,
    pub token: Option<Token>,
    pub policy: Arc<Policy>,
}

pub async fn start(
    listen: SocketAddr,
    limits: Limits,
    methods: impl Into<Methods>,
) -> anyhow::Result<ServerHandle> {
    let methods: Methods = methods.into();
    let listener = TcpListener::bind(listen).await?;
    let config = ServerConfig::builder()
        .max_request_body_size(limits.max_body_bytes)
        .max_response_body_size(64 * 1024 * 1024)
        .max_connections(limits.max_connections)
        // Subscriptions are counted by the node (per connection and in total, with its own
        // error code); this is only jsonrpsee's backstop.
        .max_subscriptions_per_connection(1024)
        .set_message_buffer_capacity(limits.subscriber_buffer)
        .set_batch_request_config(BatchRequestConfig::Limit(limits.max_batch))
        // A WebSocket client that stops answering pings is disconnected, which frees whatever
        // was queued for it.
        .enable_ws_ping(
            PingConfig::new()
                .ping_interval(Duration::from_secs(15))
                .inactive_limit(Duration::from_secs(45))
                .max_failures(3),
        )
        .build();
    let builder = Server::builder().set_config(config).to_service_builder();
    let connections = ConnectionLimiter::new(limits.max_connections, limits.max_connections_per_ip);
    let (stop, handle) = stop_channel();
    let timeout = limits.policy.timeout;
    let policy = limits.policy.clone();
    let token = limits.token.map(Arc::new);

    tokio::spawn(async move {
        loop {
            let (socket, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, for instance: wait rather than spin.
                        debug!("rpc accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.clone().shutdown() => break,
            };
            let ip = remote.ip().to_canonical();
            let Some(permit) = connections.try_open(ip) else {
                policy.refuse("connection_limit");
                drop(socket);
                continue;
            };
            let _ = socket.set_nodelay(true);
            let token = token.clone();
            // The permit travels in every request's extensions as well: a WebSocket session
            // outlives the HTTP connection future (hyper hands the socket over on upgrade)
            // and holds its upgrade request's extensions until it closes.
            let permit = Arc::new(permit);
            let held = permit.clone();
            let tag = move |mut req: http::Request<hyper::body::Incoming>| {
                let authorized = token
                    .as_ref()
                    .is_some_and(|t| t.accepts(req.headers().get(http::header::AUTHORIZATION)));
                req.extensions_mut().insert(Caller { ip, authorized });
                req.extensions_mut().insert(held.clone());
                req
            };
            let guard_policy = policy.clone();
            let gate_policy = policy.clone();
            let service = builder
                .clone()
                .set_http_middleware(tower::ServiceBuilder::new().map_request(tag).layer_fn(
                    move |inner| Gate {
                        inner,
                        policy: gate_policy.clone(),
                        ip,
                    },
                ))
                .set_rpc_middleware(RpcServiceBuilder::new().layer_fn(move |inner| Guard {
                    inner,
                    policy: guard_policy.clone(),
                }))
                .build(methods.clone(), stop.clone());
            let stopped = stop.clone().shutdown();
            tokio::spawn(async move {
                let mut http = auto::Builder::new(TokioExecutor::new());
                http.http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout);
                let conn = http.serve_connection_with_upgrades(
                    TokioIo::new(socket),
                    TowerToHyperService::new(service),
                );
                tokio::pin!(conn, stopped);
                let result = tokio::select! {
                    r = &mut conn => r,
                    _ = &mut stopped => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    debug!("rpc connection from {remote}: {e}");
                }
                drop(permit);
            });
        }
    });
    Ok(handle)
}

/// The RPC server's runtime, shut down without waiting when dropped (a runtime may not be
/// dropped, blocking, inside another's async context — as on an early error return).
pub struct RpcRuntime(Option<tokio::runtime::Runtime>);

impl RpcRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for RpcRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts the RPC server as `[rpc]` says, on its own runtime (two threads): under a flood of
/// requests its tasks do not queue with the driver's, execution's and p2p's
/// (`docs/architecture.md`: measured, and why not also at a lower OS priority).
pub async fn launch(
    listen: SocketAddr,
    config: &tally_genesis::config::RpcConfig,
    shared: Arc<crate::shared::Shared>,
    admission: crate::ingress::admission::Admission,
    admin: Option<tokio::sync::mpsc::Sender<crate::driver::DriverInput>>,
) -> anyhow::Result<(RpcRuntime, ServerHandle)> {
    let token = config.load_token()?.map(|t| Token::new(&t));
    let policy = Arc::new(Policy {
        calls: RateLimiter::new(config.requests_per_second_per_ip),
        kib: RateLimiter::new(
            config
                .bytes_per_second_per_ip
                .div_ceil(1024)
                .min(u32::MAX as u64) as u32,
        ),
        transactions: RateLimiter::new(config.transactions_per_second_per_ip),
        auth: config.auth,
        timeout: Duration::from_millis(config.request_timeout_ms),
        metrics: shared.metrics.clone(),
    });
    let runtime = RpcRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tally-rpc")
            .enable_all()
            .build()?,
    ));
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        max_batch: config.max_batch,
        max_connections: config.max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        subscriber_buffer: config.subscriber_buffer,
        token,
        policy: policy.clone(),
    };
    let ctx = super::RpcCtx {
        subscriptions: Subscriptions::new(
            config.max_subscriptions,
            config.max_subscriptions_per_connection,
            shared.metrics.clone(),
        ),
        shared,
        admission,
        max_batch: config.max_batch as usize,
        admin,
        policy,
    };
    let handle = runtime
        .handle()
        .spawn(super::serve(listen, limits, ctx))
        .await??;
    Ok((runtime, handle))
}
