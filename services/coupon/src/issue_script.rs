//! The issue script: one atomic server-side step that decides an Issue call
//! and, only when it issues, writes everything at once.
//!
//! It first checks, in this order, without writing anything:
//! 1. the campaign state exists and was confirmed against the durable
//!    records since this Redis server started: its `run` field is the
//!    server's run id, which the caller passes (read once per connection,
//!    see [`IssueScript`]); else the caller confirms or rebuilds it (see
//!    [`crate::rebuild`]) or answers NOT_FOUND;
//! 2. the request id was answered ISSUED before → the same answer again,
//!    remaining stock included (another user's request id is refused);
//! 3. the time: NOT_STARTED before the start, ENDED from the end on;
//! 4. the user already holds the per-user limit → ALREADY_ISSUED with the first code;
//! 5. no stock left → SOLD_OUT.
//!
//! Concurrent calls for one campaign share a script call
//! ([`crate::group_commit`]): the script decides them one after the other,
//! each exactly as if it ran alone.
//!
//! Then it takes the next sequence, derives the code, decrements the stock,
//! records the code for the user and the request id, stamps the sell-out
//! time when the stock reaches zero, and appends the issuance to the log the
//! persist worker copies to the durable store — all in the same step, so a
//! client told ISSUED always has a log entry, and a retry after a timeout
//! finds the write it may not have seen.
//!
//! Codes are `XXXX-XXXX-XXXX-<seq>`: twelve hex digits of
//! SHA1(secret ‖ SHA1(secret ‖ campaign:seq)) with the campaign's random
//! secret (not guessable from other codes), then the sequence (unique in the
//! campaign). A replay reads the stored code back, so it never changes.
//!
//! With `coupon.replica_acks`, `WAIT` follows the script on its connection.
//! `WAIT` counts the writes of that connection only, so an answer recalled
//! from an earlier issuance (a retried request, a user who holds the limit)
//! bumps a counter in the state: the replica that confirms it has every
//! write before it, the recalled issuance included.

use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisConn;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::keys::Keys;

/// The run id the caller passes on a Redis Cluster, where it cannot know
/// which server runs a script: the script reads its own (`INFO server`, about
/// 15-30% more Redis time per call, paid on a cluster only).
pub const NODE_RUN: &str = "@node";

/// Defines `server_run(arg)`: the run id a script compares the state's `run`
/// with: the caller's, or on a cluster the running server's.
pub const NODE_RUN_LUA: &str = r#"
local function server_run(arg)
  if arg ~= '@node' then return arg end
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end
"#;

/// A script of `body` after the [`NODE_RUN_LUA`] prelude.
pub fn script_with_node_run(body: &str) -> redis::Script {
    redis::Script::new(&format!("{NODE_RUN_LUA}{body}"))
}

/// KEYS: state, users, requests, log. ARGV: now (ms), campaign id, the run
/// id of the server the call goes to, then (user, request id) per call,
/// decided in order as if one after the other.
/// Returns {status, code, remaining} per call.
pub const ISSUE_LUA: &str = r#"
local st = redis.call('HMGET', KEYS[1], 'total', 'limit', 'start', 'end', 'remaining', 'seq', 'secret', 'run')
local out = {}
local function answer(status, code, left)
  out[#out + 1] = status
  out[#out + 1] = code
  out[#out + 1] = tostring(left)
end
if not st[1] or st[8] ~= server_run(ARGV[3]) then
  for i = 4, #ARGV, 2 do answer('missing', '', 0) end
  return out
end
local limit, start, finish = tonumber(st[2]), tonumber(st[3]), tonumber(st[4])
local remaining, seq, secret = tonumber(st[5]), tonumber(st[6]), st[7]
local now, campaign = tonumber(ARGV[1]), ARGV[2]
local issued = 0
local recalled = false
for i = 4, #ARGV, 2 do
  local user, request = ARGV[i], ARGV[i + 1]
  local seen = redis.call('HGET', KEYS[3], request)
  if seen then
    local cut = string.find(seen, '\n', 1, true)
    local cut2 = string.find(seen, '\n', cut + 1, true)
    if string.sub(seen, 1, cut - 1) ~= user then
      answer('reused', '', remaining)
    else
      recalled = true
      answer('issued', string.sub(seen, cut + 1, cut2 - 1), string.sub(seen, cut2 + 1))
    end
  elseif now < start then
    answer('not_started', '', remaining)
  elseif now >= finish then
    answer('ended', '', remaining)
  else
    local held = redis.call('HGET', KEYS[2], user)
    local count, first = 0, nil
    if held then
      for code in string.gmatch(held, '%S+') do
        count = count + 1
        if not first then first = code end
      end
    end
    if count >= limit then
      recalled = true
      answer('already', first, remaining)
    elseif remaining <= 0 then
      answer('sold_out', '', 0)
    else
      seq = seq + 1
      remaining = remaining - 1
      issued = issued + 1
      local mac = string.upper(redis.sha1hex(secret .. redis.sha1hex(secret .. campaign .. ':' .. seq)))
      local code = string.sub(mac, 1, 4) .. '-' .. string.sub(mac, 5, 8) .. '-' .. string.sub(mac, 9, 12) .. '-' .. seq
      if held then
        redis.call('HSET', KEYS[2], user, held .. ' ' .. code)
      else
        redis.call('HSET', KEYS[2], user, code)
      end
      redis.call('HSET', KEYS[3], request, user .. '\n' .. code .. '\n' .. remaining)
      redis.call('XADD', KEYS[4], '*', 'seq', seq, 'user', user, 'code', code, 'request', request, 'at', ARGV[1])
      answer('issued', code, remaining)
    end
  end
end
if issued > 0 then
  redis.call('HSET', KEYS[1], 'remaining', remaining, 'seq', seq)
  if remaining == 0 then redis.call('HSET', KEYS[1], 'sold_out', ARGV[1]) end
elseif recalled then
  -- An answer recalled from an earlier issuance (perhaps made over another
  -- connection, not yet on a replica) writes too, so that a WAIT after this
  -- call covers that issuance: replication is in order.
  redis.call('HINCRBY', KEYS[1], 'recalls', 1)
end
return out
"#;

/// What the script decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Issued {
        code: String,
        remaining: i64,
    },
    AlreadyIssued {
        code: String,
        remaining: i64,
    },
    SoldOut,
    NotStarted {
        remaining: i64,
    },
    Ended {
        remaining: i64,
    },
    /// The campaign has no state in Redis (unknown, or Redis lost it), or
    /// one not yet confirmed against the durable records since the server
    /// started (it may have come back with less than it had).
    Missing,
    /// The request id was answered ISSUED for another user.
    RequestIdReused,
}

/// The connection of a service instance's request path (issue, reads of
/// the state, rebuilds), with the run id of the server at its other end.
///
/// The run id is read (`INFO server`) once when the connection is made. A
/// connection never outlives its server: a restart or a failover breaks
/// it, and the next call connects again and reads the new server's run id.
/// So every script sent over it can be given the run id of the server that
/// runs it, and refuse a state not confirmed in that run, at the cost of
/// one string comparison (a check inside the script would cost an `INFO`
/// per call: 15-30% more Redis time per issue script call, measured).
/// This assumes the connection ends at the Redis server itself, not at a
/// proxy that could switch servers under a live client connection.
pub struct ServerLink {
    redis: RedisHandle,
    slot: tokio::sync::Mutex<Option<RunConnection>>,
}

/// A connection and the run id of the server it is connected to.
#[derive(Clone)]
pub struct RunConnection {
    pub conn: RedisConn,
    pub run: Arc<str>,
}

impl ServerLink {
    pub fn new(redis: RedisHandle) -> Self {
        Self {
            redis,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection (made now if there is none) and its server's run id.
    pub async fn connection(&self) -> Result<RunConnection> {
        let mut slot = self.slot.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut conn = self.redis.dedicated(Duration::ZERO).await?;
        // On a cluster the server depends on the campaign's slot, and a
        // failover changes it under a live connection: the script reads the
        // run id of the node that runs it (`server_run`).
        let info: String = if conn.is_cluster() {
            format!("run_id:{NODE_RUN}")
        } else {
            redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?
        };
        let run = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or("")
            .trim();
        let c = RunConnection {
            conn,
            run: Arc::from(run),
        };
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops the connection after a failure on it (the next call connects
    /// again), unless it was replaced already.
    pub async fn forget(&self, failed: &RunConnection) {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.run, &failed.run))
        {
            *slot = None;
        }
    }

    /// Runs the script `build` makes for the run id; a connection found
    /// broken (the server restarted) is replaced and the script sent once
    /// more to the new server, with its run id. Only for scripts that are
    /// safe to repeat.
    pub async fn invoke<'s, T: redis::FromRedisValue>(
        &self,
        build: impl Fn(&str) -> redis::ScriptInvocation<'s>,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let c = self.connection().await?;
            match build(&c.run).invoke_async(&mut c.conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    self.forget(&c).await;
                    if retried || !(e.is_io_error() || e.is_connection_dropped()) {
                        return Err(unavailable(e));
                    }
                    retried = true;
                }
            }
        }
    }
}

/// How many replicas must have an issuance before it is answered.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaAcks {
    pub replicas: u32,
    pub timeout: Duration,
}

impl ReplicaAcks {
    pub const OFF: Self = Self {
        replicas: 0,
        timeout: Duration::ZERO,
    };
}

pub struct IssueScript {
    link: Arc<ServerLink>,
    keys: Keys,
    script: redis::Script,
    acks: ReplicaAcks,
}

impl IssueScript {
    pub fn new(link: Arc<ServerLink>, keys: Keys, acks: ReplicaAcks) -> Self {
        Self {
            link,
            keys,
            script: script_with_node_run(ISSUE_LUA),
            acks,
        }
    }

    /// The script's SHA1 (what EVALSHA takes).
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }

    /// The KEYS of a campaign, in script order.
    pub fn keys_of(&self, campaign: &str) -> [String; 4] {
        [
            self.keys.state(campaign),
            self.keys.users(campaign),
            self.keys.requests(campaign),
            self.keys.log(campaign),
        ]
    }

    /// Decides `calls` (user, request id) of one campaign in one script
    /// call, in order; one decision per call.
    pub async fn run_batch(
        &self,
        campaign: &str,
        calls: &[(String, String)],
        now_ms: i64,
    ) -> Result<Vec<Decision>> {
        let keys = self.keys_of(campaign);
        // Safe to repeat: a request answered ISSUED is answered the same.
        let flat: Vec<String> = if self.acks.replicas == 0 {
            self.link
                .invoke(|run| {
                    let mut invocation = self.script.key(&keys[..]);
                    invocation.arg(now_ms).arg(campaign).arg(run);
                    for (user, request) in calls {
                        invocation.arg(user).arg(request);
                    }
                    invocation
                })
                .await?
        } else {
            self.invoke_and_wait(&keys, campaign, calls, now_ms).await?
        };
        if flat.len() != 3 * calls.len() {
            return Err(Error::Internal(format!(
                "issue script answered {} fields for {} calls",
                flat.len(),
                calls.len()
            )));
        }
        flat.chunks(3).map(decision).collect()
    }
}

impl IssueScript {
    /// The script, then `WAIT replicas timeout` in the same pipeline: on the
    /// campaign's master (a cluster routes the pipeline by the script's
    /// keys) and on the connection that wrote, so WAIT counts this write.
    /// Answers only when enough replicas have it; UNAVAILABLE otherwise.
    async fn invoke_and_wait(
        &self,
        keys: &[String; 4],
        campaign: &str,
        calls: &[(String, String)],
        now_ms: i64,
    ) -> Result<Vec<String>> {
        let ReplicaAcks { replicas, timeout } = self.acks;
        let mut retried = false;
        loop {
            let c = self.link.connection().await?;
            let mut pipe = redis::pipe();
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(keys.len())
                .arg(&keys[..])
                .arg(now_ms)
                .arg(campaign)
                .arg(&*c.run);
            for (user, request) in calls {
                cmd.arg(user).arg(request);
            }
            pipe.cmd("WAIT")
                .arg(replicas)
                .arg(timeout.as_millis().max(1) as u64);
            let mut conn = c.conn.clone();
            let reply: redis::RedisResult<(Vec<String>, u32)> =
                match pipe.query_async(&mut conn).await {
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        // A restarted or promoted server without the script:
                        // no part of the pipeline ran.
                        match self.script.prepare_invoke().load_async(&mut conn).await {
                            Ok(_) => pipe.query_async(&mut conn).await,
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                };
            match reply {
                Ok((flat, acked)) if acked >= replicas => return Ok(flat),
                Ok((_, acked)) => {
                    return Err(Error::Unavailable(format!(
                        "the issuance is in redis but only {acked} of {replicas} replica(s) confirmed it within {timeout:?} (coupon.replica_acks): it may or may not stand after a failover; retrying with the same request id is safe and answers the same"
                    )));
                }
                Err(e) => {
                    self.link.forget(&c).await;
                    if retried || !(e.is_io_error() || e.is_connection_dropped()) {
                        return Err(unavailable(e));
                    }
                    retried = true;
                }
            }
        }
    }
}

fn decision(answer: &[String]) -> Result<Decision> {
    let (status, code, remaining) = (&answer[0], answer[1].clone(), &answer[2]);
    let remaining: i64 = remaining
        .parse()
        .map_err(|_| Error::Internal(format!("issue script: remaining {remaining:?}")))?;
    Ok(match status.as_str() {
        "issued" => Decision::Issued { code, remaining },
        "already" => Decision::AlreadyIssued { code, remaining },
        "sold_out" => Decision::SoldOut,
        "not_started" => Decision::NotStarted { remaining },
        "ended" => Decision::Ended { remaining },
        "missing" => Decision::Missing,
        "reused" => Decision::RequestIdReused,
        other => {
            return Err(Error::Internal(format!("issue script answered {other:?}")));
        }
    })
}
