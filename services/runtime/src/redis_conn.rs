//! The Redis connection every service shares, on a single node or a Redis Cluster.
//!
//! Services hold one connection type, [`RedisConn`], that routes by key: on a
//! single node it is a lazily connected, auto-reconnecting
//! [`ConnectionManager`] (a process starts, and reports NOT_SERVING, while
//! Redis is down, and recovers by itself when Redis returns); on a cluster it
//! is the `redis` crate's async cluster connection (MOVED/ASK redirects,
//! topology refresh, reconnects). Which one is a setting
//! (`redis.cluster_nodes` or a `redis+cluster://` URL), not a code path per
//! service. Blocking reads (`XREAD BLOCK`) and writes that wait for
//! replication get dedicated connections so they never stall other commands.
//! TLS (`rediss://`, the `redis.tls_*` files) is the same on both: see
//! [`crate::redis_tls`].

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
};
use tickmesh_core::Error;

use crate::config::RedisConfig;
use crate::{redis_slots, redis_tls};

/// Where the mesh's hot state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One Redis server (with replicas or not): `redis.url`.
    Single(String),
    /// A Redis Cluster found from these seed nodes.
    Cluster(Vec<String>),
}

impl Topology {
    /// The topology a configuration names: `redis.cluster_nodes` when it
    /// lists any, else a `redis+cluster://h1:p1,h2:p2` (or `rediss+cluster://`)
    /// URL, else the single node of `redis.url`.
    pub fn of(config: &RedisConfig) -> Result<Self, String> {
        if !config.cluster_nodes.is_empty() {
            return Ok(Self::Cluster(config.cluster_nodes.clone()));
        }
        match cluster_url_nodes(&config.url)? {
            Some(nodes) => Ok(Self::Cluster(nodes)),
            None => Ok(Self::Single(config.url.clone())),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// True when Redis is reached over TLS (`rediss://`; on a cluster, the
    /// seed nodes' scheme, which must be the same for all of them).
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Single(url) => redis_tls::is_tls_url(url),
            Self::Cluster(nodes) => nodes.first().is_some_and(|n| redis_tls::is_tls_url(n)),
        }
    }

    /// The node URLs: the single node's, or the cluster's seeds.
    pub fn urls(&self) -> &[String] {
        match self {
            Self::Single(url) => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
        }
    }
}

/// `redis+cluster://user:pass@h1:6379,h2:6379/` → `redis://user:pass@h1:6379`, …
/// (`rediss+cluster://` → `rediss://`); `None` for any other scheme.
fn cluster_url_nodes(url: &str) -> Result<Option<Vec<String>>, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    // `#insecure` (TLS without certificate checks) applies to every node.
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, format!("/#{fragment}")),
        None => (rest, String::new()),
    };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{h}{fragment}"))
        .collect();
    if nodes.is_empty() {
        return Err(format!("{url:?} names no cluster node"));
    }
    Ok(Some(nodes))
}

/// One connection type for every service: a single node's managed
/// connection, a dedicated single-node connection, or a cluster connection.
/// Cheap to clone; clones share the underlying connections.
#[derive(Clone)]
pub enum RedisConn {
    Managed(ConnectionManager),
    Direct(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

/// Redis refused the user or password (or has none for a NOAUTH server).
fn is_refused_credentials(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let future = match self {
            Self::Managed(c) => c.req_packed_command(cmd),
            Self::Direct(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        };
        crate::metrics::redis::command(cmd, future)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let future = match self {
            Self::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => {
                if pipeline.is_transaction() {
                    // MULTI/EXEC must stay inside one slot; the server refuses it otherwise.
                    c.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(redis_slots::split_pipeline(c, pipeline, offset, count))
                }
            }
        };
        crate::metrics::redis::pipeline(pipeline, future)
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(c) => c.get_db(),
            Self::Direct(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[derive(Clone)]
enum Backend {
    Single {
        // Boxed like the cluster's: a TLS client carries its certificates.
        client: Box<redis::Client>,
        manager: ConnectionManager,
    },
    Cluster {
        client: Box<ClusterClient>,
        conn: ClusterConnection,
    },
}

#[derive(Clone)]
pub struct RedisHandle {
    backend: Backend,
    prefix: Arc<str>,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// A client per node URL (the single node, or each seed) for
    /// [`RedisHandle::check_at_start`].
    probes: Arc<[(String, redis::Client)]>,
}

impl RedisHandle {
    /// Prepares the connection; does not wait for Redis to be up.
    pub fn new(config: &RedisConfig) -> Result<Self, Error> {
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            Error::FailedPrecondition(format!("{field}: {e}"))
        };
        let topology = Topology::of(config).map_err(|e| bad("redis.url", &e))?;
        let certs = redis_tls::certificates(config, topology.is_tls())
            .map_err(|e| bad(e.field, &e.reason))?;
        if topology.is_tls() {
            redis_tls::install_crypto_provider();
            if topology.urls().iter().any(|u| u.ends_with("#insecure")) {
                tracing::warn!(
                    "redis TLS without certificate checks (#insecure): anyone in the path can read and change the traffic; development only"
                );
            }
        }
        let probes = topology
            .urls()
            .iter()
            .map(|url| {
                redis_tls::client(url, certs.as_ref())
                    .map(|client| (redis_tls::display_addr(url), client))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("redis.url", &e))?;
        let backend = match topology {
            Topology::Single(url) => {
                let client =
                    redis_tls::client(&url, certs.as_ref()).map_err(|e| bad("redis.url", &e))?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let manager =
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
                        .map_err(|e| bad("redis", &e))?;
                Backend::Single {
                    client: Box::new(client),
                    manager,
                }
            }
            Topology::Cluster(nodes) => {
                let client = cluster_client(&nodes, config, certs)
                    .map_err(|e| bad("redis.cluster_nodes", &e))?;
                // Connects in the background: a process starts while the
                // cluster is down and its first commands fail UNAVAILABLE.
                let conn = client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(config.connect_timeout)
                        .set_response_timeout(config.response_timeout),
                );
                Backend::Cluster {
                    client: Box::new(client),
                    conn,
                }
            }
        };
        Ok(Self {
            backend,
            prefix: Arc::from(config.key_prefix.as_str()),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            probes: probes.into(),
        })
    }

    /// Checks at start that Redis accepts this process: a TLS handshake that
    /// fails (a wrong CA, a client certificate missing or refused, a port
    /// that answers in anything but TLS) or credentials Redis refuses
    /// (`WRONGPASS`, `NOAUTH`, an ACL user without the rights to connect)
    /// are configuration errors, reported here naming the server rather
    /// than as UNAVAILABLE on every call. A Redis that cannot be reached at
    /// all is not: the process starts and waits for it. On a cluster the
    /// seeds are tried in turn until one answers.
    pub async fn check_at_start(&self) -> Result<(), Error> {
        for (addr, client) in self.probes.iter() {
            // The blocking client: a refusal that arrives as a TLS alert
            // after the handshake (TLS 1.3 servers judge a client
            // certificate then) comes back as that alert, where the
            // multiplexed connection only times out.
            let (client, connect, respond) =
                (client.clone(), self.connect_timeout, self.response_timeout);
            let tls = addr.starts_with("rediss://");
            let attempt = tokio::task::spawn_blocking(move || {
                let mut conn = client.get_connection_with_timeout(connect)?;
                conn.set_read_timeout(Some(respond))?;
                redis::cmd("PING").query::<Value>(&mut conn)
            });
            let wait = self.connect_timeout + self.response_timeout;
            match tokio::time::timeout(wait + Duration::from_millis(100), attempt).await {
                Ok(Ok(Ok(_))) => return Ok(()),
                Ok(Ok(Err(e))) => {
                    if let Some(failure) = redis_tls::handshake_failure(&e) {
                        return Err(Error::FailedPrecondition(format!(
                            "redis TLS handshake with {addr} failed: {failure}"
                        )));
                    }
                    if is_refused_credentials(&e) {
                        return Err(Error::FailedPrecondition(format!(
                            "redis at {addr} refused this process's credentials ({e}): set the ACL user and password in the URL (redis://user:password@host:port, redis.url or redis.cluster_nodes)"
                        )));
                    }
                    if e.code().is_some() {
                        // The server answered something else: it is there.
                        return Ok(());
                    }
                    if tls {
                        tracing::warn!(redis = %addr, error = %e, "redis not reachable at start: the TLS handshake is not checked (a port that never answers in TLS looks the same: is this the server's tls-port?)");
                    } else {
                        tracing::warn!(redis = %addr, error = %e, "redis not reachable at start; waiting for it");
                    }
                }
                Ok(Err(e)) => {
                    return Err(Error::Internal(format!("redis start check: {e}")));
                }
                Err(_) => {
                    tracing::warn!(redis = %addr, wait_ms = wait.as_millis() as u64, "redis did not answer at start");
                }
            }
        }
        Ok(())
    }

    /// The shared, multiplexed connection (cheap to clone).
    pub fn conn(&self) -> RedisConn {
        match &self.backend {
            Backend::Single { manager, .. } => RedisConn::Managed(manager.clone()),
            Backend::Cluster { conn, .. } => RedisConn::Cluster(conn.clone()),
        }
    }

    /// On a Redis Cluster, a connection to each master (as the cluster's
    /// slot map has them now), by `host:port`; empty on a single node.
    pub async fn masters(&self) -> Result<Vec<(String, NodeConn)>, Error> {
        let Backend::Cluster { conn, .. } = &self.backend else {
            return Ok(Vec::new());
        };
        let mut conn = conn.clone();
        let routing = redis::cluster_routing::RoutingInfo::MultiNode((
            redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
            None,
        ));
        let reply = conn
            .route_command(redis::cmd("PING"), routing)
            .await
            .map_err(unavailable)?;
        let Value::Map(pairs) = reply else {
            return Err(Error::Internal(format!(
                "the cluster answered PING to all masters with {reply:?}"
            )));
        };
        let mut out = Vec::new();
        for (addr, _) in pairs {
            let addr: String = redis::from_redis_value(addr)
                .map_err(|e| Error::Internal(format!("cluster node address: {e}")))?;
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse() else { continue };
            out.push((
                addr.clone(),
                NodeConn {
                    conn: conn.clone(),
                    host: host.to_string(),
                    port,
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// A connection of its own for blocking commands; `block` is the longest
    /// block the caller will ask for, so the response timeout leaves room for it.
    pub async fn dedicated(&self, block: Duration) -> Result<RedisConn, Error> {
        match &self.backend {
            Backend::Single { client, .. } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(block + self.response_timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(RedisConn::Direct)
                    .map_err(unavailable)
            }
            Backend::Cluster { client, .. } => client
                .get_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(self.connect_timeout)
                        .set_response_timeout(block + self.response_timeout),
                )
                .await
                .map(RedisConn::Cluster)
                .map_err(unavailable),
        }
    }

    /// Key prefix for every key tickmesh writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True when Redis answers PING within the response timeout (on a
    /// cluster: every master answers).
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(self.response_timeout, ping).await,
            Ok(Ok(_))
        )
    }
}

/// Commands to one node of a cluster, by address (server facts, run ids).
#[derive(Clone)]
pub struct NodeConn {
    conn: ClusterConnection,
    host: String,
    port: u16,
}

impl NodeConn {
    fn route(&self) -> redis::cluster_routing::SingleNodeRoutingInfo {
        redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl ConnectionLike for NodeConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let routing = redis::cluster_routing::RoutingInfo::SingleNode(self.route());
        Box::pin(self.conn.route_command(cmd.clone(), routing))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let route = self.route();
        Box::pin(
            self.conn
                .route_pipeline(pipeline.clone(), offset, count, route),
        )
    }

    fn get_db(&self) -> i64 {
        0
    }
}

fn cluster_client(
    nodes: &[String],
    config: &RedisConfig,
    certs: Option<TlsCertificates>,
) -> Result<ClusterClient, RedisError> {
    let infos = nodes
        .iter()
        .map(|n| redis::IntoConnectionInfo::into_connection_info(n.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = ClusterClientBuilder::new(infos.clone())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        // Rides through a failover: MOVED/TRYAGAIN/CLUSTERDOWN and broken
        // connections are retried with backoff for about `cluster-node-timeout`.
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(1_000);
    // AUTH/ACL and TLS of the seed nodes apply to every node found: the
    // scheme (`rediss://`, `#insecure`) of the first seed, and the
    // `redis.tls_*` files for every node the slot map names.
    if let Some(certs) = certs {
        let insecure = infos.first().is_some_and(|first| {
            matches!(
                first.addr(),
                redis::ConnectionAddr::TcpTls { insecure: true, .. }
            )
        });
        // `certs` turns TLS on in secure mode: `#insecure` is set after it.
        builder = builder.certs(certs);
        if insecure {
            builder = builder.tls(TlsMode::Insecure);
        }
    }
    if let Some(first) = infos.first() {
        let redis = first.redis_settings();
        if let Some(user) = redis.username() {
            builder = builder.username(user);
        }
        if let Some(password) = redis.password() {
            builder = builder.password(password);
        }
    }
    builder.build()
}

/// A Redis failure as the domain sees it: the backend is unavailable, retry.
pub fn unavailable(error: RedisError) -> Error {
    if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
        return Error::Internal(format!("redis script: {error}"));
    }
    Error::Unavailable(format!("redis: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seed_nodes_with_their_credentials() {
        assert_eq!(
            cluster_url_nodes("redis+cluster://u:p@h1:7000,h2:7001/").unwrap(),
            Some(vec![
                "redis://u:p@h1:7000".to_string(),
                "redis://u:p@h2:7001".to_string()
            ])
        );
        assert_eq!(
            cluster_url_nodes("rediss+cluster://h1:7000").unwrap(),
            Some(vec!["rediss://h1:7000".to_string()])
        );
        assert_eq!(
            cluster_url_nodes("rediss+cluster://u:p@h1:7000,h2:7001/#insecure").unwrap(),
            Some(vec![
                "rediss://u:p@h1:7000/#insecure".to_string(),
                "rediss://u:p@h2:7001/#insecure".to_string()
            ])
        );
        assert_eq!(cluster_url_nodes("redis://h1:7000").unwrap(), None);
        assert!(cluster_url_nodes("redis+cluster://").is_err());
    }

    #[test]
    fn tls_is_the_scheme_of_the_url_or_of_the_seeds() {
        let single = |url: &str| RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        };
        assert!(Topology::of(&single("rediss://h:6380")).unwrap().is_tls());
        assert!(!Topology::of(&single("redis://h:6379")).unwrap().is_tls());
        assert!(
            Topology::of(&single("rediss+cluster://h1:7000,h2:7001"))
                .unwrap()
                .is_tls()
        );
        let seeds = RedisConfig {
            cluster_nodes: vec!["rediss://a:1".into(), "rediss://b:2".into()],
            ..RedisConfig::default()
        };
        assert!(Topology::of(&seeds).unwrap().is_tls());
    }

    #[test]
    fn cluster_nodes_win_over_the_url() {
        let config = RedisConfig {
            cluster_nodes: vec!["redis://a:1".into()],
            ..RedisConfig::default()
        };
        assert_eq!(
            Topology::of(&config).unwrap(),
            Topology::Cluster(vec!["redis://a:1".into()])
        );
        assert_eq!(
            Topology::of(&RedisConfig::default()).unwrap(),
            Topology::Single("redis://127.0.0.1:6379".into())
        );
    }
}
