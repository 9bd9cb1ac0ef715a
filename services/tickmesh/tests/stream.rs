//! StreamTrades: resume, cross-instance delivery, slow consumers, gaps,
//! disconnects and shutdown.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_api::marketfeed::{StreamTradesRequest, SymbolSequence};
use tonic::Code;

fn request(symbols: &[&str], from: Option<u64>) -> StreamTradesRequest {
    StreamTradesRequest {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        from_sequence: from,
        cursors: vec![],
    }
}

#[tokio::test]
async fn resume_from_a_sequence_has_no_gap_and_no_duplicate() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    publish(&mut c, trades("BTCUSDT", "a", 300)).await;

    // First session: read 120 trades, then drop the stream.
    let mut s = c
        .stream_trades(request(&["BTCUSDT"], Some(1)))
        .await
        .unwrap()
        .into_inner();
    let (first, _) = collect(&mut s, 120, Duration::from_secs(5)).await;
    drop(s);
    let seen = first[119].sequence;
    assert_eq!(
        first.iter().map(|t| t.sequence).collect::<Vec<_>>(),
        (1..=first.len() as u64).collect::<Vec<_>>()
    );

    // Meanwhile more trades arrive.
    publish(&mut c, trades("BTCUSDT", "b", 200)).await;
    let mut s = c
        .stream_trades(request(&["BTCUSDT"], Some(seen + 1)))
        .await
        .unwrap()
        .into_inner();
    // And more while the resumed stream is live.
    let mut c2 = client(&mesh).await;
    let live = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        publish(&mut c2, trades("BTCUSDT", "c", 100)).await
    });
    let (rest, gaps) = collect(&mut s, (600 - seen) as usize, Duration::from_secs(10)).await;
    live.await.unwrap();
    assert!(gaps.is_empty());
    let seqs: Vec<u64> = rest.iter().map(|t| t.sequence).collect();
    assert_eq!(seqs, (seen + 1..=600).collect::<Vec<_>>());
    let (extra, _) = collect(&mut s, 1, Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "no duplicates after the last trade");
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn from_now_skips_history_and_per_symbol_cursors_override() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "AAA", 2, 2).await;
    register(&mut c, "BBB", 2, 2).await;
    publish(&mut c, trades("AAA", "old", 10)).await;
    publish(&mut c, trades("BBB", "old", 10)).await;

    let mut s = c
        .stream_trades(StreamTradesRequest {
            symbols: vec!["AAA".into(), "BBB".into()],
            from_sequence: None,
            cursors: vec![SymbolSequence {
                symbol: "BBB".into(),
                sequence: 8,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let (got, _) = collect(&mut s, 3, Duration::from_secs(5)).await;
    assert_eq!(
        got.iter()
            .map(|t| (t.symbol.as_str(), t.sequence))
            .collect::<Vec<_>>(),
        vec![("BBB", 8), ("BBB", 9), ("BBB", 10)]
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&mut c, trades("AAA", "new", 2)).await;
    let (got, _) = collect(&mut s, 2, Duration::from_secs(5)).await;
    assert_eq!(
        got.iter()
            .map(|t| (t.symbol.as_str(), t.sequence))
            .collect::<Vec<_>>(),
        vec![("AAA", 11), ("AAA", 12)]
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn a_trade_ingested_on_one_instance_streams_from_another() {
    let redis = redis().await;
    let a = start(config(&redis.url())).await;
    let b = start(config(&redis.url())).await;
    let mut ca = client(&a).await;
    let mut cb = client(&b).await;
    register(&mut ca, "BTCUSDT", 2, 5).await;
    let mut s = cb
        .stream_trades(request(&["BTCUSDT"], None))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    publish(&mut ca, vec![trade("BTCUSDT", "x1", "67000.5", "0.1")]).await;
    let (got, _) = collect(&mut s, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].trade_id.as_str(),
            got[0].price.as_str(),
            got[0].sequence
        ),
        ("x1", "67000.50", 1)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "live, not polled: {:?}",
        started.elapsed()
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_consumer_is_served_from_the_tick_log_and_misses_nothing() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    // A tiny live buffer so the reader certainly lags.
    cfg.marketfeed.live_buffer = 4;
    cfg.marketfeed.stream_batch_max = 50;
    let mesh = start(cfg).await;
    let mut p = client(&mesh).await;
    register(&mut p, "BTCUSDT", 2, 5).await;
    // A client with a small HTTP/2 window, so not reading stalls the server
    // quickly (tonic's default 2 MB window would absorb the whole test).
    let channel = tonic::transport::Endpoint::from_shared(mesh.endpoint())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut c =
        tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient::new(channel);
    let mut s = c
        .stream_trades(request(&["BTCUSDT"], None))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 20,000 trades in 200 batches while the client reads nothing.
    for i in 0..200 {
        publish(&mut p, trades("BTCUSDT", &format!("b{i}-"), 100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now read slowly at first, then drain.
    let mut got = Vec::new();
    for _ in 0..5 {
        if let Some(m) = s.message().await.unwrap() {
            got.extend(m.trades);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rest, gaps) = collect(&mut s, 20_000 - got.len(), Duration::from_secs(30)).await;
    got.extend(rest);
    assert!(gaps.is_empty(), "the log still has everything: {gaps:?}");
    assert_eq!(
        got.iter().map(|t| t.sequence).collect::<Vec<_>>(),
        (1..=20_000).collect::<Vec<_>>()
    );
    let feed = mesh.marketfeed.clone().unwrap();
    assert!(
        feed.lag_recoveries() > 0,
        "the client fell behind the bounded live buffer and was caught up from Redis"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn trades_trimmed_from_the_log_are_reported_as_a_gap() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.marketfeed.tick_log_max_len = 100; // below the validated minimum, on purpose
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    for i in 0..10 {
        publish(&mut c, trades("BTCUSDT", &format!("b{i}-"), 100)).await;
    }
    let mut s = c
        .stream_trades(request(&["BTCUSDT"], Some(1)))
        .await
        .unwrap()
        .into_inner();
    let message = s.message().await.unwrap().unwrap();
    assert_eq!(message.gaps.len(), 1, "{message:?}");
    let gap = &message.gaps[0];
    assert_eq!((gap.symbol.as_str(), gap.first_sequence), ("BTCUSDT", 1));
    let (got, _) = collect(
        &mut s,
        (1000 - gap.last_sequence) as usize,
        Duration::from_secs(5),
    )
    .await;
    let first = message
        .trades
        .first()
        .map(|t| t.sequence)
        .unwrap_or_else(|| got[0].sequence);
    assert_eq!(
        first,
        gap.last_sequence + 1,
        "the stream continues right after the gap"
    );
    assert!(
        gap.last_sequence >= 800,
        "the log keeps about 100 trades: {gap:?}"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_ends_its_stream_task() {
    let redis = redis().await;
    // MarketFeed alone: the candle aggregator would follow the symbol too.
    let mut cfg = config(&redis.url());
    cfg.services.enabled = vec!["marketfeed".into()];
    let mesh = start(cfg).await;
    let feed = mesh.marketfeed.clone().unwrap();
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    let s = c
        .stream_trades(request(&["BTCUSDT"], None))
        .await
        .unwrap()
        .into_inner();
    assert!(
        eventually(Duration::from_secs(3), || async {
            feed.live_symbols() == 1
        })
        .await
    );
    drop(s);
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || async {
            feed.live_symbols() == 0
        })
        .await,
        "the stream task must end and release its live subscription"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable_and_a_resume_hint() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    let mut s = c
        .stream_trades(request(&["BTCUSDT"], None))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(mesh.stop());
    let status = loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("resume"), "{status:?}");
    stopping.await.unwrap().unwrap();
}

/// A Redis that came back with less than it had (an AOF that lost its tail):
/// a live subscriber past the new end of the tick log is told, instead of
/// silently skipping the trades that are given the lost sequences again; a
/// cursor past the end is refused the same way; one at the end resumes.
#[tokio::test(flavor = "multi_thread")]
async fn a_tick_log_that_went_back_ends_streams_past_its_end() {
    let dir = std::path::PathBuf::from(temp_path("redis-rewind"));
    let saved = std::path::PathBuf::from(temp_path("redis-rewind-saved"));
    let mut redis =
        RedisServer::start_with(&dir, Some(tickmesh_runtime::redis_server::Fsync::Always))
            .await
            .unwrap();
    let mut cfg = config(&redis.url());
    cfg.candles.aggregate = false;
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    register(&mut c, "RW", 2, 5).await;
    publish(&mut c, trades("RW", "a", 50)).await;
    redis.save_data_dir(&saved).unwrap();
    publish(&mut c, trades("RW", "b", 30)).await;

    let mut live = c
        .stream_trades(request(&["RW"], Some(1)))
        .await
        .unwrap()
        .into_inner();
    let (seen, _) = collect(&mut live, 80, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 80);

    redis.restart_from(&saved).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match live.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(s) => return s,
            }
        }
    })
    .await
    .expect("the live stream was not told that the tick log went back");
    // Told it went back, or (when the stream was reading from Redis as it
    // died) UNAVAILABLE; then resuming with its cursor is refused below.
    match status.code() {
        Code::FailedPrecondition => assert!(
            status.message().contains("RW") && status.message().contains("resume from sequence 51"),
            "{}",
            status.message()
        ),
        Code::Unavailable => {}
        other => panic!("unexpected {other:?}: {status:?}"),
    }

    // The old cursor is refused with where to resume; the right one works.
    let e = loop {
        match c.stream_trades(request(&["RW"], Some(81))).await {
            Ok(s) => match s.into_inner().message().await {
                Err(e) if e.code() == Code::FailedPrecondition => break e,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Err(e) if e.code() == Code::FailedPrecondition => break e,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(
        e.message().contains("resume from sequence 51"),
        "{}",
        e.message()
    );
    let r = loop {
        match c
            .publish_trades(tickmesh_api::marketfeed::PublishTradesRequest {
                trades: trades("RW", "c", 5),
                all_or_nothing: false,
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(r.accepted, 5);
    let mut resumed = c
        .stream_trades(request(&["RW"], Some(51)))
        .await
        .unwrap()
        .into_inner();
    let (after, gaps) = collect(&mut resumed, 5, Duration::from_secs(5)).await;
    assert!(gaps.is_empty());
    assert_eq!(
        after
            .iter()
            .map(|t| (t.sequence, t.trade_id.as_str()))
            .collect::<Vec<_>>(),
        (0..5)
            .map(|i| (51 + i as u64, format!("c{i}")))
            .collect::<Vec<_>>()
            .iter()
            .map(|(s, id)| (*s, id.as_str()))
            .collect::<Vec<_>>()
    );
}

/// A trade published while a new stream is between its catch-up from the
/// tick log and the moment the live tailer starts following the symbol is
/// still delivered, without waiting for a later trade (it used to wait for
/// the symbol's next trade, or forever on a quiet symbol). The window is
/// short, so many fresh symbols each race a publish against a stream start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trade_published_while_a_stream_starts_is_not_held_back() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    let mut late = Vec::new();
    for k in 0..40 {
        let symbol = format!("RACE{k}");
        register(&mut c, &symbol, 2, 5).await;
        publish(&mut c, trades(&symbol, "a", 1)).await;
        let mut publisher = c.clone();
        let (sym, delay) = (symbol.clone(), Duration::from_micros(250 * (k % 8)));
        let racing = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            publish(&mut publisher, trades(&sym, "b", 2)).await;
        });
        let mut s = c
            .stream_trades(request(&[&symbol], Some(1)))
            .await
            .unwrap()
            .into_inner();
        racing.await.unwrap();
        let (got, gaps) = collect(&mut s, 3, Duration::from_secs(3)).await;
        assert!(gaps.is_empty(), "{symbol}: {gaps:?}");
        let sequences: Vec<u64> = got.iter().map(|t| t.sequence).collect();
        if sequences != [1, 2, 3] {
            late.push((symbol, sequences));
        }
    }
    assert!(
        late.is_empty(),
        "streams that did not deliver all 3 trades within 3 s: {late:?}"
    );
    mesh.stop().await.unwrap();
}

/// Two symbols whose keys share a Redis Cluster hash slot (their hash tags
/// are the symbols), so one live read (a lane) serves both on a cluster.
fn same_slot_symbols(prefix: &str) -> (String, String) {
    use tickmesh_runtime::redis_cluster::key_slot;
    let mut seen = std::collections::HashMap::new();
    for i in 0.. {
        let symbol = format!("{prefix}{i}");
        if let Some(first) = seen.insert(key_slot(format!("{{{symbol}}}")), symbol.clone()) {
            return (first, symbol);
        }
    }
    unreachable!()
}

/// A symbol that starts being followed while the live read that will serve
/// it is blocked gets its trades at once: the new symbol wakes the blocked
/// read (`CLIENT UNBLOCK`) instead of waiting out its block (5 s on one node;
/// 1 s per slot's lane on a Redis Cluster, where this used to be the wait).
/// The second symbol shares the first one's hash slot, and joins right after
/// a trade of the first, so the read has just started a new block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbol_joining_a_blocked_read_streams_without_waiting_for_its_block() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    let (first, second) = same_slot_symbols("JOIN");
    register(&mut c, &first, 2, 5).await;
    register(&mut c, &second, 2, 5).await;
    let mut a = c
        .stream_trades(request(&[&first], None))
        .await
        .unwrap()
        .into_inner();
    // The first trade shows the read runs; the second came from a read that
    // blocked again right after it.
    for id in ["a1", "a2"] {
        publish(&mut c, vec![trade(&first, id, "100.5", "1")]).await;
        let (got, _) = collect(&mut a, 1, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "{first} {id} never came");
    }
    let mut b = c
        .stream_trades(request(&[&second], None))
        .await
        .unwrap()
        .into_inner();
    // Time for the stream to start following the symbol.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let published = tokio::time::Instant::now();
    publish(&mut c, vec![trade(&second, "b1", "100.5", "1")]).await;
    let (got, _) = collect(&mut b, 1, Duration::from_secs(10)).await;
    let took = published.elapsed();
    assert_eq!(got.len(), 1, "{second} b1 never came");
    // Waiting out the block took about 850 ms here on a cluster.
    assert!(
        took < Duration::from_millis(600),
        "{second}'s trade took {took:?}: the read it joined was not woken"
    );
    mesh.stop().await.unwrap();
}

/// Clients connected to each node of the test's cluster (`CLIENT LIST`).
async fn clients_per_node(cluster: &RedisCluster) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    for port in cluster.ports() {
        let list = cluster.query(port, &["CLIENT", "LIST"]).await.unwrap();
        out.push((port, list.lines().count()));
    }
    out
}

/// On a Redis Cluster a live read blocks a connection of its own for each
/// hash slot with followed symbols; those connections are cluster
/// connections shared across masters (one slot's read per master on each),
/// so a stream of 60 symbols (60 slots here) opens about as many connections
/// to each node as the busiest master has such slots (21), not one per slot
/// to every node (60 each, before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reads_on_a_cluster_share_connections_across_masters() {
    if !on_cluster() {
        eprintln!("Redis Cluster test (TICKMESH_TEST_REDIS=cluster): not run on a single node");
        return;
    }
    use tickmesh_runtime::redis_cluster::key_slot;
    let mut redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    let symbols: Vec<String> = (0..60).map(|i| format!("WIDE{i}")).collect();
    let cluster = redis.cluster().expect("a cluster");
    let masters: Vec<_> = cluster
        .topology()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.master && !n.slots.is_empty())
        .collect();
    let mut slots_per_master = vec![std::collections::HashSet::new(); masters.len()];
    for symbol in &symbols {
        let slot = key_slot(format!("{{{symbol}}}"));
        let master = masters
            .iter()
            .position(|m| m.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .expect("a master serves every slot");
        slots_per_master[master].insert(slot);
    }
    let busiest = slots_per_master.iter().map(|s| s.len()).max().unwrap();
    let lanes: usize = slots_per_master.iter().map(|s| s.len()).sum();
    for symbol in &symbols {
        register(&mut c, symbol, 2, 5).await;
    }
    let before = clients_per_node(cluster).await;
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let mut stream = c
        .stream_trades(request(&refs, None))
        .await
        .unwrap()
        .into_inner();
    // Every symbol's read runs once a trade of each has come through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batch: Vec<_> = symbols
        .iter()
        .map(|s| trade(s, "w1", "100.5", "1"))
        .collect();
    publish(&mut c, batch).await;
    let (got, _) = collect(&mut stream, symbols.len(), Duration::from_secs(20)).await;
    assert_eq!(got.len(), symbols.len());
    let after = clients_per_node(cluster).await;
    for ((port, was), (_, now)) in before.iter().zip(&after) {
        let opened = now.saturating_sub(*was);
        eprintln!(
            "node {port}: {opened} connections opened for {lanes} slots' reads (busiest master: {busiest})"
        );
        assert!(
            opened <= busiest + 2,
            "node {port}: {opened} connections opened for {lanes} slots' reads, the busiest master serving {busiest} of them"
        );
    }
    mesh.stop().await.unwrap();
}

/// "From now" means from the StreamTrades answer: a trade published after
/// the call returned is delivered even when the server's stream task has not
/// run yet (the bench saw 500 trades a symbol skipped under full load). The
/// test blocks its one-thread runtime, so the stream task cannot run, while
/// another process-like MarketFeed publishes.
#[test]
fn a_stream_from_now_delivers_what_was_published_after_the_call_returned() {
    use tickmesh_marketfeed::MarketFeed;
    use tickmesh_marketfeed::model::RawTrade;
    use tickmesh_runtime::RedisHandle;
    use tickmesh_runtime::config::{MarketFeedConfig, RedisConfig};
    use tokio_util::sync::CancellationToken;

    fn feed(url: &str, shutdown: &CancellationToken) -> std::sync::Arc<MarketFeed> {
        let redis = RedisHandle::new(&RedisConfig {
            url: url.to_string(),
            ..Default::default()
        })
        .unwrap();
        let config = MarketFeedConfig {
            auto_register_instruments: true,
            ..Default::default()
        };
        MarketFeed::new(config, redis, shutdown.clone())
    }
    fn trade(id: &str) -> RawTrade {
        RawTrade {
            symbol: "NOWUSDT".into(),
            trade_id: id.into(),
            price: "1.5".into(),
            quantity: "2".into(),
            time_ns: Ok(tickmesh_runtime::proto_time::now_nanos()),
            side: Default::default(),
        }
    }
    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    one_thread().block_on(async {
        let server = redis().await;
        let shutdown = CancellationToken::new();
        let here = feed(&server.url(), &shutdown);
        here.publish(vec![trade("before")], false).await.unwrap();
        let mut stream = here
            .stream_trades(vec!["NOWUSDT".into()], None, vec![], true)
            .await
            .unwrap();
        let url = server.url();
        std::thread::spawn(move || {
            one_thread().block_on(async {
                let shutdown = CancellationToken::new();
                let other = feed(&url, &shutdown);
                other.publish(vec![trade("after")], false).await.unwrap();
                shutdown.cancel();
            })
        })
        .join()
        .unwrap();
        let chunk = tokio::time::timeout(Duration::from_secs(3), stream.recv())
            .await
            .expect("the trade published after the call came")
            .unwrap()
            .unwrap();
        let got: Vec<(&str, u64)> = chunk
            .trades
            .iter()
            .map(|t| (t.trade_id.as_str(), t.sequence))
            .collect();
        assert_eq!(got, [("after", 2)]);
        shutdown.cancel();
    });
}
