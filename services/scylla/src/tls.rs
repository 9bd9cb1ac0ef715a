//! TLS to the nodes: the OpenSSL client context built from [`TlsConfig`].
//!
//! How the driver uses it (scylla 1.x, `openssl-010`): for every connection
//! it creates an `Ssl` from this context and pins the expected peer to the
//! node's **IP address** (`X509_VERIFY_PARAM_set1_ip`); it never sends a host
//! name (no SNI) and never checks a DNS name. Contact points given as host
//! names are resolved first, and the rest of the ring is discovered by the
//! addresses the nodes advertise (`rpc_address` / `broadcast_rpc_address`).
//! So hostname verification can only succeed when each node's certificate
//! carries an IP subject alternative name for the address the driver reaches
//! it by; a certificate that names only DNS names fails it.

use std::path::Path;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509StoreContextRef, X509VerifyResult};
use scylla::client::session::OpenSsl010Config;
use tickmesh_history::StoreError;

use crate::config::TlsConfig;

/// `X509_V_ERR_HOSTNAME_MISMATCH` (stable OpenSSL ABI value; the `openssl`
/// crate names no constant for it).
const HOSTNAME_MISMATCH: i32 = 62;
/// `X509_V_ERR_IP_ADDRESS_MISMATCH` (stable OpenSSL ABI value).
const IP_ADDRESS_MISMATCH: i32 = 64;

fn invalid(what: String) -> StoreError {
    StoreError::Unavailable(format!("invalid ScyllaDB TLS config: {what}"))
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| invalid(format!("cannot read {field} {}: {e}", path.display())))
}

/// Every certificate of a PEM file (at least one).
fn certificates(field: &str, path: &Path) -> Result<Vec<X509>, StoreError> {
    let pem = read(field, path)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        invalid(format!(
            "{field} {} is not a valid PEM certificate file: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{field} {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// An unencrypted PEM private key (never prompts for a passphrase).
fn private_key(field: &str, path: &Path) -> Result<PKey<Private>, StoreError> {
    let pem = read(field, path)?;
    PKey::private_key_from_pem_callback(&pem, |_passphrase| Ok(0)).map_err(|e| {
        invalid(format!(
            "{field} {} is not an unencrypted PEM private key: {e}",
            path.display()
        ))
    })
}

fn setup(e: ErrorStack) -> StoreError {
    invalid(format!("cannot set up the OpenSSL client context: {e}"))
}

/// Whether a failed check is only the peer-name check (the chain itself is
/// fine as far as OpenSSL got).
fn is_name_mismatch(error: X509VerifyResult) -> bool {
    matches!(error.as_raw(), HOSTNAME_MISMATCH | IP_ADDRESS_MISMATCH)
}

/// The client context of `tls`, before the driver wraps it:
///
/// - TLS 1.2 or newer, OpenSSL's default client cipher list;
/// - trust anchors: exactly the certificates of `ca_file` (the system CA
///   store is not trusted);
/// - the peer's certificate chain is always verified; the check that the
///   certificate names the node's IP address (see the module docs) only when
///   `verify_hostname` is set;
/// - with `cert_file` and `key_file`, a client certificate (leaf first, any
///   intermediates after it) for mutual TLS; the key must match it.
pub(crate) fn connector_builder(tls: &TlsConfig) -> Result<SslConnectorBuilder, StoreError> {
    let ca = certificates("tls.ca_file", &tls.ca_file)?;
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(setup)?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(setup)?;

    // Replaces the store `SslConnector` loaded the system roots into.
    let mut store = X509StoreBuilder::new().map_err(setup)?;
    for cert in ca {
        store.add_cert(cert).map_err(|e| {
            invalid(format!(
                "cannot trust a certificate of tls.ca_file {}: {e}",
                tls.ca_file.display()
            ))
        })?;
    }
    builder.set_cert_store(store.build());

    if tls.verify_hostname {
        builder.set_verify(SslVerifyMode::PEER);
    } else {
        // The driver always pins the node IP, so turning the name check off
        // means forgiving exactly that failure and nothing else.
        builder.set_verify_callback(
            SslVerifyMode::PEER,
            |preverified, ctx: &mut X509StoreContextRef| {
                preverified || is_name_mismatch(ctx.error())
            },
        );
    }

    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let mut chain = certificates("tls.cert_file", cert_file)?.into_iter();
            let key = private_key("tls.key_file", key_file)?;
            let leaf = chain.next().expect("certificates() returns at least one");
            let mismatch = |detail: String| {
                invalid(format!(
                    "tls.key_file {} is not the private key of tls.cert_file {}{detail}",
                    key_file.display(),
                    cert_file.display()
                ))
            };
            // Checked first: OpenSSL's own check (when the key is set) has a
            // terse message that names neither file.
            let public = leaf.public_key().map_err(|e| {
                invalid(format!(
                    "cannot read the public key of tls.cert_file {}: {e}",
                    cert_file.display()
                ))
            })?;
            if !public.public_eq(&key) {
                return Err(mismatch(String::new()));
            }
            builder.set_certificate(&leaf).map_err(|e| {
                invalid(format!(
                    "cannot use tls.cert_file {}: {e}",
                    cert_file.display()
                ))
            })?;
            for intermediate in chain {
                builder.add_extra_chain_cert(intermediate).map_err(setup)?;
            }
            builder.set_private_key(&key).map_err(|e| {
                invalid(format!(
                    "cannot use tls.key_file {}: {e}",
                    key_file.display()
                ))
            })?;
            builder
                .check_private_key()
                .map_err(|e| mismatch(format!(": {e}")))?;
        }
        (None, None) => {}
        _ => {
            return Err(invalid(
                "tls.cert_file and tls.key_file must be given together (mutual TLS needs both)"
                    .to_string(),
            ));
        }
    }
    Ok(builder)
}

/// The driver's TLS context for `tls` (see [`connector_builder`]); TLS
/// session tickets are on (the driver's default), so reconnects resume.
pub(crate) fn tls_context(tls: &TlsConfig) -> Result<OpenSsl010Config, StoreError> {
    Ok(OpenSsl010Config::new(connector_builder(tls)?))
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::ssl::{Ssl, SslContext, SslStream};
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509Builder, X509NameBuilder};

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tickmesh-scylla-tls-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, file: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(file);
            std::fs::write(&path, bytes).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A certificate and its key.
    struct Issued {
        cert: X509,
        key: PKey<Private>,
    }

    impl Issued {
        fn cert_pem(&self) -> Vec<u8> {
            self.cert.to_pem().expect("cert pem")
        }

        fn key_pem(&self) -> Vec<u8> {
            self.key.private_key_to_pem_pkcs8().expect("key pem")
        }
    }

    enum Role<'a> {
        Ca,
        /// A node certificate with these IP and DNS subject alternative names.
        Node {
            ips: &'a [&'a str],
            dns: &'a [&'a str],
        },
        Client,
    }

    /// Issues a P-256 certificate valid for a day, signed by `issuer` (or
    /// self-signed when `None`).
    fn issue(common_name: &str, role: Role<'_>, issuer: Option<&Issued>) -> Issued {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
        let key = PKey::from_ec_key(EcKey::generate(&group).expect("ec key")).expect("pkey");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)
            .expect("cn");
        let name = name.build();

        let mut builder = X509Builder::new().expect("builder");
        builder.set_version(2).expect("v3");
        let mut serial = BigNum::new().expect("bn");
        serial
            .rand(64, MsbOption::MAYBE_ZERO, false)
            .expect("serial");
        builder
            .set_serial_number(&serial.to_asn1_integer().expect("asn1"))
            .expect("set serial");
        builder.set_subject_name(&name).expect("subject");
        builder
            .set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
            .expect("issuer");
        builder.set_pubkey(&key).expect("pubkey");
        builder
            .set_not_before(&Asn1Time::days_from_now(0).expect("now"))
            .expect("not before");
        builder
            .set_not_after(&Asn1Time::days_from_now(1).expect("tomorrow"))
            .expect("not after");
        match role {
            Role::Ca => {
                let ca = BasicConstraints::new().critical().ca().build().expect("bc");
                builder.append_extension(ca).expect("bc");
                let usage = KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .expect("ku");
                builder.append_extension(usage).expect("ku");
            }
            Role::Node { ips, dns } => {
                let mut san = SubjectAlternativeName::new();
                for ip in ips {
                    san.ip(ip);
                }
                for name in dns {
                    san.dns(name);
                }
                let san = san
                    .build(&builder.x509v3_context(issuer.map(|i| &*i.cert), None))
                    .expect("san");
                builder.append_extension(san).expect("san");
                let usage = ExtendedKeyUsage::new().server_auth().build().expect("eku");
                builder.append_extension(usage).expect("eku");
            }
            Role::Client => {
                let usage = ExtendedKeyUsage::new().client_auth().build().expect("eku");
                builder.append_extension(usage).expect("eku");
            }
        }
        let signer = issuer.map_or(&key, |i| &i.key);
        builder.sign(signer, MessageDigest::sha256()).expect("sign");
        Issued {
            cert: builder.build(),
            key,
        }
    }

    /// A CA, a client certificate it signed, and the PEM files of both.
    struct Pki {
        dir: TempDir,
        ca: Issued,
        ca_file: PathBuf,
        cert_file: PathBuf,
        key_file: PathBuf,
    }

    fn pki(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let ca = issue("tickmesh test CA", Role::Ca, None);
        let client = issue("tickmesh client", Role::Client, Some(&ca));
        let ca_file = dir.write("ca.pem", &ca.cert_pem());
        let cert_file = dir.write("client.pem", &client.cert_pem());
        let key_file = dir.write("client.key", &client.key_pem());
        Pki {
            dir,
            ca,
            ca_file,
            cert_file,
            key_file,
        }
    }

    impl Pki {
        fn server_only(&self, verify_hostname: bool) -> TlsConfig {
            TlsConfig {
                ca_file: self.ca_file.clone(),
                cert_file: None,
                key_file: None,
                verify_hostname,
            }
        }

        fn mutual(&self, verify_hostname: bool) -> TlsConfig {
            TlsConfig {
                cert_file: Some(self.cert_file.clone()),
                key_file: Some(self.key_file.clone()),
                ..self.server_only(verify_hostname)
            }
        }
    }

    fn error(tls: &TlsConfig) -> String {
        match connector_builder(tls) {
            Ok(_) => panic!("built a TLS context from {tls:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// One TLS handshake against an in-process server presenting `server`
    /// (and, with `client_ca`, requiring a client certificate it signed),
    /// with the client side made exactly as the driver makes it: an `Ssl`
    /// from the context, connect state, the node's IP pinned
    /// (`OpenSsl010Config::new_ssl` in scylla 1.x).
    fn handshake(tls: &TlsConfig, server: &Issued, client_ca: Option<&X509>) -> Result<(), String> {
        let mut ctx = SslContext::builder(SslMethod::tls_server()).expect("server ctx");
        ctx.set_certificate(&server.cert).expect("server cert");
        ctx.set_private_key(&server.key).expect("server key");
        if let Some(ca) = client_ca {
            let mut store = X509StoreBuilder::new().expect("store");
            store.add_cert(ca.clone()).expect("client ca");
            ctx.set_verify_cert_store(store.build())
                .expect("verify store");
            ctx.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        let server_ctx = ctx.build();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let thread = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().expect("accept");
            let ssl = Ssl::new(&server_ctx).expect("server ssl");
            let mut stream = SslStream::new(ssl, tcp).expect("server stream");
            if stream.accept().is_ok() {
                let _ = stream.write_all(b"x");
                let _ = stream.flush();
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte);
            }
        });

        let client_ctx = connector_builder(tls)
            .map_err(|e| e.to_string())?
            .build()
            .into_context();
        let result = (|| {
            let mut ssl = Ssl::new(&client_ctx).map_err(|e| e.to_string())?;
            ssl.set_connect_state();
            ssl.param_mut()
                .set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .map_err(|e| e.to_string())?;
            let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            let mut stream = SslStream::new(ssl, tcp).map_err(|e| e.to_string())?;
            stream.connect().map_err(|e| e.to_string())?;
            // With TLS 1.3 the server judges the client certificate after the
            // client's handshake is done: a rejection shows up on the read.
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
            let _ = stream.write_all(b"y");
            Ok(())
        })();
        thread.join().expect("server thread");
        result
    }

    #[test]
    fn builds_from_a_generated_ca_and_client_certificate() {
        let pki = pki("ok");
        for tls in [
            pki.server_only(true),
            pki.server_only(false),
            pki.mutual(true),
            pki.mutual(false),
        ] {
            let mut builder = connector_builder(&tls).unwrap_or_else(|e| panic!("{tls:?}: {e}"));
            assert_eq!(builder.min_proto_version(), Some(SslVersion::TLS1_2));
            let ctx = builder.build().into_context();
            assert_eq!(ctx.verify_mode(), SslVerifyMode::PEER);
            assert_eq!(ctx.certificate().is_some(), tls.cert_file.is_some());
            tls_context(&tls).unwrap_or_else(|e| panic!("{tls:?}: {e}"));
        }
        // A CA bundle (several certificates in one file) is accepted.
        let other = issue("another CA", Role::Ca, None);
        let mut bundle = pki.ca.cert_pem();
        bundle.extend(other.cert_pem());
        let tls = TlsConfig {
            ca_file: pki.dir.write("bundle.pem", &bundle),
            ..pki.server_only(true)
        };
        connector_builder(&tls).expect("bundle");
    }

    #[test]
    fn missing_files_are_named() {
        let pki = pki("missing");
        let ca_file = pki.dir.0.join("no-such-ca.pem");
        let err = error(&TlsConfig {
            ca_file: ca_file.clone(),
            ..pki.mutual(true)
        });
        assert!(
            err.contains("cannot read tls.ca_file") && err.contains(&ca_file.display().to_string()),
            "{err}"
        );
        let key_file = pki.dir.0.join("no-such.key");
        let err = error(&TlsConfig {
            key_file: Some(key_file.clone()),
            ..pki.mutual(true)
        });
        assert!(
            err.contains("cannot read tls.key_file")
                && err.contains(&key_file.display().to_string()),
            "{err}"
        );
        // A directory is not a readable file either.
        let err = error(&TlsConfig {
            ca_file: pki.dir.0.clone(),
            ..pki.server_only(true)
        });
        assert!(err.contains("cannot read tls.ca_file"), "{err}");
    }

    #[test]
    fn garbage_pem_is_refused() {
        let pki = pki("garbage");
        let garbage = pki.dir.write("garbage.pem", b"this is not a certificate\n");
        let corrupt = pki.dir.write(
            "corrupt.pem",
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==!!!\n-----END CERTIFICATE-----\n",
        );
        for bad in [&garbage, &corrupt] {
            let err = error(&TlsConfig {
                ca_file: bad.clone(),
                ..pki.server_only(true)
            });
            assert!(
                err.contains("tls.ca_file") && err.contains(&bad.display().to_string()),
                "{err}"
            );
            let err = error(&TlsConfig {
                cert_file: Some(bad.clone()),
                ..pki.mutual(true)
            });
            assert!(
                err.contains("tls.cert_file") && err.contains(&bad.display().to_string()),
                "{err}"
            );
            let err = error(&TlsConfig {
                key_file: Some(bad.clone()),
                ..pki.mutual(true)
            });
            assert!(
                err.contains("tls.key_file") && err.contains("not an unencrypted PEM private key"),
                "{err}"
            );
        }
        // A key where the certificate should be, and the other way round.
        let err = error(&TlsConfig {
            cert_file: Some(pki.key_file.clone()),
            ..pki.mutual(true)
        });
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = error(&TlsConfig {
            key_file: Some(pki.cert_file.clone()),
            ..pki.mutual(true)
        });
        assert!(err.contains("tls.key_file"), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let pki = pki("mismatch");
        let stranger = issue("someone else", Role::Client, Some(&pki.ca));
        let key_file = pki.dir.write("stranger.key", &stranger.key_pem());
        let err = error(&TlsConfig {
            key_file: Some(key_file.clone()),
            ..pki.mutual(true)
        });
        assert!(
            err.contains("is not the private key of tls.cert_file")
                && err.contains(&key_file.display().to_string())
                && err.contains(&pki.cert_file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn half_a_client_pair_is_refused() {
        let pki = pki("half");
        for tls in [
            TlsConfig {
                key_file: None,
                ..pki.mutual(true)
            },
            TlsConfig {
                cert_file: None,
                ..pki.mutual(true)
            },
        ] {
            let err = error(&tls);
            assert!(
                err.contains("tls.cert_file") && err.contains("tls.key_file"),
                "{err}"
            );
        }
    }

    #[test]
    fn handshakes_verify_the_chain_and_optionally_the_node_ip() {
        let pki = pki("handshake");
        let with_ip = issue(
            "node",
            Role::Node {
                ips: &["127.0.0.1"],
                dns: &["scylla-0.example"],
            },
            Some(&pki.ca),
        );
        let dns_only = issue(
            "node",
            Role::Node {
                ips: &[],
                dns: &["scylla-0.example", "localhost"],
            },
            Some(&pki.ca),
        );
        let foreign_ca = issue("foreign CA", Role::Ca, None);
        let foreign = issue(
            "node",
            Role::Node {
                ips: &["127.0.0.1"],
                dns: &[],
            },
            Some(&foreign_ca),
        );

        handshake(&pki.server_only(true), &with_ip, None).expect("IP SAN, hostname verified");
        let err = handshake(&pki.server_only(true), &dns_only, None)
            .expect_err("a certificate without the node's IP passed hostname verification");
        assert!(err.contains("certificate verify failed"), "{err}");
        handshake(&pki.server_only(false), &dns_only, None)
            .expect("no IP SAN is fine without hostname verification");
        for verify_hostname in [true, false] {
            let err = handshake(&pki.server_only(verify_hostname), &foreign, None)
                .expect_err("a certificate of another CA was accepted");
            assert!(err.contains("certificate verify failed"), "{err}");
        }

        // Mutual TLS: the server requires a client certificate of the CA.
        handshake(&pki.mutual(true), &with_ip, Some(&pki.ca.cert)).expect("mutual TLS");
        handshake(&pki.server_only(true), &with_ip, Some(&pki.ca.cert))
            .expect_err("the server required a client certificate");
    }
}
