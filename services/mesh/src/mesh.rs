//! One mesh process: the services enabled in config, on one gRPC port, with
//! health, reflection, readiness tied to Redis, and graceful shutdown (and
//! the chart page on that port when `server.chart` is on).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tickmesh_candles::CandleService;
use tickmesh_coupon::Coupons;
use tickmesh_marketfeed::MarketFeed;
use tickmesh_queue::Queue;
use tickmesh_ranking::Ranking;
use tickmesh_runtime::auth::AdminAuth;
use tickmesh_runtime::config::{Config, HistoryConfig, StoreBackend};
use tickmesh_runtime::{RedisHandle, health, server};
use tickmesh_scylla::ScyllaSession;
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
    pub candles: Option<Arc<CandleService>>,
    pub ranking: Option<Arc<Ranking>>,
    pub coupon: Option<Arc<Coupons>>,
    pub queue: Option<Arc<Queue>>,
    /// The venue feeds this process runs (`[[feeds]]`), when any.
    pub feeds: Option<tickmesh_feeds::Feeds>,
    /// The quote pollers this process runs (`[[pollers]]`).
    pub pollers: Vec<Arc<tickmesh_poller::Poller>>,
    /// This process's aggregator, when it runs one.
    pub aggregator: Option<JoinHandle<()>>,
    /// Where `/metrics` is served (`metrics.listen`), when it is.
    pub metrics_addr: Option<SocketAddr>,
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
        Self::start_with(config, listener, None).await
    }

    /// Like [`Mesh::start_on`], with the history store given instead of built
    /// from config (tests use a store they can make fail).
    pub async fn start_with(
        config: Config,
        listener: TcpListener,
        history: Option<Arc<dyn tickmesh_history::CandleStore>>,
    ) -> anyhow::Result<Mesh> {
        let addr = listener.local_addr()?;
        let metrics_listener = crate::metrics::bind(&config).await?;
        let shutdown = CancellationToken::new();
        let redis = RedisHandle::new(&config.redis).map_err(|e| anyhow::anyhow!("{e}"))?;
        // A TLS handshake that fails or refused credentials stop the start;
        // a Redis that is down does not.
        redis
            .check_at_start()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let admin = AdminAuth::new(&config.auth.admin_token);
        if admin.is_open() {
            tracing::warn!(
                "no admin token configured (auth.admin_token): admin RPCs are open to every caller; set one outside development"
            );
        }

        // One ScyllaDB session for every store of this process that lives
        // there; a cluster that cannot be reached stops the start here.
        let scylla = if scylla_needed(&config, history.is_none()) {
            Some(connect_scylla(&config.history).await?)
        } else {
            None
        };

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        let mut names: Vec<&'static str> = Vec::new();

        let mut marketfeed = None;
        if config.services.is_enabled("marketfeed") {
            let feed = MarketFeed::new(config.marketfeed.clone(), redis.clone(), shutdown.clone());
            if let Err(e) = check_durable_acks(&feed, &config).await {
                shutdown.cancel();
                return Err(e);
            }
            routes.add_service(tickmesh_marketfeed::grpc::server(
                feed.clone(),
                admin.clone(),
                config.server.max_message_bytes,
            ));
            names.push(tickmesh_marketfeed::SERVICE_NAME);
            marketfeed = Some(feed);
        }
        let mut feeds = None;
        if !config.feeds.is_empty() {
            let Some(marketfeed) = &marketfeed else {
                shutdown.cancel();
                anyhow::bail!(
                    "[[feeds]] are configured but the marketfeed service is not enabled in this process (services.enabled): feeds publish through it"
                );
            };
            let specs = config
                .feeds
                .iter()
                .map(tickmesh_feeds::from_config::spec)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let running = tickmesh_feeds::Feeds::start(
                specs,
                marketfeed.clone(),
                &instance_id(addr),
                shutdown.clone(),
            );
            routes.add_service(tickmesh_feeds::grpc::server(
                running.clone(),
                config.server.max_message_bytes,
            ));
            names.push(tickmesh_feeds::grpc::SERVICE_NAME);
            feeds = Some(running);
        }
        let mut pollers = Vec::new();
        if !config.pollers.is_empty() {
            let Some(marketfeed) = &marketfeed else {
                shutdown.cancel();
                anyhow::bail!(
                    "[[pollers]] are configured but the marketfeed service is not enabled in this process (services.enabled): quotes land in it"
                );
            };
            let mut sources: Vec<Arc<dyn tickmesh_marketfeed::quote_source::QuoteSource>> =
                Vec::new();
            for (i, poller) in config.pollers.iter().enumerate() {
                let spec =
                    match tickmesh_poller::from_config::spec(poller, |var| std::env::var(var).ok())
                    {
                        Ok(spec) => spec,
                        Err(e) => {
                            shutdown.cancel();
                            anyhow::bail!("invalid setting `pollers[{i}].{e}`");
                        }
                    };
                if let Some(v) = spec.violations(&format!("pollers[{i}].")).first() {
                    shutdown.cancel();
                    anyhow::bail!("invalid setting `{}`: {}", v.field, v.description);
                }
                let running = tickmesh_poller::Poller::start(
                    spec,
                    marketfeed.clone(),
                    &instance_id(addr),
                    shutdown.clone(),
                )
                .map_err(|e| anyhow::anyhow!("starting poller {:?}: {e}", poller.name))?;
                sources.push(Arc::new(tickmesh_poller::quote_source::PollerQuotes {
                    poller: running.clone(),
                    miss_wait: poller.miss_wait,
                }));
                pollers.push(running);
            }
            marketfeed.set_quote_sources(sources);
        }
        let mut candles = None;
        let mut aggregator = None;
        if config.services.is_enabled("candles") {
            let endpoint = if config.candles.marketfeed_endpoint.is_empty() {
                format!("http://{addr}")
            } else {
                config.candles.marketfeed_endpoint.clone()
            };
            let mut store = match history {
                Some(store) => Some(store),
                None => open_history(&config.history, scylla.as_ref()).await?,
            };
            if metrics_listener.is_some() {
                store = store.map(crate::metrics::metered);
            }
            let history = store.map(|store| tickmesh_candles::service::History {
                store,
                flush: tickmesh_candles::flusher::FlushConfig {
                    interval: config.history.flush_interval,
                    threshold: config.history.flush_threshold,
                    batch: config.history.flush_batch,
                    hot_candles: config.history.hot_candles,
                },
            });
            let service = CandleService::new(
                config.candles.clone(),
                redis.clone(),
                &endpoint,
                history,
                shutdown.clone(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            routes.add_service(tickmesh_candles::grpc::server(
                service.clone(),
                config.server.max_message_bytes,
            ));
            names.push(tickmesh_candles::SERVICE_NAME);
            if config.candles.aggregate {
                aggregator = Some(service.spawn_aggregator(instance_id(addr)));
            }
            candles = Some(service);
        }
        let mut ranking = None;
        if config.services.is_enabled("ranking") {
            let snapshots = open_ranking_snapshots(&config, scylla.as_ref()).await?;
            let service = Ranking::new(
                config.ranking.clone(),
                redis.clone(),
                snapshots,
                Arc::new(tickmesh_ranking::clock::SystemClock),
                shutdown.clone(),
            );
            // Ends with the shutdown token.
            service.spawn_maintenance();
            routes.add_service(tickmesh_ranking::grpc::server(
                service.clone(),
                admin.clone(),
                config.server.max_message_bytes,
            ));
            names.push(tickmesh_ranking::SERVICE_NAME);
            ranking = Some(service);
        }
        let mut queue = None;
        if config.services.is_enabled("queue") {
            let service = Queue::new(
                config.queue.clone(),
                redis.clone(),
                queue_keyring(&config.queue)?,
                Arc::new(tickmesh_queue::clock::SystemClock),
                Some(coupon_stock(&config, addr)?),
                shutdown.clone(),
            );
            // Ends with the shutdown token.
            service.spawn_scheduler();
            routes.add_service(tickmesh_queue::grpc::server(
                service.clone(),
                admin.clone(),
                config.server.max_message_bytes,
            ));
            names.push(tickmesh_queue::SERVICE_NAME);
            queue = Some(service);
        }
        let mut coupon = None;
        if config.services.is_enabled("coupon") {
            let service = Coupons::new(
                config.coupon.clone(),
                redis.clone(),
                open_coupon_store(&config, scylla.as_ref()).await?,
                Arc::new(tickmesh_coupon::clock::SystemClock),
                shutdown.clone(),
            );
            let ranking_endpoint = if config.coupon.ranking_endpoint.is_empty() {
                format!("http://{addr}")
            } else {
                config.coupon.ranking_endpoint.clone()
            };
            // The persist worker and the sold-out reporter end with the shutdown token.
            service
                .spawn_workers(&instance_id(addr), Some(&ranking_endpoint))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            routes.add_service(tickmesh_coupon::grpc::server(
                service.clone(),
                admin.clone(),
                config.server.max_message_bytes,
            ));
            names.push(tickmesh_coupon::SERVICE_NAME);
            coupon = Some(service);
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

        let metrics_addr = match metrics_listener {
            Some(listener) => Some(crate::metrics::serve(
                listener,
                crate::metrics::Sources {
                    marketfeed: marketfeed.clone(),
                    candles: candles.clone(),
                    coupon: coupon.clone(),
                    queue: queue.clone(),
                    feeds: feeds.clone(),
                    pollers: pollers.clone(),
                    symbols: config.metrics.symbols.clone(),
                },
                shutdown.clone(),
            )?),
            None => None,
        };
        tracing::info!(%addr, services = ?names, redis = %redact(&config.redis.url), "mesh starting");
        let pages = config.server.chart.then(tickmesh_chart::router);
        if pages.is_some() {
            tracing::info!(url = %format!("http://{addr}/"), "chart page");
        }
        let server_config = config.server.clone();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            server::serve(&server_config, listener, routes, pages, token).await
        });
        Ok(Mesh {
            addr,
            shutdown,
            marketfeed,
            candles,
            ranking,
            coupon,
            queue,
            feeds,
            pollers,
            aggregator,
            metrics_addr,
            task,
        })
    }

    /// `http://addr`, for clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server stops (after `shutdown` is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.task.await.context("server task")?;
        if let Some(aggregator) = self.aggregator {
            let _ = aggregator.await;
        }
        result
    }

    /// Stops abruptly, as a killed process would: no lease is handed back.
    pub fn abort(self) {
        if let Some(aggregator) = &self.aggregator {
            aggregator.abort();
        }
        self.task.abort();
        // Background tasks (tailers, refreshers) follow the token.
        self.shutdown.cancel();
    }

    /// Shuts down gracefully and waits (the aggregator hands its leases back).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(aggregator) = self.aggregator {
            let _ = aggregator.await;
        }
        self.task.await.context("server task")?
    }
}

/// With `marketfeed.durable_acks`, refuses to start on a Redis that offers
/// no way to make a write durable. A Redis that cannot be reached yet does not
/// stop the start: each publish detects the mode first.
async fn check_durable_acks(feed: &MarketFeed, config: &Config) -> anyhow::Result<()> {
    if !config.marketfeed.durable_acks {
        return Ok(());
    }
    let wait = config.redis.connect_timeout + config.redis.response_timeout;
    match tokio::time::timeout(wait, feed.durable_ack_mode()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(tickmesh_core::Error::FailedPrecondition(reason))) => Err(anyhow::anyhow!(
            "{reason} (redis {})",
            redact(&config.redis.url)
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "durable acks: redis not reachable at start; the mode is detected before the first publish");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                wait_ms = wait.as_millis() as u64,
                "durable acks: redis did not answer at start; the mode is detected before the first publish"
            );
            Ok(())
        }
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

/// A name for this process among aggregator instances: host, pid, listen port.
pub fn instance_id(addr: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tickmesh".into());
    format!("{host}-{}-{}", std::process::id(), addr.port())
}

/// Whether a store the enabled services use lives in ScyllaDB: the candle
/// history (unless a store is given), ranking snapshots, coupon records.
pub fn scylla_needed(config: &Config, history_from_config: bool) -> bool {
    let enabled = |name: &str| config.services.is_enabled(name);
    (enabled("candles") && history_from_config && config.history.backend == "scylla")
        || (enabled("ranking")
            && config.ranking.snapshot_backend(&config.history) == StoreBackend::Scylla)
        || (enabled("coupon")
            && config.coupon.store_backend(&config.history) == StoreBackend::Scylla)
}

/// Connects to the ScyllaDB cluster of the `[history]` section (applying
/// the schema first when `history.scylla_apply_schema` is set) and checks
/// the schema version. The stores of one process share the session.
pub async fn connect_scylla(config: &HistoryConfig) -> anyhow::Result<ScyllaSession> {
    let scylla = scylla_config(config);
    let at = scylla.contact_points.join(", ");
    if config.scylla_apply_schema {
        let applied = tickmesh_scylla::apply_schema(&scylla)
            .await
            .with_context(|| {
                format!(
                    "applying deploy/scylla/schema.cql to ScyllaDB at {at} \
                     (history.scylla_apply_schema)"
                )
            })?;
        tracing::info!(statements = applied, keyspace = %scylla.keyspace, "scylla schema applied");
    }
    let session = ScyllaSession::connect(&scylla).await.with_context(|| {
        format!(
            "cannot open the ScyllaDB stores at {at} (history.scylla_contact_points, keyspace {})",
            scylla.keyspace
        )
    })?;
    tracing::info!(contact_points = %at, keyspace = %scylla.keyspace, "scylla connected");
    Ok(session)
}

/// The session to open a ScyllaDB store on: the shared one, or a new one.
async fn session_or_connect(
    config: &HistoryConfig,
    shared: Option<&ScyllaSession>,
) -> anyhow::Result<ScyllaSession> {
    match shared {
        Some(session) => Ok(session.clone()),
        None => connect_scylla(config).await,
    }
}

/// The history store the config names (`None` for backend "none"). For
/// "scylla" it opens on `scylla` (or connects when `None`).
pub async fn open_history(
    config: &HistoryConfig,
    scylla: Option<&ScyllaSession>,
) -> anyhow::Result<Option<Arc<dyn tickmesh_history::CandleStore>>> {
    Ok(match config.backend.as_str() {
        "embedded" => {
            let store =
                tickmesh_history::EmbeddedStore::open(std::path::Path::new(&config.embedded_path))
                    .with_context(|| {
                        format!(
                            "opening the embedded history store {} (history.embedded_path)",
                            config.embedded_path
                        )
                    })?;
            tracing::info!(path = %config.embedded_path, "history store: embedded");
            Some(Arc::new(store))
        }
        "scylla" => {
            let session = session_or_connect(config, scylla).await?;
            let store = tickmesh_scylla::ScyllaStore::open(&session)
                .await
                .context("opening the ScyllaDB candle store")?;
            tracing::info!(keyspace = %config.scylla_keyspace, "history store: scylla");
            Some(Arc::new(store))
        }
        _ => None,
    })
}

/// The durable store of closed leaderboard windows the config names
/// (`ranking.snapshot_store`; "history" follows `history.backend`).
pub async fn open_ranking_snapshots(
    config: &Config,
    scylla: Option<&ScyllaSession>,
) -> anyhow::Result<Option<Arc<dyn tickmesh_ranking::snapshot::SnapshotStore>>> {
    match config.ranking.snapshot_backend(&config.history) {
        StoreBackend::None => Ok(None),
        StoreBackend::Scylla => {
            let session = session_or_connect(&config.history, scylla).await?;
            let store = tickmesh_scylla::ScyllaSnapshotStore::open(&session)
                .await
                .context("opening the ScyllaDB ranking snapshot store")?;
            tracing::info!(keyspace = %config.history.scylla_keyspace, "ranking snapshots: scylla");
            Ok(Some(Arc::new(store)))
        }
        StoreBackend::Embedded => {
            let path = config.ranking.snapshot_file(&config.history);
            let store = tickmesh_ranking::snapshot::EmbeddedSnapshotStore::open(&path)
                .with_context(|| {
                    format!(
                        "opening the ranking snapshot store {} (ranking.snapshot_path)",
                        path.display()
                    )
                })?;
            tracing::info!(path = %path.display(), "ranking snapshots: embedded");
            Ok(Some(Arc::new(store)))
        }
    }
}

/// The keys that sign queue tokens. Without `queue.token_key` (development:
/// `serve` refuses to start so) a random key, with a warning.
pub fn queue_keyring(
    config: &tickmesh_runtime::config::QueueConfig,
) -> anyhow::Result<tickmesh_queue::token::Keyring> {
    if config.token_key.is_empty() {
        tracing::warn!(
            "no queue token key configured (queue.token_key): signing queue tokens with a random key; tokens will not survive a restart nor verify on other instances"
        );
        return Ok(tickmesh_queue::token::Keyring::random());
    }
    let keyring =
        tickmesh_queue::token::Keyring::new(&config.token_key, &config.previous_token_keys)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(key_id = %keyring.current_id(), previous = config.previous_token_keys.len(), "queue tokens signed");
    Ok(keyring)
}

/// The durable store of coupon campaigns and issuances the config names
/// (`coupon.store`; "history" follows `history.backend`).
pub async fn open_coupon_store(
    config: &Config,
    scylla: Option<&ScyllaSession>,
) -> anyhow::Result<Arc<dyn tickmesh_coupon::IssuanceStore>> {
    if config.coupon.store_backend(&config.history) == StoreBackend::Scylla {
        let session = session_or_connect(&config.history, scylla).await?;
        let store = tickmesh_scylla::ScyllaIssuanceStore::open(&session)
            .await
            .context("opening the ScyllaDB coupon issuance store")?;
        tracing::info!(keyspace = %config.history.scylla_keyspace, "coupon issuances: scylla");
        return Ok(Arc::new(store));
    }
    let path = config.coupon.store_file(&config.history);
    let store =
        tickmesh_coupon::embedded_store::EmbeddedIssuanceStore::open(&path).with_context(|| {
            format!(
                "opening the coupon issuance store {} (coupon.store_path)",
                path.display()
            )
        })?;
    tracing::info!(path = %path.display(), "coupon issuances: embedded");
    Ok(Arc::new(store))
}

/// Remaining stock of campaigns linked to queue rooms, from
/// CouponIssueService at `queue.coupon_endpoint` (this process by default).
pub fn coupon_stock(
    config: &Config,
    addr: SocketAddr,
) -> anyhow::Result<Arc<dyn tickmesh_queue::stock::StockSource>> {
    let endpoint = if config.queue.coupon_endpoint.is_empty() {
        format!("http://{addr}")
    } else {
        config.queue.coupon_endpoint.clone()
    };
    let stock = tickmesh_queue::stock::coupon::CouponStock::new(&endpoint)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(stock))
}

/// The ScyllaDB store's settings from the `[history]` section.
pub fn scylla_config(config: &HistoryConfig) -> tickmesh_scylla::ScyllaConfig {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    tickmesh_scylla::ScyllaConfig {
        contact_points: config.scylla_contact_points.clone(),
        keyspace: config.scylla_keyspace.clone(),
        local_datacenter: some(&config.scylla_local_datacenter),
        replication: config.scylla_replication.clone(),
        username: some(&config.scylla_username),
        password: some(&config.scylla_password),
        tls: some(&config.scylla_tls_ca_file).map(|ca| tickmesh_scylla::TlsConfig {
            ca_file: ca.into(),
            cert_file: some(&config.scylla_tls_cert_file).map(Into::into),
            key_file: some(&config.scylla_tls_key_file).map(Into::into),
            verify_hostname: config.scylla_tls_verify_hostname,
        }),
        ..Default::default()
    }
}
