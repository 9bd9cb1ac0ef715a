//! The CandleQuery domain facade; [`crate::grpc`] is the thin adapter.

use std::sync::Arc;

use tickmesh_calendar::Interval;
use tickmesh_core::ids::check_symbol;
use tickmesh_core::{Error, FieldViolation, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::CandlesConfig;
use tickmesh_runtime::interest::{InterestBoard, InterestGuard};
use tickmesh_runtime::redis_conn::unavailable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aggregator::Aggregator;
use crate::book::BookConfig;
use crate::candle::Candle;
use crate::directory::{Directory, feed_client};
use crate::indicators::SeriesSpec;
use crate::indicators::latest::LatestStore;
use crate::indicators::live::LiveIndicators;
use crate::indicators::query::{IndicatorsPage, IndicatorsQuery, IndicatorsService};
use crate::indicators::series::Series;
use crate::keys::CandleKeys;
use crate::lease::Leases;
use crate::query::{CandlesQuery, QueryService};
use crate::store::{CandleStore, Retention};
use crate::subscribe::{Message, Subscriptions, UpdateCodec, UpdateHub, parse_cursor};

/// Most symbols per GetAggregationStatus call.
pub const MAX_STATUS_SYMBOLS: usize = 1000;

pub struct CandleService {
    pub store: Arc<CandleStore>,
    pub directory: Arc<Directory>,
    query: Arc<QueryService>,
    subscriptions: Arc<Subscriptions>,
    indicators: Arc<IndicatorsService>,
    live_indicators: Arc<LiveIndicators>,
    config: CandlesConfig,
    history: Option<History>,
    /// Symbols with an open SubscribeCandles here, told to the mesh (the
    /// quote pollers refresh them first).
    interest: Arc<InterestBoard>,
    shutdown: CancellationToken,
}

/// The long-term store and how candles are moved to it.
#[derive(Clone)]
pub struct History {
    pub store: Arc<dyn tickmesh_history::CandleStore>,
    pub flush: crate::flusher::FlushConfig,
}

/// Aggregation progress of one symbol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AggregationStatus {
    pub symbol: String,
    pub applied_sequence: u64,
    pub owner: String,
    pub late_corrections: u64,
    pub late_dropped: u64,
    pub missed_trades: u64,
    pub unflushed_candles: u64,
    /// 0 when never flushed.
    pub last_flush_ns: i64,
    pub tick_log_sequence: u64,
    /// Ingest time of the oldest trade not yet applied (0: none pending).
    pub oldest_pending_ingest_ns: i64,
    pub verified_candles: u64,
    pub verify_mismatches: u64,
    pub verify_repairs: u64,
    /// 0 when never verified.
    pub last_verify_ns: i64,
}

impl AggregationStatus {
    /// Trades in the tick log not yet in the candles.
    pub fn pending_trades(&self) -> u64 {
        self.tick_log_sequence.saturating_sub(self.applied_sequence)
    }
}

impl CandleService {
    /// `marketfeed_endpoint`: where MarketFeedService answers.
    /// `history`: the long-term store, when there is one (then closed candles
    /// are queued for it, and the flusher, not the aggregator, trims Redis).
    pub fn new(
        config: CandlesConfig,
        redis: RedisHandle,
        marketfeed_endpoint: &str,
        history: Option<History>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>> {
        let has_history = history.is_some();
        let keys = CandleKeys::new(redis.prefix());
        let store = Arc::new(CandleStore::new(
            redis.clone(),
            keys.clone(),
            Retention {
                updates_max_len: config.updates_max_len,
                candles_per_interval: if has_history {
                    0
                } else {
                    config.candles_per_interval
                },
                flush_closed: has_history,
            },
        ));
        let directory = Arc::new(Directory::new(feed_client(marketfeed_endpoint)?));
        let interest = InterestBoard::start(redis.clone(), shutdown.clone());
        let hub = UpdateHub::new(
            redis,
            UpdateCodec { keys },
            config.live_buffer,
            shutdown.clone(),
        );
        let query = Arc::new(QueryService {
            store: store.clone(),
            directory: directory.clone(),
            history: history.as_ref().map(|h| h.store.clone()),
        });
        let subscriptions = Arc::new(Subscriptions {
            store: store.clone(),
            hub,
            query: query.clone(),
            late_window_ns: nanos(config.late_window),
            lag_recoveries: Default::default(),
        });
        let series = Arc::new(Series {
            store: store.clone(),
            query: query.clone(),
            late_window_ns: nanos(config.late_window),
        });
        let latest = Arc::new(LatestStore::default());
        let indicators = Arc::new(IndicatorsService {
            series: series.clone(),
            latest: latest.clone(),
            directory: directory.clone(),
        });
        let live_indicators = Arc::new(LiveIndicators::new(series, latest));
        Ok(Arc::new(Self {
            query,
            indicators,
            live_indicators,
            store,
            directory,
            subscriptions,
            config,
            history,
            interest,
            shutdown,
        }))
    }

    /// A client follows `symbol`'s candles until the guard is dropped.
    pub fn follow(&self, symbol: &str) -> InterestGuard {
        self.interest.hold(symbol)
    }

    /// Symbols this instance follows for live subscriptions.
    pub fn live_symbols(&self) -> usize {
        self.subscriptions.hub.followed()
    }

    /// Times a subscriber fell behind the live buffer and was served from the updates log.
    pub fn lag_recoveries(&self) -> u64 {
        self.subscriptions
            .lag_recoveries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts this instance's aggregator (it shares symbols with others) and,
    /// with a history store, the flusher beside it.
    pub fn spawn_aggregator(&self, instance: String) -> tokio::task::JoinHandle<()> {
        let owned_view = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        if let Some(history) = &self.history {
            let flusher = crate::flusher::Flusher {
                redis: self.store.clone(),
                history: history.store.clone(),
                owned: owned_view.clone(),
                config: history.flush,
                shutdown: self.shutdown.clone(),
            };
            tokio::spawn(flusher.run());
        }
        if !self.config.verify_interval.is_zero() {
            // The self-check of the owned symbols' candles (crate::verify_task).
            let history = self.history.as_ref().map(|h| h.store.clone());
            let task = crate::verify_task::VerifyTask {
                verifier: crate::verify::Verifier {
                    store: self.store.clone(),
                    flush_repairs: history.is_some(),
                    history,
                    late_window_ns: nanos(self.config.late_window),
                    updates_max_len: self.config.updates_max_len,
                },
                directory: self.directory.clone(),
                owned: owned_view.clone(),
                every: self.config.verify_interval,
                shutdown: self.shutdown.clone(),
            };
            tokio::spawn(task.run());
        }
        let aggregator = Aggregator {
            owned_view,
            store: self.store.clone(),
            leases: Leases::new(
                self.store.redis.clone(),
                self.store.keys.clone(),
                instance,
                self.config.lease_ttl,
            ),
            directory: self.directory.clone(),
            book_config: BookConfig {
                late_window_ns: nanos(self.config.late_window),
                close_grace_ns: nanos(self.config.close_grace),
            },
            lease_ttl: self.config.lease_ttl,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(aggregator.run())
    }

    pub async fn get_candles(&self, query: CandlesQuery) -> Result<(Vec<Candle>, String)> {
        self.query.get_candles(query).await
    }

    pub async fn get_indicators(&self, query: IndicatorsQuery) -> Result<IndicatorsPage> {
        self.indicators.get_indicators(query).await
    }

    /// Indicator engines alive on this instance (one per symbol × interval ×
    /// set with subscribers here).
    pub fn live_indicator_sets(&self) -> usize {
        self.live_indicators.engines()
    }

    /// `indicators`: computed on every candle sent (none when empty).
    pub async fn subscribe(
        &self,
        symbol: String,
        intervals: Vec<String>,
        cursor: String,
        indicators: Vec<String>,
    ) -> Result<mpsc::Receiver<Result<Message>>> {
        let mut violations = Vec::new();
        if !indicators.is_empty()
            && let Err(Error::InvalidArgument(v)) =
                tickmesh_indicators::parse_indicators(&indicators)
        {
            violations.extend(v);
        }
        if let Err(r) = check_symbol(&symbol) {
            violations.push(FieldViolation::new("symbol", r));
        }
        if intervals.is_empty() {
            violations.push(FieldViolation::new(
                "intervals",
                "must name at least one interval, e.g. [\"1m\"]",
            ));
        }
        let mut parsed: Vec<Interval> = Vec::new();
        for (i, text) in intervals.iter().enumerate() {
            match Interval::parse(text) {
                Ok(interval) if interval.is_stored() => {
                    if !parsed.contains(&interval) {
                        parsed.push(interval);
                    }
                }
                Ok(_) => violations.push(FieldViolation::new(
                    format!("intervals[{i}]"),
                    format!("{text:?} is not a stored interval; subscribe to one of 1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d 1w 1M 1Y (GetCandles rolls up others)"),
                )),
                Err(r) => violations.push(FieldViolation::new(format!("intervals[{i}]"), r)),
            }
        }
        let cursor = if cursor.is_empty() {
            None
        } else {
            match parse_cursor(&cursor) {
                Ok(c) => Some(c),
                Err(v) => {
                    violations.push(v);
                    None
                }
            }
        };
        Error::check(violations)?;
        let info = self.directory.get(&symbol).await?;
        let engines = if indicators.is_empty() {
            Vec::new()
        } else {
            parsed
                .iter()
                .map(|&interval| {
                    SeriesSpec::new(&info, interval, &indicators, "indicators")
                        .map(|spec| self.live_indicators.engine(spec))
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(self
            .subscriptions
            .start(symbol, parsed, cursor, engines, self.shutdown.clone()))
    }

    pub async fn status(&self, symbols: Vec<String>) -> Result<Vec<AggregationStatus>> {
        let mut violations = Vec::new();
        if symbols.is_empty() || symbols.len() > MAX_STATUS_SYMBOLS {
            violations.push(FieldViolation::new(
                "symbols",
                format!("must name 1 to {MAX_STATUS_SYMBOLS} symbols"),
            ));
        }
        for (i, s) in symbols.iter().enumerate() {
            if let Err(r) = check_symbol(s) {
                violations.push(FieldViolation::new(format!("symbols[{i}]"), r));
            }
        }
        Error::check(violations)?;
        let keys = &self.store.keys;
        let mut pipe = redis::pipe();
        for s in &symbols {
            self.directory.get(s).await?;
            pipe.cmd("GET").arg(keys.applied(s));
            pipe.cmd("HMGET").arg(keys.status(s)).arg(&[
                "late_corrections",
                "late_dropped",
                "missed",
                "last_flush_ns",
                "verify_checked",
                "verify_mismatches",
                "verify_repaired",
                "verified_ns",
            ]);
            pipe.cmd("GET").arg(keys.lease(s));
            pipe.cmd("ZCARD").arg(keys.flush(s));
            pipe.cmd("GET").arg(keys.tick_sequence(s));
        }
        let mut conn = self.store.redis.conn();
        let rows: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(symbols.len());
        for (symbol, row) in symbols.into_iter().zip(rows.chunks(5)) {
            let applied: Option<u64> = redis::from_redis_value(row[0].clone()).ok().flatten();
            let counters: Vec<Option<i64>> =
                redis::from_redis_value(row[1].clone()).unwrap_or_default();
            let unflushed: u64 = redis::from_redis_value(row[3].clone()).unwrap_or(0);
            let lease: Option<String> = redis::from_redis_value(row[2].clone()).ok().flatten();
            let tick_log: Option<u64> = redis::from_redis_value(row[4].clone()).ok().flatten();
            let counter = |i: usize| counters.get(i).copied().flatten().unwrap_or(0).max(0) as u64;
            let time = |i: usize| counters.get(i).copied().flatten().unwrap_or(0);
            out.push(AggregationStatus {
                tick_log_sequence: tick_log.unwrap_or(0),
                oldest_pending_ingest_ns: 0,
                verified_candles: counter(4),
                verify_mismatches: counter(5),
                verify_repairs: counter(6),
                last_verify_ns: time(7),
                symbol,
                applied_sequence: applied.unwrap_or(0),
                owner: lease
                    .and_then(|l| l.rsplit_once('#').map(|(instance, _)| instance.to_string()))
                    .unwrap_or_default(),
                late_corrections: counter(0),
                late_dropped: counter(1),
                missed_trades: counter(2),
                unflushed_candles: unflushed,
                last_flush_ns: time(3),
            });
        }
        // How long the symbols that are behind have been: the ingest time of
        // the first trade not yet applied.
        let behind: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].pending_trades() > 0)
            .collect();
        if !behind.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &behind {
                let s = &out[i];
                pipe.cmd("XRANGE")
                    .arg(keys.tick_log(&s.symbol))
                    .arg(format!("0-{}", s.applied_sequence + 1))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
            }
            let firsts: Vec<Vec<(String, std::collections::HashMap<String, String>)>> =
                pipe.query_async(&mut conn).await.map_err(unavailable)?;
            for (&i, first) in behind.iter().zip(firsts) {
                out[i].oldest_pending_ingest_ns = first
                    .first()
                    .and_then(|(_, fields)| fields.get("it"))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
            }
        }
        Ok(out)
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
