//! The issue script: one atomic server-side step that decides an Issue call
//! and, only when it issues, writes everything at once.
//!
//! It first checks, in this order, without writing anything:
//! 1. the campaign state exists (else the caller rebuilds it or answers NOT_FOUND);
//! 2. the request id was answered ISSUED before → the same answer again,
//!    remaining stock included (another user's request id is refused);
//! 3. the time: NOT_STARTED before the start, ENDED from the end on;
//! 4. the user already holds the per-user limit → ALREADY_ISSUED with the first code;
//! 5. no stock left → SOLD_OUT.
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

use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

use crate::keys::Keys;

/// KEYS: state, users, requests, log. ARGV: user, request id, now (ms), campaign id.
/// Returns {status, code, remaining}.
pub const ISSUE_LUA: &str = r#"
local st = redis.call('HMGET', KEYS[1], 'total', 'limit', 'start', 'end', 'remaining', 'seq', 'secret')
if not st[1] then return {'missing', '', '0'} end
local remaining = tonumber(st[5])
local user, request, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seen = redis.call('HGET', KEYS[3], request)
if seen then
  local cut = string.find(seen, '\n', 1, true)
  local cut2 = string.find(seen, '\n', cut + 1, true)
  if string.sub(seen, 1, cut - 1) ~= user then return {'reused', '', tostring(remaining)} end
  return {'issued', string.sub(seen, cut + 1, cut2 - 1), string.sub(seen, cut2 + 1)}
end
if now < tonumber(st[3]) then return {'not_started', '', tostring(remaining)} end
if now >= tonumber(st[4]) then return {'ended', '', tostring(remaining)} end
local held = redis.call('HGET', KEYS[2], user)
if held then
  local count, first = 0, nil
  for code in string.gmatch(held, '%S+') do
    count = count + 1
    if not first then first = code end
  end
  if count >= tonumber(st[2]) then return {'already', first, tostring(remaining)} end
end
if remaining <= 0 then return {'sold_out', '', '0'} end
local seq = tonumber(st[6]) + 1
local secret = st[7]
local mac = string.upper(redis.sha1hex(secret .. redis.sha1hex(secret .. ARGV[4] .. ':' .. seq)))
local code = string.sub(mac, 1, 4) .. '-' .. string.sub(mac, 5, 8) .. '-' .. string.sub(mac, 9, 12) .. '-' .. seq
remaining = remaining - 1
redis.call('HSET', KEYS[1], 'remaining', remaining, 'seq', seq)
if remaining == 0 then redis.call('HSET', KEYS[1], 'sold_out', ARGV[3]) end
if held then
  redis.call('HSET', KEYS[2], user, held .. ' ' .. code)
else
  redis.call('HSET', KEYS[2], user, code)
end
redis.call('HSET', KEYS[3], request, user .. '\n' .. code .. '\n' .. remaining)
redis.call('XADD', KEYS[4], '*', 'seq', seq, 'user', user, 'code', code, 'request', request, 'at', ARGV[3])
return {'issued', code, tostring(remaining)}
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
    /// The campaign has no state in Redis (unknown, or Redis lost it).
    Missing,
    /// The request id was answered ISSUED for another user.
    RequestIdReused,
}

pub struct IssueScript {
    redis: RedisHandle,
    keys: Keys,
    script: redis::Script,
}

impl IssueScript {
    pub fn new(redis: RedisHandle, keys: Keys) -> Self {
        Self {
            redis,
            keys,
            script: redis::Script::new(ISSUE_LUA),
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

    pub async fn run(
        &self,
        campaign: &str,
        user: &str,
        request_id: &str,
        now_ms: i64,
    ) -> Result<Decision> {
        let mut conn = self.redis.conn();
        let (status, code, remaining): (String, String, String) = self
            .script
            .key(&self.keys_of(campaign)[..])
            .arg(user)
            .arg(request_id)
            .arg(now_ms)
            .arg(campaign)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
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
}
