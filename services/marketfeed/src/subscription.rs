//! One StreamTrades client: its cursor per symbol, catch-up from the tick log,
//! then live trades, with holes filled from the tick log.
//!
//! The rule that keeps it exact: each symbol has a `next` sequence. Trades
//! below it are skipped (duplicates), a live batch starting above it first
//! pulls the missing range from Redis, and a range Redis no longer has is
//! reported as a gap. A client that reads slowly stalls this task on its
//! bounded send queue; its broadcast receiver then lags, and it resumes from
//! the tick log. Server memory per client stays bounded whatever the client does.

use std::sync::Arc;

use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::metrics::streams::LiveSubscriber;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use crate::keys::Keys;
use crate::live::{Interest, LiveHub, LiveSubscription};
use crate::model::TradeRecord;
use crate::tick_log;

/// Sequences of a symbol that can no longer be delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub symbol: Arc<str>,
    pub first: u64,
    pub last: u64,
}

/// One message to the client.
#[derive(Clone, Debug, Default)]
pub struct Chunk {
    pub trades: Vec<TradeRecord>,
    pub gaps: Vec<Gap>,
}

/// Where a symbol's stream starts.
#[derive(Clone, Debug)]
pub struct Start {
    pub symbol: String,
    /// First sequence to deliver; `None`: from now on.
    pub from: Option<u64>,
}

pub struct Streamer {
    pub redis: RedisHandle,
    pub keys: Keys,
    pub hub: LiveHub,
    pub batch_max: usize,
    /// Times a client fell behind the live buffer and was caught up from the tick log.
    pub lag_recoveries: std::sync::atomic::AtomicU64,
}

struct SymbolState {
    symbol: Arc<str>,
    next: u64,
}

impl Streamer {
    /// Runs one client's stream until it leaves, the server shuts down, or
    /// Redis fails (then the client gets UNAVAILABLE and resumes with its cursor).
    pub async fn run(
        &self,
        starts: Vec<Start>,
        tx: mpsc::Sender<Result<Chunk>>,
        shutdown: CancellationToken,
    ) {
        let outcome = tokio::select! {
            r = self.pump(starts, &tx) => r,
            _ = shutdown.cancelled() => Err(Error::ShuttingDown("reconnect and resume from your last sequence + 1".into())),
            _ = tx.closed() => Ok(()),
        };
        if let Err(e) = outcome {
            // The client may already be gone; nothing else to do then.
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn pump(&self, starts: Vec<Start>, tx: &mpsc::Sender<Result<Chunk>>) -> Result<()> {
        let subscriber = LiveSubscriber::new("trades");
        // Subscribe to live trades before reading where each symbol stands, so
        // nothing published in between is missed.
        let subscriptions: Vec<LiveSubscription> = starts
            .iter()
            .map(|s| self.hub.subscribe(&s.symbol))
            .collect();
        let mut conn = self.redis.conn();
        let mut states = Vec::with_capacity(starts.len());
        // Polls only the subscriptions that were woken: a client of hundreds
        // of symbols gets their batches one by one on a Redis Cluster (a
        // live read per hash slot), and a map that polled every symbol for
        // each batch cost more than the rest of the stream.
        let mut live = futures_util::stream::SelectAll::new();
        for (i, (start, sub)) in starts.into_iter().zip(subscriptions).enumerate() {
            let last = tick_log::last_sequence(&mut conn, &self.keys, &start.symbol).await?;
            let next = match start.from {
                Some(from) if from > last + 1 => {
                    return Err(rewound(&sub.topic, last, from));
                }
                Some(from) => from.max(1),
                None => last + 1,
            };
            states.push(SymbolState {
                symbol: sub.topic.clone(),
                next,
            });
            live.push(SubscriptionStream::new(i, sub));
        }
        for state in &mut states {
            self.catch_up(&mut conn, state, None, tx).await?;
        }
        while let Some((i, item)) = live.next().await {
            let state = &mut states[i];
            match item {
                Ok(batch) => {
                    let after: u64 = batch
                        .after
                        .strip_prefix("0-")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if batch.rewound && after + 1 < state.next {
                        return Err(rewound(&state.symbol, after, state.next));
                    }
                    if batch.items.is_empty() && after + 1 < state.next {
                        // The hub started following the log where it ended
                        // then, before this client's position: either trades
                        // came since (fine), or the log went back while the
                        // hub was not following it yet. Look.
                        let last =
                            tick_log::last_sequence(&mut conn, &self.keys, &state.symbol).await?;
                        if last + 1 < state.next {
                            return Err(rewound(&state.symbol, last, state.next));
                        }
                    }
                    if batch.items.is_empty() && after >= state.next {
                        // The hub's announcement that it started following
                        // the log after `after`: entries up to it (written
                        // after this client read the log) never come live,
                        // so read them now. Without this a trade published
                        // between the catch-up and the tailer's start waited
                        // for the next trade of the symbol, or forever.
                        // Read to the log's end as it is now, not to
                        // `after`: a Redis that lost writes since the
                        // announcement has fewer entries, and those missing
                        // must not become a gap (their sequences will be
                        // given to new trades, which then come live).
                        self.catch_up(&mut conn, state, None, tx).await?;
                    }
                    let Some(first) = batch.items.first().map(|t| t.sequence) else {
                        continue;
                    };
                    if first > state.next {
                        self.catch_up(&mut conn, state, Some(first - 1), tx).await?;
                    }
                    let fresh: Vec<TradeRecord> = batch
                        .items
                        .iter()
                        .filter(|t| t.sequence >= state.next)
                        .cloned()
                        .collect();
                    if let Some(last) = fresh.last() {
                        state.next = last.sequence + 1;
                        self.send_trades(fresh, tx).await?;
                    }
                }
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    self.lag_recoveries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    subscriber.lagged();
                    tracing::debug!(symbol = %state.symbol, missed, "stream client lagged; catching up from the tick log");
                    self.catch_up(&mut conn, state, None, tx).await?;
                    subscriber.caught_up();
                }
            }
        }
        Err(Error::Unavailable("live feed ended".into()))
    }

    /// Delivers `state.next..=to` (or to the newest) from the tick log.
    async fn catch_up(
        &self,
        conn: &mut tickmesh_runtime::RedisConn,
        state: &mut SymbolState,
        to: Option<u64>,
        tx: &mpsc::Sender<Result<Chunk>>,
    ) -> Result<()> {
        loop {
            if to.is_some_and(|to| state.next > to) {
                return Ok(());
            }
            let page = tick_log::read_range(
                conn,
                &self.keys,
                &state.symbol,
                state.next,
                to,
                self.batch_max,
            )
            .await?;
            let mut chunk = Chunk::default();
            let full = page.len() == self.batch_max;
            match page.first() {
                Some(first) if first.sequence > state.next => {
                    chunk.gaps.push(self.gap(state, first.sequence - 1));
                }
                None => {
                    if let Some(to) = to {
                        chunk.gaps.push(self.gap(state, to));
                        state.next = to + 1;
                    }
                }
                _ => {}
            }
            if let Some(last) = page.last() {
                state.next = last.sequence + 1;
            }
            chunk.trades = page;
            if !chunk.trades.is_empty() || !chunk.gaps.is_empty() {
                send(tx, chunk).await?;
            }
            if !full {
                if let Some(to) = to
                    && state.next <= to
                {
                    let gap = self.gap(state, to);
                    state.next = to + 1;
                    send(
                        tx,
                        Chunk {
                            trades: Vec::new(),
                            gaps: vec![gap],
                        },
                    )
                    .await?;
                }
                return Ok(());
            }
        }
    }

    fn gap(&self, state: &SymbolState, last: u64) -> Gap {
        tracing::debug!(symbol = %state.symbol, first = state.next, last, "sequences no longer in the tick log");
        Gap {
            symbol: state.symbol.clone(),
            first: state.next,
            last,
        }
    }

    async fn send_trades(
        &self,
        trades: Vec<TradeRecord>,
        tx: &mpsc::Sender<Result<Chunk>>,
    ) -> Result<()> {
        if trades.len() <= self.batch_max {
            return send(
                tx,
                Chunk {
                    trades,
                    gaps: Vec::new(),
                },
            )
            .await;
        }
        for part in trades.chunks(self.batch_max) {
            send(
                tx,
                Chunk {
                    trades: part.to_vec(),
                    gaps: Vec::new(),
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// A cursor past the end of the tick log: sequences are given without holes,
/// so the log went back (Redis lost acknowledged writes in a crash or a
/// failover) and the sequences after its end will name other trades.
fn rewound(symbol: &str, end: u64, next: u64) -> Error {
    tracing::warn!(
        symbol,
        end,
        next,
        "stream cursor is past the end of the tick log (redis lost writes)"
    );
    Error::FailedPrecondition(format!(
        "the tick log of {symbol} ends at sequence {end}, before the requested sequence {next}: redis lost trades it had acknowledged (a crash or failover), and sequences after {end} will be given to new trades; resume from sequence {}",
        end + 1
    ))
}

async fn send(tx: &mpsc::Sender<Result<Chunk>>, chunk: Chunk) -> Result<()> {
    tx.send(Ok(chunk))
        .await
        .map_err(|_| Error::Unavailable("client went away".into()))
}

/// A live subscription as a stream of the client's `index`-th symbol's
/// batches, keeping the tailer's interest in the symbol alive as long as the
/// stream.
struct SubscriptionStream {
    index: usize,
    inner: BroadcastStream<crate::live::Batch>,
    _interest: Interest,
}

impl SubscriptionStream {
    fn new(index: usize, subscription: LiveSubscription) -> Self {
        Self {
            index,
            inner: BroadcastStream::new(subscription.rx),
            _interest: subscription.interest,
        }
    }
}

impl tokio_stream::Stream for SubscriptionStream {
    type Item = (
        usize,
        std::result::Result<crate::live::Batch, BroadcastStreamRecvError>,
    );

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let index = self.index;
        std::pin::Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|item| (index, item)))
    }
}
