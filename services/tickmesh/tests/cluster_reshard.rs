//! Slots move between masters (`redis-cli --cluster reshard`) while trades
//! are ingested: clients see nothing but retryable errors, and every trade
//! ends up in its tick log once, with sequences 1..n.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use tickmesh_api::marketfeed::PublishTradesRequest;
use tickmesh_marketfeed::keys::Keys;

const SYMBOLS: usize = 24;
const PER_BATCH: usize = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_move_while_trades_are_ingested_and_nothing_is_lost_or_doubled() {
    let cluster = RedisCluster::start(3, 0, Duration::from_millis(1000))
        .await
        .expect("start a local Redis Cluster");
    let url = cluster.url();
    let mesh = start(config(&url)).await;
    let mut c = client(&mesh).await;
    let symbols: Vec<String> = (0..SYMBOLS).map(|i| format!("SYM{i}USDT")).collect();
    for s in &symbols {
        register(&mut c, s, 2, 0).await;
    }
    let symbols_for_batches = symbols.clone();
    let base = tickmesh_runtime::proto_time::now_nanos() - 3_600_000_000_000;
    let batch = move |b: usize| -> Vec<_> {
        (0..PER_BATCH)
            .map(|i| {
                let n = b * PER_BATCH + i;
                trade_at(
                    &symbols_for_batches[n % SYMBOLS],
                    &format!("t{n}"),
                    &format!("{}.5", 100 + n % 17),
                    "1",
                    base + n as i64 * 1_000_000,
                )
            })
            .collect()
    };

    // Publish batch after batch until the reshards are over (and 20 more),
    // retrying a failed call with the same trades.
    let resharded = Arc::new(AtomicBool::new(false));
    let publisher = {
        let mut c = c.clone();
        let resharded = resharded.clone();
        tokio::spawn(async move {
            let mut retries = Vec::new();
            let mut after = 0;
            let mut b = 0;
            while after < 20 {
                if resharded.load(Ordering::SeqCst) {
                    after += 1;
                }
                let trades = batch(b);
                b += 1;
                loop {
                    match c
                        .publish_trades(PublishTradesRequest {
                            trades: trades.clone(),
                            all_or_nothing: false,
                        })
                        .await
                    {
                        Ok(r) => {
                            let r = r.into_inner();
                            assert_eq!(
                                r.accepted + r.duplicate,
                                PER_BATCH as u32,
                                "every trade is taken: {r:?}"
                            );
                            break;
                        }
                        Err(status) => {
                            retries.push(status.code());
                            assert!(retries.len() < 200, "no progress: {retries:?}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (b, retries)
        })
    };

    // Meanwhile: move a third of one master's slots to another, then back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let masters: Vec<_> = cluster
        .topology()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.master)
        .collect();
    cluster
        .reshard(&masters[0].id, &masters[1].id, 1800)
        .await
        .expect("reshard while ingesting");
    cluster
        .reshard(&masters[1].id, &masters[2].id, 1800)
        .await
        .expect("reshard while ingesting");
    resharded.store(true, Ordering::SeqCst);
    let (batches, retries) = publisher.await.unwrap();
    assert!(
        retries.iter().all(|code| *code == tonic::Code::Unavailable),
        "only retryable errors: {retries:?}"
    );
    eprintln!(
        "{batches} batches of {PER_BATCH}; calls retried during the reshards: {}",
        retries.len()
    );

    // Every trade once, sequences 1..n, per symbol.
    let mut conn = tickmesh_runtime::RedisHandle::new(&config(&url).redis)
        .unwrap()
        .conn();
    let keys = Keys::new("tm");
    let mut seen = HashSet::new();
    for s in &symbols {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(keys.tick_log(s))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(entries.len(), batches * PER_BATCH / SYMBOLS, "{s}");
        for (i, (id, fields)) in entries.iter().enumerate() {
            assert_eq!(id, &format!("0-{}", i + 1), "{s}: sequences 1..n");
            let at = fields.iter().position(|f| f == "t").unwrap();
            assert!(
                seen.insert(fields[at + 1].clone()),
                "{} twice",
                fields[at + 1]
            );
        }
    }
    assert_eq!(seen.len(), batches * PER_BATCH);
    mesh.stop().await.unwrap();
}
