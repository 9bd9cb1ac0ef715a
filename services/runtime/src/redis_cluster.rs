//! A real local Redis Cluster for tests and benchmarks: `masters` ×
//! (1 + `replicas`) `redis-server --cluster-enabled yes` processes on free
//! loopback ports, joined with `redis-cli --cluster create
//! --cluster-replicas N --cluster-yes`, with a short `cluster-node-timeout`
//! so a killed master's replica is promoted within a second or two. With
//! [`RedisCluster::start_with`] the nodes speak TLS only (clients, cluster
//! bus and replication) and can require an ACL user.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::redis_server::{Fsync, RedisServer, ServerOptions};

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// For a replica: the id of its master.
    pub master_id: Option<String>,
    /// Slot ranges a master serves.
    pub slots: Vec<(u16, u16)>,
    /// Marked failed by the cluster (`fail` flag).
    pub failed: bool,
}

pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: PathBuf,
    options: ServerOptions,
}

impl RedisCluster {
    /// Starts and joins the cluster, and waits until every node reports
    /// `cluster_state:ok` with all 16,384 slots assigned.
    pub async fn start(
        masters: usize,
        replicas: usize,
        node_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with(masters, replicas, node_timeout, ServerOptions::default()).await
    }

    /// Like [`RedisCluster::start`], every node reached as `options` say
    /// (TLS only, an ACL user).
    pub async fn start_with(
        masters: usize,
        replicas: usize,
        node_timeout: Duration,
        options: ServerOptions,
    ) -> anyhow::Result<Self> {
        Self::start_nodes(masters, replicas, node_timeout, options, None).await
    }

    /// Like [`RedisCluster::start`], every node with an AOF fsynced as
    /// `fsync` says: a node restarted before its failover comes back with
    /// what it had acknowledged.
    pub async fn start_persistent(
        masters: usize,
        replicas: usize,
        node_timeout: Duration,
        fsync: Fsync,
    ) -> anyhow::Result<Self> {
        Self::start_nodes(
            masters,
            replicas,
            node_timeout,
            ServerOptions::default(),
            Some(fsync),
        )
        .await
    }

    async fn start_nodes(
        masters: usize,
        replicas: usize,
        node_timeout: Duration,
        options: ServerOptions,
        fsync: Option<Fsync>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let dir = std::env::temp_dir().join(format!(
            "tickmesh-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut nodes = Vec::new();
        for i in 0..masters * (1 + replicas) {
            nodes.push(
                RedisServer::start_cluster_node_persistent(
                    &dir.join(format!("n{i}")),
                    node_timeout,
                    options.clone(),
                    fsync,
                )
                .await?,
            );
        }
        let cluster = Self {
            nodes,
            dir,
            options,
        };
        let mut create = cluster.cli()?;
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let out = create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .output()
            .await
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_ok(Duration::from_secs(30)).await?;
        // A replica that has not synced yet cannot be promoted: wait for
        // every replica's link to its master.
        cluster
            .wait_replicas_synced(replicas * masters, Duration::from_secs(30))
            .await?;
        // A node that also knows another cluster's nodes (two tests' creates
        // that shared a node) joined both into one, whose tests share keys.
        for node in &cluster.nodes {
            let info = node.query(&["CLUSTER", "INFO"]).await?;
            let known: usize = info
                .lines()
                .find_map(|l| l.strip_prefix("cluster_known_nodes:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            anyhow::ensure!(
                known <= cluster.nodes.len(),
                "the node on port {} knows {known} cluster nodes, more than this cluster's {}",
                node.port(),
                cluster.nodes.len()
            );
        }
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` over TLS) of every node
    /// (seed nodes for a client).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// The `redis+cluster://127.0.0.1:p1,…` URL (`rediss+cluster://` over
    /// TLS) services connect with (every node a seed).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.options.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", seeds.join(","))
    }

    /// How the nodes are reached (TLS files, ACL user).
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// `redis-cli` with the arguments to reach the nodes.
    fn cli(&self) -> anyhow::Result<Command> {
        let mut cli = Command::new(which_redis_cli()?);
        cli.args(self.options.cli_args());
        Ok(cli)
    }

    /// One command to the node on `port` (see [`RedisServer::query`]).
    pub async fn query(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        match self.nodes.iter().find(|n| n.port() == port) {
            Some(node) => node.query(args).await,
            None => bail!("no node on port {port}"),
        }
    }

    /// The master that serves `key`'s hash slot now.
    pub async fn master_of(&self, key: &str) -> anyhow::Result<ClusterNode> {
        let slot = key_slot(key);
        self.topology()
            .await?
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .with_context(|| format!("no live master serves slot {slot} of {key:?}"))
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port()).collect()
    }

    /// The cluster's view, as the first live node reports it.
    pub async fn topology(&self) -> anyhow::Result<Vec<ClusterNode>> {
        let mut last = None;
        for node in &self.nodes {
            match node.query(&["CLUSTER", "NODES"]).await {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no nodes")))
    }

    /// Kills the node on `port` with SIGKILL (as `kill -9`).
    pub async fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill().await;
        }
    }

    /// Starts the node on `port` again on its data directory (its
    /// `nodes.conf` kept): a killed master comes back as a replica of the
    /// replica that took its slots, as an operator's restart would.
    pub async fn restart(&mut self, port: u16) -> anyhow::Result<()> {
        match self.nodes.iter_mut().find(|n| n.port() == port) {
            Some(node) => node.restart().await,
            None => bail!("no node on port {port}"),
        }
    }

    /// Moves `slots` hash slots from the master `from` to the master `to`
    /// (node ids) with `redis-cli --cluster reshard`, as an operator would
    /// while the cluster serves traffic.
    pub async fn reshard(&self, from: &str, to: &str, slots: u32) -> anyhow::Result<()> {
        let seed = self
            .nodes
            .iter()
            .map(|n| n.port())
            .next()
            .context("no nodes")?;
        let out = self
            .cli()?
            .arg("--cluster")
            .arg("reshard")
            .arg(format!("127.0.0.1:{seed}"))
            .args(["--cluster-from", from, "--cluster-to", to])
            .args(["--cluster-slots", &slots.to_string()])
            .args(["--cluster-pipeline", "100"])
            .arg("--cluster-yes")
            .output()
            .await
            .context("running redis-cli --cluster reshard")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster reshard failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Waits until `n` nodes are replicas whose link to their master is up.
    pub async fn wait_replicas_synced(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut synced = 0;
            for node in &self.nodes {
                if let Ok(info) = node.query(&["INFO", "replication"]).await
                    && info.contains("role:slave")
                    && info.contains("master_link_status:up")
                {
                    synced += 1;
                }
            }
            if synced >= n {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{synced} of {n} replicas synced with their masters within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every live node says `cluster_state:ok` and every slot is
    /// served by a master that answers. Right after a master is killed the
    /// cluster still says ok (it notices after `cluster-node-timeout`), so
    /// this waits for its replica's promotion, not just for a quiet moment.
    pub async fn wait_ok(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut all_ok = true;
            let mut live = Vec::new();
            for node in &self.nodes {
                match node.query(&["CLUSTER", "INFO"]).await {
                    Ok(info) => {
                        live.push(node.port());
                        all_ok &= info.contains("cluster_state:ok")
                            && info.contains("cluster_slots_ok:16384");
                    }
                    Err(_) => continue,
                }
            }
            if all_ok && !live.is_empty() && self.masters_answer(&live).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the cluster did not reach cluster_state:ok within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl RedisCluster {
    /// Every master that serves slots, in each live node's view, is one of
    /// the `live` nodes.
    async fn masters_answer(&self, live: &[u16]) -> bool {
        for &port in live {
            let Ok(text) = self.query(port, &["CLUSTER", "NODES"]).await else {
                return false;
            };
            let serving_dead = parse_nodes(&text)
                .iter()
                .any(|n| n.master && !n.slots.is_empty() && !live.contains(&n.port));
            if serving_dead {
                return false;
            }
        }
        true
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The hash slot of a key (CRC16 of its hash tag, mod 16,384).
pub fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    let slot = redis::cluster_routing::Slot::for_key(key);
    // `Slot` keeps its number private; its Debug form is `Slot(n)`.
    format!("{slot:?}")
        .trim_start_matches("Slot(")
        .trim_end_matches(')')
        .parse()
        .expect("a slot number")
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Parses `CLUSTER NODES`.
pub fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags: Vec<&str> = f[2].split(',').collect();
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(ClusterNode {
                id: f[0].to_string(),
                port,
                master: flags.contains(&"master"),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots,
                failed: flags.contains(&"fail"),
            })
        })
        .collect()
}

fn which_redis_cli() -> anyhow::Result<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let path = PathBuf::from(dir).join("redis-cli");
        if path.exists() {
            return Ok(path);
        }
    }
    bail!(
        "redis-cli is not installed: run `apt-get install -y redis-server` (it brings redis-tools)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines() {
        let text = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-abc]\n\
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 connected 10923-16383";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert!(!nodes[0].master);
        assert_eq!(nodes[0].port, 30004);
        assert_eq!(
            nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(nodes[1].master && !nodes[1].failed);
        assert_eq!(nodes[1].slots, [(0, 5460)]);
        assert!(nodes[2].failed);
        assert_eq!(nodes[2].slots, [(10923, 16383)]);
    }

    /// Three masters and three replicas form a cluster; a master killed with
    /// SIGKILL is replaced by its replica, and the cluster serves every slot
    /// again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn six_nodes_form_a_cluster_and_survive_a_killed_master() {
        let mut cluster = RedisCluster::start(3, 1, Duration::from_millis(1000))
            .await
            .expect("a local Redis Cluster (apt-get install -y redis-server)");
        let nodes = cluster.topology().await.unwrap();
        let masters: Vec<&ClusterNode> = nodes.iter().filter(|n| n.master).collect();
        assert_eq!((masters.len(), nodes.len()), (3, 6), "{nodes:?}");
        let served: u32 = masters
            .iter()
            .flat_map(|m| m.slots.iter())
            .map(|(a, b)| u32::from(b - a) + 1)
            .sum();
        assert_eq!(served, 16_384);
        let victim = masters[0].clone();
        let started = tokio::time::Instant::now();
        cluster.kill(victim.port).await;
        // The victim's replica takes its slots.
        let mut promoted = None;
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(now) = cluster.topology().await
                && let Some(n) = now.iter().find(|n| {
                    n.master && !n.failed && n.port != victim.port && n.slots == victim.slots
                })
            {
                promoted = Some(n.port);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let promoted = promoted.unwrap_or_else(|| {
            panic!(
                "no replica took the killed master's slots {:?}",
                victim.slots
            )
        });
        assert_ne!(promoted, victim.port);
        cluster.wait_ok(Duration::from_secs(20)).await.unwrap();
        eprintln!("failover took {:?}", started.elapsed());
    }
}
