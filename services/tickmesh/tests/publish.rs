//! Publishing trades: validation, dedupe, sequencing, quotes, admin auth, limits.

mod common;

use std::time::Duration;

use common::*;
use tickmesh_api::marketfeed::{
    GetInstrumentRequest, GetQuotesRequest, ListInstrumentsRequest, PublishRequest,
    PublishTradesRequest, RejectionCode, StreamTradesRequest, TradingSession,
    UpsertInstrumentRequest,
};
use tickmesh_runtime::proto_time::now_nanos;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn every_trade_rule_is_enforced_and_bad_trades_are_stored_nowhere() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;

    let now = now_nanos();
    let mut far_future = trade("BTCUSDT", "f", "1", "1");
    far_future.time = Some(tickmesh_runtime::proto_time::nanos_to_timestamp(
        now + 3_600_000_000_000,
    ));
    let mut no_time = trade("BTCUSDT", "nt", "1", "1");
    no_time.time = None;
    let mut bad_side = trade("BTCUSDT", "bs", "1", "1");
    bad_side.side = 7;
    let cases = vec![
        (
            trade("BTC USDT", "a", "1", "1"),
            "symbol",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("ETHUSDT", "b", "1", "1"),
            "symbol",
            RejectionCode::UnknownSymbol,
        ),
        (
            trade("BTCUSDT", "", "1", "1"),
            "trade_id",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", &"x".repeat(200), "1", "1"),
            "trade_id",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", "c", "0", "1"),
            "price",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", "d", "-5", "1"),
            "price",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", "e", "1.234", "1"),
            "price",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", "g", "1e3", "1"),
            "price",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", "h", "abc", "1"),
            "price",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", "i", "1", "-1"),
            "quantity",
            RejectionCode::InvalidArgument,
        ),
        (
            trade("BTCUSDT", "j", "1", "0.000001"),
            "quantity",
            RejectionCode::InvalidArgument,
        ),
        (far_future, "time", RejectionCode::InvalidArgument),
        (no_time, "time", RejectionCode::InvalidArgument),
        (bad_side, "side", RejectionCode::InvalidArgument),
    ];
    let n = cases.len();
    let mut batch: Vec<_> = cases.iter().map(|(t, _, _)| t.clone()).collect();
    batch.push(trade("BTCUSDT", "good", "67012.25", "0.015"));
    let reply = publish(&mut c, batch).await;
    assert_eq!(
        (reply.accepted, reply.duplicate, reply.rejected),
        (1, 0, n as u32)
    );
    for (i, (_, field, code)) in cases.iter().enumerate() {
        let r = &reply.rejections[i];
        assert_eq!(r.index as usize, i);
        assert_eq!(&r.field, field, "case {i}: {}", r.reason);
        assert_eq!(r.code, *code as i32, "case {i}");
        assert!(!r.reason.is_empty());
    }
    // Only the good trade is in the log and the quote.
    let mut stream = c
        .stream_trades(StreamTradesRequest {
            symbols: vec!["BTCUSDT".into()],
            from_sequence: Some(1),
            cursors: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let (got, _) = collect(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            got[0].trade_id.as_str(),
            got[0].price.as_str(),
            got[0].quantity.as_str(),
            got[0].sequence
        ),
        ("good", "67012.25", "0.01500", 1)
    );
    let (more, _) = collect(&mut stream, 1, Duration::from_millis(300)).await;
    assert!(
        more.is_empty(),
        "rejected trades must not be stored: {more:?}"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn all_or_nothing_fails_the_call_with_field_violations_and_stores_nothing() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    let status = c
        .publish_trades(PublishTradesRequest {
            trades: vec![
                trade("BTCUSDT", "ok", "1", "1"),
                trade("BTCUSDT", "bad", "1.001", "1"),
            ],
            all_or_nothing: true,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("field violations")
        .field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, "trades[1].price");
    let quotes = c
        .get_quotes(GetQuotesRequest {
            symbols: vec!["BTCUSDT".into()],
            stale_after: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(quotes.quotes.is_empty(), "nothing may be stored");
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn request_level_bad_input_is_invalid_argument_naming_the_field() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.marketfeed.max_batch_trades = 10;
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;

    let expect_invalid = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let fields: Vec<String> = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert!(
            fields.iter().any(|f| f == field),
            "{field} not in {fields:?}"
        );
    };
    expect_invalid(
        c.publish_trades(PublishTradesRequest {
            trades: vec![],
            all_or_nothing: false,
        })
        .await
        .unwrap_err(),
        "trades",
    );
    expect_invalid(
        c.publish_trades(PublishTradesRequest {
            trades: trades("BTCUSDT", "t", 11),
            all_or_nothing: false,
        })
        .await
        .unwrap_err(),
        "trades",
    );
    expect_invalid(
        c.get_quotes(GetQuotesRequest::default()).await.unwrap_err(),
        "symbols",
    );
    expect_invalid(
        c.get_quotes(GetQuotesRequest {
            symbols: vec!["{bad}".into()],
            stale_after: None,
        })
        .await
        .unwrap_err(),
        "symbols[0]",
    );
    expect_invalid(
        c.stream_trades(StreamTradesRequest::default())
            .await
            .unwrap_err(),
        "symbols",
    );
    expect_invalid(
        c.stream_trades(StreamTradesRequest {
            symbols: vec!["BTCUSDT".into()],
            from_sequence: None,
            cursors: vec![tickmesh_api::marketfeed::SymbolSequence {
                symbol: "ETH".into(),
                sequence: 1,
            }],
        })
        .await
        .unwrap_err(),
        "cursors[0].symbol",
    );
    let status = c
        .stream_trades(StreamTradesRequest {
            symbols: vec!["NOPE".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    expect_invalid(
        c.list_instruments(ListInstrumentsRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .unwrap_err(),
        "page_size",
    );
    expect_invalid(
        c.list_instruments(ListInstrumentsRequest {
            page_size: 1,
            page_token: "forged".into(),
        })
        .await
        .unwrap_err(),
        "page_token",
    );
    assert_eq!(
        c.get_instrument(GetInstrumentRequest {
            symbol: "NOPE".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );

    // Instrument rules.
    let mut bad = instrument("ETH", 19, 2);
    bad.time_zone = "Mars/Base".into();
    bad.sessions = vec![TradingSession {
        days: vec![1],
        open_time: "9:00".into(),
        close_time: "15:30".into(),
    }];
    let status = c
        .upsert_instrument(UpsertInstrumentRequest {
            instrument: Some(bad),
        })
        .await
        .unwrap_err();
    expect_invalid(status, "instrument.sessions[0].open_time");
    let mut bad = instrument("ETH", 19, 2);
    bad.time_zone = "Mars/Base".into();
    let status = c
        .upsert_instrument(UpsertInstrumentRequest {
            instrument: Some(bad),
        })
        .await
        .unwrap_err();
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert!(
        fields.contains(&"instrument.price_scale".to_string())
            && fields.contains(&"instrument.time_zone".to_string()),
        "{fields:?}"
    );
    expect_invalid(
        c.upsert_instrument(UpsertInstrumentRequest { instrument: None })
            .await
            .unwrap_err(),
        "instrument",
    );
    assert_eq!(
        c.get_instrument(GetInstrumentRequest {
            symbol: "ETH".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound,
        "nothing written"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn instruments_round_trip_and_page() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    let mut krx = instrument("005930.KS", 0, 0);
    krx.venue = "krx".into();
    krx.time_zone = "Asia/Seoul".into();
    krx.sessions = vec![TradingSession {
        days: vec![1, 2, 3, 4, 5],
        open_time: "09:00".into(),
        close_time: "15:30".into(),
    }];
    let created = c
        .upsert_instrument(UpsertInstrumentRequest {
            instrument: Some(krx.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let again = c
        .upsert_instrument(UpsertInstrumentRequest {
            instrument: Some(krx.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let got = c
        .get_instrument(GetInstrumentRequest {
            symbol: "005930.KS".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instrument
        .unwrap();
    assert_eq!(
        (
            got.time_zone.as_str(),
            got.sessions[0].open_time.as_str(),
            got.sessions[0].close_time.as_str()
        ),
        ("Asia/Seoul", "09:00", "15:30")
    );
    assert_eq!(got.sessions[0].days, vec![1, 2, 3, 4, 5]);
    for s in ["A1", "B1", "C1", "D1"] {
        register(&mut c, s, 2, 2).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_instruments(ListInstrumentsRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.instruments.into_iter().map(|i| i.symbol));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec!["005930.KS", "A1", "B1", "C1", "D1"]);
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn duplicates_are_counted_not_stored_within_and_across_batches() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    let first = publish(
        &mut c,
        vec![
            trade("BTCUSDT", "1", "10", "1"),
            trade("BTCUSDT", "2", "11", "1"),
            trade("BTCUSDT", "1", "10", "1"),
        ],
    )
    .await;
    assert_eq!((first.accepted, first.duplicate), (2, 1));
    let second = publish(
        &mut c,
        vec![
            trade("BTCUSDT", "2", "11", "1"),
            trade("BTCUSDT", "3", "12", "1"),
        ],
    )
    .await;
    assert_eq!((second.accepted, second.duplicate), (1, 1));
    assert_eq!(second.last_sequences[0].sequence, 3);
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn sequences_have_no_gap_or_duplicate_under_concurrent_publishers_on_two_instances() {
    let redis = redis().await;
    let a = start(config(&redis.url())).await;
    let b = start(config(&redis.url())).await;
    let mut ca = client(&a).await;
    register(&mut ca, "BTCUSDT", 2, 5).await;
    let mut tasks = Vec::new();
    for p in 0..8 {
        let mut c = if p % 2 == 0 {
            client(&a).await
        } else {
            client(&b).await
        };
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let batch = trades("BTCUSDT", &format!("p{p}-r{round}-"), 25);
                let r = publish(&mut c, batch).await;
                assert_eq!(r.accepted, 25);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut stream = ca
        .stream_trades(StreamTradesRequest {
            symbols: vec!["BTCUSDT".into()],
            from_sequence: Some(1),
            cursors: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let (got, gaps) = collect(&mut stream, 2000, Duration::from_secs(10)).await;
    assert!(gaps.is_empty());
    let seqs: Vec<u64> = got.iter().map(|t| t.sequence).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<u64>>());
    let mut ids: Vec<&str> = got.iter().map(|t| t.trade_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2000);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn quotes_follow_event_time_and_show_staleness() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    register(&mut c, "ETHUSDT", 2, 5).await;
    let now = now_nanos();
    publish(
        &mut c,
        vec![trade_at("BTCUSDT", "1", "100.00", "1", now - 1_000_000_000)],
    )
    .await;
    // A late trade (older event time) does not move the quote back.
    publish(
        &mut c,
        vec![trade_at("BTCUSDT", "0", "90.00", "1", now - 5_000_000_000)],
    )
    .await;
    publish(
        &mut c,
        vec![trade_at(
            "ETHUSDT",
            "1",
            "3000.5",
            "2",
            now - 600_000_000_000,
        )],
    )
    .await;
    let reply = c
        .get_quotes(GetQuotesRequest {
            symbols: vec![
                "ETHUSDT".into(),
                "BTCUSDT".into(),
                "NOPE".into(),
                "BTCUSDT".into(),
            ],
            stale_after: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.quotes.len(), 2);
    assert_eq!(reply.missing_symbols, vec!["NOPE".to_string()]);
    let eth = &reply.quotes[0];
    let btc = &reply.quotes[1];
    assert_eq!(
        (eth.symbol.as_str(), eth.price.as_str(), eth.stale),
        ("ETHUSDT", "3000.50", true)
    );
    assert_eq!(
        (
            btc.symbol.as_str(),
            btc.price.as_str(),
            btc.sequence,
            btc.stale
        ),
        ("BTCUSDT", "100.00", 1, false)
    );
    assert!(eth.age.as_ref().unwrap().seconds >= 600);
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn quotes_for_thousands_of_symbols_in_one_call() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.marketfeed.auto_register_instruments = true;
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    let symbols: Vec<String> = (0..2500).map(|i| format!("KRX{i:04}")).collect();
    for chunk in symbols.chunks(1000) {
        let batch = chunk.iter().map(|s| trade(s, "1", "71000", "10")).collect();
        assert_eq!(publish(&mut c, batch).await.accepted as usize, chunk.len());
    }
    let reply = c
        .get_quotes(GetQuotesRequest {
            symbols: symbols.clone(),
            stale_after: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.quotes.len(), 2500);
    assert!(
        reply
            .quotes
            .iter()
            .zip(&symbols)
            .all(|(q, s)| &q.symbol == s && q.price == "71000.00000000")
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn admin_calls_need_the_bearer_token_when_one_is_configured() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.auth.admin_token = "s3cret".into();
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    let req = || UpsertInstrumentRequest {
        instrument: Some(instrument("BTCUSDT", 2, 5)),
    };
    assert_eq!(
        c.upsert_instrument(req()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut wrong = tonic::Request::new(req());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        c.upsert_instrument(wrong).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        c.get_instrument(GetInstrumentRequest {
            symbol: "BTCUSDT".into()
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    let mut right = tonic::Request::new(req());
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    c.upsert_instrument(right).await.unwrap();
    // Non-admin calls stay open.
    assert_eq!(
        publish(&mut c, vec![trade("BTCUSDT", "1", "1", "1")])
            .await
            .accepted,
        1
    );
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_symbols_are_auto_registered_only_in_dev_mode() {
    let redis = redis().await;
    let strict = start(config(&redis.url())).await;
    let mut c = client(&strict).await;
    let r = publish(&mut c, vec![trade("NEWCOIN", "1", "1", "1")]).await;
    assert_eq!(r.rejections[0].code, RejectionCode::UnknownSymbol as i32);
    strict.stop().await.unwrap();

    let mut cfg = config(&redis.url());
    cfg.marketfeed.auto_register_instruments = true;
    let dev = start(cfg).await;
    let mut c = client(&dev).await;
    assert_eq!(
        publish(&mut c, vec![trade("NEWCOIN", "1", "1.12345678", "1")])
            .await
            .accepted,
        1
    );
    let i = c
        .get_instrument(GetInstrumentRequest {
            symbol: "NEWCOIN".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instrument
        .unwrap();
    assert_eq!(
        (i.price_scale, i.quantity_scale, i.time_zone.as_str()),
        (8, 8, "UTC")
    );
    dev.stop().await.unwrap();
}

#[tokio::test]
async fn client_streaming_publish_sums_batches() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    let mut batches = vec![
        PublishRequest {
            trades: trades("BTCUSDT", "a", 100),
        },
        PublishRequest {
            trades: trades("BTCUSDT", "a", 100),
        },
    ];
    batches.push(PublishRequest {
        trades: vec![
            trade("BTCUSDT", "bad", "x", "1"),
            trade("BTCUSDT", "b1", "1", "1"),
        ],
    });
    let summary = c
        .publish(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            summary.batches,
            summary.accepted,
            summary.duplicate,
            summary.rejected
        ),
        (3, 101, 100, 1)
    );
    assert_eq!(
        (summary.rejections[0].batch, summary.rejections[0].index),
        (2, 0)
    );
    assert_eq!(summary.last_sequences[0].sequence, 101);
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.server.max_message_bytes = 4096;
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    register(&mut c, "BTCUSDT", 2, 5).await;
    let status = c
        .publish_trades(PublishTradesRequest {
            trades: trades("BTCUSDT", "big", 200),
            all_or_nothing: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn client_deadlines_are_honoured() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    // A client stream that never ends must end at the caller's deadline (tonic
    // enforces grpc-timeout on both sides; the server's GrpcTimeout layer is
    // always on, see runtime::server).
    let (_tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(1);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("grpc-timeout", "300m".parse().unwrap());
    let started = std::time::Instant::now();
    let status = c.publish(request).await.unwrap_err();
    // tonic's server reports an expired deadline as CANCELLED ("Timeout expired").
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    mesh.stop().await.unwrap();
}

/// NOT_FOUND messages name the thing once: `instrument "NOPE" not found`.
#[tokio::test]
async fn unknown_symbols_are_not_found_and_said_once() {
    use tickmesh_api::candles::candle_query_service_client::CandleQueryServiceClient;
    use tickmesh_api::candles::{GetCandlesRequest, SubscribeCandlesRequest};
    use tickmesh_api::marketfeed::{GetInstrumentRequest, StreamTradesRequest};
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.marketfeed.auto_register_instruments = false;
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    let mut candles = CandleQueryServiceClient::connect(mesh.endpoint())
        .await
        .unwrap();
    let want = "instrument \"NOPE\" not found";
    let e = c
        .get_instrument(GetInstrumentRequest {
            symbol: "NOPE".into(),
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, want));
    let e = c
        .stream_trades(StreamTradesRequest {
            symbols: vec!["NOPE".into()],
            from_sequence: None,
            cursors: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, want));
    let e = candles
        .get_candles(GetCandlesRequest {
            symbol: "NOPE".into(),
            interval: "1m".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, want));
    let e = match candles
        .subscribe_candles(SubscribeCandlesRequest {
            symbol: "NOPE".into(),
            intervals: vec!["1m".into()],
            ..Default::default()
        })
        .await
    {
        Err(e) => e,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, want));
    mesh.stop().await.unwrap();
}
