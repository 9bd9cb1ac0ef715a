//! Upbit: quotation WebSocket (`/websocket/v1`, binary JSON frames) and REST trade ticks.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::book::{Rec, utc_date_time};
use crate::faults::{gate, json_ok, json_status};
use crate::{Inner, Reply, Unit, VenueKind, js, lock, now_ms};

pub(crate) struct Conn;

fn bin(text: String) -> Message {
    Message::binary(text.into_bytes())
}

fn ws_error(name: &str, message: &str) -> Reply {
    Reply {
        frames: vec![bin(format!(
            "{{\"error\":{{\"name\":{},\"message\":{}}}}}",
            js(name),
            js(message)
        ))],
    }
}

fn ask_bid(r: &Rec) -> &'static str {
    // BID: the taker bought (buyer was not the maker).
    if r.t.buyer_is_maker { "ASK" } else { "BID" }
}

/// DEFAULT-format trade message; numbers are written from the exact decimal text.
fn ws_trade(r: &Rec, stream_type: &str) -> String {
    let t = &r.t;
    let (date, time) = utc_date_time(t.time_ms);
    format!(
        "{{\"type\":\"trade\",\"code\":{},\"timestamp\":{},\"trade_date\":\"{date}\",\"trade_time\":\"{time}\",\"trade_timestamp\":{},\"trade_price\":{},\"trade_volume\":{},\"ask_bid\":\"{}\",\"prev_closing_price\":{},\"change\":\"{}\",\"change_price\":{},\"sequential_id\":{},\"best_ask_price\":{},\"best_ask_size\":{},\"best_bid_price\":{},\"best_bid_size\":{},\"stream_type\":\"{stream_type}\"}}",
        js(&t.symbol),
        now_ms(),
        t.time_ms,
        t.price,
        t.quantity,
        ask_bid(r),
        r.prev_close,
        r.change,
        r.change_price,
        t.trade_id,
        r.best_ask,
        t.quantity,
        r.best_bid,
        t.quantity,
    )
}

impl Conn {
    pub fn from_path(path: &str) -> Option<Conn> {
        (path.trim_end_matches('/') == "/websocket/v1").then_some(Conn)
    }

    pub fn on_text(&mut self, inner: &Inner, text: &str, subs: &Mutex<BTreeSet<String>>) -> Reply {
        if text.trim() == "PING" {
            return Reply {
                frames: vec![bin("{\"status\":\"UP\"}".to_string())],
            };
        }
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
            return ws_error("WRONG_FORMAT", "요청 형식이 올바르지 않습니다.");
        };
        if !items.iter().any(|i| i.get("ticket").is_some()) {
            return ws_error("NO_TICKET", "티켓이 존재하지 않습니다.");
        }
        let Some(req) = items.iter().find(|i| i.get("type").is_some()) else {
            return ws_error("NO_TYPE", "타입 필드가 존재하지 않습니다.");
        };
        if req.get("type").and_then(Value::as_str) != Some("trade") {
            return ws_error("INVALID_PARAM", "지원하지 않는 타입입니다.");
        }
        let Some(codes) = req.get("codes").and_then(Value::as_array) else {
            return ws_error("NO_CODES", "코드 필드가 존재하지 않습니다.");
        };
        let codes: Vec<String> = codes
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        let only_snapshot = req
            .get("is_only_snapshot")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let only_realtime = req
            .get("is_only_realtime")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut frames = Vec::new();
        if !only_realtime {
            let books = lock(&inner.venue(VenueKind::Upbit).books);
            for c in &codes {
                if let Some(last) = books.get(c.as_str()).and_then(|b| b.history.back()) {
                    frames.push(bin(ws_trade(last, "SNAPSHOT")));
                }
            }
        }
        // A new request replaces the connection's subscriptions.
        let mut s = lock(subs);
        s.clear();
        if !only_snapshot {
            s.extend(codes);
        }
        Reply { frames }
    }

    pub fn render(&self, unit: &Unit) -> Vec<Message> {
        unit.recs
            .iter()
            .map(|r| bin(ws_trade(r, "REALTIME")))
            .collect()
    }
}

type Q = Query<HashMap<String, String>>;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/trades/ticks", get(ticks))
        .route("/v1/market/all", get(market_all))
        .with_state(inner)
}

fn err(status: StatusCode, name: &str, message: &str) -> Response {
    json_status(
        status,
        format!(
            "{{\"error\":{{\"name\":{},\"message\":{}}}}}",
            js(name),
            js(message)
        ),
    )
}

fn rest_trade(r: &Rec) -> String {
    let t = &r.t;
    let (date, time) = utc_date_time(t.time_ms);
    format!(
        "{{\"market\":{},\"trade_date_utc\":\"{date}\",\"trade_time_utc\":\"{time}\",\"timestamp\":{},\"trade_price\":{},\"trade_volume\":{},\"prev_closing_price\":{},\"change_price\":{},\"ask_bid\":\"{}\",\"sequential_id\":{}}}",
        js(&t.symbol),
        t.time_ms,
        t.price,
        t.quantity,
        r.prev_close,
        r.change_price,
        ask_bid(r),
        t.trade_id
    )
}

async fn ticks(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Upbit) {
        return r;
    }
    let Some(market) = q.get("market") else {
        return err(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "market is missing",
        );
    };
    let count = match q.get("count").map(|c| c.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) => n.clamp(1, 500),
        Some(Err(_)) => {
            return err(
                StatusCode::BAD_REQUEST,
                "validation_error",
                "count is invalid",
            );
        }
    };
    let cursor = match q
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<u64>())
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => {
            return err(
                StatusCode::BAD_REQUEST,
                "validation_error",
                "cursor is invalid",
            );
        }
    };
    let days_ago = q
        .get("days_ago")
        .and_then(|d| d.parse::<u32>().ok())
        .unwrap_or(0);
    let books = lock(&inner.venue(VenueKind::Upbit).books);
    let Some(book) = books.get(market.as_str()) else {
        return err(StatusCode::NOT_FOUND, "404", "Code not found");
    };
    if days_ago > 0 {
        // every fake trade is from today
        return json_ok("[]".to_string());
    }
    let items: Vec<String> = book
        .history
        .iter()
        .rev()
        .filter(|r| cursor.is_none_or(|c| r.t.ordinal.unwrap_or(0) < c))
        .take(count)
        .map(rest_trade)
        .collect();
    let mut resp = json_ok(format!("[{}]", items.join(",")));
    resp.headers_mut().insert(
        "remaining-req",
        axum::http::HeaderValue::from_static("group=trades; min=1800; sec=9"),
    );
    resp
}

fn names(code: &str) -> (String, String) {
    let base = code.split_once('-').map(|(_, b)| b).unwrap_or(code);
    match base {
        "BTC" => ("비트코인".to_string(), "Bitcoin".to_string()),
        "ETH" => ("이더리움".to_string(), "Ethereum".to_string()),
        "XRP" => ("엑스알피(리플)".to_string(), "XRP".to_string()),
        other => (other.to_string(), other.to_string()),
    }
}

async fn market_all(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Upbit) {
        return r;
    }
    let details = q.get("is_details").map(String::as_str) == Some("true");
    let books = lock(&inner.venue(VenueKind::Upbit).books);
    let mut codes: Vec<&String> = books.keys().collect();
    codes.sort();
    let items: Vec<String> = codes
        .into_iter()
        .map(|c| {
            let (ko, en) = names(c);
            let extra = if details {
                ",\"market_event\":{\"warning\":false,\"caution\":{\"PRICE_FLUCTUATIONS\":false,\"TRADING_VOLUME_SOARING\":false,\"DEPOSIT_AMOUNT_SOARING\":false,\"GLOBAL_PRICE_DIFFERENCES\":false,\"CONCENTRATION_OF_SMALL_ACCOUNTS\":false}}"
            } else {
                ""
            };
            format!(
                "{{\"market\":{},\"korean_name\":{},\"english_name\":{}{extra}}}",
                js(c),
                js(&ko),
                js(&en)
            )
        })
        .collect();
    json_ok(format!("[{}]", items.join(",")))
}
