//! `tickmesh bench queue`: Enter throughput through gRPC, admission
//! throughput, and the time from a user's admission (the admission pass's
//! clock reading) to the ADMITTED message arriving on their WatchPosition
//! stream, with every waiter watching; next to raw `redis-benchmark` ZADD and
//! ZRANK on the same Redis in the same run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tickmesh_api::queue::queue_service_client::QueueServiceClient;
use tickmesh_api::queue::{
    CreateRoomRequest, EnterRequest, GetRoomRequest, QueueState, Room, UpdateRoomRequest,
    WatchPositionRequest,
};
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos, timestamp_to_nanos};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::redis_benchmark::{host_port, redis_benchmark};
use super::{median, ms, percentile};

#[derive(Clone, Debug)]
pub struct QueueBenchOptions {
    /// Users who enter and watch, per round.
    pub waiters: usize,
    /// Concurrent Enter callers (and redis-benchmark clients).
    pub concurrency: usize,
    /// The room's admissions per second.
    pub rate: f64,
    pub rounds: usize,
    pub redis_url: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct QueueReport {
    pub enter_per_s: f64,
    pub admitted_per_s: f64,
    pub push_p50: Duration,
    pub push_p99: Duration,
    pub raw_zadd_per_s: f64,
    pub raw_zrank_per_s: f64,
}

/// Streams per HTTP/2 connection stay under server.max_concurrent_streams.
const STREAMS_PER_CHANNEL: usize = 900;
const SESSION_S: i64 = 3600;

pub async fn queue(options: QueueBenchOptions) -> anyhow::Result<QueueReport> {
    let (_own, redis_url, mesh) =
        super::bench_mesh(options.redis_url.clone(), "bench-queue", |c| {
            c.queue.token_key = "bench:0123456789abcdef0123456789abcdef".into();
            c.queue.admission_batch = 10_000;
        })
        .await?;
    let (host, port) = host_port(&redis_url)?;
    let endpoint = mesh.endpoint();
    println!("bench queue: redis {redis_url}, mesh {endpoint}");
    println!(
        "  {} waiters/round entering from {} callers, each watching its position; room admits {}/s; {} rounds",
        options.waiters, options.concurrency, options.rate, options.rounds
    );
    let mut channels = Vec::new();
    for _ in 0..options.waiters.div_ceil(STREAMS_PER_CHANNEL).max(4) {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }

    let mut enters = Vec::new();
    let mut admitted = Vec::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut zadds = Vec::new();
    let mut zranks = Vec::new();
    for round in 0..options.rounds {
        let room_id = format!("bench-room-{round}");
        let mut client = QueueServiceClient::new(channels[0].clone());
        // Closed until every waiter watches: opening it starts the clock.
        let later = now_nanos() + 3_600_000_000_000;
        let room = |open_ns: i64| Room {
            id: room_id.clone(),
            capacity: options.waiters as i64,
            admissions_per_second: options.rate,
            session_duration: Some(prost_types::Duration {
                seconds: SESSION_S,
                nanos: 0,
            }),
            open_time: Some(nanos_to_timestamp(open_ns)),
            ..Default::default()
        };
        client
            .create_room(CreateRoomRequest {
                room: Some(room(later)),
            })
            .await
            .context("creating the bench room")?;

        // Enter.
        let started = Instant::now();
        let mut set = JoinSet::new();
        let per_caller = options.waiters.div_ceil(options.concurrency);
        for caller in 0..options.concurrency {
            let mut c = QueueServiceClient::new(channels[caller % channels.len()].clone());
            let room_id = room_id.clone();
            let users: Vec<usize> =
                (caller * per_caller..((caller + 1) * per_caller).min(options.waiters)).collect();
            set.spawn(async move {
                let mut tokens = Vec::with_capacity(users.len());
                for u in users {
                    let r = c
                        .enter(EnterRequest {
                            room_id: room_id.clone(),
                            user_id: format!("user-{u}"),
                        })
                        .await?
                        .into_inner();
                    tokens.push(r.token);
                }
                anyhow::Ok(tokens)
            });
        }
        let mut tokens = Vec::with_capacity(options.waiters);
        while let Some(r) = set.join_next().await {
            tokens.extend(r??);
        }
        let enter_rate = options.waiters as f64 / started.elapsed().as_secs_f64();

        // Everyone watches.
        let mut watchers = JoinSet::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(options.waiters);
        for (i, token) in tokens.into_iter().enumerate() {
            let mut c = QueueServiceClient::new(channels[i % channels.len()].clone());
            let ready = ready_tx.clone();
            watchers.spawn(async move {
                let mut stream = c
                    .watch_position(WatchPositionRequest { token })
                    .await?
                    .into_inner();
                let mut positions = 0u32;
                while let Some(msg) = stream.message().await? {
                    let arrived_ns = now_nanos();
                    if positions == 0 {
                        let _ = ready.send(()).await;
                    }
                    positions += 1;
                    if msg.state == QueueState::Admitted as i32 {
                        let expire = msg
                            .admission_expire_time
                            .as_ref()
                            .context("admitted without expiry")?;
                        let expire_ns = timestamp_to_nanos(expire).map_err(anyhow::Error::msg)?;
                        let admitted_ns = expire_ns - SESSION_S * 1_000_000_000;
                        return anyhow::Ok((admitted_ns, arrived_ns, positions));
                    }
                }
                bail!("stream ended before admission")
            });
        }
        drop(ready_tx);
        for _ in 0..options.waiters {
            ready_rx.recv().await.context("a watcher failed to start")?;
        }

        // Open the room: admissions start with the next pass.
        let opened_ns = now_nanos();
        client
            .update_room(UpdateRoomRequest {
                room: Some(room(opened_ns)),
            })
            .await
            .context("opening the bench room")?;
        let mut latencies = Vec::with_capacity(options.waiters);
        let mut last_ns = 0i64;
        let mut messages = 0u64;
        while let Some(r) = watchers.join_next().await {
            let (admitted_ns, arrived_ns, positions) = r??;
            last_ns = last_ns.max(admitted_ns);
            messages += positions as u64;
            latencies.push(Duration::from_nanos(
                (arrived_ns - admitted_ns).max(0) as u64
            ));
        }
        latencies.sort();
        let stats = client
            .get_room(GetRoomRequest {
                room_id: room_id.clone(),
            })
            .await?
            .into_inner()
            .stats
            .context("no stats")?;
        anyhow::ensure!(
            stats.served as usize == options.waiters,
            "served {} of {}",
            stats.served,
            options.waiters
        );
        // From the opening to the last admission (the first pass comes up to
        // one admission interval after the opening).
        let span_s = ((last_ns - opened_ns) as f64 / 1e9).max(1e-3);
        let admit_rate = options.waiters as f64 / span_s;

        let zadd = redis_benchmark(
            &host,
            port,
            options.concurrency,
            100_000,
            &[
                "-r",
                "10000",
                "ZADD",
                "bench-raw:wait",
                "__rand_int__",
                "user-__rand_int__",
            ],
        )
        .await?
        .rps;
        let zrank = redis_benchmark(
            &host,
            port,
            options.concurrency,
            100_000,
            &[
                "-r",
                "10000",
                "ZRANK",
                "bench-raw:wait",
                "user-__rand_int__",
            ],
        )
        .await?
        .rps;
        println!(
            "  round {}: Enter {:>7.0}/s   admitted {:>7.0}/s   admission→push p50 {:>6.1} ms p99 {:>6.1} ms ({} messages, {:.1}/waiter)   raw ZADD {:>7.0}/s ZRANK {:>7.0}/s",
            round + 1,
            enter_rate,
            admit_rate,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            messages,
            messages as f64 / options.waiters as f64,
            zadd,
            zrank,
        );
        enters.push(enter_rate);
        admitted.push(admit_rate);
        p50s.push(ms(percentile(&latencies, 0.5)));
        p99s.push(ms(percentile(&latencies, 0.99)));
        zadds.push(zadd);
        zranks.push(zrank);
    }
    let report = QueueReport {
        enter_per_s: median(enters),
        admitted_per_s: median(admitted),
        push_p50: Duration::from_secs_f64(median(p50s) / 1e3),
        push_p99: Duration::from_secs_f64(median(p99s) / 1e3),
        raw_zadd_per_s: median(zadds),
        raw_zrank_per_s: median(zranks),
    };
    println!(
        "medians of {} rounds, {} waiters:",
        options.rounds, options.waiters
    );
    println!(
        "  Enter (gRPC, ticket + place + signed token)  {:>9.0}/s   raw ZADD (redis-benchmark, {} clients) {:>9.0}/s ({:.0}%)",
        report.enter_per_s,
        options.concurrency,
        report.raw_zadd_per_s,
        100.0 * report.enter_per_s / report.raw_zadd_per_s
    );
    println!(
        "  admissions (configured {}/s)                  {:>9.0}/s",
        options.rate, report.admitted_per_s
    );
    println!(
        "  admission → ADMITTED on WatchPosition       p50 {:.1} ms, p99 {:.1} ms   raw ZRANK {:>9.0}/s",
        ms(report.push_p50),
        ms(report.push_p99),
        report.raw_zrank_per_s
    );
    mesh.stop().await?;
    Ok(report)
}
