//! The admin listener: `GET /metrics` in the Prometheus text format, on an
//! address of its own (`metrics.listen`) so the gRPC port stays gRPC and a
//! network policy can open the scrape port to Prometheus alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Sets the gauges that are read at scrape time (queue sizes, backlogs,
/// feed states) before the endpoint renders.
pub type Collect = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// How long a scrape waits for [`Collect`]; past it, the values of the
/// previous scrape are served (a slow Redis must not hang Prometheus).
const COLLECT_TIMEOUT: Duration = Duration::from_secs(3);

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running metrics endpoint.
pub struct MetricsServer {
    pub addr: SocketAddr,
}

#[derive(Clone)]
struct Endpoint {
    handle: PrometheusHandle,
    collect: Option<Collect>,
}

impl MetricsServer {
    /// Installs the recorder (once per process) and serves `/metrics` on
    /// `listener` until `shutdown` is cancelled.
    pub fn serve(
        listener: TcpListener,
        collect: Option<Collect>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<MetricsServer> {
        let handle = super::install();
        let addr = listener.local_addr().context("metrics listener address")?;
        let app = Router::new()
            .route("/metrics", get(render))
            .with_state(Endpoint { handle, collect });
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, %addr, "metrics endpoint stopped");
            }
        });
        tracing::info!(%addr, "metrics endpoint listening (GET /metrics)");
        Ok(MetricsServer { addr })
    }
}

async fn render(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    if let Some(collect) = &endpoint.collect
        && tokio::time::timeout(COLLECT_TIMEOUT, collect())
            .await
            .is_err()
    {
        tracing::warn!(
            timeout_ms = COLLECT_TIMEOUT.as_millis() as u64,
            "metrics scrape: reading the scrape-time gauges timed out; serving their previous values"
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        endpoint.handle.render(),
    )
}
