//! Connection settings of the ScyllaDB store.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tickmesh_history::StoreError;

/// The default replication map body (`{replication}` in `schema.cql`).
pub const DEFAULT_REPLICATION: &str = "'class': 'NetworkTopologyStrategy', 'replication_factor': 3";

/// How to reach the cluster and where the tables live.
#[derive(Clone)]
pub struct ScyllaConfig {
    /// Seed nodes, `"host:port"` (the driver discovers the rest of the ring).
    pub contact_points: Vec<String>,
    /// Keyspace of the tables: `[a-zA-Z][a-zA-Z0-9_]{0,47}`.
    pub keyspace: String,
    /// The datacenter this process runs in. When set, requests go only to its
    /// nodes (LOCAL_QUORUM is then counted there). When unset, every node is
    /// treated as local.
    pub local_datacenter: Option<String>,
    /// Body of the keyspace replication map, used only by
    /// [`apply_schema`](crate::apply_schema) when the keyspace does not exist.
    pub replication: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS to the nodes (OpenSSL; see the crate docs). `None` connects in
    /// clear text. The contact points must then name the nodes' TLS port
    /// (ScyllaDB's `native_transport_port_ssl`, commonly 9142, or 9042 when
    /// the node encrypts its only client port).
    pub tls: Option<TlsConfig>,
    /// Client-side timeout of one request (the driver retries idempotent
    /// requests within its retry policy).
    pub request_timeout: Duration,
    /// Timeout of establishing one connection.
    pub connect_timeout: Duration,
    /// Rows per page of paged reads (the block index).
    pub page_size: i32,
    /// Connections per shard of every node (`PoolSize::PerShard`); ScyllaDB
    /// recommends 1.
    pub connections_per_shard: usize,
    /// Blocks written concurrently by one `upsert`.
    pub write_concurrency: usize,
    /// Blocks fetched ahead by one `range`.
    pub read_concurrency: usize,
}

/// TLS settings of [`ScyllaConfig::tls`]. The files are read, and the
/// OpenSSL client context built, at every
/// [`ScyllaStore::connect`](crate::ScyllaStore::connect) /
/// [`apply_schema`](crate::apply_schema), before any network traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) that signed the nodes' certificates:
    /// the only trust anchors (the system CA store is not used). A node's
    /// certificate chain is always verified against it.
    pub ca_file: PathBuf,
    /// Client certificate (PEM, leaf first, then any intermediates) for
    /// mutual TLS; requires `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Unencrypted PEM private key of `cert_file`; requires `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Also check that a node's certificate names the node. The driver
    /// connects to every node by IP address (host names among the contact
    /// points are resolved first, other nodes are found by the addresses they
    /// advertise) and sends no host name, so this check compares the node's IP
    /// with the certificate's IP subject alternative names: it needs node
    /// certificates with an IP SAN for every address clients use, and fails
    /// against certificates that name only DNS names. With `false` the chain
    /// is still verified (any certificate the CA signed is accepted for any
    /// node).
    pub verify_hostname: bool,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            contact_points: vec!["127.0.0.1:9042".to_string()],
            keyspace: "tickmesh".to_string(),
            local_datacenter: None,
            replication: DEFAULT_REPLICATION.to_string(),
            username: None,
            password: None,
            tls: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            page_size: 5000,
            connections_per_shard: 1,
            write_concurrency: 32,
            read_concurrency: 4,
        }
    }
}

impl fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("contact_points", &self.contact_points)
            .field("keyspace", &self.keyspace)
            .field("local_datacenter", &self.local_datacenter)
            .field("replication", &self.replication)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("page_size", &self.page_size)
            .field("connections_per_shard", &self.connections_per_shard)
            .field("write_concurrency", &self.write_concurrency)
            .field("read_concurrency", &self.read_concurrency)
            .finish()
    }
}

fn invalid(what: String) -> StoreError {
    StoreError::Unavailable(format!("invalid ScyllaDB config: {what}"))
}

/// Checks a keyspace name: a letter, then up to 47 letters, digits or
/// underscores (an unquoted CQL identifier ScyllaDB accepts as a keyspace).
pub fn validate_keyspace(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && name.len() <= 48 {
        Ok(())
    } else {
        Err(invalid(format!(
            "keyspace {name:?} is not a valid CQL identifier: use a letter followed by at most \
             47 letters, digits or underscores, e.g. tickmesh"
        )))
    }
}

/// Checks the replication map body: something, and nothing that could end
/// the map or the statement.
pub fn validate_replication(text: &str) -> Result<(), StoreError> {
    if text.trim().is_empty() {
        return Err(invalid(
            "replication is empty: give the body of the replication map, e.g. \
             'class': 'NetworkTopologyStrategy', 'dc1': 3"
                .to_string(),
        ));
    }
    if text.contains([';', '{', '}'])
        || text.contains("--")
        || text.contains("/*")
        || text.contains("//")
    {
        return Err(invalid(format!(
            "replication {text:?} must be only the body of the replication map (no braces, \
             semicolons or comments), e.g. 'class': 'NetworkTopologyStrategy', 'dc1': 3"
        )));
    }
    Ok(())
}

impl ScyllaConfig {
    /// Checks everything that can be checked without a cluster.
    pub fn validate(&self) -> Result<(), StoreError> {
        validate_keyspace(&self.keyspace)?;
        validate_replication(&self.replication)?;
        if self.contact_points.is_empty() || self.contact_points.iter().any(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "contact_points must list at least one \"host:port\"".to_string(),
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(invalid(
                "username and password must be given together".to_string(),
            ));
        }
        if self
            .local_datacenter
            .as_deref()
            .is_some_and(|dc| dc.trim().is_empty())
        {
            return Err(invalid(
                "local_datacenter is empty: leave it unset or name the datacenter".to_string(),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.ca_file.as_os_str().is_empty() {
                return Err(invalid(
                    "tls.ca_file is empty: name the PEM file of the nodes' CA".to_string(),
                ));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(invalid(
                    "tls.cert_file and tls.key_file must be given together (mutual TLS needs \
                     both; give neither for server-only TLS)"
                        .to_string(),
                ));
            }
        }
        if self.page_size <= 0 {
            return Err(invalid(format!(
                "page_size {} must be positive",
                self.page_size
            )));
        }
        if self.connections_per_shard == 0
            || self.write_concurrency == 0
            || self.read_concurrency == 0
        {
            return Err(invalid(
                "connections_per_shard, write_concurrency and read_concurrency must be at least 1"
                    .to_string(),
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(invalid(
                "request_timeout and connect_timeout must be positive".to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: StoreError) -> String {
        err.to_string()
    }

    #[test]
    fn defaults() {
        let c = ScyllaConfig::default();
        assert_eq!(c.keyspace, "tickmesh");
        assert_eq!(c.page_size, 5000);
        assert_eq!(
            c.replication,
            "'class': 'NetworkTopologyStrategy', 'replication_factor': 3"
        );
        assert!(c.tls.is_none());
        c.validate().expect("the default config is valid");
    }

    #[test]
    fn keyspace_names() {
        for ok in [
            "tickmesh",
            "t",
            "Tick_Mesh_2",
            &format!("k{}", "x".repeat(47)),
        ] {
            validate_keyspace(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "1tick",
            "_tick",
            "tick-mesh",
            "tick mesh",
            "tick;DROP",
            "\"tick\"",
            "tické",
            &format!("k{}", "x".repeat(48)),
        ] {
            let err = message(validate_keyspace(bad).expect_err(bad));
            assert!(err.contains("not a valid CQL identifier"), "{bad}: {err}");
            assert!(
                err.contains(&format!("{bad:?}")),
                "the error names the keyspace: {err}"
            );
        }
    }

    #[test]
    fn replication_text() {
        validate_replication(DEFAULT_REPLICATION).expect("default");
        validate_replication("'class': 'SimpleStrategy', 'replication_factor': 1").expect("simple");
        for bad in [
            "",
            "  ",
            "'class': 'X'}; DROP KEYSPACE k; --",
            "'a': 1 -- x",
            "{'class': 'X'}",
        ] {
            assert!(validate_replication(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn other_settings() {
        let bad = |f: fn(&mut ScyllaConfig)| {
            let mut c = ScyllaConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.contact_points.clear()));
        assert!(bad(|c| c.username = Some("u".into())));
        assert!(bad(|c| c.page_size = 0));
        assert!(bad(|c| c.write_concurrency = 0));
        assert!(bad(|c| c.local_datacenter = Some(" ".into())));
        assert!(bad(|c| c.keyspace = "no-dash".into()));
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let with_tls = |cert_file: Option<&str>, key_file: Option<&str>| ScyllaConfig {
            tls: Some(TlsConfig {
                ca_file: "/etc/scylla/ca.pem".into(),
                cert_file: cert_file.map(PathBuf::from),
                key_file: key_file.map(PathBuf::from),
                verify_hostname: true,
            }),
            ..Default::default()
        };
        with_tls(None, None).validate().expect("server-only TLS");
        with_tls(Some("c.pem"), Some("k.pem"))
            .validate()
            .expect("mutual TLS");
        for (cert, key) in [(Some("c.pem"), None), (None, Some("k.pem"))] {
            let err = message(with_tls(cert, key).validate().expect_err("half of a pair"));
            assert!(
                err.contains("tls.cert_file") && err.contains("tls.key_file"),
                "{err}"
            );
        }
        let mut no_ca = with_tls(None, None);
        no_ca.tls.as_mut().expect("tls").ca_file = PathBuf::new();
        let err = message(no_ca.validate().expect_err("empty ca_file"));
        assert!(err.contains("tls.ca_file"), "{err}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = ScyllaConfig {
            username: Some("u".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
