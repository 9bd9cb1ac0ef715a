//! `tickmesh-fake-venue`: a fake exchange on 127.0.0.1 for tests and `tickmesh dev --feed fake`.
//!
//! It speaks the documented public trade formats of three venues, each on its own
//! WebSocket listener and its own REST (axum) listener:
//!
//! * **Binance spot**: `ws_base + "/stream?streams=btcusdt@trade/btcusdt@aggTrade"` (combined,
//!   `{"stream":..,"data":..}`) or `ws_base + "/ws/btcusdt@trade"` (raw); `SUBSCRIBE` /
//!   `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` method messages; server WebSocket pings every 20 s.
//!   REST: `/api/v3/trades`, `/api/v3/historicalTrades`, `/api/v3/aggTrades`, `/api/v3/exchangeInfo`.
//! * **Bybit v5**: `ws_base + "/v5/public/spot"` or `"/v5/public/linear"`, `{"op":"subscribe",
//!   "args":["publicTrade.BTCUSDT"]}`, `{"op":"ping"}`. REST: `/v5/market/recent-trade`,
//!   `/v5/market/instruments-info`.
//! * **Upbit**: `ws_base` (already ends in `/websocket/v1`), `[{"ticket":..},{"type":"trade",
//!   "codes":["KRW-BTC"]},{"format":"DEFAULT"}]`; every message is a BINARY frame of JSON with
//!   prices as JSON numbers. REST: `/v1/trades/ticks`, `/v1/market/all`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tickmesh_fake_venue::{FakeVenue, VenueKind};
//! let venue = FakeVenue::start().await?;
//! venue.add_symbol(VenueKind::Binance, "BTCUSDT", "0.01", "0.00001", "50000.00");
//! let url = format!("{}/stream?streams=btcusdt@trade", venue.ws_base(VenueKind::Binance));
//! // ... connect a client to `url`, wait until `venue.subscriptions(VenueKind::Binance)`
//! // lists "BTCUSDT", then:
//! let sent = venue.trade(VenueKind::Binance, "BTCUSDT", 10);
//! assert_eq!(venue.produced(VenueKind::Binance, "BTCUSDT").len(), sent.len());
//! # Ok(()) }
//! ```
//!
//! Trades are only ever made by [`FakeVenue::trade`] or a [`FakeVenue::generate`] task, so a
//! test knows the ground truth exactly ([`FakeVenue::produced`]). Faults are scripted per venue:
//! dropped or properly closed sockets, stalls, withheld (REST-only) trades, duplicated or
//! reordered live messages and rate-limited REST answers.

// Handlers return axum / tungstenite responses by value as their error type.
#![allow(clippy::result_large_err)]

mod binance;
mod book;
pub mod broker;
mod bybit;
mod faults;
mod upbit;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use book::{Book, Rec};

/// The venue dialects the fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VenueKind {
    Binance,
    Bybit,
    Upbit,
}

impl VenueKind {
    fn idx(self) -> usize {
        match self {
            VenueKind::Binance => 0,
            VenueKind::Bybit => 1,
            VenueKind::Upbit => 2,
        }
    }
    const ALL: [VenueKind; 3] = [VenueKind::Binance, VenueKind::Bybit, VenueKind::Upbit];
}

/// One produced trade, as the venue reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeTrade {
    /// Venue symbol ("BTCUSDT", "KRW-BTC").
    pub symbol: String,
    /// The venue's trade id as text (Binance decimal id, Bybit UUID-like `i`, Upbit `sequential_id`).
    pub trade_id: String,
    /// Numeric ordering id where the venue has one (Binance trade id, Upbit sequential_id); None for Bybit.
    pub ordinal: Option<u64>,
    /// Price text exactly as written on the wire (Binance with 8 decimals, Bybit with the tick's
    /// decimals, Upbit JSON number digits).
    pub price: String,
    /// Quantity text exactly as written on the wire.
    pub quantity: String,
    /// Trade time, ms since the epoch.
    pub time_ms: i64,
    /// True when the buyer was the maker (taker sold: Bybit "Sell", Upbit "ASK").
    pub buyer_is_maker: bool,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A batch of trades of one symbol that goes out as one live "unit" (one WS message on Bybit,
/// one message per trade elsewhere).
#[derive(Debug)]
pub(crate) struct Unit {
    pub symbol: String,
    pub recs: Vec<Rec>,
}

pub(crate) enum Cmd {
    Live(Arc<Unit>),
    Drop,
    Close,
}

struct ConnEntry {
    tx: mpsc::UnboundedSender<Cmd>,
    subs: Arc<Mutex<BTreeSet<String>>>,
}

pub(crate) struct VenueState {
    kind: VenueKind,
    ws_addr: SocketAddr,
    rest_addr: SocketAddr,
    pub(crate) books: Mutex<HashMap<String, Book>>,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    next_conn: AtomicU64,
    connects: AtomicU64,
    pub(crate) rest_requests: AtomicU64,
    stall: watch::Sender<bool>,
    pub(crate) faults: faults::Faults,
    ping: Mutex<Option<Duration>>,
}

pub(crate) struct Inner {
    venues: Vec<VenueState>,
    cancel: CancellationToken,
}

impl Inner {
    pub(crate) fn venue(&self, v: VenueKind) -> &VenueState {
        &self.venues[v.idx()]
    }
}

/// Handle to the running fake venues (cheap to clone).
#[derive(Clone)]
pub struct FakeVenue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeVenue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("FakeVenue");
        for v in &self.inner.venues {
            d.field(&format!("{:?}", v.kind), &(v.ws_addr, v.rest_addr));
        }
        d.finish()
    }
}

impl FakeVenue {
    /// Binds one WebSocket and one REST listener per venue kind on 127.0.0.1:0 and starts serving.
    pub async fn start() -> std::io::Result<FakeVenue> {
        let cancel = CancellationToken::new();
        let mut venues = Vec::new();
        let mut listeners = Vec::new();
        for kind in VenueKind::ALL {
            let ws = TcpListener::bind("127.0.0.1:0").await?;
            let rest = TcpListener::bind("127.0.0.1:0").await?;
            venues.push(VenueState {
                kind,
                ws_addr: ws.local_addr()?,
                rest_addr: rest.local_addr()?,
                books: Mutex::new(HashMap::new()),
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                connects: AtomicU64::new(0),
                rest_requests: AtomicU64::new(0),
                stall: watch::channel(false).0,
                faults: faults::Faults::default(),
                ping: Mutex::new(match kind {
                    VenueKind::Binance => Some(Duration::from_secs(20)),
                    _ => None,
                }),
            });
            listeners.push((kind, ws, rest));
        }
        let inner = Arc::new(Inner { venues, cancel });
        for (kind, ws, rest) in listeners {
            let router = match kind {
                VenueKind::Binance => binance::router(inner.clone()),
                VenueKind::Bybit => bybit::router(inner.clone()),
                VenueKind::Upbit => upbit::router(inner.clone()),
            };
            let token = inner.cancel.clone();
            tokio::spawn(async move {
                let _ = axum::serve(rest, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await;
            });
            tokio::spawn(accept_loop(inner.clone(), kind, ws));
        }
        Ok(FakeVenue { inner })
    }

    /// Stops the listeners and drops every connection.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
        for v in VenueKind::ALL {
            self.drop_connections(v);
        }
    }

    /// WebSocket base URL (Upbit's already includes `/websocket/v1`).
    pub fn ws_base(&self, v: VenueKind) -> String {
        let a = self.inner.venue(v).ws_addr;
        match v {
            VenueKind::Upbit => format!("ws://{a}/websocket/v1"),
            _ => format!("ws://{a}"),
        }
    }

    /// REST base URL, `http://127.0.0.1:Q`.
    pub fn rest_base(&self, v: VenueKind) -> String {
        format!("http://{}", self.inner.venue(v).rest_addr)
    }

    /// Registers (or replaces) a symbol with its tick size, step size and start price (decimal text).
    pub fn add_symbol(
        &self,
        v: VenueKind,
        symbol: &str,
        tick_size: &str,
        step_size: &str,
        start_price: &str,
    ) {
        let book = Book::new(v, symbol, tick_size, step_size, start_price);
        lock(&self.inner.venue(v).books).insert(symbol.to_string(), book);
    }

    /// Symbols registered for the venue.
    pub fn symbols(&self, v: VenueKind) -> Vec<String> {
        let mut s: Vec<String> = lock(&self.inner.venue(v).books).keys().cloned().collect();
        s.sort();
        s
    }

    /// Makes `n` new trades for the symbol, stores them and pushes them live (one message per
    /// trade), unless withheld. Returns them. Unknown symbols yield nothing.
    pub fn trade(&self, v: VenueKind, symbol: &str, n: usize) -> Vec<FakeTrade> {
        self.make_and_emit(v, symbol, n, false)
    }

    fn make_and_emit(&self, v: VenueKind, symbol: &str, n: usize, batch: bool) -> Vec<FakeTrade> {
        let st = self.inner.venue(v);
        let mut live = Vec::new();
        let mut out = Vec::new();
        {
            let mut books = lock(&st.books);
            let Some(book) = books.get_mut(symbol) else {
                return out;
            };
            for _ in 0..n {
                let rec = book.make(v, now_ms());
                out.push(rec.t.clone());
                if book.withhold > 0 {
                    book.withhold -= 1;
                } else {
                    live.push(rec);
                }
            }
        }
        if live.is_empty() {
            return out;
        }
        let units: Vec<Unit> = if batch {
            vec![Unit {
                symbol: symbol.to_string(),
                recs: live,
            }]
        } else {
            live.into_iter()
                .map(|r| Unit {
                    symbol: symbol.to_string(),
                    recs: vec![r],
                })
                .collect()
        };
        for unit in units {
            for u in st.faults.shape(Arc::new(unit)) {
                self.fan_out(st, u);
            }
        }
        out
    }

    fn fan_out(&self, st: &VenueState, unit: Arc<Unit>) {
        let conns = lock(&st.conns);
        for c in conns.values() {
            if lock(&c.subs).contains(&unit.symbol) {
                let _ = c.tx.send(Cmd::Live(unit.clone()));
            }
        }
    }

    /// Every trade produced so far for the symbol (oldest first), including withheld ones and
    /// ones pruned from the REST history by [`FakeVenue::set_history_limit`].
    pub fn produced(&self, v: VenueKind, symbol: &str) -> Vec<FakeTrade> {
        lock(&self.inner.venue(v).books)
            .get(symbol)
            .map(|b| b.produced.clone())
            .unwrap_or_default()
    }

    /// Spawns a generator making `per_second` trades per second per symbol (every 100 ms a batch)
    /// until `cancel` is cancelled. Bybit batches each 100 ms slice in one message.
    pub fn generate(&self, v: VenueKind, per_second: u32, cancel: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut acc: u64 = 0;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = this.inner.cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                acc += u64::from(per_second);
                let n = (acc / 10) as usize;
                acc %= 10;
                if n == 0 {
                    continue;
                }
                for sym in this.symbols(v) {
                    this.make_and_emit(v, &sym, n, v == VenueKind::Bybit);
                }
            }
        });
    }

    /// Closes every socket of the venue abruptly (no close frame).
    pub fn drop_connections(&self, v: VenueKind) {
        for c in lock(&self.inner.venue(v).conns).values() {
            let _ = c.tx.send(Cmd::Drop);
        }
    }

    /// Sends a proper close frame on every socket (like Binance's 24 h disconnect).
    pub fn force_close(&self, v: VenueKind) {
        for c in lock(&self.inner.venue(v).conns).values() {
            let _ = c.tx.send(Cmd::Close);
        }
    }

    /// While on, sockets stay open but nothing is sent or read (no trades, pings or pongs;
    /// live trades made meanwhile are lost on the socket but kept in REST history).
    pub fn stall(&self, v: VenueKind, on: bool) {
        self.inner.venue(v).stall.send_replace(on);
    }

    /// The next `n` trades of the symbol go to REST history but not to the socket.
    pub fn withhold_live(&self, v: VenueKind, symbol: &str, n: usize) {
        if let Some(b) = lock(&self.inner.venue(v).books).get_mut(symbol) {
            b.withhold += n;
        }
    }

    /// The next `n` live messages are sent twice.
    pub fn duplicate_next(&self, v: VenueKind, n: usize) {
        self.inner
            .venue(v)
            .faults
            .duplicate
            .fetch_add(n, Ordering::SeqCst);
    }

    /// The next `n` live messages are sent in swapped pairs (per symbol: message k+1 goes
    /// before message k). An odd last message waits for its partner.
    pub fn reorder_next(&self, v: VenueKind, n: usize) {
        self.inner
            .venue(v)
            .faults
            .reorder
            .fetch_add(n, Ordering::SeqCst);
    }

    /// The next `n` REST requests are rate limited (Binance 429 + Retry-After: 1, then 418 after
    /// three 429s ignored within their Retry-After; Bybit retCode 10006; Upbit 429).
    pub fn rate_limit_rest(&self, v: VenueKind, n: usize) {
        lock(&self.inner.venue(v).faults.rate).remaining += n;
    }

    /// Currently open WebSocket connections.
    pub fn connections(&self, v: VenueKind) -> usize {
        lock(&self.inner.venue(v).conns).len()
    }

    /// WebSocket connections accepted so far.
    pub fn connects(&self, v: VenueKind) -> u64 {
        self.inner.venue(v).connects.load(Ordering::SeqCst)
    }

    /// REST requests served (including rate-limited ones).
    pub fn rest_requests(&self, v: VenueKind) -> u64 {
        self.inner.venue(v).rest_requests.load(Ordering::SeqCst)
    }

    /// Symbols subscribed across open connections (sorted, deduplicated).
    pub fn subscriptions(&self, v: VenueKind) -> Vec<String> {
        let mut all = BTreeSet::new();
        for c in lock(&self.inner.venue(v).conns).values() {
            all.extend(lock(&c.subs).iter().cloned());
        }
        all.into_iter().collect()
    }

    /// Server WebSocket ping interval for connections opened afterwards (None: no pings).
    /// Default: Binance 20 s, others none.
    pub fn set_ping_interval(&self, v: VenueKind, every: Option<Duration>) {
        *lock(&self.inner.venue(v).ping) = every;
    }

    /// Keeps only the last `keep_last` trades of the symbol in REST history.
    pub fn set_history_limit(&self, v: VenueKind, symbol: &str, keep_last: usize) {
        if let Some(b) = lock(&self.inner.venue(v).books).get_mut(symbol) {
            b.history_limit = Some(keep_last);
            while b.history.len() > keep_last {
                b.history.pop_front();
            }
        }
    }

    /// Waits (up to `timeout`) until `symbol` is subscribed on some open connection.
    pub async fn wait_subscribed(&self, v: VenueKind, symbol: &str, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if self.subscriptions(v).iter().any(|s| s == symbol) {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn accept_loop(inner: Arc<Inner>, kind: VenueKind, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Some((ws, proto)) = handshake(kind, stream).await {
                serve_conn(inner, kind, ws, proto).await;
            }
        });
    }
}

/// Per-connection protocol state.
pub(crate) enum Proto {
    Binance(binance::Conn),
    Bybit(bybit::Conn),
    Upbit(upbit::Conn),
}

async fn handshake(
    kind: VenueKind,
    stream: TcpStream,
) -> Option<(WebSocketStream<TcpStream>, Proto)> {
    let mut proto = None;
    let cb = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let uri = req.uri();
        let path = uri.path();
        let query = uri.query().unwrap_or("");
        proto = match kind {
            VenueKind::Binance => binance::Conn::from_path(path, query).map(Proto::Binance),
            VenueKind::Bybit => bybit::Conn::from_path(path).map(Proto::Bybit),
            VenueKind::Upbit => upbit::Conn::from_path(path).map(Proto::Upbit),
        };
        if proto.is_some() {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(Some("Not Found".to_string()));
            *e.status_mut() = http_status_404();
            Err(e)
        }
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, cb).await.ok()?;
    Some((ws, proto?))
}

fn http_status_404() -> axum::http::StatusCode {
    axum::http::StatusCode::NOT_FOUND
}

/// Removes the connection from the registry when its task ends.
struct Registration<'a> {
    st: &'a VenueState,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(&self.st.conns).remove(&self.id);
    }
}

/// What a protocol handler wants done after a client frame.
pub(crate) struct Reply {
    pub frames: Vec<Message>,
}

async fn serve_conn(
    inner: Arc<Inner>,
    kind: VenueKind,
    mut ws: WebSocketStream<TcpStream>,
    mut proto: Proto,
) {
    let st = inner.venue(kind);
    let id = st.next_conn.fetch_add(1, Ordering::SeqCst);
    let subs = Arc::new(Mutex::new(BTreeSet::new()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = format!("fake-{id:08x}-{}", now_ms() % 100_000);
    let initial = match &mut proto {
        Proto::Binance(c) => c.symbols(),
        _ => Vec::new(),
    };
    lock(&subs).extend(initial);
    lock(&st.conns).insert(
        id,
        ConnEntry {
            tx,
            subs: subs.clone(),
        },
    );
    st.connects.fetch_add(1, Ordering::SeqCst);
    let _reg = Registration { st, id };
    let mut stall_rx = st.stall.subscribe();
    let ping_every = *lock(&st.ping);
    let mut ping = ping_every.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut ping_n: u64 = 0;

    loop {
        if *stall_rx.borrow_and_update() {
            // Stalled: neither read nor write; only obey drop/close commands.
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                c = rx.recv() => match c {
                    None | Some(Cmd::Drop) => return,
                    Some(Cmd::Close) => { close(&mut ws).await; return; }
                    Some(Cmd::Live(_)) => {}
                },
                r = stall_rx.changed() => if r.is_err() { return },
            }
            continue;
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            r = stall_rx.changed() => if r.is_err() { return },
            c = rx.recv() => match c {
                None | Some(Cmd::Drop) => return,
                Some(Cmd::Close) => { close(&mut ws).await; return; }
                Some(Cmd::Live(unit)) => {
                    if *stall_rx.borrow() { continue; }
                    // Everything already queued goes out in one flush, as a
                    // busy venue fills its TCP segments; a Drop or Close queued
                    // behind it still comes after it.
                    let mut units = vec![unit];
                    let mut then = None;
                    while units.len() < 256 {
                        match rx.try_recv() {
                            Ok(Cmd::Live(u)) => units.push(u),
                            Ok(other) => { then = Some(other); break; }
                            Err(_) => break,
                        }
                    }
                    for unit in &units {
                        let frames = match &proto {
                            Proto::Binance(c) => c.render(unit),
                            Proto::Bybit(c) => c.render(unit),
                            Proto::Upbit(c) => c.render(unit),
                        };
                        for f in frames {
                            if ws.feed(f).await.is_err() { return; }
                        }
                    }
                    if ws.flush().await.is_err() { return; }
                    match then {
                        Some(Cmd::Drop) => return,
                        Some(Cmd::Close) => { close(&mut ws).await; return; }
                        _ => {}
                    }
                }
            },
            _ = async { match ping.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                ping_n += 1;
                if ws.send(Message::Ping(ping_n.to_string().into_bytes().into())).await.is_err() { return; }
            },
            m = ws.next() => {
                let m = match m {
                    None | Some(Err(_)) => return,
                    Some(Ok(m)) => m,
                };
                let text = match m {
                    Message::Text(t) => t.as_str().to_string(),
                    Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    Message::Close(_) => {
                        // tungstenite queues the close reply; flush it and end.
                        let _ = ws.flush().await;
                        return;
                    }
                    _ => continue,
                };
                let reply = match &mut proto {
                    Proto::Binance(c) => c.on_text(&inner, &text, &subs),
                    Proto::Bybit(c) => c.on_text(&inner, &text, &subs, &conn_id),
                    Proto::Upbit(c) => c.on_text(&inner, &text, &subs),
                };
                for f in reply.frames {
                    if ws.feed(f).await.is_err() { return; }
                }
                if ws.flush().await.is_err() { return; }
            }
        }
    }
}

async fn close(ws: &mut WebSocketStream<TcpStream>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "connection lifetime reached".into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    // Wait briefly for the client's close reply.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// JSON string literal.
pub(crate) fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}
