//! Every metric tickmesh exports: name, kind, labels and meaning. The names
//! are constants so a typo is a compile error, and this list is what the
//! endpoint's `# HELP` lines and the README's table say.

use metrics::Unit;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names, comma-separated ("" for none).
    pub labels: &'static str,
    pub help: &'static str,
}

// gRPC server (every service, health and reflection included).
pub const RPC_REQUESTS: &str = "rpc_server_requests_total";
pub const RPC_DURATION: &str = "rpc_server_duration_seconds";
pub const RPC_STREAM_DURATION: &str = "rpc_server_stream_duration_seconds";
pub const RPC_ACTIVE_STREAMS: &str = "rpc_server_active_streams";
// Redis.
pub const REDIS_DURATION: &str = "redis_command_duration_seconds";
pub const REDIS_ERRORS: &str = "redis_command_errors_total";
// Live streams (fan-out).
pub const STREAM_SUBSCRIBERS: &str = "stream_subscribers";
pub const STREAM_LAGGED: &str = "stream_lagged_total";
pub const STREAM_CAUGHT_UP: &str = "stream_caught_up_total";
pub const STREAM_FOLLOWED_TOPICS: &str = "stream_followed_topics";
// MarketFeed.
pub const TRADES: &str = "marketfeed_trades_total";
// Candles and history.
pub const CANDLES_TRADES_APPLIED: &str = "candles_trades_applied_total";
pub const CANDLES_INGEST_TO_CANDLE: &str = "candles_ingest_to_candle_seconds";
pub const CANDLES_LAG_TRADES: &str = "candles_aggregation_lag_trades";
pub const CANDLES_LAG_SECONDS: &str = "candles_aggregation_lag_seconds";
pub const CANDLES_UNFLUSHED: &str = "candles_unflushed_candles";
pub const CANDLES_LAST_FLUSH_AGE: &str = "candles_last_flush_age_seconds";
pub const FLUSH_BACKLOG: &str = "candles_flush_backlog_candles";
pub const FLUSH_LAST_SUCCESS: &str = "candles_flush_last_success_timestamp_seconds";
pub const FLUSHED: &str = "candles_flushed_total";
pub const FLUSH_FAILURES: &str = "candles_flush_failures_total";
pub const HISTORY_DURATION: &str = "history_store_duration_seconds";
pub const HISTORY_ERRORS: &str = "history_store_errors_total";
// Ranking.
pub const RANKING_EVENTS: &str = "ranking_events_total";
// Coupons.
pub const COUPON_ISSUE: &str = "coupon_issue_total";
pub const COUPON_PERSISTED: &str = "coupon_persisted_total";
pub const COUPON_PERSIST_BACKLOG: &str = "coupon_persist_backlog_entries";
// Queue.
pub const QUEUE_ROOMS: &str = "queue_rooms";
pub const QUEUE_WAITING: &str = "queue_waiting_users";
pub const QUEUE_ACTIVE: &str = "queue_active_users";
pub const QUEUE_ADMITTED: &str = "queue_admitted_total";
// Venue feeds.
pub const FEED_SYMBOLS: &str = "feed_symbols";
pub const FEED_RECEIVED: &str = "feed_trades_received_total";
pub const FEED_BACKFILLED: &str = "feed_trades_backfilled_total";
pub const FEED_UNRECOVERABLE: &str = "feed_trades_unrecoverable_total";
pub const FEED_RECONNECTS: &str = "feed_reconnects_total";
// Quote pollers.
pub const POLLER_REQUESTS: &str = "poller_requests_total";
pub const POLLER_RATE_LIMITED: &str = "poller_rate_limited_total";
pub const POLLER_ERRORS: &str = "poller_errors_total";
pub const POLLER_QUOTES: &str = "poller_quotes_written_total";
pub const POLLER_OPEN_SYMBOLS: &str = "poller_open_symbols";
// The process.
pub const BUILD_INFO: &str = "tickmesh_build_info";

const RPC_LABELS: &str = "rpc_system, rpc_service, rpc_method, rpc_grpc_status_code";

pub const CATALOGUE: &[Metric] = &[
    Metric {
        name: RPC_REQUESTS,
        kind: Kind::Counter,
        labels: RPC_LABELS,
        help: "gRPC calls finished, by service, method and status code (OTel RPC conventions; rpc_system is always grpc).",
    },
    Metric {
        name: RPC_DURATION,
        kind: Kind::Histogram,
        labels: RPC_LABELS,
        help: "Duration of unary gRPC calls, from the request's arrival to the end of the response.",
    },
    Metric {
        name: RPC_STREAM_DURATION,
        kind: Kind::Histogram,
        labels: RPC_LABELS,
        help: "Lifetime of streaming gRPC calls (client, server or bidirectional streams), from start to their status.",
    },
    Metric {
        name: RPC_ACTIVE_STREAMS,
        kind: Kind::Gauge,
        labels: "rpc_system, rpc_service, rpc_method",
        help: "Streaming gRPC calls open now, per method (each stream kind).",
    },
    Metric {
        name: REDIS_DURATION,
        kind: Kind::Histogram,
        labels: "command",
        help: "Redis round trips as the mesh sees them, by command name (PIPELINE and MULTI for batches); blocking reads and WAIT include their wait.",
    },
    Metric {
        name: REDIS_ERRORS,
        kind: Kind::Counter,
        labels: "command, kind",
        help: "Redis commands that failed, by command and kind (io, timeout, server, other).",
    },
    Metric {
        name: STREAM_SUBSCRIBERS,
        kind: Kind::Gauge,
        labels: "stream",
        help: "Live subscriptions served from the fan-out now (stream: trades, candles).",
    },
    Metric {
        name: STREAM_LAGGED,
        kind: Kind::Counter,
        labels: "stream",
        help: "Times a subscriber fell behind the live buffer and had to be caught up from the Redis log.",
    },
    Metric {
        name: STREAM_CAUGHT_UP,
        kind: Kind::Counter,
        labels: "stream",
        help: "Lagged subscribers caught up from the Redis log and back on live updates.",
    },
    Metric {
        name: STREAM_FOLLOWED_TOPICS,
        kind: Kind::Gauge,
        labels: "stream",
        help: "Symbols this instance's fan-out tails in Redis for its local subscribers.",
    },
    Metric {
        name: TRADES,
        kind: Kind::Counter,
        labels: "outcome",
        help: "Trades published to MarketFeed, by outcome: accepted, duplicate (already in the tick log), rejected (invalid or unknown symbol).",
    },
    Metric {
        name: CANDLES_TRADES_APPLIED,
        kind: Kind::Counter,
        labels: "",
        help: "Trades this instance's candle aggregator folded into candles.",
    },
    Metric {
        name: CANDLES_INGEST_TO_CANDLE,
        kind: Kind::Histogram,
        labels: "",
        help: "From the ingest of the oldest trade of a batch to its candles written in Redis, per batch the aggregator applies.",
    },
    Metric {
        name: CANDLES_LAG_TRADES,
        kind: Kind::Gauge,
        labels: "symbol",
        help: "Trades in the symbol's tick log not yet applied to its candles (tick log sequence minus applied sequence); symbols of metrics.symbols only.",
    },
    Metric {
        name: CANDLES_LAG_SECONDS,
        kind: Kind::Gauge,
        labels: "symbol",
        help: "Age of the symbol's oldest trade not yet applied to its candles (0: none pending); symbols of metrics.symbols only.",
    },
    Metric {
        name: CANDLES_UNFLUSHED,
        kind: Kind::Gauge,
        labels: "symbol",
        help: "Closed candles of the symbol waiting for the history store; symbols of metrics.symbols only.",
    },
    Metric {
        name: CANDLES_LAST_FLUSH_AGE,
        kind: Kind::Gauge,
        labels: "symbol",
        help: "Seconds since the symbol's candles were last flushed to the history store (absent before the first); symbols of metrics.symbols only.",
    },
    Metric {
        name: FLUSH_BACKLOG,
        kind: Kind::Gauge,
        labels: "",
        help: "Closed candles waiting for the history store, over the symbols this instance's flusher owns.",
    },
    Metric {
        name: FLUSH_LAST_SUCCESS,
        kind: Kind::Gauge,
        labels: "",
        help: "Unix time of this instance's last successful flush to the history store (age: time() minus it).",
    },
    Metric {
        name: FLUSHED,
        kind: Kind::Counter,
        labels: "",
        help: "Closed candles this instance moved to the history store.",
    },
    Metric {
        name: FLUSH_FAILURES,
        kind: Kind::Counter,
        labels: "",
        help: "Flush passes that failed (the candles stay in Redis and are retried with backoff).",
    },
    Metric {
        name: HISTORY_DURATION,
        kind: Kind::Histogram,
        labels: "store, op",
        help: "History store calls by store (embedded, scylla) and operation (upsert, range).",
    },
    Metric {
        name: HISTORY_ERRORS,
        kind: Kind::Counter,
        labels: "store, op",
        help: "History store calls that failed, by store and operation.",
    },
    Metric {
        name: RANKING_EVENTS,
        kind: Kind::Counter,
        labels: "outcome",
        help: "Ranking events received, by outcome: recorded, duplicate (event id seen before), refused (score out of range).",
    },
    Metric {
        name: COUPON_ISSUE,
        kind: Kind::Counter,
        labels: "outcome",
        help: "Coupon Issue answers by outcome: issued, already_issued, sold_out, not_started, ended, request_id_reused.",
    },
    Metric {
        name: COUPON_PERSISTED,
        kind: Kind::Counter,
        labels: "",
        help: "Issuance log entries this instance's persist worker wrote to the durable store and acknowledged.",
    },
    Metric {
        name: COUPON_PERSIST_BACKLOG,
        kind: Kind::Gauge,
        labels: "",
        help: "Issuances in the campaigns' logs not yet durable (undelivered plus pending in the persist group), over the campaigns known here; a mesh-wide view, the same on every instance.",
    },
    Metric {
        name: QUEUE_ROOMS,
        kind: Kind::Gauge,
        labels: "",
        help: "Waiting rooms.",
    },
    Metric {
        name: QUEUE_WAITING,
        kind: Kind::Gauge,
        labels: "",
        help: "Users waiting in line, over every room (pre-queue included); a mesh-wide view.",
    },
    Metric {
        name: QUEUE_ACTIVE,
        kind: Kind::Gauge,
        labels: "",
        help: "Users admitted and within their session, over every room; a mesh-wide view.",
    },
    Metric {
        name: QUEUE_ADMITTED,
        kind: Kind::Counter,
        labels: "",
        help: "Users admitted by this instance's admission passes.",
    },
    Metric {
        name: FEED_SYMBOLS,
        kind: Kind::Gauge,
        labels: "feed, venue, state",
        help: "Venue feed symbols by connection state on this instance (not_owned, reconnecting, backfilling, live).",
    },
    Metric {
        name: FEED_RECEIVED,
        kind: Kind::Counter,
        labels: "feed, venue",
        help: "Trades this instance's venue connections received.",
    },
    Metric {
        name: FEED_BACKFILLED,
        kind: Kind::Counter,
        labels: "feed, venue",
        help: "Trades fetched from the venue's REST history after reconnects and id jumps.",
    },
    Metric {
        name: FEED_UNRECOVERABLE,
        kind: Kind::Counter,
        labels: "feed, venue",
        help: "Trades known to be missing that no venue endpoint could give.",
    },
    Metric {
        name: FEED_RECONNECTS,
        kind: Kind::Counter,
        labels: "feed, venue",
        help: "Venue connection reconnects.",
    },
    Metric {
        name: POLLER_REQUESTS,
        kind: Kind::Counter,
        labels: "poller",
        help: "Upstream quote requests this instance's poller sent.",
    },
    Metric {
        name: POLLER_RATE_LIMITED,
        kind: Kind::Counter,
        labels: "poller",
        help: "Of those, answered with a rate-limit refusal.",
    },
    Metric {
        name: POLLER_ERRORS,
        kind: Kind::Counter,
        labels: "poller",
        help: "Poller failures other than rate limits (transport, refusals, token expiry, Redis).",
    },
    Metric {
        name: POLLER_QUOTES,
        kind: Kind::Counter,
        labels: "poller",
        help: "Quotes the poller stored as the newest of their symbol.",
    },
    Metric {
        name: POLLER_OPEN_SYMBOLS,
        kind: Kind::Gauge,
        labels: "poller",
        help: "The poller's codes whose market is open now.",
    },
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: "version",
        help: "Always 1; the version label says which tickmesh runs.",
    },
];

/// Gives every metric its `# HELP` text (and its unit) in the recorder.
pub(crate) fn describe() {
    for m in CATALOGUE {
        let unit = if m.name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else {
            None
        };
        match (m.kind, unit) {
            (Kind::Counter, _) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(m.name, unit, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_style_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                _ => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
            for label in m.labels.split(", ").filter(|l| !l.is_empty()) {
                assert!(
                    !label.contains("user"),
                    "{} has a per-user label {label}",
                    m.name
                );
            }
        }
    }

    /// The README's "Metrics" section names every metric.
    #[test]
    fn the_readme_lists_every_metric() {
        let readme = include_str!("../../../../README.md");
        let section = readme
            .split("\n## Metrics")
            .nth(1)
            .expect("README has a Metrics section");
        let section = section.split("\n## ").next().unwrap_or(section);
        for m in CATALOGUE {
            assert!(
                section.contains(&format!("`{}`", m.name)),
                "README's Metrics section does not list {}",
                m.name
            );
        }
    }
}
