//! Configuration: built-in defaults < TOML file < `TICKMESH_*` environment
//! variables < command-line flags, validated once at start.
//!
//! Environment variables name a key as `TICKMESH_<SECTION>_<KEY>` in capitals,
//! e.g. `TICKMESH_REDIS_URL` or `TICKMESH_SERVER_MAX_MESSAGE_BYTES` (section
//! names contain no underscore, so the first one after the section ends it).
//! Lists are written comma-separated: `TICKMESH_SERVICES_ENABLED=marketfeed`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickmesh_core::duration::serde_human;

/// Names of the services a process can run.
pub const KNOWN_SERVICES: &[&str] = &["marketfeed", "candles", "ranking", "coupon", "queue"];

/// Environment variables with this prefix are settings.
pub const ENV_PREFIX: &str = "TICKMESH_";
/// Environment variables that are not settings: the config file path and the
/// test harness's switches.
const ENV_NOT_SETTINGS: &[&str] = &["TICKMESH_CONFIG", "TICKMESH_LOG"];
const ENV_TEST_PREFIX: &str = "TICKMESH_TEST_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub services: ServicesConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub telemetry: TelemetryConfig,
    pub marketfeed: MarketFeedConfig,
    pub candles: CandlesConfig,
    pub history: HistoryConfig,
    pub ranking: RankingConfig,
    pub coupon: CouponConfig,
    pub queue: QueueConfig,
    /// `[metrics]`: the Prometheus endpoint (see [`crate::metrics`]).
    pub metrics: crate::metrics::MetricsConfig,
    /// `[[feeds]]`: venue connections this process runs (see
    /// [`crate::feeds_config`]); empty by default.
    pub feeds: Vec<crate::feeds_config::FeedConfig>,
    /// `[[pollers]]`: quote upstreams this process polls (see
    /// [`crate::pollers_config`]); empty by default.
    pub pollers: Vec<crate::pollers_config::PollerConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the gRPC server binds; every enabled service shares it.
    pub listen: String,
    /// How long in-flight calls get to finish after SIGTERM/SIGINT.
    #[serde(with = "serde_human")]
    pub grace_period: Duration,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Connections are closed (gracefully) after this age, so clients
    /// rebalance across instances.
    #[serde(with = "serde_human")]
    pub max_connection_age: Duration,
    /// HTTP/2 keepalive ping interval.
    #[serde(with = "serde_human")]
    pub keepalive_interval: Duration,
    /// A connection whose ping is not answered within this time is closed.
    #[serde(with = "serde_human")]
    pub keepalive_timeout: Duration,
    /// Concurrent streams (calls) per connection.
    pub max_concurrent_streams: u32,
    /// Browsers may call every service over gRPC-Web (HTTP/1.1 or HTTP/2)
    /// on the same port as gRPC.
    pub grpc_web: bool,
    /// Origins (`scheme://host[:port]`, `:*` for any port, or `"*"`) whose
    /// pages may call the mesh from a browser (CORS). None by default; dev
    /// mode allows localhost pages.
    #[serde(deserialize_with = "list_or_csv")]
    pub cors_allowed_origins: Vec<String>,
    /// Serve the chart page (candles of any symbol, live) at `/` and
    /// `/chart` on the same port. It calls this process over gRPC-Web, so
    /// it needs `grpc_web` and the marketfeed and candles services here.
    /// Dev mode turns it on.
    pub chart: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            grace_period: Duration::from_secs(10),
            max_message_bytes: 16 * 1024 * 1024,
            max_connection_age: Duration::from_secs(30 * 60),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 1024,
            grpc_web: true,
            cors_allowed_origins: Vec::new(),
            chart: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesConfig {
    /// Services this process serves; "all" means every one.
    #[serde(deserialize_with = "list_or_csv")]
    pub enabled: Vec<String>,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        Self {
            enabled: vec!["all".into()],
        }
    }
}

impl ServicesConfig {
    /// The enabled services, with "all" expanded.
    pub fn resolved(&self) -> Vec<&'static str> {
        KNOWN_SERVICES
            .iter()
            .copied()
            .filter(|known| self.enabled.iter().any(|e| e == "all" || e == known))
            .collect()
    }

    pub fn is_enabled(&self, name: &str) -> bool {
        self.resolved().contains(&name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`, `rediss://` for TLS, or `unix:///path/to/socket`;
    /// `redis+cluster://host1:port,host2:port` (`rediss+cluster://` for TLS)
    /// for a Redis Cluster.
    pub url: String,
    /// Seed nodes of a Redis Cluster (`["redis://h1:6379", "redis://h2:6379"]`,
    /// `rediss://` for TLS; user and password in the URLs). When set, `url`
    /// is not used.
    #[serde(deserialize_with = "list_or_csv")]
    pub cluster_nodes: Vec<String>,
    /// PEM file of the CA certificate(s) that signed the Redis servers'
    /// certificates, for `rediss://`; empty: the system's trust store.
    pub tls_ca_file: String,
    /// Client certificate (PEM) for mutual TLS (`tls-auth-clients yes`);
    /// requires `tls_key_file`.
    pub tls_cert_file: String,
    /// Unencrypted PEM private key of `tls_cert_file`; requires `tls_cert_file`.
    pub tls_key_file: String,
    /// Prefix of every key tickmesh writes, so several meshes can share a Redis.
    pub key_prefix: String,
    #[serde(with = "serde_human")]
    pub connect_timeout: Duration,
    #[serde(with = "serde_human")]
    pub response_timeout: Duration,
    /// How often readiness checks Redis.
    #[serde(with = "serde_human")]
    pub health_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            key_prefix: "tm".into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            health_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token admin RPCs require as `authorization: Bearer <token>`. Empty: admin
    /// RPCs are open (development only; the log says so at start).
    pub admin_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter, in `tracing` EnvFilter syntax (e.g. "info", "tickmesh=debug").
    pub log_level: String,
    /// "text" or "json".
    pub log_format: String,
    /// OTLP/gRPC endpoint of a collector, e.g. "http://127.0.0.1:4317". Empty:
    /// traces are not exported.
    pub otlp_endpoint: String,
    /// `service.name` of exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            log_format: "text".into(),
            otlp_endpoint: String::new(),
            service_name: "tickmesh".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarketFeedConfig {
    /// Trades kept per symbol in the Redis tick log (approximate trim). Older
    /// trades are reported to StreamTrades clients as gaps.
    pub tick_log_max_len: u64,
    /// Trade ids remembered per symbol for deduplication: a trade whose id is
    /// among the symbol's last `dedupe_window` accepted trades is a duplicate.
    pub dedupe_window: u64,
    /// Trades stamped further than this in the future are rejected.
    #[serde(with = "serde_human")]
    pub max_future_skew: Duration,
    /// Most trades in one PublishTrades call or Publish message.
    pub max_batch_trades: usize,
    /// Register unknown symbols on first trade (scales 8/8, UTC). For
    /// development; on by default in `tickmesh dev` (a file or the environment
    /// can still turn it off there).
    pub auto_register_instruments: bool,
    /// Default age past which GetQuotes flags a quote as stale.
    #[serde(with = "serde_human")]
    pub quote_stale_after: Duration,
    /// Most trades in one StreamTrades message.
    pub stream_batch_max: usize,
    /// Live trade batches buffered per streamed symbol per instance before a
    /// slow StreamTrades subscriber is moved to catch-up reads from the tick log.
    pub live_buffer: usize,
    /// How often each instance refreshes its instrument cache from Redis.
    #[serde(with = "serde_human")]
    pub instrument_refresh: Duration,
    /// Acknowledge published trades only once Redis has made them durable:
    /// `WAITAOF` on Redis 7.2+, the reply itself on an older Redis with
    /// `appendonly yes` and `appendfsync always`, `WAIT` for
    /// `durable_replicas`. The mechanism is detected from the server at start
    /// (and after Redis restarts); a server that offers none refuses the start.
    pub durable_acks: bool,
    /// Longest wait for `WAITAOF`/`WAIT` to confirm a write; past it the call
    /// fails with UNAVAILABLE (the trades may or may not be stored; re-sending
    /// is safe).
    #[serde(with = "serde_human")]
    pub durable_ack_timeout: Duration,
    /// Replicas that must hold a write before it is acknowledged (0: the local
    /// append-only file only). With durable_acks only.
    pub durable_replicas: u32,
}

impl Default for MarketFeedConfig {
    fn default() -> Self {
        Self {
            tick_log_max_len: 1_000_000,
            dedupe_window: 200_000,
            max_future_skew: Duration::from_secs(60),
            max_batch_trades: 10_000,
            auto_register_instruments: false,
            quote_stale_after: Duration::from_secs(60),
            stream_batch_max: 500,
            live_buffer: 64,
            instrument_refresh: Duration::from_secs(2),
            durable_acks: false,
            durable_ack_timeout: Duration::from_secs(2),
            durable_replicas: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandlesConfig {
    /// gRPC address of MarketFeedService for the aggregator's trade stream
    /// and instrument definitions, e.g. "http://marketfeed:50051". Empty: this
    /// process's own server.
    pub marketfeed_endpoint: String,
    /// Run the candle aggregator in this process (instances share the work
    /// through per-symbol leases).
    pub aggregate: bool,
    /// Trades up to this much older than the newest trade of their symbol
    /// still update (correct) their candle; older ones are counted and dropped.
    #[serde(with = "serde_human")]
    pub late_window: Duration,
    /// An open candle closes by the clock this long after its end when its
    /// symbol has had no trades for as long.
    #[serde(with = "serde_human")]
    pub close_grace: Duration,
    /// Aggregator lease per symbol; another instance takes over this long
    /// after the owner dies.
    #[serde(with = "serde_human")]
    pub lease_ttl: Duration,
    /// Candles kept in Redis per symbol and interval.
    pub candles_per_interval: u64,
    /// Entries kept per symbol in the candle updates log (how far back a
    /// SubscribeCandles cursor can resume).
    pub updates_max_len: u64,
    /// Update batches buffered per symbol for live subscribers before a slow
    /// one is served from the updates log instead.
    pub live_buffer: usize,
    /// How often the aggregator's self-check compares the candles that became
    /// final with the tick log and repairs them ("0s": off).
    #[serde(with = "serde_human")]
    pub verify_interval: Duration,
}

impl Default for CandlesConfig {
    fn default() -> Self {
        Self {
            marketfeed_endpoint: String::new(),
            aggregate: true,
            late_window: Duration::from_secs(300),
            close_grace: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(6),
            candles_per_interval: 10_000,
            updates_max_len: 100_000,
            live_buffer: 64,
            verify_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Long-term candle store: "embedded" (a file, no server), "scylla", or
    /// "none" (Redis only: candles beyond `candles.candles_per_interval` are dropped).
    /// With "scylla", ranking snapshots and coupon records follow (their
    /// stores' "history" setting).
    pub backend: String,
    /// File of the embedded store.
    pub embedded_path: String,
    /// ScyllaDB contact points ("host:port").
    #[serde(deserialize_with = "list_or_csv")]
    pub scylla_contact_points: Vec<String>,
    pub scylla_keyspace: String,
    /// Preferred datacenter for token-aware, DC-local routing (LOCAL_QUORUM).
    pub scylla_local_datacenter: String,
    /// Replication of the keyspace when tickmesh creates it.
    pub scylla_replication: String,
    pub scylla_username: String,
    pub scylla_password: String,
    /// CA certificate (PEM) to connect over TLS; empty: plain TCP.
    pub scylla_tls_ca_file: String,
    /// Client certificate and key (PEM) for mutual TLS; empty: none.
    pub scylla_tls_cert_file: String,
    pub scylla_tls_key_file: String,
    /// Check the node certificate's host name (needs IP SANs: the driver connects by address).
    pub scylla_tls_verify_hostname: bool,
    /// Apply deploy/scylla/schema.cql at start, before connecting (idempotent).
    pub scylla_apply_schema: bool,
    /// How often closed candles move from Redis to the store.
    #[serde(with = "serde_human")]
    pub flush_interval: Duration,
    /// Flush at once when this many closed candles wait, whatever the interval.
    pub flush_threshold: u64,
    /// Most candles per store write.
    pub flush_batch: usize,
    /// Candles kept in Redis per symbol and interval once flushed (the hot tail).
    pub hot_candles: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            backend: "embedded".into(),
            embedded_path: "data/history.redb".into(),
            scylla_contact_points: vec!["127.0.0.1:9042".into()],
            scylla_keyspace: "tickmesh".into(),
            scylla_local_datacenter: String::new(),
            scylla_replication: "'class': 'NetworkTopologyStrategy', 'replication_factor': 3"
                .into(),
            scylla_username: String::new(),
            scylla_password: String::new(),
            scylla_tls_ca_file: String::new(),
            scylla_tls_cert_file: String::new(),
            scylla_tls_key_file: String::new(),
            scylla_tls_verify_hostname: false,
            scylla_apply_schema: false,
            flush_interval: Duration::from_secs(5),
            flush_threshold: 5_000,
            flush_batch: 5_000,
            hot_candles: 1_440,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankingConfig {
    /// How long a board remembers an event id: a retry within this time is a
    /// duplicate and counted once.
    #[serde(with = "serde_human")]
    pub dedupe_ttl: Duration,
    /// Most events in one RecordEvents call.
    pub max_batch_events: usize,
    /// How often each instance refreshes its board cache from Redis.
    #[serde(with = "serde_human")]
    pub board_refresh: Duration,
    /// How often an instance rolls hours off rolling 24 h windows and
    /// snapshots closed windows (any instance may; the work is idempotent).
    #[serde(with = "serde_human")]
    pub maintenance_interval: Duration,
    /// Durable store of closed-window snapshots: "history" (the history
    /// store's ScyllaDB when `history.backend` is "scylla", else the embedded
    /// file), "embedded" (always the file) or "none".
    pub snapshot_store: String,
    /// File of the embedded snapshot store. Empty: `ranking.redb` in the
    /// directory of `history.embedded_path`.
    pub snapshot_path: String,
    /// Members kept per closed-window snapshot (its top N).
    pub snapshot_top: u64,
    /// A window is snapshotted this long after it closes (in-flight events land first).
    #[serde(with = "serde_human")]
    pub snapshot_grace: Duration,
    /// WatchTop sends at most one message per watcher per this interval
    /// (changes in between are coalesced into the next one).
    #[serde(with = "serde_human")]
    pub watch_interval: Duration,
    /// Entries kept in each board's change stream (what WatchTop follows).
    pub changes_max_len: u64,
    /// Replicas that must have a write before RecordEvent(s), UpsertBoard
    /// and RemoveMember answer (`WAIT n` after it, on the board's master):
    /// "auto" (today: none, on a single node and on a Redis Cluster alike),
    /// "off", or a number.
    pub replica_acks: String,
    /// How long a write waits for its replicas; past it the call answers
    /// UNAVAILABLE (the write may stand: retrying with the same event ids
    /// is safe).
    #[serde(with = "serde_human")]
    pub replica_ack_timeout: Duration,
}

impl Default for RankingConfig {
    fn default() -> Self {
        Self {
            dedupe_ttl: Duration::from_secs(24 * 3600),
            max_batch_events: 10_000,
            board_refresh: Duration::from_secs(2),
            maintenance_interval: Duration::from_secs(1),
            snapshot_store: "history".into(),
            snapshot_path: String::new(),
            snapshot_top: 1000,
            snapshot_grace: Duration::from_secs(5),
            watch_interval: Duration::from_millis(100),
            changes_max_len: 1000,
            replica_acks: "auto".into(),
            replica_ack_timeout: Duration::from_secs(1),
        }
    }
}

/// Where a service's durable store lives once `"history"` is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreBackend {
    /// The ScyllaDB cluster of the `[history]` section.
    Scylla,
    /// A redb file of this process.
    Embedded,
    /// No durable store.
    None,
}

/// `"history"` follows `history.backend`: ScyllaDB for "scylla", the
/// embedded file otherwise (also for "none": the services still need one).
fn resolve_store(value: &str, history: &HistoryConfig) -> StoreBackend {
    match value {
        "history" if history.backend == "scylla" => StoreBackend::Scylla,
        "none" => StoreBackend::None,
        _ => StoreBackend::Embedded,
    }
}

impl RankingConfig {
    /// Replicas a write waits for: `replica_acks` resolved ("auto" is none
    /// on either topology: a lost event is re-sent with its id, and waiting
    /// costs every write a round trip to a replica). Validated at load.
    pub fn replicas_to_wait(&self) -> u32 {
        replicas_to_wait(&self.replica_acks, 0)
    }

    /// Where closed-window snapshots go (`snapshot_store` resolved).
    pub fn snapshot_backend(&self, history: &HistoryConfig) -> StoreBackend {
        resolve_store(&self.snapshot_store, history)
    }

    /// The embedded snapshot file: `snapshot_path`, or beside the history file.
    pub fn snapshot_file(&self, history: &HistoryConfig) -> std::path::PathBuf {
        if !self.snapshot_path.is_empty() {
            return self.snapshot_path.clone().into();
        }
        Path::new(&history.embedded_path)
            .parent()
            .unwrap_or(Path::new("."))
            .join("ranking.redb")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Key that signs queue tokens, as `<key id>:<secret>` (key id: 1-16 of
    /// `A-Z a-z 0-9 _ -`; secret: at least 32 bytes). Required by `serve` when
    /// the queue service is enabled; `tickmesh dev` makes a random one.
    pub token_key: String,
    /// Keys that signed tokens still in circulation (`<key id>:<secret>`):
    /// accepted, never used to sign. Keep a rotated-out key here for as long
    /// as its tokens live.
    #[serde(deserialize_with = "list_or_csv")]
    pub previous_token_keys: Vec<String>,
    /// How long a waiting token from Enter stays valid.
    #[serde(with = "serde_human")]
    pub waiting_token_ttl: Duration,
    /// How often each instance runs an admission pass over every room (any
    /// number of instances may; each pass is one atomic script per room).
    #[serde(with = "serde_human")]
    pub admission_interval: Duration,
    /// Most users one pass admits per room.
    pub admission_batch: u64,
    /// A waiter's position is re-read at most once per this interval (changes
    /// in between are coalesced); admissions are pushed at once.
    #[serde(with = "serde_human")]
    pub watch_interval: Duration,
    /// How often the remaining stock of linked campaigns is asked for.
    #[serde(with = "serde_human")]
    pub stock_check_interval: Duration,
    /// gRPC address of CouponIssueService for linked rooms, e.g.
    /// "http://coupon:50051". Empty: this process's own server.
    pub coupon_endpoint: String,
    /// Entries kept in each room's change stream (what WatchPosition follows).
    pub changes_max_len: u64,
    /// Replicas that must have a user's place before Enter and Leave answer,
    /// and an admission before its token is handed out (`WAIT n` on the
    /// room's master), and a room before CreateRoom and UpdateRoom answer:
    /// "auto" (today: none, on a single node and on a Redis Cluster alike),
    /// "off", or a number.
    pub replica_acks: String,
    /// How long a write waits for its replicas; past it the call answers
    /// UNAVAILABLE (the write may stand: entering or leaving again is safe).
    #[serde(with = "serde_human")]
    pub replica_ack_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            token_key: String::new(),
            previous_token_keys: Vec::new(),
            waiting_token_ttl: Duration::from_secs(24 * 3600),
            admission_interval: Duration::from_millis(100),
            admission_batch: 1000,
            watch_interval: Duration::from_millis(200),
            stock_check_interval: Duration::from_secs(1),
            coupon_endpoint: String::new(),
            changes_max_len: 1000,
            replica_acks: "auto".into(),
            replica_ack_timeout: Duration::from_secs(1),
        }
    }
}

impl QueueConfig {
    /// Replicas a write waits for: `replica_acks` resolved ("auto" is none
    /// on either topology: a lost place is entered again, and waiting costs
    /// every Enter a round trip to a replica). Validated at load.
    pub fn replicas_to_wait(&self) -> u32 {
        replicas_to_wait(&self.replica_acks, 0)
    }
}

/// A `replica_acks` value ("auto", "off" or a number) as replicas to wait
/// for, `auto` standing for "auto".
fn replicas_to_wait(value: &str, auto: u32) -> u32 {
    match value {
        "auto" => auto,
        "off" => 0,
        n => n.parse().unwrap_or(0),
    }
}

/// Checks a `replica_acks` value; returns the reason when refused.
fn check_replica_acks(value: &str) -> Result<(), String> {
    if matches!(value, "auto" | "off") || value.parse::<u32>().is_ok_and(|n| n <= 100) {
        return Ok(());
    }
    Err(format!(
        "{value:?} is not \"auto\", \"off\" or a number of replicas up to 100"
    ))
}

/// Checks a `<key id>:<secret>` token key; returns the reason when refused.
pub fn check_token_key(value: &str) -> Result<(), String> {
    let Some((id, secret)) = value.split_once(':') else {
        return Err("must be `<key id>:<secret>`".into());
    };
    if id.is_empty()
        || id.len() > 16
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Err("the key id must be 1-16 characters of A-Z a-z 0-9 _ -".into());
    }
    if secret.len() < 32 {
        return Err(format!(
            "the secret of key {id:?} must be at least 32 bytes (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CouponConfig {
    /// Durable store of campaigns and issuance records: "history" (the
    /// history store's ScyllaDB when `history.backend` is "scylla", shared by
    /// every instance; else the embedded file) or "embedded" (one redb file
    /// per process).
    pub store: String,
    /// File of the embedded store. Empty: `coupon.redb` in the directory of
    /// `history.embedded_path`.
    pub store_path: String,
    /// How often each instance's worker copies issuance logs to the store.
    #[serde(with = "serde_human")]
    pub persist_interval: Duration,
    /// Log entries per read and per store transaction.
    pub persist_batch: usize,
    /// Log entries a worker took but did not acknowledge within this time
    /// (it died) are taken over by another worker.
    #[serde(with = "serde_human")]
    pub claim_after: Duration,
    /// Longest time one instance may spend restoring a campaign's Redis state
    /// from the store before another may take over.
    #[serde(with = "serde_human")]
    pub rebuild_lock_ttl: Duration,
    /// gRPC address of RankingService for sold-out reports, e.g.
    /// "http://ranking:50051". Empty: this process's own server.
    pub ranking_endpoint: String,
    /// How often unreported sell-outs are sent to RankingService (retried until it answers).
    #[serde(with = "serde_human")]
    pub report_interval: Duration,
    /// WatchCampaign sends at most one message per watcher per interval
    /// (changes in between are coalesced into the next one).
    #[serde(with = "serde_human")]
    pub watch_interval: Duration,
    /// How often each instance reloads campaign definitions from the store.
    #[serde(with = "serde_human")]
    pub campaign_refresh: Duration,
    /// Replicas that must have an issuance before `Issue` answers it
    /// (`WAIT n` after the script, on the campaign's master): "auto" (1 on a
    /// Redis Cluster, where a master failover would otherwise lose the last
    /// acknowledged issuances; 0 on a single node), "off", or a number.
    pub replica_acks: String,
    /// How long an issuance waits for its replicas; past it the call
    /// answers UNAVAILABLE (the coupon may be issued: retry with the same
    /// request id, which answers the same).
    #[serde(with = "serde_human")]
    pub replica_ack_timeout: Duration,
}

impl Default for CouponConfig {
    fn default() -> Self {
        Self {
            store: "history".into(),
            store_path: String::new(),
            persist_interval: Duration::from_millis(50),
            persist_batch: 1000,
            claim_after: Duration::from_secs(5),
            rebuild_lock_ttl: Duration::from_secs(30),
            ranking_endpoint: String::new(),
            report_interval: Duration::from_secs(1),
            watch_interval: Duration::from_millis(100),
            campaign_refresh: Duration::from_secs(2),
            replica_acks: "auto".into(),
            replica_ack_timeout: Duration::from_secs(1),
        }
    }
}

impl CouponConfig {
    /// Replicas an issuance waits for: `replica_acks` resolved for the
    /// topology (validated at load).
    pub fn replicas_to_wait(&self, cluster: bool) -> u32 {
        match self.replica_acks.as_str() {
            "auto" => u32::from(cluster),
            "off" => 0,
            n => n.parse().unwrap_or(0),
        }
    }

    /// Where campaigns and issuance records go (`store` resolved).
    pub fn store_backend(&self, history: &HistoryConfig) -> StoreBackend {
        resolve_store(&self.store, history)
    }

    /// The embedded store file: `store_path`, or beside the history file.
    pub fn store_file(&self, history: &HistoryConfig) -> std::path::PathBuf {
        if !self.store_path.is_empty() {
            return self.store_path.clone().into();
        }
        Path::new(&history.embedded_path)
            .parent()
            .unwrap_or(Path::new("."))
            .join("coupon.redb")
    }
}

/// A configuration that could not be loaded, naming the key and where its value came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

impl Config {
    /// Loads defaults, then `file` (if any), then the `TICKMESH_*` variables of
    /// `env`, and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_with(file, env, |_| Ok(()))
    }

    /// Like [`Config::load`], with `overrides` (command-line flags) applied
    /// last, before validation.
    pub fn load_with(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: impl FnOnce(&mut Config) -> Result<(), ConfigError>,
    ) -> Result<Config, ConfigError> {
        Self::load_over(Config::default(), file, env, overrides)
    }

    /// Like [`Config::load_with`], with `base` in place of the built-in
    /// defaults: a mode's own defaults (dev mode's), which the file and the
    /// environment still override.
    pub fn load_over(
        base: Config,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: impl FnOnce(&mut Config) -> Result<(), ConfigError>,
    ) -> Result<Config, ConfigError> {
        let defaults = toml::Value::try_from(base)
            .map_err(|e| err(format!("internal: defaults do not serialize: {e}")))?;
        let mut merged = defaults.clone();
        let mut sources: BTreeMap<String, String> = BTreeMap::new();

        for path in file.map(config_files).unwrap_or_default() {
            merge_file(&path, &defaults, &mut merged, &mut sources)?;
        }

        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (name, raw) in env {
            if !name.starts_with(ENV_PREFIX)
                || name.starts_with(ENV_TEST_PREFIX)
                || ENV_NOT_SETTINGS.contains(&name.as_str())
            {
                continue;
            }
            if name == "TICKMESH_FEEDS" {
                let feeds = crate::feeds_config::parse_feed_list(&raw).map_err(|e| {
                    err(format!(
                        "invalid setting in environment variable {name}: {e}"
                    ))
                })?;
                let value = toml::Value::try_from(feeds)
                    .map_err(|e| err(format!("internal: feeds do not serialize: {e}")))?;
                sources.insert("feeds".into(), format!("environment variable {name}"));
                merged
                    .as_table_mut()
                    .expect("config is a table")
                    .insert("feeds".into(), value);
                continue;
            }
            let (section, key) = env_key(&name, &defaults)?;
            let template = &defaults[section.as_str()][key.as_str()];
            let value = env_value(&name, &raw, template)?;
            sources.insert(
                format!("{section}.{key}"),
                format!("environment variable {name}"),
            );
            merged[section.as_str()]
                .as_table_mut()
                .expect("sections are tables")
                .insert(key, value);
        }

        let mut config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            let from = sources
                .get(&path)
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default();
            err(format!("invalid setting `{path}`{from}: {}", e.inner()))
        })?;
        overrides(&mut config)?;
        config.validate().map_err(|(key, reason)| {
            let from = sources
                .get(&key)
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default();
            err(format!("invalid setting `{key}`{from}: {reason}"))
        })?;
        Ok(config)
    }

    /// Checks every rule a value must follow; returns the key and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: String| Err((key.to_string(), reason));
        self.metrics.validate()?;
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "server.listen",
                format!(
                    "{:?} is not an address like \"127.0.0.1:50051\"",
                    self.server.listen
                ),
            );
        }
        if !(4096..=256 * 1024 * 1024).contains(&self.server.max_message_bytes) {
            return bad(
                "server.max_message_bytes",
                "must be between 4096 and 268435456".into(),
            );
        }
        for (key, value) in [
            ("server.grace_period", self.server.grace_period),
            ("server.max_connection_age", self.server.max_connection_age),
            ("server.keepalive_interval", self.server.keepalive_interval),
            ("server.keepalive_timeout", self.server.keepalive_timeout),
            ("redis.connect_timeout", self.redis.connect_timeout),
            ("redis.response_timeout", self.redis.response_timeout),
            ("redis.health_interval", self.redis.health_interval),
            (
                "marketfeed.quote_stale_after",
                self.marketfeed.quote_stale_after,
            ),
            (
                "marketfeed.instrument_refresh",
                self.marketfeed.instrument_refresh,
            ),
        ] {
            if value.is_zero() {
                return bad(key, "must be more than zero".into());
            }
        }
        if self.server.max_concurrent_streams == 0 {
            return bad("server.max_concurrent_streams", "must be at least 1".into());
        }
        for origin in &self.server.cors_allowed_origins {
            if let Err(reason) = crate::web::OriginPattern::parse(origin) {
                return bad("server.cors_allowed_origins", reason);
            }
        }
        if self.services.enabled.is_empty() {
            return bad("services.enabled", "names no service".into());
        }
        for name in &self.services.enabled {
            if name != "all" && !KNOWN_SERVICES.contains(&name.as_str()) {
                return bad(
                    "services.enabled",
                    format!(
                        "unknown service {name:?} (known: all, {})",
                        KNOWN_SERVICES.join(", ")
                    ),
                );
            }
        }
        if self.server.chart {
            if !self.server.grpc_web {
                return bad(
                    "server.chart",
                    "the chart page calls the mesh over gRPC-Web: turn server.grpc_web on too"
                        .into(),
                );
            }
            if let Some(missing) = ["marketfeed", "candles"]
                .into_iter()
                .find(|s| !self.services.is_enabled(s))
            {
                return bad(
                    "server.chart",
                    format!(
                        "the chart page calls the {missing} service of this process: enable it (services.enabled) or turn the chart off"
                    ),
                );
            }
        }
        let topology = match crate::redis_conn::Topology::of(&self.redis) {
            Err(reason) => return bad("redis.url", reason),
            Ok(topology) => topology,
        };
        match &topology {
            crate::redis_conn::Topology::Single(url) => {
                if !["redis://", "rediss://", "unix://", "redis+unix://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                    || redis::Client::open(url.as_str()).is_err()
                {
                    return bad(
                        "redis.url",
                        format!(
                            "{url:?} is not a Redis URL (redis://host:port, rediss://…, unix:///path, redis+cluster://h1:port,h2:port)"
                        ),
                    );
                }
            }
            crate::redis_conn::Topology::Cluster(nodes) => {
                let field = if self.redis.cluster_nodes.is_empty() {
                    "redis.url"
                } else {
                    "redis.cluster_nodes"
                };
                if nodes
                    .iter()
                    .any(|n| crate::redis_tls::is_tls_url(n) != topology.is_tls())
                {
                    return bad(
                        field,
                        "mixes redis:// and rediss:// nodes: a cluster is reached over TLS or not, all nodes alike".into(),
                    );
                }
                for node in nodes {
                    if !(node.starts_with("redis://") || node.starts_with("rediss://"))
                        || redis::Client::open(node.as_str()).is_err()
                    {
                        return bad(
                            field,
                            format!(
                                "{node:?} is not a cluster node URL (redis://host:port or rediss://host:port)"
                            ),
                        );
                    }
                }
            }
        }
        if let Err(e) = crate::redis_tls::certificates(&self.redis, topology.is_tls()) {
            return bad(e.field, e.reason);
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}', ' ']) {
            return bad(
                "redis.key_prefix",
                "must be non-empty, without braces or spaces".into(),
            );
        }
        if !matches!(self.telemetry.log_format.as_str(), "text" | "json") {
            return bad(
                "telemetry.log_format",
                "must be \"text\" or \"json\"".into(),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).is_err() {
            return bad(
                "telemetry.log_level",
                "is not a valid log filter (e.g. \"info\")".into(),
            );
        }
        let endpoint = &self.telemetry.otlp_endpoint;
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return bad(
                "telemetry.otlp_endpoint",
                "must start with http:// or https://".into(),
            );
        }
        if self.telemetry.service_name.is_empty() {
            return bad("telemetry.service_name", "must not be empty".into());
        }
        let feed = &self.marketfeed;
        if feed.tick_log_max_len < 1000 {
            return bad(
                "marketfeed.tick_log_max_len",
                "must be at least 1000".into(),
            );
        }
        if feed.dedupe_window < 1000 {
            return bad("marketfeed.dedupe_window", "must be at least 1000".into());
        }
        if !(1..=100_000).contains(&feed.max_batch_trades) {
            return bad(
                "marketfeed.max_batch_trades",
                "must be between 1 and 100000".into(),
            );
        }
        if !(1..=10_000).contains(&feed.stream_batch_max) {
            return bad(
                "marketfeed.stream_batch_max",
                "must be between 1 and 10000".into(),
            );
        }
        if !(16..=1_000_000).contains(&feed.live_buffer) {
            return bad(
                "marketfeed.live_buffer",
                "must be between 16 and 1000000".into(),
            );
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&feed.durable_ack_timeout)
        {
            return bad(
                "marketfeed.durable_ack_timeout",
                "must be between 1ms and 60s".into(),
            );
        }
        if feed.durable_replicas > 100 {
            return bad("marketfeed.durable_replicas", "must be at most 100".into());
        }
        let history = &self.history;
        if !matches!(history.backend.as_str(), "embedded" | "scylla" | "none") {
            return bad(
                "history.backend",
                "must be \"embedded\", \"scylla\" or \"none\"".into(),
            );
        }
        if history.backend == "embedded" && history.embedded_path.is_empty() {
            return bad("history.embedded_path", "must name a file".into());
        }
        if history.backend == "scylla" && history.scylla_contact_points.is_empty() {
            return bad(
                "history.scylla_contact_points",
                "must name at least one host:port".into(),
            );
        }
        if !(1..=100_000).contains(&history.flush_batch) {
            return bad("history.flush_batch", "must be between 1 and 100000".into());
        }
        if history.hot_candles < 10 {
            return bad("history.hot_candles", "must be at least 10".into());
        }
        let ranking = &self.ranking;
        for (key, value) in [
            ("ranking.dedupe_ttl", ranking.dedupe_ttl),
            ("ranking.board_refresh", ranking.board_refresh),
            ("ranking.maintenance_interval", ranking.maintenance_interval),
            ("ranking.watch_interval", ranking.watch_interval),
            ("ranking.replica_ack_timeout", ranking.replica_ack_timeout),
        ] {
            if value.is_zero() {
                return bad(key, "must be more than zero".into());
            }
        }
        if !matches!(
            ranking.snapshot_store.as_str(),
            "history" | "embedded" | "none"
        ) {
            return bad(
                "ranking.snapshot_store",
                "must be \"history\", \"embedded\" or \"none\"".into(),
            );
        }
        if !(1..=100_000).contains(&ranking.max_batch_events) {
            return bad(
                "ranking.max_batch_events",
                "must be between 1 and 100000".into(),
            );
        }
        if !(1..=100_000).contains(&ranking.snapshot_top) {
            return bad(
                "ranking.snapshot_top",
                "must be between 1 and 100000".into(),
            );
        }
        if ranking.snapshot_grace > Duration::from_secs(1800) {
            return bad("ranking.snapshot_grace", "must be at most 30m".into());
        }
        if ranking.changes_max_len < 100 {
            return bad("ranking.changes_max_len", "must be at least 100".into());
        }
        if let Err(reason) = check_replica_acks(&ranking.replica_acks) {
            return bad("ranking.replica_acks", reason);
        }
        let queue = &self.queue;
        if !queue.token_key.is_empty()
            && let Err(reason) = check_token_key(&queue.token_key)
        {
            return bad("queue.token_key", reason);
        }
        for key in &queue.previous_token_keys {
            if let Err(reason) = check_token_key(key) {
                return bad("queue.previous_token_keys", reason);
            }
        }
        for (key, value) in [
            ("queue.waiting_token_ttl", queue.waiting_token_ttl),
            ("queue.admission_interval", queue.admission_interval),
            ("queue.watch_interval", queue.watch_interval),
            ("queue.stock_check_interval", queue.stock_check_interval),
            ("queue.replica_ack_timeout", queue.replica_ack_timeout),
        ] {
            if value.is_zero() {
                return bad(key, "must be more than zero".into());
            }
        }
        if !(1..=10_000).contains(&queue.admission_batch) {
            return bad(
                "queue.admission_batch",
                "must be between 1 and 10000".into(),
            );
        }
        if queue.changes_max_len < 100 {
            return bad("queue.changes_max_len", "must be at least 100".into());
        }
        if let Err(reason) = check_replica_acks(&queue.replica_acks) {
            return bad("queue.replica_acks", reason);
        }
        let endpoint = &queue.coupon_endpoint;
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return bad(
                "queue.coupon_endpoint",
                "must be empty or start with http:// or https://".into(),
            );
        }
        let coupon = &self.coupon;
        for (key, value) in [
            ("coupon.persist_interval", coupon.persist_interval),
            ("coupon.claim_after", coupon.claim_after),
            ("coupon.rebuild_lock_ttl", coupon.rebuild_lock_ttl),
            ("coupon.report_interval", coupon.report_interval),
            ("coupon.watch_interval", coupon.watch_interval),
            ("coupon.campaign_refresh", coupon.campaign_refresh),
            ("coupon.replica_ack_timeout", coupon.replica_ack_timeout),
        ] {
            if value.is_zero() {
                return bad(key, "must be more than zero".into());
            }
        }
        if !matches!(coupon.store.as_str(), "history" | "embedded") {
            return bad("coupon.store", "must be \"history\" or \"embedded\"".into());
        }
        if !matches!(coupon.replica_acks.as_str(), "auto" | "off")
            && !coupon.replica_acks.parse::<u32>().is_ok_and(|n| n <= 100)
        {
            return bad(
                "coupon.replica_acks",
                format!(
                    "{:?} is not \"auto\", \"off\" or a number of replicas up to 100",
                    coupon.replica_acks
                ),
            );
        }
        if !(1..=100_000).contains(&coupon.persist_batch) {
            return bad(
                "coupon.persist_batch",
                "must be between 1 and 100000".into(),
            );
        }
        let endpoint = &coupon.ranking_endpoint;
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return bad(
                "coupon.ranking_endpoint",
                "must be empty or start with http:// or https://".into(),
            );
        }
        let candles = &self.candles;
        let endpoint = &candles.marketfeed_endpoint;
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return bad(
                "candles.marketfeed_endpoint",
                "must be empty or start with http:// or https://".into(),
            );
        }
        if candles.lease_ttl < Duration::from_secs(1) {
            return bad("candles.lease_ttl", "must be at least 1s".into());
        }
        if candles.candles_per_interval < 100 {
            return bad(
                "candles.candles_per_interval",
                "must be at least 100".into(),
            );
        }
        if candles.updates_max_len < 1000 {
            return bad("candles.updates_max_len", "must be at least 1000".into());
        }
        if !(4..=1_000_000).contains(&candles.live_buffer) {
            return bad(
                "candles.live_buffer",
                "must be between 4 and 1000000".into(),
            );
        }
        if !candles.verify_interval.is_zero()
            && candles.verify_interval < Duration::from_millis(100)
        {
            return bad(
                "candles.verify_interval",
                "must be 0s (off) or at least 100ms".into(),
            );
        }
        let mut pollers = std::collections::HashSet::new();
        for (i, poller) in self.pollers.iter().enumerate() {
            if let Some((key, reason)) = poller.violation() {
                return bad(&format!("pollers[{i}].{key}"), reason);
            }
            if !pollers.insert(poller.name.as_str()) {
                return bad(
                    &format!("pollers[{i}].name"),
                    format!("{:?} names two pollers", poller.name),
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut fed: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for (i, feed) in self.feeds.iter().enumerate() {
            if let Some((key, reason)) = feed.violation() {
                return bad(&format!("feeds[{i}].{key}"), reason);
            }
            for symbol in &feed.symbols {
                let mesh_symbol = format!("{}{symbol}", feed.symbol_prefix);
                if let Some(other) = fed.insert(mesh_symbol.clone(), feed.resolved_name()) {
                    return bad(
                        &format!("feeds[{i}].symbols"),
                        format!(
                            "{symbol:?} would be the mesh symbol {mesh_symbol:?}, which feed {other:?} already feeds (two venues' trades in one symbol's candles); name it once, or give one feed a `symbol_prefix` such as \"{}:\" (in the config file's [[feeds]])",
                            feed.venue
                        ),
                    );
                }
            }
            if !names.insert(feed.resolved_name()) {
                return bad(
                    &format!("feeds[{i}].name"),
                    format!(
                        "{:?} names two feeds; give each its own `name`",
                        feed.resolved_name()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The address to listen on (validated).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen
            .parse()
            .expect("server.listen is validated at load")
    }

    /// The effective configuration as TOML, with the admin token masked.
    pub fn to_toml_masked(&self) -> String {
        let mut copy = self.clone();
        if !copy.auth.admin_token.is_empty() {
            copy.auth.admin_token = "********".into();
        }
        if !copy.history.scylla_password.is_empty() {
            copy.history.scylla_password = "********".into();
        }
        if let Some((id, _)) = copy.queue.token_key.split_once(':') {
            copy.queue.token_key = format!("{id}:********");
        }
        for key in &mut copy.queue.previous_token_keys {
            if let Some((id, _)) = key.split_once(':') {
                *key = format!("{id}:********");
            }
        }
        // A poller's app key and secret, unless they only name a variable.
        for poller in &mut copy.pollers {
            for secret in [&mut poller.app_key, &mut poller.app_secret] {
                if !secret.is_empty() && !secret.starts_with("env:") {
                    *secret = "********".into();
                }
            }
        }
        toml::to_string_pretty(&copy).unwrap_or_default()
    }
}

fn section_names(defaults: &toml::Value) -> String {
    defaults
        .as_table()
        .map(|t| t.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn env_key(name: &str, defaults: &toml::Value) -> Result<(String, String), ConfigError> {
    let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
    let unknown = || {
        err(format!(
            "unknown setting in environment variable {name} (settings are TICKMESH_<SECTION>_<KEY>, e.g. TICKMESH_REDIS_URL; sections: {})",
            section_names(defaults)
        ))
    };
    let (section, key) = rest.split_once('_').ok_or_else(unknown)?;
    let known = defaults.get(section).and_then(|s| s.get(key)).is_some();
    if !known {
        return Err(unknown());
    }
    Ok((section.to_string(), key.to_string()))
}

/// Reads an environment value as the type the key has in the defaults.
fn env_value(name: &str, raw: &str, template: &toml::Value) -> Result<toml::Value, ConfigError> {
    let wrong = |what: &str| {
        err(format!(
            "invalid setting in environment variable {name}: {raw:?} is not {what}"
        ))
    };
    Ok(match template {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| wrong("a whole number"))?)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(wrong("true or false")),
        }),
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| wrong("a number"))?)
        }
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

pub(crate) fn list_or_csv<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => csv
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// `--config` / `TICKMESH_CONFIG`: one file, or several separated by commas
/// (a base file and an overlay's additions); later files win key by key, and
/// a `[[feeds]]` or `[[pollers]]` list in a later file replaces the earlier.
fn config_files(list: &Path) -> Vec<PathBuf> {
    let text = list.to_string_lossy();
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Config sections that are lists of tables (`[[feeds]]`), not `[section]`s.
const LIST_SECTIONS: &[&str] = &["feeds", "pollers"];

/// Merges one config file over `merged`, noting where each key came from.
fn merge_file(
    path: &Path,
    defaults: &toml::Value,
    merged: &mut toml::Value,
    sources: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read config file {}: {e}", path.display())))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| err(format!("config file {}: {e}", path.display())))?;
    for (section, value) in table {
        if LIST_SECTIONS.contains(&section.as_str()) {
            let toml::Value::Array(_) = value else {
                return Err(err(format!(
                    "config file {}: `{section}` must be [[{section}]] tables",
                    path.display()
                )));
            };
            sources.insert(section.clone(), format!("file {}", path.display()));
            merged
                .as_table_mut()
                .expect("config is a table")
                .insert(section, value);
            continue;
        }
        let toml::Value::Table(keys) = value else {
            return Err(err(format!(
                "config file {}: `{section}` must be a [section]",
                path.display()
            )));
        };
        for key in keys.keys() {
            sources.insert(
                format!("{section}.{key}"),
                format!("file {}", path.display()),
            );
        }
        let slot = merged
            .as_table_mut()
            .and_then(|t| t.get_mut(&section))
            .ok_or_else(|| {
                err(format!(
                    "config file {}: unknown section [{section}] (known: {})",
                    path.display(),
                    section_names(defaults)
                ))
            })?;
        let slot = slot.as_table_mut().expect("sections are tables");
        for (key, value) in keys {
            slot.insert(key, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_modes_defaults_sit_under_the_file_and_the_environment() {
        let mut dev = Config::default();
        dev.marketfeed.auto_register_instruments = true;
        let c = Config::load_over(dev.clone(), None, env(&[]), |_| Ok(())).unwrap();
        assert!(c.marketfeed.auto_register_instruments, "the mode's default");
        let c = Config::load_over(
            dev.clone(),
            None,
            env(&[("TICKMESH_MARKETFEED_AUTO_REGISTER_INSTRUMENTS", "false")]),
            |_| Ok(()),
        )
        .unwrap();
        assert!(
            !c.marketfeed.auto_register_instruments,
            "the environment wins"
        );
        let file = write("[marketfeed]\nauto_register_instruments = false\n");
        let c = Config::load_over(dev, Some(&file.0), env(&[]), |_| Ok(())).unwrap();
        assert!(!c.marketfeed.auto_register_instruments, "the file wins");
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A tiny temp file helper (no extra dependency).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("tickmesh-config-{}-{n}.toml", std::process::id()));
                std::fs::write(&path, text).unwrap();
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen_addr().to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn the_documented_example_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/tickmesh.example.toml");
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(
            config,
            Config::default(),
            "the example documents the defaults"
        );
    }

    #[test]
    fn feeds_from_the_file_and_the_environment() {
        let file = write(
            "[[feeds]]\nvenue = \"binance\"\nsymbols = [\"BTCUSDT\", \"ETHUSDT\"]\nstall_timeout = \"10s\"\n\n[[feeds]]\nvenue = \"bybit\"\ncategory = \"linear\"\nsymbols = [\"BTCUSDT\"]\nsymbol_prefix = \"bybit:\"\n",
        );
        let config = Config::load(Some(&file.0), env(&[])).unwrap();
        assert_eq!(config.feeds.len(), 2);
        assert_eq!(config.feeds[0].stall_timeout, Duration::from_secs(10));
        assert_eq!(config.feeds[1].resolved_name(), "bybit-linear");
        assert_eq!(config.feeds[1].symbol_prefix, "bybit:");
        // The environment replaces the file's list.
        let config = Config::load(
            Some(&file.0),
            env(&[("TICKMESH_FEEDS", "upbit:KRW-BTC,KRW-ETH")]),
        )
        .unwrap();
        assert_eq!(config.feeds.len(), 1);
        assert_eq!(config.feeds[0].venue, "upbit");
        let e = Config::load(None, env(&[("TICKMESH_FEEDS", "kraken:XBTUSD")])).unwrap_err();
        assert!(
            e.0.contains("feeds[0].venue") && e.0.contains("kraken"),
            "{}",
            e.0
        );
        let e = Config::load(
            None,
            env(&[("TICKMESH_FEEDS", "binance:BTCUSDT;binance:ETHUSDT")]),
        )
        .unwrap_err();
        assert!(e.0.contains("feeds[1].name"), "{}", e.0);
        // Two venues' BTCUSDT would mix in one symbol's candles.
        let e = Config::load(
            None,
            env(&[("TICKMESH_FEEDS", "binance:BTCUSDT;bybit:ETHUSDT,BTCUSDT")]),
        )
        .unwrap_err();
        assert!(
            e.0.contains("feeds[1].symbols") && e.0.contains("symbol_prefix"),
            "{}",
            e.0
        );
        let e =
            Config::load(None, env(&[("TICKMESH_FEEDS", "upbit:KRW-BTC,KRW-BTC")])).unwrap_err();
        assert!(e.0.contains("feeds[0].symbols"), "{}", e.0);
        let file = write(
            "[[feeds]]\nvenue = \"binance\"\nsymbols = [\"BTCUSDT\"]\n[[feeds]]\nvenue = \"bybit\"\nsymbols = [\"BTCUSDT\"]\nsymbol_prefix = \"bybit:\"\n",
        );
        let config = Config::load(Some(&file.0), env(&[])).unwrap();
        assert_eq!(config.feeds.len(), 2);
        // `[[feeds.instruments]]` belongs to the feed above it.
        let file = write(
            "[[feeds]]\nvenue = \"binance\"\nsymbols = [\"BTCUSDT\"]\n[[feeds.instruments]]\nsymbol = \"BTCUSDT\"\nprice_scale = 2\nquantity_scale = 5\n",
        );
        let config = Config::load(Some(&file.0), env(&[])).unwrap();
        assert_eq!(config.feeds[0].instruments.len(), 1);
        assert_eq!(config.feeds[0].instruments[0].quantity_scale, 5);
        let file = write(
            "[[feeds]]\nvenue = \"binance\"\nsymbols = [\"BTCUSDT\"]\n[[feeds.instruments]]\nsymbol = \"ETHUSDT\"\nprice_scale = 2\nquantity_scale = 5\n",
        );
        let e = Config::load(Some(&file.0), env(&[])).unwrap_err();
        assert!(
            e.0.contains("feeds[0].instruments") && e.0.contains("ETHUSDT"),
            "{}",
            e.0
        );
    }

    #[test]
    fn pollers_from_a_file_and_several_files_in_order() {
        let base = write(
            "[server]\nlisten = \"0.0.0.0:6000\"\n[[feeds]]\nvenue = \"binance\"\nsymbols = [\"BTCUSDT\"]\n",
        );
        let extra = write(
            "[server]\ngrace_period = \"3s\"\n[[pollers]]\nname = \"kis\"\nbase_url = \"https://openapi.koreainvestment.com:9443\"\napp_key = \"env:KIS_APP_KEY\"\napp_secret = \"env:KIS_APP_SECRET\"\nsymbols = [\"005930\"]\nsymbol_prefix = \"krx:\"\nrequests_per_second = 18\n",
        );
        let config = Config::load(Some(&extra.0), env(&[])).unwrap();
        assert_eq!(config.pollers.len(), 1, "[[pollers]] in a file");
        assert_eq!(config.pollers[0].requests_per_second, 18);
        let both = std::path::PathBuf::from(format!("{},{}", base.0.display(), extra.0.display()));
        let config = Config::load(Some(&both), env(&[])).unwrap();
        assert_eq!(
            config.server.listen.to_string(),
            "0.0.0.0:6000",
            "the first file"
        );
        assert_eq!(
            config.server.grace_period,
            Duration::from_secs(3),
            "the second"
        );
        assert_eq!((config.feeds.len(), config.pollers.len()), (1, 1));
        let mut plain = config.clone();
        plain.pollers[0].app_secret = "s3cr3t".into();
        let shown = plain.to_toml_masked();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("env:KIS_APP_KEY"),
            "a variable's name is no secret"
        );
        let bad = write("pollers = 3\n");
        let e = Config::load(Some(&bad.0), env(&[])).unwrap_err();
        assert!(e.0.contains("[[pollers]]"), "{}", e.0);
        let missing = std::path::PathBuf::from(format!("{},/nope/x.toml", base.0.display()));
        let e = Config::load(Some(&missing), env(&[])).unwrap_err();
        assert!(e.0.contains("/nope/x.toml"), "{}", e.0);
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = write(
            "[server]\nlisten = \"0.0.0.0:6000\"\ngrace_period = \"3s\"\n[redis]\nurl = \"redis://10.0.0.1:6380\"\n",
        );
        let config = Config::load_with(
            Some(&file.0),
            env(&[
                ("TICKMESH_SERVER_LISTEN", "127.0.0.1:7000"),
                ("TICKMESH_MARKETFEED_DEDUPE_WINDOW", "5000"),
                ("TICKMESH_SERVICES_ENABLED", "marketfeed"),
                ("PATH", "/bin"),
            ]),
            |c| {
                c.redis.key_prefix = "flag".into();
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:7000");
        assert_eq!(config.server.grace_period, Duration::from_secs(3));
        assert_eq!(config.redis.url, "redis://10.0.0.1:6380");
        assert_eq!(config.redis.key_prefix, "flag");
        assert_eq!(config.marketfeed.dedupe_window, 5000);
        assert_eq!(config.services.enabled, vec!["marketfeed".to_string()]);
    }

    #[test]
    fn the_chart_needs_grpc_web_and_its_services() {
        let chart_on = |more: &[(&str, &str)]| {
            let mut vars = vec![("TICKMESH_SERVER_CHART", "true")];
            vars.extend_from_slice(more);
            Config::load(None, env(&vars))
        };
        assert!(chart_on(&[]).unwrap().server.chart);
        let e = chart_on(&[("TICKMESH_SERVER_GRPC_WEB", "false")]).unwrap_err();
        assert!(
            e.0.contains("`server.chart`") && e.0.contains("grpc_web"),
            "{e}"
        );
        let e = chart_on(&[("TICKMESH_SERVICES_ENABLED", "marketfeed,ranking")]).unwrap_err();
        assert!(
            e.0.contains("`server.chart`") && e.0.contains("candles"),
            "{e}"
        );
        assert!(chart_on(&[("TICKMESH_SERVICES_ENABLED", "marketfeed,candles")]).is_ok());
    }

    #[test]
    fn errors_name_the_key_and_its_source() {
        let e =
            Config::load(None, env(&[("TICKMESH_SERVER_MAX_MESSAGE_BYTES", "lots")])).unwrap_err();
        assert!(e.0.contains("TICKMESH_SERVER_MAX_MESSAGE_BYTES"), "{e}");

        let e = Config::load(None, env(&[("TICKMESH_SERVER_LISTN", "x")])).unwrap_err();
        assert!(
            e.0.contains("unknown setting") && e.0.contains("TICKMESH_SERVER_LISTN"),
            "{e}"
        );

        let e = Config::load(None, env(&[("TICKMESH_SERVER_LISTEN", "nowhere")])).unwrap_err();
        assert!(
            e.0.contains("`server.listen`") && e.0.contains("TICKMESH_SERVER_LISTEN"),
            "{e}"
        );

        let file = write("[server]\ngrace_period = \"soon\"\n");
        let e = Config::load(Some(&file.0), env(&[])).unwrap_err();
        assert!(
            e.0.contains("server.grace_period") && e.0.contains("file"),
            "{e}"
        );

        let file = write("[server]\nlistenn = \"1.2.3.4:5\"\n");
        let e = Config::load(Some(&file.0), env(&[])).unwrap_err();
        assert!(e.0.contains("listenn"), "{e}");

        let file = write("[nope]\na = 1\n");
        let e = Config::load(Some(&file.0), env(&[])).unwrap_err();
        assert!(e.0.contains("unknown section [nope]"), "{e}");

        let e = Config::load(
            None,
            env(&[("TICKMESH_SERVICES_ENABLED", "marketfeed,candlez")]),
        )
        .unwrap_err();
        assert!(
            e.0.contains("services.enabled") && e.0.contains("candlez"),
            "{e}"
        );

        let e = Config::load(None, env(&[("TICKMESH_REDIS_URL", "http://x")])).unwrap_err();
        assert!(e.0.contains("redis.url"), "{e}");

        let e = Config::load(
            None,
            env(&[("TICKMESH_MARKETFEED_AUTO_REGISTER_INSTRUMENTS", "maybe")]),
        )
        .unwrap_err();
        assert!(e.0.contains("true or false"), "{e}");
    }

    #[test]
    fn redis_tls_settings_from_the_environment_are_checked() {
        let e = Config::load(
            None,
            env(&[
                ("TICKMESH_REDIS_URL", "rediss://127.0.0.1:6380"),
                ("TICKMESH_REDIS_TLS_KEY_FILE", "/etc/tickmesh/client.key"),
            ]),
        )
        .unwrap_err();
        assert!(
            e.0.contains("redis.tls_cert_file") && e.0.contains("go together"),
            "{e}"
        );

        let e = Config::load(
            None,
            env(&[("TICKMESH_REDIS_TLS_CA_FILE", "/etc/tickmesh/ca.pem")]),
        )
        .unwrap_err();
        assert!(
            e.0.contains("redis.tls_ca_file") && e.0.contains("rediss://"),
            "a CA for a plain-TCP url: {e}"
        );

        let e = Config::load(
            None,
            env(&[
                ("TICKMESH_REDIS_URL", "rediss+cluster://h1:7000,h2:7001"),
                ("TICKMESH_REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
            ]),
        )
        .unwrap_err();
        assert!(
            e.0.contains("redis.tls_ca_file") && e.0.contains("/nonexistent/ca.pem"),
            "{e}"
        );

        let e = Config::load(
            None,
            env(&[(
                "TICKMESH_REDIS_CLUSTER_NODES",
                "rediss://h1:7000,redis://h2:7001",
            )]),
        )
        .unwrap_err();
        assert!(
            e.0.contains("redis.cluster_nodes") && e.0.contains("mixes"),
            "{e}"
        );

        let ok = Config::load(
            None,
            env(&[(
                "TICKMESH_REDIS_CLUSTER_NODES",
                "rediss://u:p@h1:7000,rediss://u:p@h2:7001",
            )]),
        )
        .expect("rediss:// seeds without files trust the system store");
        assert!(crate::redis_conn::Topology::of(&ok.redis).unwrap().is_tls());
    }

    #[test]
    fn candles_verify_interval_is_read_from_env_and_checked() {
        let config =
            Config::load(None, env(&[("TICKMESH_CANDLES_VERIFY_INTERVAL", "0s")])).unwrap();
        assert!(config.candles.verify_interval.is_zero(), "0s turns it off");
        let config =
            Config::load(None, env(&[("TICKMESH_CANDLES_VERIFY_INTERVAL", "250ms")])).unwrap();
        assert_eq!(config.candles.verify_interval, Duration::from_millis(250));
        let e =
            Config::load(None, env(&[("TICKMESH_CANDLES_VERIFY_INTERVAL", "10ms")])).unwrap_err();
        assert!(
            e.0.contains("candles.verify_interval") && e.0.contains("at least 100ms"),
            "{e}"
        );
    }

    #[test]
    fn test_switches_and_the_config_path_are_not_settings() {
        Config::load(
            None,
            env(&[
                ("TICKMESH_CONFIG", "/x.toml"),
                ("TICKMESH_TEST_SCYLLA", "h:9042"),
            ]),
        )
        .unwrap();
    }

    #[test]
    fn queue_token_keys_are_checked_and_masked() {
        let secret = "0123456789abcdef0123456789abcdef";
        let config = Config::load(
            None,
            env(&[
                ("TICKMESH_QUEUE_TOKEN_KEY", &format!("k2:{secret}")),
                (
                    "TICKMESH_QUEUE_PREVIOUS_TOKEN_KEYS",
                    &format!("k1:{secret}"),
                ),
            ]),
        )
        .unwrap();
        assert_eq!(config.queue.previous_token_keys.len(), 1);
        let text = config.to_toml_masked();
        assert!(
            !text.contains(secret) && text.contains("k2:********"),
            "{text}"
        );

        let e = Config::load(None, env(&[("TICKMESH_QUEUE_TOKEN_KEY", "k1:short")])).unwrap_err();
        assert!(
            e.0.contains("queue.token_key") && e.0.contains("32 bytes"),
            "{e}"
        );
        let e = Config::load(None, env(&[("TICKMESH_QUEUE_TOKEN_KEY", secret)])).unwrap_err();
        assert!(e.0.contains("<key id>:<secret>"), "{e}");
        let e = Config::load(
            None,
            env(&[(
                "TICKMESH_QUEUE_PREVIOUS_TOKEN_KEYS",
                &format!("bad id:{secret}"),
            )]),
        )
        .unwrap_err();
        assert!(e.0.contains("queue.previous_token_keys"), "{e}");
    }

    #[test]
    fn durable_stores_follow_the_history_backend() {
        let config = Config::default();
        assert_eq!(
            config.ranking.snapshot_backend(&config.history),
            StoreBackend::Embedded
        );
        assert_eq!(
            config.coupon.store_backend(&config.history),
            StoreBackend::Embedded
        );
        let scylla = Config::load(None, env(&[("TICKMESH_HISTORY_BACKEND", "scylla")])).unwrap();
        assert_eq!(
            scylla.ranking.snapshot_backend(&scylla.history),
            StoreBackend::Scylla
        );
        assert_eq!(
            scylla.coupon.store_backend(&scylla.history),
            StoreBackend::Scylla
        );
        let pinned = Config::load(
            None,
            env(&[
                ("TICKMESH_HISTORY_BACKEND", "scylla"),
                ("TICKMESH_RANKING_SNAPSHOT_STORE", "none"),
                ("TICKMESH_COUPON_STORE", "embedded"),
            ]),
        )
        .unwrap();
        assert_eq!(
            pinned.ranking.snapshot_backend(&pinned.history),
            StoreBackend::None
        );
        assert_eq!(
            pinned.coupon.store_backend(&pinned.history),
            StoreBackend::Embedded
        );
        // Without a history store the services still keep theirs in a file.
        let none = Config::load(None, env(&[("TICKMESH_HISTORY_BACKEND", "none")])).unwrap();
        assert_eq!(
            none.coupon.store_backend(&none.history),
            StoreBackend::Embedded
        );
        for (key, value) in [
            ("TICKMESH_RANKING_SNAPSHOT_STORE", "scylla"),
            ("TICKMESH_COUPON_STORE", "none"),
        ] {
            let e = Config::load(None, env(&[(key, value)])).unwrap_err();
            assert!(e.0.contains("\"history\""), "{e}");
        }
    }

    #[test]
    fn durable_acks_from_env_and_their_limits() {
        let config = Config::load(None, env(&[])).unwrap();
        assert!(!config.marketfeed.durable_acks, "off unless asked for");
        let config = Config::load(
            None,
            env(&[
                ("TICKMESH_MARKETFEED_DURABLE_ACKS", "true"),
                ("TICKMESH_MARKETFEED_DURABLE_ACK_TIMEOUT", "750ms"),
                ("TICKMESH_MARKETFEED_DURABLE_REPLICAS", "2"),
            ]),
        )
        .unwrap();
        assert!(config.marketfeed.durable_acks);
        assert_eq!(
            config.marketfeed.durable_ack_timeout,
            Duration::from_millis(750)
        );
        assert_eq!(config.marketfeed.durable_replicas, 2);

        let e =
            Config::load(None, env(&[("TICKMESH_MARKETFEED_DURABLE_ACKS", "always")])).unwrap_err();
        assert!(
            e.0.contains("TICKMESH_MARKETFEED_DURABLE_ACKS") && e.0.contains("true or false"),
            "{e}"
        );
        for (value, ok) in [("0s", false), ("1ms", true), ("60s", true), ("61s", false)] {
            let loaded = Config::load(
                None,
                env(&[("TICKMESH_MARKETFEED_DURABLE_ACK_TIMEOUT", value)]),
            );
            assert_eq!(loaded.is_ok(), ok, "durable_ack_timeout = {value}");
            if let Err(e) = loaded {
                assert!(e.0.contains("`marketfeed.durable_ack_timeout`"), "{e}");
            }
        }
        let e = Config::load(
            None,
            env(&[("TICKMESH_MARKETFEED_DURABLE_REPLICAS", "101")]),
        )
        .unwrap_err();
        assert!(e.0.contains("`marketfeed.durable_replicas`"), "{e}");
        let file = write("[marketfeed]\ndurable_acks = true\ndurable_replicas = 1\n");
        let config = Config::load(Some(&file.0), env(&[])).unwrap();
        assert!(config.marketfeed.durable_acks);
        assert_eq!(config.marketfeed.durable_replicas, 1);
    }

    #[test]
    fn ranking_and_queue_replica_acks_and_their_limits() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            (
                config.ranking.replicas_to_wait(),
                config.queue.replicas_to_wait()
            ),
            (0, 0),
            "\"auto\" waits for no replica"
        );
        let config = Config::load(
            None,
            env(&[
                ("TICKMESH_RANKING_REPLICA_ACKS", "2"),
                ("TICKMESH_RANKING_REPLICA_ACK_TIMEOUT", "250ms"),
                ("TICKMESH_QUEUE_REPLICA_ACKS", "1"),
                ("TICKMESH_QUEUE_REPLICA_ACK_TIMEOUT", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ranking.replicas_to_wait(), 2);
        assert_eq!(
            config.ranking.replica_ack_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(config.queue.replicas_to_wait(), 1);
        assert_eq!(config.queue.replica_ack_timeout, Duration::from_secs(2));
        let file = write("[ranking]\nreplica_acks = \"off\"\n[queue]\nreplica_acks = \"100\"\n");
        let config = Config::load(Some(&file.0), env(&[])).unwrap();
        assert_eq!(config.ranking.replicas_to_wait(), 0);
        assert_eq!(config.queue.replicas_to_wait(), 100);
        for section in ["RANKING", "QUEUE"] {
            let key = section.to_ascii_lowercase();
            for bad in ["on", "-1", "101", "1.5", ""] {
                let e = Config::load(
                    None,
                    env(&[(&format!("TICKMESH_{section}_REPLICA_ACKS"), bad)]),
                )
                .unwrap_err();
                assert!(
                    e.0.contains(&format!("`{key}.replica_acks`"))
                        && e.0.contains(&format!("TICKMESH_{section}_REPLICA_ACKS"))
                        && e.0.contains("\"auto\", \"off\" or a number"),
                    "{bad:?}: {e}"
                );
            }
            let e = Config::load(
                None,
                env(&[(&format!("TICKMESH_{section}_REPLICA_ACK_TIMEOUT"), "0s")]),
            )
            .unwrap_err();
            assert!(e.0.contains(&format!("`{key}.replica_ack_timeout`")), "{e}");
        }
        // A number in the file must be quoted, as for coupon.replica_acks.
        let file = write("[queue]\nreplica_acks = 1\n");
        let e = Config::load(Some(&file.0), env(&[])).unwrap_err();
        assert!(e.0.contains("`queue.replica_acks`"), "{e}");
    }

    #[test]
    fn masks_the_admin_token() {
        let mut config = Config::default();
        config.auth.admin_token = "s3cret".into();
        let text = config.to_toml_masked();
        assert!(!text.contains("s3cret") && text.contains("********"));
    }
}
