//! The CandleQuery domain facade; [`crate::grpc`] is the thin adapter.

use std::sync::Arc;

use tickmesh_calendar::Interval;
use tickmesh_core::ids::check_symbol;
use tickmesh_core::{Error, FieldViolation, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::CandlesConfig;
use tickmesh_runtime::redis_conn::unavailable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aggregator::Aggregator;
use crate::book::BookConfig;
use crate::candle::Candle;
use crate::directory::{Directory, feed_client};
use crate::keys::CandleKeys;
use crate::lease::Leases;
use crate::query::{CandlesQuery, QueryService};
use crate::store::{CandleStore, Retention};
use crate::subscribe::{Message, Subscriptions, UpdateCodec, UpdateHub, check_cursor};

/// Most symbols per GetAggregationStatus call.
pub const MAX_STATUS_SYMBOLS: usize = 1000;

pub struct CandleService {
    pub store: Arc<CandleStore>,
    pub directory: Arc<Directory>,
    query: QueryService,
    subscriptions: Arc<Subscriptions>,
    config: CandlesConfig,
    shutdown: CancellationToken,
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
}

impl CandleService {
    /// `marketfeed_endpoint`: where MarketFeedService answers.
    pub fn new(
        config: CandlesConfig,
        redis: RedisHandle,
        marketfeed_endpoint: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>> {
        let keys = CandleKeys::new(redis.prefix());
        let store = Arc::new(CandleStore::new(
            redis.clone(),
            keys.clone(),
            Retention {
                updates_max_len: config.updates_max_len,
                candles_per_interval: config.candles_per_interval,
            },
        ));
        let directory = Arc::new(Directory::new(feed_client(marketfeed_endpoint)?));
        let hub = UpdateHub::new(
            redis,
            UpdateCodec { keys },
            config.live_buffer,
            shutdown.clone(),
        );
        let subscriptions = Arc::new(Subscriptions {
            store: store.clone(),
            hub,
            lag_recoveries: Default::default(),
        });
        Ok(Arc::new(Self {
            query: QueryService {
                store: store.clone(),
                directory: directory.clone(),
            },
            store,
            directory,
            subscriptions,
            config,
            shutdown,
        }))
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

    /// Starts this instance's aggregator (it shares symbols with others).
    pub fn spawn_aggregator(&self, instance: String) -> tokio::task::JoinHandle<()> {
        let aggregator = Aggregator {
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

    pub async fn subscribe(
        &self,
        symbol: String,
        intervals: Vec<String>,
        cursor: String,
    ) -> Result<mpsc::Receiver<Result<Message>>> {
        let mut violations = Vec::new();
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
        if !cursor.is_empty()
            && let Err(v) = check_cursor(&cursor)
        {
            violations.push(v);
        }
        Error::check(violations)?;
        self.directory.get(&symbol).await?;
        Ok(self.subscriptions.start(
            symbol,
            parsed,
            (!cursor.is_empty()).then_some(cursor),
            self.shutdown.clone(),
        ))
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
            ]);
            pipe.cmd("GET").arg(keys.lease(s));
        }
        let mut conn = self.store.redis.conn();
        let rows: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = Vec::with_capacity(symbols.len());
        for (symbol, row) in symbols.into_iter().zip(rows.chunks(3)) {
            let applied: Option<u64> = redis::from_redis_value(row[0].clone()).ok().flatten();
            let counters: Vec<Option<u64>> =
                redis::from_redis_value(row[1].clone()).unwrap_or_default();
            let lease: Option<String> = redis::from_redis_value(row[2].clone()).ok().flatten();
            let counter = |i: usize| counters.get(i).copied().flatten().unwrap_or(0);
            out.push(AggregationStatus {
                symbol,
                applied_sequence: applied.unwrap_or(0),
                owner: lease
                    .and_then(|l| l.rsplit_once('#').map(|(instance, _)| instance.to_string()))
                    .unwrap_or_default(),
                late_corrections: counter(0),
                late_dropped: counter(1),
                missed_trades: counter(2),
            });
        }
        Ok(out)
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
