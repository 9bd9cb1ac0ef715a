//! The state of a set of indicators before a given candle.
//!
//! EMA, RSI, MACD and ATR remember every candle since the series started, and
//! OBV is a running total, so a value depends on where the series starts. The
//! series of a symbol × interval starts at its first candle (the oldest one in
//! the history store and Redis together), as TA-Lib over the whole history
//! would compute it; a candle's values are then the same in every query and on
//! every instance.
//!
//! Reading the whole history for each query would cost too much, so the state
//! is saved every [`CHECKPOINT_EVERY`] candles of the series into Redis
//! (`<p>:{SYM}:ind:<interval>:<set id>:ck`, a sorted set scored by the open
//! time of the last candle in it, each member `<epoch>|<state JSON>`). A query
//! restores the newest checkpoint before its first candle and reads at most
//! about that many candles more. Checkpoints are written only for final
//! candles (closed, and older than the late window behind the newest trade),
//! carry the symbol's indicator epoch (`ind_epoch` in the status hash, bumped
//! whenever stored candles are rewritten), and expire [`CHECKPOINT_TTL_S`]
//! after their last use, so the sets nobody asks for any more go away.

use std::sync::Arc;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_indicators::{IndicatorState, Reading};
use tickmesh_runtime::redis_conn::unavailable;

use super::SeriesSpec;
use crate::candle::Candle;
use crate::query::{CandlesQuery, QueryService};
use crate::store::CandleStore;

/// Candles of the series between two checkpoints.
pub const CHECKPOINT_EVERY: u64 = 1000;
/// Checkpoints of a set expire this long after they were last read or written.
pub const CHECKPOINT_TTL_S: i64 = 7 * 24 * 3600;
/// Candles read per page while replaying the series.
const READ_PAGE: i32 = 1000;

/// The status-hash field holding the symbol's indicator epoch.
pub const EPOCH_FIELD: &str = "ind_epoch";

pub struct Series {
    pub store: Arc<CandleStore>,
    pub query: Arc<QueryService>,
    pub late_window_ns: i64,
}

/// Which candles of a symbol can no longer change, and the epoch their
/// checkpoints must carry.
#[derive(Clone, Copy, Debug)]
pub struct Finality {
    pub epoch: u64,
    /// Closed candles that close at or before this time are final.
    pub final_until_ns: i64,
}

impl Finality {
    pub fn is_final(&self, c: &Candle) -> bool {
        c.closed && c.bucket.close_ns <= self.final_until_ns
    }
}

/// Checkpoints found on the way, written together at the end.
struct Saver {
    key: String,
    epoch: u64,
    /// False once a candle that is not final was committed.
    open: bool,
    entries: Vec<(i64, String)>,
}

impl Series {
    /// The symbol's epoch and how far its candles are final.
    pub async fn finality(&self, symbol: &str) -> Result<Finality> {
        let (epoch, newest): (Option<u64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.store.keys.status(symbol))
            .arg(EPOCH_FIELD)
            .arg("newest_ns")
            .query_async(&mut self.store.redis.conn())
            .await
            .map_err(unavailable)?;
        Ok(Finality {
            epoch: epoch.unwrap_or(0),
            final_until_ns: newest
                .unwrap_or(i64::MIN)
                .saturating_sub(self.late_window_ns),
        })
    }

    /// The state after every candle of the series that opens before
    /// `before_ns`.
    pub async fn state_before(
        &self,
        spec: &SeriesSpec,
        finality: &Finality,
        before_ns: i64,
    ) -> Result<IndicatorState> {
        let key = self.key(spec);
        let mut state = self.load(spec, &key, finality.epoch, before_ns).await?;
        let mut saver = Saver {
            key,
            epoch: finality.epoch,
            open: true,
            entries: Vec::new(),
        };
        let start_ns = state
            .last_open_ns()
            .map(|open| spec.interval.bucket(open, spec.tz).close_ns);
        if start_ns.is_none_or(|s| s < before_ns) {
            let mut token = String::new();
            loop {
                let (page, next) = self
                    .query
                    .get_candles(CandlesQuery {
                        symbol: spec.symbol.clone(),
                        interval: spec.interval.to_string(),
                        start_ns,
                        end_ns: Some(before_ns),
                        page_size: READ_PAGE,
                        page_token: token,
                        newest_first: false,
                        fill: false,
                    })
                    .await?;
                for candle in &page {
                    Self::commit_with(&mut state, spec, candle, finality, Some(&mut saver))?;
                }
                if next.is_empty() {
                    break;
                }
                token = next;
            }
        }
        self.save(saver).await?;
        Ok(state)
    }

    /// The state after every candle of the series before `before_ns`, then
    /// the readings of `candles` (oldest first, the first one opening at or
    /// after `before_ns`), committing them: used for a page of a query.
    pub async fn readings(
        &self,
        spec: &SeriesSpec,
        finality: &Finality,
        candles: &[Candle],
    ) -> Result<Vec<Vec<Reading>>> {
        let Some(first) = candles.first() else {
            return Ok(Vec::new());
        };
        let mut state = self
            .state_before(spec, finality, first.bucket.open_ns)
            .await?;
        let mut saver = Saver {
            key: self.key(spec),
            epoch: finality.epoch,
            open: true,
            entries: Vec::new(),
        };
        let mut out = Vec::with_capacity(candles.len());
        for candle in candles {
            out.push(Self::commit_with(
                &mut state,
                spec,
                candle,
                finality,
                Some(&mut saver),
            )?);
        }
        self.save(saver).await?;
        Ok(out)
    }

    fn commit_with(
        state: &mut IndicatorState,
        spec: &SeriesSpec,
        candle: &Candle,
        finality: &Finality,
        saver: Option<&mut Saver>,
    ) -> Result<Vec<Reading>> {
        let readings = state
            .commit(&spec.bar(candle))
            .map_err(|e| Error::Internal(format!("indicator series of {}: {e}", spec.symbol)))?;
        if let Some(saver) = saver
            && saver.open
        {
            if !finality.is_final(candle) {
                saver.open = false;
            } else if state.committed().is_multiple_of(CHECKPOINT_EVERY) {
                saver
                    .entries
                    .push((candle.bucket.open_ns / 1_000_000_000, state.checkpoint()));
            }
        }
        Ok(readings)
    }

    fn key(&self, spec: &SeriesSpec) -> String {
        self.store
            .keys
            .indicator_checkpoints(&spec.symbol, spec.interval, &spec.set_id)
    }

    /// The newest checkpoint of this epoch whose last candle opens before
    /// `before_ns`; a new state when there is none.
    async fn load(
        &self,
        spec: &SeriesSpec,
        key: &str,
        epoch: u64,
        before_ns: i64,
    ) -> Result<IndicatorState> {
        let before_s = before_ns.div_euclid(1_000_000_000)
            + i64::from(before_ns.rem_euclid(1_000_000_000) != 0);
        let mut conn = self.store.redis.conn();
        let found: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(key)
            .arg(format!("({before_s}"))
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(4)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        for member in &found {
            let Some((tag, text)) = member.split_once('|') else {
                continue;
            };
            let tag: u64 = tag.parse().unwrap_or(0);
            if tag < epoch {
                // Candles were rewritten since: every checkpoint may be wrong.
                let _: Value = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                return Ok(spec.set.state());
            }
            if tag > epoch {
                continue;
            }
            match spec.set.restore(text) {
                Ok(state) => {
                    let _: Value = redis::cmd("EXPIRE")
                        .arg(key)
                        .arg(CHECKPOINT_TTL_S)
                        .query_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    return Ok(state);
                }
                Err(e) => tracing::warn!(key, error = %e, "unusable indicator checkpoint ignored"),
            }
        }
        Ok(spec.set.state())
    }

    async fn save(&self, saver: Saver) -> Result<()> {
        if saver.entries.is_empty() {
            return Ok(());
        }
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&saver.key);
        for (score, state) in &saver.entries {
            zadd.arg(*score).arg(format!("{}|{state}", saver.epoch));
        }
        let mut pipe = redis::pipe();
        pipe.add_command(zadd).ignore();
        pipe.cmd("EXPIRE")
            .arg(&saver.key)
            .arg(CHECKPOINT_TTL_S)
            .ignore();
        pipe.query_async::<()>(&mut self.store.redis.conn())
            .await
            .map_err(unavailable)
    }
}
