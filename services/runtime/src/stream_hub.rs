//! Live fan-out of Redis Streams inside one instance.
//!
//! One tailer task per hub reads every topic (symbol) some local client
//! follows with a single blocking `XREAD` over their streams, and publishes
//! each topic's new entries as shared batches on a bounded broadcast channel.
//! So an entry written by any instance reaches clients on every instance,
//! Redis sees one reader per instance rather than one per client, and a slow
//! client only ever lags its channel (the caller then catches it up from the
//! stream itself) instead of growing a queue. A topic that starts being
//! followed wakes the blocked read with `CLIENT UNBLOCK`.
//!
//! On a Redis Cluster one `XREAD` cannot span hash slots, and a blocked
//! `XREAD` holds the connection it was sent on, so the hub runs one tailer per
//! slot that has followed topics (a lane), started with the slot's first
//! topic and ended with its last. Each lane keeps the list of its own topics
//! (a lane's read costs what its topics cost, however many the hub follows)
//! and blocks on a link of its own to the slot's master: lanes borrow
//! dedicated cluster connections (readers), one lane per master on each, so
//! a connection serves a lane on every master at once, and connections
//! outlive their lanes for a while. A topic joining a lane that is blocked
//! wakes it with `CLIENT UNBLOCK` sent to that master. A lane blocks for at
//! most [`CLUSTER_BLOCK`], the longest it takes to notice that its slot moved
//! to another master.
//!
//! A Redis that comes back from a crash or a failover with less than it had
//! (an AOF that lost its last second, a replica that was behind) has streams
//! that end before where the tailer stood. At every reconnect the tailer looks
//! up each followed stream's end again; one that went back is followed from
//! its new end, and subscribers are told with a `rewound` batch, since ids
//! after that end will be given to new entries.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use tickmesh_core::Error;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::RedisConn;
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
/// How long one lane's `XREAD` blocks on a cluster: new topics interrupt it
/// too, but a lane only sees that its slot moved to another master (a
/// reshard) when a read ends.
const CLUSTER_BLOCK: Duration = Duration::from_secs(1);
/// How often a lane that never waits out its block checks that its slot is
/// still on the master it claimed a link to.
const LANE_RECHECK: Duration = Duration::from_secs(10);
/// How long a cluster connection no lane blocks on is kept for the next lane.
const READER_IDLE: Duration = Duration::from_secs(30);
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
    state: Mutex<State<C::Item>>,
    changed: Notify,
    /// Redis CLIENT ID of the tailer's connection (0: none yet).
    tailer_id: AtomicI64,
    started: std::sync::Once,
    /// On a cluster: the connections lanes block on.
    readers: Mutex<Readers>,
    shutdown: CancellationToken,
}

struct State<T> {
    feeds: HashMap<Arc<str>, Feed<T>>,
    /// On a cluster: the lanes running, by slot.
    lanes: HashMap<Slot, Lane>,
}

impl<T> State<T> {
    /// The topics the tailer of `lane` reads (`None`: the one tailer of a
    /// single node, which reads them all).
    fn followed(&self, lane: Option<Slot>) -> Box<dyn Iterator<Item = (&Arc<str>, &Feed<T>)> + '_> {
        match lane {
            None => Box::new(self.feeds.iter()),
            Some(slot) => Box::new(
                self.lanes
                    .get(&slot)
                    .into_iter()
                    .flat_map(|l| l.topics.iter())
                    .filter_map(|t| self.feeds.get_key_value(t)),
            ),
        }
    }
}

struct Feed<T> {
    tx: broadcast::Sender<Batch<T>>,
    subscribers: usize,
    /// Where the tailer continues; `None` until it has looked.
    last_id: Option<String>,
    /// The topic's stream key.
    key: String,
}

/// One slot's tailer on a cluster.
struct Lane {
    topics: HashSet<Arc<str>>,
    /// Where the lane's `XREAD` blocks; `None` while it (re)connects.
    link: Option<LaneLink>,
}

/// A lane's connection to its slot's master, as that master names them.
#[derive(Clone, Debug)]
struct LaneLink {
    /// `CLUSTER MYID` of the master.
    node: String,
    /// `CLIENT ID` of the lane's connection on it.
    client_id: i64,
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
        let mut state = self.hub.state.lock().expect("hub state lock");
        let Some(feed) = state.feeds.get_mut(&self.topic) else {
            return;
        };
        feed.subscribers -= 1;
        if feed.subscribers == 0 {
            let feed = state.feeds.remove(&self.topic).expect("present");
            // The lane ends at its next read when this was its last topic.
            if let Some(lane) = state.lanes.get_mut(&Slot::for_key(&feed.key)) {
                lane.topics.remove(&self.topic);
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
                state: Mutex::new(State {
                    feeds: HashMap::new(),
                    lanes: HashMap::new(),
                }),
                changed: Notify::new(),
                tailer_id: AtomicI64::new(0),
                started: std::sync::Once::new(),
                readers: Mutex::new(Readers::default()),
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
        let cluster = hub.redis.is_cluster();
        if !cluster {
            hub.started.call_once(|| {
                tokio::spawn(tail(self.inner.clone()));
            });
        }
        let (topic, rx, is_new, wake) = {
            let mut state = hub.state.lock().expect("hub state lock");
            let (topic, rx, key) = match state.feeds.get_key_value(topic).map(|(k, _)| k.clone()) {
                Some(topic) => {
                    let feed = state.feeds.get_mut(&topic).expect("present");
                    feed.subscribers += 1;
                    (topic, feed.tx.subscribe(), None)
                }
                None => {
                    let topic: Arc<str> = Arc::from(topic);
                    let (tx, rx) = broadcast::channel(hub.capacity);
                    let key = hub.codec.key(&topic);
                    state.feeds.insert(
                        topic.clone(),
                        Feed {
                            tx,
                            subscribers: 1,
                            last_id: None,
                            key: key.clone(),
                        },
                    );
                    (topic, rx, Some(key))
                }
            };
            let mut wake = None;
            if cluster && let Some(key) = &key {
                let slot = Slot::for_key(key);
                match state.lanes.entry(slot) {
                    Entry::Occupied(mut lane) => {
                        let lane = lane.get_mut();
                        lane.topics.insert(topic.clone());
                        wake = lane.link.clone().map(|link| (slot, link));
                    }
                    Entry::Vacant(lane) => {
                        lane.insert(Lane {
                            topics: HashSet::from([topic.clone()]),
                            link: None,
                        });
                        tokio::spawn(run_lane(self.inner.clone(), slot));
                    }
                }
            }
            (topic, rx, key.is_some(), wake)
        };
        if let Some((slot, link)) = wake {
            let mut conn = hub.redis.conn();
            tokio::spawn(async move { unblock_lane(&mut conn, slot, &link).await });
        }
        if is_new && !cluster {
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
        self.inner.state.lock().expect("hub state lock").feeds.len()
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

/// The single node's tailer: every followed topic in one `XREAD`.
async fn tail<C: HubCodec>(hub: Arc<Hub<C>>) {
    let mut backoff = Duration::from_millis(50);
    'connect: while !hub.shutdown.is_cancelled() {
        let mut conn = match hub.redis.dedicated(BLOCK).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "stream tailer cannot connect; retrying");
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
        if revalidate(&hub, &mut conn, None).await.is_err() {
            sleep_or_shutdown(&hub, backoff).await;
            continue 'connect;
        }
        loop {
            if hub.shutdown.is_cancelled() {
                break 'connect;
            }
            let read = match prepare_read(&hub, &mut conn, None).await {
                Ok(Some(read)) => read,
                Ok(None) => {
                    tokio::select! {
                        _ = hub.changed.notified() => continue,
                        _ = hub.shutdown.cancelled() => break 'connect,
                    }
                }
                Err(_) => continue 'connect,
            };
            let cmd = xread(&read, BLOCK);
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

/// `XREAD` of `read`'s streams from where each continues.
fn xread(read: &[(String, String)], block: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS");
    for (key, _) in read {
        cmd.arg(key);
    }
    for (_, id) in read {
        cmd.arg(id);
    }
    cmd
}

/// Why a lane let go of its link.
enum LaneExit {
    /// Its last topic left, or the hub shuts down.
    Done,
    /// Redis failed: claim a link again after a pause.
    Failed,
    /// The slot is on another master now: claim a link to it at once.
    Moved,
}

/// One slot's tailer on a cluster, from the slot's first topic to its last.
async fn run_lane<C: HubCodec>(hub: Arc<Hub<C>>, slot: Slot) {
    let mut backoff = Duration::from_millis(50);
    while !hub.shutdown.is_cancelled() {
        let exit = match Claim::take(&hub, slot).await {
            Ok(claim) => {
                let exit = read_lane(&hub, slot, &claim, &mut backoff).await;
                if let Some(lane) = hub
                    .state
                    .lock()
                    .expect("hub state lock")
                    .lanes
                    .get_mut(&slot)
                {
                    lane.link = None;
                }
                exit
            }
            Err(e) => {
                tracing::debug!(error = %e, "stream lane cannot claim a link to its master; retrying");
                LaneExit::Failed
            }
        };
        match exit {
            LaneExit::Done => return,
            LaneExit::Moved => {}
            LaneExit::Failed => {
                sleep_or_shutdown(&hub, backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        // Ends with the slot's last topic even while Redis is down.
        if ended(&hub, slot) {
            return;
        }
    }
}

/// Reads the lane's topics over its claimed link until it has to let go.
async fn read_lane<C: HubCodec>(
    hub: &Hub<C>,
    slot: Slot,
    claim: &Claim<'_, C>,
    backoff: &mut Duration,
) -> LaneExit {
    let mut conn = claim.conn.clone();
    if revalidate(hub, &mut conn, Some(slot)).await.is_err() {
        return LaneExit::Failed;
    }
    let mut checked = Instant::now();
    loop {
        if hub.shutdown.is_cancelled() {
            return LaneExit::Done;
        }
        let read = match prepare_read(hub, &mut conn, Some(slot)).await {
            Ok(Some(read)) => read,
            Ok(None) => return LaneExit::Done,
            Err(_) => return LaneExit::Failed,
        };
        let cmd = xread(&read, CLUSTER_BLOCK);
        let reply: Value = tokio::select! {
            r = cmd.query_async(&mut conn) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "stream lane read failed; reconnecting");
                    return LaneExit::Failed;
                }
            },
            _ = hub.shutdown.cancelled() => return LaneExit::Done,
        };
        *backoff = Duration::from_millis(50);
        publish(hub, reply);
        if checked.elapsed() >= LANE_RECHECK {
            checked = Instant::now();
            match link_of(&mut conn, slot).await {
                Ok(link) if link.node == claim.node => set_link(hub, slot, link),
                Ok(_) => return LaneExit::Moved,
                Err(_) => return LaneExit::Failed,
            }
        }
    }
}

/// Ends the lane of `slot` if it has no topic left; true when it did.
fn ended<C: HubCodec>(hub: &Hub<C>, slot: Slot) -> bool {
    let mut state = hub.state.lock().expect("hub state lock");
    if state.lanes.get(&slot).is_some_and(|l| l.topics.is_empty()) {
        state.lanes.remove(&slot);
        return true;
    }
    false
}

fn set_link<C: HubCodec>(hub: &Hub<C>, slot: Slot, link: LaneLink) {
    if let Some(lane) = hub
        .state
        .lock()
        .expect("hub state lock")
        .lanes
        .get_mut(&slot)
    {
        lane.link = Some(link);
    }
}

/// Routes to the master serving `slot`.
fn slot_master(slot: Slot) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::SpecificNode(Route::with_slot(slot, SlotAddr::Master))
}

fn cluster_conn(conn: &mut RedisConn) -> Result<&mut ClusterConnection, Error> {
    match conn {
        RedisConn::Cluster(c) => Ok(c),
        _ => Err(Error::Internal(
            "a stream lane needs a cluster connection".into(),
        )),
    }
}

/// The master `conn` sends `slot`'s commands to, and the id of `conn`'s
/// connection there.
async fn link_of(conn: &mut RedisConn, slot: Slot) -> Result<LaneLink, Error> {
    let mut pipe = redis::pipe();
    pipe.cmd("CLUSTER").arg("MYID").cmd("CLIENT").arg("ID");
    let replies = cluster_conn(conn)?
        .route_pipeline(pipe, 0, 2, slot_master(slot))
        .await
        .map_err(unavailable)?;
    let (node, client_id): (String, i64) = redis::from_redis_value(Value::Array(replies))
        .map_err(|e| Error::Internal(format!("CLUSTER MYID and CLIENT ID: {e}")))?;
    Ok(LaneLink { node, client_id })
}

/// The node id of the master `conn` sends `slot`'s commands to.
async fn master_id(conn: &mut RedisConn, slot: Slot) -> Result<String, Error> {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("MYID");
    let reply = cluster_conn(conn)?
        .route_command(cmd, RoutingInfo::SingleNode(slot_master(slot)))
        .await
        .map_err(unavailable)?;
    redis::from_redis_value(reply).map_err(|e| Error::Internal(format!("CLUSTER MYID: {e}")))
}

/// Wakes a lane blocked on `link`, so it reads a topic that just joined.
async fn unblock_lane(conn: &mut RedisConn, slot: Slot, link: &LaneLink) {
    // A client id names a different client on another master: only send it
    // to the master the lane blocks on (a failover or a reshard may have
    // moved the slot since; the lane then claims a new link by itself).
    if master_id(conn, slot).await.ok().as_deref() != Some(link.node.as_str()) {
        return;
    }
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("UNBLOCK").arg(link.client_id);
    if let Ok(c) = cluster_conn(conn) {
        let _ = c
            .route_command(cmd, RoutingInfo::SingleNode(slot_master(slot)))
            .await;
    }
}

/// On a cluster, the dedicated connections lanes block on. A blocked `XREAD`
/// holds the link to one master, and a cluster connection has one link per
/// node, so each connection carries at most one lane per master: a lane
/// borrows the first whose link to its slot's master is free.
#[derive(Default)]
struct Readers {
    next_id: u64,
    all: Vec<Reader>,
}

struct Reader {
    id: u64,
    /// Connected by the first lane that needs it.
    conn: Arc<tokio::sync::OnceCell<RedisConn>>,
    /// Masters (node ids) a lane blocks on over this connection.
    busy: HashSet<String>,
    /// Since when no lane uses it.
    idle_since: Option<Instant>,
}

impl Readers {
    /// Drops connections no lane has used for [`READER_IDLE`].
    fn prune(&mut self, now: Instant) {
        self.all.retain(|r| {
            r.idle_since
                .is_none_or(|t| now.duration_since(t) < READER_IDLE)
        });
    }
}

/// A lane's link: a reader's connection to the slot's master, the master
/// marked busy on it until dropped.
struct Claim<'a, C: HubCodec> {
    hub: &'a Hub<C>,
    reader: u64,
    node: String,
    conn: RedisConn,
}

impl<'a, C: HubCodec> Claim<'a, C> {
    /// Claims a free link to the master of `slot`, and records it for
    /// `CLIENT UNBLOCK`.
    async fn take(hub: &'a Hub<C>, slot: Slot) -> Result<Self, Error> {
        let mut node = master_id(&mut hub.redis.conn(), slot).await?;
        // The reader's view of the slot map may lag the shared connection's:
        // claim the master the reader actually sends to.
        for _ in 0..3 {
            let mut claim = Self::on(hub, node).await?;
            let link = link_of(&mut claim.conn, slot).await?;
            if link.node == claim.node {
                set_link(hub, slot, link);
                return Ok(claim);
            }
            node = link.node;
        }
        Err(Error::Unavailable(
            "redis: the master of a stream lane's slot keeps changing".into(),
        ))
    }

    /// Marks `node` busy on the first reader where it is free, or on a new
    /// one. A new reader is listed before it connects, so lanes that start
    /// together (a client following hundreds of symbols) share it.
    async fn on(hub: &'a Hub<C>, node: String) -> Result<Self, Error> {
        let (reader, cell) = {
            let mut readers = hub.readers.lock().expect("hub readers lock");
            readers.prune(Instant::now());
            let index = match readers.all.iter().position(|r| !r.busy.contains(&node)) {
                Some(i) => i,
                None => {
                    let id = readers.next_id;
                    readers.next_id += 1;
                    readers.all.push(Reader {
                        id,
                        conn: Arc::new(tokio::sync::OnceCell::new()),
                        busy: HashSet::new(),
                        idle_since: None,
                    });
                    readers.all.len() - 1
                }
            };
            let r = &mut readers.all[index];
            r.busy.insert(node.clone());
            r.idle_since = None;
            (r.id, r.conn.clone())
        };
        // On failure the reader stays listed without a connection: the next
        // lane to pick it connects again.
        let conn = match cell
            .get_or_try_init(|| hub.redis.dedicated(CLUSTER_BLOCK))
            .await
        {
            Ok(conn) => conn.clone(),
            Err(e) => {
                release(hub, reader, &node);
                return Err(e);
            }
        };
        Ok(Self {
            hub,
            reader,
            node,
            conn,
        })
    }
}

impl<C: HubCodec> Drop for Claim<'_, C> {
    fn drop(&mut self) {
        release(self.hub, self.reader, &self.node);
    }
}

/// Frees `node`'s link on `reader`.
fn release<C: HubCodec>(hub: &Hub<C>, reader: u64, node: &str) {
    let now = Instant::now();
    let mut readers = hub.readers.lock().expect("hub readers lock");
    if let Some(r) = readers.all.iter_mut().find(|r| r.id == reader) {
        r.busy.remove(node);
        if r.busy.is_empty() {
            r.idle_since = Some(now);
        }
    }
    readers.prune(now);
}

/// After a (re)connect: finds the followed streams that now end before where
/// the tailer stood, follows them from their new end and tells subscribers.
async fn revalidate<C: HubCodec>(
    hub: &Hub<C>,
    conn: &mut RedisConn,
    lane: Option<Slot>,
) -> Result<(), Error> {
    let known: Vec<(Arc<str>, String, String)> = {
        let state = hub.state.lock().expect("hub state lock");
        state
            .followed(lane)
            .filter_map(|(t, f)| f.last_id.clone().map(|id| (t.clone(), f.key.clone(), id)))
            .collect()
    };
    for (topic, key, was) in known {
        let now = last_entry_id(conn, &key).await?;
        if id_cmp(&now, &was).is_ge() {
            continue;
        }
        tracing::warn!(topic = %topic, was = %was, now = %now, "stream went back after a redis restart or failover (redis lost entries); following it from its new end");
        if let Some(feed) = hub
            .state
            .lock()
            .expect("hub state lock")
            .feeds
            .get_mut(&topic)
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

/// The streams to read (key, where to continue); looks up the end of new
/// topics' streams (subscribers catch up on older entries themselves).
/// `None` when there is nothing to read: the single node's tailer then waits
/// for a topic, and a lane whose last topic left has ended.
async fn prepare_read<C: HubCodec>(
    hub: &Hub<C>,
    conn: &mut RedisConn,
    lane: Option<Slot>,
) -> Result<Option<Vec<(String, String)>>, Error> {
    loop {
        let unknown: Vec<(Arc<str>, String)> = {
            let state = hub.state.lock().expect("hub state lock");
            state
                .followed(lane)
                .filter(|(_, f)| f.last_id.is_none())
                .map(|(t, f)| (t.clone(), f.key.clone()))
                .collect()
        };
        for (topic, key) in unknown {
            let id = last_entry_id(conn, &key).await?;
            if let Some(feed) = hub
                .state
                .lock()
                .expect("hub state lock")
                .feeds
                .get_mut(&topic)
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
        let mut state = hub.state.lock().expect("hub state lock");
        let read: Vec<(String, String)> = state
            .followed(lane)
            .filter_map(|(_, f)| f.last_id.clone().map(|id| (f.key.clone(), id)))
            .collect();
        if !read.is_empty() {
            return Ok(Some(read));
        }
        match lane {
            None => return Ok(None),
            Some(slot) => {
                // Under the lock that joins topics to lanes: a topic that
                // joins after this starts a new lane.
                if state.lanes.get(&slot).is_none_or(|l| l.topics.is_empty()) {
                    state.lanes.remove(&slot);
                    return Ok(None);
                }
                // A topic joined meanwhile: look up where it ends.
            }
        }
    }
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
        let mut state = hub.state.lock().expect("hub state lock");
        let Some(topic) = state.feeds.get_key_value(topic).map(|(k, _)| k.clone()) else {
            continue;
        };
        let feed = state.feeds.get_mut(&topic).expect("present");
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
