//! The mesh's side of the metrics endpoint (`metrics.listen`): the admin
//! listener, the gauges read when Prometheus scrapes (aggregation lag of the
//! symbols in `metrics.symbols`, the coupon persist backlog, the queue's
//! rooms, venue feed and poller states), and the history store's calls.
//! The instruments themselves are described in
//! [`tickmesh_runtime::metrics::catalogue`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use async_trait::async_trait;
use tickmesh_calendar::Interval;
use tickmesh_candles::CandleService;
use tickmesh_coupon::Coupons;
use tickmesh_history::{CandleStore, StoreError, StoredCandle};
use tickmesh_marketfeed::MarketFeed;
use tickmesh_queue::Queue;
use tickmesh_runtime::config::Config;
use tickmesh_runtime::metrics::catalogue::*;
use tickmesh_runtime::metrics::{Collect, MetricsServer};
use tickmesh_runtime::proto_time::now_nanos;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// With `metrics.listen` set: installs the recorder (before any service
/// records) and binds the admin listener, so a taken port stops the start
/// before anything runs.
pub async fn bind(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = config.metrics.listen_addr() else {
        return Ok(None);
    };
    tickmesh_runtime::metrics::install();
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {} (metrics.listen)",
            config.metrics.listen
        )
    })?;
    Ok(Some(listener))
}

/// What the scrape-time gauges are read from.
#[derive(Default)]
pub struct Sources {
    pub marketfeed: Option<Arc<MarketFeed>>,
    pub candles: Option<Arc<CandleService>>,
    pub coupon: Option<Arc<Coupons>>,
    pub queue: Option<Arc<Queue>>,
    pub feeds: Option<tickmesh_feeds::Feeds>,
    pub pollers: Vec<Arc<tickmesh_poller::Poller>>,
    /// `metrics.symbols`.
    pub symbols: Vec<String>,
}

/// Serves `/metrics` on `listener` until `shutdown`; the address it serves on.
pub fn serve(
    listener: TcpListener,
    sources: Sources,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let sources = Arc::new(sources);
    let collect: Collect = Arc::new(move || {
        let sources = sources.clone();
        Box::pin(async move { sources.collect().await })
    });
    Ok(MetricsServer::serve(listener, Some(collect), shutdown)?.addr)
}

impl Sources {
    /// Sets every scrape-time gauge. A source that fails (Redis down) keeps
    /// its previous values; the failure is logged at debug level.
    async fn collect(&self) {
        if let Some(feed) = &self.marketfeed {
            metrics::gauge!(STREAM_FOLLOWED_TOPICS, "stream" => "trades")
                .set(feed.live_symbols() as f64);
        }
        if let Some(candles) = &self.candles {
            metrics::gauge!(STREAM_FOLLOWED_TOPICS, "stream" => "candles")
                .set(candles.live_symbols() as f64);
            self.candle_symbols(candles).await;
        }
        if let Some(coupon) = &self.coupon {
            match coupon.persist_backlog().await {
                Ok(n) => metrics::gauge!(COUPON_PERSIST_BACKLOG).set(n as f64),
                Err(e) => tracing::debug!(error = %e, "metrics: coupon persist backlog"),
            }
        }
        if let Some(queue) = &self.queue
            && let Err(e) = tickmesh_queue::metrics::report(queue).await
        {
            tracing::debug!(error = %e, "metrics: queue rooms");
        }
        if let Some(feeds) = &self.feeds {
            feed_states(&feeds.status());
        }
        for poller in &self.pollers {
            let s = poller.status();
            let name = s.name.clone();
            metrics::counter!(POLLER_REQUESTS, "poller" => name.clone()).absolute(s.requests);
            metrics::counter!(POLLER_RATE_LIMITED, "poller" => name.clone())
                .absolute(s.rate_limited);
            metrics::counter!(POLLER_ERRORS, "poller" => name.clone()).absolute(s.errors);
            metrics::counter!(POLLER_QUOTES, "poller" => name.clone()).absolute(s.quotes_written);
            metrics::gauge!(POLLER_OPEN_SYMBOLS, "poller" => name).set(s.open_symbols as f64);
        }
    }

    /// Lag and flush state of the symbols of `metrics.symbols`, from the
    /// same figures GetAggregationStatus answers with.
    async fn candle_symbols(&self, candles: &CandleService) {
        let now = now_nanos();
        for symbol in &self.symbols {
            let status = match candles.status(vec![symbol.clone()]).await {
                Ok(mut s) if !s.is_empty() => s.remove(0),
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(symbol = %symbol, error = %e, "metrics: aggregation status");
                    continue;
                }
            };
            let label = symbol.clone();
            metrics::gauge!(CANDLES_LAG_TRADES, "symbol" => label.clone())
                .set(status.pending_trades() as f64);
            let lag_s = if status.oldest_pending_ingest_ns > 0 {
                (now - status.oldest_pending_ingest_ns).max(0) as f64 / 1e9
            } else {
                0.0
            };
            metrics::gauge!(CANDLES_LAG_SECONDS, "symbol" => label.clone()).set(lag_s);
            metrics::gauge!(CANDLES_UNFLUSHED, "symbol" => label.clone())
                .set(status.unflushed_candles as f64);
            if status.last_flush_ns > 0 {
                metrics::gauge!(CANDLES_LAST_FLUSH_AGE, "symbol" => label)
                    .set((now - status.last_flush_ns).max(0) as f64 / 1e9);
            }
        }
    }
}

/// Venue feed symbols per state, and the feeds' counters, per (feed, venue).
fn feed_states(statuses: &[tickmesh_feeds::status::SymbolStatus]) {
    use tickmesh_feeds::status::ConnectionState;
    #[derive(Default)]
    struct PerFeed {
        states: BTreeMap<&'static str, u64>,
        received: u64,
        backfilled: u64,
        unrecoverable: u64,
        reconnects: u64,
    }
    let mut feeds: BTreeMap<(String, String), PerFeed> = BTreeMap::new();
    for s in statuses {
        let f = feeds.entry((s.feed.clone(), s.venue.clone())).or_default();
        *f.states.entry(s.state.as_str()).or_default() += 1;
        f.received += s.received;
        f.backfilled += s.backfilled;
        f.unrecoverable += s.unrecoverable;
        f.reconnects += s.reconnects;
    }
    let all = [
        ConnectionState::NotOwned,
        ConnectionState::Reconnecting,
        ConnectionState::Backfilling,
        ConnectionState::Live,
    ];
    for ((feed, venue), f) in feeds {
        for state in all {
            let n = f.states.get(state.as_str()).copied().unwrap_or(0);
            metrics::gauge!(FEED_SYMBOLS, "feed" => feed.clone(), "venue" => venue.clone(), "state" => state.as_str())
                .set(n as f64);
        }
        let labels = [("feed", feed), ("venue", venue)];
        metrics::counter!(FEED_RECEIVED, &labels).absolute(f.received);
        metrics::counter!(FEED_BACKFILLED, &labels).absolute(f.backfilled);
        metrics::counter!(FEED_UNRECOVERABLE, &labels).absolute(f.unrecoverable);
        metrics::counter!(FEED_RECONNECTS, &labels).absolute(f.reconnects);
    }
}

/// The history store with each call timed and its failures counted
/// (`history_store_duration_seconds`, `history_store_errors_total`).
pub fn metered(store: Arc<dyn CandleStore>) -> Arc<dyn CandleStore> {
    Arc::new(MeteredStore { inner: store })
}

struct MeteredStore {
    inner: Arc<dyn CandleStore>,
}

impl MeteredStore {
    fn record<T>(&self, op: &'static str, started: Instant, result: &Result<T, StoreError>) {
        let store = self.inner.name();
        metrics::histogram!(HISTORY_DURATION, "store" => store, "op" => op)
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(HISTORY_ERRORS, "store" => store, "op" => op).increment(1);
        }
    }
}

#[async_trait]
impl CandleStore for MeteredStore {
    async fn upsert(&self, candles: &[StoredCandle]) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.upsert(candles).await;
        self.record("upsert", started, &result);
        result
    }

    async fn range(
        &self,
        symbol: &str,
        interval: Interval,
        from_ns: i64,
        to_ns: i64,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<StoredCandle>, StoreError> {
        let started = Instant::now();
        let result = self
            .inner
            .range(symbol, interval, from_ns, to_ns, newest_first, limit)
            .await;
        self.record("range", started, &result);
        result
    }

    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk().await
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}
