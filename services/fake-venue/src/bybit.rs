//! Bybit v5: public WebSocket (`publicTrade.<symbol>`) and market REST endpoints.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::book::Rec;
use crate::faults::{gate, json_ok};
use crate::{Inner, Reply, Unit, VenueKind, js, lock, now_ms};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    Spot,
    Linear,
}

pub(crate) struct Conn {
    category: Category,
}

impl Conn {
    pub fn from_path(path: &str) -> Option<Conn> {
        match path.trim_end_matches('/') {
            "/v5/public/spot" => Some(Conn {
                category: Category::Spot,
            }),
            "/v5/public/linear" => Some(Conn {
                category: Category::Linear,
            }),
            _ => None,
        }
    }

    pub fn on_text(
        &mut self,
        inner: &Inner,
        text: &str,
        subs: &Mutex<BTreeSet<String>>,
        conn_id: &str,
    ) -> Reply {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                return reply(format!(
                    "{{\"success\":false,\"ret_msg\":\"error:request not in json format\",\"conn_id\":{},\"op\":\"\"}}",
                    js(conn_id)
                ));
            }
        };
        let op = v.get("op").and_then(Value::as_str).unwrap_or("");
        let req_id = v.get("req_id").and_then(Value::as_str);
        let req_part = req_id
            .map(|r| format!(",\"req_id\":{}", js(r)))
            .unwrap_or_else(|| ",\"req_id\":\"\"".to_string());
        let args: Vec<String> = v
            .get("args")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        match op {
            "ping" => reply(format!(
                "{{\"success\":true,\"ret_msg\":\"pong\",\"conn_id\":{}{req_part},\"op\":\"ping\"}}",
                js(conn_id)
            )),
            "subscribe" | "unsubscribe" => {
                let books = lock(&inner.venue(VenueKind::Bybit).books);
                let mut symbols = Vec::new();
                for a in &args {
                    let sym = a.strip_prefix("publicTrade.").unwrap_or("");
                    if sym.is_empty() || !books.contains_key(sym) {
                        return reply(format!(
                            "{{\"success\":false,\"ret_msg\":{},\"conn_id\":{}{req_part},\"op\":{}}}",
                            js(&format!("Invalid symbol :[{a}]")),
                            js(conn_id),
                            js(op)
                        ));
                    }
                    symbols.push(sym.to_string());
                }
                drop(books);
                let mut s = lock(subs);
                for sym in symbols {
                    if op == "subscribe" {
                        s.insert(sym);
                    } else {
                        s.remove(&sym);
                    }
                }
                let ret_msg = match self.category {
                    Category::Spot => op,
                    Category::Linear => "",
                };
                reply(format!(
                    "{{\"success\":true,\"ret_msg\":{},\"conn_id\":{}{req_part},\"op\":{}}}",
                    js(ret_msg),
                    js(conn_id),
                    js(op)
                ))
            }
            _ => reply(format!(
                "{{\"success\":false,\"ret_msg\":{},\"conn_id\":{}{req_part},\"op\":{}}}",
                js(&format!("error:handler not found,op:{op}")),
                js(conn_id),
                js(op)
            )),
        }
    }

    pub fn render(&self, unit: &Unit) -> Vec<Message> {
        let items: Vec<String> = unit
            .recs
            .iter()
            .map(|r| ws_item(r, self.category))
            .collect();
        vec![Message::text(format!(
            "{{\"topic\":{},\"type\":\"snapshot\",\"ts\":{},\"data\":[{}]}}",
            js(&format!("publicTrade.{}", unit.symbol)),
            now_ms(),
            items.join(",")
        ))]
    }
}

fn reply(text: String) -> Reply {
    Reply {
        frames: vec![Message::text(text)],
    }
}

fn side(r: &Rec) -> &'static str {
    if r.t.buyer_is_maker { "Sell" } else { "Buy" }
}

fn ws_item(r: &Rec, cat: Category) -> String {
    let t = &r.t;
    // "L" (tick direction) is documented as a perps/futures-only field.
    let l = match cat {
        Category::Linear => format!(",\"L\":{}", js(r.tick_dir)),
        Category::Spot => String::new(),
    };
    format!(
        "{{\"T\":{},\"s\":{},\"S\":\"{}\",\"v\":{},\"p\":{}{l},\"i\":{},\"BT\":false,\"seq\":{}}}",
        t.time_ms,
        js(&t.symbol),
        side(r),
        js(&t.quantity),
        js(&t.price),
        js(&t.trade_id),
        r.seq
    )
}

type Q = Query<HashMap<String, String>>;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v5/market/time", get(time))
        .route("/v5/market/recent-trade", get(recent_trade))
        .route("/v5/market/instruments-info", get(instruments))
        .with_state(inner)
}

fn envelope(ret_code: i64, ret_msg: &str, result: &str) -> Response {
    json_ok(format!(
        "{{\"retCode\":{ret_code},\"retMsg\":{},\"result\":{result},\"retExtInfo\":{{}},\"time\":{}}}",
        js(ret_msg),
        now_ms()
    ))
}

fn category_of(q: &HashMap<String, String>) -> Result<Category, Response> {
    match q.get("category").map(String::as_str) {
        Some("spot") => Ok(Category::Spot),
        Some("linear") => Ok(Category::Linear),
        _ => Err(envelope(10001, "Illegal category", "{}")),
    }
}

async fn time(State(inner): State<Arc<Inner>>) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Bybit) {
        return r;
    }
    let ms = now_ms();
    envelope(
        0,
        "OK",
        &format!(
            "{{\"timeSecond\":\"{}\",\"timeNano\":\"{}\"}}",
            ms / 1000,
            i128::from(ms) * 1_000_000
        ),
    )
}

async fn recent_trade(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Bybit) {
        return r;
    }
    let cat = match category_of(&q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (default, max) = match cat {
        Category::Spot => (60, 60),
        Category::Linear => (500, 1000),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => default,
        Some(Ok(n)) => n.clamp(1, max),
        Some(Err(_)) => return envelope(10001, "params error: limit invalid", "{}"),
    };
    let books = lock(&inner.venue(VenueKind::Bybit).books);
    let Some(symbol) = q.get("symbol") else {
        return envelope(10001, "params error: symbol is required", "{}");
    };
    let Some(book) = books.get(symbol.as_str()) else {
        return envelope(10001, "params error: symbol invalid", "{}");
    };
    let items: Vec<String> = book
        .history
        .iter()
        .rev()
        .take(limit)
        .map(|r| {
            let t = &r.t;
            format!(
                "{{\"execId\":{},\"symbol\":{},\"price\":{},\"size\":{},\"side\":\"{}\",\"time\":\"{}\",\"isBlockTrade\":false,\"isRPITrade\":false}}",
                js(&t.trade_id),
                js(&t.symbol),
                js(&t.price),
                js(&t.quantity),
                side(r),
                t.time_ms
            )
        })
        .collect();
    let cat_s = match cat {
        Category::Spot => "spot",
        Category::Linear => "linear",
    };
    envelope(
        0,
        "OK",
        &format!(
            "{{\"category\":\"{cat_s}\",\"list\":[{}]}}",
            items.join(",")
        ),
    )
}

fn split_symbol(symbol: &str) -> (String, String) {
    for quote in ["USDT", "USDC", "BTC", "ETH", "EUR"] {
        if let Some(base) = symbol.strip_suffix(quote)
            && !base.is_empty()
        {
            return (base.to_string(), quote.to_string());
        }
    }
    (symbol.to_string(), String::new())
}

async fn instruments(State(inner): State<Arc<Inner>>, Query(q): Q) -> Response {
    if let Some(r) = gate(&inner, VenueKind::Bybit) {
        return r;
    }
    let cat = match category_of(&q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let books = lock(&inner.venue(VenueKind::Bybit).books);
    let mut names: Vec<&String> = books.keys().collect();
    names.sort();
    if let Some(s) = q.get("symbol") {
        names.retain(|n| *n == s);
    }
    let mut items = Vec::new();
    for n in names {
        let b = &books[n];
        let (base, quote) = split_symbol(&b.symbol);
        let item = match cat {
            Category::Spot => format!(
                "{{\"symbol\":{},\"baseCoin\":{},\"quoteCoin\":{},\"innovation\":\"0\",\"status\":\"Trading\",\"marginTrading\":\"none\",\"stTag\":\"0\",\"lotSizeFilter\":{{\"basePrecision\":{},\"quotePrecision\":\"0.00000001\",\"minOrderQty\":{},\"maxOrderQty\":\"1000000\",\"minOrderAmt\":\"1\",\"maxOrderAmt\":\"10000000\"}},\"priceFilter\":{{\"tickSize\":{}}},\"riskParameters\":{{\"priceLimitRatioX\":\"0.01\",\"priceLimitRatioY\":\"0.02\"}}}}",
                js(&b.symbol),
                js(&base),
                js(&quote),
                js(&b.step),
                js(&b.step),
                js(&b.tick)
            ),
            Category::Linear => format!(
                "{{\"symbol\":{},\"contractType\":\"LinearPerpetual\",\"status\":\"Trading\",\"baseCoin\":{},\"quoteCoin\":{},\"launchTime\":\"1585526400000\",\"deliveryTime\":\"0\",\"deliveryFeeRate\":\"\",\"priceScale\":\"{}\",\"leverageFilter\":{{\"minLeverage\":\"1\",\"maxLeverage\":\"100.00\",\"leverageStep\":\"0.01\"}},\"priceFilter\":{{\"minPrice\":{},\"maxPrice\":\"1999999.80\",\"tickSize\":{}}},\"lotSizeFilter\":{{\"maxOrderQty\":\"1190.000\",\"minOrderQty\":{},\"qtyStep\":{},\"postOnlyMaxOrderQty\":\"1190.000\",\"maxMktOrderQty\":\"500.000\",\"minNotionalValue\":\"5\"}},\"unifiedMarginTrade\":true,\"fundingInterval\":480,\"settleCoin\":{},\"copyTrading\":\"both\",\"upperFundingRate\":\"0.00375\",\"lowerFundingRate\":\"-0.00375\",\"isPreListing\":false}}",
                js(&b.symbol),
                js(&base),
                js(&quote),
                b.tick.split_once('.').map(|(_, f)| f.len()).unwrap_or(0),
                js(&b.tick),
                js(&b.tick),
                js(&b.step),
                js(&b.step),
                js(&quote)
            ),
        };
        items.push(item);
    }
    let cat_s = match cat {
        Category::Spot => "spot",
        Category::Linear => "linear",
    };
    envelope(
        0,
        "OK",
        &format!(
            "{{\"category\":\"{cat_s}\",\"list\":[{}],\"nextPageCursor\":\"\"}}",
            items.join(",")
        ),
    )
}
