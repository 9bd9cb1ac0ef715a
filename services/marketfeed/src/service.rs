//! The MarketFeed domain: what each RPC does, in plain Rust. The gRPC adapter
//! ([`crate::grpc`]) only converts messages and errors.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::ids::check_symbol;
use tickmesh_core::{Error, FieldViolation, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::MarketFeedConfig;
use tickmesh_runtime::proto_time::now_nanos;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::durable::{AckMode, DurableAcks};
use crate::ingest::Ingestor;
use crate::instruments::InstrumentBook;
use crate::keys::Keys;
use crate::live::LiveHub;
use crate::model::{Instrument, RawTrade, RejectKind, TradeLimits, ValidTrade, validate_trade};
use crate::quotes::{QuoteRecord, read_quotes};
use crate::subscription::{Chunk, Start, Streamer};

/// Most symbols in one StreamTrades or GetQuotes call.
pub const MAX_SYMBOLS_PER_CALL: usize = 10_000;
/// Messages queued per StreamTrades client before its task waits for it.
const STREAM_QUEUE: usize = 4;

pub struct MarketFeed {
    config: MarketFeedConfig,
    redis: RedisHandle,
    keys: Keys,
    instruments: Arc<InstrumentBook>,
    ingestor: Ingestor,
    durable: Option<Arc<DurableAcks>>,
    streamer: Arc<Streamer>,
    shutdown: CancellationToken,
    /// Quote pollers of this process (set once at start by the mesh).
    quote_sources: std::sync::OnceLock<Vec<Arc<dyn crate::quote_source::QuoteSource>>>,
}

/// A refused trade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeRejection {
    pub index: usize,
    pub field: String,
    pub reason: String,
    pub kind: RejectKind,
    pub symbol: String,
    pub trade_id: String,
}

/// What a publish did.
#[derive(Clone, Debug, Default)]
pub struct PublishOutcome {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub rejections: Vec<TradeRejection>,
    pub last_sequences: HashMap<String, u64>,
}

/// A quote with its age when read.
#[derive(Clone, Debug)]
pub struct QuoteView {
    pub quote: QuoteRecord,
    pub age_ns: i64,
    pub stale: bool,
    /// The symbol's market is closed now (a polled symbol outside its
    /// sessions or on a holiday): the quote is the last session's, and not
    /// stale for being old.
    pub from_last_session: bool,
}

#[derive(Clone, Debug, Default)]
pub struct QuotesOutcome {
    pub quotes: Vec<QuoteView>,
    pub missing: Vec<String>,
}

impl MarketFeed {
    pub fn new(
        config: MarketFeedConfig,
        redis: RedisHandle,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let keys = Keys::new(redis.prefix());
        let instruments = Arc::new(InstrumentBook::new(
            redis.clone(),
            keys.clone(),
            config.auto_register_instruments,
        ));
        instruments
            .clone()
            .spawn_refresh(config.instrument_refresh, shutdown.clone());
        let hub = LiveHub::new(
            redis.clone(),
            crate::live::TickLogCodec { keys: keys.clone() },
            config.live_buffer,
            shutdown.clone(),
        );
        let streamer = Arc::new(Streamer {
            redis: redis.clone(),
            keys: keys.clone(),
            hub,
            batch_max: config.stream_batch_max,
            lag_recoveries: Default::default(),
        });
        let durable = config.durable_acks.then(|| {
            let durable = DurableAcks::new(
                redis.clone(),
                config.durable_replicas,
                config.durable_ack_timeout,
            );
            durable.spawn_watch(shutdown.clone());
            durable
        });
        Arc::new(Self {
            ingestor: Ingestor::new(
                redis.clone(),
                keys.clone(),
                config.tick_log_max_len,
                config.dedupe_window,
                durable.clone(),
            ),
            durable,
            config,
            redis,
            keys,
            instruments,
            streamer,
            shutdown,
            quote_sources: std::sync::OnceLock::new(),
        })
    }

    /// Symbols this instance currently follows for live streams.
    pub fn live_symbols(&self) -> usize {
        self.streamer.hub.followed()
    }

    /// Times a StreamTrades client fell behind and was served from the tick log.
    pub fn lag_recoveries(&self) -> u64 {
        self.streamer
            .lag_recoveries
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The Redis this service stores in (feeds keep their leases there).
    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    pub fn config(&self) -> &MarketFeedConfig {
        &self.config
    }

    /// With `durable_acks`, asks the server which mechanism makes its writes
    /// durable (`None` when durable acks are off). FAILED_PRECONDITION when
    /// it offers none (the message says what to change); UNAVAILABLE when
    /// Redis cannot be reached (each publish then asks again first).
    pub async fn durable_ack_mode(&self) -> Result<Option<AckMode>> {
        match &self.durable {
            Some(durable) => durable.mode().await.map(Some),
            None => Ok(None),
        }
    }

    pub async fn upsert_instrument(&self, instrument: Instrument) -> Result<(Instrument, bool)> {
        self.instruments.upsert(instrument, now_nanos()).await
    }

    pub async fn get_instrument(&self, symbol: &str) -> Result<Instrument> {
        check_symbol(symbol).map_err(|r| Error::invalid("symbol", r))?;
        self.instruments.get(symbol).await
    }

    pub async fn list_instruments(
        &self,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Instrument>, String)> {
        self.instruments.list(page_size, page_token).await
    }

    /// Validates and stores a batch. With `all_or_nothing`, any bad trade fails
    /// the whole call with every violation and stores nothing.
    pub async fn publish(
        &self,
        trades: Vec<RawTrade>,
        all_or_nothing: bool,
    ) -> Result<PublishOutcome> {
        if trades.is_empty() {
            return Err(Error::invalid("trades", "must contain at least one trade"));
        }
        if trades.len() > self.config.max_batch_trades {
            return Err(Error::invalid(
                "trades",
                format!(
                    "{} trades is more than the {} allowed per batch; split it",
                    trades.len(),
                    self.config.max_batch_trades
                ),
            ));
        }
        let now = now_nanos();
        let symbols: Vec<&str> = trades
            .iter()
            .map(|t| t.symbol.as_str())
            .filter(|s| check_symbol(s).is_ok())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let known = self.instruments.resolve(&symbols, now).await?;
        let limits = TradeLimits {
            now_ns: now,
            max_future_skew_ns: i64::try_from(self.config.max_future_skew.as_nanos())
                .unwrap_or(i64::MAX),
        };

        let mut valid: Vec<ValidTrade> = Vec::with_capacity(trades.len());
        let mut rejections = Vec::new();
        for (index, raw) in trades.iter().enumerate() {
            match validate_trade(raw, known.get(&raw.symbol).map(|i| i.as_ref()), limits) {
                Ok(v) => valid.push(v),
                Err(r) => rejections.push(TradeRejection {
                    index,
                    field: r.field.to_string(),
                    reason: r.reason,
                    kind: r.kind,
                    symbol: raw.symbol.clone(),
                    trade_id: raw.trade_id.clone(),
                }),
            }
        }
        if all_or_nothing && !rejections.is_empty() {
            count_trades(0, 0, rejections.len() as u64);
            return Err(Error::InvalidArgument(
                rejections
                    .iter()
                    .map(|r| {
                        FieldViolation::new(
                            format!("trades[{}].{}", r.index, r.field),
                            r.reason.clone(),
                        )
                    })
                    .collect(),
            ));
        }

        let written = self.ingestor.write(&valid, now).await?;
        let accepted = written.sequences.iter().filter(|s| s.is_some()).count() as u64;
        count_trades(
            accepted,
            valid.len() as u64 - accepted,
            rejections.len() as u64,
        );
        Ok(PublishOutcome {
            accepted,
            duplicate: valid.len() as u64 - accepted,
            rejected: rejections.len() as u64,
            rejections,
            last_sequences: written.last_sequences,
        })
    }

    /// Stores quotes polled from a request/response upstream as the symbols'
    /// latest quotes (sequence 0, no trade id), each only if it is newer than
    /// the stored one; one outcome per quote, in order.
    pub async fn put_quotes(
        &self,
        quotes: Vec<crate::polled_quotes::PolledQuote>,
    ) -> Result<Vec<crate::polled_quotes::PutQuoteOutcome>> {
        let skew = i64::try_from(self.config.max_future_skew.as_nanos()).unwrap_or(i64::MAX);
        crate::polled_quotes::put(
            &self.redis,
            &self.keys,
            &self.instruments,
            quotes,
            now_nanos(),
            skew,
        )
        .await
    }

    /// The newest trade of `symbol` in its tick log (what a feed that takes
    /// the symbol over resumes after).
    pub async fn last_trade(&self, symbol: &str) -> Result<Option<crate::model::TradeRecord>> {
        let symbol: Arc<str> = Arc::from(symbol);
        crate::tick_log::last_trade(&mut self.redis.conn(), &self.keys, &symbol).await
    }

    /// Starts streaming trades; the receiver yields messages until the client
    /// leaves, the server shuts down, or Redis fails.
    /// `client_reads`: a client follows these symbols (the quote pollers
    /// keep them hot while the stream is open); false for tickmesh's own
    /// readers (the candle aggregators).
    pub async fn stream_trades(
        &self,
        symbols: Vec<String>,
        from_sequence: Option<u64>,
        cursors: Vec<(String, u64)>,
        client_reads: bool,
    ) -> Result<mpsc::Receiver<Result<Chunk>>> {
        let mut violations = Vec::new();
        if symbols.is_empty() {
            violations.push(FieldViolation::new(
                "symbols",
                "must name at least one symbol",
            ));
        }
        if symbols.len() > MAX_SYMBOLS_PER_CALL {
            violations.push(FieldViolation::new(
                "symbols",
                format!("at most {MAX_SYMBOLS_PER_CALL} per call"),
            ));
        }
        for (i, s) in symbols.iter().enumerate() {
            if let Err(r) = check_symbol(s) {
                violations.push(FieldViolation::new(format!("symbols[{i}]"), r));
            }
        }
        let mut seen = HashSet::new();
        let symbols: Vec<String> = symbols
            .into_iter()
            .filter(|s| seen.insert(s.clone()))
            .collect();
        let mut overrides = HashMap::new();
        for (i, (symbol, from)) in cursors.into_iter().enumerate() {
            if !seen.contains(&symbol) {
                violations.push(FieldViolation::new(
                    format!("cursors[{i}].symbol"),
                    format!("{symbol:?} is not among `symbols`"),
                ));
            }
            overrides.insert(symbol, from);
        }
        Error::check(violations)?;
        if !self.config.auto_register_instruments {
            let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
            let known = self.instruments.resolve(&refs, now_nanos()).await?;
            if let Some(unknown) = symbols.iter().find(|s| !known.contains_key(*s)) {
                return Err(Error::NotFound(format!("instrument {unknown:?}")));
            }
        }
        let mut starts: Vec<Start> = symbols
            .into_iter()
            .map(|symbol| Start {
                from: overrides.get(&symbol).copied().or(from_sequence),
                symbol,
            })
            .collect();
        // "From now" is from this answer: where each such symbol's log ends
        // is read before the call returns, so every trade published after
        // it returned is delivered, however late the stream task starts.
        let now: Vec<&str> = starts
            .iter()
            .filter(|s| s.from.is_none())
            .map(|s| s.symbol.as_str())
            .collect();
        let ends =
            crate::tick_log::last_sequences(&mut self.redis.conn(), &self.keys, &now).await?;
        let mut ends = ends.into_iter();
        for start in starts.iter_mut().filter(|s| s.from.is_none()) {
            start.from = ends.next().map(|last| last + 1);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        if let Some(sources) = self
            .quote_sources
            .get()
            .filter(|s| client_reads && !s.is_empty())
        {
            let symbols: Vec<String> = starts.iter().map(|s| s.symbol.clone()).collect();
            tokio::spawn(keep_hot(sources.clone(), symbols, tx.clone()));
        }
        let streamer = self.streamer.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move { streamer.run(starts, tx, shutdown).await });
        Ok(rx)
    }

    /// Latest quotes of `symbols` (duplicates answered once, request order kept).
    pub async fn quotes(
        &self,
        symbols: Vec<String>,
        stale_after: Option<Duration>,
    ) -> Result<QuotesOutcome> {
        let mut violations = Vec::new();
        if symbols.is_empty() {
            violations.push(FieldViolation::new(
                "symbols",
                "must name at least one symbol",
            ));
        }
        if symbols.len() > MAX_SYMBOLS_PER_CALL {
            violations.push(FieldViolation::new(
                "symbols",
                format!("at most {MAX_SYMBOLS_PER_CALL} per call"),
            ));
        }
        for (i, s) in symbols.iter().enumerate() {
            if let Err(r) = check_symbol(s) {
                violations.push(FieldViolation::new(format!("symbols[{i}]"), r));
            }
        }
        Error::check(violations)?;
        let mut seen = HashSet::new();
        let symbols: Vec<String> = symbols
            .into_iter()
            .filter(|s| seen.insert(s.clone()))
            .collect();
        let stale_after = stale_after.unwrap_or(self.config.quote_stale_after);
        let stale_ns = i64::try_from(stale_after.as_nanos()).unwrap_or(i64::MAX);
        let mut conn = self.redis.conn();
        let mut rows = read_quotes(&mut conn, &self.keys, &symbols).await?;
        let sources: &[Arc<dyn crate::quote_source::QuoteSource>] =
            self.quote_sources.get().map(Vec::as_slice).unwrap_or(&[]);
        if !sources.is_empty() {
            self.refresh_from_sources(sources, &symbols, &mut rows)
                .await?;
        }
        let now = now_nanos();
        let mut out = QuotesOutcome::default();
        for (symbol, row) in symbols.into_iter().zip(rows) {
            match row {
                Some(quote) => {
                    let age_ns = (now - quote.time_ns).max(0);
                    let closed = sources
                        .iter()
                        .find_map(|s| s.market_open(&symbol))
                        .is_some_and(|open| !open);
                    out.quotes.push(QuoteView {
                        quote,
                        age_ns,
                        stale: !closed && age_ns > stale_ns,
                        from_last_session: closed,
                    });
                }
                None => out.missing.push(symbol),
            }
        }
        Ok(out)
    }

    /// The stored quotes of `symbols`, in order, as they are: no validation,
    /// no quote sources asked (a poller waiting for another instance's
    /// answer reads with this).
    pub async fn stored_quotes(&self, symbols: &[String]) -> Result<Vec<Option<QuoteRecord>>> {
        read_quotes(&mut self.redis.conn(), &self.keys, symbols).await
    }

    /// The quote pollers of this process: `GetQuotes` reads refresh them.
    /// Set once; later calls are ignored.
    pub fn set_quote_sources(&self, sources: Vec<Arc<dyn crate::quote_source::QuoteSource>>) {
        let _ = self.quote_sources.set(sources);
    }

    /// Tells the sources which symbols were read; a symbol with no quote
    /// that a source polls is fetched now (one upstream call shared by all
    /// concurrent askers, within the source's rate limit), waited for up to
    /// the source's `miss_wait`, and read again.
    async fn refresh_from_sources(
        &self,
        sources: &[Arc<dyn crate::quote_source::QuoteSource>],
        symbols: &[String],
        rows: &mut [Option<QuoteRecord>],
    ) -> Result<()> {
        let mut misses = Vec::new();
        for (i, symbol) in symbols.iter().enumerate() {
            if let Some(source) = sources.iter().find(|s| s.touch(symbol))
                && rows[i].is_none()
            {
                misses.push((i, source.clone()));
            }
        }
        if misses.is_empty() {
            return Ok(());
        }
        let fetches = misses.iter().map(|(i, source)| {
            let deadline = tokio::time::Instant::now() + source.miss_wait();
            source.fetch_now(&symbols[*i], deadline)
        });
        let fetched = futures_util::future::join_all(fetches).await;
        let again: Vec<String> = misses
            .iter()
            .zip(&fetched)
            .filter(|(_, ok)| **ok)
            .map(|((i, _), _)| symbols[*i].clone())
            .collect();
        if again.is_empty() {
            return Ok(());
        }
        let fresh = read_quotes(&mut self.redis.conn(), &self.keys, &again).await?;
        for (symbol, quote) in again.iter().zip(fresh) {
            if let Some(i) = symbols.iter().position(|s| s == symbol) {
                rows[i] = quote;
            }
        }
        Ok(())
    }
}

/// How often an open stream tells the quote pollers its symbols are read
/// (well inside their hot window, 30 s by default).
const KEEP_HOT_EVERY: Duration = Duration::from_secs(10);

/// While a StreamTrades client stays, the polled symbols it follows stay
/// hot (refreshed before the others); ends with the stream, or at once when
/// no source polls any of them.
async fn keep_hot<T>(
    sources: Vec<Arc<dyn crate::quote_source::QuoteSource>>,
    symbols: Vec<String>,
    stream: mpsc::Sender<T>,
) {
    loop {
        let mut any = false;
        for symbol in &symbols {
            any |= sources.iter().any(|s| s.touch(symbol));
        }
        if !any {
            return;
        }
        tokio::select! {
            _ = stream.closed() => return,
            _ = tokio::time::sleep(KEEP_HOT_EVERY) => {}
        }
    }
}

/// The outcome counts of one publish, in `marketfeed_trades_total`.
fn count_trades(accepted: u64, duplicate: u64, rejected: u64) {
    use tickmesh_runtime::metrics::catalogue::TRADES;
    for (outcome, n) in [
        ("accepted", accepted),
        ("duplicate", duplicate),
        ("rejected", rejected),
    ] {
        if n > 0 {
            metrics::counter!(TRADES, "outcome" => outcome).increment(n);
        }
    }
}
