//! Quote pollers in the mesh (issue 16): `[[pollers]]` against the fake
//! KIS-style broker on 127.0.0.1. `GetQuotes` shows polled quotes, a miss
//! makes one shared upstream call and answers with it, and a closed market
//! (a holiday) gives the last session's quote, not a stale one.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_api::marketfeed::{GetQuotesRequest, GetQuotesResponse, UpsertInstrumentRequest};
use tickmesh_fake_venue::broker::{BrokerConfig, FakeBroker};
use tickmesh_runtime::pollers_config::PollerConfig;

fn poller(broker: &FakeBroker, codes: &[&str], holidays: Vec<String>) -> PollerConfig {
    PollerConfig {
        name: "kis".into(),
        base_url: broker.base_url(),
        app_key: broker.app_key(),
        app_secret: broker.app_secret(),
        symbols: codes.iter().map(|c| c.to_string()).collect(),
        symbol_prefix: "krx:".into(),
        requests_per_second: 10,
        // One full refresh an hour: reads and misses drive what is fetched.
        refresh_interval: Duration::from_secs(3600),
        holidays,
        miss_wait: Duration::from_secs(3),
        ..PollerConfig::default()
    }
}

/// Registers `krx:<code>` instruments (KRW, whole won, UTC, no sessions: open
/// every day but on the poller's holidays) before the pollers start.
async fn register_codes(redis_url: &str, codes: &[&str]) {
    let mesh = start(config(redis_url)).await;
    let mut c = client(&mesh).await;
    for code in codes {
        c.upsert_instrument(UpsertInstrumentRequest {
            instrument: Some(tickmesh_api::marketfeed::Instrument {
                symbol: format!("krx:{code}"),
                venue: "krx".into(),
                price_scale: 0,
                quantity_scale: 0,
                time_zone: "UTC".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    mesh.stop().await.unwrap();
}

async fn quotes(c: &mut Client, symbols: &[&str], stale_ms: u64) -> GetQuotesResponse {
    c.get_quotes(GetQuotesRequest {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        stale_after: Some(prost_types::Duration {
            seconds: (stale_ms / 1000) as i64,
            nanos: ((stale_ms % 1000) * 1_000_000) as i32,
        }),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_quotes_misses_fetch_once_and_reads_refresh_first() {
    let redis = redis().await;
    let broker = FakeBroker::start(BrokerConfig::default()).await.unwrap();
    broker.set_auto_move(false);
    // 200 codes at 10 requests/s: the full refresh reaches the last one,
    // 005930, only after 20 s, so the first reads of it are misses.
    let others: Vec<String> = (0..199).map(|i| format!("{:06}", 100_000 + i)).collect();
    let mut codes: Vec<&str> = others.iter().map(String::as_str).collect();
    for code in &codes {
        broker.add_symbol(code, "50000", "50");
    }
    codes.push("005930");
    broker.add_symbol("005930", "71500", "100");
    register_codes(&redis.url(), &codes).await;
    let mut cfg = config(&redis.url());
    cfg.pollers = vec![poller(&broker, &codes, vec![])];
    let mesh = start(cfg).await;
    let c = client(&mesh).await;

    // Twenty clients ask at once for a symbol with no quote yet: each gets
    // the upstream's price in its first answer.
    let mut askers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut c = c.clone();
        askers.spawn(async move { quotes(&mut c, &["krx:005930"], 60_000).await });
    }
    while let Some(r) = askers.join_next().await {
        let r = r.unwrap();
        assert!(r.missing_symbols.is_empty(), "{r:?}");
        let q = &r.quotes[0];
        assert_eq!(
            (q.symbol.as_str(), q.price.as_str()),
            ("krx:005930", "71500")
        );
        assert!(!q.stale && !q.from_last_session, "{q:?}");
        assert_eq!(q.trade_id, "");
    }
    let after_misses = broker.requests();
    assert!(
        after_misses <= 4,
        "20 concurrent misses made {after_misses} upstream requests"
    );

    // A read makes the symbol hot: a new upstream price shows up soon,
    // without waiting for the hourly full refresh.
    let (moved, cv) = ("71600", 1_000_000);
    assert!(broker.set_quote("005930", moved, cv));
    let mut c2 = c.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let mut c = c2.clone();
            async move { quotes(&mut c, &["krx:005930"], 60_000).await.quotes[0].price == moved }
        })
        .await,
        "the read symbol was not refreshed: {:?}",
        quotes(&mut c2, &["krx:005930"], 60_000).await
    );
    // A StreamTrades client keeps the symbols it follows hot too: 100150's
    // new price is polled within seconds, long before the full refresh
    // (200 codes at 10/s) reaches it. Read through an instance without
    // pollers, so the check itself does not make it hot.
    assert!(broker.set_quote("100150", "51234", 7));
    let mut streamer = c.clone();
    let _stream = streamer
        .stream_trades(tickmesh_api::marketfeed::StreamTradesRequest {
            symbols: vec!["krx:100150".into()],
            from_sequence: None,
            cursors: vec![],
        })
        .await
        .unwrap();
    let reader = start(config(&redis.url())).await;
    let r = client(&reader).await;
    assert!(
        eventually(Duration::from_secs(6), || {
            let mut r = r.clone();
            async move {
                quotes(&mut r, &["krx:100150"], 60_000)
                    .await
                    .quotes
                    .first()
                    .is_some_and(|q| q.price == "51234")
            }
        })
        .await,
        "a streamed symbol was not refreshed first"
    );
    let status = &mesh.pollers[0].status();
    assert_eq!(status.rate_limited, 0, "{status:?}");
    reader.stop().await.unwrap();
    mesh.stop().await.unwrap();
    broker.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_holiday_the_quote_is_the_last_sessions_not_stale() {
    let redis = redis().await;
    let broker = FakeBroker::start(BrokerConfig::default()).await.unwrap();
    broker.set_auto_move(false);
    broker.add_symbol("005930", "71500", "100");
    register_codes(&redis.url(), &["005930"]).await;
    let today = chrono::Utc::now().date_naive().to_string();
    let mut cfg = config(&redis.url());
    cfg.pollers = vec![poller(&broker, &["005930"], vec![today])];
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    // The poller looks once after start, then idles.
    let seen = eventually(Duration::from_secs(10), || {
        let mut c = c.clone();
        async move {
            let r = quotes(&mut c, &["krx:005930"], 1).await;
            r.quotes.first().is_some_and(|q| q.price == "71500")
        }
    })
    .await;
    assert!(seen, "{:?}", quotes(&mut c, &["krx:005930"], 1).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let q = quotes(&mut c, &["krx:005930"], 1).await.quotes[0].clone();
    assert!(q.from_last_session, "{q:?}");
    assert!(
        !q.stale,
        "an old quote of a closed market is not stale: {q:?}"
    );
    let requests = broker.requests();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    quotes(&mut c, &["krx:005930"], 1).await;
    assert!(
        broker.requests() <= requests + 1,
        "the poller kept polling a closed market"
    );
    mesh.stop().await.unwrap();
    broker.shutdown();
}

/// Three instances poll one app key: they share one access token (the
/// broker issues one), and concurrent misses for a symbol reaching all three
/// make one upstream request for it in the whole mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_token_and_one_request_per_miss() {
    let redis = redis().await;
    let broker = FakeBroker::start(BrokerConfig::default()).await.unwrap();
    broker.set_auto_move(false);
    // As above: 005930 is last in a 200-code refresh at 10 requests/s.
    let others: Vec<String> = (0..199).map(|i| format!("{:06}", 100_000 + i)).collect();
    let mut codes: Vec<&str> = others.iter().map(String::as_str).collect();
    for code in &codes {
        broker.add_symbol(code, "50000", "50");
    }
    codes.push("005930");
    broker.add_symbol("005930", "71500", "100");
    register_codes(&redis.url(), &codes).await;
    let mut meshes = Vec::new();
    for _ in 0..3 {
        let mut cfg = config(&redis.url());
        cfg.pollers = vec![poller(&broker, &codes, vec![])];
        meshes.push(start(cfg).await);
    }
    let mut clients = Vec::new();
    for mesh in &meshes {
        clients.push(client(mesh).await);
    }

    let mut askers = tokio::task::JoinSet::new();
    for n in 0..30 {
        let mut c = clients[n % 3].clone();
        askers.spawn(async move { quotes(&mut c, &["krx:005930"], 60_000).await });
    }
    while let Some(r) = askers.join_next().await {
        let r = r.unwrap();
        assert!(r.missing_symbols.is_empty(), "{r:?}");
        assert_eq!(r.quotes[0].price, "71500", "{r:?}");
    }
    assert_eq!(
        broker.times_asked("005930"),
        1,
        "30 misses over 3 instances: one upstream request"
    );
    let joined: u64 = meshes
        .iter()
        .map(|m| m.pollers[0].status().joined_elsewhere)
        .sum();
    assert!(
        joined >= 1,
        "the other instances waited for the leader's answer"
    );

    // Every instance has sent requests of the full refresh by now, on one token.
    assert!(
        eventually(Duration::from_secs(10), || async {
            meshes.iter().all(|m| m.pollers[0].status().requests > 0)
        })
        .await,
        "not every instance polled"
    );
    assert_eq!(broker.tokens_issued(), 1, "one access token for the mesh");
    for mesh in meshes {
        mesh.stop().await.unwrap();
    }
    broker.shutdown();
}

/// A SubscribeCandles client makes the symbol hot for the pollers of the
/// whole mesh, even when it reached an instance that runs no poller (in a
/// cluster the candles pods are not the marketfeed pods).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candle_subscriber_anywhere_makes_its_symbol_hot() {
    use tickmesh_api::candles::SubscribeCandlesRequest;
    use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
    let redis = redis().await;
    let broker = FakeBroker::start(BrokerConfig::default()).await.unwrap();
    broker.set_auto_move(false);
    // 50 codes at 10 requests/s: the first full refresh takes 5 s, the next
    // is an hour later.
    let all: Vec<String> = (0..50).map(|i| format!("{:06}", 100_000 + i)).collect();
    let codes: Vec<&str> = all.iter().map(String::as_str).collect();
    for code in &codes {
        broker.add_symbol(code, "50000", "50");
    }
    register_codes(&redis.url(), &codes).await;
    let mut cfg = config(&redis.url());
    cfg.pollers = vec![poller(&broker, &codes, vec![])];
    let polling = start(cfg).await;
    let elsewhere = start(config(&redis.url())).await;
    // Let the first full refresh store 100040's quote, then move its price:
    // only a hot refresh shows it before the next full refresh.
    let mut reader = client(&elsewhere).await;
    assert!(
        eventually(Duration::from_secs(15), || {
            let mut r = reader.clone();
            async move {
                !quotes(&mut r, &["krx:100040"], 60_000)
                    .await
                    .quotes
                    .is_empty()
            }
        })
        .await,
        "{:?}",
        polling.pollers[0].status()
    );
    assert!(broker.set_quote("100040", "51111", 9));
    assert_eq!(
        polling.pollers[0].status().hot_codes,
        0,
        "nothing is hot yet: the candle aggregators' own StreamTrades are not clients"
    );
    let asked = broker.times_asked("100040");
    let mut candles = CandleQueryServiceClient::connect(elsewhere.endpoint())
        .await
        .unwrap();
    let subscription = candles
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "krx:100040".into(),
            intervals: vec!["1m".into()],
            cursor: String::new(),
            indicators: Vec::new(),
        })
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(6), || {
            let mut r = reader.clone();
            async move {
                quotes(&mut r, &["krx:100040"], 60_000)
                    .await
                    .quotes
                    .first()
                    .is_some_and(|q| q.price == "51111")
            }
        })
        .await,
        "a followed symbol was not refreshed first"
    );
    assert!(broker.times_asked("100040") > asked);
    drop(subscription);
    let _ = quotes(&mut reader, &["krx:100040"], 60_000).await;
    elsewhere.stop().await.unwrap();
    polling.stop().await.unwrap();
    broker.shutdown();
}
