//! Which symbols clients follow right now, for the whole mesh: a sorted set in Redis,
//! `<prefix>:interest`, of symbol → the wall-clock millisecond its interest lapses. A service
//! whose clients follow symbols (CandleQuery's `SubscribeCandles`) holds an
//! [`InterestBoard`]; the quote pollers read the set and refresh those symbols first, whichever
//! process the clients reached. Entries lapse by themselves: a process that dies leaves
//! nothing behind for longer than [`INTEREST_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickmesh_core::Result;
use tokio_util::sync::CancellationToken;

use crate::RedisHandle;
use crate::redis_conn::unavailable;

/// gRPC metadata a tickmesh service sets on its own reads (the candle
/// aggregators' `StreamTrades`), so they do not count as clients following
/// the symbols: otherwise every aggregated symbol would be hot.
pub const INTERNAL_READER_HEADER: &str = "x-tickmesh-internal-reader";

/// How long one mark keeps a symbol interesting.
pub const INTEREST_TTL: Duration = Duration::from_secs(30);
/// How often a board renews the marks of the symbols it holds.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// At most this many symbols are read back at once.
const MAX_READ: usize = 10_000;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn key(redis: &RedisHandle) -> String {
    format!("{}:interest", redis.prefix())
}

/// Marks `symbols` as followed for [`INTEREST_TTL`] (a later lapse is never shortened), and
/// drops the marks that lapsed.
pub async fn mark(redis: &RedisHandle, symbols: &[String]) -> Result<()> {
    if symbols.is_empty() {
        return Ok(());
    }
    let now = wall_ms();
    let until = now + INTEREST_TTL.as_millis() as i64;
    let key = key(redis);
    let mut pipe = redis::pipe();
    for chunk in symbols.chunks(1000) {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&key).arg("GT");
        for symbol in chunk {
            zadd.arg(until).arg(symbol);
        }
        pipe.add_command(zadd).ignore();
    }
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg("-inf")
        .arg(now)
        .ignore();
    pipe.query_async::<()>(&mut redis.conn())
        .await
        .map_err(unavailable)
}

/// The symbols someone in the mesh follows now.
pub async fn followed(redis: &RedisHandle) -> Result<Vec<String>> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(key(redis))
        .arg(wall_ms())
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(MAX_READ)
        .query_async(&mut redis.conn())
        .await
        .map_err(unavailable)
}

/// One process's open follows: a count per symbol, renewed in Redis every [`RENEW_EVERY`]
/// while at least one is open, with one write per symbol per renewal however many clients
/// follow it.
pub struct InterestBoard {
    redis: RedisHandle,
    open: Mutex<HashMap<String, usize>>,
}

/// One client's follow of a symbol; dropping it ends the follow.
pub struct InterestGuard {
    board: Arc<InterestBoard>,
    symbol: String,
}

impl Drop for InterestGuard {
    fn drop(&mut self) {
        let mut open = self.board.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.symbol) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.symbol);
            }
        }
    }
}

impl InterestBoard {
    /// A board renewing its marks until `shutdown`.
    pub fn start(redis: RedisHandle, shutdown: CancellationToken) -> Arc<Self> {
        let board = Arc::new(Self {
            redis,
            open: Mutex::new(HashMap::new()),
        });
        tokio::spawn(board.clone().renew(shutdown));
        board
    }

    /// A client follows `symbol` until the guard is dropped; a symbol no one here followed
    /// yet is marked at once.
    pub fn hold(self: &Arc<Self>, symbol: &str) -> InterestGuard {
        let first = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(symbol.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            let (redis, symbols) = (self.redis.clone(), vec![symbol.to_string()]);
            tokio::spawn(async move {
                if let Err(e) = mark(&redis, &symbols).await {
                    tracing::debug!(error = %e, "marking a followed symbol");
                }
            });
        }
        InterestGuard {
            board: self.clone(),
            symbol: symbol.to_string(),
        }
    }

    /// Symbols followed here now.
    pub fn held(&self) -> Vec<String> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.keys().cloned().collect()
    }

    async fn renew(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
            let symbols = self.held();
            if let Err(e) = mark(&self.redis, &symbols).await {
                tracing::debug!(error = %e, "renewing followed symbols");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;
    use crate::redis_server::RedisServer;

    #[tokio::test]
    async fn a_follow_is_marked_at_once_counted_per_client_and_lapses_when_unrenewed() {
        let server = RedisServer::start_ephemeral().await.expect("redis-server");
        let redis = RedisHandle::new(&RedisConfig {
            url: server.url(),
            key_prefix: "t".into(),
            ..RedisConfig::default()
        })
        .unwrap();
        let shutdown = CancellationToken::new();
        let board = InterestBoard::start(redis.clone(), shutdown.clone());
        let a = board.hold("krx:005930");
        let b = board.hold("krx:005930");
        let c = board.hold("BTCUSDT");
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = followed(&redis).await.unwrap();
            if seen.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen.sort();
        assert_eq!(seen, ["BTCUSDT", "krx:005930"]);
        drop(a);
        let mut held = board.held();
        held.sort();
        assert_eq!(held, ["BTCUSDT", "krx:005930"], "one client still follows");
        drop((b, c));
        assert!(board.held().is_empty());

        // A lapsed mark is not followed, and marking trims it.
        let key = key(&redis);
        let _: () = redis::cmd("ZADD")
            .arg(&key)
            .arg(wall_ms() - 1)
            .arg("OLD")
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert!(!followed(&redis).await.unwrap().contains(&"OLD".to_string()));
        mark(&redis, &["NEW".to_string()]).await.unwrap();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&key)
            .arg("OLD")
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert_eq!(score, None, "lapsed marks are trimmed");
        shutdown.cancel();
    }
}
