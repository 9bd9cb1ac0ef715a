//! Rooms: settings, their rules and their storage.
//!
//! A room's settings live in its hash (`keys.rs`) twice: as JSON (`def`) for
//! reads, and as the few numeric fields the scripts use (`cap`, `rate_m`,
//! `sess_ms`, `exp_ms`, `opens_ms`, `method`). Both are written together by
//! one script, and only if the request is valid: bad input writes nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tickmesh_core::ids::check_symbol;
use tickmesh_core::{Error, FieldViolation, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::replica_acks::ReplicaAcks;

use crate::keys::Keys;

pub const DEFAULT_SESSION_MS: u64 = 10 * 60 * 1000;
pub const DEFAULT_POSITION_EXPIRY_MS: u64 = 60 * 1000;
pub const MAX_CAPACITY: i64 = 100_000_000;
pub const MAX_RATE: f64 = 100_000.0;
const DAY_MS: u64 = 24 * 3600 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Fifo,
    RandomPreQueue,
}

impl Method {
    fn as_script(self) -> &'static str {
        match self {
            Method::Fifo => "fifo",
            Method::RandomPreQueue => "random",
        }
    }
}

/// A room as requested (durations in ms; 0 means "the default").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Room {
    pub id: String,
    pub capacity: u64,
    pub admissions_per_second: f64,
    pub session_ms: u64,
    pub position_expiry_ms: u64,
    pub method: Method,
    pub open_time_ms: Option<i64>,
    pub campaign_id: String,
    pub update_time_ms: i64,
}

/// A room as received, before validation.
#[derive(Clone, Debug, Default)]
pub struct RoomRequest {
    pub id: String,
    pub capacity: i64,
    pub admissions_per_second: f64,
    /// `None`: default; `Some(Err)`: unreadable.
    pub session_ms: Option<std::result::Result<u64, String>>,
    pub position_expiry_ms: Option<std::result::Result<u64, String>>,
    pub method: Option<Method>,
    pub open_time_ms: Option<std::result::Result<i64, String>>,
    pub campaign_id: String,
}

/// Checks a room id (it becomes a hash tag): the symbol alphabet.
pub fn check_room_id(field: &str, id: &str) -> Result<()> {
    check_symbol(id).map_err(|r| Error::invalid(field, r))
}

impl RoomRequest {
    /// Every violation at once, with defaults filled in.
    pub fn validate(self) -> Result<Room> {
        let mut v = Vec::new();
        if let Err(r) = check_symbol(&self.id) {
            v.push(FieldViolation::new("room.id", r));
        }
        if self.capacity < 1 {
            v.push(FieldViolation::new("room.capacity", "must be at least 1"));
        } else if self.capacity > MAX_CAPACITY {
            v.push(FieldViolation::new(
                "room.capacity",
                format!("must be at most {MAX_CAPACITY}"),
            ));
        }
        let rate = self.admissions_per_second;
        if !rate.is_finite() || rate <= 0.0 {
            v.push(FieldViolation::new(
                "room.admissions_per_second",
                "must be more than 0",
            ));
        } else if rate > MAX_RATE {
            v.push(FieldViolation::new(
                "room.admissions_per_second",
                format!("must be at most {MAX_RATE}"),
            ));
        } else if (rate * 1000.0).round() < 1.0 {
            v.push(FieldViolation::new(
                "room.admissions_per_second",
                "must be at least 0.001",
            ));
        }
        let mut duration =
            |field: &str, d: Option<std::result::Result<u64, String>>, default, min| match d {
                None => default,
                Some(Err(r)) => {
                    v.push(FieldViolation::new(field, r));
                    default
                }
                Some(Ok(ms)) if ms < min || ms > DAY_MS => {
                    v.push(FieldViolation::new(
                        field,
                        format!("must be between {}s and 24h", min / 1000),
                    ));
                    default
                }
                Some(Ok(ms)) => ms,
            };
        let session_ms = duration(
            "room.session_duration",
            self.session_ms,
            DEFAULT_SESSION_MS,
            1000,
        );
        let position_expiry_ms = duration(
            "room.position_expiry",
            self.position_expiry_ms,
            DEFAULT_POSITION_EXPIRY_MS,
            5000,
        );
        let open_time_ms = match self.open_time_ms {
            None => None,
            Some(Ok(ms)) => Some(ms),
            Some(Err(r)) => {
                v.push(FieldViolation::new("room.open_time", r));
                None
            }
        };
        let method = self.method.unwrap_or_default();
        if method == Method::RandomPreQueue && open_time_ms.is_none() {
            v.push(FieldViolation::new(
                "room.open_time",
                "is required by QUEUEING_METHOD_RANDOM_PRE_QUEUE (users entering before it are shuffled)",
            ));
        }
        if !self.campaign_id.is_empty()
            && let Err(r) = check_symbol(&self.campaign_id)
        {
            v.push(FieldViolation::new("room.campaign_id", r));
        }
        Error::check(v)?;
        Ok(Room {
            id: self.id,
            capacity: self.capacity as u64,
            admissions_per_second: rate,
            session_ms,
            position_expiry_ms,
            method,
            open_time_ms,
            campaign_id: self.campaign_id,
            update_time_ms: 0,
        })
    }
}

impl Room {
    /// Admissions per second in thousandths, as the scripts count them.
    pub fn rate_milli(&self) -> u64 {
        (self.admissions_per_second * 1000.0).round() as u64
    }
}

/// Writes a room: create (fails if it exists) or update (fails if it does
/// not, or if the opening is changed after it passed).
const SAVE: &str = r#"
local exists = redis.call('EXISTS', KEYS[1]) == 1
local mode = ARGV[1]
local now = tonumber(ARGV[2])
if mode == 'create' and exists then return 'exists' end
if mode == 'update' then
  if not exists then return 'missing' end
  local old = redis.call('HMGET', KEYS[1], 'method', 'opens_ms')
  local opened = now >= tonumber(old[2])
  if opened and (old[1] ~= ARGV[8] or old[2] ~= ARGV[7]) then return 'opened' end
end
redis.call('HSET', KEYS[1], 'def', ARGV[3], 'cap', ARGV[4], 'rate_m', ARGV[5], 'sess_ms', ARGV[6],
  'opens_ms', ARGV[7], 'method', ARGV[8], 'exp_ms', ARGV[9], 'camp', ARGV[10])
if mode == 'create' then
  redis.call('HSET', KEYS[1], 'tick', 0, 'served', 0, 'tok', 0, 'tok_ms', now)
end
if ARGV[10] == '' then redis.call('HDEL', KEYS[1], 'sold') end
return 'ok'
"#;

pub struct RoomStore {
    redis: RedisHandle,
    keys: Keys,
    save: redis::Script,
    acks: Arc<ReplicaAcks>,
}

impl RoomStore {
    /// `acks`: what a save waits for (`queue.replica_acks`).
    pub fn new(redis: RedisHandle, keys: Keys, acks: Arc<ReplicaAcks>) -> Self {
        Self {
            redis,
            keys,
            save: redis::Script::new(SAVE),
            acks,
        }
    }

    /// Creates (`update == false`) or updates a validated room.
    pub async fn save(&self, mut room: Room, update: bool, now_ms: i64) -> Result<Room> {
        room.update_time_ms = now_ms;
        let def = serde_json::to_string(&room).map_err(|e| Error::Internal(e.to_string()))?;
        if !update {
            // The index of room ids is one key for all rooms, so it cannot
            // be written by the room's script on a Redis Cluster (another
            // slot). Written first: an id whose room then failed to be
            // created is skipped by every reader (no such room), while a
            // room created but never indexed would never be admitted.
            // With replica acks, the index entry too is on the replicas
            // before the room is written (its WAIT, on the connection that
            // wrote: the index has no slot of its own for a fence).
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(self.keys.rooms()).arg(&room.id);
            self.acks.wait(&mut pipe);
            let replies = self.acks.query(&pipe, &[]).await?;
            if let Some(wait) = replies.get(1) {
                self.acks.check(
                    wait,
                    &format!("the index entry of room {:?}", room.id),
                    "creating the room again is safe",
                )?;
            }
        }
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(self.save.get_hash())
            .arg(1)
            .arg(self.keys.room(&room.id))
            .arg(if update { "update" } else { "create" })
            .arg(now_ms)
            .arg(def)
            .arg(room.capacity)
            .arg(room.rate_milli())
            .arg(room.session_ms)
            .arg(room.open_time_ms.unwrap_or(0))
            .arg(room.method.as_script())
            .arg(room.position_expiry_ms)
            .arg(&room.campaign_id);
        self.acks.fence(&mut pipe, &self.keys.ack_fence(&room.id));
        let replies = self.acks.query(&pipe, &[&self.save]).await?;
        let outcome = match replies.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            other => {
                return Err(Error::Internal(format!("room script answered {other:?}")));
            }
        };
        if outcome == "ok"
            && let Some(wait) = replies.get(2)
        {
            self.acks.check(
                wait,
                &format!("room {:?}", room.id),
                "UpdateRoom with the same settings is safe and confirms it",
            )?;
        }
        match outcome.as_str() {
            "ok" => Ok(room),
            "exists" => Err(Error::FailedPrecondition(format!(
                "room {:?} already exists (use UpdateRoom)",
                room.id
            ))),
            "missing" => Err(Error::NotFound(format!("room {:?}", room.id))),
            "opened" => Err(Error::FailedPrecondition(format!(
                "room {:?} has opened: its queueing method and opening time cannot change",
                room.id
            ))),
            other => Err(Error::Internal(format!("room script answered {other:?}"))),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Room> {
        check_room_id("room_id", id)?;
        let def: Option<String> = redis::cmd("HGET")
            .arg(self.keys.room(id))
            .arg("def")
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        let def = def.ok_or_else(|| Error::NotFound(format!("room {id:?}")))?;
        serde_json::from_str(&def).map_err(|e| Error::Internal(format!("room {id:?}: {e}")))
    }

    /// Every room id (what the scheduler visits).
    pub async fn ids(&self) -> Result<Vec<String>> {
        redis::cmd("SMEMBERS")
            .arg(self.keys.rooms())
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RoomRequest {
        RoomRequest {
            id: "launch".into(),
            capacity: 100,
            admissions_per_second: 10.0,
            ..Default::default()
        }
    }

    fn fields(r: Result<Room>) -> Vec<String> {
        match r {
            Err(Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let room = request().validate().unwrap();
        assert_eq!(room.session_ms, DEFAULT_SESSION_MS);
        assert_eq!(room.position_expiry_ms, DEFAULT_POSITION_EXPIRY_MS);
        assert_eq!(room.method, Method::Fifo);
        assert_eq!(room.rate_milli(), 10_000);
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = RoomRequest {
            id: "{x}".into(),
            capacity: 0,
            admissions_per_second: -1.0,
            session_ms: Some(Ok(10)),
            position_expiry_ms: Some(Err("is negative".into())),
            method: Some(Method::RandomPreQueue),
            open_time_ms: None,
            campaign_id: "a b".into(),
        };
        assert_eq!(
            fields(bad.validate()),
            [
                "room.id",
                "room.capacity",
                "room.admissions_per_second",
                "room.session_duration",
                "room.position_expiry",
                "room.open_time",
                "room.campaign_id"
            ]
        );
        for rate in [0.0, f64::NAN, f64::INFINITY, 1e9, 0.0001] {
            let mut r = request();
            r.admissions_per_second = rate;
            assert_eq!(
                fields(r.validate()),
                ["room.admissions_per_second"],
                "{rate}"
            );
        }
        let mut r = request();
        r.capacity = -5;
        assert_eq!(fields(r.validate()), ["room.capacity"]);
    }
}
