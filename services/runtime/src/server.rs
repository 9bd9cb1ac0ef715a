//! The gRPC server every tickmesh process runs: the enabled services on one
//! port (also as gRPC-Web for browsers, see [`crate::web`]), plus health,
//! reflection (v1 and v1alpha, so grpcurl needs no .proto files), keepalive,
//! connection age, message-size limits, per-call tracing spans, and graceful
//! shutdown. Plain HTTP pages (the chart page) can share the port: their
//! routes answer their own paths and everything else goes to gRPC.
//!
//! Client deadlines (`grpc-timeout`) are honoured by tonic for every call. No
//! server-wide timeout is set, because it would also cut long client streams
//! (`Publish`) that are working as intended.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::config::ServerConfig;
use crate::telemetry::GrpcTraceLayer;

/// Services a server always carries besides tickmesh's own.
const INFRA_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Adds reflection for `services` (full gRPC names) and the infrastructure
/// services to `routes`.
pub fn add_reflection(routes: &mut RoutesBuilder, services: &[&str]) -> anyhow::Result<()> {
    let names = || services.iter().chain(INFRA_SERVICES).map(|s| s.to_string());
    let descriptor_sets: [&[u8]; 5] = [
        tickmesh_api::FILE_DESCRIPTOR_SET,
        tickmesh_api::GOOGLE_RPC_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut v1 = tonic_reflection::server::Builder::configure().include_reflection_service(false);
    let mut v1alpha =
        tonic_reflection::server::Builder::configure().include_reflection_service(false);
    for set in descriptor_sets {
        v1 = v1.register_encoded_file_descriptor_set(set);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
    }
    for name in names() {
        v1 = v1.with_service_name(name.clone());
        v1alpha = v1alpha.with_service_name(name);
    }
    routes.add_service(v1.build_v1().context("reflection v1")?);
    routes.add_service(v1alpha.build_v1alpha().context("reflection v1alpha")?);
    Ok(())
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then gives
/// in-flight calls `grace_period` to finish before returning. `pages` are
/// plain HTTP routes served on the same port (GET pages for browsers);
/// requests for any other path are gRPC.
pub async fn serve(
    config: &ServerConfig,
    listener: TcpListener,
    routes: RoutesBuilder,
    pages: Option<axum::Router>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener address")?;
    let drain = shutdown.clone();
    // gRPC-Web for browsers (HTTP/1.1 too), and CORS in front of it so a
    // preflight is answered before anything else sees it.
    let web = config.grpc_web.then(|| {
        tower::ServiceBuilder::new()
            .layer(crate::web::cors_layer(&config.cors_allowed_origins))
            .layer(tonic_web::GrpcWebLayer::new())
    });
    let grpc = tower::ServiceBuilder::new()
        .option_layer(web)
        .layer(GrpcTraceLayer)
        .layer(crate::metrics::rpc::GrpcMetricsLayer)
        .service(routes.routes());
    // The pages' routes come first: the gRPC-Web layer would refuse their
    // HTTP/1.1 GETs (400), and they are no gRPC calls to trace.
    let app = pages.unwrap_or_default().fallback_service(grpc);
    let server = Server::builder()
        .accept_http1(config.grpc_web)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_connection_age(config.max_connection_age)
        .max_connection_age_grace(config.grace_period)
        .max_concurrent_streams(config.max_concurrent_streams)
        .add_routes(Routes::from(app))
        // Builder options like `tcp_nodelay` only apply to sockets tonic binds
        // itself; accepted sockets get theirs here (without TCP_NODELAY,
        // Nagle's algorithm and delayed ACKs add ~40 ms to replies).
        .serve_with_incoming_shutdown(incoming(listener), async move { drain.cancelled().await });
    tracing::info!(%addr, "grpc server listening");
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.context("grpc server")?,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(config.grace_period, &mut server).await {
                Ok(result) => result.context("grpc server")?,
                Err(_) => tracing::warn!(grace_period = ?config.grace_period, "grace period over; closing remaining calls"),
            }
        }
    }
    tracing::info!(%addr, "grpc server stopped");
    Ok(())
}

/// Accepted connections with TCP_NODELAY and TCP keepalive set.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}
