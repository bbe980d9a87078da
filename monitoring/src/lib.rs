//! Tally's metrics (all documented in `docs/metrics.md`), and the HTTP endpoint that serves
//! them: `/metrics` (Prometheus text format; OpenMetrics when the scraper asks for it) and
//! `/health`.

mod classic;
mod metrics;

pub use classic::openmetrics_to_classic;
pub use metrics::*;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Called before each scrape to refresh gauges read from elsewhere (mempool, peers, process).
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// Serves `/metrics` and `/health` on `listen` until the process ends.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    refresh: Refresh,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let metrics = metrics.clone();
                let refresh = refresh.clone();
                async move {
                    refresh();
                    let wants_openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    let text = metrics.encode_openmetrics();
                    let (body, content_type) = if wants_openmetrics {
                        (
                            text,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                    } else {
                        (
                            openmetrics_to_classic(&text),
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                    };
                    let mut h = HeaderMap::new();
                    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                    (h, body).into_response()
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await
}
