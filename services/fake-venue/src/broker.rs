//! A fake broker REST API in the shape of Korea Investment & Securities' "KIS Developers" open
//! API, for the quote poller's tests and benchmarks.
//!
//! * `POST /oauth2/tokenP` with `{"grant_type":"client_credentials","appkey":..,"appsecret":..}`
//!   issues an access token (`{"access_token":..,"token_type":"Bearer","expires_in":86400}`).
//! * `GET /uapi/domestic-stock/v1/quotations/inquire-price?FID_COND_MRKT_DIV_CODE=J&FID_INPUT_ISCD=005930`
//!   with the headers `appkey`, `appsecret`, `authorization: Bearer <token>` and
//!   `tr_id: FHKST01010100` answers KIS's current-price shape:
//!   `{"output":{"stck_prpr":"71500","acml_vol":"12345678",..},"rt_cd":"0","msg_cd":"MCA00000","msg1":"정상처리 되었습니다."}`.
//! * `GET /uapi/domestic-stock/v1/quotations/multi-price?codes=005930,000660` (same headers, any
//!   `tr_id`) is **this fake's own generic batch endpoint**, modelled on brokers that offer a
//!   multi-symbol quote; it is not a KIS endpoint. It answers `{"rt_cd":"0",..,"output":[{"code":
//!   "005930",..the same fields..,"cntg_vol":"12"}]}`, leaving out codes it does not list.
//!
//! The broker enforces its own limit of quote requests per second per app key, over a sliding
//! one-second window of every request it received (refused ones included), the way a gateway
//! counts: past it, it answers HTTP 500 with
//! `{"rt_cd":"1","msg_cd":"EGW00201","msg1":"초당 거래건수를 초과하였습니다."}` as KIS does.
//! It records the arrival time of every quote request, so a test can check from the broker's
//! side that a client never sent more than N requests in any one-second window
//! ([`FakeBroker::max_in_any_window`]).
//!
//! Prices are exact decimal text. With auto-move on (the default) every answer first makes one
//! synthetic trade of the symbol: the cumulative volume (`acml_vol`) grows and the price
//! sometimes moves by one tick. [`FakeBroker::set_quote`] sets both exactly.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tickmesh_fake_venue::broker::{BrokerConfig, FakeBroker};
//! let broker = FakeBroker::start(BrokerConfig { requests_per_second: Some(20), ..Default::default() }).await?;
//! broker.add_symbol("005930", "71500", "100");
//! // point a poller at broker.base_url() with broker.app_key() / broker.app_secret() ...
//! assert!(broker.max_in_any_window(std::time::Duration::from_secs(1)) <= 20);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::faults::{json_ok, json_status};
use crate::lock;

/// The path of KIS's current-price API.
pub const INQUIRE_PRICE_PATH: &str = "/uapi/domestic-stock/v1/quotations/inquire-price";
/// The path of the fake's generic multi-symbol quote endpoint (not a KIS endpoint).
pub const MULTI_PRICE_PATH: &str = "/uapi/domestic-stock/v1/quotations/multi-price";
/// The path of KIS's access-token API.
pub const TOKEN_PATH: &str = "/oauth2/tokenP";
/// KIS's transaction id of the current-price API.
pub const INQUIRE_PRICE_TR_ID: &str = "FHKST01010100";
/// KIS's answer code for "requests per second exceeded".
pub const RATE_LIMITED_MSG_CD: &str = "EGW00201";

/// How the fake broker behaves; every field can also be changed while it runs.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Quote requests allowed in any one-second window (None: unlimited).
    pub requests_per_second: Option<u32>,
    /// Time the broker takes to answer each quote request.
    pub latency: Duration,
    /// Most codes in one multi-price request.
    pub max_codes_per_request: usize,
    pub app_key: String,
    pub app_secret: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            requests_per_second: Some(20),
            latency: Duration::ZERO,
            max_codes_per_request: 100,
            app_key: "fake-app-key".into(),
            app_secret: "fake-app-secret".into(),
        }
    }
}

/// The state of one listed code, as the broker would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerQuote {
    /// Current price, exact decimal text (`stck_prpr`).
    pub price: String,
    /// Cumulative volume of the day (`acml_vol`).
    pub cumulative_volume: u64,
    /// Volume of the last trade (`cntg_vol`, multi-price only).
    pub last_volume: u64,
}

/// One listed code: prices are integer units at `scale` decimals.
struct Listing {
    price: i64,
    tick: i64,
    scale: u32,
    base: i64,
    open: i64,
    high: i64,
    low: i64,
    cumulative_volume: u64,
    last_volume: u64,
    turnover: i128,
    moves: u64,
}

impl Listing {
    /// One synthetic trade: volume 1..=13 in a fixed pattern, and a price step of -1, 0 or +1
    /// tick (never below one tick).
    fn trade(&mut self) {
        self.moves += 1;
        let volume = 1 + (self.moves * 7) % 13;
        let step = [0, 1, 0, -1, 1, -1][(self.moves % 6) as usize];
        self.price = (self.price + step * self.tick).max(self.tick);
        self.record(volume);
    }

    fn record(&mut self, volume: u64) {
        self.last_volume = volume;
        self.cumulative_volume += volume;
        self.turnover += i128::from(self.price) * i128::from(volume);
        self.high = self.high.max(self.price);
        self.low = self.low.min(self.price);
    }

    fn quote(&self) -> BrokerQuote {
        BrokerQuote {
            price: format_units(i128::from(self.price), self.scale),
            cumulative_volume: self.cumulative_volume,
            last_volume: self.last_volume,
        }
    }

    /// The KIS current-price fields.
    fn output(&self) -> serde_json::Map<String, Value> {
        let change = self.price - self.base;
        let sign = match change.signum() {
            1 => "2",
            -1 => "5",
            _ => "3",
        };
        // Percent change with two decimals, truncated toward zero.
        let rate = i128::from(change) * 10_000 / i128::from(self.base.max(1));
        let turnover_won = self.turnover / 10i128.pow(self.scale);
        let fmt = |units: i64| format_units(i128::from(units), self.scale);
        let mut out = serde_json::Map::new();
        for (k, v) in [
            ("stck_prpr", fmt(self.price)),
            ("prdy_vrss", fmt(change)),
            ("prdy_vrss_sign", sign.to_string()),
            ("prdy_ctrt", format_units(rate, 2)),
            ("acml_tr_pbmn", turnover_won.to_string()),
            ("acml_vol", self.cumulative_volume.to_string()),
            ("stck_oprc", fmt(self.open)),
            ("stck_hgpr", fmt(self.high)),
            ("stck_lwpr", fmt(self.low)),
            ("stck_sdpr", fmt(self.base)),
        ] {
            out.insert(k.to_string(), Value::String(v));
        }
        out
    }
}

struct Inner {
    addr: SocketAddr,
    config: Mutex<BrokerConfig>,
    token: String,
    listings: Mutex<BTreeMap<String, Listing>>,
    /// Arrivals of the last second, for the broker's own limit.
    recent: Mutex<VecDeque<Instant>>,
    /// Every quote request's arrival since start (or the last reset), and whether it was
    /// refused for the rate limit.
    arrivals: Mutex<Vec<(Instant, bool)>>,
    started: Mutex<Instant>,
    requests: AtomicU64,
    rate_limited: AtomicU64,
    codes_quoted: AtomicU64,
    tokens_issued: AtomicU64,
    /// Quote requests (admitted) that asked for each code.
    asked: Mutex<HashMap<String, u64>>,
    auto_move: AtomicBool,
    cancel: CancellationToken,
}

/// Handle to a running fake broker (cheap to clone). It stops when [`FakeBroker::shutdown`] is
/// called or the last handle is dropped.
#[derive(Clone)]
pub struct FakeBroker {
    inner: Arc<Inner>,
    _guard: Arc<ShutdownOnDrop>,
}

struct ShutdownOnDrop(CancellationToken);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl std::fmt::Debug for FakeBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBroker")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl FakeBroker {
    /// Binds 127.0.0.1:0 and starts serving.
    pub async fn start(config: BrokerConfig) -> std::io::Result<FakeBroker> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            addr: listener.local_addr()?,
            token: format!("fake-token-{:016x}", crate::now_ms()),
            config: Mutex::new(config),
            listings: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(VecDeque::new()),
            arrivals: Mutex::new(Vec::new()),
            started: Mutex::new(Instant::now()),
            requests: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            codes_quoted: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
            asked: Mutex::new(HashMap::new()),
            auto_move: AtomicBool::new(true),
            cancel: cancel.clone(),
        });
        let router = Router::new()
            .route(TOKEN_PATH, post(issue_token))
            .route(INQUIRE_PRICE_PATH, get(inquire_price))
            .route(MULTI_PRICE_PATH, get(multi_price))
            .with_state(inner.clone());
        let token = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Ok(FakeBroker {
            inner,
            _guard: Arc::new(ShutdownOnDrop(cancel)),
        })
    }

    /// Stops listening.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }

    /// `http://127.0.0.1:P`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn app_key(&self) -> String {
        lock(&self.inner.config).app_key.clone()
    }

    pub fn app_secret(&self) -> String {
        lock(&self.inner.config).app_secret.clone()
    }

    /// Lists (or re-lists) a code with its price and tick size (decimal text, e.g. "71500",
    /// "100"); the day starts at that price with no volume. Panics on text that is not a
    /// positive decimal, since that is a mistake in the test.
    pub fn add_symbol(&self, code: &str, price: &str, tick: &str) {
        let scale = decimals(price).max(decimals(tick));
        let price = parse_units(price, scale).expect("price is a positive decimal");
        let tick = parse_units(tick, scale).expect("tick is a positive decimal");
        assert!(price > 0 && tick > 0, "price and tick must be positive");
        lock(&self.inner.listings).insert(
            code.to_string(),
            Listing {
                price,
                tick,
                scale,
                base: price,
                open: price,
                high: price,
                low: price,
                cumulative_volume: 0,
                last_volume: 0,
                turnover: 0,
                moves: 0,
            },
        );
    }

    /// Lists many codes at once, all at `price` with tick `tick`.
    pub fn add_symbols<'a>(
        &self,
        codes: impl IntoIterator<Item = &'a str>,
        price: &str,
        tick: &str,
    ) {
        for code in codes {
            self.add_symbol(code, price, tick);
        }
    }

    /// Sets a listed code's price (at its scale) and cumulative volume exactly; the volume
    /// growth since the last state becomes the last trade's volume. False for an unknown code or
    /// a price that does not fit the code's decimals.
    pub fn set_quote(&self, code: &str, price: &str, cumulative_volume: u64) -> bool {
        let mut listings = lock(&self.inner.listings);
        let Some(l) = listings.get_mut(code) else {
            return false;
        };
        let Some(units) = parse_units(price, l.scale) else {
            return false;
        };
        l.price = units;
        if cumulative_volume >= l.cumulative_volume {
            l.record(cumulative_volume - l.cumulative_volume);
        } else {
            // A new day: the volume starts again.
            l.cumulative_volume = cumulative_volume;
            l.turnover = i128::from(units) * i128::from(cumulative_volume);
            l.record(0);
        }
        true
    }

    /// The code's current state (what the next answer reports, before an auto-move).
    pub fn quote(&self, code: &str) -> Option<BrokerQuote> {
        lock(&self.inner.listings).get(code).map(Listing::quote)
    }

    /// Whether every answer first makes one synthetic trade of the code (default on).
    pub fn set_auto_move(&self, on: bool) {
        self.inner.auto_move.store(on, Ordering::SeqCst);
    }

    /// Changes the per-second limit (None: unlimited).
    pub fn set_limit(&self, requests_per_second: Option<u32>) {
        lock(&self.inner.config).requests_per_second = requests_per_second;
    }

    /// Changes the time each quote request takes.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.inner.config).latency = latency;
    }

    /// Quote requests received (answered, refused and rate-limited).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Quote requests answered with EGW00201.
    pub fn rate_limited(&self) -> u64 {
        self.inner.rate_limited.load(Ordering::SeqCst)
    }

    /// Codes quoted in successful answers (a multi-price answer counts each code).
    pub fn codes_quoted(&self) -> u64 {
        self.inner.codes_quoted.load(Ordering::SeqCst)
    }

    /// Admitted quote requests that asked for `code` (single or in a batch).
    pub fn times_asked(&self, code: &str) -> u64 {
        lock(&self.inner.asked).get(code).copied().unwrap_or(0)
    }

    /// Access tokens issued.
    pub fn tokens_issued(&self) -> u64 {
        self.inner.tokens_issued.load(Ordering::SeqCst)
    }

    /// The most quote requests that arrived within any window of length `window` (a sliding
    /// window over every arrival, rate-limited ones included).
    pub fn max_in_any_window(&self, window: Duration) -> usize {
        let arrivals = lock(&self.inner.arrivals);
        let mut best = 0;
        let mut first = 0;
        for (last, (t, _)) in arrivals.iter().enumerate() {
            while t.duration_since(arrivals[first].0) >= window {
                first += 1;
            }
            best = best.max(last + 1 - first);
        }
        best
    }

    /// Quote requests per fixed one-second window since start (or the last reset), oldest first.
    pub fn requests_per_second_window(&self) -> Vec<usize> {
        let started = *lock(&self.inner.started);
        let arrivals = lock(&self.inner.arrivals);
        let mut out: Vec<usize> = Vec::new();
        for (t, _) in arrivals.iter() {
            let second = t.duration_since(started).as_secs() as usize;
            if out.len() <= second {
                out.resize(second + 1, 0);
            }
            out[second] += 1;
        }
        out
    }

    /// Every quote request's arrival as time since start (or the last reset), with true for
    /// the ones refused for the rate limit.
    pub fn arrivals(&self) -> Vec<(Duration, bool)> {
        let started = *lock(&self.inner.started);
        lock(&self.inner.arrivals)
            .iter()
            .map(|(t, limited)| (t.saturating_duration_since(started), *limited))
            .collect()
    }

    /// Forgets the recorded arrivals and zeroes the counters (not the listings or the limit's
    /// own sliding window).
    pub fn reset_stats(&self) {
        lock(&self.inner.arrivals).clear();
        *lock(&self.inner.started) = Instant::now();
        for c in [
            &self.inner.requests,
            &self.inner.rate_limited,
            &self.inner.codes_quoted,
        ] {
            c.store(0, Ordering::SeqCst);
        }
    }
}

fn kis_error(msg_cd: &str, msg1: &str) -> Response {
    json_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"rt_cd": "1", "msg_cd": msg_cd, "msg1": msg1}).to_string(),
    )
}

async fn issue_token(State(inner): State<Arc<Inner>>, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (key, secret) = {
        let c = lock(&inner.config);
        (c.app_key.clone(), c.app_secret.clone())
    };
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return json_status(
            StatusCode::FORBIDDEN,
            json!({"error_description": "grant_type 이 올바르지 않습니다.", "error_code": "EGW00002"})
                .to_string(),
        );
    }
    if field("appkey") != key || field("appsecret") != secret {
        return json_status(
            StatusCode::FORBIDDEN,
            json!({"error_description": "유효하지 않은 AppKey입니다.", "error_code": "EGW00103"})
                .to_string(),
        );
    }
    inner.tokens_issued.fetch_add(1, Ordering::SeqCst);
    json_ok(
        json!({
            "access_token": inner.token,
            "access_token_token_expired": "2099-12-31 23:59:59",
            "token_type": "Bearer",
            "expires_in": 86400
        })
        .to_string(),
    )
}

/// Counts the request, applies the limit, checks the credentials and waits the latency.
/// `Err` is the answer to send instead of a quote.
async fn admit(inner: &Inner, headers: &HeaderMap, tr_id: Option<&str>) -> Result<(), Response> {
    let now = Instant::now();
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let (limit, latency, key, secret) = {
        let c = lock(&inner.config);
        (
            c.requests_per_second,
            c.latency,
            c.app_key.clone(),
            c.app_secret.clone(),
        )
    };
    let over = {
        let mut recent = lock(&inner.recent);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            recent.pop_front();
        }
        let over = limit.is_some_and(|l| recent.len() >= l as usize);
        recent.push_back(now);
        lock(&inner.arrivals).push((now, over));
        over
    };
    if over {
        inner.rate_limited.fetch_add(1, Ordering::SeqCst);
        return Err(kis_error(
            RATE_LIMITED_MSG_CD,
            "초당 거래건수를 초과하였습니다.",
        ));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    if header("appkey") != key || header("appsecret") != secret {
        return Err(kis_error("EGW00103", "유효하지 않은 AppKey입니다."));
    }
    if header("authorization") != format!("Bearer {}", inner.token) {
        return Err(kis_error("EGW00123", "기간이 만료된 token 입니다."));
    }
    if let Some(tr_id) = tr_id
        && header("tr_id") != tr_id
    {
        return Err(kis_error("EGW00205", "tr_id 가 올바르지 않습니다."));
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    Ok(())
}

fn success(output: Value) -> Response {
    json_ok(
        json!({"output": output, "rt_cd": "0", "msg_cd": "MCA00000", "msg1": "정상처리 되었습니다."})
            .to_string(),
    )
}

async fn inquire_price(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = admit(&inner, &headers, Some(INQUIRE_PRICE_TR_ID)).await {
        return r;
    }
    if q.get("FID_COND_MRKT_DIV_CODE").map(String::as_str) != Some("J") {
        return kis_error("OPSQ2001", "FID_COND_MRKT_DIV_CODE 는 J 이어야 합니다.");
    }
    let code = q.get("FID_INPUT_ISCD").cloned().unwrap_or_default();
    *lock(&inner.asked).entry(code.clone()).or_default() += 1;
    let auto = inner.auto_move.load(Ordering::SeqCst);
    let mut listings = lock(&inner.listings);
    let Some(listing) = listings.get_mut(&code) else {
        return kis_error(
            "FAKE0404",
            "unknown FID_INPUT_ISCD (the fake lists no such code)",
        );
    };
    if auto {
        listing.trade();
    }
    let output = listing.output();
    drop(listings);
    inner.codes_quoted.fetch_add(1, Ordering::SeqCst);
    success(Value::Object(output))
}

async fn multi_price(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = admit(&inner, &headers, None).await {
        return r;
    }
    let codes: Vec<&str> = q
        .get("codes")
        .map(|c| c.split(',').filter(|c| !c.is_empty()).collect())
        .unwrap_or_default();
    let max = lock(&inner.config).max_codes_per_request;
    if codes.is_empty() || codes.len() > max {
        return kis_error(
            "FAKE0413",
            &format!("codes must list 1 to {max} codes, got {}", codes.len()),
        );
    }
    {
        let mut asked = lock(&inner.asked);
        for code in &codes {
            *asked.entry(code.to_string()).or_default() += 1;
        }
    }
    let auto = inner.auto_move.load(Ordering::SeqCst);
    let mut listings = lock(&inner.listings);
    let mut out = Vec::with_capacity(codes.len());
    for code in codes {
        let Some(listing) = listings.get_mut(code) else {
            continue;
        };
        if auto {
            listing.trade();
        }
        let mut fields = listing.output();
        fields.insert("code".into(), Value::String(code.to_string()));
        fields.insert(
            "cntg_vol".into(),
            Value::String(listing.last_volume.to_string()),
        );
        out.push(Value::Object(fields));
    }
    drop(listings);
    inner
        .codes_quoted
        .fetch_add(out.len() as u64, Ordering::SeqCst);
    success(Value::Array(out))
}

fn decimals(text: &str) -> u32 {
    text.split_once('.').map_or(0, |(_, f)| f.len() as u32)
}

/// Integer units of a non-negative decimal at `scale` (None if malformed or more decimals).
fn parse_units(text: &str, scale: u32) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > scale as usize
    {
        return None;
    }
    let digits = format!("{int}{frac}{}", "0".repeat(scale as usize - frac.len()));
    digits.parse().ok()
}

/// Decimal text of `units` at `scale` ("-5.00" for -500 at 2).
fn format_units(units: i128, scale: u32) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let digits = units.unsigned_abs().to_string();
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(broker: &FakeBroker, path: &str, tr_id: &str, token: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", broker.base_url()))
            .header("appkey", broker.app_key())
            .header("appsecret", broker.app_secret())
            .header("authorization", format!("Bearer {token}"))
            .header("tr_id", tr_id)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap(),
        )
    }

    async fn token(broker: &FakeBroker) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}{TOKEN_PATH}", broker.base_url()))
            .body(
                json!({"grant_type": "client_credentials", "appkey": broker.app_key(), "appsecret": broker.app_secret()})
                    .to_string(),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let r: Value = serde_json::from_str(&r).unwrap();
        r["access_token"].as_str().unwrap().to_string()
    }

    fn single(code: &str) -> String {
        format!("{INQUIRE_PRICE_PATH}?FID_COND_MRKT_DIV_CODE=J&FID_INPUT_ISCD={code}")
    }

    #[test]
    fn decimal_text_round_trips() {
        assert_eq!(parse_units("71500", 0), Some(71500));
        assert_eq!(parse_units("1.5", 2), Some(150));
        assert_eq!(parse_units("1.555", 2), None);
        assert_eq!(parse_units("-1", 0), None);
        assert_eq!(format_units(-500, 2), "-5.00");
        assert_eq!(format_units(5, 2), "0.05");
        assert_eq!(format_units(71500, 0), "71500");
    }

    #[tokio::test]
    async fn answers_the_kis_shape_with_exact_prices_and_growing_volume() {
        let broker = FakeBroker::start(BrokerConfig::default()).await.unwrap();
        broker.add_symbol("005930", "71500", "100");
        let token = token(&broker).await;
        let (status, first) = get(&broker, &single("005930"), INQUIRE_PRICE_TR_ID, &token).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["rt_cd"], "0");
        assert_eq!(first["msg_cd"], "MCA00000");
        let out = &first["output"];
        assert!(out["stck_prpr"].is_string(), "prices are text: {out}");
        let (_, second) = get(&broker, &single("005930"), INQUIRE_PRICE_TR_ID, &token).await;
        let vol = |v: &Value| {
            v["output"]["acml_vol"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(vol(&second) > vol(&first));

        broker.set_auto_move(false);
        assert!(broker.set_quote("005930", "72000", 5000));
        let (_, exact) = get(&broker, &single("005930"), INQUIRE_PRICE_TR_ID, &token).await;
        assert_eq!(exact["output"]["stck_prpr"], "72000");
        assert_eq!(exact["output"]["acml_vol"], "5000");
        assert_eq!(exact["output"]["prdy_vrss"], "500");
        assert_eq!(exact["output"]["prdy_vrss_sign"], "2");
        assert_eq!(exact["output"]["prdy_ctrt"], "0.69");
    }

    #[tokio::test]
    async fn multi_price_lists_known_codes_with_their_last_volume() {
        let broker = FakeBroker::start(BrokerConfig::default()).await.unwrap();
        broker.add_symbol("005930", "71500", "100");
        broker.add_symbol("000660", "182000.5", "0.5");
        broker.set_auto_move(false);
        broker.set_quote("000660", "182001.0", 40);
        broker.set_quote("000660", "182001.0", 52);
        let token = token(&broker).await;
        let path = format!("{MULTI_PRICE_PATH}?codes=005930,000660,999999");
        let (status, body) = get(&broker, &path, "ANY", &token).await;
        assert_eq!(status, 200, "{body}");
        let out = body["output"].as_array().unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1]["code"], "000660");
        assert_eq!(out[1]["stck_prpr"], "182001.0");
        assert_eq!(out[1]["cntg_vol"], "12");
        assert_eq!(broker.codes_quoted(), 2);
    }

    #[tokio::test]
    async fn refuses_bad_credentials_and_past_the_limit_answers_egw00201() {
        let broker = FakeBroker::start(BrokerConfig {
            requests_per_second: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
        broker.add_symbol("005930", "71500", "100");
        let token = token(&broker).await;
        let (status, bad) = get(&broker, &single("005930"), INQUIRE_PRICE_TR_ID, "nope").await;
        assert_eq!((status, bad["msg_cd"].as_str()), (500, Some("EGW00123")));
        let (_, bad) = get(&broker, &single("005930"), "FHKST00000000", &token).await;
        assert_eq!(bad["msg_cd"], "EGW00205");
        let (status, _) = get(&broker, &single("005930"), INQUIRE_PRICE_TR_ID, &token).await;
        assert_eq!(status, 200);
        // Three requests used this second's budget; the fourth is refused.
        let (status, limited) = get(&broker, &single("005930"), INQUIRE_PRICE_TR_ID, &token).await;
        assert_eq!(status, 500);
        assert_eq!(limited["rt_cd"], "1");
        assert_eq!(limited["msg_cd"], RATE_LIMITED_MSG_CD);
        assert_eq!(broker.rate_limited(), 1);
        assert_eq!(broker.max_in_any_window(Duration::from_secs(1)), 4);
        let refused: Vec<bool> = broker.arrivals().into_iter().map(|(_, r)| r).collect();
        assert_eq!(refused, [false, false, false, true]);
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let (status, ok) = get(&broker, &single("005930"), INQUIRE_PRICE_TR_ID, &token).await;
        assert_eq!(status, 200, "{ok}");
        assert_eq!(broker.requests(), 5);
        assert_eq!(broker.requests_per_second_window().iter().sum::<usize>(), 5);
    }
}
