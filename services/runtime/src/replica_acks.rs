//! Acknowledgements that wait for replicas (`ranking.replica_acks`,
//! `queue.replica_acks`): a write is answered only once
//! `WAIT numreplicas timeout` says that many replicas of its master have it,
//! so a master failure cannot take an acknowledged write with it when one of
//! those replicas is promoted.
//!
//! Why it is done this way:
//! - `WAIT` counts the writes of the connection it is sent on and blocks that
//!   connection until it returns. Pipelines that end in `WAIT` therefore go on
//!   a connection one call holds alone (from a small pool), never on the
//!   process's shared multiplexed connection, where one `WAIT` for a dead
//!   replica would stall every other command for the whole timeout.
//! - Before the `WAIT` goes a *fence*: `INCR` of a small counter in the
//!   entity's hash slot. A master replicates in order, so a replica that has
//!   the fence has everything the master did before it: the call's own
//!   writes, and also the writes of other calls that this call only read (a
//!   retried event found to be a duplicate, a user found already admitted).
//!   Without it `WAIT` would cover this connection's writes only, and a call
//!   that wrote nothing would be confirmed whatever the replica holds.
//! - On a Redis Cluster a pipeline is split per hash slot
//!   ([`crate::redis_slots`]); a keyless `WAIT` goes with the command before
//!   it, the fence, to that entity's master. A batch over several entities is
//!   thus confirmed by each of their masters, and the caller checks every
//!   `WAIT` answer.

use std::sync::Mutex;
use std::time::Duration;

use redis::{Pipeline, Script, Value};
use tickmesh_core::{Error, Result};
use tokio::sync::Semaphore;

use crate::redis_conn::{RedisConn, RedisHandle, unavailable};

/// Most calls of one service instance waiting on `WAIT` at once (each on a
/// connection of its own); more wait for a free connection.
pub const MAX_WAITING_CALLS: usize = 64;

/// One service's replica-wait setting and the connections its waits use.
pub struct ReplicaAcks {
    redis: RedisHandle,
    replicas: u32,
    timeout: Duration,
    /// The setting that asks for the wait, named in errors and logs.
    setting: &'static str,
    idle: Mutex<Vec<RedisConn>>,
    permits: Semaphore,
}

impl ReplicaAcks {
    /// Waits for `replicas` replicas (0: off) for at most `timeout`.
    pub fn new(
        redis: RedisHandle,
        replicas: u32,
        timeout: Duration,
        setting: &'static str,
    ) -> Self {
        Self {
            redis,
            replicas,
            timeout,
            setting,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_WAITING_CALLS),
        }
    }

    /// No wait: writes are answered as soon as the master has them.
    pub fn off(redis: RedisHandle, setting: &'static str) -> Self {
        Self::new(redis, 0, Duration::ZERO, setting)
    }

    pub fn is_on(&self) -> bool {
        self.replicas > 0
    }

    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Appends, when on, the fence (`INCR fence_key`, a key in the hash slot
    /// of the writes before it) and `WAIT`: [`Self::replies`] more replies,
    /// the `WAIT` answer last. Nothing when off.
    pub fn fence(&self, pipe: &mut Pipeline, fence_key: &str) {
        if self.is_on() {
            pipe.cmd("INCR").arg(fence_key);
            self.wait(pipe);
        }
    }

    /// Replies [`Self::fence`] appends.
    pub fn replies(&self) -> usize {
        if self.is_on() { 2 } else { 0 }
    }

    /// Appends, when on, a bare `WAIT`: it covers only what this call's
    /// connection wrote, so it suits a pipeline whose write always writes
    /// (and whose key has no slot of its own to put a fence in).
    pub fn wait(&self, pipe: &mut Pipeline) {
        if self.is_on() {
            pipe.cmd("WAIT")
                .arg(self.replicas)
                .arg(self.timeout.as_millis().max(1) as u64);
        }
    }

    /// Sends `pipe`: when on, on a connection this call holds alone; when
    /// off, on the shared connection. A server that lost its script cache
    /// (a restart, a failover) gets `scripts` loaded and the pipeline once
    /// more, so the scripts must be safe to repeat (on a cluster, the slot
    /// groups that did run, run again).
    pub async fn query(&self, pipe: &Pipeline, scripts: &[&Script]) -> Result<Vec<Value>> {
        if !self.is_on() {
            return send(&mut self.redis.conn(), pipe, scripts)
                .await
                .map_err(unavailable);
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::ShuttingDown("replica acknowledgements closed".into()))?;
        let idle = self.idle.lock().expect("replica ack connections").pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.redis.dedicated(self.timeout).await?,
        };
        let result = send(&mut conn, pipe, scripts).await;
        let broken = result
            .as_ref()
            .is_err_and(|e| e.is_io_error() || e.is_connection_dropped() || e.is_timeout());
        if !broken {
            self.idle
                .lock()
                .expect("replica ack connections")
                .push(conn);
        }
        result.map_err(unavailable)
    }

    /// Checks a `WAIT` answer (the last reply of [`Self::fence`] or the one of
    /// [`Self::wait`]): UNAVAILABLE naming the setting when fewer replicas
    /// than asked confirmed. `what` names the write ("events of board
    /// \"b\""), `retry` says what the caller may safely do.
    pub fn check(&self, wait_reply: &Value, what: &str, retry: &str) -> Result<()> {
        let acked = match wait_reply {
            Value::Int(n) => *n,
            other => {
                return Err(Error::Internal(format!(
                    "WAIT answered {other:?} for {what}"
                )));
            }
        };
        if acked >= i64::from(self.replicas) {
            return Ok(());
        }
        Err(Error::Unavailable(format!(
            "{what}: written, but only {acked} of {} replica(s) confirmed it within {:?} ({}); it may or may not stand after a failover; {retry}",
            self.replicas, self.timeout, self.setting
        )))
    }
}

async fn send(
    conn: &mut RedisConn,
    pipe: &Pipeline,
    scripts: &[&Script],
) -> redis::RedisResult<Vec<Value>> {
    match pipe.query_async(conn).await {
        Err(e)
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                && !scripts.is_empty() =>
        {
            for script in scripts {
                script.prepare_invoke().load_async(conn).await?;
            }
            pipe.query_async(conn).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(replicas: u32) -> ReplicaAcks {
        let redis = RedisHandle::new(&crate::config::RedisConfig::default()).unwrap();
        ReplicaAcks::new(
            redis,
            replicas,
            Duration::from_millis(250),
            "x.replica_acks",
        )
    }

    #[tokio::test]
    async fn off_adds_nothing_on_adds_a_fence_then_wait() {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg("{a}k").arg(1);
        acks(0).fence(&mut pipe, "{a}ack");
        acks(0).wait(&mut pipe);
        assert_eq!(pipe.len(), 1);
        let on = acks(2);
        on.fence(&mut pipe, "{a}ack");
        assert_eq!(pipe.len(), 1 + on.replies());
        let names: Vec<Vec<u8>> = pipe
            .cmd_iter()
            .map(|c| match c.args_iter().next() {
                Some(redis::Arg::Simple(name)) => name.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(names, [&b"SET"[..], b"INCR", b"WAIT"]);
        // The WAIT goes with the fence, to the master of its slot.
        assert_eq!(
            crate::redis_slots::group_by_slot(&pipe),
            vec![vec![0, 1, 2]]
        );
    }

    #[tokio::test]
    async fn too_few_replicas_is_unavailable_naming_the_setting() {
        let on = acks(1);
        assert!(on.check(&Value::Int(1), "w", "retry").is_ok());
        let e = on
            .check(&Value::Int(0), "events of board \"b\"", "retry")
            .unwrap_err();
        let Error::Unavailable(message) = e else {
            panic!("{e:?}")
        };
        assert!(message.contains("x.replica_acks"), "{message}");
        assert!(message.contains("0 of 1 replica(s)"), "{message}");
        assert!(message.contains("may or may not stand"), "{message}");
        assert!(matches!(
            on.check(&Value::Nil, "w", "retry"),
            Err(Error::Internal(_))
        ));
    }
}
