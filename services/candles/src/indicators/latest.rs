//! The latest indicator values per symbol × interval × set, in Redis
//! (`<p>:{SYM}:ind:<interval>:<set id>:last`, a hash): the candle they belong
//! to (open time, revision, closed), the values, and their *basis*: the open
//! times and revisions of the newest candles they were computed from (as many
//! as a late trade can still correct, [`basis_len`]). A late correction of an
//! older candle changes the newest candle's values without changing its
//! revision, so a reader checks the basis against the candles as they are
//! now before it trusts the values. A write lands when its candle is newer
//! than the stored one, or the same candle at a higher revision or on another
//! basis. The key expires [`LATEST_TTL_S`] after its last write.

use std::collections::HashMap;

use tickmesh_core::{Error, Result};
use tickmesh_runtime::redis_conn::unavailable;

use super::SeriesSpec;
use super::render::IndicatorValue;
use crate::candle::Candle;
use crate::store::CandleStore;

pub const LATEST_TTL_S: i64 = 24 * 3600;

/// KEYS: the latest hash. ARGV: open time (s), revision, closed (0/1), set,
/// values (JSON), TTL (s), basis.
const WRITE_LATEST_LUA: &str = r#"
local open = redis.call('HGET', KEYS[1], 'open_s')
if open then
  local o, a = tonumber(open), tonumber(ARGV[1])
  if a < o then return 0 end
  if a == o then
    local r, b = tonumber(ARGV[2]), tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
    if r < b then return 0 end
    if r == b and redis.call('HGET', KEYS[1], 'basis') == ARGV[7] then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'open_s', ARGV[1], 'revision', ARGV[2], 'closed', ARGV[3],
  'set', ARGV[4], 'values', ARGV[5], 'basis', ARGV[7])
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
    pub basis: String,
}

/// How many of the newest candles a basis names: those a trade inside the
/// late window can still change, plus the newest and one to spare (at most 64).
pub fn basis_len(late_window_ns: i64, interval: tickmesh_calendar::Interval) -> usize {
    use tickmesh_calendar::Unit;
    let n = i64::from(interval.count.max(1));
    // The shortest length of one candle (a 23-hour day at a DST change).
    let shortest_s = match interval.unit {
        Unit::Minute => 60 * n,
        Unit::Hour => 3_600 * n,
        Unit::Day => 82_800 * n,
        Unit::Week => 7 * 82_800 * n,
        Unit::Month => 28 * 82_800 * n,
        Unit::Year => 365 * 82_800 * n,
    };
    let within = late_window_ns.max(0) / 1_000_000_000 / shortest_s;
    usize::try_from(within + 2).unwrap_or(64).min(64)
}

/// The basis text of candles given newest first as (open time in s, revision).
pub fn basis(newest_first: impl Iterator<Item = (i64, u64)>, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    for (open_s, revision) in newest_first {
        let _ = write!(out, "{open_s}:{revision},");
    }
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
        basis: &str,
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
            .arg(basis)
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
            basis: fields.get("basis").cloned().unwrap_or_default(),
        }))
    }
}
