//! A child `redis-server` the process owns: `tickmesh dev` starts one when no
//! Redis is configured, benchmarks start one to measure against, and tests
//! start one per test (never a Redis someone left running), in plain TCP or
//! TLS only, with an ACL user or not ([`ServerOptions`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use redis::{ClientTlsConfig, TlsCertificates};
use tokio::process::{Child, Command};

use crate::test_certs::TestCerts;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    fsync: Option<Fsync>,
    remove_dir: bool,
    /// Port of the primary this server replicates (`--replicaof`).
    replica_of: Option<u16>,
    /// A Redis Cluster node with this `cluster-node-timeout`.
    cluster_node_timeout: Option<Duration>,
    options: ServerOptions,
}

/// How a server is reached: plain TCP and the default user unless set.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Listens on a TLS port only (`--port 0 --tls-port N`); a cluster node
    /// also speaks TLS on its cluster bus and replicas to their master.
    pub tls: Option<ServerTls>,
    /// An ACL user with every permission: `(name, password)`.
    pub user: Option<(String, String)>,
    /// Turns the `default` user off, so every client must AUTH as `user`
    /// (replicas too: `masteruser` / `masterauth`).
    pub default_user_off: bool,
}

/// The TLS files of a server, and the client certificate the harness's own
/// connections (and `redis-cli`) present.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    /// `tls-auth-clients`: clients must present a certificate the CA signed.
    pub auth_clients: bool,
}

impl ServerTls {
    pub fn from_certs(certs: &TestCerts, auth_clients: bool) -> Self {
        Self {
            ca_file: certs.ca_file(),
            cert_file: certs.server_cert_file(),
            key_file: certs.server_key_file(),
            client_cert_file: certs.client_cert_file(),
            client_key_file: certs.client_key_file(),
            auth_clients,
        }
    }

    /// The certificates a client of this server uses: the CA, and the
    /// client certificate.
    pub fn client_certificates(&self) -> anyhow::Result<TlsCertificates> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(TlsCertificates {
            client_tls: Some(ClientTlsConfig {
                client_cert: read(&self.client_cert_file)?,
                client_key: read(&self.client_key_file)?,
            }),
            root_cert: Some(read(&self.ca_file)?),
        })
    }

    /// `redis-cli` arguments to reach the server.
    pub fn cli_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca_file.clone().into(),
            "--cert".into(),
            self.client_cert_file.clone().into(),
            "--key".into(),
            self.client_key_file.clone().into(),
        ]
    }
}

impl ServerOptions {
    /// `redis-cli` arguments to reach a server started with these options.
    pub fn cli_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = self
            .tls
            .as_ref()
            .map(ServerTls::cli_args)
            .unwrap_or_default();
        if let Some((user, password)) = &self.user {
            args.extend([
                "--user".into(),
                user.into(),
                "--pass".into(),
                password.into(),
            ]);
            // redis-cli warns about a password on the command line.
            args.push("--no-auth-warning".into());
        }
        args
    }
}

/// When a persistent server fsyncs its append-only file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// `appendfsync everysec`: a crash loses up to about a second of writes.
    EverySec,
    /// `appendfsync always`: a write is on disk before Redis answers it.
    Always,
}

impl RedisServer {
    /// Starts a throwaway server on a free loopback port, with no persistence,
    /// in a fresh temporary directory.
    pub async fn start_ephemeral() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "tickmesh-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self::start_in(&dir, false).await?;
        server.remove_dir = true;
        Ok(server)
    }

    /// Like [`RedisServer::start_ephemeral`], reached as `options` say (TLS,
    /// an ACL user).
    pub async fn start_ephemeral_with(options: ServerOptions) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "tickmesh-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut server = Self::start_on_free_port(&dir, None, None, None, options).await?;
        server.remove_dir = true;
        Ok(server)
    }

    /// Starts a server on a free loopback port keeping its data (AOF,
    /// `appendfsync everysec`) in `dir` when `persistent`.
    pub async fn start_in(dir: &Path, persistent: bool) -> anyhow::Result<Self> {
        Self::start_with(dir, persistent.then_some(Fsync::EverySec)).await
    }

    /// Starts a server on a free loopback port in `dir`, with an append-only
    /// file fsynced as `fsync` says (`None`: no persistence).
    pub async fn start_with(dir: &Path, fsync: Option<Fsync>) -> anyhow::Result<Self> {
        Self::start(dir, fsync, None).await
    }

    /// Starts a replica of the loopback server on `primary_port`, in `dir`
    /// (persistence as `fsync` says). It answers PING before its first sync
    /// is done: see [`RedisServer::wait_for_replicas`] on the primary.
    pub async fn start_replica(
        dir: &Path,
        fsync: Option<Fsync>,
        primary_port: u16,
    ) -> anyhow::Result<Self> {
        Self::start(dir, fsync, Some(primary_port)).await
    }

    async fn start(
        dir: &Path,
        fsync: Option<Fsync>,
        replica_of: Option<u16>,
    ) -> anyhow::Result<Self> {
        Self::start_on_free_port(dir, fsync, replica_of, None, ServerOptions::default()).await
    }

    /// Starts a Redis Cluster node (not yet in a cluster) in `dir` on a free
    /// port whose cluster bus port (port + 10000) is free too; see
    /// [`crate::redis_cluster::RedisCluster`].
    pub async fn start_cluster_node(dir: &Path, node_timeout: Duration) -> anyhow::Result<Self> {
        Self::start_cluster_node_with(dir, node_timeout, ServerOptions::default()).await
    }

    /// Like [`RedisServer::start_cluster_node`], reached as `options` say.
    pub async fn start_cluster_node_with(
        dir: &Path,
        node_timeout: Duration,
        options: ServerOptions,
    ) -> anyhow::Result<Self> {
        Self::start_on_free_port(dir, None, None, Some(node_timeout), options).await
    }

    /// Like [`RedisServer::start_cluster_node_with`], with an AOF fsynced as
    /// `fsync` says (`None`: no persistence).
    pub async fn start_cluster_node_persistent(
        dir: &Path,
        node_timeout: Duration,
        options: ServerOptions,
        fsync: Option<Fsync>,
    ) -> anyhow::Result<Self> {
        Self::start_on_free_port(dir, fsync, None, Some(node_timeout), options).await
    }

    async fn start_on_free_port(
        dir: &Path,
        fsync: Option<Fsync>,
        replica_of: Option<u16>,
        cluster_node_timeout: Option<Duration>,
        options: ServerOptions,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // A port found free can be taken by another process (a parallel
        // test's server) before redis-server binds it: try a few.
        let mut attempt = 0;
        loop {
            let port = if cluster_node_timeout.is_some() {
                free_port_with_bus()?
            } else {
                free_port()?
            };
            let mut server = Self {
                child: None,
                port,
                dir: dir.to_path_buf(),
                fsync,
                remove_dir: false,
                replica_of,
                cluster_node_timeout,
                options: options.clone(),
            };
            match server.spawn().await {
                Ok(()) => return Ok(server),
                Err(e) if attempt < 4 && e.to_string().contains("exited at start") => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until `n` replicas are connected to this server and online
    /// (`INFO replication`).
    pub async fn wait_for_replicas(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let client = self.client()?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && let Ok(info) = redis::cmd("INFO")
                    .arg("replication")
                    .query_async::<String>(&mut conn)
                    .await
                && info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count()
                    >= n
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("fewer than {n} replicas online within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (`--dir`), where the append-only files live.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Starts it again on the same port with the data directory's contents
    /// replaced by `saved` (a copy taken earlier with the server running under
    /// `appendfsync always`, or stopped): as a server that came back from a
    /// crash with less than it had acknowledged (an AOF that lost its tail, a
    /// failover to a replica that was behind).
    pub async fn restart_from(&mut self, saved: &Path) -> anyhow::Result<()> {
        self.kill().await;
        std::fs::remove_dir_all(&self.dir).ok();
        copy_dir(saved, &self.dir)?;
        self.spawn().await
    }

    /// Copies the data directory to `to` (see [`RedisServer::restart_from`]).
    pub fn save_data_dir(&self, to: &Path) -> anyhow::Result<()> {
        std::fs::remove_dir_all(to).ok();
        copy_dir(&self.dir, to)
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` over TLS (no user).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// How the server is reached (TLS files, ACL user).
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// A client of the harness's own: over TLS with the client certificate,
    /// as the ACL user when there is one.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        let url = match &self.options.user {
            Some((user, password)) => {
                self.url()
                    .replacen("://", &format!("://{user}:{password}@"), 1)
            }
            None => self.url(),
        };
        let certs = match &self.options.tls {
            Some(tls) => Some(tls.client_certificates()?),
            None => None,
        };
        Ok(crate::redis_tls::client(&url, certs.as_ref())?)
    }

    /// Runs one command on its own connection, within half a second each to
    /// connect and to answer; the reply as text.
    pub async fn query(&self, args: &[&str]) -> anyhow::Result<String> {
        let client = self.client()?;
        let mut conn = tokio::time::timeout(
            Duration::from_millis(500),
            client.get_multiplexed_async_connection(),
        )
        .await
        .context("connecting")??;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        Ok(
            tokio::time::timeout(Duration::from_millis(500), cmd.query_async(&mut conn))
                .await
                .context("answering")??,
        )
    }

    /// Kills the server (as a crash would: SIGKILL).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port (and data directory).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.spawn().await
    }

    /// Starts it again on the same port and data directory with another
    /// persistence setting (as an operator who changed redis.conf would).
    pub async fn restart_with(&mut self, fsync: Option<Fsync>) -> anyhow::Result<()> {
        self.kill().await;
        self.fsync = fsync;
        self.spawn().await
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let binary = which_redis().context(
            "redis-server is not installed: run `apt-get install -y redis-server` (./deploy/dev.sh and ./deploy/test.sh do this)",
        )?;
        let mut command = Command::new(binary);
        match &self.options.tls {
            None => {
                command.arg("--port").arg(self.port.to_string());
            }
            Some(tls) => {
                command
                    .args(["--port", "0", "--tls-port"])
                    .arg(self.port.to_string())
                    .arg("--tls-cert-file")
                    .arg(&tls.cert_file)
                    .arg("--tls-key-file")
                    .arg(&tls.key_file)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca_file)
                    .arg("--tls-auth-clients")
                    .arg(if tls.auth_clients { "yes" } else { "no" })
                    .args(["--tls-replication", "yes"]);
                if self.cluster_node_timeout.is_some() {
                    command.args(["--tls-cluster", "yes"]);
                }
            }
        }
        if let Some((user, password)) = &self.options.user {
            command
                .args(["--user", user.as_str(), "on"])
                .arg(format!(">{password}"))
                .args(["~*", "&*", "+@all"]);
            if self.options.default_user_off {
                command.args(["--user", "default", "off"]);
                command.args([
                    "--masteruser",
                    user.as_str(),
                    "--masterauth",
                    password.as_str(),
                ]);
            }
        }
        command
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("yes")
            .arg("--maxclients")
            .arg("20000");
        match self.fsync {
            Some(fsync) => {
                command
                    .arg("--appendonly")
                    .arg("yes")
                    .arg("--appendfsync")
                    .arg(match fsync {
                        Fsync::EverySec => "everysec",
                        Fsync::Always => "always",
                    });
            }
            None => {
                command.arg("--appendonly").arg("no");
            }
        }
        if let Some(timeout) = self.cluster_node_timeout {
            command
                .arg("--cluster-enabled")
                .arg("yes")
                .arg("--cluster-config-file")
                .arg(self.dir.join("nodes.conf"))
                .arg("--cluster-node-timeout")
                .arg(timeout.as_millis().to_string());
        }
        if let Some(primary) = self.replica_of {
            command
                .arg("--replicaof")
                .arg("127.0.0.1")
                .arg(primary.to_string());
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().context("starting redis-server")?;
        let pid = child.id();
        self.child = Some(child);
        let client = self.client()?;
        for _ in 0..200 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && let Ok(info) = redis::cmd("INFO")
                    .arg("server")
                    .query_async::<String>(&mut conn)
                    .await
            {
                // Only this child will do: another test's server can take the
                // port between finding it free and this one binding it, and
                // answers too (this one then exits). Taken for this one, it
                // would join two tests' clusters into one sharing their keys.
                let answered = info
                    .lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|p| p.trim().parse::<u32>().ok());
                if answered.is_none() || answered != pid {
                    self.kill().await;
                    bail!(
                        "redis-server exited at start: port {} was taken by another redis-server (pid {answered:?}) before it bound it",
                        self.port
                    );
                }
                // PING fails while the data set loads.
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "redis-server exited at start ({status}); is port {} free?",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("redis-server did not answer PING within 5 s")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A free port whose cluster bus port (+10000) is free as well.
fn free_port_with_bus() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port > 55_000 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair (port, port + 10000) on 127.0.0.1")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn which_redis() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port another server took between being found free and this one
    /// binding it is refused, not taken for this server because that one
    /// answers on it (two tests' Redis Clusters then shared a node and merged
    /// into one).
    #[tokio::test]
    async fn a_port_another_server_answers_on_is_not_taken_for_this_one() {
        let other = RedisServer::start_ephemeral().await.unwrap();
        let dir = std::env::temp_dir().join(format!(
            "tickmesh-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut server = RedisServer {
            child: None,
            port: other.port(),
            dir: dir.clone(),
            fsync: None,
            remove_dir: true,
            replica_of: None,
            cluster_node_timeout: None,
            options: ServerOptions::default(),
        };
        let err = server.spawn().await.unwrap_err().to_string();
        assert!(
            err.contains("exited at start") && err.contains("another redis-server"),
            "{err}"
        );
        assert!(server.child.is_none(), "its own child is stopped");
    }
}
