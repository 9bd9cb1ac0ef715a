//! The Queue domain: what each RPC does, in plain Rust. The gRPC adapter
//! ([`crate::grpc`]) only converts messages and errors.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::ids::check_text_id;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::QueueConfig;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::replica_acks::ReplicaAcks;
use tickmesh_runtime::stream_hub::StreamHub;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admitter, PassOutcome};
use crate::clock::Clock;
use crate::keys::Keys;
use crate::places::{Places, Standing};
use crate::room::{Room, RoomRequest, RoomStore, check_room_id};
use crate::stock::StockSource;
use crate::token::{Claims, Keyring, Kind};
use crate::watch::ChangeCodec;

pub const MAX_USER_BYTES: usize = 256;
/// Change batches buffered per watched room per instance.
const WATCH_BUFFER: usize = 64;

/// Where a user stands, with the admission token once admitted.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    pub standing: Standing,
    /// Empty unless admitted.
    pub admission_token: String,
}

/// A room's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoomStats {
    pub waiting: u64,
    pub pre_queue: u64,
    pub active: u64,
    pub served: u64,
    pub measured_rate: f64,
    pub sold_out: bool,
}

const SET_SOLD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'sold') or '0'
if old == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sold', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'k', 's', 'x', 0, 'u', '')
return 1
"#;

pub struct Queue {
    pub(crate) config: QueueConfig,
    redis: RedisHandle,
    keys: Keys,
    pub(crate) rooms: RoomStore,
    pub(crate) places: Places,
    admitter: Admitter,
    keyring: Keyring,
    clock: Arc<dyn Clock>,
    pub(crate) hub: StreamHub<ChangeCodec>,
    pub(crate) stock: Option<Arc<dyn StockSource>>,
    pub(crate) shutdown: CancellationToken,
    set_sold: redis::Script,
}

impl Queue {
    pub fn new(
        config: QueueConfig,
        redis: RedisHandle,
        keyring: Keyring,
        clock: Arc<dyn Clock>,
        stock: Option<Arc<dyn StockSource>>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let keys = Keys::new(redis.prefix());
        let acks = Arc::new(ReplicaAcks::new(
            redis.clone(),
            config.replicas_to_wait(),
            config.replica_ack_timeout,
            "queue.replica_acks",
        ));
        if acks.is_on() {
            tracing::info!(
                replicas = acks.replicas(),
                timeout_ms = acks.timeout().as_millis() as u64,
                "queue places, admissions and rooms are answered once replicated (queue.replica_acks)"
            );
        }
        let hub = StreamHub::new(
            redis.clone(),
            ChangeCodec { keys: keys.clone() },
            WATCH_BUFFER,
            shutdown.clone(),
        );
        Arc::new(Self {
            rooms: RoomStore::new(redis.clone(), keys.clone(), acks.clone()),
            places: Places::new(redis.clone(), keys.clone(), config.changes_max_len, acks),
            admitter: Admitter::new(
                redis.clone(),
                keys.clone(),
                config.admission_batch,
                config.changes_max_len,
                config.admission_interval,
            ),
            config,
            redis,
            keys,
            keyring,
            clock,
            hub,
            stock,
            shutdown,
            set_sold: redis::Script::new(SET_SOLD),
        })
    }

    /// Starts this instance's admission scheduler (ends with the shutdown token).
    pub fn spawn_scheduler(self: &Arc<Self>) -> JoinHandle<()> {
        crate::scheduler::spawn(self.clone())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub async fn create_room(&self, request: RoomRequest) -> Result<Room> {
        let room = request.validate()?;
        self.rooms.save(room, false, self.now_ms()).await
    }

    pub async fn update_room(&self, request: RoomRequest) -> Result<Room> {
        let room = request.validate()?;
        self.rooms.save(room, true, self.now_ms()).await
    }

    pub async fn get_room(&self, id: &str) -> Result<(Room, RoomStats)> {
        let room = self.rooms.get(id).await?;
        let k = &self.keys;
        let (waiting, pre_queue, active, fields): (u64, u64, u64, Vec<Option<String>>) =
            redis::pipe()
                .atomic()
                .cmd("ZCARD")
                .arg(k.waiting(id))
                .cmd("ZCARD")
                .arg(k.pre_queue(id))
                .cmd("ZCOUNT")
                .arg(k.active(id))
                .arg(format!("({}", self.now_ms()))
                .arg("+inf")
                .cmd("HMGET")
                .arg(k.room(id))
                .arg(&["served", "ewma_m", "sold"])
                .query_async(&mut self.redis.conn())
                .await
                .map_err(unavailable)?;
        let field = |i: usize| -> u64 {
            fields
                .get(i)
                .and_then(|f| f.as_deref())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            room,
            RoomStats {
                waiting,
                pre_queue,
                active,
                served: field(0),
                measured_rate: field(1) as f64 / 1000.0,
                sold_out: field(2) == 1,
            },
        ))
    }

    /// Puts a user in line; returns a waiting token and where they stand.
    pub async fn enter(&self, room_id: &str, user_id: &str) -> Result<(String, Place)> {
        check_room_id("room_id", room_id)?;
        check_text_id(user_id, MAX_USER_BYTES).map_err(|r| Error::invalid("user_id", r))?;
        let now = self.now_ms();
        let standing = self.places.enter(room_id, user_id, now).await?;
        let ttl = self.config.waiting_token_ttl.as_millis() as i64;
        let token = self.keyring.sign(&Claims {
            kind: Kind::Waiting,
            room: room_id.to_string(),
            user: user_id.to_string(),
            issued_ms: now,
            expires_ms: now + ttl,
        });
        // Enter's own fence confirmed the place, an admission included.
        Ok((token, self.place(room_id, user_id, standing)))
    }

    /// The claims of a genuine token (waiting or admission).
    fn holder(&self, token: &str) -> Result<Claims> {
        if token.is_empty() {
            return Err(Error::invalid(
                "token",
                "is required (the token from Enter)",
            ));
        }
        self.keyring.verify(token, self.now_ms())
    }

    pub async fn position(&self, token: &str) -> Result<Place> {
        let c = self.holder(token)?;
        let standing = self
            .places
            .standing(&c.room, &c.user, self.now_ms())
            .await?;
        self.confirmed_place(&c.room, &c.user, standing).await
    }

    pub async fn heartbeat(&self, token: &str) -> Result<Place> {
        let c = self.holder(token)?;
        let now = self.now_ms();
        self.places.heartbeat(&c.room, &c.user, now).await?;
        let standing = self.places.standing(&c.room, &c.user, now).await?;
        self.confirmed_place(&c.room, &c.user, standing).await
    }

    /// Where `user` stands in `room` (no token needed: for operators and tests).
    pub async fn standing(&self, room: &str, user: &str) -> Result<Standing> {
        self.places.standing(room, user, self.now_ms()).await
    }

    /// A standing read a moment ago, with its admission token when admitted:
    /// with `queue.replica_acks` on, only once the admission is confirmed on
    /// the replicas (UNAVAILABLE otherwise), so a token handed out survives
    /// a failover of the room's master.
    pub async fn confirmed_place(
        &self,
        room: &str,
        user: &str,
        standing: Standing,
    ) -> Result<Place> {
        if matches!(standing, Standing::Admitted { .. }) {
            self.places.confirm_admission(room, user).await?;
        }
        Ok(self.place(room, user, standing))
    }

    /// A standing with its admission token when admitted (not confirmed on
    /// the replicas: see [`Queue::confirmed_place`]).
    pub fn place(&self, room: &str, user: &str, standing: Standing) -> Place {
        let admission_token = match standing {
            Standing::Admitted {
                issued_ms,
                expires_ms,
            } => self.admission_token(room, user, issued_ms, expires_ms),
            _ => String::new(),
        };
        Place {
            standing,
            admission_token,
        }
    }

    pub async fn leave(&self, token: &str) -> Result<bool> {
        let c = self.holder(token)?;
        let left = self.places.leave(&c.room, &c.user).await?;
        tracing::debug!(room = %c.room, left, "user left");
        Ok(left)
    }

    /// The holder's standing now, then each change, until it is final.
    pub async fn watch(self: &Arc<Self>, token: &str) -> Result<mpsc::Receiver<Result<Place>>> {
        let c = self.holder(token)?;
        let room = self.rooms.get(&c.room).await?;
        let heartbeat = Duration::from_millis((room.position_expiry_ms / 3).max(1000));
        let mut standings =
            crate::watch::spawn(self.clone(), c.room.clone(), c.user.clone(), heartbeat);
        // Admission tokens are signed here, on the way out.
        let (tx, rx) = mpsc::channel(1);
        let queue = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    item = standings.recv() => {
                        let Some(item) = item else { return };
                        let item = match item {
                            Ok(s) => queue.confirmed_place(&c.room, &c.user, s).await,
                            Err(e) => Err(e),
                        };
                        // An unconfirmed admission ends the stream with
                        // UNAVAILABLE: watching again asks again.
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            return;
                        }
                    }
                    // The client went away: dropping `standings` ends the watcher.
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }

    /// The admission token of an admitted user.
    pub fn admission_token(
        &self,
        room: &str,
        user: &str,
        issued_ms: i64,
        expires_ms: i64,
    ) -> String {
        self.keyring.sign(&Claims {
            kind: Kind::Admission,
            room: room.to_string(),
            user: user.to_string(),
            issued_ms,
            expires_ms,
        })
    }

    /// Checks an admission token for `room_id`: genuine, unexpired, an
    /// admission, for this room, and its session still active (not ended by
    /// Leave).
    pub async fn verify_admission(&self, token: &str, room_id: &str) -> Result<Claims> {
        check_room_id("room_id", room_id)?;
        let c = self.holder(token)?;
        if c.kind != Kind::Admission {
            return Err(Error::Unauthenticated(
                "this is a waiting token, not an admission token".into(),
            ));
        }
        if c.room != room_id {
            return Err(Error::PermissionDenied(format!(
                "the admission is for another room, not {room_id:?}"
            )));
        }
        let expiry: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.keys.active(room_id))
            .arg(&c.user)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        if expiry.map(|e| e as i64) != Some(c.expires_ms) {
            return Err(Error::Unauthenticated(
                "the admission session has ended".into(),
            ));
        }
        Ok(c)
    }

    /// One admission pass over one room (`None`: no such room).
    pub async fn admit(&self, room: &str) -> Result<Option<PassOutcome>> {
        self.admitter.pass(room, self.now_ms()).await
    }

    /// One admission pass over every room; the users admitted.
    pub async fn admit_all(&self) -> Result<u64> {
        let mut admitted = 0;
        for room in self.rooms.ids().await? {
            if let Some(outcome) = self.admit(&room).await? {
                admitted += outcome.admitted;
                if outcome.admitted + outcome.sessions_ended + outcome.places_expired > 0 {
                    tracing::debug!(
                        room = %room,
                        admitted = outcome.admitted,
                        sessions_ended = outcome.sessions_ended,
                        places_expired = outcome.places_expired,
                        "admission pass"
                    );
                }
            }
        }
        Ok(admitted)
    }

    /// Sets a room's sold-out flag; true when it changed (waiters are told).
    pub async fn set_sold_out(&self, room: &str, sold_out: bool) -> Result<bool> {
        let changed: i64 = self
            .set_sold
            .key(self.keys.room(room))
            .key(self.keys.changes(room))
            .arg(if sold_out { "1" } else { "0" })
            .arg(self.config.changes_max_len)
            .invoke_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(changed == 1)
    }

    /// Checks the stock of every linked room once (the scheduler does it
    /// every `queue.stock_check_interval`).
    pub async fn check_stock(&self) -> Result<()> {
        crate::scheduler::check_stock(self).await
    }
}
