//! The candle aggregator: owns a fair share of the symbols (leases), follows
//! their trades through `MarketFeedService.StreamTrades` from the sequence
//! after the last one applied, folds them into every stored interval, and
//! writes each batch's changes in one pipelined round trip, atomically with
//! the applied sequence per symbol. Killing it at any moment loses and
//! double-counts nothing: on restart it reads the candles and the applied
//! sequence back and resumes the stream right after it.
//!
//! The tick log is the truth. A book is only ever applied to once it is
//! confirmed against Redis: after any Redis error, every owned book is
//! discarded and read back before the next trade, and the write script
//! refuses a book built on writes Redis no longer holds (a Redis that came
//! back from a crash or failover with less than it acknowledged). The books
//! are then read back from what Redis holds, which is a consistent earlier
//! state (its tick log and candles are one prefix of the same command
//! stream), and the trades after it are replayed from the tick log. Revisions
//! keep going up across such a reload, so no reader sees one go back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use tickmesh_api::marketfeed::{StreamTradesRequest, StreamTradesResponse, SymbolSequence};
use tickmesh_core::decimal::parse_units;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::metrics::catalogue::{CANDLES_INGEST_TO_CANDLE, CANDLES_TRADES_APPLIED};
use tickmesh_runtime::proto_time::{now_nanos, timestamp_to_nanos};
use tickmesh_runtime::telemetry::context_from_traceparent;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::book::{BookConfig, SymbolBook};
use crate::candle::Tick;
use crate::directory::Directory;
use crate::lease::{Leases, fair_share};
use crate::store::{CandleStore, WriteError};

pub struct Aggregator {
    pub store: Arc<CandleStore>,
    pub leases: Leases,
    pub directory: Arc<Directory>,
    pub book_config: BookConfig,
    pub lease_ttl: Duration,
    pub shutdown: CancellationToken,
    /// The symbols owned right now, for the flusher running beside.
    pub owned_view: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

struct Owned {
    lease: String,
    book: SymbolBook,
    /// False after a Redis error: the book may be ahead of Redis and must be
    /// read back before it takes another trade.
    confirmed: bool,
    /// Checks in a row that found the tick log ahead of the book while the
    /// book did not move (see [`STALL_CHECKS`]).
    stalled_checks: u32,
    applied_at_last_check: u64,
}

/// Balance checks (every `lease_ttl / 3`) in a row in which a symbol's tick
/// log is ahead of its book and the book did not move, before the trade
/// stream is taken for stalled and reopened from what Redis holds.
const STALL_CHECKS: u32 = 5;

/// Longest wait for MarketFeed to answer a call that opens a trade stream or
/// lists instruments: a call that hangs must not stall aggregation.
const MARKETFEED_CALL_TIMEOUT: Duration = Duration::from_secs(10);

enum Next {
    /// The set of owned symbols changed: reopen the trade stream.
    Reopen,
    Stop,
}

impl Aggregator {
    pub async fn run(self) {
        let mut owned: HashMap<String, Owned> = HashMap::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.cycle(&mut owned).await {
                Ok(Next::Stop) => break,
                Ok(Next::Reopen) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, symbols = owned.len(), "aggregator: redis or the trade stream failed; reloading every owned book from redis before the next trade");
                    // The books may be ahead of Redis: none takes a trade
                    // before it is read back (the leases are kept).
                    for o in owned.values_mut() {
                        o.confirmed = false;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        self.owned_view.lock().expect("owned view lock").clear();
        for (symbol, o) in owned.drain() {
            self.leases.release(&symbol, &o.lease).await;
        }
        self.leases.leave().await;
        tracing::info!(instance = %self.leases.instance, "aggregator stopped; leases released");
    }

    /// A symbol's book as stored in Redis.
    async fn open_book(&self, symbol: &str) -> Result<SymbolBook> {
        let info = self.directory.get(symbol).await?;
        let mut book = SymbolBook::new(
            symbol,
            info.tz,
            info.price_scale,
            info.quantity_scale,
            self.book_config,
        );
        self.store
            .load(&mut book, self.book_config.late_window_ns)
            .await?;
        Ok(book)
    }

    /// Reads a book back from Redis after a failure, keeping revisions above
    /// those the old book gave (Redis may have lost them).
    async fn reload(&self, symbol: &str, owned: &mut Owned) -> Result<()> {
        let mut book = self.open_book(symbol).await?;
        let old = &owned.book;
        if book.applied_sequence < old.applied_sequence || book.writes < old.writes {
            tracing::warn!(
                symbol,
                applied_in_redis = book.applied_sequence,
                applied_here = old.applied_sequence,
                writes_in_redis = book.writes,
                writes_here = old.writes,
                "redis holds less of this symbol's candles than the aggregator wrote (it lost writes in a crash or failover); replaying the tick log from what redis holds"
            );
        }
        book.carry_revisions_from(old);
        owned.book = book;
        owned.confirmed = true;
        owned.stalled_checks = 0;
        Ok(())
    }

    /// Reads back every book not confirmed against Redis.
    async fn confirm(&self, owned: &mut HashMap<String, Owned>) -> Result<()> {
        for (symbol, o) in owned.iter_mut() {
            if !o.confirmed {
                self.reload(symbol, o).await?;
            }
        }
        Ok(())
    }

    /// Checks that Redis still holds the writes each book was built on; a
    /// Redis that lost some (with no error seen here, e.g. it restarted while
    /// this aggregator was idle) makes every book reload.
    /// Also tells whether a symbol's trade stream looks stalled (true: the
    /// stream should be reopened).
    async fn check_writes(&self, owned: &mut HashMap<String, Owned>) -> Result<bool> {
        if owned.is_empty() {
            return Ok(false);
        }
        let symbols: Vec<String> = owned.keys().cloned().collect();
        let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
        let progress = self.store.progress(&refs).await?;
        let mut diverged = Vec::new();
        let mut stalled = Vec::new();
        for (symbol, (writes, tick_log)) in symbols.iter().zip(progress) {
            let Some(o) = owned.get_mut(symbol) else {
                continue;
            };
            if o.book.writes != writes {
                diverged.push(symbol.as_str());
            }
            let applied = o.book.applied_sequence;
            if tick_log > applied && applied == o.applied_at_last_check {
                o.stalled_checks += 1;
            } else {
                o.stalled_checks = 0;
            }
            o.applied_at_last_check = applied;
            if o.stalled_checks >= STALL_CHECKS {
                tracing::warn!(
                    symbol,
                    applied,
                    tick_log,
                    checks = o.stalled_checks,
                    "aggregation of the symbol does not move while its tick log is ahead; reopening the trade stream"
                );
                o.stalled_checks = 0;
                stalled.push(symbol.as_str());
            }
        }
        if !diverged.is_empty() {
            return Err(Error::Unavailable(format!(
                "redis holds other candle writes than this aggregator made for {} (it lost writes in a crash or failover)",
                diverged.join(", ")
            )));
        }
        // The books are confirmed: only the stream is reopened.
        Ok(!stalled.is_empty())
    }

    fn publish_owned(&self, owned: &HashMap<String, Owned>) {
        *self.owned_view.lock().expect("owned view lock") = owned.keys().cloned().collect();
    }

    /// Renews, acquires and releases leases; true when the owned set changed.
    async fn balance(&self, owned: &mut HashMap<String, Owned>) -> Result<bool> {
        let changed = self.rebalance(owned).await;
        self.publish_owned(owned);
        changed
    }

    async fn rebalance(&self, owned: &mut HashMap<String, Owned>) -> Result<bool> {
        let live = self.leases.heartbeat().await?;
        let stalled = self.check_writes(owned).await?;
        let symbols = tokio::time::timeout(MARKETFEED_CALL_TIMEOUT, self.directory.refresh())
            .await
            .map_err(|_| Error::Unavailable("marketfeed ListInstruments timed out".into()))??;
        let held: Vec<(String, String)> = owned
            .iter()
            .map(|(s, o)| (s.clone(), o.lease.clone()))
            .collect();
        let still = self.leases.renew(&held).await?;
        let mut changed = stalled;
        for ((symbol, _), ok) in held.iter().zip(still) {
            if !ok {
                tracing::warn!(symbol, "aggregator lease lost");
                owned.remove(symbol);
                changed = true;
            }
        }
        let share = fair_share(symbols.len(), live);
        if owned.len() < share {
            // Start at a point that depends on the instance, so instances
            // starting together do not all contend for the same symbols.
            let start =
                self.leases.instance.bytes().map(usize::from).sum::<usize>() % symbols.len().max(1);
            for symbol in symbols.iter().cycle().skip(start).take(symbols.len()) {
                if owned.len() >= share {
                    break;
                }
                if owned.contains_key(symbol) {
                    continue;
                }
                if let Some(lease) = self.leases.try_acquire(symbol).await? {
                    let book = match self.open_book(symbol).await {
                        Ok(book) => book,
                        Err(e) => {
                            self.leases.release(symbol, &lease).await;
                            return Err(e);
                        }
                    };
                    tracing::info!(
                        symbol,
                        lease,
                        applied = book.applied_sequence,
                        "aggregator took symbol"
                    );
                    owned.insert(
                        symbol.clone(),
                        Owned {
                            lease,
                            book,
                            confirmed: true,
                            stalled_checks: 0,
                            applied_at_last_check: 0,
                        },
                    );
                    changed = true;
                }
            }
        } else if owned.len() > share + 1 {
            // Others joined: hand some symbols back (all writes are done).
            let extra: Vec<String> = owned.keys().take(owned.len() - share).cloned().collect();
            for symbol in extra {
                if let Some(o) = owned.remove(&symbol) {
                    self.leases.release(&symbol, &o.lease).await;
                    tracing::info!(symbol, "aggregator handed symbol back");
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// One trade stream over the owned symbols, until they change or something fails.
    async fn cycle(&self, owned: &mut HashMap<String, Owned>) -> Result<Next> {
        self.confirm(owned).await?;
        self.balance(owned).await?;
        let mut ticker =
            tokio::time::interval((self.lease_ttl / 3).max(Duration::from_millis(200)));
        ticker.tick().await;
        let mut closer = tokio::time::interval(Duration::from_millis(500));
        if owned.is_empty() {
            tokio::select! {
                _ = ticker.tick() => return Ok(Next::Reopen),
                _ = self.shutdown.cancelled() => return Ok(Next::Stop),
            }
        }
        let mut request = tonic::Request::new(StreamTradesRequest {
            symbols: owned.keys().cloned().collect(),
            from_sequence: None,
            cursors: owned
                .iter()
                .map(|(s, o)| SymbolSequence {
                    symbol: s.clone(),
                    sequence: o.book.applied_sequence + 1,
                })
                .collect(),
        });
        // The aggregator is not a client following these symbols.
        request.metadata_mut().insert(
            tickmesh_runtime::interest::INTERNAL_READER_HEADER,
            tonic::metadata::MetadataValue::from_static("candle-aggregator"),
        );
        let mut client = self.directory.client();
        let mut stream =
            tokio::time::timeout(MARKETFEED_CALL_TIMEOUT, client.stream_trades(request))
                .await
                .map_err(|_| Error::Unavailable("marketfeed StreamTrades timed out".into()))?
                .map_err(|s| Error::Unavailable(format!("marketfeed StreamTrades: {s}")))?
                .into_inner();
        loop {
            tokio::select! {
                message = stream.message() => {
                    let message = message
                        .map_err(|s| Error::Unavailable(format!("marketfeed StreamTrades: {s}")))?
                        .ok_or_else(|| Error::Unavailable("marketfeed ended the trade stream".into()))?;
                    let span = aggregate_span(&message);
                    let _entered = span.enter();
                    let applied = AppliedBatch::of(&message);
                    self.apply(owned, message);
                    drop(_entered);
                    if self.flush(owned).instrument(span).await? {
                        return Ok(Next::Reopen);
                    }
                    applied.record();
                }
                _ = closer.tick() => {
                    let now = now_nanos();
                    for o in owned.values_mut() {
                        o.book.close_due(now);
                    }
                    if self.flush(owned).await? {
                        return Ok(Next::Reopen);
                    }
                }
                _ = ticker.tick() => {
                    if self.balance(owned).await? {
                        return Ok(Next::Reopen);
                    }
                }
                _ = self.shutdown.cancelled() => return Ok(Next::Stop),
            }
        }
    }

    fn apply(&self, owned: &mut HashMap<String, Owned>, message: StreamTradesResponse) {
        let now = now_nanos();
        for gap in message.gaps {
            if let Some(o) = owned.get_mut(&gap.symbol) {
                tracing::error!(symbol = %gap.symbol, first = gap.first_sequence, last = gap.last_sequence, "trades trimmed from the tick log before aggregation; counted as missed");
                o.book.skip(gap.last_sequence);
            }
        }
        for trade in message.trades {
            let Some(o) = owned.get_mut(&trade.symbol) else {
                continue;
            };
            let book = &mut o.book;
            let parsed = (
                parse_units(&trade.price, book.price_scale),
                parse_units(&trade.quantity, book.quantity_scale),
                trade
                    .time
                    .as_ref()
                    .ok_or_else(|| "no time".to_string())
                    .and_then(timestamp_to_nanos),
            );
            match parsed {
                (Ok(price), Ok(quantity), Ok(time_ns)) => book.apply(
                    Tick {
                        time_ns,
                        sequence: trade.sequence,
                        price,
                        quantity,
                    },
                    now,
                ),
                _ => {
                    // Only possible if the instrument's scale shrank after the
                    // trade was accepted.
                    tracing::error!(symbol = %trade.symbol, sequence = trade.sequence, price = %trade.price, "trade does not fit the instrument's current scales; counted as missed");
                    book.skip(trade.sequence);
                }
            }
        }
    }

    /// Writes every book with changes in one round trip. True when a lease was lost.
    async fn flush(&self, owned: &mut HashMap<String, Owned>) -> Result<bool> {
        let mut batch: Vec<(&mut SymbolBook, String)> = owned
            .values_mut()
            .filter(|o| o.book.has_changes())
            .map(|o| (&mut o.book, o.lease.clone()))
            .collect();
        if batch.is_empty() {
            return Ok(false);
        }
        let symbols: Vec<String> = batch.iter().map(|(b, _)| b.symbol.to_string()).collect();
        let outcomes = self.store.write(&mut batch).await?;
        let mut lost = false;
        for (symbol, outcome) in symbols.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => {}
                Err(WriteError::LeaseLost(reason)) => {
                    tracing::warn!(
                        symbol,
                        reason,
                        "aggregator lease lost at write; dropping symbol"
                    );
                    owned.remove(&symbol);
                    lost = true;
                }
                Err(WriteError::Diverged(reason)) => {
                    // Redis lost candle writes: indicator checkpoints read
                    // from what it held meanwhile may be wrong.
                    let bumped: redis::RedisResult<i64> = redis::cmd("HINCRBY")
                        .arg(self.store.keys.status(&symbol))
                        .arg(crate::indicators::series::EPOCH_FIELD)
                        .arg(1)
                        .query_async(&mut self.store.redis.conn())
                        .await;
                    if let Err(e) = bumped {
                        tracing::warn!(symbol, error = %e, "indicator epoch not bumped");
                    }
                    return Err(Error::Unavailable(format!(
                        "candle write of {symbol} refused: {reason}"
                    )));
                }
                Err(WriteError::Other(e)) => return Err(e),
            }
        }
        Ok(lost)
    }
}

/// What one applied message adds to the aggregator's metrics: its trades,
/// and the time from the ingest of its oldest trade until its candles are
/// written.
struct AppliedBatch {
    trades: u64,
    oldest_ingest_ns: Option<i64>,
}

impl AppliedBatch {
    fn of(message: &StreamTradesResponse) -> Self {
        Self {
            trades: message.trades.len() as u64,
            oldest_ingest_ns: message
                .trades
                .iter()
                .filter_map(|t| t.ingest_time.as_ref())
                .filter_map(|t| timestamp_to_nanos(t).ok())
                .min(),
        }
    }

    /// After the candles are written.
    fn record(self) {
        if self.trades == 0 {
            return;
        }
        metrics::counter!(CANDLES_TRADES_APPLIED).increment(self.trades);
        if let Some(oldest) = self.oldest_ingest_ns {
            let lag_ns = (now_nanos() - oldest).max(0);
            metrics::histogram!(CANDLES_INGEST_TO_CANDLE).record(lag_ns as f64 / 1e9);
        }
    }
}

/// The span of applying one message of trades and writing the candles: a
/// child of the publishing call's trace (the `trace_parent` the tick log kept
/// with the first traced trade), linked to the other publishers' traces in
/// the same message. Disabled (free) when no trade carries a trace.
fn aggregate_span(message: &StreamTradesResponse) -> tracing::Span {
    let mut parents = message
        .trades
        .iter()
        .map(|t| t.trace_parent.as_str())
        .filter(|tp| !tp.is_empty());
    let Some(first) = parents.next() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "aggregate trades",
        otel.kind = "consumer",
        trades = message.trades.len(),
    );
    let _ = span.set_parent(context_from_traceparent(first));
    let mut seen = std::collections::HashSet::from([first]);
    for tp in parents {
        if seen.insert(tp) {
            let context = context_from_traceparent(tp);
            span.add_link(context.span().span_context().clone());
        }
    }
    span
}
