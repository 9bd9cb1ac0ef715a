//! `tickmesh bench coupon`: Issue throughput and latency through gRPC at high
//! concurrency, next to two baselines in the same run on the same Redis:
//! (a) `redis-benchmark` calling the same issue script with EVALSHA, one
//! call per script run (the ceiling for unbatched calls: no gRPC, no
//! validation, no client), and (b) the common
//! lock-based design — a per-campaign lock taken with `SET NX PX` (retried
//! with exponential backoff), `GET` the stock, `SISMEMBER` the user set,
//! `DECR`, `SADD`, release by compare-and-delete — one round trip each, from
//! the same number of concurrent workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tickmesh_api::coupon::coupon_issue_service_client::CouponIssueServiceClient;
use tickmesh_api::coupon::{Campaign, CreateCampaignRequest, IssueOutcome, IssueRequest};
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
use tonic::transport::Channel;

use super::cluster::{BenchCluster, Usage};
use super::redis_benchmark::{host_port, redis_benchmark};
use super::{median, ms, percentile};

#[derive(Clone, Debug)]
pub struct CouponBenchOptions {
    /// Issue calls per round through gRPC (and through redis-benchmark).
    pub calls: usize,
    /// Concurrent callers, redis-benchmark clients and lock-based workers.
    pub concurrency: usize,
    /// Issue attempts per round of the lock-based baseline.
    pub lock_calls: usize,
    pub rounds: usize,
    pub redis_url: Option<String>,
    /// Then Issue spread over many campaigns on the single node and on a
    /// local Redis Cluster (3 masters, 1 replica each), with replica acks at
    /// their cluster default (1) and off, and the share of the commands each
    /// master served.
    pub redis_cluster: bool,
}

#[derive(Clone, Debug, Default)]
pub struct CouponReport {
    pub issue_per_s: f64,
    pub issue_p50: Duration,
    pub issue_p99: Duration,
    pub evalsha_per_s: f64,
    pub evalsha_p50: Duration,
    pub evalsha_p99: Duration,
    pub lock_per_s: f64,
    pub lock_p50: Duration,
    pub lock_p99: Duration,
    pub cluster: Option<CouponClusterReport>,
}

/// Issue spread over [`SPREAD_CAMPAIGNS`] campaigns, per topology.
#[derive(Clone, Debug, Default)]
pub struct CouponClusterReport {
    pub single: Figures,
    /// `coupon.replica_acks` at its default ("auto": 1 replica on a cluster).
    pub cluster_acks: Figures,
    /// `coupon.replica_acks = "off"`.
    pub cluster_no_acks: Figures,
    pub acks_master_shares: Vec<f64>,
    pub no_acks_master_shares: Vec<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Campaigns the cluster comparison spreads its calls over (one campaign is
/// one hash slot, so one master: spreading needs many).
pub const SPREAD_CAMPAIGNS: usize = 48;

/// gRPC connections the callers share.
const CHANNELS: usize = 4;

fn campaign(id: &str, stock: i64) -> Campaign {
    let now = now_nanos();
    Campaign {
        id: id.into(),
        total_stock: stock,
        per_user_limit: 1,
        start_time: Some(nanos_to_timestamp(now - 1_000_000_000)),
        end_time: Some(nanos_to_timestamp(now + 24 * 3_600_000_000_000)),
        ..Default::default()
    }
}

pub async fn coupon(options: CouponBenchOptions) -> anyhow::Result<CouponReport> {
    let (_own, redis_url, mesh) =
        super::bench_mesh(options.redis_url.clone(), "bench-coupon", |c| {
            c.services.enabled = vec!["coupon".into()];
        })
        .await?;
    let (host, port) = host_port(&redis_url)?;
    let endpoint = mesh.endpoint();
    let coupons = mesh.coupon.clone().context("the coupon service runs")?;
    println!("bench coupon: redis {redis_url}, mesh {endpoint}");
    println!(
        "  per round: {} Issue calls via gRPC and {} EVALSHA via redis-benchmark, {} concurrent; {} lock-based attempts from {} workers; {} rounds",
        options.calls,
        options.calls,
        options.concurrency,
        options.lock_calls,
        options.concurrency,
        options.rounds
    );
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        channels.push(Channel::from_shared(endpoint.clone())?.connect().await?);
    }
    let mut admin = CouponIssueServiceClient::new(channels[0].clone());
    let redis = redis::Client::open(redis_url.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(format!(
            "{}{}",
            tickmesh_coupon::issue_script::NODE_RUN_LUA,
            tickmesh_coupon::issue_script::ISSUE_LUA
        ))
        .query_async(&mut conn)
        .await?;
    anyhow::ensure!(sha == coupons.issue_script_sha(), "script hash mismatch");
    // ARGV[3] of the issue script: the run id of the server that runs it (the
    // service passes its connection's; a state not confirmed in that run is
    // answered "missing").
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    let run = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap_or("")
        .trim()
        .to_string();

    let (mut grpc, mut raw, mut lock) = (Vec::new(), Vec::new(), Vec::new());
    let mut grpc_lat = Vec::new();
    let mut lock_lat = Vec::new();
    let (mut raw_p50, mut raw_p99) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        // (a) the script alone, on a campaign of its own.
        let raw_id = format!("bench-raw-{round}");
        admin
            .create_campaign(CreateCampaignRequest {
                campaign: Some(campaign(&raw_id, 2 * options.calls as i64 + 1)),
            })
            .await
            .context("creating the raw campaign")?;
        let k = coupons.keys();
        let keys = [
            k.state(&raw_id),
            k.users(&raw_id),
            k.requests(&raw_id),
            k.log(&raw_id),
        ];
        let now_ms = (now_nanos() / 1_000_000).to_string();
        let mut args: Vec<&str> = vec!["-r", "100000000", "EVALSHA", &sha, "4"];
        args.extend(keys.iter().map(String::as_str));
        args.extend([
            &now_ms,
            &raw_id,
            &run,
            "user:__rand_int__",
            "req:__rand_int__",
        ]);
        let figures =
            redis_benchmark(&host, port, options.concurrency, options.calls, &args).await?;

        // The service, through gRPC.
        let id = format!("bench-grpc-{round}");
        admin
            .create_campaign(CreateCampaignRequest {
                campaign: Some(campaign(&id, 2 * options.calls as i64 + 1)),
            })
            .await
            .context("creating the bench campaign")?;
        let (rate, mut latencies) =
            issue_via_grpc(&channels, &options, std::slice::from_ref(&id)).await?;
        grpc_lat.append(&mut latencies);

        // (b) the lock-based design.
        let (lock_rate, mut lock_latencies) =
            lock_based(&redis, &options, &format!("bench-lock-{round}")).await?;
        lock_lat.append(&mut lock_latencies);
        println!(
            "  round {}: EVALSHA {:>8.0}/s   Issue via gRPC {:>8.0}/s ({:.0}% of EVALSHA)   lock-based {:>7.0}/s (gRPC is {:.1}×)",
            round + 1,
            figures.rps,
            rate,
            100.0 * rate / figures.rps,
            lock_rate,
            rate / lock_rate
        );
        raw.push(figures.rps);
        raw_p50.push(figures.p50.as_secs_f64());
        raw_p99.push(figures.p99.as_secs_f64());
        grpc.push(rate);
        lock.push(lock_rate);
    }
    grpc_lat.sort();
    lock_lat.sort();
    let report = CouponReport {
        issue_per_s: median(grpc),
        issue_p50: percentile(&grpc_lat, 0.5),
        issue_p99: percentile(&grpc_lat, 0.99),
        evalsha_per_s: median(raw),
        evalsha_p50: Duration::from_secs_f64(median(raw_p50)),
        evalsha_p99: Duration::from_secs_f64(median(raw_p99)),
        lock_per_s: median(lock),
        lock_p50: percentile(&lock_lat, 0.5),
        lock_p99: percentile(&lock_lat, 0.99),
        cluster: None,
    };
    println!();
    println!(
        "medians of {} rounds ({} concurrent):",
        options.rounds, options.concurrency
    );
    println!(
        "  EVALSHA of the issue script (redis-benchmark)  {:>9.0} issues/s   p50 {:.3} ms   p99 {:.3} ms",
        report.evalsha_per_s,
        ms(report.evalsha_p50),
        ms(report.evalsha_p99)
    );
    println!(
        "  Issue via gRPC                                 {:>9.0} issues/s   p50 {:.3} ms   p99 {:.3} ms",
        report.issue_per_s,
        ms(report.issue_p50),
        ms(report.issue_p99)
    );
    println!(
        "  lock-based (SET NX PX … DEL)                   {:>9.0} issues/s   p50 {:.3} ms   p99 {:.3} ms",
        report.lock_per_s,
        ms(report.lock_p50),
        ms(report.lock_p99)
    );
    println!(
        "  Issue via gRPC = {:.1}× the lock-based design, {:.0}% of raw EVALSHA",
        report.issue_per_s / report.lock_per_s,
        100.0 * report.issue_per_s / report.evalsha_per_s
    );
    let mut report = report;
    if options.redis_cluster {
        println!();
        println!("Issue spread over {SPREAD_CAMPAIGNS} campaigns, single node ({redis_url}):");
        let (mut rates, mut latencies) = (Vec::new(), Vec::new());
        for round in 0..options.rounds {
            let (rate, mut lat, _) =
                spread_round(&channels, &options, &format!("r{round}")).await?;
            println!("  round {}: {rate:>8.0}/s", round + 1);
            rates.push(rate);
            latencies.append(&mut lat);
        }
        mesh.stop().await?;
        let single = figures(rates, latencies);
        report.cluster = Some(cluster_comparison(&options, single).await?);
    } else {
        mesh.stop().await?;
    }
    Ok(report)
}

fn figures(rates: Vec<f64>, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    Figures {
        per_s: median(rates),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    }
}

/// Creates [`SPREAD_CAMPAIGNS`] campaigns named after `label` (the same
/// names, so the same hash slots, on every topology) and issues
/// `options.calls` coupons over them, call n to campaign n mod their count.
async fn spread_round(
    channels: &[Channel],
    options: &CouponBenchOptions,
    label: &str,
) -> anyhow::Result<(f64, Vec<Duration>, Vec<String>)> {
    let mut admin = CouponIssueServiceClient::new(channels[0].clone());
    let stock = 2 * options.calls.div_ceil(SPREAD_CAMPAIGNS) as i64 + 1;
    let ids: Vec<String> = (0..SPREAD_CAMPAIGNS)
        .map(|i| format!("bench-spread-{label}-{i}"))
        .collect();
    for id in &ids {
        admin
            .create_campaign(CreateCampaignRequest {
                campaign: Some(campaign(id, stock)),
            })
            .await
            .with_context(|| format!("creating campaign {id}"))?;
    }
    let (rate, latencies) = issue_via_grpc(channels, options, &ids).await?;
    Ok((rate, latencies, ids))
}

/// The spread workload on a local Redis Cluster, through two meshes on it:
/// `coupon.replica_acks` at its default (1 replica on a cluster: every
/// issuance waits for WAIT on its campaign's master) and off, round by
/// round, alternating which goes first. The raw EVALSHA and lock-based
/// baselines are not repeated on the cluster (they would need per-slot
/// routing of redis-benchmark; one campaign is one slot, so one master).
async fn cluster_comparison(
    options: &CouponBenchOptions,
    single: Figures,
) -> anyhow::Result<CouponClusterReport> {
    let cluster = BenchCluster::start().await?;
    let (_, _, acks) = super::bench_mesh(Some(cluster.url().into()), "bench-coupon-acks", |c| {
        c.services.enabled = vec!["coupon".into()];
    })
    .await?;
    let (_, _, no_acks) =
        super::bench_mesh(Some(cluster.url().into()), "bench-coupon-noacks", |c| {
            c.services.enabled = vec!["coupon".into()];
            c.coupon.replica_acks = "off".into();
        })
        .await?;
    let waits = tickmesh_runtime::config::CouponConfig::default().replicas_to_wait(true);
    println!();
    println!(
        "Issue spread over {SPREAD_CAMPAIGNS} campaigns on a Redis Cluster: {}",
        cluster.describe()
    );
    println!(
        "  mesh {} with coupon.replica_acks at its default (\"auto\": WAIT {waits} replica on a cluster), mesh {} with replica_acks \"off\"",
        acks.endpoint(),
        no_acks.endpoint()
    );
    let mut acks_channels = Vec::with_capacity(CHANNELS);
    let mut no_acks_channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        acks_channels.push(Channel::from_shared(acks.endpoint())?.connect().await?);
        no_acks_channels.push(Channel::from_shared(no_acks.endpoint())?.connect().await?);
    }
    let (mut acks_rates, mut no_acks_rates) = (Vec::new(), Vec::new());
    let (mut acks_lat, mut no_acks_lat) = (Vec::new(), Vec::new());
    let (mut acks_usage, mut no_acks_usage) = (Usage::default(), Usage::default());
    let (mut acks_tags, mut no_acks_tags) = (Vec::new(), Vec::new());
    for round in 0..options.rounds {
        for with_acks in [round % 2 == 0, round % 2 != 0] {
            let (channels, rates, latencies, usage, tags, label) = if with_acks {
                (
                    &acks_channels,
                    &mut acks_rates,
                    &mut acks_lat,
                    &mut acks_usage,
                    &mut acks_tags,
                    "acks",
                )
            } else {
                (
                    &no_acks_channels,
                    &mut no_acks_rates,
                    &mut no_acks_lat,
                    &mut no_acks_usage,
                    &mut no_acks_tags,
                    "noacks",
                )
            };
            let meter = cluster.start_round().await?;
            let (rate, mut lat, mut ids) = spread_round(channels, options, &format!("r{round}"))
                .await
                .with_context(|| format!("cluster, replica acks {label}, round {}", round + 1))?;
            meter.stop(&cluster, usage).await?;
            rates.push(rate);
            latencies.append(&mut lat);
            tags.append(&mut ids);
        }
        println!(
            "  round {}: replica acks {waits} {:>8.0}/s   replica acks off {:>8.0}/s",
            round + 1,
            acks_rates[round],
            no_acks_rates[round]
        );
    }
    acks.stop().await?;
    no_acks.stop().await?;
    let report = CouponClusterReport {
        single,
        cluster_acks: figures(acks_rates, acks_lat),
        cluster_no_acks: figures(no_acks_rates, no_acks_lat),
        acks_master_shares: acks_usage.shares(),
        no_acks_master_shares: no_acks_usage.shares(),
    };
    println!();
    println!(
        "Issue via gRPC over {SPREAD_CAMPAIGNS} campaigns, medians of {} rounds ({} concurrent):",
        options.rounds, options.concurrency
    );
    let row = |name: &str, f: &Figures| {
        println!(
            "  {name:<48} {:>9.0} issues/s   p50 {:.3} ms   p99 {:.3} ms",
            f.per_s,
            ms(f.p50),
            ms(f.p99)
        )
    };
    row("single node", &report.single);
    row(
        &format!("cluster, replica_acks default (WAIT {waits} replica)"),
        &report.cluster_acks,
    );
    row("cluster, replica_acks off", &report.cluster_no_acks);
    println!(
        "  cluster / single node: {:.2}x with replica acks, {:.2}x without",
        report.cluster_acks.per_s / report.single.per_s,
        report.cluster_no_acks.per_s / report.single.per_s
    );
    println!(
        "  per master (keys = the campaigns' hash tags; commands from INFO total_commands_processed; all nodes share this machine's cores):"
    );
    for (name, usage, tags, f) in [
        (
            "replica acks default",
            &acks_usage,
            &acks_tags,
            &report.cluster_acks,
        ),
        (
            "replica acks off",
            &no_acks_usage,
            &no_acks_tags,
            &report.cluster_no_acks,
        ),
    ] {
        println!("  {name}:");
        let keys = cluster.key_counts(tags.iter().map(String::as_str));
        usage.print(&cluster, &keys, f.per_s, "issues");
    }
    Ok(report)
}

/// `options.calls` Issue calls for distinct users from `concurrency` callers,
/// call n to `campaigns[n mod len]`.
async fn issue_via_grpc(
    channels: &[Channel],
    options: &CouponBenchOptions,
    campaigns: &[String],
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let campaigns = Arc::new(campaigns.to_vec());
    let per_caller = options.calls.div_ceil(options.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.concurrency);
    for caller in 0..options.concurrency {
        let mut client = CouponIssueServiceClient::new(channels[caller % channels.len()].clone());
        let campaigns = campaigns.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_caller);
            for i in 0..per_caller {
                let n = caller * per_caller + i;
                let t = Instant::now();
                let r = client
                    .issue(IssueRequest {
                        campaign_id: campaigns[n % campaigns.len()].clone(),
                        user_id: format!("user-{n}"),
                        request_id: format!("req-{n}"),
                    })
                    .await?
                    .into_inner();
                latencies.push(t.elapsed());
                anyhow::ensure!(
                    r.outcome == IssueOutcome::Issued as i32,
                    "user-{n} was not issued a coupon: {:?}",
                    r.outcome
                );
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok((
        (per_caller * options.concurrency) as f64 / started.elapsed().as_secs_f64(),
        latencies,
    ))
}

/// The lock-based design, faithfully: every attempt takes the campaign's
/// lock (`SET lock token NX PX 1000`, retried after 1, 2, 4 … 16 ms with
/// jitter), reads the stock, checks the user set, decrements and adds the
/// user, then releases the lock only if it still holds it (a script
/// comparing the token, as the Redis docs' single-instance lock does).
async fn lock_based(
    redis: &redis::Client,
    options: &CouponBenchOptions,
    campaign: &str,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let stock_key = format!("bench-lock:{{{campaign}}}:stock");
    let users_key = format!("bench-lock:{{{campaign}}}:users");
    let lock_key = format!("bench-lock:{{{campaign}}}:lock");
    let mut setup = redis.get_multiplexed_async_connection().await?;
    let () = redis::cmd("SET")
        .arg(&stock_key)
        .arg(2 * options.lock_calls)
        .query_async(&mut setup)
        .await?;
    let release = Arc::new(redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    ));
    let per_worker = options.lock_calls.div_ceil(options.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(options.concurrency);
    for worker in 0..options.concurrency {
        // One connection per worker, as a pooled client would have.
        let mut conn = redis.get_multiplexed_async_connection().await?;
        let (stock_key, users_key, lock_key) =
            (stock_key.clone(), users_key.clone(), lock_key.clone());
        let release = release.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            let mut seed = worker as u64 * 0x9e37_79b9 + 1;
            for i in 0..per_worker {
                let user = format!("user-{}", worker * per_worker + i);
                let token = format!("{worker}-{i}");
                let t = Instant::now();
                let mut backoff_ms = 1u64;
                loop {
                    let got: Option<String> = redis::cmd("SET")
                        .arg(&lock_key)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    if got.is_some() {
                        break;
                    }
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let jitter = seed % backoff_ms.max(1);
                    tokio::time::sleep(Duration::from_millis(backoff_ms + jitter)).await;
                    backoff_ms = (backoff_ms * 2).min(16);
                }
                let stock: i64 = redis::cmd("GET")
                    .arg(&stock_key)
                    .query_async(&mut conn)
                    .await?;
                let member: bool = redis::cmd("SISMEMBER")
                    .arg(&users_key)
                    .arg(&user)
                    .query_async(&mut conn)
                    .await?;
                if stock > 0 && !member {
                    let _: i64 = redis::cmd("DECR")
                        .arg(&stock_key)
                        .query_async(&mut conn)
                        .await?;
                    let _: i64 = redis::cmd("SADD")
                        .arg(&users_key)
                        .arg(&user)
                        .query_async(&mut conn)
                        .await?;
                }
                let _: i64 = release
                    .key(&lock_key)
                    .arg(&token)
                    .invoke_async(&mut conn)
                    .await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let issued: i64 = redis::cmd("SCARD")
        .arg(&users_key)
        .query_async(&mut setup)
        .await?;
    anyhow::ensure!(
        issued as usize == per_worker * options.concurrency,
        "lock-based baseline issued {issued}"
    );
    Ok((issued as f64 / elapsed, latencies))
}
