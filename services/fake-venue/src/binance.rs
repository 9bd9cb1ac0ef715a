//! Binance spot: WebSocket trade / aggTrade streams and the public REST trade endpoints.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::book::{Dec, Rec, fmt_units};
use crate::faults::{gate, json_ok, json_status};
use crate::{Inner, Reply, Unit, VenueKind, js, lock, now_ms};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stream {
    /// Lowercase stream name as the client wrote it ("btcusdt@trade").
    name: String,
    /// Upper-case symbol ("BTCUSDT").
    symbol: String,
    agg: bool,
}

fn parse_stream(name: &str) -> Option<Stream> {
    let name = name.trim().replace("%40", "@").replace("%40", "@");
    let (sym, kind) = name.split_once('@')?;
    let agg = match kind {
        "trade" => false,
        "aggTrade" => true,
        _ => return None,
    };
    if sym.is_empty() {
        return None;
    }
    Some(Stream {
        name: format!("{}@{}", sym.to_lowercase(), kind),
        symbol: sym.to_uppercase(),
        agg,
    })
}

pub(crate) struct Conn {
    combined: bool,
    streams: BTreeSet<Stream>,
}

impl Conn {
    /// `/ws`, `/ws/<stream>` (raw) or `/stream?streams=a/b` (combined).
    pub fn from_path(path: &str, query: &str) -> Option<Conn> {
        let mut streams = BTreeSet::new();
        if path == "/stream" || path == "/stream/" {
            for kv in query.split('&') {
                if let Some(v) = kv.strip_prefix("streams=") {
                    for s in v.split('/') {
                        if let Some(s) = parse_stream(s) {
                            streams.insert(s);
                        }
                    }
                }
            }
            Some(Conn {
                combined: true,
                streams,
            })
        } else if path == "/ws" || path == "/ws/" {
            Some(Conn {
                combined: false,
                streams,
            })
        } else if let Some(rest) = path.strip_prefix("/ws/") {
            for s in rest.split('/') {
                if let Some(s) = parse_stream(s) {
                    streams.insert(s);
                }
            }
            Some(Conn {
                combined: false,
                streams,
            })
        } else {
            None
        }
    }

    pub fn symbols(&self) -> Vec<String> {
        self.streams.iter().map(|s| s.symbol.clone()).collect()
    }

    fn sync_subs(&self, subs: &Mutex<BTreeSet<String>>) {
        let mut s = lock(subs);
        s.clear();
        s.extend(self.symbols());
    }

    pub fn on_text(&mut self, _inner: &Inner, text: &str, subs: &Mutex<BTreeSet<String>>) -> Reply {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return reply(format!(
                    "{{\"error\":{{\"code\":3,\"msg\":{}}}}}",
                    js(&format!("Invalid JSON: {e}"))
                ));
            }
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let id_text = id.to_string();
        let method = v.get("method").and_then(Value::as_str).unwrap_or("");
        let params: Vec<String> = v
            .get("params")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        match method {
            "SUBSCRIBE" | "UNSUBSCRIBE" => {
                let mut parsed = Vec::new();
                for p in &params {
                    match parse_stream(p) {
                        Some(s) => parsed.push(s),
                        None => {
                            return reply(format!(
                                "{{\"error\":{{\"code\":2,\"msg\":{}}},\"id\":{id_text}}}",
                                js(&format!("Invalid request: unknown stream name '{p}'"))
                            ));
                        }
                    }
                }
                for s in parsed {
                    if method == "SUBSCRIBE" {
                        self.streams.insert(s);
                    } else {
                        self.streams.remove(&s);
                    }
                }
                self.sync_subs(subs);
                reply(format!("{{\"result\":null,\"id\":{id_text}}}"))
            }
            "LIST_SUBSCRIPTIONS" => {
                let names: Vec<String> = self.streams.iter().map(|s| js(&s.name)).collect();
                reply(format!(
                    "{{\"result\":[{}],\"id\":{id_text}}}",
                    names.join(",")
                ))
            }
            _ => reply(format!(
                "{{\"error\":{{\"code\":2,\"msg\":\"Invalid request: unknown method\"}},\"id\":{id_text}}}"
            )),
        }
    }

    pub fn render(&self, unit: &Unit) -> Vec<Message> {
        let mut out = Vec::new();
        for rec in &unit.recs {
            for s in self.streams.iter().filter(|s| s.symbol == unit.symbol) {
                let event = if s.agg {
                    agg_event(rec)
                } else {
                    trade_event(rec)
                };
                let text = if self.combined {
                    format!("{{\"stream\":{},\"data\":{event}}}", js(&s.name))
                } else {
                    event
                };
                out.push(Message::text(text));
            }
        }
        out
    }
}

fn reply(text: String) -> Reply {
    Reply {
        frames: vec![Message::text(text)],
    }
}

fn trade_event(r: &Rec) -> String {
    let t = &r.t;
    format!(
        "{{\"e\":\"trade\",\"E\":{},\"s\":{},\"t\":{},\"p\":{},\"q\":{},\"T\":{},\"m\":{},\"M\":true}}",
        now_ms(),
        js(&t.symbol),
        t.trade_id,
        js(&t.price),
        js(&t.quantity),
        t.time_ms,
        t.buyer_is_maker
    )
}

fn agg_event(r: &Rec) -> String {
    let t = &r.t;
    format!(
        "{{\"e\":\"aggTrade\",\"E\":{},\"s\":{},\"a\":{},\"p\":{},\"q\":{},\"f\":{},\"l\":{},\"T\":{},\"m\":{},\"M\":true}}",
        now_ms(),
        js(&t.symbol),
        r.agg_id,
        js(&t.price),
        js(&t.quantity),
        t.trade_id,
        t.trade_id,
        t.time_ms,
        t.buyer_is_maker
    )
}

/// Exact price * qty, trailing zeros trimmed ("48.000012").
fn quote_qty(price: &str, qty: &str) -> String {
    let (Some(p), Some(q)) = (Dec::parse(price), Dec::parse(qty)) else {
        return "0".to_string();
    };
    let s = fmt_units(p.m * q.m, p.scale + q.scale, 0);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn rest_trade(r: &Rec) -> String {
    let t = &r.t;
    format!(
        "{{\"id\":{},\"price\":{},\"qty\":{},\"quoteQty\":{},\"time\":{},\"isBuyerMaker\":{},\"isBestMatch\":true}}",
        t.trade_id,
        js(&t.price),
        js(&t.quantity),
        js(&quote_qty(&t.price, &t.quantity)),
        t.time_ms,
        t.buyer_is_maker
    )
}

fn rest_agg(r: &Rec) -> String {
    let t = &r.t;
    format!(
        "{{\"a\":{},\"p\":{},\"q\":{},\"f\":{},\"l\":{},\"T\":{},\"m\":{},\"M\":true}}",
        r.agg_id,
        js(&t.price),
        js(&t.quantity),
        t.trade_id,
        t.trade_id,
        t.time_ms,
        t.buyer_is_maker
    )
}

type Q = Query<HashMap<String, String>>;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/v3/ping", get(ping))
        .route("/api/v3/time", get(time))
        .route("/api/v3/trades", get(trades))
        .route("/api/v3/historicalTrades", get(historical))
        .route("/api/v3/aggTrades", get(agg_trades))
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .with_state(inner)
}

fn err(status: StatusCode, code: i64, msg: &str) -> Response {
    json_status(status, format!("{{\"code\":{code},\"msg\":{}}}", js(msg)))
}

fn limit_of(q: &HashMap<String, String>) -> Result<usize, Response> {
    match q.get("limit") {
        None => Ok(500),
        Some(l) => match l.parse::<usize>() {
            Ok(n) => Ok(n.clamp(1, 1000)),
            Err(_) => Err(err(
                StatusCode::BAD_REQUEST,
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
            )),
        },
    }
}

/// Selects records: from `from_id` (by `key`) forward, else the most recent `limit`.
fn select(
    inner: &Inner,
    q: &HashMap<String, String>,
    use_from: bool,
    key: fn(&Rec) -> u64,
    render: fn(&Rec) -> String,
) -> Response {
    let Some(symbol) = q.get("symbol").filter(|s| !s.is_empty()) else {
        return err(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
    };
    let limit = match limit_of(q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let from = if use_from {
        match q.get("fromId").map(|f| f.parse::<u64>()) {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(_)) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    -1100,
                    "Illegal characters found in parameter 'fromId'; legal range is '^[0-9]{1,20}$'.",
                );
            }
        }
    } else {
        None
    };
    let books = lock(&inner.venue(VenueKind::Binance).books);
    let Some(book) = books.get(symbol.as_str()) else {
        return err(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
    };
    let items: Vec<String> = match from {
        Some(f) => book
            .history
            .iter()
            .filter(|r| key(r) >= f)
            .take(limit)
            .map(render)
            .collect(),
        None => {
            let skip = book.history.len().saturating_sub(limit);
            book.history.iter().skip(skip).map(render).collect()
        }
    };
    json_ok(format!("[{}]", items.join(",")))
}

fn trade_key(r: &Rec) -> u64 {
    r.t.ordinal.unwrap_or(0)
}

fn agg_key(r: &Rec) -> u64 {
    r.agg_id
}

async fn ping(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Binance) {
        return r;
    }
    json_ok("{}".to_string())
}

async fn time(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Binance) {
        return r;
    }
    json_ok(format!("{{\"serverTime\":{}}}", now_ms()))
}

async fn trades(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Binance) {
        return r;
    }
    select(&inner, &q, false, trade_key, rest_trade)
}

async fn historical(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Binance) {
        return r;
    }
    select(&inner, &q, true, trade_key, rest_trade)
}

async fn agg_trades(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Binance) {
        return r;
    }
    select(&inner, &q, true, agg_key, rest_agg)
}

fn split_symbol(symbol: &str) -> (String, String) {
    for quote in [
        "FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BTC", "ETH", "BNB", "KRW",
    ] {
        if let Some(base) = symbol.strip_suffix(quote)
            && !base.is_empty()
        {
            return (base.to_string(), quote.to_string());
        }
    }
    (symbol.to_string(), String::new())
}

fn eight(d: &str) -> String {
    match Dec::parse(d) {
        Some(x) => fmt_units(x.m, x.scale, 8),
        None => d.to_string(),
    }
}

async fn exchange_info(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Binance) {
        return r;
    }
    let books = lock(&inner.venue(VenueKind::Binance).books);
    let wanted: Option<Vec<String>> = if let Some(s) = q.get("symbol") {
        Some(vec![s.clone()])
    } else if let Some(s) = q.get("symbols") {
        match serde_json::from_str::<Vec<String>>(s) {
            Ok(v) => Some(v),
            Err(_) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    -1100,
                    "Illegal characters found in parameter 'symbols'; legal range is '^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.",
                );
            }
        }
    } else {
        None
    };
    let names: Vec<String> = match wanted {
        Some(w) => {
            if let Some(bad) = w.iter().find(|s| !books.contains_key(s.as_str())) {
                let _ = bad;
                return err(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
            }
            w
        }
        None => {
            let mut k: Vec<String> = books.keys().cloned().collect();
            k.sort();
            k
        }
    };
    let mut syms = Vec::new();
    for n in names {
        let Some(b) = books.get(n.as_str()) else {
            continue;
        };
        let (base, quote) = split_symbol(&b.symbol);
        let tick = eight(&b.tick);
        let step = eight(&b.step);
        syms.push(format!(
            "{{\"symbol\":{},\"status\":\"TRADING\",\"baseAsset\":{},\"baseAssetPrecision\":8,\"quoteAsset\":{},\"quotePrecision\":8,\"quoteAssetPrecision\":8,\"baseCommissionPrecision\":8,\"quoteCommissionPrecision\":8,\"orderTypes\":[\"LIMIT\",\"LIMIT_MAKER\",\"MARKET\"],\"icebergAllowed\":true,\"ocoAllowed\":true,\"quoteOrderQtyMarketAllowed\":true,\"allowTrailingStop\":true,\"cancelReplaceAllowed\":true,\"isSpotTradingAllowed\":true,\"isMarginTradingAllowed\":false,\"filters\":[{{\"filterType\":\"PRICE_FILTER\",\"minPrice\":{},\"maxPrice\":\"1000000.00000000\",\"tickSize\":{}}},{{\"filterType\":\"LOT_SIZE\",\"minQty\":{},\"maxQty\":\"9000.00000000\",\"stepSize\":{}}}],\"permissions\":[],\"permissionSets\":[[\"SPOT\"]],\"defaultSelfTradePreventionMode\":\"EXPIRE_MAKER\",\"allowedSelfTradePreventionModes\":[\"EXPIRE_TAKER\",\"EXPIRE_MAKER\",\"EXPIRE_BOTH\"]}}",
            js(&b.symbol),
            js(&base),
            js(&quote),
            js(&tick),
            js(&tick),
            js(&step),
            js(&step)
        ));
    }
    json_ok(format!(
        "{{\"timezone\":\"UTC\",\"serverTime\":{},\"rateLimits\":[{{\"rateLimitType\":\"REQUEST_WEIGHT\",\"interval\":\"MINUTE\",\"intervalNum\":1,\"limit\":6000}},{{\"rateLimitType\":\"ORDERS\",\"interval\":\"SECOND\",\"intervalNum\":10,\"limit\":100}},{{\"rateLimitType\":\"RAW_REQUESTS\",\"interval\":\"MINUTE\",\"intervalNum\":5,\"limit\":61000}}],\"exchangeFilters\":[],\"symbols\":[{}]}}",
        now_ms(),
        syms.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let c = Conn::from_path("/stream", "streams=btcusdt@trade/ethusdt@aggTrade").unwrap();
        assert!(c.combined);
        assert_eq!(c.symbols(), vec!["BTCUSDT", "ETHUSDT"]);
        let c = Conn::from_path("/ws/btcusdt@trade", "").unwrap();
        assert!(!c.combined);
        assert!(Conn::from_path("/nope", "").is_none());
        assert_eq!(quote_qty("4.00000100", "12.00000000"), "48.000012");
    }
}
