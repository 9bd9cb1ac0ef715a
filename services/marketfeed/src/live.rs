//! Live fan-out inside one instance.
//!
//! One tailer task per instance reads every symbol some local client streams
//! with a single blocking `XREAD` over their tick logs, and publishes each
//! symbol's new trades as shared batches on a bounded broadcast channel. So a
//! trade ingested on any instance reaches clients on every instance, Redis
//! sees one reader per instance rather than one per client, and a slow client
//! only ever lags its channel (then [`crate::subscription`] catches it up from
//! the tick log) instead of growing a queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tickmesh_runtime::RedisHandle;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::keys::Keys;
use crate::model::TradeRecord;
use crate::tick_log;

/// Trades of one symbol, in sequence order, as one `XREAD` returned them.
pub type Batch = Arc<Vec<TradeRecord>>;

/// How long one `XREAD` blocks; new symbols interrupt it with `CLIENT UNBLOCK`.
const BLOCK: Duration = Duration::from_secs(5);
/// Entries per symbol per `XREAD`.
const READ_COUNT: usize = 512;

#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Hub>,
}

struct Hub {
    redis: RedisHandle,
    keys: Keys,
    capacity: usize,
    feeds: Mutex<HashMap<Arc<str>, Feed>>,
    changed: Notify,
    /// Redis CLIENT ID of the tailer's connection (0: none yet).
    tailer_id: AtomicI64,
    started: std::sync::Once,
    shutdown: CancellationToken,
}

struct Feed {
    tx: broadcast::Sender<Batch>,
    subscribers: usize,
    /// Where the tailer continues (`0-<seq>`); `None` until it has looked.
    last_id: Option<String>,
}

/// A local client's live trades of one symbol.
pub struct LiveSubscription {
    pub symbol: Arc<str>,
    pub rx: broadcast::Receiver<Batch>,
    pub interest: Interest,
}

/// Keeps the tailer following a symbol; dropping it ends the interest.
pub struct Interest {
    symbol: Arc<str>,
    hub: Arc<Hub>,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut feeds = self.hub.feeds.lock().expect("live feeds lock");
        if let Some(feed) = feeds.get_mut(&self.symbol) {
            feed.subscribers -= 1;
            if feed.subscribers == 0 {
                feeds.remove(&self.symbol);
            }
        }
    }
}

impl LiveHub {
    /// `capacity`: batches buffered per symbol before a reader lags.
    pub fn new(
        redis: RedisHandle,
        keys: Keys,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Hub {
                redis,
                keys,
                capacity,
                feeds: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                tailer_id: AtomicI64::new(0),
                started: std::sync::Once::new(),
                shutdown,
            }),
        }
    }

    /// Starts receiving the live trades of `symbol`.
    pub fn subscribe(&self, symbol: &str) -> LiveSubscription {
        let hub = &self.inner;
        hub.started.call_once(|| {
            tokio::spawn(tail(self.inner.clone()));
        });
        let (symbol, rx, is_new) = {
            let mut feeds = hub.feeds.lock().expect("live feeds lock");
            match feeds.get_key_value(symbol) {
                Some((key, _)) => {
                    let key = key.clone();
                    let feed = feeds.get_mut(&key).expect("present");
                    feed.subscribers += 1;
                    (key, feed.tx.subscribe(), false)
                }
                None => {
                    let key: Arc<str> = Arc::from(symbol);
                    let (tx, rx) = broadcast::channel(hub.capacity);
                    feeds.insert(
                        key.clone(),
                        Feed {
                            tx,
                            subscribers: 1,
                            last_id: None,
                        },
                    );
                    (key, rx, true)
                }
            }
        };
        if is_new {
            hub.changed.notify_one();
            let id = hub.tailer_id.load(Ordering::Relaxed);
            if id != 0 {
                let mut conn = hub.redis.conn();
                tokio::spawn(async move {
                    let _: Result<i64, _> = redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query_async(&mut conn)
                        .await;
                });
            }
        }
        LiveSubscription {
            symbol: symbol.clone(),
            rx,
            interest: Interest {
                symbol,
                hub: self.inner.clone(),
            },
        }
    }

    /// Symbols the tailer currently follows.
    pub fn followed(&self) -> usize {
        self.inner.feeds.lock().expect("live feeds lock").len()
    }
}

async fn tail(hub: Arc<Hub>) {
    let mut backoff = Duration::from_millis(50);
    'connect: while !hub.shutdown.is_cancelled() {
        let mut conn = match hub.redis.dedicated(BLOCK).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "live tailer cannot connect; retrying");
                sleep_or_shutdown(&hub, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        match redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut conn)
            .await
        {
            Ok(id) => hub.tailer_id.store(id, Ordering::Relaxed),
            Err(_) => continue 'connect,
        }
        loop {
            if hub.shutdown.is_cancelled() {
                break 'connect;
            }
            let Some(read) = prepare_read(&hub, &mut conn).await else {
                tokio::select! {
                    _ = hub.changed.notified() => continue,
                    _ = hub.shutdown.cancelled() => break 'connect,
                }
            };
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS");
            for (symbol, _) in &read {
                cmd.arg(hub.keys.tick_log(symbol));
            }
            for (_, id) in &read {
                cmd.arg(id);
            }
            let reply: Value = tokio::select! {
                r = cmd.query_async(&mut conn) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "live tailer read failed; reconnecting");
                        hub.tailer_id.store(0, Ordering::Relaxed);
                        sleep_or_shutdown(&hub, backoff).await;
                        continue 'connect;
                    }
                },
                _ = hub.shutdown.cancelled() => break 'connect,
            };
            backoff = Duration::from_millis(50);
            publish(&hub, reply);
        }
    }
    hub.tailer_id.store(0, Ordering::Relaxed);
}

/// Symbols to read and where to continue; looks up the start of new symbols.
async fn prepare_read(
    hub: &Hub,
    conn: &mut redis::aio::MultiplexedConnection,
) -> Option<Vec<(Arc<str>, String)>> {
    let unknown: Vec<Arc<str>> = {
        let feeds = hub.feeds.lock().expect("live feeds lock");
        if feeds.is_empty() {
            return None;
        }
        feeds
            .iter()
            .filter(|(_, f)| f.last_id.is_none())
            .map(|(s, _)| s.clone())
            .collect()
    };
    for symbol in unknown {
        // Start after the newest trade: subscribers catch up on older ones
        // from the tick log themselves.
        let seq = tick_log::last_sequence(conn, &hub.keys, &symbol)
            .await
            .ok()?;
        if let Some(feed) = hub.feeds.lock().expect("live feeds lock").get_mut(&symbol)
            && feed.last_id.is_none()
        {
            feed.last_id = Some(format!("0-{seq}"));
        }
    }
    let feeds = hub.feeds.lock().expect("live feeds lock");
    let read: Vec<_> = feeds
        .iter()
        .filter_map(|(s, f)| f.last_id.clone().map(|id| (s.clone(), id)))
        .collect();
    (!read.is_empty()).then_some(read)
}

fn publish(hub: &Hub, reply: Value) {
    let streams = match reply {
        Value::Array(streams) => streams,
        Value::Nil => return,
        other => {
            tracing::warn!(reply = ?other, "unexpected XREAD reply");
            return;
        }
    };
    for stream in streams {
        let Value::Array(mut parts) = stream else {
            continue;
        };
        if parts.len() != 2 {
            continue;
        }
        let entries = parts.pop().expect("two parts");
        let key = match parts.pop() {
            Some(Value::BulkString(k)) => String::from_utf8_lossy(&k).into_owned(),
            _ => continue,
        };
        let Some(symbol) = hub.keys.symbol_of_tick_log(&key) else {
            continue;
        };
        let mut feeds = hub.feeds.lock().expect("live feeds lock");
        let Some((symbol, feed)) = feeds
            .get_key_value(symbol)
            .map(|(k, _)| k.clone())
            .and_then(|k| feeds.get_mut(&k).map(|f| (k, f)))
        else {
            continue;
        };
        match tick_log::parse_entries(&symbol, entries) {
            Ok(trades) if !trades.is_empty() => {
                feed.last_id = Some(format!("0-{}", trades.last().expect("non-empty").sequence));
                // No receiver is fine: the last one just left.
                let _ = feed.tx.send(Arc::new(trades));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(symbol = %symbol, error = %e, "unreadable tick log entries"),
        }
    }
}

async fn sleep_or_shutdown(hub: &Hub, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = hub.shutdown.cancelled() => {}
    }
}
