//! Instrument definitions: stored in one Redis hash (symbol → JSON) so every
//! instance sees the same ones, and cached in each instance. The cache is
//! refreshed on a timer and on a miss, so a symbol registered on another
//! instance is usable at once, and a changed definition within
//! `marketfeed.instrument_refresh`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::AsyncCommands;
use tickmesh_core::{Error, Result, page_token};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;
use tokio_util::sync::CancellationToken;

use crate::keys::Keys;
use crate::model::Instrument;

pub const DEFAULT_PAGE_SIZE: usize = 1000;
pub const MAX_PAGE_SIZE: usize = 10_000;
const PAGE_KIND: &str = "instruments";

pub struct InstrumentBook {
    redis: RedisHandle,
    keys: Keys,
    cache: RwLock<HashMap<String, Arc<Instrument>>>,
    auto_register: bool,
}

impl InstrumentBook {
    pub fn new(redis: RedisHandle, keys: Keys, auto_register: bool) -> Self {
        Self {
            redis,
            keys,
            cache: RwLock::new(HashMap::new()),
            auto_register,
        }
    }

    /// Validates and stores `instrument`; returns it as stored and whether it is new.
    pub async fn upsert(
        &self,
        mut instrument: Instrument,
        now_ns: i64,
    ) -> Result<(Instrument, bool)> {
        Error::check(instrument.violations("instrument."))?;
        if instrument.time_zone.is_empty() {
            instrument.time_zone = "UTC".into();
        }
        instrument.update_time_ns = now_ns;
        let json =
            serde_json::to_string(&instrument).map_err(|e| Error::Internal(e.to_string()))?;
        let mut conn = self.redis.conn();
        let created: i64 = conn
            .hset(self.keys.instruments(), &instrument.symbol, json)
            .await
            .map_err(unavailable)?;
        self.cache_put(Arc::new(instrument.clone()));
        Ok((instrument, created == 1))
    }

    /// The stored definition of `symbol` (read from Redis, not the cache).
    pub async fn get(&self, symbol: &str) -> Result<Instrument> {
        let mut conn = self.redis.conn();
        let json: Option<String> = conn
            .hget(self.keys.instruments(), symbol)
            .await
            .map_err(unavailable)?;
        let json = json.ok_or_else(|| Error::NotFound(format!("instrument {symbol:?}")))?;
        decode(&json)
    }

    /// One page of instruments in symbol order.
    pub async fn list(&self, page_size: i32, token: &str) -> Result<(Vec<Instrument>, String)> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            n if n as usize > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n as usize,
        };
        let after = if token.is_empty() {
            None
        } else {
            Some(
                page_token::decode(token, PAGE_KIND, 0)
                    .map_err(|r| Error::invalid("page_token", r))?,
            )
        };
        let mut conn = self.redis.conn();
        let all: HashMap<String, String> = conn
            .hgetall(self.keys.instruments())
            .await
            .map_err(unavailable)?;
        let mut symbols: Vec<&String> = all
            .keys()
            .filter(|s| after.as_ref().is_none_or(|a| s.as_str() > a.as_str()))
            .collect();
        symbols.sort();
        let more = symbols.len() > size;
        symbols.truncate(size);
        let page = symbols
            .iter()
            .map(|s| decode(&all[*s]))
            .collect::<Result<Vec<_>>>()?;
        let next = match (more, page.last()) {
            (true, Some(last)) => page_token::encode(PAGE_KIND, 0, &last.symbol),
            _ => String::new(),
        };
        Ok((page, next))
    }

    /// Definitions of `symbols` for validating trades: from the cache, then
    /// Redis; in auto-register mode unknown symbols are registered. Symbols that
    /// stay unknown are absent from the result.
    pub async fn resolve(
        &self,
        symbols: &[&str],
        now_ns: i64,
    ) -> Result<HashMap<String, Arc<Instrument>>> {
        let mut found = HashMap::with_capacity(symbols.len());
        let mut missing = Vec::new();
        {
            let cache = self.cache.read().expect("instrument cache lock");
            for symbol in symbols {
                match cache.get(*symbol) {
                    Some(i) => {
                        found.insert(symbol.to_string(), i.clone());
                    }
                    None => missing.push(*symbol),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let mut conn = self.redis.conn();
        let key = self.keys.instruments();
        let stored: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(&missing)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        for (symbol, json) in missing.into_iter().zip(stored) {
            let instrument = match json {
                Some(json) => decode(&json)?,
                None if self.auto_register && tickmesh_core::ids::check_symbol(symbol).is_ok() => {
                    let fresh = Instrument::auto_registered(symbol, now_ns);
                    let json = serde_json::to_string(&fresh)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    // HSETNX: if another instance registered it meanwhile, keep theirs.
                    let _: bool = conn
                        .hset_nx(&key, symbol, json)
                        .await
                        .map_err(unavailable)?;
                    let json: String = conn.hget(&key, symbol).await.map_err(unavailable)?;
                    tracing::info!(symbol, "auto-registered instrument");
                    decode(&json)?
                }
                None => continue,
            };
            let instrument = Arc::new(instrument);
            self.cache_put(instrument.clone());
            found.insert(symbol.to_string(), instrument);
        }
        Ok(found)
    }

    /// True when the symbol is registered (or would be auto-registered).
    pub async fn exists(&self, symbol: &str, now_ns: i64) -> Result<bool> {
        Ok(self.resolve(&[symbol], now_ns).await?.contains_key(symbol))
    }

    /// Reloads every definition from Redis. A definition this instance
    /// caches that Redis no longer has was lost by Redis (a restart that lost
    /// its last writes or everything; instruments are never deleted): it is
    /// written back rather than forgotten, so the next trade of the symbol
    /// does not auto-register it again with the defaults.
    pub async fn refresh(&self) -> Result<usize> {
        let mut conn = self.redis.conn();
        let key = self.keys.instruments();
        let mut all: HashMap<String, String> = conn.hgetall(&key).await.map_err(unavailable)?;
        let lost: Vec<Arc<Instrument>> = self
            .cache
            .read()
            .expect("instrument cache lock")
            .values()
            .filter(|i| !all.contains_key(&i.symbol))
            .cloned()
            .collect();
        for instrument in lost {
            let json =
                serde_json::to_string(&*instrument).map_err(|e| Error::Internal(e.to_string()))?;
            // HSETNX: if another instance wrote it back (or it was registered) meanwhile, keep that.
            let restored: bool = conn
                .hset_nx(&key, &instrument.symbol, json)
                .await
                .map_err(unavailable)?;
            let stored: Option<String> = conn
                .hget(&key, &instrument.symbol)
                .await
                .map_err(unavailable)?;
            if restored {
                tracing::warn!(symbol = %instrument.symbol, "instrument definition missing from redis (redis lost data); written back from this instance's cache");
            }
            if let Some(json) = stored {
                all.insert(instrument.symbol.clone(), json);
            }
        }
        let mut fresh = HashMap::with_capacity(all.len());
        for (symbol, json) in all {
            match decode(&json) {
                Ok(i) => {
                    fresh.insert(symbol, Arc::new(i));
                }
                Err(e) => tracing::warn!(symbol, error = %e, "skipping unreadable instrument"),
            }
        }
        let n = fresh.len();
        *self.cache.write().expect("instrument cache lock") = fresh;
        Ok(n)
    }

    /// Refreshes the cache every `every` until shutdown.
    pub fn spawn_refresh(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.refresh().await {
                    tracing::debug!(error = %e, "instrument refresh failed; keeping the cache");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }

    fn cache_put(&self, instrument: Arc<Instrument>) {
        self.cache
            .write()
            .expect("instrument cache lock")
            .insert(instrument.symbol.clone(), instrument);
    }
}

fn decode(json: &str) -> Result<Instrument> {
    serde_json::from_str(json)
        .map_err(|e| Error::Internal(format!("stored instrument is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tickmesh_runtime::config::RedisConfig;
    use tickmesh_runtime::redis_server::RedisServer;

    use super::*;

    fn seoul(symbol: &str) -> Instrument {
        Instrument {
            symbol: symbol.into(),
            venue: "krx".into(),
            price_scale: 0,
            quantity_scale: 0,
            time_zone: "Asia/Seoul".into(),
            sessions: Vec::new(),
            update_time_ns: 0,
        }
    }

    /// Redis restarts empty (or without its last writes): a definition this
    /// instance still caches is written back, not dropped and then
    /// auto-registered again with the defaults (UTC, scale 8), which would
    /// put the symbol's candles on other day boundaries and scales.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_definition_redis_lost_is_restored_from_the_cache() {
        let mut redis = RedisServer::start_ephemeral().await.unwrap();
        let handle = RedisHandle::new(&RedisConfig {
            url: redis.url(),
            ..Default::default()
        })
        .unwrap();
        let keys = Keys::new(handle.prefix());
        let book = InstrumentBook::new(handle, keys, true);
        book.upsert(seoul("A005930"), 1).await.unwrap();
        assert_eq!(book.refresh().await.unwrap(), 1);

        redis.restart().await.unwrap(); // no persistence: every key is gone
        let mut refreshed = None;
        for _ in 0..100 {
            if let Ok(n) = book.refresh().await {
                refreshed = Some(n);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(refreshed, Some(1), "kept");
        let stored = book.get("A005930").await.unwrap();
        assert_eq!(stored.time_zone, "Asia/Seoul", "written back to redis");
        let resolved = book.resolve(&["A005930"], 2).await.unwrap();
        assert_eq!(resolved["A005930"].time_zone, "Asia/Seoul");
        assert_eq!(resolved["A005930"].price_scale, 0);
    }
}
