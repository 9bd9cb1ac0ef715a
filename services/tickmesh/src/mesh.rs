//! One mesh process: the services enabled in config, on one gRPC port, with
//! health, reflection, readiness tied to Redis, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tickmesh_marketfeed::MarketFeed;
use tickmesh_runtime::auth::AdminAuth;
use tickmesh_runtime::config::Config;
use tickmesh_runtime::{RedisHandle, health, server};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

/// A running mesh process.
pub struct Mesh {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub marketfeed: Option<Arc<MarketFeed>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Mesh {
    /// Binds `config.server.listen` and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Mesh> {
        let listener = TcpListener::bind(config.listen_addr())
            .await
            .with_context(|| {
                format!("cannot listen on {} (server.listen)", config.server.listen)
            })?;
        Self::start_on(config, listener).await
    }

    /// Starts serving on an already bound listener (tests bind port 0).
    pub async fn start_on(config: Config, listener: TcpListener) -> anyhow::Result<Mesh> {
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let redis = RedisHandle::new(&config.redis).map_err(|e| anyhow::anyhow!("{e}"))?;
        let admin = AdminAuth::new(&config.auth.admin_token);
        if admin.is_open() {
            tracing::warn!(
                "no admin token configured (auth.admin_token): admin RPCs are open to every caller; set one outside development"
            );
        }

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        let mut names: Vec<&'static str> = Vec::new();

        let mut marketfeed = None;
        if config.services.is_enabled("marketfeed") {
            let feed = MarketFeed::new(config.marketfeed.clone(), redis.clone(), shutdown.clone());
            routes.add_service(tickmesh_marketfeed::grpc::server(
                feed.clone(),
                admin.clone(),
                config.server.max_message_bytes,
            ));
            names.push(tickmesh_marketfeed::SERVICE_NAME);
            marketfeed = Some(feed);
        }
        server::add_reflection(&mut routes, &names)?;

        let readiness: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        health::set_ready(&reporter, &readiness, ServingStatus::NotServing).await;
        health::spawn_redis_monitor(
            reporter,
            readiness,
            redis,
            config.redis.health_interval,
            shutdown.clone(),
        );

        tracing::info!(%addr, services = ?names, redis = %redact(&config.redis.url), "mesh starting");
        let server_config = config.server.clone();
        let token = shutdown.clone();
        let task =
            tokio::spawn(
                async move { server::serve(&server_config, listener, routes, token).await },
            );
        Ok(Mesh {
            addr,
            shutdown,
            marketfeed,
            task,
        })
    }

    /// `http://addr`, for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server stops (after `shutdown` is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }

    /// Shuts down gracefully and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// A Redis URL with any password hidden, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
