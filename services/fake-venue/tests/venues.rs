//! End-to-end checks of the fake venues with a real WebSocket client and a tiny HTTP client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickmesh_fake_venue::{FakeVenue, VenueKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const T: Duration = Duration::from_secs(5);

async fn connect(url: &str) -> Ws {
    connect_async(url).await.expect("connect").0
}

/// Next data frame (text or binary) as (is_binary, text); skips pings/pongs.
async fn next_frame(ws: &mut Ws) -> (bool, String) {
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("stream ended")
            .expect("ws error");
        match m {
            Message::Text(t) => return (false, t.as_str().to_string()),
            Message::Binary(b) => return (true, String::from_utf8(b.to_vec()).unwrap()),
            Message::Close(c) => panic!("unexpected close {c:?}"),
            _ => continue,
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_frame(ws).await.1).unwrap()
}

/// Asserts that no data frame arrives within `d`.
async fn quiet(ws: &mut Ws, d: Duration) {
    let r = tokio::time::timeout(d, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => return true,
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    assert!(r.is_err() || r == Ok(false), "unexpected data frame");
}

struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn get(base: &str, path: &str) -> Http {
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_string(),
    }
}

fn is_str(v: &Value, k: &str) -> bool {
    v.get(k).is_some_and(Value::is_string)
}
fn is_num(v: &Value, k: &str) -> bool {
    v.get(k).is_some_and(Value::is_number)
}
fn is_bool(v: &Value, k: &str) -> bool {
    v.get(k).is_some_and(Value::is_boolean)
}

async fn binance_setup() -> (FakeVenue, Ws) {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Binance, "BTCUSDT", "0.01", "0.00001", "50000.00");
    let url = format!(
        "{}/stream?streams=btcusdt@trade",
        fv.ws_base(VenueKind::Binance)
    );
    let ws = connect(&url).await;
    assert!(fv.wait_subscribed(VenueKind::Binance, "BTCUSDT", T).await);
    (fv, ws)
}

async fn binance_ids(ws: &mut Ws, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let v = next_json(ws).await;
        ids.push(v["data"]["t"].as_u64().unwrap());
    }
    ids
}

#[tokio::test]
async fn binance_combined_stream_shapes() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Binance, "BTCUSDT", "0.01", "0.00001", "50000.00");
    let url = format!(
        "{}/stream?streams=btcusdt@trade/btcusdt@aggTrade",
        fv.ws_base(VenueKind::Binance)
    );
    let mut ws = connect(&url).await;
    assert!(fv.wait_subscribed(VenueKind::Binance, "BTCUSDT", T).await);
    assert_eq!(fv.connections(VenueKind::Binance), 1);
    assert_eq!(fv.connects(VenueKind::Binance), 1);
    let made = fv.trade(VenueKind::Binance, "BTCUSDT", 3);
    assert_eq!(made.len(), 3);
    let mut trades = Vec::new();
    let mut aggs = Vec::new();
    for _ in 0..6 {
        let v = next_json(&mut ws).await;
        let d = &v["data"];
        match v["stream"].as_str().unwrap() {
            "btcusdt@trade" => {
                assert_eq!(d["e"], "trade");
                for k in ["E", "t", "T"] {
                    assert!(is_num(d, k), "{k} in {d}");
                }
                for k in ["s", "p", "q"] {
                    assert!(is_str(d, k), "{k} in {d}");
                }
                assert!(is_bool(d, "m") && is_bool(d, "M"));
                assert_eq!(d["s"], "BTCUSDT");
                trades.push(d.clone());
            }
            "btcusdt@aggTrade" => {
                assert_eq!(d["e"], "aggTrade");
                for k in ["E", "a", "f", "l", "T"] {
                    assert!(is_num(d, k), "{k} in {d}");
                }
                assert_eq!(d["f"], d["l"]);
                aggs.push(d.clone());
            }
            other => panic!("stream {other}"),
        }
    }
    let ids: Vec<u64> = trades.iter().map(|d| d["t"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let aids: Vec<u64> = aggs.iter().map(|d| d["a"].as_u64().unwrap()).collect();
    assert_eq!(aids, vec![1, 2, 3]);
    for (d, t) in trades.iter().zip(&made) {
        assert_eq!(d["p"].as_str().unwrap(), t.price);
        assert_eq!(d["q"].as_str().unwrap(), t.quantity);
        assert_eq!(d["T"].as_i64().unwrap(), t.time_ms);
        assert_eq!(d["m"].as_bool().unwrap(), t.buyer_is_maker);
        assert_eq!(t.ordinal, Some(d["t"].as_u64().unwrap()));
        // tick 0.01 printed with 8 decimals
        let p = &t.price;
        assert!(p.ends_with("000000"), "{p}");
    }
    assert_eq!(fv.produced(VenueKind::Binance, "BTCUSDT"), made);
}

#[tokio::test]
async fn binance_raw_stream_and_subscribe_method() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Binance, "BTCUSDT", "0.01", "0.00001", "50000.00");
    fv.add_symbol(VenueKind::Binance, "ETHUSDT", "0.01", "0.0001", "3000.00");
    let mut raw = connect(&format!(
        "{}/ws/btcusdt@trade",
        fv.ws_base(VenueKind::Binance)
    ))
    .await;
    assert!(fv.wait_subscribed(VenueKind::Binance, "BTCUSDT", T).await);
    fv.trade(VenueKind::Binance, "BTCUSDT", 1);
    let v = next_json(&mut raw).await;
    assert_eq!(v["e"], "trade");
    assert_eq!(v["t"], 1);

    let mut ws = connect(&format!("{}/ws", fv.ws_base(VenueKind::Binance))).await;
    ws.send(Message::text(
        r#"{"method":"SUBSCRIBE","params":["ethusdt@trade"],"id":1}"#,
    ))
    .await
    .unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(ack, serde_json::json!({"result": null, "id": 1}));
    ws.send(Message::text(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#))
        .await
        .unwrap();
    let list = next_json(&mut ws).await;
    assert_eq!(
        list,
        serde_json::json!({"result": ["ethusdt@trade"], "id": 3})
    );
    assert_eq!(
        fv.subscriptions(VenueKind::Binance),
        vec!["BTCUSDT".to_string(), "ETHUSDT".to_string()]
    );
    fv.trade(VenueKind::Binance, "ETHUSDT", 1);
    let v = next_json(&mut ws).await;
    assert_eq!(v["s"], "ETHUSDT");
    assert!(v.get("stream").is_none());
}

#[tokio::test]
async fn binance_server_pings() {
    let fv = FakeVenue::start().await.unwrap();
    fv.set_ping_interval(VenueKind::Binance, Some(Duration::from_millis(100)));
    let mut ws = connect(&format!(
        "{}/ws/btcusdt@trade",
        fv.ws_base(VenueKind::Binance)
    ))
    .await;
    let m = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(m, Message::Ping(_)), "{m:?}");
}

#[tokio::test]
async fn binance_rest_history() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Binance, "BTCUSDT", "0.01", "0.00001", "50000.00");
    let made = fv.trade(VenueKind::Binance, "BTCUSDT", 10);
    let base = fv.rest_base(VenueKind::Binance);

    let r = get(&base, "/api/v3/trades?symbol=BTCUSDT&limit=3").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[2]["id"], 10, "newest last");
    let t = &arr[0];
    for k in ["price", "qty", "quoteQty"] {
        assert!(is_str(t, k), "{k}");
    }
    for k in ["id", "time"] {
        assert!(is_num(t, k), "{k}");
    }
    assert!(is_bool(t, "isBuyerMaker") && is_bool(t, "isBestMatch"));
    assert_eq!(t["price"].as_str().unwrap(), made[7].price);

    let v = get(
        &base,
        "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=4&limit=2",
    )
    .await
    .json();
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![4, 5]);

    let v = get(&base, "/api/v3/aggTrades?symbol=BTCUSDT&fromId=9")
        .await
        .json();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["a"], 9);
    assert_eq!(a[0]["f"], 9);
    assert_eq!(a[0]["l"], 9);
    assert!(is_str(&a[0], "p") && is_num(&a[0], "T") && is_bool(&a[0], "M"));

    let v = get(&base, "/api/v3/exchangeInfo?symbols=%5B%22BTCUSDT%22%5D")
        .await
        .json();
    let filters = v["symbols"][0]["filters"].as_array().unwrap();
    let pf = filters
        .iter()
        .find(|f| f["filterType"] == "PRICE_FILTER")
        .unwrap();
    assert_eq!(pf["tickSize"], "0.01000000");
    let ls = filters
        .iter()
        .find(|f| f["filterType"] == "LOT_SIZE")
        .unwrap();
    assert_eq!(ls["stepSize"], "0.00001000");
    let r = get(&base, "/api/v3/exchangeInfo?symbol=NOPE").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], -1121);

    // retention: old ids become unrecoverable
    fv.set_history_limit(VenueKind::Binance, "BTCUSDT", 4);
    let v = get(
        &base,
        "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=1&limit=100",
    )
    .await
    .json();
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![7, 8, 9, 10]);
    assert_eq!(fv.produced(VenueKind::Binance, "BTCUSDT").len(), 10);
    assert_eq!(fv.rest_requests(VenueKind::Binance), 6);
}

#[tokio::test]
async fn binance_withhold_gap_is_in_rest() {
    let (fv, mut ws) = binance_setup().await;
    fv.trade(VenueKind::Binance, "BTCUSDT", 2);
    fv.withhold_live(VenueKind::Binance, "BTCUSDT", 3);
    fv.trade(VenueKind::Binance, "BTCUSDT", 4);
    assert_eq!(binance_ids(&mut ws, 3).await, vec![1, 2, 6]);
    let v = get(
        &fv.rest_base(VenueKind::Binance),
        "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=3&limit=3",
    )
    .await
    .json();
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![3, 4, 5]);
}

#[tokio::test]
async fn binance_duplicate_and_reorder() {
    let (fv, mut ws) = binance_setup().await;
    fv.duplicate_next(VenueKind::Binance, 2);
    fv.trade(VenueKind::Binance, "BTCUSDT", 3);
    assert_eq!(binance_ids(&mut ws, 5).await, vec![1, 1, 2, 2, 3]);
    fv.reorder_next(VenueKind::Binance, 4);
    fv.trade(VenueKind::Binance, "BTCUSDT", 5);
    assert_eq!(binance_ids(&mut ws, 5).await, vec![5, 4, 7, 6, 8]);
}

#[tokio::test]
async fn binance_drop_and_force_close() {
    let (fv, mut ws) = binance_setup().await;
    fv.drop_connections(VenueKind::Binance);
    let end = tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(c))) => return Some(c),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(end.is_none(), "drop must not send a close frame");
    for _ in 0..100 {
        if fv.connections(VenueKind::Binance) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fv.connections(VenueKind::Binance), 0);

    let mut ws = connect(&format!(
        "{}/ws/btcusdt@trade",
        fv.ws_base(VenueKind::Binance)
    ))
    .await;
    assert!(fv.wait_subscribed(VenueKind::Binance, "BTCUSDT", T).await);
    assert_eq!(fv.connects(VenueKind::Binance), 2);
    fv.force_close(VenueKind::Binance);
    let got = tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(c))) => return c.is_some(),
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    })
    .await
    .unwrap();
    assert!(got, "force_close sends a close frame");
}

#[tokio::test]
async fn binance_stall() {
    let (fv, mut ws) = binance_setup().await;
    fv.stall(VenueKind::Binance, true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    fv.trade(VenueKind::Binance, "BTCUSDT", 2);
    ws.send(Message::Ping(b"x".to_vec().into())).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(r.is_err(), "nothing (not even a pong) while stalled: {r:?}");
    assert_eq!(fv.connections(VenueKind::Binance), 1);
    fv.stall(VenueKind::Binance, false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    fv.trade(VenueKind::Binance, "BTCUSDT", 1);
    assert_eq!(binance_ids(&mut ws, 1).await, vec![3]);
}

#[tokio::test]
async fn binance_rate_limit_then_ban() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Binance, "BTCUSDT", "0.01", "0.00001", "50000.00");
    let base = fv.rest_base(VenueKind::Binance);
    fv.rate_limit_rest(VenueKind::Binance, 5);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = get(&base, "/api/v3/trades?symbol=BTCUSDT").await;
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(r.json()["code"], -1003);
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, vec![429, 429, 429, 418, 418, 200]);
    assert_eq!(fv.rest_requests(VenueKind::Binance), 6);

    // a client that waits Retry-After is not banned
    fv.rate_limit_rest(VenueKind::Binance, 2);
    assert_eq!(
        get(&base, "/api/v3/trades?symbol=BTCUSDT").await.status,
        429
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        get(&base, "/api/v3/trades?symbol=BTCUSDT").await.status,
        429
    );
    assert_eq!(
        get(&base, "/api/v3/trades?symbol=BTCUSDT").await.status,
        200
    );
}

#[tokio::test]
async fn bybit_ws_shapes_and_rest() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Bybit, "BTCUSDT", "0.01", "0.000001", "16578.50");
    let mut ws = connect(&format!("{}/v5/public/spot", fv.ws_base(VenueKind::Bybit))).await;
    ws.send(Message::text(
        r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"],"req_id":"r1"}"#,
    ))
    .await
    .unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["success"], true);
    assert_eq!(ack["ret_msg"], "subscribe");
    assert_eq!(ack["op"], "subscribe");
    assert_eq!(ack["req_id"], "r1");
    assert!(is_str(&ack, "conn_id"));
    ws.send(Message::text(
        r#"{"op":"subscribe","args":["publicTrade.NOPEUSDT"],"req_id":"r2"}"#,
    ))
    .await
    .unwrap();
    let nack = next_json(&mut ws).await;
    assert_eq!(nack["success"], false);
    assert!(nack["ret_msg"].as_str().unwrap().contains("NOPEUSDT"));
    ws.send(Message::text(r#"{"op":"ping","req_id":"p"}"#))
        .await
        .unwrap();
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["ret_msg"], "pong");
    assert_eq!(pong["op"], "ping");
    assert_eq!(
        fv.subscriptions(VenueKind::Bybit),
        vec!["BTCUSDT".to_string()]
    );

    let made = fv.trade(VenueKind::Bybit, "BTCUSDT", 2);
    for t in &made {
        let v = next_json(&mut ws).await;
        assert_eq!(v["topic"], "publicTrade.BTCUSDT");
        assert_eq!(v["type"], "snapshot");
        assert!(is_num(&v, "ts"));
        let d = &v["data"][0];
        assert!(is_num(d, "T"));
        for k in ["s", "S", "v", "p", "i"] {
            assert!(is_str(d, k), "{k} in {d}");
        }
        assert!(is_bool(d, "BT"));
        assert!(d.get("L").is_none(), "L is perps-only");
        assert_eq!(d["i"].as_str().unwrap(), t.trade_id);
        assert_eq!(d["p"].as_str().unwrap(), t.price);
        assert_eq!(d["v"].as_str().unwrap(), t.quantity);
        assert_eq!(d["S"], if t.buyer_is_maker { "Sell" } else { "Buy" });
        assert_eq!(t.trade_id.len(), 36);
    }

    // linear: tick direction present
    let mut lin = connect(&format!(
        "{}/v5/public/linear",
        fv.ws_base(VenueKind::Bybit)
    ))
    .await;
    lin.send(Message::text(
        r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"]}"#,
    ))
    .await
    .unwrap();
    let ack = next_json(&mut lin).await;
    assert_eq!(ack["success"], true);
    fv.trade(VenueKind::Bybit, "BTCUSDT", 1);
    let v = next_json(&mut lin).await;
    assert!(is_str(&v["data"][0], "L"));

    // REST: newest first, spot limit capped at 60
    fv.trade(VenueKind::Bybit, "BTCUSDT", 80);
    let base = fv.rest_base(VenueKind::Bybit);
    let v = get(
        &base,
        "/v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=100",
    )
    .await
    .json();
    assert_eq!(v["retCode"], 0);
    assert_eq!(v["retMsg"], "OK");
    assert_eq!(v["result"]["category"], "spot");
    let list = v["result"]["list"].as_array().unwrap();
    assert_eq!(list.len(), 60);
    let all = fv.produced(VenueKind::Bybit, "BTCUSDT");
    assert_eq!(
        list[0]["execId"].as_str().unwrap(),
        all.last().unwrap().trade_id
    );
    for k in ["execId", "symbol", "price", "size", "side", "time"] {
        assert!(is_str(&list[0], k), "{k}");
    }
    assert!(is_bool(&list[0], "isBlockTrade"));
    let v = get(
        &base,
        "/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=1000",
    )
    .await
    .json();
    assert_eq!(v["result"]["list"].as_array().unwrap().len(), 83);

    let v = get(
        &base,
        "/v5/market/instruments-info?category=spot&symbol=BTCUSDT",
    )
    .await
    .json();
    let i = &v["result"]["list"][0];
    assert_eq!(i["priceFilter"]["tickSize"], "0.01");
    assert_eq!(i["lotSizeFilter"]["basePrecision"], "0.000001");
    let v = get(
        &base,
        "/v5/market/instruments-info?category=linear&symbol=BTCUSDT",
    )
    .await
    .json();
    assert_eq!(
        v["result"]["list"][0]["lotSizeFilter"]["qtyStep"],
        "0.000001"
    );

    fv.rate_limit_rest(VenueKind::Bybit, 1);
    let r = get(
        &base,
        "/v5/market/recent-trade?category=spot&symbol=BTCUSDT",
    )
    .await;
    assert_eq!(r.json()["retCode"], 10006);
    let r = get(
        &base,
        "/v5/market/recent-trade?category=spot&symbol=BTCUSDT",
    )
    .await;
    assert_eq!(r.json()["retCode"], 0);
}

#[tokio::test]
async fn bybit_generate_batches() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Bybit, "BTCUSDT", "0.5", "0.001", "16578.5");
    let mut ws = connect(&format!(
        "{}/v5/public/linear",
        fv.ws_base(VenueKind::Bybit)
    ))
    .await;
    ws.send(Message::text(
        r#"{"op":"subscribe","args":["publicTrade.BTCUSDT"]}"#,
    ))
    .await
    .unwrap();
    next_json(&mut ws).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    fv.generate(VenueKind::Bybit, 200, cancel.clone());
    let v = next_json(&mut ws).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 20);
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let n = fv.produced(VenueKind::Bybit, "BTCUSDT").len();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(fv.produced(VenueKind::Bybit, "BTCUSDT").len(), n);
}

#[tokio::test]
async fn upbit_ws_binary_frames_and_rest() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(
        VenueKind::Upbit,
        "KRW-BTC",
        "1000",
        "0.00000001",
        "94999000",
    );
    let mut ws = connect(&fv.ws_base(VenueKind::Upbit)).await;
    ws.send(Message::text(
        r#"[{"ticket":"x"},{"type":"trade","codes":["KRW-BTC"]},{"format":"DEFAULT"}]"#,
    ))
    .await
    .unwrap();
    assert!(fv.wait_subscribed(VenueKind::Upbit, "KRW-BTC", T).await);
    let made = fv.trade(VenueKind::Upbit, "KRW-BTC", 3);
    let mut last_sid = 0;
    for t in &made {
        let (binary, text) = next_frame(&mut ws).await;
        assert!(binary, "Upbit sends binary frames");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "trade");
        assert_eq!(v["code"], "KRW-BTC");
        for k in [
            "timestamp",
            "trade_timestamp",
            "trade_price",
            "trade_volume",
            "prev_closing_price",
            "change_price",
            "sequential_id",
        ] {
            assert!(is_num(&v, k), "{k} in {v}");
        }
        for k in [
            "trade_date",
            "trade_time",
            "ask_bid",
            "change",
            "stream_type",
        ] {
            assert!(is_str(&v, k), "{k} in {v}");
        }
        assert_eq!(v["stream_type"], "REALTIME");
        assert!(
            text.contains(&format!("\"trade_price\":{},", t.price)),
            "{text}"
        );
        assert!(
            text.contains(&format!("\"trade_volume\":{},", t.quantity)),
            "{text}"
        );
        let sid = v["sequential_id"].as_u64().unwrap();
        assert!(sid > last_sid);
        last_sid = sid;
        assert_eq!(Some(sid), t.ordinal);
        assert_eq!(v["trade_date"].as_str().unwrap().len(), 10);
        assert_eq!(v["trade_time"].as_str().unwrap().len(), 8);
    }
    ws.send(Message::text("PING")).await.unwrap();
    let (binary, text) = next_frame(&mut ws).await;
    assert!(binary);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["status"],
        "UP"
    );

    // REST ticks, newest first, cursor pages to older trades
    fv.trade(VenueKind::Upbit, "KRW-BTC", 7);
    let all = fv.produced(VenueKind::Upbit, "KRW-BTC");
    let base = fv.rest_base(VenueKind::Upbit);
    let v = get(&base, "/v1/trades/ticks?market=KRW-BTC&count=4")
        .await
        .json();
    let page: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sequential_id"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = all
        .iter()
        .rev()
        .take(4)
        .map(|t| t.ordinal.unwrap())
        .collect();
    assert_eq!(page, want);
    let t0 = &v[0];
    for k in ["market", "trade_date_utc", "trade_time_utc", "ask_bid"] {
        assert!(is_str(t0, k), "{k}");
    }
    for k in [
        "timestamp",
        "trade_price",
        "trade_volume",
        "prev_closing_price",
        "change_price",
    ] {
        assert!(is_num(t0, k), "{k}");
    }
    let v = get(
        &base,
        &format!(
            "/v1/trades/ticks?market=KRW-BTC&count=100&cursor={}",
            page[3]
        ),
    )
    .await
    .json();
    let older: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["sequential_id"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = all
        .iter()
        .rev()
        .skip(4)
        .map(|t| t.ordinal.unwrap())
        .collect();
    assert_eq!(older, want);

    let v = get(&base, "/v1/market/all").await.json();
    assert_eq!(v[0]["market"], "KRW-BTC");
    assert_eq!(v[0]["korean_name"], "비트코인");
    assert_eq!(v[0]["english_name"], "Bitcoin");

    fv.rate_limit_rest(VenueKind::Upbit, 1);
    let r = get(&base, "/v1/trades/ticks?market=KRW-BTC").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["name"], "too_many_requests");
    assert_eq!(
        get(&base, "/v1/trades/ticks?market=KRW-BTC").await.status,
        200
    );
}

#[tokio::test]
async fn upbit_snapshot_then_withheld_gap() {
    let fv = FakeVenue::start().await.unwrap();
    fv.add_symbol(VenueKind::Upbit, "KRW-ETH", "1000", "0.0001", "5000000");
    let first = fv.trade(VenueKind::Upbit, "KRW-ETH", 1);
    let mut ws = connect(&fv.ws_base(VenueKind::Upbit)).await;
    ws.send(Message::text(
        r#"[{"ticket":"t"},{"type":"trade","codes":["KRW-ETH"]}]"#,
    ))
    .await
    .unwrap();
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["stream_type"], "SNAPSHOT");
    assert_eq!(snap["sequential_id"].as_u64(), first[0].ordinal);
    assert!(fv.wait_subscribed(VenueKind::Upbit, "KRW-ETH", T).await);
    fv.withhold_live(VenueKind::Upbit, "KRW-ETH", 2);
    let made = fv.trade(VenueKind::Upbit, "KRW-ETH", 3);
    let v = next_json(&mut ws).await;
    assert_eq!(v["sequential_id"].as_u64(), made[2].ordinal);
    quiet(&mut ws, Duration::from_millis(200)).await;
    let rest = get(
        &fv.rest_base(VenueKind::Upbit),
        "/v1/trades/ticks?market=KRW-ETH&count=10",
    )
    .await
    .json();
    assert_eq!(rest.as_array().unwrap().len(), 4);
}
