//! Single flight across the mesh: one upstream request per code at a time, whichever instance
//! the askers reached. The instance that leads a code's flight in-process also takes a short
//! lock in Redis (`SET NX PX`); an instance that finds it taken does not call the upstream but
//! waits for the leader's answer to land in the quote store.

use std::time::Duration;

use tickmesh_core::Result;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;

/// Deletes KEYS[1] when it still holds ARGV[1].
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

pub struct MeshFlight {
    redis: RedisHandle,
    base: String,
    instance: String,
    release: redis::Script,
}

impl MeshFlight {
    /// Flights of `limit_id`'s codes (see [`crate::rate_limit::limit_id`]), under
    /// `<prefix>:poller:{<limit_id>}:flight:<code>`.
    pub fn new(redis: RedisHandle, limit_id: &str, instance: &str) -> Self {
        Self {
            base: format!("{}:poller:{{{limit_id}}}:flight:", redis.prefix()),
            redis,
            instance: instance.to_string(),
            release: redis::Script::new(RELEASE_LUA),
        }
    }

    /// True when this instance leads `code`'s flight; the lock lapses after `hold` even if
    /// the leader never releases it (a killed process).
    pub async fn try_lead(&self, code: &str, hold: Duration) -> Result<bool> {
        let mut conn = self.redis.conn();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}{code}", self.base))
            .arg(&self.instance)
            .arg("NX")
            .arg("PX")
            .arg((hold.as_millis() as u64).max(1))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    /// [`MeshFlight::try_lead`] for several codes in one round trip.
    pub async fn try_lead_many(&self, codes: &[&str], hold: Duration) -> Result<Vec<bool>> {
        if codes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for code in codes {
            pipe.cmd("SET")
                .arg(format!("{}{code}", self.base))
                .arg(&self.instance)
                .arg("NX")
                .arg("PX")
                .arg((hold.as_millis() as u64).max(1));
        }
        let set: Vec<Option<String>> = pipe
            .query_async(&mut self.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(set.into_iter().map(|s| s.is_some()).collect())
    }

    /// Ends this instance's flights of `codes`.
    pub async fn release_many(&self, codes: &[&str]) -> Result<()> {
        if codes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for code in codes {
            pipe.invoke_script(
                self.release
                    .key(format!("{}{code}", self.base))
                    .arg(&self.instance),
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut self.redis.conn())
            .await
            .map_err(unavailable)
    }

    /// Ends this instance's flight of `code`.
    pub async fn release(&self, code: &str) -> Result<()> {
        let mut conn = self.redis.conn();
        self.release
            .key(format!("{}{code}", self.base))
            .arg(&self.instance)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
