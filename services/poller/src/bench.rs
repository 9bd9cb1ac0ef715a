//! How long a full refresh takes against the fake broker, next to its physical floor: with
//! `rps` requests per second of `batch` codes each, `symbols` codes cannot all be refreshed in
//! less than `symbols / (batch × rps)` seconds.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::{Error, Result};
use tickmesh_fake_venue::broker::{BrokerConfig, FakeBroker};
use tickmesh_marketfeed::MarketFeed;
use tickmesh_marketfeed::model::Instrument;
use tickmesh_runtime::proto_time::now_nanos;
use tokio_util::sync::CancellationToken;

use crate::poller::Poller;
use crate::spec::PollerSpec;

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub symbols: usize,
    pub batch_size: usize,
    /// The fake broker's limit, and the pollers' `requests_per_second`.
    pub requests_per_second: u32,
    pub burst: u32,
    pub jitter_margin: Duration,
    /// Time the fake broker takes per request.
    pub latency: Duration,
    /// Poller instances sharing the limit and the full refresh.
    pub instances: usize,
    /// Full refreshes to measure (the first starts cold; later ones show the steady state).
    pub cycles: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            symbols: 2_500,
            batch_size: 50,
            requests_per_second: 20,
            burst: 0,
            jitter_margin: Duration::from_millis(25),
            latency: Duration::ZERO,
            instances: 1,
            cycles: 2,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub config: BenchConfig,
    /// `symbols / (batch × rps)`.
    pub floor: Duration,
    /// Each full refresh measured, in order: from its first claim to its last answer.
    pub refreshes: Vec<Duration>,
    /// Mean time between the ends of successive full refreshes: the steady period, which
    /// also counts the one slot between a cycle's last request and the next one's first.
    pub period: Option<Duration>,
    /// Quote requests the broker received, and of those refused for the rate limit.
    pub requests: u64,
    pub rate_limited: u64,
    /// The most requests the broker saw in any one-second window.
    pub max_in_any_second: usize,
}

impl BenchReport {
    /// A refresh's time over the floor (1.0 is the floor itself), for display.
    pub fn ratio(&self, refresh: Duration) -> f64 {
        refresh.as_secs_f64() / self.floor.as_secs_f64()
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "full refresh of {} symbols, batch {}, {} rps (burst {}, margin {:?}), {} instance(s), broker latency {:?}",
            c.symbols,
            c.batch_size,
            c.requests_per_second,
            c.burst,
            c.jitter_margin,
            c.instances,
            c.latency
        )?;
        writeln!(f, "  floor {:.3} s", self.floor.as_secs_f64())?;
        for (i, r) in self.refreshes.iter().enumerate() {
            writeln!(
                f,
                "  refresh {}: {:.3} s ({:.3} × floor)",
                i + 1,
                r.as_secs_f64(),
                self.ratio(*r)
            )?;
        }
        if let Some(p) = self.period {
            writeln!(
                f,
                "  period between refreshes: {:.3} s ({:.3} × floor)",
                p.as_secs_f64(),
                self.ratio(p)
            )?;
        }
        write!(
            f,
            "  broker: {} requests, {} rate-limited, at most {} in any 1 s window",
            self.requests, self.rate_limited, self.max_in_any_second
        )
    }
}

/// Runs `config.instances` pollers over `config.symbols` codes against a fresh fake broker
/// whose limit is `config.requests_per_second`, storing through `feed` (a real Redis), and
/// measures `config.cycles` full refreshes. Registers the bench's instruments (`bench:NNNNNN`,
/// always open) in `feed`.
pub async fn bench_full_refresh(
    feed: Arc<MarketFeed>,
    config: &BenchConfig,
) -> Result<BenchReport> {
    let run = format!("{:x}", now_nanos());
    let broker = FakeBroker::start(BrokerConfig {
        requests_per_second: Some(config.requests_per_second),
        latency: config.latency,
        max_codes_per_request: config.batch_size.max(1),
        app_key: format!("bench-key-{run}"),
        app_secret: "bench-secret".into(),
    })
    .await
    .map_err(|e| Error::Internal(format!("starting the fake broker: {e}")))?;
    let codes: Vec<String> = (0..config.symbols)
        .map(|i| format!("{:06}", 100_000 + i))
        .collect();
    broker.add_symbols(codes.iter().map(String::as_str), "50000", "50");
    let mut spec = PollerSpec::new(
        &format!("bench-{run}"),
        &broker.base_url(),
        &broker.app_key(),
        &broker.app_secret(),
        codes.clone(),
    );
    spec.symbol_prefix = "bench:".into();
    spec.batch_size = config.batch_size;
    spec.requests_per_second = config.requests_per_second;
    spec.burst = config.burst;
    spec.jitter_margin = config.jitter_margin;
    for code in &codes {
        feed.upsert_instrument(Instrument {
            symbol: spec.mesh_symbol(code),
            venue: "bench".into(),
            price_scale: 0,
            quantity_scale: 0,
            time_zone: "Asia/Seoul".into(),
            sessions: Vec::new(),
            update_time_ns: 0,
        })
        .await?;
    }

    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let pollers = (0..config.instances.max(1))
        .map(|n| {
            Poller::start(
                spec.clone(),
                feed.clone(),
                &format!("bench-{n}"),
                shutdown.clone(),
            )
        })
        .collect::<Result<Vec<_>>>()?;

    let floor = Duration::from_secs_f64(
        config.symbols as f64 / (config.batch_size as f64 * f64::from(config.requests_per_second)),
    );
    let give_up =
        tokio::time::Instant::now() + floor * (config.cycles as u32 * 3) + Duration::from_secs(10);
    let mut seen = vec![0u64; pollers.len()];
    let mut refreshes = Vec::new();
    let mut ended = Vec::new();
    while refreshes.len() < config.cycles {
        if tokio::time::Instant::now() > give_up {
            return Err(Error::Internal(format!(
                "only {} of {} full refreshes within {:?}",
                refreshes.len(),
                config.cycles,
                floor * (config.cycles as u32 * 3) + Duration::from_secs(10)
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        for (n, p) in pollers.iter().enumerate() {
            let s = p.status();
            if s.full_refreshes > seen[n] {
                seen[n] = s.full_refreshes;
                refreshes.extend(s.last_full_refresh);
                ended.push(tokio::time::Instant::now());
            }
        }
    }
    shutdown.cancel();
    let period = match (ended.first(), ended.last()) {
        (Some(first), Some(last)) if ended.len() > 1 => {
            Some((*last - *first) / (ended.len() as u32 - 1))
        }
        _ => None,
    };
    Ok(BenchReport {
        config: config.clone(),
        floor,
        refreshes,
        period,
        requests: broker.requests(),
        rate_limited: broker.rate_limited(),
        max_in_any_second: broker.max_in_any_window(Duration::from_secs(1)),
    })
}
