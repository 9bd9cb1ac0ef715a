//! SubscribeCandles: a snapshot of the current candles, then every update from
//! the symbol's candle updates log, on any instance.
//!
//! Each message carries a cursor (the log entry id of its last update). A
//! client that resumes with it gets every update it missed, then live ones.
//! While catching up, updates to the same candle within a page are coalesced to
//! the latest state, which always includes the closing one (a closed candle's
//! later states stay closed), so extremes and closings are never lost. A slow
//! client lags the shared live buffer and is then served from the log: its
//! memory on the server stays bounded. A cursor older than the log gets a fresh
//! snapshot (`snapshot = true`) of the candles changed since the cursor's time.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Value;
use tickmesh_calendar::Interval;
use tickmesh_core::{Error, FieldViolation, Result};
use tickmesh_runtime::metrics::streams::LiveSubscriber;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::stream_hub::{HubCodec, StreamHub, id_cmp, last_entry_id};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;

use crate::candle::Candle;
use crate::keys::CandleKeys;
use crate::store::CandleStore;

/// One update from the log.
#[derive(Clone, Debug)]
pub struct Update {
    pub id: String,
    pub candle: Candle,
}

pub struct UpdateCodec {
    pub keys: CandleKeys,
}

impl HubCodec for UpdateCodec {
    type Item = Update;

    fn key(&self, symbol: &str) -> String {
        self.keys.updates(symbol)
    }

    fn topic<'a>(&self, key: &'a str) -> Option<&'a str> {
        self.keys.symbol_of_updates(key)
    }

    fn decode(&self, _symbol: &Arc<str>, entries: Value) -> Result<Vec<Update>> {
        decode_entries(entries)
    }

    fn entry_id(&self, update: &Update) -> String {
        update.id.clone()
    }
}

fn decode_entries(entries: Value) -> Result<Vec<Update>> {
    let Value::Array(entries) = entries else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let (Some(Value::Array(fields)), Some(Value::BulkString(id))) = (parts.pop(), parts.pop())
        else {
            continue;
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let mut it = fields.into_iter();
        while let (Some(Value::BulkString(name)), Some(Value::BulkString(value))) =
            (it.next(), it.next())
        {
            if name == b"c" {
                let text = String::from_utf8_lossy(&value);
                let candle = Candle::decode(&text)
                    .ok_or_else(|| Error::Internal(format!("unreadable candle update {text:?}")))?;
                out.push(Update {
                    id: id.clone(),
                    candle,
                });
            }
        }
    }
    Ok(out)
}

pub type UpdateHub = StreamHub<UpdateCodec>;

/// One message to a subscriber.
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub candles: Vec<Candle>,
    pub snapshot: bool,
    pub cursor: String,
    /// With indicators: the values of each candle, in the same order.
    pub indicators: Vec<crate::indicators::live::Values>,
}

/// Most candles in one message.
const PAGE: usize = 500;
/// Most candles per interval in a reset snapshot from Redis.
const RESET_PER_INTERVAL: usize = 1000;
/// Most candles per interval a recovery from the candles sends.
const RECOVER_PER_INTERVAL: usize = 10_000;
const QUEUE: usize = 4;

pub struct Subscriptions {
    pub store: Arc<CandleStore>,
    pub hub: UpdateHub,
    /// Reads candles across Redis and the history store (recovery).
    pub query: Arc<crate::query::QueryService>,
    pub late_window_ns: i64,
    /// Times a subscriber fell behind the live buffer and was caught up from the log.
    pub lag_recoveries: std::sync::atomic::AtomicU64,
}

/// A subscription position: the last updates-log entry delivered, and the
/// newest candle open time (s) delivered, which recovery starts from when the
/// log no longer reaches back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub entry: String,
    pub newest_open_s: Option<i64>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        match self.newest_open_s {
            Some(s) => format!("{}~{s}", self.entry),
            None => self.entry.clone(),
        }
    }
}

/// Parses a cursor ("<ms>-<n>" or "<ms>-<n>~<open s>").
pub fn parse_cursor(cursor: &str) -> std::result::Result<Cursor, FieldViolation> {
    let bad = || FieldViolation::new("cursor", "is not a cursor returned by SubscribeCandles");
    let (entry, newest) = match cursor.split_once('~') {
        Some((e, n)) => (e, Some(n.parse::<i64>().map_err(|_| bad())?)),
        None => (cursor, None),
    };
    let ok = entry.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
            && a.len() <= 20
            && b.len() <= 20
    });
    if !ok {
        return Err(bad());
    }
    Ok(Cursor {
        entry: entry.to_string(),
        newest_open_s: newest,
    })
}

/// Where a subscription stands; every message carries it as its cursor.
struct Position {
    cursor: Cursor,
    /// Indicator engines of the subscription (one per interval; none without indicators).
    engines: Arc<[Arc<crate::indicators::live::Engine>]>,
}

impl Position {
    /// Sends `candles`, advancing the log position to `entry` (when given)
    /// and the newest open time to the newest candle sent.
    async fn send(
        &mut self,
        candles: Vec<Candle>,
        snapshot: bool,
        entry: Option<String>,
        tx: &mpsc::Sender<Result<Message>>,
    ) -> Result<()> {
        if let Some(entry) = entry {
            self.cursor.entry = entry;
        }
        if let Some(newest) = candles.iter().map(|c| c.score()).max() {
            self.cursor.newest_open_s =
                Some(self.cursor.newest_open_s.map_or(newest, |n| n.max(newest)));
        }
        if candles.is_empty() && !snapshot {
            return Ok(());
        }
        let mut message = Message {
            candles,
            snapshot,
            cursor: self.cursor.encode(),
            indicators: Vec::new(),
        };
        if !self.engines.is_empty() {
            message = crate::indicators::live::with_values(message, &self.engines).await?;
        }
        send(tx, message).await
    }
}

impl Subscriptions {
    /// `engines`: the indicator engines of the subscription's intervals
    /// (empty without indicators); every candle sent then carries its values.
    pub fn start(
        self: &Arc<Self>,
        symbol: String,
        intervals: Vec<Interval>,
        cursor: Option<Cursor>,
        engines: Vec<Arc<crate::indicators::live::Engine>>,
        shutdown: CancellationToken,
    ) -> mpsc::Receiver<Result<Message>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                r = this.pump(&symbol, &intervals, cursor, engines.into(), &tx) => r,
                _ = shutdown.cancelled() => Err(Error::ShuttingDown("reconnect and resume with your last cursor".into())),
                _ = tx.closed() => Ok(()),
            };
            if let Err(e) = outcome {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    async fn pump(
        &self,
        symbol: &str,
        intervals: &[Interval],
        cursor: Option<Cursor>,
        engines: Arc<[Arc<crate::indicators::live::Engine>]>,
        tx: &mpsc::Sender<Result<Message>>,
    ) -> Result<()> {
        let subscriber = LiveSubscriber::new("candles");
        let subscription = self.hub.subscribe(symbol);
        let mut live = BroadcastStream::new(subscription.rx);
        let _interest = subscription.interest;
        let key = self.store.keys.updates(symbol);
        let mut conn = self.store.redis.conn();
        let mut pos = match cursor {
            None => {
                let entry = last_entry_id(&mut conn, &key).await?;
                let mut candles = Vec::new();
                for &interval in intervals {
                    candles.extend(
                        self.store
                            .range(symbol, interval, "-inf", "+inf", true, 1)
                            .await?,
                    );
                }
                let mut pos = Position {
                    cursor: Cursor {
                        entry: entry.clone(),
                        newest_open_s: None,
                    },
                    engines: engines.clone(),
                };
                pos.send(candles, true, Some(entry), tx).await?;
                pos
            }
            Some(cursor) => {
                let first: Value = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                let first_id = decode_entries(first)?.into_iter().next().map(|u| u.id);
                let mut pos = Position {
                    cursor: cursor.clone(),
                    engines: engines.clone(),
                };
                if first_id.is_some_and(|f| id_cmp(&f, &cursor.entry).is_gt()) {
                    self.recover(symbol, intervals, &mut pos, tx).await?;
                }
                pos
            }
        };
        self.catch_up(&key, intervals, &mut pos, None, tx).await?;
        while let Some(item) = live.next().await {
            match item {
                Ok(batch) => {
                    if batch.rewound {
                        // Redis came back with fewer updates than this client
                        // may have seen: send the candles as they are now.
                        self.reset_from_redis(symbol, intervals, &mut pos, batch.after.clone(), tx)
                            .await?;
                        continue;
                    }
                    if id_cmp(&batch.after, &pos.cursor.entry).is_gt() {
                        let upto = batch.after.clone();
                        self.catch_up(&key, intervals, &mut pos, Some(&upto), tx)
                            .await?;
                    }
                    let updates: Vec<Update> = batch
                        .items
                        .iter()
                        .filter(|u| id_cmp(&u.id, &pos.cursor.entry).is_gt())
                        .cloned()
                        .collect();
                    if let Some(end) = updates.last().map(|u| u.id.clone()) {
                        let candles: Vec<Candle> = updates
                            .into_iter()
                            .map(|u| u.candle)
                            .filter(|c| intervals.contains(&c.interval))
                            .collect();
                        pos.send(candles, false, Some(end), tx).await?;
                    }
                }
                Err(BroadcastStreamRecvError::Lagged(_)) => {
                    self.lag_recoveries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    subscriber.lagged();
                    self.catch_up(&key, intervals, &mut pos, None, tx).await?;
                    subscriber.caught_up();
                }
            }
        }
        Err(Error::Unavailable("live candle feed ended".into()))
    }

    /// Sends the log's updates after the position (up to `upto`), coalesced per page.
    async fn catch_up(
        &self,
        key: &str,
        intervals: &[Interval],
        pos: &mut Position,
        upto: Option<&str>,
        tx: &mpsc::Sender<Result<Message>>,
    ) -> Result<()> {
        let mut conn = self.store.redis.conn();
        loop {
            let reply: Value = redis::cmd("XRANGE")
                .arg(key)
                .arg(format!("({}", pos.cursor.entry))
                .arg(upto.unwrap_or("+"))
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let page = decode_entries(reply)?;
            let Some(end) = page.last().map(|u| u.id.clone()) else {
                return Ok(());
            };
            let full = page.len() == PAGE;
            let candles = coalesce(
                page.into_iter()
                    .map(|u| u.candle)
                    .filter(|c| intervals.contains(&c.interval)),
            );
            pos.send(candles, false, Some(end), tx).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// The cursor is older than the updates log: rebuild from the candles
    /// themselves — from the history store and Redis — starting at the newest
    /// candle the client had (less the late window, whose candles may have
    /// been corrected since), then continue from the log. Messages of the
    /// recovery have `snapshot = true`. A cursor without a newest open time
    /// (or a deployment without a history store) falls back to the candles
    /// Redis wrote since the cursor's time.
    async fn recover(
        &self,
        symbol: &str,
        intervals: &[Interval],
        pos: &mut Position,
        tx: &mpsc::Sender<Result<Message>>,
    ) -> Result<()> {
        let mut conn = self.store.redis.conn();
        // Read the log position first: updates after it are caught up next.
        let entry = last_entry_id(&mut conn, &self.store.keys.updates(symbol)).await?;
        let Some(newest) = pos.cursor.newest_open_s else {
            return self
                .reset_from_redis(symbol, intervals, pos, entry, tx)
                .await;
        };
        let mut sent_any = false;
        for &interval in intervals {
            let from_ns = newest
                .saturating_sub(crate::store::interval_upper_bound_s(interval))
                .saturating_mul(1_000_000_000)
                .saturating_sub(self.late_window_ns);
            let mut token = String::new();
            let mut count = 0;
            loop {
                let (page, next) = self
                    .query
                    .get_candles(crate::query::CandlesQuery {
                        symbol: symbol.to_string(),
                        interval: interval.to_string(),
                        start_ns: Some(from_ns),
                        end_ns: None,
                        page_size: PAGE as i32,
                        page_token: token,
                        newest_first: false,
                        fill: false,
                    })
                    .await?;
                count += page.len();
                sent_any |= !page.is_empty();
                pos.send(page, true, None, tx).await?;
                if next.is_empty() || count >= RECOVER_PER_INTERVAL {
                    break;
                }
                token = next;
            }
        }
        pos.send(Vec::new(), !sent_any, Some(entry), tx).await
    }

    /// Without a history position: the candles Redis wrote since the cursor's time.
    async fn reset_from_redis(
        &self,
        symbol: &str,
        intervals: &[Interval],
        pos: &mut Position,
        entry: String,
        tx: &mpsc::Sender<Result<Message>>,
    ) -> Result<()> {
        let cursor_ms: i64 = pos
            .cursor
            .entry
            .split_once('-')
            .and_then(|(ms, _)| ms.parse().ok())
            .unwrap_or(0);
        let since_ns = cursor_ms.saturating_mul(1_000_000);
        let mut candles = Vec::new();
        for &interval in intervals {
            // Writes happen mostly at the newest candles: scan back from there
            // until a whole page holds nothing newer than the cursor.
            let mut changed = Vec::new();
            let mut max = "+inf".to_string();
            loop {
                let page = self
                    .store
                    .range(symbol, interval, "-inf", &max, true, PAGE)
                    .await?;
                let before = changed.len();
                changed.extend(page.iter().filter(|c| c.updated_ns > since_ns).cloned());
                let done = page.len() < PAGE
                    || changed.len() == before
                    || changed.len() >= RESET_PER_INTERVAL;
                if let Some(oldest) = page.last() {
                    max = format!("({}", oldest.score());
                }
                if done {
                    break;
                }
            }
            changed.truncate(RESET_PER_INTERVAL);
            changed.reverse();
            candles.extend(changed);
        }
        pos.send(candles, true, Some(entry), tx).await
    }
}

/// Keeps the last state of each candle, in the order of those last states.
fn coalesce(candles: impl Iterator<Item = Candle>) -> Vec<Candle> {
    let all: Vec<Candle> = candles.collect();
    let mut last_at: HashMap<(Interval, i64), usize> = HashMap::new();
    for (i, c) in all.iter().enumerate() {
        last_at.insert((c.interval, c.bucket.open_ns), i);
    }
    all.into_iter()
        .enumerate()
        .filter(|(i, c)| last_at[&(c.interval, c.bucket.open_ns)] == *i)
        .map(|(_, c)| c)
        .collect()
}

async fn send(tx: &mpsc::Sender<Result<Message>>, message: Message) -> Result<()> {
    tx.send(Ok(message))
        .await
        .map_err(|_| Error::Unavailable("client went away".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(
            parse_cursor("1700000000000-0").unwrap(),
            Cursor {
                entry: "1700000000000-0".into(),
                newest_open_s: None
            }
        );
        let c = parse_cursor("1700000000000-4~1704067200").unwrap();
        assert_eq!(
            (c.entry.as_str(), c.newest_open_s),
            ("1700000000000-4", Some(1_704_067_200))
        );
        assert_eq!(parse_cursor(&c.encode()).unwrap(), c);
        for bad in ["", "abc", "1-", "-1", "1-2-3", "x-1", "1-2~", "1-2~x", "~5"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
