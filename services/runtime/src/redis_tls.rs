//! TLS to Redis (`rediss://`), the same on a single node and on a Redis Cluster.
//!
//! The `redis` crate speaks TLS through rustls here: its cluster client takes
//! a private CA and a client certificate only that way
//! (`ClusterClientBuilder::certs`). The `redis.tls_*` files are read and
//! checked once, when the configuration is validated and again when the
//! connection is prepared, so a missing file or a key that is not the
//! certificate's stops the start with the setting's name. A handshake that
//! fails on a live server (a certificate the CA does not vouch for, a server
//! that wants a client certificate) is told apart from a server that is down
//! by [`handshake_failure`].

use std::path::Path;

use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisError, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::RedisConfig;

/// A setting that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: String) -> Invalid {
    Invalid { field, reason }
}

/// True for a `rediss://` URL (TLS); `#insecure` is part of it.
pub fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://")
}

/// The certificates `config`'s `redis.tls_*` settings name, read and
/// checked; `None` when none is set (plain TCP, or `rediss://` trusting the
/// system's store). `tls` says whether the topology's URLs are `rediss://`:
/// TLS files for a plain-TCP URL are refused rather than ignored.
pub fn certificates(config: &RedisConfig, tls: bool) -> Result<Option<TlsCertificates>, Invalid> {
    let ca = non_empty(&config.tls_ca_file);
    let cert = non_empty(&config.tls_cert_file);
    let key = non_empty(&config.tls_key_file);
    if cert.is_some() != key.is_some() {
        let field = if cert.is_some() {
            "redis.tls_key_file"
        } else {
            "redis.tls_cert_file"
        };
        return Err(invalid(
            field,
            "redis.tls_cert_file and redis.tls_key_file go together (mutual TLS needs both; give neither for server-only TLS)".into(),
        ));
    }
    let field = match (ca, cert) {
        (None, None) => return Ok(None),
        (Some(_), _) => "redis.tls_ca_file",
        (None, Some(_)) => "redis.tls_cert_file",
    };
    if !tls {
        return Err(invalid(
            field,
            "is set but Redis is reached in plain TCP: use rediss://host:port in redis.url \
             (rediss+cluster://h1:port,h2:port, or rediss:// cluster_nodes, for a cluster)"
                .into(),
        ));
    }
    let root_cert = ca
        .map(|path| {
            let pem = read("redis.tls_ca_file", path)?;
            let certs = certificate_chain("redis.tls_ca_file", path, &pem)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    invalid(
                        "redis.tls_ca_file",
                        format!("{path}: a certificate cannot be a trust anchor: {e}"),
                    )
                })?;
            }
            Ok(pem)
        })
        .transpose()?;
    let client_tls = match (cert, key) {
        (Some(cert_path), Some(key_path)) => {
            let client_cert = read("redis.tls_cert_file", cert_path)?;
            let client_key = read("redis.tls_key_file", key_path)?;
            let chain = certificate_chain("redis.tls_cert_file", cert_path, &client_cert)?;
            let key = PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| {
                invalid(
                    "redis.tls_key_file",
                    format!("{key_path} is not an unencrypted PEM private key: {e}"),
                )
            })?;
            rustls::sign::CertifiedKey::from_der(
                chain,
                key,
                &rustls::crypto::ring::default_provider(),
            )
            .map_err(|e| {
                invalid(
                    "redis.tls_key_file",
                    format!("{key_path} does not go with redis.tls_cert_file {cert_path}: {e}"),
                )
            })?;
            Some(ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
        _ => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn non_empty(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

fn read(field: &'static str, path: &str) -> Result<Vec<u8>, Invalid> {
    std::fs::read(Path::new(path)).map_err(|e| invalid(field, format!("cannot read {path}: {e}")))
}

/// Every certificate of a PEM file (at least one).
fn certificate_chain(
    field: &'static str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, format!("{path} is not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            field,
            format!("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

/// The crypto provider of every TLS connection to Redis. Only one is
/// compiled in today (ring); installing it says so even if another crate
/// brings a second one, which would leave rustls unable to pick.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client of one node at `url`, with `certs` when the URL is `rediss://`
/// and TLS files are set: every connection tickmesh opens to a node, and the
/// test harness's own, is made this way.
pub fn client(url: &str, certs: Option<&TlsCertificates>) -> Result<redis::Client, RedisError> {
    if !is_tls_url(url) {
        return redis::Client::open(url);
    }
    install_crypto_provider();
    match certs {
        Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
        None => redis::Client::open(url),
    }
}

/// `rediss://host:port` of a node URL, without its user and password.
pub fn display_addr(url: &str) -> String {
    match url.into_connection_info().map(|info| info.addr().clone()) {
        Ok(ConnectionAddr::TcpTls { host, port, .. }) => format!("rediss://{host}:{port}"),
        Ok(ConnectionAddr::Tcp(host, port)) => format!("redis://{host}:{port}"),
        _ => "redis".into(),
    }
}

/// When `error` is a TLS handshake that failed (as opposed to a server that
/// cannot be reached), what went wrong and what to check. A failed handshake
/// does not go away by retrying: the process should not start on it.
pub fn handshake_failure(error: &RedisError) -> Option<String> {
    if error.kind() == redis::ErrorKind::InvalidClientConfig {
        return Some(error.to_string());
    }
    let tls = rustls_error(error)?;
    let hint = match tls {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature) => {
            "the server's certificate is not signed by a CA tickmesh trusts: \
             set redis.tls_ca_file to the PEM file of the CA that signed it"
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => {
            "the server's certificate does not name the host tickmesh connects to: \
             use a host name or IP address among its subject alternative names"
        }
        rustls::Error::InvalidCertificate(_) => "the server's certificate is not acceptable",
        rustls::Error::AlertReceived(_) => {
            "the server refused the handshake: a server with tls-auth-clients yes needs a \
             client certificate its CA signed (redis.tls_cert_file and redis.tls_key_file)"
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer in TLS: is this its tls-port?"
        }
        _ => "check the redis.tls_* settings against the server's tls-* settings",
    };
    Some(format!("{tls}: {hint}"))
}

/// The rustls error behind `error`: tokio-rustls reports handshake and
/// record failures as an `io::Error` that carries it, and the redis crate
/// keeps that in an `Arc`. Neither hands it on as its `source()` (an
/// `io::Error` skips to its payload's source), so each is unwrapped here.
fn rustls_error(error: &RedisError) -> Option<&rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(mut e) = next {
        if let Some(shared) = e.downcast_ref::<Shared>() {
            e = shared.as_ref();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            e = inner;
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ca: &str, cert: &str, key: &str) -> RedisConfig {
        RedisConfig {
            tls_ca_file: ca.into(),
            tls_cert_file: cert.into(),
            tls_key_file: key.into(),
            ..RedisConfig::default()
        }
    }

    #[test]
    fn no_tls_files_is_plain_or_the_system_store() {
        assert!(certificates(&config("", "", ""), false).unwrap().is_none());
        assert!(certificates(&config("", "", ""), true).unwrap().is_none());
    }

    #[test]
    fn a_key_needs_its_certificate_and_the_other_way_round() {
        let e = certificates(&config("", "", "/k.pem"), true).unwrap_err();
        assert_eq!(e.field, "redis.tls_cert_file");
        assert!(e.reason.contains("go together"), "{e:?}");
        let e = certificates(&config("", "/c.pem", ""), true).unwrap_err();
        assert_eq!(e.field, "redis.tls_key_file");
    }

    #[test]
    fn tls_files_for_a_plain_url_are_refused() {
        let e = certificates(&config("/ca.pem", "", ""), false).unwrap_err();
        assert_eq!(e.field, "redis.tls_ca_file");
        assert!(e.reason.contains("rediss://"), "{e:?}");
    }

    #[test]
    fn unreadable_and_malformed_files_name_the_setting_and_the_path() {
        let e = certificates(&config("/nonexistent/ca.pem", "", ""), true).unwrap_err();
        assert_eq!(e.field, "redis.tls_ca_file");
        assert!(e.reason.contains("/nonexistent/ca.pem"), "{e:?}");

        let path = std::env::temp_dir().join(format!("tickmesh-not-pem-{}", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = certificates(&config(path.to_str().unwrap(), "", ""), true).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert!(e.reason.contains("no PEM certificate"), "{e:?}");
    }

    #[test]
    fn node_addresses_are_shown_without_credentials() {
        assert_eq!(
            display_addr("rediss://u:secret@10.0.0.1:6380"),
            "rediss://10.0.0.1:6380"
        );
        assert_eq!(
            display_addr("rediss://10.0.0.1:6380/#insecure"),
            "rediss://10.0.0.1:6380"
        );
    }
}
