//! The latest indicator values per symbol × interval × set, in Redis
//! (`<p>:{SYM}:ind:<interval>:<set id>:last`, a hash): the candle they belong
//! to (open time, revision, closed) and the values. A write lands only when
//! its candle is newer than the stored one, or the same candle at a higher
//! revision, so instances writing the same set in any order leave the newest
//! values; values are a pure function of the candles, so two instances never
//! disagree about a revision. The key expires [`LATEST_TTL_S`] after its last
//! write.

use std::collections::HashMap;

use tickmesh_core::{Error, Result};
use tickmesh_runtime::redis_conn::unavailable;

use super::SeriesSpec;
use super::render::IndicatorValue;
use crate::candle::Candle;
use crate::store::CandleStore;

pub const LATEST_TTL_S: i64 = 24 * 3600;

/// KEYS: the latest hash. ARGV: open time (s), revision, closed (0/1), set,
/// values (JSON), TTL (s).
const WRITE_LATEST_LUA: &str = r#"
local open = redis.call('HGET', KEYS[1], 'open_s')
if open then
  local o, a = tonumber(open), tonumber(ARGV[1])
  if a < o then return 0 end
  if a == o and tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], 'revision') or '0') then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'open_s', ARGV[1], 'revision', ARGV[2], 'closed', ARGV[3],
  'set', ARGV[4], 'values', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"#;

/// Latest values as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    pub open_s: i64,
    pub revision: u64,
    pub closed: bool,
    pub values: Vec<IndicatorValue>,
}

pub struct LatestStore {
    script: redis::Script,
}

impl Default for LatestStore {
    fn default() -> Self {
        Self {
            script: redis::Script::new(WRITE_LATEST_LUA),
        }
    }
}

impl LatestStore {
    /// Stores `values` as the set's latest unless newer ones are there.
    /// True when written.
    pub async fn write(
        &self,
        store: &CandleStore,
        spec: &SeriesSpec,
        candle: &Candle,
        values: &[IndicatorValue],
    ) -> Result<bool> {
        let json = serde_json::to_string(values).map_err(|e| Error::Internal(e.to_string()))?;
        let written: i64 = self
            .script
            .key(
                store
                    .keys
                    .indicator_latest(&spec.symbol, spec.interval, &spec.set_id),
            )
            .arg(candle.score())
            .arg(candle.revision)
            .arg(u8::from(candle.closed))
            .arg(spec.set.key())
            .arg(json)
            .arg(LATEST_TTL_S)
            .invoke_async(&mut store.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    /// The stored latest values of a set, if any.
    pub async fn read(&self, store: &CandleStore, spec: &SeriesSpec) -> Result<Option<Latest>> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(
                store
                    .keys
                    .indicator_latest(&spec.symbol, spec.interval, &spec.set_id),
            )
            .query_async(&mut store.redis.conn())
            .await
            .map_err(unavailable)?;
        if fields.get("set") != Some(&spec.set.key()) {
            return Ok(None);
        }
        let parse = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
        let (Some(open_s), Some(revision), Some(closed), Some(values)) = (
            parse("open_s"),
            parse("revision"),
            parse("closed"),
            fields.get("values"),
        ) else {
            return Ok(None);
        };
        let Ok(values) = serde_json::from_str(values) else {
            return Ok(None);
        };
        Ok(Some(Latest {
            open_s,
            revision: revision.max(0) as u64,
            closed: closed == 1,
            values,
        }))
    }
}
