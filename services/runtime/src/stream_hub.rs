//! Live fan-out of Redis Streams inside one instance.
//!
//! One tailer task per hub reads every topic (symbol) some local client
//! follows with a single blocking `XREAD` over their streams, and publishes
//! each topic's new entries as shared batches on a bounded broadcast channel.
//! So an entry written by any instance reaches clients on every instance,
//! Redis sees one reader per instance rather than one per client, and a slow
//! client only ever lags its channel (the caller then catches it up from the
//! stream itself) instead of growing a queue.
//!
//! On a Redis Cluster one `XREAD` cannot span hash slots, so the hub runs one
//! tailer per slot that has followed topics (a lane), each on a connection of
//! its own, started with the slot's first topic and ended with its last; a
//! lane blocks for at most [`CLUSTER_BLOCK`], so a topic joining a lane that
//! is already blocked waits at most that long for its first live batch
//! (subscribers catch up from the stream itself in the meantime).
//!
//! A Redis that comes back from a crash or a failover with less than it had
//! (an AOF that lost its last second, a replica that was behind) has streams
//! that end before where the tailer stood. At every reconnect the tailer looks
//! up each followed stream's end again; one that went back is followed from
//! its new end, and subscribers are told with a `rewound` batch, since ids
//! after that end will be given to new entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use redis::cluster_routing::Slot;
use tickmesh_core::Error;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::redis_conn::{RedisHandle, unavailable};

/// How one kind of stream maps to topics and items.
pub trait HubCodec: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    /// Redis stream key of a topic.
    fn key(&self, topic: &str) -> String;
    /// The topic of a stream key.
    fn topic<'a>(&self, key: &'a str) -> Option<&'a str>;
    /// Decodes one key's entries (an `XRANGE`-shaped array).
    fn decode(&self, topic: &Arc<str>, entries: Value) -> Result<Vec<Self::Item>, Error>;
    /// The stream entry id of an item, where reading continues after it.
    fn entry_id(&self, item: &Self::Item) -> String;
}

/// Entries of one topic, in stream order, as one `XREAD` returned them. The
/// first batch a topic's subscribers get has no items: it says where the
/// tailer started reading (`after`), so subscribers that read their state
/// before it know to read again.
pub type Batch<T> = Arc<BatchData<T>>;

#[derive(Debug)]
pub struct BatchData<T> {
    /// The entry id the read continued after: every entry between it and the
    /// first item was in an earlier batch. A reader whose own position is
    /// older than this has missed entries and must read them from the stream.
    pub after: String,
    pub items: Vec<T>,
    /// The stream went back to `after` (Redis lost entries the tailer had
    /// already read): entries after `after` are new, even where a reader had
    /// seen the same ids before.
    pub rewound: bool,
}

/// The ids of an `XRANGE`-shaped array of entries, for topics whose
/// subscribers only need to know that something was appended.
pub fn entry_ids(entries: Value, what: &str) -> Result<Vec<String>, Error> {
    let Value::Array(entries) = entries else {
        return Err(Error::Internal(format!("{what} entries are not a list")));
    };
    Ok(entries
        .into_iter()
        .filter_map(|e| match e {
            Value::Array(parts) => match parts.into_iter().next() {
                Some(Value::BulkString(id)) => Some(String::from_utf8_lossy(&id).into_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// Orders stream entry ids ("<ms>-<seq>") numerically.
pub fn id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(id: &str) -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
    parts(a).cmp(&parts(b))
}

/// How long one `XREAD` blocks; new topics interrupt it with `CLIENT UNBLOCK`.
const BLOCK: Duration = Duration::from_secs(5);
/// How long one lane's `XREAD` blocks on a cluster (no `CLIENT UNBLOCK` there:
/// a lane's connection has one link per node).
const CLUSTER_BLOCK: Duration = Duration::from_secs(1);
/// Entries per topic per `XREAD`.
const READ_COUNT: usize = 512;

pub struct StreamHub<C: HubCodec> {
    inner: Arc<Hub<C>>,
}

impl<C: HubCodec> Clone for StreamHub<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Hub<C: HubCodec> {
    redis: RedisHandle,
    codec: C,
    capacity: usize,
    feeds: Mutex<HashMap<Arc<str>, Feed<C::Item>>>,
    changed: Notify,
    /// Redis CLIENT ID of the tailer's connection (0: none yet).
    tailer_id: AtomicI64,
    started: std::sync::Once,
    /// On a cluster: the slots whose lane is running.
    lanes: Mutex<std::collections::HashSet<Slot>>,
    shutdown: CancellationToken,
}

struct Feed<T> {
    tx: broadcast::Sender<Batch<T>>,
    subscribers: usize,
    /// Where the tailer continues; `None` until it has looked.
    last_id: Option<String>,
}

/// A local client's live entries of one topic.
pub struct HubSubscription<C: HubCodec> {
    pub topic: Arc<str>,
    pub rx: broadcast::Receiver<Batch<C::Item>>,
    pub interest: Interest<C>,
}

/// Keeps the tailer following a topic; dropping it ends the interest.
pub struct Interest<C: HubCodec> {
    topic: Arc<str>,
    hub: Arc<Hub<C>>,
}

impl<C: HubCodec> Drop for Interest<C> {
    fn drop(&mut self) {
        let mut feeds = self.hub.feeds.lock().expect("hub feeds lock");
        if let Some(feed) = feeds.get_mut(&self.topic) {
            feed.subscribers -= 1;
            if feed.subscribers == 0 {
                feeds.remove(&self.topic);
            }
        }
    }
}

impl<C: HubCodec> StreamHub<C> {
    /// `capacity`: batches buffered per topic before a reader lags.
    pub fn new(redis: RedisHandle, codec: C, capacity: usize, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Hub {
                redis,
                codec,
                capacity,
                feeds: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                tailer_id: AtomicI64::new(0),
                started: std::sync::Once::new(),
                lanes: Mutex::new(std::collections::HashSet::new()),
                shutdown,
            }),
        }
    }

    pub fn codec(&self) -> &C {
        &self.inner.codec
    }

    /// Starts receiving the live entries of `topic`.
    pub fn subscribe(&self, topic: &str) -> HubSubscription<C> {
        let hub = &self.inner;
        if !hub.redis.is_cluster() {
            hub.started.call_once(|| {
                tokio::spawn(tail(self.inner.clone(), None));
            });
        }
        let (topic, rx, is_new) = {
            let mut feeds = hub.feeds.lock().expect("hub feeds lock");
            match feeds.get_key_value(topic).map(|(k, _)| k.clone()) {
                Some(key) => {
                    let feed = feeds.get_mut(&key).expect("present");
                    feed.subscribers += 1;
                    let rx = feed.tx.subscribe();
                    (key, rx, false)
                }
                None => {
                    let key: Arc<str> = Arc::from(topic);
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
        if hub.redis.is_cluster() {
            // After the topic is in `feeds`: a lane ending now either sees it
            // or is gone from `lanes` before this looks.
            let slot = Slot::for_key(hub.codec.key(&topic));
            if hub.lanes.lock().expect("hub lanes lock").insert(slot) {
                tokio::spawn(tail(self.inner.clone(), Some(slot)));
            }
        }
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
        HubSubscription {
            topic: topic.clone(),
            rx,
            interest: Interest {
                topic,
                hub: self.inner.clone(),
            },
        }
    }

    /// Topics the tailer currently follows.
    pub fn followed(&self) -> usize {
        self.inner.feeds.lock().expect("hub feeds lock").len()
    }
}

/// The id of the newest entry of a stream ("0-0" when empty or absent).
pub async fn last_entry_id<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    key: &str,
) -> Result<String, Error> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    if let Value::Array(entries) = reply
        && let Some(Value::Array(parts)) = entries.into_iter().next()
        && let Some(Value::BulkString(id)) = parts.into_iter().next()
    {
        return Ok(String::from_utf8_lossy(&id).into_owned());
    }
    Ok("0-0".into())
}

/// Whether a topic is read by the tailer of `lane` (`None`: the one tailer of a single node).
fn in_lane<C: HubCodec>(hub: &Hub<C>, topic: &str, lane: Option<Slot>) -> bool {
    lane.is_none_or(|slot| Slot::for_key(hub.codec.key(topic)) == slot)
}

async fn tail<C: HubCodec>(hub: Arc<Hub<C>>, lane: Option<Slot>) {
    let block = if lane.is_some() { CLUSTER_BLOCK } else { BLOCK };
    let mut backoff = Duration::from_millis(50);
    'connect: while !hub.shutdown.is_cancelled() {
        let mut conn = match hub.redis.dedicated(block).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "stream tailer cannot connect; retrying");
                sleep_or_shutdown(&hub, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if lane.is_none() {
            match redis::cmd("CLIENT")
                .arg("ID")
                .query_async::<i64>(&mut conn)
                .await
            {
                Ok(id) => hub.tailer_id.store(id, Ordering::Relaxed),
                Err(_) => continue 'connect,
            }
        }
        if revalidate(&hub, &mut conn, lane).await.is_err() {
            sleep_or_shutdown(&hub, backoff).await;
            continue 'connect;
        }
        loop {
            if hub.shutdown.is_cancelled() {
                break 'connect;
            }
            let read = match prepare_read(&hub, &mut conn, lane).await {
                Ok(Some(read)) => read,
                Ok(None) if lane.is_some() => {
                    // The lane's last topic left: end it, unless one joined meanwhile.
                    let feeds = hub.feeds.lock().expect("hub feeds lock");
                    if !feeds.keys().any(|t| in_lane(&hub, t, lane)) {
                        hub.lanes
                            .lock()
                            .expect("hub lanes lock")
                            .remove(&lane.expect("a lane"));
                        return;
                    }
                    continue;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = hub.changed.notified() => continue,
                        _ = hub.shutdown.cancelled() => break 'connect,
                    }
                }
                Err(_) => continue 'connect,
            };
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS");
            for (topic, _) in &read {
                cmd.arg(hub.codec.key(topic));
            }
            for (_, id) in &read {
                cmd.arg(id);
            }
            let reply: Value = tokio::select! {
                r = cmd.query_async(&mut conn) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "stream tailer read failed; reconnecting");
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

/// After a (re)connect: finds the followed streams that now end before where
/// the tailer stood, follows them from their new end and tells subscribers.
async fn revalidate<C: HubCodec>(
    hub: &Hub<C>,
    conn: &mut crate::RedisConn,
    lane: Option<Slot>,
) -> Result<(), Error> {
    let known: Vec<(Arc<str>, String)> = {
        let feeds = hub.feeds.lock().expect("hub feeds lock");
        feeds
            .iter()
            .filter(|(s, _)| in_lane(hub, s, lane))
            .filter_map(|(s, f)| f.last_id.clone().map(|id| (s.clone(), id)))
            .collect()
    };
    for (topic, was) in known {
        let now = last_entry_id(conn, &hub.codec.key(&topic)).await?;
        if id_cmp(&now, &was).is_ge() {
            continue;
        }
        tracing::warn!(topic = %topic, was = %was, now = %now, "stream went back after a redis restart or failover (redis lost entries); following it from its new end");
        if let Some(feed) = hub.feeds.lock().expect("hub feeds lock").get_mut(&topic)
            && feed.last_id.as_deref() == Some(was.as_str())
        {
            let _ = feed.tx.send(Arc::new(BatchData {
                after: now.clone(),
                items: Vec::new(),
                rewound: true,
            }));
            feed.last_id = Some(now);
        }
    }
    Ok(())
}

/// Topics to read and where to continue; looks up the end of new topics'
/// streams (subscribers catch up on older entries themselves).
async fn prepare_read<C: HubCodec>(
    hub: &Hub<C>,
    conn: &mut crate::RedisConn,
    lane: Option<Slot>,
) -> Result<Option<Vec<(Arc<str>, String)>>, Error> {
    let unknown: Vec<Arc<str>> = {
        let feeds = hub.feeds.lock().expect("hub feeds lock");
        if feeds.is_empty() {
            return Ok(None);
        }
        feeds
            .iter()
            .filter(|(s, f)| f.last_id.is_none() && in_lane(hub, s, lane))
            .map(|(s, _)| s.clone())
            .collect()
    };
    for topic in unknown {
        let id = last_entry_id(conn, &hub.codec.key(&topic)).await?;
        if let Some(feed) = hub.feeds.lock().expect("hub feeds lock").get_mut(&topic)
            && feed.last_id.is_none()
        {
            // Announce where reading starts: entries up to `id` were added
            // before the tailer followed the topic and are never delivered,
            // so a subscriber that read its state earlier reads it again.
            let _ = feed.tx.send(Arc::new(BatchData {
                after: id.clone(),
                items: Vec::new(),
                rewound: false,
            }));
            feed.last_id = Some(id);
        }
    }
    let feeds = hub.feeds.lock().expect("hub feeds lock");
    let read: Vec<_> = feeds
        .iter()
        .filter(|(s, _)| in_lane(hub, s, lane))
        .filter_map(|(s, f)| f.last_id.clone().map(|id| (s.clone(), id)))
        .collect();
    Ok((!read.is_empty()).then_some(read))
}

fn publish<C: HubCodec>(hub: &Hub<C>, reply: Value) {
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
        let Some(topic) = hub.codec.topic(&key) else {
            continue;
        };
        let mut feeds = hub.feeds.lock().expect("hub feeds lock");
        let Some(topic) = feeds.get_key_value(topic).map(|(k, _)| k.clone()) else {
            continue;
        };
        let feed = feeds.get_mut(&topic).expect("present");
        match hub.codec.decode(&topic, entries) {
            Ok(items) if !items.is_empty() => {
                let after = feed
                    .last_id
                    .replace(hub.codec.entry_id(items.last().expect("non-empty")));
                // No receiver is fine: the last one just left.
                let _ = feed.tx.send(Arc::new(BatchData {
                    after: after.unwrap_or_default(),
                    items,
                    rewound: false,
                }));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(topic = %topic, error = %e, "unreadable stream entries"),
        }
    }
}

async fn sleep_or_shutdown<C: HubCodec>(hub: &Hub<C>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = hub.shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert_eq!(id_cmp("10-0", "9-5"), std::cmp::Ordering::Greater);
        assert_eq!(id_cmp("0-10", "0-9"), std::cmp::Ordering::Greater);
        assert_eq!(id_cmp("5-1", "5-1"), std::cmp::Ordering::Equal);
    }
}
