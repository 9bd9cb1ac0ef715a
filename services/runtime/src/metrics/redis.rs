//! Redis command latency and errors, timed where every service's commands
//! pass ([`crate::RedisConn`]'s `ConnectionLike`). The label is the command's
//! name from a fixed list (anything else is `other`), a pipeline is
//! `PIPELINE` and a transaction `MULTI`: a bounded set.

use std::time::Instant;

use redis::{Cmd, Pipeline, RedisError, RedisFuture};

use super::catalogue::{REDIS_DURATION, REDIS_ERRORS};

/// Times `future`, the round trip of `cmd` (a no-op without the recorder).
pub fn command<'a, T: Send + 'a>(cmd: &Cmd, future: RedisFuture<'a, T>) -> RedisFuture<'a, T> {
    if !super::is_installed() {
        return future;
    }
    let name = cmd
        .args_iter()
        .next()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => command_name(bytes),
            _ => "other",
        })
        .unwrap_or("other");
    timed(name, future)
}

/// Times `future`, the round trip of a pipeline.
pub fn pipeline<'a, T: Send + 'a>(
    pipeline: &Pipeline,
    future: RedisFuture<'a, T>,
) -> RedisFuture<'a, T> {
    if !super::is_installed() {
        return future;
    }
    timed(
        if pipeline.is_transaction() {
            "MULTI"
        } else {
            "PIPELINE"
        },
        future,
    )
}

fn timed<'a, T: Send + 'a>(name: &'static str, future: RedisFuture<'a, T>) -> RedisFuture<'a, T> {
    Box::pin(async move {
        let started = Instant::now();
        let result = future.await;
        metrics::histogram!(REDIS_DURATION, "command" => name)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!(REDIS_ERRORS, "command" => name, "kind" => error_kind(e))
                .increment(1);
        }
        result
    })
}

fn error_kind(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        "io"
    } else if e.code().is_some() {
        "server"
    } else {
        "other"
    }
}

/// Commands tickmesh sends, and the usual others; any other name is `other`.
const KNOWN: &[&str] = &[
    "APPEND",
    "AUTH",
    "BLPOP",
    "CLIENT",
    "CLUSTER",
    "CONFIG",
    "DBSIZE",
    "DEL",
    "EVAL",
    "EVALSHA",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXEC",
    "EXISTS",
    "EXPIRE",
    "EXPIREAT",
    "FCALL",
    "FLUSHALL",
    "FLUSHDB",
    "GET",
    "GETDEL",
    "GETSET",
    "HDEL",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HMSET",
    "HSCAN",
    "HSET",
    "HSETNX",
    "INCR",
    "INCRBY",
    "INFO",
    "KEYS",
    "LLEN",
    "LPUSH",
    "LRANGE",
    "MGET",
    "MSET",
    "MULTI",
    "PEXPIRE",
    "PEXPIREAT",
    "PING",
    "PSETEX",
    "PTTL",
    "PUBLISH",
    "RENAME",
    "ROLE",
    "RPUSH",
    "SADD",
    "SCAN",
    "SCARD",
    "SCRIPT",
    "SELECT",
    "SET",
    "SETEX",
    "SETNX",
    "SISMEMBER",
    "SMEMBERS",
    "SREM",
    "SSCAN",
    "TIME",
    "TTL",
    "TYPE",
    "UNLINK",
    "WAIT",
    "WAITAOF",
    "WATCH",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XGROUP",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREADGROUP",
    "XREVRANGE",
    "XTRIM",
    "ZADD",
    "ZCARD",
    "ZCOUNT",
    "ZINCRBY",
    "ZMSCORE",
    "ZPOPMIN",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZRANK",
    "ZREM",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREVRANGE",
    "ZREVRANK",
    "ZSCORE",
    "ZUNIONSTORE",
];

/// The command's name as a label: upper case, from [`KNOWN`], else `other`.
fn command_name(bytes: &[u8]) -> &'static str {
    KNOWN
        .iter()
        .copied()
        .find(|known| known.as_bytes().eq_ignore_ascii_case(bytes))
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded() {
        assert_eq!(command_name(b"xadd"), "XADD");
        assert_eq!(command_name(b"EVALSHA"), "EVALSHA");
        assert_eq!(command_name(b"user:42"), "other");
        let mut sorted = KNOWN.to_vec();
        sorted.sort();
        assert_eq!(sorted, KNOWN, "keep the list sorted");
    }
}
