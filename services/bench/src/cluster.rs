//! `--redis-cluster`: the same workload on a local Redis Cluster (3 masters,
//! 1 replica each), with the share of the work each master served, read from
//! every master's `INFO` before and after each measured round over a direct
//! connection to its port.

use std::time::{Duration, Instant};

use anyhow::Context;
use tickmesh_runtime::redis_cluster::{ClusterNode, RedisCluster};

pub const MASTERS: usize = 3;
pub const REPLICAS: usize = 1;

/// A local cluster and its masters (the bench kills none, so they stay).
pub struct BenchCluster {
    _cluster: RedisCluster,
    masters: Vec<ClusterNode>,
    url: String,
}

impl BenchCluster {
    pub async fn start() -> anyhow::Result<Self> {
        // A generous node timeout: a loaded 2-core machine must not see a
        // failover mid-bench.
        let cluster = RedisCluster::start(MASTERS, REPLICAS, Duration::from_secs(15))
            .await
            .context("starting a local Redis Cluster (apt-get install -y redis-server)")?;
        let mut masters: Vec<ClusterNode> = cluster
            .topology()
            .await?
            .into_iter()
            // A replica another node's gossip has not re-flagged yet shows
            // as a master without slots.
            .filter(|n| n.master && !n.slots.is_empty())
            .collect();
        masters.sort_by_key(|n| n.slots.first().map_or(0, |s| s.0));
        anyhow::ensure!(masters.len() == MASTERS, "masters: {masters:?}");
        let url = cluster.url();
        Ok(Self {
            _cluster: cluster,
            masters,
            url,
        })
    }

    /// `redis+cluster://127.0.0.1:p1,…` (every node as a seed).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn describe(&self) -> String {
        format!(
            "{MASTERS} masters x {REPLICAS} replica ({})",
            self.masters
                .iter()
                .map(|m| format!("{} slots {}", m.port, slot_ranges(&m.slots)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The master serving `tag`'s hash slot (index into the masters).
    pub fn master_of(&self, tag: &str) -> usize {
        let slot = key_slot(tag.as_bytes());
        self.masters
            .iter()
            .position(|m| m.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .unwrap_or(0)
    }

    /// How many of `tags` (hash tags of the workload's keys) each master serves.
    pub fn key_counts<'a>(&self, tags: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
        let mut counts = vec![0; self.masters.len()];
        for t in tags {
            counts[self.master_of(t)] += 1;
        }
        counts
    }

    /// Every master's commands processed and CPU seconds used so far.
    pub async fn snapshot(&self) -> anyhow::Result<Vec<NodeStats>> {
        let mut out = Vec::with_capacity(self.masters.len());
        for m in &self.masters {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", m.port))?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO")
                .arg("stats")
                .arg("cpu")
                .query_async(&mut conn)
                .await?;
            out.push(NodeStats::parse(&info));
        }
        Ok(out)
    }

    /// Starts measuring a round: snapshot now, [`RoundMeter::stop`] after it.
    pub async fn start_round(&self) -> anyhow::Result<RoundMeter> {
        Ok(RoundMeter {
            before: self.snapshot().await?,
            started: Instant::now(),
        })
    }
}

pub struct RoundMeter {
    before: Vec<NodeStats>,
    started: Instant,
}

impl RoundMeter {
    /// Adds this round's per-master deltas to `usage`.
    pub async fn stop(self, cluster: &BenchCluster, usage: &mut Usage) -> anyhow::Result<()> {
        let elapsed = self.started.elapsed();
        let after = cluster.snapshot().await?;
        if usage.commands.is_empty() {
            usage.commands = vec![0; after.len()];
            usage.cpu = vec![0.0; after.len()];
        }
        for (i, (b, a)) in self.before.iter().zip(&after).enumerate() {
            usage.commands[i] += a.commands.saturating_sub(b.commands);
            usage.cpu[i] += (a.cpu - b.cpu).max(0.0);
        }
        usage.elapsed += elapsed;
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
pub struct NodeStats {
    pub commands: u64,
    /// used_cpu_sys + used_cpu_user, seconds.
    pub cpu: f64,
}

impl NodeStats {
    fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let num = |name: &str| {
            field(name)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Self {
            commands: field("total_commands_processed")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            cpu: num("used_cpu_sys") + num("used_cpu_user"),
        }
    }
}

/// Per-master work summed over the measured rounds.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub commands: Vec<u64>,
    pub cpu: Vec<f64>,
    pub elapsed: Duration,
}

impl Usage {
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = self.commands.iter().sum();
        self.commands
            .iter()
            .map(|c| *c as f64 / total.max(1) as f64)
            .collect()
    }

    /// Prints one line per master: key share (of `keys`), command share,
    /// commands/s, workload `unit`s/s served at `rate` (the topology's
    /// median), CPU busy, and the Redis-side ceiling that implies.
    pub fn print(&self, cluster: &BenchCluster, keys: &[usize], rate: f64, unit: &str) {
        let shares = self.shares();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let total_keys: usize = keys.iter().sum();
        let mut ceilings = Vec::new();
        for (i, m) in cluster.masters.iter().enumerate() {
            let busy = self.cpu.get(i).copied().unwrap_or(0.0) / secs;
            let served = rate * shares[i];
            println!(
                "    master :{} (slots {:<11}) keys {:>3} ({:>4.1}%)  commands {:>4.1}%  {:>8.0} commands/s  {:>8.0} {unit}/s  CPU {:>3.0}% of a core",
                m.port,
                slot_ranges(&m.slots),
                keys.get(i).copied().unwrap_or(0),
                100.0 * keys.get(i).copied().unwrap_or(0) as f64 / total_keys.max(1) as f64,
                100.0 * shares[i],
                self.commands[i] as f64 / secs,
                served,
                100.0 * busy,
            );
            if busy > 0.0 {
                ceilings.push(served / busy);
            }
        }
        let max_share = shares.iter().copied().fold(0.0, f64::max);
        if !ceilings.is_empty() && max_share > 0.0 {
            let per_master = ceilings.iter().sum::<f64>() / ceilings.len() as f64;
            println!(
                "    per master at 100% of a core ≈ {per_master:.0} {unit}/s; with the busiest master at {:.1}% of the commands, {MASTERS} masters on cores of their own ≈ {:.0} {unit}/s ({:.1}x one master) before the mesh is the limit",
                100.0 * max_share,
                per_master / max_share,
                1.0 / max_share
            );
        }
    }
}

fn slot_ranges(slots: &[(u16, u16)]) -> String {
    slots
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, or of
/// the whole key without one, mod 16384).
pub fn key_slot(key: &[u8]) -> u16 {
    tickmesh_runtime::redis_cluster::key_slot(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_cluster_keyslot() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"x:{foo}:y"), 12182);
        assert_eq!(key_slot(b"{}foo"), key_slot(b"{}foo"));
        assert_ne!(key_slot(b"{}foo"), key_slot(b"foo"));
    }
}
