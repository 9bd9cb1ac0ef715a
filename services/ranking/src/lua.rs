//! Lua helpers shared by every ranking script: the entry encoding of
//! `score.rs`, written once and prepended to each script.
//!
//! Lua numbers are doubles; every score and sequence here is an integer of
//! magnitude at most 2^53 - 1, so the arithmetic is exact. A sum is checked
//! against that bound before anything is written (a sum past it rounds to a
//! value past it, never back inside).

pub const PRELUDE: &str = r#"
local MAX = 9007199254740991
local function pad(n) return string.format('%016d', n) end
local function key_of(order, score)
  if order == 'h' then
    if score >= 0 then return '0' .. pad(MAX - score) else return '1' .. pad(-score) end
  end
  if score < 0 then return '0' .. pad(MAX + score) end
  return '1' .. pad(score)
end
local function score_of(order, entry)
  local sign = string.sub(entry, 1, 1)
  local n = tonumber(string.sub(entry, 2, 17))
  if order == 'h' then
    if sign == '0' then return MAX - n end
    return -n
  end
  if sign == '0' then return n - MAX end
  return n
end
local function seq_of(entry) return tonumber(string.sub(entry, 18, 33)) end
local function member_of(entry) return string.sub(entry, 34) end
local function better(order, a, b)
  if order == 'h' then return a > b end
  return a < b
end
"#;

/// A script with the prelude in front.
pub fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Runs `invocation` pipelines, loading the scripts once when Redis lost its
/// script cache (restart, failover): no script of a failed pipeline ran, so
/// resending is safe.
pub async fn query_loading<T: redis::FromRedisValue>(
    conn: &mut tickmesh_runtime::RedisConn,
    pipe: &redis::Pipeline,
    scripts: &[&redis::Script],
) -> tickmesh_core::Result<T> {
    use tickmesh_runtime::redis_conn::unavailable;
    match pipe.query_async(conn).await {
        Ok(r) => Ok(r),
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            for script in scripts {
                script
                    .prepare_invoke()
                    .load_async(conn)
                    .await
                    .map_err(unavailable)?;
            }
            pipe.query_async(conn).await.map_err(unavailable)
        }
        Err(e) => Err(unavailable(e)),
    }
}
