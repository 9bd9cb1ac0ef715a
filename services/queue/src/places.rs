//! Places in line: Enter, where a user stands, heartbeats and Leave.
//!
//! A waiter is in `wait` (scored by ticket: the room's counter, so FIFO) and
//! in `seen` (scored by last heartbeat); `ZRANK` in `wait` is the number of
//! people ahead. Entering again finds the same place. Before a random
//! pre-queue room opens, users go to `pre` with a random draw instead (see
//! `admission.rs` for the opening).
//!
//! With `queue.replica_acks` on, Enter and Leave send the room's fence and
//! `WAIT` after their script (`tickmesh_runtime::replica_acks`), and an
//! admission is confirmed the same way before its token is handed out
//! ([`Places::confirm_admission`]): what a user is told is on the replicas.

use std::sync::Arc;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::replica_acks::ReplicaAcks;

use crate::admission::OPEN_IF_DUE;
use crate::keys::Keys;

/// Where a user stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Waiting { ahead: u64, estimated_wait_ms: u64 },
    PreQueue { opens_in_ms: u64 },
    Admitted { issued_ms: i64, expires_ms: i64 },
    NotInQueue,
    SoldOut,
}

impl Standing {
    /// 1 for the head of the line; 0 unless waiting.
    pub fn position(&self) -> u64 {
        match self {
            Standing::Waiting { ahead, .. } => ahead + 1,
            _ => 0,
        }
    }
}

/// The room fields a standing depends on.
#[derive(Clone, Copy, Debug, Default)]
struct RoomRates {
    rate_m: u64,
    ewma_m: u64,
    session_ms: i64,
    opens_ms: i64,
}

impl RoomRates {
    /// People ahead over the measured admission rate (the configured rate
    /// until there is a measure), plus the time until the opening.
    fn estimated_wait_ms(&self, ahead: u64, now_ms: i64) -> u64 {
        let rate = if self.ewma_m > 0 {
            self.ewma_m
        } else {
            self.rate_m
        }
        .max(1);
        let until_open = (self.opens_ms - now_ms).max(0) as u64;
        (ahead as u128 * 1_000_000 / rate as u128) as u64 + until_open
    }

    fn admitted(&self, expires_ms: i64) -> Standing {
        Standing::Admitted {
            issued_ms: expires_ms - self.session_ms,
            expires_ms,
        }
    }
}

const ENTER: &str = r#"
local room, wait, seen, active, pre = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, u = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', room) == 0 then return {'none'} end
open_if_due(room, wait, seen, pre, now)
local f = redis.call('HMGET', room, 'rate_m', 'ewma_m', 'sess_ms', 'opens_ms', 'method', 'sold')
local function answer(kind, n) return {kind, n, f[1], f[2] or '0', f[3], f[4]} end
local exp = redis.call('ZSCORE', active, u)
if exp then
  if tonumber(exp) > now then return answer('admitted', exp) end
  redis.call('ZREM', active, u)
end
local rank = redis.call('ZRANK', wait, u)
if rank then
  redis.call('ZADD', seen, now, u)
  return answer('waiting', rank)
end
if f[6] == '1' then return answer('sold', 0) end
if f[5] == 'random' and now < tonumber(f[4]) then
  redis.call('ZADD', pre, 'NX', ARGV[3], u)
  return answer('pre', 0)
end
local t = redis.call('HINCRBY', room, 'tick', 1)
redis.call('ZADD', wait, t, u)
redis.call('ZADD', seen, now, u)
return answer('waiting', redis.call('ZRANK', wait, u))
"#;

const LEAVE: &str = r#"
local w = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local p = redis.call('ZREM', KEYS[3], ARGV[1])
local a = redis.call('ZREM', KEYS[4], ARGV[1])
if w + a > 0 then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[2], '*', 'k', 'l', 'x', 0, 'u', '')
end
return w + p + a
"#;

pub struct Places {
    redis: RedisHandle,
    keys: Keys,
    changes_max_len: u64,
    enter: redis::Script,
    leave: redis::Script,
    acks: Arc<ReplicaAcks>,
}

impl Places {
    /// `acks`: what Enter, Leave and admissions wait for (`queue.replica_acks`).
    pub fn new(
        redis: RedisHandle,
        keys: Keys,
        changes_max_len: u64,
        acks: Arc<ReplicaAcks>,
    ) -> Self {
        Self {
            redis,
            keys,
            changes_max_len,
            enter: redis::Script::new(&format!("{OPEN_IF_DUE}\n{ENTER}")),
            leave: redis::Script::new(LEAVE),
            acks,
        }
    }

    /// Confirms that an admission read a moment ago is on the replicas (a
    /// no-op when `queue.replica_acks` is off): the room's fence and `WAIT`.
    /// The admission was written by some instance's admission pass, not by
    /// this call; the fence, written after it on the same master, is what
    /// makes `WAIT` cover it.
    pub async fn confirm_admission(&self, room: &str, user: &str) -> Result<()> {
        if !self.acks.is_on() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        self.acks.fence(&mut pipe, &self.keys.ack_fence(room));
        let replies = self.acks.query(&pipe, &[]).await?;
        match replies.last() {
            Some(wait) => self.acks.check(
                wait,
                &format!("the admission of {user:?} to room {room:?}"),
                "asking again (GetPosition, WatchPosition) is safe",
            ),
            None => Err(Error::Internal("WAIT answered nothing".into())),
        }
    }

    /// Puts `user` in line, or finds where they already stand.
    pub async fn enter(&self, room: &str, user: &str, now_ms: i64) -> Result<Standing> {
        let k = &self.keys;
        let mut draw = [0u8; 8];
        openssl::rand::rand_bytes(&mut draw).map_err(|e| Error::Internal(e.to_string()))?;
        // 52 random bits: exact as a sorted-set score.
        let draw = u64::from_be_bytes(draw) >> 12;
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(self.enter.get_hash())
            .arg(5)
            .arg(k.room(room))
            .arg(k.waiting(room))
            .arg(k.seen(room))
            .arg(k.active(room))
            .arg(k.pre_queue(room))
            .arg(now_ms)
            .arg(user)
            .arg(draw);
        self.acks.fence(&mut pipe, &k.ack_fence(room));
        let mut replies = self.acks.query(&pipe, &[&self.enter]).await?.into_iter();
        let reply = match replies.next() {
            Some(Value::Array(reply)) => reply,
            other => {
                return Err(Error::Internal(format!("enter script answered {other:?}")));
            }
        };
        let wait = replies.last();
        let text = |i: usize| -> Option<String> {
            match reply.get(i)? {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Value::SimpleString(s) => Some(s.clone()),
                Value::Int(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let num =
            |i: usize| -> i64 { text(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) as i64 };
        let kind = text(0).unwrap_or_default();
        if kind == "none" {
            return Err(Error::NotFound(format!("room {room:?}")));
        }
        // The fence covers the place, whether this call wrote it or found it
        // (entered before, admitted since); a sold-out answer holds nothing.
        if kind != "sold"
            && let Some(wait) = &wait
        {
            self.acks.check(
                wait,
                &format!("the place of {user:?} in room {room:?}"),
                "entering again is safe (it finds the same place)",
            )?;
        }
        let rates = RoomRates {
            rate_m: num(2) as u64,
            ewma_m: num(3) as u64,
            session_ms: num(4),
            opens_ms: num(5),
        };
        Ok(match kind.as_str() {
            "admitted" => rates.admitted(num(1)),
            "waiting" => Standing::Waiting {
                ahead: num(1) as u64,
                estimated_wait_ms: rates.estimated_wait_ms(num(1) as u64, now_ms),
            },
            "pre" => Standing::PreQueue {
                opens_in_ms: (rates.opens_ms - now_ms).max(0) as u64,
            },
            "sold" => Standing::SoldOut,
            other => {
                return Err(Error::Internal(format!("enter script answered {other:?}")));
            }
        })
    }

    /// Where `user` stands now (one atomic read).
    pub async fn standing(&self, room: &str, user: &str, now_ms: i64) -> Result<Standing> {
        Ok(self.standing_at(room, user, now_ms).await?.0)
    }

    /// Where `user` stands and, read atomically with it, the id of the
    /// room's newest change entry (every change up to it is reflected).
    pub async fn standing_at(
        &self,
        room: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<(Standing, String)> {
        let k = &self.keys;
        let (rank, expiry, pre, fields, newest): StandingReply = redis::pipe()
            .atomic()
            .cmd("ZRANK")
            .arg(k.waiting(room))
            .arg(user)
            .cmd("ZSCORE")
            .arg(k.active(room))
            .arg(user)
            .cmd("ZSCORE")
            .arg(k.pre_queue(room))
            .arg(user)
            .cmd("HMGET")
            .arg(k.room(room))
            .arg(&["cap", "sold", "rate_m", "ewma_m", "sess_ms", "opens_ms"])
            .cmd("XREVRANGE")
            .arg(k.changes(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        let newest = newest_id(newest);
        let field = |i: usize| -> i64 {
            fields
                .get(i)
                .and_then(|f| f.as_deref())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        if fields.first().is_none_or(|f| f.is_none()) {
            return Err(Error::NotFound(format!("room {room:?}")));
        }
        let rates = RoomRates {
            rate_m: field(2) as u64,
            ewma_m: field(3) as u64,
            session_ms: field(4),
            opens_ms: field(5),
        };
        if let Some(expiry) = expiry
            && expiry as i64 > now_ms
        {
            return Ok((rates.admitted(expiry as i64), newest));
        }
        if field(1) == 1 {
            return Ok((Standing::SoldOut, newest));
        }
        if let Some(ahead) = rank {
            return Ok((
                Standing::Waiting {
                    ahead,
                    estimated_wait_ms: rates.estimated_wait_ms(ahead, now_ms),
                },
                newest,
            ));
        }
        if pre.is_some() {
            return Ok((
                Standing::PreQueue {
                    opens_in_ms: (rates.opens_ms - now_ms).max(0) as u64,
                },
                newest,
            ));
        }
        Ok((Standing::NotInQueue, newest))
    }

    /// People ahead of a waiting user (`None`: not in line) and the newest
    /// change entry id, atomically: the cheap re-read of a watcher that knows
    /// the rest of its standing.
    pub async fn ahead_at(&self, room: &str, user: &str) -> Result<(Option<u64>, String)> {
        let (rank, newest): (Option<u64>, Value) = redis::pipe()
            .atomic()
            .cmd("ZRANK")
            .arg(self.keys.waiting(room))
            .arg(user)
            .cmd("XREVRANGE")
            .arg(self.keys.changes(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok((rank, newest_id(newest)))
    }

    /// Refreshes a waiter's heartbeat (only if still waiting).
    pub async fn heartbeat(&self, room: &str, user: &str, now_ms: i64) -> Result<()> {
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.seen(room))
            .arg("XX")
            .arg(now_ms)
            .arg(user)
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Takes `user` out of line, pre-queue and active sessions; true when
    /// they were anywhere.
    pub async fn leave(&self, room: &str, user: &str) -> Result<bool> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(self.leave.get_hash())
            .arg(5)
            .arg(k.waiting(room))
            .arg(k.seen(room))
            .arg(k.pre_queue(room))
            .arg(k.active(room))
            .arg(k.changes(room))
            .arg(user)
            .arg(self.changes_max_len);
        self.acks.fence(&mut pipe, &k.ack_fence(room));
        let replies = self.acks.query(&pipe, &[&self.leave]).await?;
        let removed = match replies.first() {
            Some(Value::Int(n)) => *n,
            other => {
                return Err(Error::Internal(format!("leave script answered {other:?}")));
            }
        };
        if let Some(wait) = replies.get(2) {
            self.acks.check(
                wait,
                &format!("the departure of {user:?} from room {room:?}"),
                "leaving again is safe",
            )?;
        }
        Ok(removed > 0)
    }
}

/// ZRANK, ZSCORE active, ZSCORE pre-queue, room fields, newest change.
type StandingReply = (
    Option<u64>,
    Option<f64>,
    Option<f64>,
    Vec<Option<String>>,
    Value,
);

/// The id of an `XREVRANGE … COUNT 1` reply ("0-0" for an empty stream).
fn newest_id(reply: Value) -> String {
    if let Value::Array(entries) = reply
        && let Some(Value::Array(parts)) = entries.into_iter().next()
        && let Some(Value::BulkString(id)) = parts.into_iter().next()
    {
        return String::from_utf8_lossy(&id).into_owned();
    }
    "0-0".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimated_wait_uses_the_measured_rate_when_there_is_one() {
        let mut r = RoomRates {
            rate_m: 10_000,
            ewma_m: 0,
            session_ms: 60_000,
            opens_ms: 0,
        };
        assert_eq!(r.estimated_wait_ms(50, 1_000), 5_000);
        r.ewma_m = 5_000;
        assert_eq!(r.estimated_wait_ms(50, 1_000), 10_000);
        r.opens_ms = 4_000;
        assert_eq!(r.estimated_wait_ms(50, 1_000), 13_000);
        assert_eq!(r.estimated_wait_ms(0, 1_000), 3_000);
    }
}
