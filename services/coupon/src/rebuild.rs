//! Restoring a campaign's Redis state from the durable store.
//!
//! The state hash is created here in every case: at creation (from no
//! records) and when Redis lost it (a restart without persistence, a flush,
//! an eviction). The issue script answers "missing" while it is absent, so
//! nothing is issued from a state that does not know the durable records.
//!
//! Redis can also come back with *less* than it had (an AOF that lost its
//! last second, a failover to a replica that was behind): a state that
//! exists but lacks the last issuances, which the durable store may already
//! hold. Issuing from it would give their users a second coupon and reuse
//! their sequences (and so their codes). So a state is only used once it has
//! been confirmed against the durable records since the server started: it
//! carries the `run` (the server's run id, which changes on every start and
//! on a failover) of its last confirmation, and the issue script answers
//! "missing" while that is not the running server's. Confirming, under the
//! rebuild lock: when the durable records go no further than the state's
//! sequence, the state is stamped with the current run as it is (one store
//! read per campaign after a restart); when they go further, the state is
//! behind, and it is dropped and rebuilt from the records as below.
//!
//! One instance rebuilds at a time: it takes the campaign's rebuild lock (a
//! random token, `SET NX PX`), first copies any log entries still in Redis to
//! the store, then writes the per-user codes and request answers in chunks
//! and the state hash last. Every chunk checks that the lock still holds its
//! token and that the state is still absent, so an instance whose lock
//! expired cannot write over a newer rebuild. Others wait and retry.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamRangeReply;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisConn;
use tickmesh_runtime::redis_conn::unavailable;

use crate::campaign::Campaign;
use crate::issue_script::{RunConnection, ServerLink, script_with_node_run};
use crate::keys::Keys;
use crate::persist::parse_entry;
use crate::store::IssuanceStore;

/// Records written per chunk script.
const CHUNK: usize = 1000;

/// KEYS: state, users, requests, lock. ARGV: token, "1" on the first chunk,
/// then (user, request id, code, remaining after it) per record in sequence order.
const RECORDS_LUA: &str = r#"
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
for i = 3, #ARGV, 4 do
  local user, request, code, remaining = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local held = redis.call('HGET', KEYS[2], user)
  if held then
    redis.call('HSET', KEYS[2], user, held .. ' ' .. code)
  else
    redis.call('HSET', KEYS[2], user, code)
  end
  redis.call('HSET', KEYS[3], request, user .. '\n' .. code .. '\n' .. remaining)
end
return 1
"#;

/// KEYS: state, lock. ARGV: token, the server's run id, then field/value
/// pairs of the state.
const STATE_LUA: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'run', server_run(ARGV[2]), unpack(ARGV, 3))
end
redis.call('DEL', KEYS[2])
return 1
"#;

/// KEYS: state. ARGV: the server's run id. Returns {0 absent | 1 not
/// confirmed in this server run | 2 confirmed, the state's seq}.
const CHECK_LUA: &str = r#"
local st = redis.call('HMGET', KEYS[1], 'seq', 'run')
if not st[1] then return {0, '0'} end
if st[2] == server_run(ARGV[1]) then return {2, st[1]} end
return {1, st[1]}
"#;

/// KEYS: state, lock. ARGV: token, seq the durable records were compared
/// with, the server's run id. Stamps the state as confirmed in this run.
const CONFIRM_LUA: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'run', server_run(ARGV[3]))
return 1
"#;

/// KEYS: state, lock. ARGV: token, seq of the state found behind the
/// durable records. Drops that state (keeping the lock for the rebuild).
const DISCARD_LUA: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[2] then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"#;

pub struct Rebuilder {
    /// Every command of a rebuild goes over this one connection, so all of
    /// them reach the server whose run id the state is stamped with.
    pub link: Arc<ServerLink>,
    pub keys: Keys,
    pub store: Arc<dyn IssuanceStore>,
    /// How long a rebuild may hold the lock.
    pub lock_ttl: Duration,
}

static TOKEN_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Rebuilder {
    /// Makes sure the campaign's state is in Redis and confirmed against the
    /// durable records in this server run, rebuilding it if needed.
    /// `Ok(false)`: another instance is at it; try again shortly.
    pub async fn ensure(&self, campaign: &Campaign) -> Result<bool> {
        let c = self.link.connection().await?;
        let done = self.ensure_over(campaign, &c).await;
        if done.is_err() {
            // Perhaps the server went away: connect afresh next time.
            self.link.forget(&c).await;
        }
        done
    }

    async fn ensure_over(&self, campaign: &Campaign, c: &RunConnection) -> Result<bool> {
        let id = campaign.id.as_str();
        let mut conn = c.conn.clone();
        let run: &str = &c.run;
        let (status, seq): (i64, String) = script_with_node_run(CHECK_LUA)
            .key(self.keys.state(id))
            .arg(run)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if status == 2 {
            return Ok(true);
        }
        let token = format!(
            "{}-{}-{}",
            std::process::id(),
            TOKEN_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tickmesh_runtime::proto_time::now_nanos()
        );
        let locked: Option<String> = redis::cmd("SET")
            .arg(self.keys.rebuild_lock(id))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.lock_ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if locked.is_none() {
            return Ok(false);
        }
        if status == 1 {
            let durable = self.store.last_seq(id).await?;
            let state_seq: u64 = seq
                .parse()
                .map_err(|_| Error::Internal(format!("campaign {id:?} state has seq {seq:?}")))?;
            if durable <= state_seq {
                let ok: i64 = script_with_node_run(CONFIRM_LUA)
                    .key(self.keys.state(id))
                    .key(self.keys.rebuild_lock(id))
                    .arg(&token)
                    .arg(&seq)
                    .arg(run)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                return Ok(ok == 1);
            }
            tracing::warn!(
                campaign = id,
                redis_seq = state_seq,
                durable_seq = durable,
                "redis came back behind the durable issuance records; rebuilding the campaign from them"
            );
            let ok: i64 = redis::Script::new(DISCARD_LUA)
                .key(self.keys.state(id))
                .key(self.keys.rebuild_lock(id))
                .arg(&token)
                .arg(&seq)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if ok == 0 {
                return Ok(false);
            }
        }
        let drained = self.drain_log(id, &mut conn).await?;
        let records = self.store.issuances(id).await?;
        let issued = records.len() as i64;
        let rebuilt = records.len();
        let mut first = true;
        let records_script = redis::Script::new(RECORDS_LUA);
        for chunk in records.chunks(CHUNK) {
            let mut invocation = records_script.prepare_invoke();
            invocation
                .key(self.keys.state(id))
                .key(self.keys.users(id))
                .key(self.keys.requests(id))
                .key(self.keys.rebuild_lock(id))
                .arg(&token)
                .arg(if first { "1" } else { "0" });
            for r in chunk {
                // Sequences count issuances, so the stock left right after
                // issuance `seq` was `total - seq`.
                invocation
                    .arg(&r.user_id)
                    .arg(&r.request_id)
                    .arg(&r.code)
                    .arg(campaign.total_stock - r.seq as i64);
            }
            let ok: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if ok == 0 {
                return Ok(false);
            }
            first = false;
        }
        if first {
            // No records: clear leftovers of an earlier state.
            let () = redis::cmd("DEL")
                .arg(self.keys.users(id))
                .arg(self.keys.requests(id))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        let remaining = campaign.total_stock - issued;
        if remaining < 0 {
            tracing::error!(
                campaign = id,
                issued,
                stock = campaign.total_stock,
                "durable records exceed the stock"
            );
        }
        let last_seq = records.last().map_or(0, |r| r.seq);
        let state_script = script_with_node_run(STATE_LUA);
        let mut invocation = state_script.prepare_invoke();
        invocation
            .key(self.keys.state(id))
            .key(self.keys.rebuild_lock(id))
            .arg(&token)
            .arg(run)
            .arg("total")
            .arg(campaign.total_stock)
            .arg("limit")
            .arg(campaign.per_user_limit)
            .arg("start")
            .arg(campaign.start_ms)
            .arg("end")
            .arg(campaign.end_ms)
            .arg("remaining")
            .arg(remaining.max(0))
            .arg("seq")
            .arg(last_seq)
            .arg("secret")
            .arg(&campaign.secret);
        if remaining <= 0
            && let Some(last) = records.last()
        {
            invocation.arg("sold_out").arg(last.issued_ms);
        }
        let ok: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ok == 1 && (rebuilt > 0 || drained > 0) {
            tracing::info!(
                campaign = id,
                issued,
                drained,
                "campaign state rebuilt from the durable store"
            );
        }
        Ok(ok == 1)
    }

    /// Copies whatever the campaign's log still holds to the store, so the
    /// rebuild starts from every issuance Redis still knows.
    async fn drain_log(&self, id: &str, conn: &mut RedisConn) -> Result<usize> {
        let mut start = "-".to_string();
        let mut drained = 0;
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.keys.log(id))
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(CHUNK)
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            if page.ids.is_empty() {
                return Ok(drained);
            }
            let records = page
                .ids
                .iter()
                .map(|e| parse_entry(id, e))
                .collect::<Result<Vec<_>>>()?;
            self.store.put_issuances(&records).await?;
            drained += records.len();
            let last = &page.ids.last().expect("non-empty").id;
            start = format!("({last}");
            if page.ids.len() < CHUNK {
                return Ok(drained);
            }
        }
    }
}

/// Rebuilds (or waits for another instance's rebuild) for at most `wait`.
pub async fn ensure_waiting(
    rebuilder: &Rebuilder,
    campaign: &Campaign,
    wait: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if rebuilder.ensure(campaign).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "campaign {:?} is being restored from the durable store; retry",
                campaign.id
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
