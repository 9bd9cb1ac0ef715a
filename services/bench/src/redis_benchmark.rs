//! `redis-benchmark`, the raw-Redis baseline the service benches measure
//! next to themselves on the same Redis in the same run.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

pub struct BenchFigures {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs `redis-benchmark --csv` with a custom command.
pub async fn redis_benchmark(
    host: &str,
    port: u16,
    clients: usize,
    requests: usize,
    command: &[&str],
) -> anyhow::Result<BenchFigures> {
    let out = tokio::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", &port.to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "--csv",
        ])
        .args(command)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running redis-benchmark (apt-get install -y redis-tools, or redis-server)")?;
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| !l.starts_with("\"test\"") && l.contains(','))
        .with_context(|| format!("no figures in redis-benchmark output: {text}"))?;
    let fields: Vec<f64> = row
        .split("\",\"")
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    anyhow::ensure!(fields.len() >= 6, "unexpected redis-benchmark row: {row}");
    let millis = |v: f64| Duration::from_secs_f64(v / 1e3);
    Ok(BenchFigures {
        rps: fields[0],
        p50: millis(fields[3]),
        p99: millis(fields[5]),
    })
}

/// Host and port of a `redis://` URL (redis-benchmark connects over TCP).
pub fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("redis://")
        .context("this bench needs a redis://host:port URL (redis-benchmark connects over TCP)")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    Ok((host.to_string(), port.parse().context("redis port")?))
}
