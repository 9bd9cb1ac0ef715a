//! One access token per app key for the whole mesh, kept in Redis. Brokers limit how often a
//! token may be issued (KIS: about once a minute) and tell their users to cache it for its
//! lifetime (a day), so N instances must not each ask for their own: the first instance to
//! need one takes a short lock, issues it and stores it with its lifetime less an hour; the
//! others wait for it. A token the upstream refuses as expired is dropped only if it is still
//! the stored one, so one instance's stale copy never throws away another's fresh token.

use std::time::Duration;

use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

/// Deletes KEYS[1] when it still holds ARGV[1].
const FORGET_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// How long the instance issuing a token holds the right to do so.
const ISSUE_LOCK: Duration = Duration::from_secs(10);

pub struct SharedToken {
    redis: RedisHandle,
    token_key: String,
    lock_key: String,
    forget: redis::Script,
}

impl SharedToken {
    /// The token of `limit_id` (see [`crate::rate_limit::limit_id`]), under
    /// `<prefix>:poller:{<limit_id>}:token`: one hash slot with the app key's rate limit.
    pub fn new(redis: RedisHandle, limit_id: &str) -> Self {
        let base = format!("{}:poller:{{{limit_id}}}", redis.prefix());
        Self {
            token_key: format!("{base}:token"),
            lock_key: format!("{base}:token-lock"),
            redis,
            forget: redis::Script::new(FORGET_LUA),
        }
    }

    /// The stored token, if any.
    pub async fn get(&self) -> Result<Option<String>> {
        let mut conn = self.redis.conn();
        redis::cmd("GET")
            .arg(&self.token_key)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// True when this instance may issue the token now (no one else is doing it).
    pub async fn try_lead(&self, instance: &str) -> Result<bool> {
        let mut conn = self.redis.conn();
        let set: Option<String> = redis::cmd("SET")
            .arg(&self.lock_key)
            .arg(instance)
            .arg("NX")
            .arg("PX")
            .arg(ISSUE_LOCK.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    /// Stores a freshly issued token for `lifetime` (the upstream's `expires_in`) less an
    /// hour, at least a minute, and lets the next issuer go.
    pub async fn put(&self, token: &str, lifetime: Option<Duration>) -> Result<()> {
        let lifetime = lifetime.unwrap_or(Duration::from_secs(86_400));
        let keep = lifetime
            .saturating_sub(Duration::from_secs(3600))
            .max(Duration::from_secs(60));
        let mut conn = self.redis.conn();
        redis::pipe()
            .cmd("SET")
            .arg(&self.token_key)
            .arg(token)
            .arg("PX")
            .arg(keep.as_millis() as u64)
            .ignore()
            .cmd("DEL")
            .arg(&self.lock_key)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// The upstream refused `token` as expired: drop it if it is still the stored one.
    pub async fn forget(&self, token: &str) -> Result<()> {
        let mut conn = self.redis.conn();
        self.forget
            .key(&self.token_key)
            .arg(token)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// How long to wait for another instance's token before issuing one anyway.
    pub fn issue_lock() -> Duration {
        ISSUE_LOCK
    }
}
