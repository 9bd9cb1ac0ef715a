//! `tickmesh bench ranking`: RecordEvent throughput through gRPC (every
//! window of a board updated idempotently) and GetTop(100) latency, next to
//! raw `redis-benchmark` ZINCRBY and ZREVRANGE on the same Redis in the same run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tickmesh_api::ranking::ranking_service_client::RankingServiceClient;
use tickmesh_api::ranking::{
    Board, GetTopRequest, RecordEventRequest, RecordEventsRequest, UpsertBoardRequest, WindowKind,
};
use tonic::transport::Channel;

use super::redis_benchmark::{host_port, redis_benchmark};
use super::{median, ms, percentile};

#[derive(Clone, Debug)]
pub struct RankingBenchOptions {
    /// RecordEvent calls per round (one event each).
    pub events: usize,
    /// Concurrent callers (and redis-benchmark clients).
    pub concurrency: usize,
    /// Events per RecordEvents call in the batched phase.
    pub batch: usize,
    /// Distinct members events go to.
    pub members: usize,
    /// GetTop(100) calls (one at a time) for the latency figures.
    pub top_reads: usize,
    pub rounds: usize,
    /// Windows of the bench board, by request name (all, hour, day, week, month, 24h).
    pub windows: Vec<String>,
    pub redis_url: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct RankingReport {
    pub raw_zincrby_per_s: f64,
    /// Redis time per call of raw ZINCRBY, and per event of the record script (µs).
    pub raw_zincrby_redis_us: f64,
    pub record_redis_us_per_event: f64,
    /// In the RecordEvent (one event per call) phase: events per script call
    /// (what group commit gathered) and Redis time per event (µs).
    pub single_events_per_script: f64,
    /// Unary calls/s of a call that does no work (grpc.health.v1 Check) from
    /// the same callers over the same connections: the transport's ceiling
    /// for one-event calls on this machine.
    pub noop_calls_per_s: f64,
    pub single_redis_us_per_event: f64,
    /// redis-server CPU time (µs) per raw ZINCRBY request and per event of
    /// the RecordEvent phase: what each costs the Redis core, network
    /// handling included.
    pub raw_zincrby_redis_cpu_us: f64,
    pub single_redis_cpu_us_per_event: f64,
    pub record_event_per_s: f64,
    pub record_events_batched_per_s: f64,
    pub get_top_p50: Duration,
    pub get_top_p99: Duration,
    pub raw_zrevrange_p50: Duration,
    pub raw_zrevrange_p99: Duration,
}

const BOARD: &str = "bench-orders";
/// gRPC connections the callers share.
const CHANNELS: usize = 4;

fn board(windows: &[String]) -> anyhow::Result<Board> {
    let kinds = windows
        .iter()
        .map(|w| {
            Ok(match w.as_str() {
                "all" => WindowKind::AllTime,
                "hour" => WindowKind::Hourly,
                "day" => WindowKind::Daily,
                "week" => WindowKind::Weekly,
                "month" => WindowKind::Monthly,
                "24h" => WindowKind::Rolling24h,
                other => {
                    bail!("--windows: {other:?} is not one of all, hour, day, week, month, 24h")
                }
            } as i32)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Board {
        id: BOARD.into(),
        windows: kinds,
        time_zone: "Asia/Seoul".into(),
        ..Default::default()
    })
}

pub async fn ranking(options: RankingBenchOptions) -> anyhow::Result<RankingReport> {
    let (_own, redis_url, mesh) =
        super::bench_mesh(options.redis_url.clone(), "bench-ranking", |_| {}).await?;
    let (host, port) = host_port(&redis_url)?;
    let endpoint = mesh.endpoint();
    println!("bench ranking: redis {redis_url}, mesh {endpoint}");
    println!(
        "  board with windows {} (hourly is kept for 24h), {} members; {} RecordEvent calls/round from {} callers, RecordEvents of {}; {} rounds",
        options.windows.join(", "),
        options.members,
        options.events,
        options.concurrency,
        options.batch,
        options.rounds
    );
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }
    let stored = RankingServiceClient::new(channels[0].clone())
        .upsert_board(UpsertBoardRequest {
            board: Some(board(&options.windows)?),
        })
        .await
        .context("creating the bench board")?
        .into_inner()
        .board
        .context("no board in the answer")?;
    let window_count = stored.windows.len();

    let redis = redis::Client::open(redis_url.as_str())?;
    let mut raw = Vec::new();
    let mut raw_us = Vec::new();
    let mut script_us = Vec::new();
    let mut single = Vec::new();
    let mut batched = Vec::new();
    let mut single_batch = Vec::new();
    let mut noops = Vec::new();
    let mut single_us = Vec::new();
    let mut raw_cpu = Vec::new();
    let mut single_cpu = Vec::new();
    for round in 0..options.rounds {
        let noop = health_checks(&channels, &options).await?;
        let before = redis_usec(&redis).await?;
        let raw_rate = redis_benchmark(
            &host,
            port,
            options.concurrency,
            options.events * 2,
            &[
                "-r",
                &options.members.to_string(),
                "ZINCRBY",
                "bench-raw:zset",
                "1",
                "member:__rand_int__",
            ],
        )
        .await?
        .rps;
        let after_raw = redis_usec(&redis).await?;
        let one = record_singles(&channels, &options, round).await?;
        let after_singles = redis_usec(&redis).await?;
        let many = record_batches(&channels, &options, round).await?;
        let after = redis_usec(&redis).await?;
        let single_events = options.events.div_ceil(options.concurrency) * options.concurrency;
        let single_calls = after_singles.evalsha_calls - after_raw.evalsha_calls;
        single_batch.push(single_events as f64 / single_calls.max(1.0));
        single_us.push((after_singles.evalsha - after_raw.evalsha) / single_events as f64);
        raw_cpu.push((after_raw.cpu_us - before.cpu_us) / (options.events * 2) as f64);
        single_cpu.push((after_singles.cpu_us - after_raw.cpu_us) / single_events as f64);
        raw_us.push((after_raw.zincrby - before.zincrby) / (options.events * 2) as f64);
        let recorded = (options.events.div_ceil(options.concurrency) * options.concurrency)
            + options.events.div_ceil(options.batch) * options.batch;
        script_us.push((after.evalsha - after_raw.evalsha) / recorded as f64);
        println!(
            "  round {}: raw ZINCRBY {:>9.0}/s   no-op gRPC {:>9.0}/s   RecordEvent {:>9.0}/s ({:.0}%)   RecordEvents×{} {:>9.0} events/s ({:.0}%)",
            round + 1,
            raw_rate,
            noop,
            one,
            100.0 * one / raw_rate,
            options.batch,
            many,
            100.0 * many / raw_rate
        );
        raw.push(raw_rate);
        noops.push(noop);
        single.push(one);
        batched.push(many);
    }

    // GetTop(100), one call at a time, against ZREVRANGE 0 99 WITHSCORES from one client.
    let mut client = RankingServiceClient::new(channels[0].clone());
    let request = || GetTopRequest {
        board_id: BOARD.into(),
        window: "day".into(),
        page_size: 100,
        page_token: String::new(),
    };
    let window = if options.windows.iter().any(|w| w == "day") {
        "day"
    } else {
        ""
    };
    let request = || GetTopRequest {
        window: window.into(),
        ..request()
    };
    let warm = client.get_top(request()).await?.into_inner();
    anyhow::ensure!(
        warm.entries.len() == 100,
        "the board has fewer than 100 members"
    );
    let mut latencies = Vec::with_capacity(options.top_reads);
    for _ in 0..options.top_reads {
        let started = Instant::now();
        client.get_top(request()).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let raw_top = redis_benchmark(
        &host,
        port,
        1,
        options.top_reads,
        &["ZREVRANGE", "bench-raw:zset", "0", "99", "WITHSCORES"],
    )
    .await?;
    let report = RankingReport {
        raw_zincrby_per_s: median(raw),
        raw_zincrby_redis_us: median(raw_us),
        record_redis_us_per_event: median(script_us),
        single_events_per_script: median(single_batch),
        noop_calls_per_s: median(noops),
        single_redis_us_per_event: median(single_us),
        raw_zincrby_redis_cpu_us: median(raw_cpu),
        single_redis_cpu_us_per_event: median(single_cpu),
        record_event_per_s: median(single),
        record_events_batched_per_s: median(batched),
        get_top_p50: percentile(&latencies, 0.5),
        get_top_p99: percentile(&latencies, 0.99),
        raw_zrevrange_p50: raw_top.p50,
        raw_zrevrange_p99: raw_top.p99,
    };
    println!();
    println!("medians of {} rounds:", options.rounds);
    println!(
        "  raw ZINCRBY (redis-benchmark, {} clients)       {:>9.0} ops/s",
        options.concurrency, report.raw_zincrby_per_s
    );
    println!(
        "  RecordEvent via gRPC ({} callers, {} windows)    {:>9.0} events/s = {:.0}% of raw ZINCRBY",
        options.concurrency,
        window_count,
        report.record_event_per_s,
        100.0 * report.record_event_per_s / report.raw_zincrby_per_s
    );
    println!(
        "  no-op unary gRPC call (health Check), same callers {:>7.0} calls/s = {:.0}% of raw ZINCRBY: the ceiling for one event per call here",
        report.noop_calls_per_s,
        100.0 * report.noop_calls_per_s / report.raw_zincrby_per_s
    );
    println!(
        "  RecordEvents×{} via gRPC                       {:>9.0} events/s = {:.0}% of raw ZINCRBY",
        options.batch,
        report.record_events_batched_per_s,
        100.0 * report.record_events_batched_per_s / report.raw_zincrby_per_s
    );
    println!(
        "  Redis time: {:.1} µs per ZINCRBY, {:.1} µs per recorded event (all windows, dedupe, change log)",
        report.raw_zincrby_redis_us, report.record_redis_us_per_event
    );
    println!(
        "  RecordEvent phase: group commit put {:.1} events in each script call; Redis time {:.1} µs per event",
        report.single_events_per_script, report.single_redis_us_per_event
    );
    println!(
        "  redis-server CPU: {:.1} µs per raw ZINCRBY request, {:.1} µs per RecordEvent event = {:.0}% of raw ZINCRBY's Redis-bound rate",
        report.raw_zincrby_redis_cpu_us,
        report.single_redis_cpu_us_per_event,
        100.0 * report.raw_zincrby_redis_cpu_us
            / report.single_redis_cpu_us_per_event.max(f64::MIN_POSITIVE)
    );
    println!(
        "  GetTop(100) via gRPC, {} sequential calls       p50 {:.3} ms   p99 {:.3} ms",
        options.top_reads,
        ms(report.get_top_p50),
        ms(report.get_top_p99)
    );
    println!(
        "  raw ZREVRANGE 0 99 WITHSCORES (1 client)        p50 {:.3} ms   p99 {:.3} ms",
        ms(report.raw_zrevrange_p50),
        ms(report.raw_zrevrange_p99)
    );
    mesh.stop().await?;
    Ok(report)
}

/// Events of `round`, one per RecordEvent call, from `concurrency` callers.
async fn record_singles(
    channels: &[Channel],
    options: &RankingBenchOptions,
    round: usize,
) -> anyhow::Result<f64> {
    let per_caller = options.events.div_ceil(options.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.concurrency);
    for caller in 0..options.concurrency {
        let mut client = RankingServiceClient::new(channels[caller % channels.len()].clone());
        let members = options.members;
        tasks.push(tokio::spawn(async move {
            for i in 0..per_caller {
                let n = caller * per_caller + i;
                let r = client
                    .record_event(RecordEventRequest {
                        board_id: BOARD.into(),
                        member: format!("member:{}", spread(n, members)),
                        delta: "1".into(),
                        event_id: format!("r{round}-s{n}"),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(
                    !r.duplicate,
                    "event r{round}-s{n} was counted as a duplicate"
                );
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_caller * options.concurrency) as f64 / started.elapsed().as_secs_f64())
}

/// `events` health checks (no work behind them) from `concurrency` callers.
async fn health_checks(channels: &[Channel], options: &RankingBenchOptions) -> anyhow::Result<f64> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let per_caller = options.events.div_ceil(options.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.concurrency);
    for caller in 0..options.concurrency {
        let mut client = HealthClient::new(channels[caller % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_caller {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_caller * options.concurrency) as f64 / started.elapsed().as_secs_f64())
}

/// The same number of events in RecordEvents calls of `batch`.
async fn record_batches(
    channels: &[Channel],
    options: &RankingBenchOptions,
    round: usize,
) -> anyhow::Result<f64> {
    let calls = options.events.div_ceil(options.batch);
    let callers = options.concurrency.min(calls).max(1);
    let per_caller = calls.div_ceil(callers);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let mut client = RankingServiceClient::new(channels[caller % channels.len()].clone());
        let (members, batch) = (options.members, options.batch);
        tasks.push(tokio::spawn(async move {
            for call in 0..per_caller {
                let events = (0..batch)
                    .map(|i| {
                        let n = (caller * per_caller + call) * batch + i;
                        RecordEventRequest {
                            board_id: BOARD.into(),
                            member: format!("member:{}", spread(n, members)),
                            delta: "1".into(),
                            event_id: format!("r{round}-b{n}"),
                            ..Default::default()
                        }
                    })
                    .collect();
                let r = client
                    .record_events(RecordEventsRequest { events })
                    .await?
                    .into_inner();
                anyhow::ensure!(
                    r.duplicate == 0 && r.refused == 0,
                    "unexpected outcome {r:?}"
                );
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((per_caller * callers * options.batch) as f64 / started.elapsed().as_secs_f64())
}

/// A member for event `n`: scattered over `members` like redis-benchmark's random keys.
fn spread(n: usize, members: usize) -> usize {
    (n.wrapping_mul(2_654_435_761)) % members.max(1)
}

/// Total Redis time (µs) spent in ZINCRBY and EVALSHA so far (INFO commandstats).
struct RedisUsec {
    zincrby: f64,
    evalsha: f64,
    /// Script calls so far.
    evalsha_calls: f64,
    /// CPU time the redis-server process has used so far (µs, user + system):
    /// unlike command time, this includes reading, parsing and answering
    /// requests, and is not inflated when the server waits for a core.
    cpu_us: f64,
}

async fn redis_usec(redis: &redis::Client) -> anyhow::Result<RedisUsec> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    let cpu_s = |field: &str| {
        cpu.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = |name: &str, field: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:")))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix(field)))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(RedisUsec {
        zincrby: stat("zincrby", "usec="),
        evalsha: stat("evalsha", "usec="),
        evalsha_calls: stat("evalsha", "calls="),
        cpu_us: (cpu_s("used_cpu_user") + cpu_s("used_cpu_sys")) * 1e6,
    })
}
