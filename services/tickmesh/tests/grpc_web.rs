//! gRPC-Web, as a browser speaks it, checked by hand: HTTP/1.1 requests
//! written on a plain TCP socket, with the gRPC-Web framing (a 5-byte prefix
//! per message, the status in a trailer frame flagged 0x80) encoded and
//! decoded here, not by a gRPC library. Unary calls, server streaming, the
//! base64 text variant, CORS preflights, the admin token, and a browser that
//! goes away mid-stream.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use tickmesh_api::candles::{SubscribeCandlesRequest, SubscribeCandlesResponse};
use tickmesh_api::marketfeed::{
    GetInstrumentRequest, GetInstrumentResponse, ListInstrumentsRequest, ListInstrumentsResponse,
    StreamTradesRequest, StreamTradesResponse, UpsertInstrumentRequest,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

const MARKETFEED: &str = "/tickmesh.marketfeed.v1.MarketFeedService";
const CANDLES: &str = "/tickmesh.candles.v1.CandleQueryService";

/// A gRPC-Web message frame: flag 0, big-endian length, the message.
fn frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend((body.len() as u32).to_be_bytes());
    out.extend(body);
    out
}

/// An HTTP/1.1 response being read: status, headers, then the body as
/// chunks arrive (chunked transfer encoding or a content length).
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<OwnedReadHalf>,
    chunked: bool,
    left: Option<usize>,
    /// Body bytes read but not yet taken as frames.
    buffer: Vec<u8>,
    done: bool,
    /// Kept so dropping the response closes the connection.
    _writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads more of the body into `buffer`; false at its end.
    async fn fill(&mut self) -> bool {
        if self.done {
            return false;
        }
        if self.chunked {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            let size = usize::from_str_radix(line.trim(), 16)
                .unwrap_or_else(|_| panic!("chunk size line {line:?}"));
            if size == 0 {
                self.done = true;
                return false;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.unwrap();
            assert_eq!(&chunk[size..], b"\r\n", "chunk ends with CRLF");
            chunk.truncate(size);
            self.buffer.extend(chunk);
            true
        } else {
            let left = self.left.unwrap_or(usize::MAX);
            if left == 0 {
                self.done = true;
                return false;
            }
            let mut chunk = vec![0; left.min(8192)];
            let n = self.reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                self.done = true;
                return false;
            }
            self.buffer.extend(&chunk[..n]);
            self.left = self.left.map(|l| l - n);
            true
        }
    }

    /// The next gRPC-Web frame: (flag, payload); `None` at the body's end.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + len {
                    let flag = self.buffer[0];
                    let payload = self.buffer[5..5 + len].to_vec();
                    self.buffer.drain(..5 + len);
                    return Some((flag, payload));
                }
            }
            if !self.fill().await {
                assert!(self.buffer.is_empty(), "a partial frame at the end");
                return None;
            }
        }
    }

    /// Every message until the trailer frame, and the trailers.
    async fn unary<M: Message + Default>(mut self) -> (Vec<M>, Trailers) {
        let mut messages = Vec::new();
        loop {
            match self.next_frame().await {
                Some((0, payload)) => messages.push(M::decode(payload.as_slice()).unwrap()),
                Some((0x80, payload)) => return (messages, Trailers::parse(&payload)),
                Some((flag, _)) => panic!("unexpected frame flag {flag:#x}"),
                // A trailers-only answer: the status is in the headers.
                None => return (messages, Trailers::from_headers(&self.headers)),
            }
        }
    }
}

/// The status of a gRPC-Web call.
#[derive(Debug)]
struct Trailers {
    status: String,
    message: String,
}

impl Trailers {
    fn parse(block: &[u8]) -> Self {
        let text = String::from_utf8(block.to_vec()).unwrap();
        let field = |name: &str| {
            text.split("\r\n")
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        Self {
            status: field("grpc-status"),
            message: field("grpc-message"),
        }
    }

    fn from_headers(headers: &[(String, String)]) -> Self {
        let field = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Self {
            status: field("grpc-status"),
            message: field("grpc-message"),
        }
    }
}

/// Sends one HTTP/1.1 request and reads the response head.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    write.write_all(request.as_bytes()).await.unwrap();
    write.write_all(body).await.unwrap();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    assert!(line.starts_with("HTTP/1.1 "), "{line:?}");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let left = find("content-length").and_then(|v| v.parse().ok());
    Response {
        status,
        headers,
        reader,
        chunked,
        left,
        buffer: Vec::new(),
        done: false,
        _writer: write,
    }
}

/// A gRPC-Web call (binary protobuf) over HTTP/1.1.
async fn call(
    addr: std::net::SocketAddr,
    path: &str,
    message: &impl Message,
    extra: &[(&str, &str)],
) -> Response {
    let mut headers = vec![
        ("Content-Type", "application/grpc-web+proto"),
        ("X-Grpc-Web", "1"),
        ("Accept", "application/grpc-web+proto"),
    ];
    headers.extend_from_slice(extra);
    http(addr, "POST", path, &headers, &frame(message)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_and_errors_over_grpc_web_on_http1() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "WEBUSDT", 2, 3).await;

    let r = call(
        mesh.addr,
        &format!("{MARKETFEED}/GetInstrument"),
        &GetInstrumentRequest {
            symbol: "WEBUSDT".into(),
        },
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/grpc-web")),
        "{:?}",
        r.headers
    );
    let (messages, trailers) = r.unary::<GetInstrumentResponse>().await;
    assert_eq!(trailers.status, "0", "{trailers:?}");
    assert_eq!(messages.len(), 1);
    let instrument = messages[0].instrument.clone().unwrap();
    assert_eq!(instrument.symbol, "WEBUSDT");
    assert_eq!(instrument.price_scale, 2);

    // A domain error travels as a status, with its message.
    let (messages, trailers) = call(
        mesh.addr,
        &format!("{MARKETFEED}/GetInstrument"),
        &GetInstrumentRequest {
            symbol: "NOPE".into(),
        },
        &[],
    )
    .await
    .unary::<GetInstrumentResponse>()
    .await;
    assert!(messages.is_empty());
    assert_eq!(trailers.status, "5", "NOT_FOUND: {trailers:?}");
    assert!(trailers.message.contains("NOPE"), "{trailers:?}");

    // Bad input: INVALID_ARGUMENT naming the field.
    let (_, trailers) = call(
        mesh.addr,
        &format!("{MARKETFEED}/ListInstruments"),
        &ListInstrumentsRequest {
            page_size: -1,
            ..Default::default()
        },
        &[],
    )
    .await
    .unary::<ListInstrumentsResponse>()
    .await;
    assert_eq!(trailers.status, "3", "{trailers:?}");
    assert!(trailers.message.contains("page_size"), "{trailers:?}");

    // The text variant (base64), which some browser clients use.
    let body = base64(&frame(&GetInstrumentRequest {
        symbol: "WEBUSDT".into(),
    }));
    let mut r = http(
        mesh.addr,
        "POST",
        &format!("{MARKETFEED}/GetInstrument"),
        &[
            ("Content-Type", "application/grpc-web-text"),
            ("Accept", "application/grpc-web-text"),
            ("X-Grpc-Web", "1"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    while r.fill().await {}
    let decoded = unbase64(std::str::from_utf8(&r.buffer).unwrap());
    let len = u32::from_be_bytes(decoded[1..5].try_into().unwrap()) as usize;
    assert_eq!(decoded[0], 0);
    let got = GetInstrumentResponse::decode(&decoded[5..5 + len]).unwrap();
    assert_eq!(got.instrument.unwrap().symbol, "WEBUSDT");
    assert_eq!(decoded[5 + len], 0x80, "then the trailer frame");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_the_token_over_grpc_web_too() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.auth.admin_token = "s3cret-token-for-the-web-test".into();
    let mesh = start(cfg).await;
    let upsert = UpsertInstrumentRequest {
        instrument: Some(instrument("ADMUSDT", 2, 3)),
    };
    let path = format!("{MARKETFEED}/UpsertInstrument");
    let (_, trailers) = call(mesh.addr, &path, &upsert, &[])
        .await
        .unary::<tickmesh_api::marketfeed::UpsertInstrumentResponse>()
        .await;
    assert_eq!(trailers.status, "16", "UNAUTHENTICATED: {trailers:?}");
    let (_, trailers) = call(
        mesh.addr,
        &path,
        &upsert,
        &[("Authorization", "Bearer wrong")],
    )
    .await
    .unary::<tickmesh_api::marketfeed::UpsertInstrumentResponse>()
    .await;
    assert!(
        trailers.status == "16" || trailers.status == "7",
        "{trailers:?}"
    );
    let (messages, trailers) = call(
        mesh.addr,
        &path,
        &upsert,
        &[("Authorization", "Bearer s3cret-token-for-the-web-test")],
    )
    .await
    .unary::<tickmesh_api::marketfeed::UpsertInstrumentResponse>()
    .await;
    assert_eq!(trailers.status, "0", "{trailers:?}");
    assert_eq!(messages.len(), 1);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_over_grpc_web_and_a_browser_that_leaves_is_let_go() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "STRMUSDT", 2, 3).await;
    let marketfeed = mesh.marketfeed.clone().unwrap();
    let candles = mesh.candles.clone().unwrap();

    // StreamTrades: frames arrive while the response is still open.
    let mut trades = call(
        mesh.addr,
        &format!("{MARKETFEED}/StreamTrades"),
        &StreamTradesRequest {
            symbols: vec!["STRMUSDT".into()],
            ..Default::default()
        },
        &[],
    )
    .await;
    assert_eq!(trades.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            marketfeed.live_symbols() == 1
        })
        .await
    );
    publish(&mut c, trades_of("STRMUSDT", "a", 3)).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (flag, payload) = tokio::time::timeout(Duration::from_secs(10), trades.next_frame())
            .await
            .expect("trades within 10 s")
            .expect("the stream stays open");
        assert_eq!(flag, 0, "a message, not the end");
        let m = StreamTradesResponse::decode(payload.as_slice()).unwrap();
        seen.extend(m.trades.into_iter().map(|t| t.trade_id));
    }
    assert_eq!(seen, vec!["a-0", "a-1", "a-2"]);

    // SubscribeCandles: the snapshot, then the live candle as trades land.
    let mut sub = call(
        mesh.addr,
        &format!("{CANDLES}/SubscribeCandles"),
        &SubscribeCandlesRequest {
            symbol: "STRMUSDT".into(),
            intervals: vec!["1m".into()],
            ..Default::default()
        },
        &[],
    )
    .await;
    assert_eq!(sub.status, 200);
    let (flag, payload) = tokio::time::timeout(Duration::from_secs(10), sub.next_frame())
        .await
        .expect("a snapshot")
        .unwrap();
    assert_eq!(flag, 0);
    let snapshot = SubscribeCandlesResponse::decode(payload.as_slice()).unwrap();
    assert!(snapshot.snapshot);
    assert!(!snapshot.cursor.is_empty(), "a cursor to resume with");
    publish(&mut c, vec![trade("STRMUSDT", "b-0", "123.45", "1.000")]).await;
    let closes = async {
        loop {
            let (flag, payload) = sub.next_frame().await.expect("open");
            assert_eq!(flag, 0);
            let m = SubscribeCandlesResponse::decode(payload.as_slice()).unwrap();
            if let Some(candle) = m.candles.iter().find(|c| c.close == "123.45") {
                return candle.clone();
            }
        }
    };
    let candle = tokio::time::timeout(Duration::from_secs(10), closes)
        .await
        .expect("the live candle within 10 s");
    assert_eq!(candle.symbol, "STRMUSDT");
    assert_eq!(candle.interval, "1m");

    // The browser goes away (tab closed: the socket closes mid-stream): the
    // server ends the stream and stops following the symbol.
    assert_eq!(candles.live_symbols(), 1);
    drop(sub);
    assert!(
        eventually(Duration::from_secs(10), || async {
            candles.live_symbols() == 0
        })
        .await,
        "the candle stream of a closed connection ends"
    );
    drop(trades);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_leaves_ends_its_trade_stream() {
    let redis = redis().await;
    // MarketFeed alone: the candle aggregator would follow the symbol too.
    let mut cfg = config(&redis.url());
    cfg.services.enabled = vec!["marketfeed".into()];
    let mesh = start(cfg).await;
    let mut c = client(&mesh).await;
    register(&mut c, "GONEUSDT", 2, 3).await;
    let feed = mesh.marketfeed.clone().unwrap();
    let mut trades = call(
        mesh.addr,
        &format!("{MARKETFEED}/StreamTrades"),
        &StreamTradesRequest {
            symbols: vec!["GONEUSDT".into()],
            ..Default::default()
        },
        &[],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            feed.live_symbols() == 1
        })
        .await
    );
    publish(&mut c, trades_of("GONEUSDT", "g", 1)).await;
    let (flag, _) = tokio::time::timeout(Duration::from_secs(10), trades.next_frame())
        .await
        .expect("a trade")
        .unwrap();
    assert_eq!(flag, 0);
    drop(trades);
    assert!(
        eventually(Duration::from_secs(10), || async {
            feed.live_symbols() == 0
        })
        .await,
        "the trade stream of a closed connection ends"
    );
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let redis = redis().await;
    let mut cfg = config(&redis.url());
    cfg.server.cors_allowed_origins = vec!["https://app.example.com".into()];
    let mesh = start(cfg).await;
    let path = format!("{MARKETFEED}/ListInstruments");
    let preflight = |origin: &'static str| {
        let path = path.clone();
        let addr = mesh.addr;
        async move {
            http(
                addr,
                "OPTIONS",
                &path,
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "POST"),
                    (
                        "Access-Control-Request-Headers",
                        "content-type,x-grpc-web,x-user-agent,authorization",
                    ),
                ],
                b"",
            )
            .await
        }
    };
    let allowed = preflight("https://app.example.com").await;
    assert!((200..300).contains(&allowed.status), "{}", allowed.status);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let allow_headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in [
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "authorization",
    ] {
        assert!(allow_headers.contains(h), "{h} in {allow_headers}");
    }
    let refused = preflight("https://evil.example.net").await;
    assert_eq!(
        refused.header("access-control-allow-origin"),
        None,
        "{:?}",
        refused.headers
    );

    // The call itself: the page may read the status headers.
    let r = call(
        mesh.addr,
        &path,
        &ListInstrumentsRequest::default(),
        &[("Origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("grpc-status"), "{exposed}");
    let (_, trailers) = r.unary::<ListInstrumentsResponse>().await;
    assert_eq!(trailers.status, "0");
    mesh.stop().await.unwrap();

    // Without configured origins (the default outside dev mode) no page of
    // another origin may call.
    let mesh = start(config(&redis.url())).await;
    let r = http(
        mesh.addr,
        "OPTIONS",
        &format!("{MARKETFEED}/ListInstruments"),
        &[
            ("Origin", "http://localhost:3000"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http2_too() {
    let redis = redis().await;
    let mesh = start(config(&redis.url())).await;
    let mut c = client(&mesh).await;
    register(&mut c, "H2USDT", 2, 3).await;
    // HTTP/2 with prior knowledge (what a proxy or a TLS-terminating load
    // balancer in front speaks), gRPC-Web framing inside.
    let tcp = TcpStream::connect(mesh.addr).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post(format!("http://{}{MARKETFEED}/GetInstrument", mesh.addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(())
        .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    send.send_data(
        frame(&GetInstrumentRequest {
            symbol: "H2USDT".into(),
        })
        .into(),
        true,
    )
    .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(bytes[0], 0, "a message frame");
    let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    let got = GetInstrumentResponse::decode(&bytes[5..5 + len]).unwrap();
    assert_eq!(got.instrument.unwrap().symbol, "H2USDT");
    assert_eq!(bytes[5 + len], 0x80, "then the trailer frame");
    let trailers = Trailers::parse(&bytes[10 + len..]);
    assert_eq!(trailers.status, "0");
    mesh.stop().await.unwrap();
}

/// `n` trades of `symbol` with ids `prefix-0..`.
fn trades_of(symbol: &str, prefix: &str, n: usize) -> Vec<tickmesh_api::marketfeed::Trade> {
    (0..n)
        .map(|i| trade(symbol, &format!("{prefix}-{i}"), "100.00", "0.500"))
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64, possibly several padded blocks one after another (a
/// grpc-web-text body encodes each frame on its own).
fn unbase64(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        if c == b'=' {
            acc = 0;
            bits = 0;
            continue;
        }
        let v = B64.iter().position(|&b| b == c).expect("base64") as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
