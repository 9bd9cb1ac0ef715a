//! `tickmesh bench ingest`, metrics off against on: the same Publish rounds
//! against two mesh processes (`tickmesh serve`, MarketFeed only) on one
//! redis-server, one without `metrics.listen` (no recorder: every instrument
//! a no-op) and one with it while `/metrics` is scraped every second, rounds
//! alternating between them. Separate processes, because the recorder is
//! global to a process and cannot be taken back once installed.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tickmesh_runtime::redis_server::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::ingest::{IngestOptions, make_trades, mesh_round};
use super::{median, percentile};

#[derive(Clone, Debug, Default)]
pub struct MetricsReport {
    pub off_trades_per_s: f64,
    pub on_trades_per_s: f64,
    pub off_latency_median: Duration,
    pub off_latency_p99: Duration,
    pub on_latency_median: Duration,
    pub on_latency_p99: Duration,
    /// CPU time of the mesh process per trade published, in microseconds
    /// (all its threads; the scrapes included for metrics on).
    pub off_cpu_us_per_trade: f64,
    pub on_cpu_us_per_trade: f64,
    /// Scrapes of the metrics-on process during its rounds.
    pub scrapes: u64,
    /// Size of the last scrape, in bytes.
    pub scrape_bytes: usize,
}

impl MetricsReport {
    /// Throughput with metrics on over off.
    pub fn ratio(&self) -> f64 {
        self.on_trades_per_s / self.off_trades_per_s
    }
}

/// A `tickmesh serve` child process; killed when dropped.
pub(crate) struct MeshProcess {
    child: Child,
    pub(crate) endpoint: String,
}

impl MeshProcess {
    /// CPU time the process has used so far (user + system, all threads),
    /// from /proc (Linux; zero elsewhere).
    pub(crate) fn cpu(&self) -> Duration {
        let Some(pid) = self.child.id() else {
            return Duration::ZERO;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Duration::ZERO;
        };
        // Fields after the command name (which may hold spaces): state is
        // the 3rd field, utime the 14th and stime the 15th, in clock ticks
        // (100 per second on Linux).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Duration::from_millis((ticks(11) + ticks(12)) * 10)
    }

    /// Read and write system calls, and context switches of all threads,
    /// so far (from /proc; zero elsewhere): what a change of CPU per
    /// message may come from besides the code itself.
    /// The process id (0 once it has been reaped).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub(crate) fn activity(&self) -> Activity {
        let Some(pid) = self.child.id() else {
            return Activity::default();
        };
        let field = |text: &str, name: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(name))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        };
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let mut switches = 0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let status =
                    std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
                switches += field(&status, "voluntary_ctxt_switches:")
                    + field(&status, "nonvoluntary_ctxt_switches:");
            }
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        Activity {
            syscalls: field(&io, "syscr:") + field(&io, "syscw:"),
            switches,
            rss_kib: field(&status.replace(" kB", ""), "VmRSS:"),
        }
    }
}

/// System calls and context switches of a process (see [`MeshProcess::activity`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Activity {
    pub(crate) syscalls: u64,
    pub(crate) switches: u64,
    /// Resident memory at the end (KiB).
    pub(crate) rss_kib: u64,
}

impl Activity {
    pub(crate) fn since(self, before: Activity) -> Activity {
        Activity {
            syscalls: self.syscalls.saturating_sub(before.syscalls),
            switches: self.switches.saturating_sub(before.switches),
            rss_kib: self.rss_kib,
        }
    }
}

/// A port that was free a moment ago.
async fn free_port() -> anyhow::Result<u16> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port())
}

async fn spawn_mesh(
    exe: &Path,
    redis_url: &str,
    prefix: &str,
    batch: usize,
    metrics: Option<u16>,
) -> anyhow::Result<MeshProcess> {
    spawn_serve(
        exe,
        redis_url,
        prefix,
        &[
            ("TICKMESH_SERVICES_ENABLED", "marketfeed".into()),
            ("TICKMESH_MARKETFEED_MAX_BATCH_TRADES", batch.to_string()),
            (
                "TICKMESH_METRICS_LISTEN",
                metrics
                    .map(|p| format!("127.0.0.1:{p}"))
                    .unwrap_or_default(),
            ),
        ],
    )
    .await
}

/// `tickmesh serve` on `redis_url` under key prefix `prefix`, with
/// auto-registration and `env` on top; returns once it answers health checks.
pub(crate) async fn spawn_serve(
    exe: &Path,
    redis_url: &str,
    prefix: &str,
    env: &[(&str, String)],
) -> anyhow::Result<MeshProcess> {
    let port = free_port().await?;
    let child = Command::new(exe)
        .arg("serve")
        .env_remove("TICKMESH_CONFIG")
        .env("TICKMESH_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("TICKMESH_REDIS_URL", redis_url)
        .env("TICKMESH_REDIS_KEY_PREFIX", prefix)
        .env("TICKMESH_MARKETFEED_AUTO_REGISTER_INSTRUMENTS", "true")
        .env("TICKMESH_TELEMETRY_LOG_LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} serve", exe.display()))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Ready: the process serves and Redis answers it.
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(endpoint.clone())?
            .connect()
            .await
            && HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} serve did not answer on {endpoint} within 30 s",
            exe.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(MeshProcess { child, endpoint })
}

/// GET /metrics once; the body's size.
async fn scrape(port: u16) -> anyhow::Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    anyhow::ensure!(
        response.starts_with(b"HTTP/1.1 200"),
        "metrics scrape failed"
    );
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| response.len() - i - 4)
        .unwrap_or(0);
    Ok(body)
}

pub async fn metrics_comparison(
    options: &IngestOptions,
    exe: &Path,
) -> anyhow::Result<MetricsReport> {
    let redis = RedisServer::start_ephemeral().await?;
    let batch = options.batch.max(1000);
    let metrics_port = free_port().await?;
    let mut off = spawn_mesh(exe, &redis.url(), "bench-metrics-off", batch, None).await?;
    let mut on = spawn_mesh(
        exe,
        &redis.url(),
        "bench-metrics-on",
        batch,
        Some(metrics_port),
    )
    .await?;
    scrape(metrics_port)
        .await
        .context("the metrics-on mesh serves /metrics")?;
    println!();
    println!(
        "metrics: off on {} (no metrics.listen), on on {} (scraped every second), redis {}",
        off.endpoint,
        on.endpoint,
        redis.url()
    );

    // Prometheus' part: a scrape every second for as long as the bench runs.
    let scrapes = Arc::new(AtomicU64::new(0));
    let last_size = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (scrapes, last_size) = (scrapes.clone(), last_size.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Ok(size) = scrape(metrics_port).await {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                    last_size.store(size as u64, Ordering::Relaxed);
                }
            }
        })
    };

    let (mut off_rates, mut on_rates) = (Vec::new(), Vec::new());
    let (mut off_cpu, mut on_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut trades_per_mode = 0usize;
    let (mut off_latencies, mut on_latencies) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        // Alternate which goes first so neither always gets the warmer CPU.
        for first_off in [round % 2 == 0, round % 2 != 0] {
            let (mesh, rates, latencies, cpu) = if first_off {
                (&off, &mut off_rates, &mut off_latencies, &mut off_cpu)
            } else {
                (&on, &mut on_rates, &mut on_latencies, &mut on_cpu)
            };
            let trades = make_trades(options.trades, options.symbols, 4000 + round);
            let cpu_before = mesh.cpu();
            let (rate, mut lat) = mesh_round(&mesh.endpoint, trades, options, 4000 + round, None)
                .await
                .with_context(|| {
                    format!(
                        "metrics {}, round {}",
                        if first_off { "off" } else { "on" },
                        round + 1
                    )
                })?;
            *cpu += mesh.cpu().saturating_sub(cpu_before);
            rates.push(rate);
            latencies.append(&mut lat);
        }
        trades_per_mode += options.trades;
        println!(
            "  round {}: metrics off {:>10.0} trades/s   on {:>10.0} trades/s",
            round + 1,
            off_rates[round],
            on_rates[round]
        );
    }
    scraper.abort();
    off_latencies.sort();
    on_latencies.sort();
    for mesh in [&mut off, &mut on] {
        mesh.child.start_kill().ok();
        mesh.child.wait().await.ok();
    }
    drop(redis);
    Ok(MetricsReport {
        off_trades_per_s: median(off_rates),
        on_trades_per_s: median(on_rates),
        off_latency_median: percentile(&off_latencies, 0.5),
        off_latency_p99: percentile(&off_latencies, 0.99),
        on_latency_median: percentile(&on_latencies, 0.5),
        on_latency_p99: percentile(&on_latencies, 0.99),
        off_cpu_us_per_trade: off_cpu.as_secs_f64() * 1e6 / trades_per_mode.max(1) as f64,
        on_cpu_us_per_trade: on_cpu.as_secs_f64() * 1e6 / trades_per_mode.max(1) as f64,
        scrapes: scrapes.load(Ordering::Relaxed),
        scrape_bytes: last_size.load(Ordering::Relaxed) as usize,
    })
}
