//! Quotes that were polled rather than traded: a request/response upstream (a broker's
//! current-price API) says what a symbol costs now, with no trade id and no sequence. They land
//! in the same quote hash that [`crate::quotes`] reads for GetQuotes, through one script per
//! symbol that replaces the quote only when the polled time is newer than the stored one, so a
//! slow answer never overwrites a fresher trade or poll.
//!
//! A polled quote may carry the upstream's cumulative volume of the day. It is kept in the
//! hash (field `cv`, which quote readers ignore) and the script answers the value it replaced,
//! atomically: of several pollers racing on one symbol exactly one sees each growth, so a trade
//! made from the growth is counted once.

use std::sync::LazyLock;

use redis::Value;
use tickmesh_core::decimal::{format_units, parse_units};
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::ingest::padded_time;
use crate::instruments::InstrumentBook;
use crate::keys::Keys;
use crate::model::Instrument;

/// A polled quote, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolledQuote {
    pub symbol: String,
    /// Current price, exact decimal text.
    pub price: String,
    /// The last trade's volume when the upstream reports one, else "0".
    pub quantity: String,
    /// When the upstream answered (nanoseconds since the epoch).
    pub time_ns: i64,
    /// The upstream's cumulative volume of the day, exact decimal text, if it reports one.
    pub cumulative_volume: Option<String>,
}

/// What happened to one polled quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutQuoteOutcome {
    /// Stored as the symbol's quote.
    Written {
        /// How much the cumulative volume grew since the value it replaced, canonical at the
        /// instrument's quantity scale. When it went down the count restarted (a new session),
        /// so the growth is the new value. None when there was no earlier value, this quote
        /// carries none, or it did not grow.
        volume_growth: Option<String>,
    },
    /// The stored quote is as new or newer; nothing changed.
    NotNewer,
    /// Refused: which field and why.
    Rejected { field: &'static str, reason: String },
}

/// KEYS: quote. ARGV: price, quantity, time (20-digit padded ns), ingest time, cumulative
/// volume ("" for none). Returns {1, replaced cumulative volume or ""} when written, {0, ""}
/// when the stored quote is as new or newer. Times compare as padded text (Lua numbers are
/// doubles and would round nanoseconds).
const PUT_LUA: &str = r#"
local current = redis.call('HGET', KEYS[1], 'tk')
if current and current >= ARGV[3] then
  return {0, ''}
end
local previous = redis.call('HGET', KEYS[1], 'cv') or ''
redis.call('HSET', KEYS[1], 'p', ARGV[1], 'q', ARGV[2], 'tk', ARGV[3], 'seq', '0',
  'it', ARGV[4], 't', '', 's', '0')
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'cv', ARGV[5])
end
return {1, previous}
"#;

static PUT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUT_LUA));

/// A quote that passed validation, canonical at its instrument's scales.
struct ValidQuote {
    index: usize,
    price: String,
    quantity: String,
    time_ns: i64,
    cumulative_volume: Option<String>,
    quantity_scale: u32,
}

fn validate(
    index: usize,
    q: &PolledQuote,
    instrument: Option<&Instrument>,
    now_ns: i64,
    max_future_skew_ns: i64,
) -> std::result::Result<ValidQuote, PutQuoteOutcome> {
    let reject = |field, reason: String| PutQuoteOutcome::Rejected { field, reason };
    let instrument = instrument.ok_or_else(|| {
        reject(
            "symbol",
            format!(
                "{:?} is not a registered instrument (register it with UpsertInstrument)",
                q.symbol
            ),
        )
    })?;
    let price = parse_units(&q.price, instrument.price_scale)
        .map_err(|e| reject("price", format!("{:?} {e}", q.price)))?;
    if price <= 0 {
        return Err(reject("price", format!("{:?} must be positive", q.price)));
    }
    let quantity = parse_units(&q.quantity, instrument.quantity_scale)
        .map_err(|e| reject("quantity", format!("{:?} {e}", q.quantity)))?;
    let cumulative_volume = match &q.cumulative_volume {
        None => None,
        Some(text) => Some(
            parse_units(text, instrument.quantity_scale)
                .map_err(|e| reject("cumulative_volume", format!("{text:?} {e}")))?,
        ),
    };
    if q.time_ns < 0 {
        return Err(reject(
            "time",
            "must not be before 1970-01-01T00:00:00Z".into(),
        ));
    }
    if q.time_ns > now_ns.saturating_add(max_future_skew_ns) {
        return Err(reject(
            "time",
            format!(
                "is {} s in the future (more than the allowed {} s)",
                (q.time_ns - now_ns) / 1_000_000_000,
                max_future_skew_ns / 1_000_000_000
            ),
        ));
    }
    let scale = instrument.quantity_scale;
    Ok(ValidQuote {
        index,
        price: format_units(i128::from(price), instrument.price_scale),
        quantity: format_units(i128::from(quantity), scale),
        time_ns: q.time_ns,
        cumulative_volume: cumulative_volume.map(|v| format_units(i128::from(v), scale)),
        quantity_scale: scale,
    })
}

/// The growth from `previous` to `current` (canonical texts at `scale`).
fn growth(previous: &str, current: Option<&str>, scale: u32) -> Option<String> {
    let current = parse_units(current?, scale).ok()?;
    let previous = parse_units(previous, scale).ok()?;
    let grown = if current >= previous {
        current - previous
    } else {
        current
    };
    (grown > 0).then(|| format_units(i128::from(grown), scale))
}

/// Validates `quotes` against their instruments and writes the valid ones in one pipelined
/// round trip; answers one outcome per quote, in order.
pub(crate) async fn put(
    redis: &RedisHandle,
    keys: &Keys,
    instruments: &InstrumentBook,
    quotes: Vec<PolledQuote>,
    now_ns: i64,
    max_future_skew_ns: i64,
) -> Result<Vec<PutQuoteOutcome>> {
    let mut symbols: Vec<&str> = quotes.iter().map(|q| q.symbol.as_str()).collect();
    symbols.sort_unstable();
    symbols.dedup();
    let known = instruments.resolve(&symbols, now_ns).await?;
    let mut outcomes = vec![PutQuoteOutcome::NotNewer; quotes.len()];
    let mut valid = Vec::with_capacity(quotes.len());
    for (i, q) in quotes.iter().enumerate() {
        match validate(
            i,
            q,
            known.get(&q.symbol).map(|i| i.as_ref()),
            now_ns,
            max_future_skew_ns,
        ) {
            Ok(v) => valid.push(v),
            Err(rejected) => outcomes[i] = rejected,
        }
    }
    if valid.is_empty() {
        return Ok(outcomes);
    }
    let ingest = now_ns.to_string();
    let mut pipe = redis::pipe();
    for v in &valid {
        pipe.cmd("EVALSHA")
            .arg(PUT_SCRIPT.get_hash())
            .arg(1)
            .arg(keys.quote(&quotes[v.index].symbol))
            .arg(&v.price)
            .arg(&v.quantity)
            .arg(padded_time(v.time_ns))
            .arg(&ingest)
            .arg(v.cumulative_volume.as_deref().unwrap_or(""));
    }
    let mut conn = redis.conn();
    let replies: Vec<Value> = match pipe.query_async(&mut conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            // Redis lost its script cache (a restart): nothing ran; load and send again.
            PUT_SCRIPT
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(unavailable)?;
            pipe.query_async(&mut conn).await.map_err(unavailable)?
        }
        other => other.map_err(unavailable)?,
    };
    if replies.len() != valid.len() {
        return Err(Error::Internal(format!(
            "quote script answered {} replies for {} quotes",
            replies.len(),
            valid.len()
        )));
    }
    for (v, reply) in valid.iter().zip(replies) {
        let (written, previous): (i64, String) = redis::from_redis_value(reply)
            .map_err(|e| Error::Internal(format!("quote script reply: {e}")))?;
        outcomes[v.index] = if written == 1 {
            PutQuoteOutcome::Written {
                volume_growth: growth(&previous, v.cumulative_volume.as_deref(), v.quantity_scale),
            }
        } else {
            PutQuoteOutcome::NotNewer
        };
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tickmesh_runtime::config::{MarketFeedConfig, RedisConfig};
    use tickmesh_runtime::proto_time::now_nanos;
    use tickmesh_runtime::redis_server::RedisServer;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::MarketFeed;
    use crate::model::RawTrade;

    async fn feed(server: &RedisServer) -> std::sync::Arc<MarketFeed> {
        let redis = RedisHandle::new(&RedisConfig {
            url: server.url(),
            ..Default::default()
        })
        .unwrap();
        let feed = MarketFeed::new(MarketFeedConfig::default(), redis, CancellationToken::new());
        feed.upsert_instrument(Instrument {
            symbol: "005930".into(),
            venue: "krx".into(),
            price_scale: 0,
            quantity_scale: 0,
            time_zone: "Asia/Seoul".into(),
            sessions: vec![],
            update_time_ns: 0,
        })
        .await
        .unwrap();
        feed
    }

    fn polled(price: &str, time_ns: i64, cv: Option<&str>) -> PolledQuote {
        PolledQuote {
            symbol: "005930".into(),
            price: price.into(),
            quantity: "0".into(),
            time_ns,
            cumulative_volume: cv.map(str::to_string),
        }
    }

    #[test]
    fn growth_restarts_with_a_new_session() {
        assert_eq!(growth("100", Some("130"), 0), Some("30".into()));
        assert_eq!(growth("100", Some("100"), 0), None);
        assert_eq!(growth("100", Some("7"), 0), Some("7".into()));
        assert_eq!(growth("", Some("7"), 0), None);
        assert_eq!(growth("1.50", Some("2.25"), 2), Some("0.75".into()));
    }

    #[tokio::test]
    async fn only_a_newer_polled_quote_replaces_the_stored_one() {
        let server = RedisServer::start_ephemeral().await.unwrap();
        let feed = feed(&server).await;
        let t = now_nanos() - 10_000_000_000;
        let out = feed
            .put_quotes(vec![polled("71500", t, Some("1000"))])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![PutQuoteOutcome::Written {
                volume_growth: None
            }]
        );
        // Older and equal times change nothing; a newer one reports the volume growth.
        let out = feed
            .put_quotes(vec![
                polled("70000", t - 1, Some("900")),
                polled("70000", t, Some("900")),
                polled("71600", t + 1, Some("1250")),
            ])
            .await
            .unwrap();
        assert_eq!(out[0], PutQuoteOutcome::NotNewer);
        assert_eq!(out[1], PutQuoteOutcome::NotNewer);
        assert_eq!(
            out[2],
            PutQuoteOutcome::Written {
                volume_growth: Some("250".into())
            }
        );
        let read = feed
            .quotes(vec!["005930".into()], Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        let q = &read.quotes[0].quote;
        assert_eq!(
            (q.price.as_str(), q.quantity.as_str(), q.time_ns, q.sequence),
            ("71600", "0", t + 1, 0)
        );
        assert_eq!(q.trade_id, "");
    }

    #[tokio::test]
    async fn a_traded_quote_is_not_overwritten_by_an_older_poll_and_bad_quotes_are_refused() {
        let server = RedisServer::start_ephemeral().await.unwrap();
        let feed = feed(&server).await;
        let t = now_nanos() - 10_000_000_000;
        feed.publish(
            vec![RawTrade {
                symbol: "005930".into(),
                trade_id: "x1".into(),
                price: "72000".into(),
                quantity: "3".into(),
                time_ns: Ok(t),
                side: 1,
            }],
            false,
        )
        .await
        .unwrap();
        let mut unknown = polled("1", t, None);
        unknown.symbol = "000660".into();
        let out = feed
            .put_quotes(vec![
                polled("71000", t - 5, None),
                polled("71000.5", t + 5, None),
                polled("0", t + 5, None),
                polled("71000", now_nanos() + 3_600_000_000_000, None),
                unknown,
            ])
            .await
            .unwrap();
        assert_eq!(out[0], PutQuoteOutcome::NotNewer);
        let fields: Vec<&str> = out[1..]
            .iter()
            .map(|o| match o {
                PutQuoteOutcome::Rejected { field, .. } => *field,
                other => panic!("expected a rejection, got {other:?}"),
            })
            .collect();
        assert_eq!(fields, ["price", "price", "time", "symbol"]);
        let read = feed
            .quotes(vec!["005930".into()], Some(Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(read.quotes[0].quote.price, "72000");
        assert_eq!(read.quotes[0].quote.trade_id, "x1");
    }
}
