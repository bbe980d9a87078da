//! What the RPC server refuses before a method runs: connections past the per-address and
//! total caps, calls past a client address's rate, calls without the bearer token where one is
//! required, and calls that run past the request timeout (`docs/rpc.md`, "Limits").
//!
//! Every store here has a bound: the buckets are keyed by client address and pruned (losing
//! nothing) when they outnumber `BUCKETS_MAX`; connections are counted per address only while
//! open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonrpsee::server::middleware::rpc::{
    Batch, BatchEntry, BatchEntryErr, MethodResponse, Notification, Request, RpcServiceT,
};
use jsonrpsee::types::{ErrorObjectOwned, Id};
use serde_json::json;
use tally_genesis::config::RpcAuth;
use tally_monitoring::Metrics;

use super::codes;

/// Who sent a request, put in every request's extensions by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub ip: IpAddr,
    /// The request (or the WebSocket upgrade) carried the right bearer token.
    pub authorized: bool,
}

/// A token bucket per client address: `per_second` tokens a second, at most `2 × per_second`
/// saved up. `per_second == 0` admits everything.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The most buckets kept. When a new address would exceed it, the full buckets are pruned (a
/// full bucket is what a new one would be, so this changes nothing); if every bucket is still
/// in debt, the one owing least is forgotten.
const BUCKETS_MAX: usize = 4096;

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second as f64,
            burst: 2.0 * per_second as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from `ip`'s bucket, or says how long until they would be there.
    pub fn take(&self, ip: IpAddr, cost: u32, now: Instant) -> Result<(), Duration> {
        if self.per_second == 0.0 {
            return Ok(());
        }
        let cost = cost as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(&ip) {
            let (rate, burst) = (self.per_second, self.burst);
            let level =
                |b: &Bucket| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate;
            buckets.retain(|_, b| level(b) < burst);
            // Still full (thousands of addresses spent their burst within two seconds): forget
            // the one that owes the least.
            if buckets.len() >= BUCKETS_MAX {
                let least = buckets
                    .iter()
                    .max_by(|x, y| level(x.1).total_cmp(&level(y.1)))
                    .map(|(ip, _)| *ip);
                if let Some(ip) = least {
                    buckets.remove(&ip);
                }
            }
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        // A cost above the burst is admitted from a full bucket and leaves it in debt: the
        // address then waits as long as that cost takes to earn.
        if bucket.tokens >= cost.min(self.burst) {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let missing = cost.min(self.burst) - bucket.tokens;
            Err(Duration::from_secs_f64(missing / self.per_second).max(Duration::from_millis(1)))
        }
    }

    /// Whether `ip`'s bucket has less than one token: how long until it has, taking nothing.
    pub fn exhausted(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.per_second == 0.0 {
            return None;
        }
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.get(&ip)?;
        let level = (b.tokens
            + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second)
            .min(self.burst);
        (level < 1.0).then(|| {
            Duration::from_secs_f64((1.0 - level) / self.per_second).max(Duration::from_millis(1))
        })
    }

    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Open TCP connections, in total and per client address.
pub struct ConnectionLimiter {
    total_max: u32,
    per_ip_max: u32,
    open: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

/// Held while a connection is open; releases its count when dropped.
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    pub fn new(total_max: u32, per_ip_max: u32) -> Arc<ConnectionLimiter> {
        Arc::new(ConnectionLimiter {
            total_max,
            per_ip_max,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.total_max || mine >= self.per_ip_max {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, mine + 1);
        Some(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Block subscriptions open, in total and per connection (jsonrpsee's connection id).
pub struct Subscriptions {
    total_max: u32,
    per_connection_max: u32,
    open: Mutex<(u32, HashMap<usize, u32>)>,
    metrics: Arc<Metrics>,
}

/// Held by a subscription's task; releases its count when the subscription ends.
pub struct SubscriptionPermit {
    subscriptions: Arc<Subscriptions>,
    connection: usize,
}

impl Subscriptions {
    pub fn new(total_max: u32, per_connection_max: u32, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Subscriptions {
            total_max,
            per_connection_max,
            open: Mutex::new((0, HashMap::new())),
            metrics,
        })
    }

    pub fn try_open(
        self: &Arc<Self>,
        connection: usize,
    ) -> Result<SubscriptionPermit, ErrorObjectOwned> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_connection) = &mut *open;
        let mine = per_connection.get(&connection).copied().unwrap_or(0);
        if *total >= self.total_max || mine >= self.per_connection_max {
            Metrics::inc_reason(&self.metrics.rpc_refusals, "subscription_limit");
            let which = if mine >= self.per_connection_max {
                format!("{} on this connection", self.per_connection_max)
            } else {
                format!("{} on this node", self.total_max)
            };
            return Err(ErrorObjectOwned::owned(
                codes::TOO_MANY_SUBSCRIPTIONS,
                format!("too many subscriptions: at most {which}"),
                Some(json!({ "reason": "too_many_subscriptions" })),
            ));
        }
        *total += 1;
        per_connection.insert(connection, mine + 1);
        self.metrics.rpc_subscriptions.set(*total as i64);
        Ok(SubscriptionPermit {
            subscriptions: self.clone(),
            connection,
        })
    }
}

impl Drop for SubscriptionPermit {
    fn drop(&mut self) {
        let s = &self.subscriptions;
        let mut open = s.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_connection) = &mut *open;
        *total -= 1;
        if let Some(n) = per_connection.get_mut(&self.connection) {
            *n -= 1;
            if *n == 0 {
                per_connection.remove(&self.connection);
            }
        }
        s.metrics.rpc_subscriptions.set(*total as i64);
    }
}

/// The bearer token, compared by digest so that the comparison's time says nothing about
/// how much of a guess was right.
#[derive(Clone)]
pub struct Token(tally_crypto::Digest);

impl Token {
    pub fn new(secret: &str) -> Token {
        Token(tally_crypto::Digest::of(secret.as_bytes()))
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`.
    pub fn accepts(&self, header: Option<&http::HeaderValue>) -> bool {
        header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|t| tally_crypto::Digest::of(t.trim().as_bytes()) == self.0)
    }
}

/// The methods `auth = "writes"` protects: those that change what the node holds or does.
pub fn is_write(method: &str) -> bool {
    matches!(method, "tx_submit" | "tx_submit_batch") || method.starts_with("admin_")
}

/// Methods that bound their own duration (`tx_wait`'s `timeout_ms`, at most 120 s) and are
/// not cut by the request timeout when called alone.
fn bounds_itself(method: &str) -> bool {
    method == "tx_wait"
}

/// The checks every call passes before its method runs, shared by all connections.
pub struct Policy {
    pub calls: RateLimiter,
    /// Request bytes, in KiB.
    pub kib: RateLimiter,
    pub transactions: RateLimiter,
    pub auth: RpcAuth,
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
}

pub fn rate_limited(what: &str, retry: Duration) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        codes::RATE_LIMITED,
        format!("too many {what} from this address; retry later"),
        Some(json!({
            "reason": "rate_limited",
            "retry_after_ms": retry.as_millis().max(1) as u64,
        })),
    )
}

impl Policy {
    pub fn refuse(&self, reason: &str) {
        Metrics::inc_reason(&self.metrics.rpc_refusals, reason);
    }

    /// Whether `caller` may call `method` now (one call's worth of the rate).
    fn admit(&self, caller: Option<&Caller>, method: &str) -> Result<(), ErrorObjectOwned> {
        let caller = caller.copied().unwrap_or(Caller {
            ip: IpAddr::from([0, 0, 0, 0]),
            authorized: false,
        });
        let needs_token = match self.auth {
            RpcAuth::None => false,
            RpcAuth::Writes => is_write(method),
            RpcAuth::All => true,
        };
        if needs_token && !caller.authorized {
            self.refuse("unauthorized");
            return Err(ErrorObjectOwned::owned(
                codes::UNAUTHORIZED,
                format!("{method} needs an Authorization: Bearer token on this node"),
                Some(json!({ "reason": "unauthorized" })),
            ));
        }
        self.calls
            .take(caller.ip, 1, Instant::now())
            .map_err(|retry| {
                self.refuse("rate_limited");
                rate_limited("requests", retry)
            })
    }

    /// Takes `count` transactions' worth of the caller's transaction rate.
    pub fn admit_transactions(
        &self,
        caller: Option<&Caller>,
        count: usize,
    ) -> Result<(), ErrorObjectOwned> {
        let Some(caller) = caller else { return Ok(()) };
        self.transactions
            .take(
                caller.ip,
                count.min(u32::MAX as usize) as u32,
                Instant::now(),
            )
            .map_err(|retry| {
                self.refuse("rate_limited");
                rate_limited("transactions", retry)
            })
    }

    fn timed_out(&self) -> ErrorObjectOwned {
        self.refuse("timeout");
        ErrorObjectOwned::owned(
            codes::TIMEOUT,
            format!(
                "no answer within the request timeout ({} ms)",
                self.timeout.as_millis()
            ),
            Some(json!({ "reason": "request_timeout" })),
        )
    }
}

/// The HTTP layer in front of jsonrpsee: a request from an address whose call bucket is
/// already empty, or whose byte bucket cannot pay for the body its `Content-Length` announces,
/// is answered at once with HTTP 429 and the -32015 error, before its body is read or parsed.
/// A flooding address then costs the node a header parse per request, not a JSON parse of up
/// to `max_body_bytes`.
#[derive(Clone)]
pub struct Gate<S> {
    pub inner: S,
    pub policy: Arc<Policy>,
    pub ip: IpAddr,
}

type HttpResponse = jsonrpsee::server::HttpResponse;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let now = Instant::now();
        let kib = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1 << 20)
            .div_ceil(1024)
            .clamp(1, u32::MAX as u64) as u32;
        let refused = match self.policy.calls.exhausted(self.ip, now) {
            Some(retry) => Some(("requests", retry)),
            None => self
                .policy
                .kib
                .take(self.ip, kib, now)
                .err()
                .map(|retry| ("bytes", retry)),
        };
        let Some((what, retry)) = refused else {
            return Box::pin(self.inner.call(req));
        };
        self.policy.refuse("rate_limited");
        let body = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": rate_limited(what, retry),
        })
        .to_string();
        let response = http::Response::builder()
            .status(http::StatusCode::TOO_MANY_REQUESTS)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::RETRY_AFTER, retry.as_secs().max(1))
            .body(jsonrpsee::server::HttpBody::from(body))
            .expect("a valid response");
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// The RPC middleware applying a [`Policy`] to every call, notification and batch entry.
#[derive(Clone)]
pub struct Guard<S> {
    pub inner: S,
    pub policy: Arc<Policy>,
}

impl<S> RpcServiceT for Guard<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        async move {
            if let Err(e) = policy.admit(req.extensions().get::<Caller>(), req.method_name()) {
                return MethodResponse::error(req.id().into_owned(), e);
            }
            if bounds_itself(req.method_name()) {
                return inner.call(req).await;
            }
            let id = req.id().into_owned();
            match tokio::time::timeout(policy.timeout, inner.call(req)).await {
                Ok(rp) => rp,
                Err(_) => MethodResponse::error(id, policy.timed_out()),
            }
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        for entry in batch.iter_mut() {
            let Ok(e) = entry else { continue };
            let refused = self
                .policy
                .admit(e.extensions().get::<Caller>(), e.method_name());
            match (refused, &*e) {
                (Ok(()), _) => {}
                (Err(err), BatchEntry::Call(req)) => {
                    *entry = Err(BatchEntryErr::new(req.id().into_owned(), err));
                }
                // A refused notification gets no answer, as any notification.
                (Err(_), BatchEntry::Notification(_)) => {
                    *entry = Err(BatchEntryErr::new(
                        Id::Null,
                        ErrorObjectOwned::owned(codes::RATE_LIMITED, "refused", None::<()>),
                    ));
                }
            }
        }
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        async move {
            match tokio::time::timeout(policy.timeout, inner.batch(batch)).await {
                Ok(rp) => rp,
                Err(_) => MethodResponse::error(Id::Null, policy.timed_out()),
            }
        }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        let admitted = self
            .policy
            .admit(n.extensions().get::<Caller>(), n.method_name())
            .is_ok();
        async move {
            if admitted {
                inner.notification(n).await
            } else {
                MethodResponse::notification()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate_and_each_address_has_its_own() {
        let limiter = RateLimiter::new(100);
        let t0 = Instant::now();
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        for _ in 0..200 {
            limiter.take(a, 1, t0).unwrap();
        }
        let wait = limiter.take(a, 1, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(11), "{wait:?}");
        // Another address is not affected.
        limiter.take(b, 1, t0).unwrap();
        // 100 ms later: 10 more calls, not 11.
        let t1 = t0 + Duration::from_millis(100);
        for _ in 0..10 {
            limiter.take(a, 1, t1).unwrap();
        }
        assert!(limiter.take(a, 1, t1).is_err());
        // A cost larger than the burst passes from a full bucket and leaves a debt: 800
        // tokens short of a full bucket is 10 s at 100 a second.
        limiter.take(b, 1000, t1).unwrap();
        let wait = limiter.take(b, 1, t1).unwrap_err();
        assert!(wait >= Duration::from_secs(8), "{wait:?}");
        // 0 = unlimited.
        let open = RateLimiter::new(0);
        for _ in 0..100_000 {
            open.take(a, 7, t0).unwrap();
        }
        assert_eq!(open.tracked(), 0);
    }

    #[test]
    fn buckets_are_pruned_without_forgetting_a_debt() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        let indebted = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..20 {
            limiter.take(indebted, 1, t0).unwrap();
        }
        for i in 0..BUCKETS_MAX as u32 {
            limiter
                .take(IpAddr::from((0x0b00_0000u32 + i).to_be_bytes()), 1, t0)
                .unwrap();
        }
        // Three seconds on every bucket has refilled: the next new address prunes them all.
        let t1 = t0 + Duration::from_secs(3);
        limiter.take(IpAddr::from([12, 0, 0, 1]), 1, t1).unwrap();
        assert!(limiter.tracked() <= 2, "{}", limiter.tracked());
        // Within the refill time a bucket in debt is kept (not pruned into a fresh one): with
        // every bucket in debt, the one owing least goes, and the map stays at its bound.
        let limiter = RateLimiter::new(10);
        for _ in 0..20 {
            limiter.take(indebted, 1, t0).unwrap();
        }
        for i in 0..BUCKETS_MAX as u32 {
            limiter
                .take(IpAddr::from((0x0b00_0000u32 + i).to_be_bytes()), 19, t0)
                .unwrap();
        }
        assert_eq!(limiter.tracked(), BUCKETS_MAX);
        assert!(limiter.take(indebted, 1, t0).is_err());
    }

    #[test]
    fn connections_are_capped_per_address_and_in_total_and_released_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        let a1 = limiter.try_open(a).unwrap();
        let _a2 = limiter.try_open(a).unwrap();
        assert!(limiter.try_open(a).is_none(), "per address");
        let _b1 = limiter.try_open(b).unwrap();
        assert!(limiter.try_open(b).is_none(), "in total");
        drop(a1);
        let _a3 = limiter.try_open(a).unwrap();
    }

    /// A method that answers after `delay`.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
    }

    impl RpcServiceT for Slow {
        type MethodResponse = MethodResponse;
        type NotificationResponse = MethodResponse;
        type BatchResponse = MethodResponse;

        fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                MethodResponse::response(
                    req.id(),
                    jsonrpsee::ResponsePayload::success(1u32),
                    usize::MAX,
                )
            }
        }

        fn batch<'a>(&self, _: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                MethodResponse::error(Id::Null, ErrorObjectOwned::owned(1, "x", None::<()>))
            }
        }

        fn notification<'a>(
            &self,
            _: Notification<'a>,
        ) -> impl Future<Output = MethodResponse> + Send + 'a {
            std::future::ready(MethodResponse::notification())
        }
    }

    fn guard(delay_ms: u64, auth: RpcAuth) -> Guard<Slow> {
        Guard {
            inner: Slow {
                delay: Duration::from_millis(delay_ms),
            },
            policy: Arc::new(Policy {
                calls: RateLimiter::new(0),
                kib: RateLimiter::new(0),
                transactions: RateLimiter::new(0),
                auth,
                timeout: Duration::from_millis(50),
                metrics: Arc::new(Metrics::new(tally_monitoring::NodeInfoLabels {
                    chain_id: "test".into(),
                    consensus: "pbft".into(),
                    validator: "v0".into(),
                    version: "0".into(),
                })),
            }),
        }
    }

    fn request(method: &str, authorized: bool) -> Request<'static> {
        let mut req = Request::owned(method.to_string(), None, Id::Number(7));
        req.extensions_mut().insert(Caller {
            ip: IpAddr::from([127, 0, 0, 1]),
            authorized,
        });
        req
    }

    #[tokio::test]
    async fn a_call_past_the_request_timeout_is_answered_with_a_timeout_but_tx_wait_is_not_cut() {
        let slow = guard(200, RpcAuth::None);
        let rp = slow.call(request("block_get", false)).await;
        assert_eq!(rp.as_error_code(), Some(codes::TIMEOUT));
        assert!(
            rp.to_json().get().contains("request_timeout"),
            "{}",
            rp.to_json()
        );
        let rp = slow.call(request("tx_wait", false)).await;
        assert!(rp.is_success(), "{}", rp.to_json());
        let fast = guard(0, RpcAuth::None);
        assert!(fast.call(request("block_get", false)).await.is_success());
        // A batch is one request for the timeout.
        let rp = slow.batch(Batch::new()).await;
        assert_eq!(rp.as_error_code(), Some(codes::TIMEOUT));
    }

    #[tokio::test]
    async fn auth_writes_protects_only_writes_and_auth_all_everything() {
        let writes = guard(0, RpcAuth::Writes);
        let rp = writes.call(request("tx_submit", false)).await;
        assert_eq!(rp.as_error_code(), Some(codes::UNAUTHORIZED));
        assert!(writes.call(request("tx_submit", true)).await.is_success());
        assert!(
            writes
                .call(request("chain_status", false))
                .await
                .is_success()
        );
        let all = guard(0, RpcAuth::All);
        let rp = all.call(request("chain_status", false)).await;
        assert_eq!(rp.as_error_code(), Some(codes::UNAUTHORIZED));
        assert!(all.call(request("chain_status", true)).await.is_success());
        // A request that reached the node without its address (never, through the accept
        // loop) is treated as unauthenticated.
        let bare = Request::owned("tx_submit".into(), None, Id::Number(1));
        assert_eq!(
            writes.call(bare).await.as_error_code(),
            Some(codes::UNAUTHORIZED)
        );
    }

    #[test]
    fn the_token_is_checked_exactly() {
        let token = Token::new("0123456789abcdef");
        let header = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert!(token.accepts(Some(&header("Bearer 0123456789abcdef"))));
        assert!(!token.accepts(Some(&header("Bearer 0123456789abcdeF"))));
        assert!(!token.accepts(Some(&header("0123456789abcdef"))));
        assert!(!token.accepts(Some(&header("Basic 0123456789abcdef"))));
        assert!(!token.accepts(None));
        assert!(is_write("tx_submit") && is_write("admin_transfer_leadership"));
        assert!(!is_write("tx_status") && !is_write("chain_status"));
    }
}
