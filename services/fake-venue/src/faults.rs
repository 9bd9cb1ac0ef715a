//! Scripted faults: duplicated / reordered live messages and REST rate limiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::{Inner, Unit, VenueKind, lock};

#[derive(Default)]
pub(crate) struct RateState {
    pub remaining: usize,
    last_limited: Option<Instant>,
    ignored: u32,
}

#[derive(Default)]
pub(crate) struct Faults {
    pub duplicate: AtomicUsize,
    pub reorder: AtomicUsize,
    held: Mutex<HashMap<String, Arc<Unit>>>,
    pub rate: Mutex<RateState>,
}

fn take_one(a: &AtomicUsize) -> bool {
    a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// Applies the reorder and duplicate faults to one live unit; returns what to send, in order.
    pub fn shape(&self, unit: Arc<Unit>) -> Vec<Arc<Unit>> {
        let mut out = Vec::new();
        {
            let mut held = lock(&self.held);
            if let Some(prev) = held.remove(&unit.symbol) {
                // second of a swapped pair: this one first, then the held one
                let _ = take_one(&self.reorder);
                out.push(unit);
                out.push(prev);
            } else if take_one(&self.reorder) {
                held.insert(unit.symbol.clone(), unit);
                return Vec::new();
            } else {
                out.push(unit);
            }
        }
        let mut shaped = Vec::with_capacity(out.len() * 2);
        for u in out {
            if take_one(&self.duplicate) {
                shaped.push(u.clone());
            }
            shaped.push(u);
        }
        shaped
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn json_ok(body: String) -> Response {
    json_response(StatusCode::OK, body)
}

pub(crate) fn json_status(status: StatusCode, body: String) -> Response {
    json_response(status, body)
}

/// Counts the request and answers it with the venue's rate-limit response if one is scripted.
pub(crate) fn gate(inner: &Inner, v: VenueKind) -> Option<Response> {
    let st = inner.venue(v);
    st.rest_requests.fetch_add(1, Ordering::SeqCst);
    let mut rate = lock(&st.faults.rate);
    if rate.remaining == 0 {
        rate.ignored = 0;
        rate.last_limited = None;
        return None;
    }
    rate.remaining -= 1;
    let now = Instant::now();
    match v {
        VenueKind::Binance => {
            // Retry-After: 1. A request inside that second ignores the previous 429; after three
            // ignored 429s Binance bans the IP with 418.
            if let Some(last) = rate.last_limited
                && now.duration_since(last) < Duration::from_secs(1)
            {
                rate.ignored += 1;
            }
            rate.last_limited = Some(now);
            let (status, retry, body) = if rate.ignored >= 3 {
                (
                    StatusCode::IM_A_TEAPOT,
                    "2",
                    format!(
                        "{{\"code\":-1003,\"msg\":\"Way too many requests; IP(127.0.0.1) banned until {}. Please use the websocket for live updates to avoid bans.\"}}",
                        crate::now_ms() + 2000
                    ),
                )
            } else {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "1",
                    "{\"code\":-1003,\"msg\":\"Too much request weight used; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.\"}".to_string(),
                )
            };
            let mut r = json_status(status, body);
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static(retry));
            Some(r)
        }
        VenueKind::Bybit => {
            // Bybit answers an exceeded limit with HTTP 200 and retCode 10006.
            let reset = crate::now_ms() + 1000;
            let mut r = json_ok(format!(
                "{{\"retCode\":10006,\"retMsg\":\"Too many visits!\",\"result\":{{}},\"retExtInfo\":{{}},\"time\":{}}}",
                crate::now_ms()
            ));
            let h = r.headers_mut();
            h.insert("x-bapi-limit", HeaderValue::from_static("10"));
            h.insert("x-bapi-limit-status", HeaderValue::from_static("0"));
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                h.insert("x-bapi-limit-reset-timestamp", v);
            }
            Some(r)
        }
        VenueKind::Upbit => {
            let mut r = json_status(
                StatusCode::TOO_MANY_REQUESTS,
                "{\"error\":{\"name\":\"too_many_requests\",\"message\":\"Too many API requests.\"}}"
                    .to_string(),
            );
            r.headers_mut().insert(
                "remaining-req",
                HeaderValue::from_static("group=trades; min=0; sec=0"),
            );
            Some(r)
        }
    }
}
