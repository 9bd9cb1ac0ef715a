//! Throwaway TLS material for tests against a local Redis over TLS: a CA, a
//! server certificate it signed for `127.0.0.1` and `localhost` (usable as a
//! client certificate too, as Redis Cluster nodes and replicas use theirs),
//! and a client certificate for mutual TLS. Made with the `openssl` command
//! line (ECDSA P-256, two days) in a directory of their own, removed on drop.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::process::Command;

pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// A new CA with a server and a client certificate, in a fresh temporary directory.
    pub async fn generate() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "tickmesh-certs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let certs = Self { dir };
        certs.make().await?;
        Ok(certs)
    }

    async fn make(&self) -> anyhow::Result<()> {
        let d = &self.dir;
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth, clientAuth\n\
             subjectAltName = IP:127.0.0.1, DNS:localhost\n",
        )?;
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = clientAuth\n",
        )?;
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(d, &["req", "-x509"])
            .args(key)
            .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"])
            .args(["-subj", "/CN=tickmesh test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .run()
            .await?;
        for (name, subject) in [("server", "/CN=127.0.0.1"), ("client", "/CN=tickmesh")] {
            openssl(d, &["req"])
                .args(key)
                .args(["-keyout", &format!("{name}.key")])
                .args(["-out", &format!("{name}.csr"), "-subj", subject])
                .run()
                .await?;
            openssl(d, &["x509", "-req", "-in", &format!("{name}.csr")])
                .args(["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"])
                .args(["-days", "2", "-out", &format!("{name}.crt")])
                .args(["-extfile", &format!("{name}.ext")])
                .run()
                .await?;
        }
        Ok(())
    }

    /// The CA certificate (PEM): the server's `tls-ca-cert-file`, the client's
    /// `redis.tls_ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    pub fn server_key_file(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    pub fn client_key_file(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

struct Openssl(Command);

fn openssl(dir: &Path, args: &[&str]) -> Openssl {
    let mut command = Command::new("openssl");
    command.current_dir(dir).args(args);
    Openssl(command)
}

impl Openssl {
    fn args<'a>(mut self, args: impl IntoIterator<Item = &'a str>) -> Self {
        self.0.args(args);
        self
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let out = self
            .0
            .output()
            .await
            .context("running openssl (apt-get install -y openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl {:?} failed: {}",
                self.0.as_std().get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}
