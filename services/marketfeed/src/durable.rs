//! Durable acknowledgements (`marketfeed.durable_acks`): a publish is answered
//! only once Redis has made its trades durable.
//!
//! How is read off the server, never configured: at start, after any failed
//! write, and whenever the server's `run_id` changes (a restart, a failover):
//!
//! - Redis 7.2+: `WAITAOF <1 if the local AOF fsyncs, else 0> <replicas>
//!   <timeout>` right after the ingest scripts, in the same pipeline.
//! - An older Redis with `appendonly yes`, `appendfsync always` and
//!   `no-appendfsync-on-rewrite no`: the reply itself means the write is on
//!   the local disk (Redis fsyncs before it answers). Each write re-reads the
//!   three settings in its pipeline, so a server switched to `everysec` at run
//!   time fails the first write after (UNAVAILABLE: may or may not be stored)
//!   and the next ones (FAILED_PRECONDITION).
//! - Replicas wanted (`marketfeed.durable_replicas`) on an older Redis:
//!   `WAIT <replicas> <timeout>` after the scripts.
//!
//! A server that offers none of these refuses the start with what to change.
//!
//! `WAIT` and `WAITAOF` count the writes of the connection they are sent on,
//! and they block it until they return. They are therefore sent in the same
//! pipeline as the scripts (so they cover exactly this call's writes, and
//! whatever the connection wrote before) on a connection that this call holds
//! alone: on the process's shared multiplexed connection they would stall
//! every other command (quotes, candles, rankings) for up to the timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::RedisConn;
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::redis_conn::unavailable;
use tokio::sync::{Mutex, OwnedSemaphorePermit, RwLock, Semaphore};
use tokio_util::sync::CancellationToken;

/// Most durable writes of one instance waiting on WAIT/WAITAOF at once (each
/// on a connection of its own); more wait for a free connection.
pub const MAX_WAITING_WRITES: usize = 64;
/// How often the server's run_id is compared with the one the mode was
/// detected on.
const RUN_ID_CHECK: Duration = Duration::from_secs(1);
/// While the server offers no durable mode every publish asks it again; the
/// error is logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What makes an acknowledged write durable on the server tickmesh talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Redis 7.2+: `WAITAOF numlocal numreplicas timeout`.
    WaitAof { local: bool, replicas: u32 },
    /// `appendonly yes` + `appendfsync always`: the reply means on the local
    /// disk; `WAIT replicas timeout` too when replicas are wanted.
    FsyncAlways { replicas: u32 },
    /// `WAIT replicas timeout`: on that many replicas (in their memory; on
    /// their disk as their own persistence settings say).
    WaitReplicas { replicas: u32 },
}

impl AckMode {
    /// Whether the pipeline ends with a blocking WAIT/WAITAOF (and so needs a
    /// connection of its own).
    pub fn blocks(&self) -> bool {
        !matches!(self, AckMode::FsyncAlways { replicas: 0 })
    }

    pub fn describe(&self) -> String {
        match *self {
            AckMode::WaitAof { local, replicas } => format!(
                "WAITAOF {} {replicas} (fsynced to the {}{replicas} replica(s)' append-only files)",
                u8::from(local),
                if local { "local and " } else { "" }
            ),
            AckMode::FsyncAlways { replicas: 0 } => {
                "appendfsync always (the local append-only file is fsynced before Redis answers)"
                    .into()
            }
            AckMode::FsyncAlways { replicas } => format!(
                "appendfsync always and WAIT {replicas} (fsynced locally and on {replicas} replica(s))"
            ),
            AckMode::WaitReplicas { replicas } => {
                format!("WAIT {replicas} (received by {replicas} replica(s))")
            }
        }
    }
}

/// What the detection reads off a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    pub version: (u32, u32, u32),
    pub version_text: String,
    pub run_id: String,
    /// "master" or "slave".
    pub role: String,
    pub aof_enabled: bool,
    /// `CONFIG GET appendfsync`; `None` where CONFIG is not allowed (some
    /// managed Redis services rename or disable it).
    pub appendfsync: Option<String>,
    /// `CONFIG GET no-appendfsync-on-rewrite`: "yes" skips the fsync (even
    /// under `always`) while a rewrite or save child runs.
    pub no_fsync_on_rewrite: Option<String>,
    pub connected_replicas: u32,
}

/// `field:value` lines of an INFO reply.
pub fn parse_info(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect()
}

/// "7.0.15" → (7, 0, 15); missing parts are 0.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

impl ServerFacts {
    /// From the replies to `INFO server`, `INFO persistence`, `INFO
    /// replication` and `CONFIG GET appendfsync` (`no_fsync_on_rewrite` is
    /// left unknown).
    pub fn from_info(
        server: &str,
        persistence: &str,
        replication: &str,
        appendfsync: Option<String>,
    ) -> std::result::Result<Self, String> {
        let server = parse_info(server);
        let persistence = parse_info(persistence);
        let replication = parse_info(replication);
        let version_text = server
            .get("redis_version")
            .ok_or("INFO server has no redis_version")?
            .to_string();
        let version = parse_version(&version_text)
            .ok_or_else(|| format!("redis_version {version_text:?} is not a version"))?;
        Ok(Self {
            version,
            version_text,
            run_id: server.get("run_id").unwrap_or(&"").to_string(),
            role: replication.get("role").unwrap_or(&"master").to_string(),
            aof_enabled: persistence.get("aof_enabled") == Some(&"1"),
            appendfsync,
            no_fsync_on_rewrite: None,
            connected_replicas: replication
                .get("connected_slaves")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        })
    }
}

/// The mechanism for `replicas` wanted replicas on a server, or why there is
/// none (the text names the settings to change).
pub fn choose_mode(facts: &ServerFacts, replicas: u32) -> std::result::Result<AckMode, String> {
    let version = &facts.version_text;
    if facts.role != "master" {
        return Err(format!(
            "marketfeed.durable_acks is on but redis {version} is a replica (role {}): point redis.url at the primary",
            facts.role
        ));
    }
    let fsync = facts.appendfsync.as_deref();
    let skips_on_rewrite = facts.no_fsync_on_rewrite.as_deref() != Some("no");
    let local_state = if !facts.aof_enabled {
        "appendonly no".to_string()
    } else {
        match fsync {
            Some("always") if skips_on_rewrite => format!(
                "appendonly yes with appendfsync always but no-appendfsync-on-rewrite {} (no fsync while a rewrite runs; set it to no)",
                facts.no_fsync_on_rewrite.as_deref().unwrap_or("unknown")
            ),
            Some(f) => format!("appendonly yes with appendfsync {f}"),
            None => "appendonly yes, appendfsync unknown (CONFIG GET is not allowed)".to_string(),
        }
    };
    if facts.version >= (7, 2, 0) {
        // With appendfsync no Redis never fsyncs the AOF itself, so the local
        // file is not counted.
        let local = facts.aof_enabled && fsync != Some("no");
        if !local && replicas == 0 {
            return Err(format!(
                "marketfeed.durable_acks is on but redis {version} has {local_state} and marketfeed.durable_replicas is 0, so nothing would make a write durable: run redis with appendonly yes and appendfsync always or everysec (then WAITAOF waits for the local fsync), or set marketfeed.durable_replicas to at least 1, or set marketfeed.durable_acks = false"
            ));
        }
        return Ok(AckMode::WaitAof { local, replicas });
    }
    if facts.aof_enabled && fsync == Some("always") && !skips_on_rewrite {
        return Ok(AckMode::FsyncAlways { replicas });
    }
    if replicas > 0 {
        return Ok(AckMode::WaitReplicas { replicas });
    }
    Err(format!(
        "marketfeed.durable_acks is on but redis {version} has no WAITAOF (Redis 7.2+) and has {local_state}, and marketfeed.durable_replicas is 0: run redis with appendonly yes and appendfsync always (redis.conf, or CONFIG SET appendfsync always), or upgrade to Redis 7.2+, or set marketfeed.durable_replicas to at least 1 with replicas attached, or set marketfeed.durable_acks = false"
    ))
}

/// Reads the facts of the server behind `conn`.
pub async fn read_facts(
    conn: &mut impl redis::aio::ConnectionLike,
) -> std::result::Result<ServerFacts, redis::RedisError> {
    let (server, persistence, replication): (String, String, String) = redis::pipe()
        .cmd("INFO")
        .arg("server")
        .cmd("INFO")
        .arg("persistence")
        .cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await?;
    let appendfsync = match redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async::<Value>(conn)
        .await
    {
        Ok(v) => config_values(&v).remove("appendfsync"),
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => return Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "config get appendfsync not allowed");
            None
        }
    };
    let mut facts = ServerFacts::from_info(&server, &persistence, &replication, appendfsync)
        .map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Parse, "unexpected INFO reply", e))
        })?;
    if facts.appendfsync.is_some() {
        let v: Value = redis::cmd("CONFIG")
            .arg("GET")
            .arg("no-appendfsync-on-rewrite")
            .query_async(conn)
            .await?;
        facts.no_fsync_on_rewrite = config_values(&v).remove("no-appendfsync-on-rewrite");
    }
    Ok(facts)
}

/// `CONFIG GET` replies as name → value (RESP2 flat array or RESP3 map).
pub fn config_values(value: &Value) -> HashMap<String, String> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    let mut out = HashMap::new();
    match value {
        Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair
                    && let (Some(k), Some(v)) = (text(k), text(v))
                {
                    out.insert(k.to_ascii_lowercase(), v.to_ascii_lowercase());
                }
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                if let (Some(k), Some(v)) = (text(k), text(v)) {
                    out.insert(k.to_ascii_lowercase(), v.to_ascii_lowercase());
                }
            }
        }
        _ => {}
    }
    out
}

/// The commands appended to an ingest pipeline in `mode`.
pub fn append_confirmation(pipe: &mut redis::Pipeline, mode: AckMode, timeout: Duration) {
    let ms = timeout.as_millis().max(1) as u64;
    match mode {
        AckMode::WaitAof { local, replicas } => {
            pipe.cmd("WAITAOF")
                .arg(u8::from(local))
                .arg(replicas)
                .arg(ms);
        }
        AckMode::FsyncAlways { replicas } => {
            pipe.cmd("CONFIG").arg("GET").arg("appendonly");
            pipe.cmd("CONFIG").arg("GET").arg("appendfsync");
            pipe.cmd("CONFIG")
                .arg("GET")
                .arg("no-appendfsync-on-rewrite");
            if replicas > 0 {
                pipe.cmd("WAIT").arg(replicas).arg(ms);
            }
        }
        AckMode::WaitReplicas { replicas } => {
            pipe.cmd("WAIT").arg(replicas).arg(ms);
        }
    }
}

/// How many replies [`append_confirmation`] adds.
pub fn confirmation_replies(mode: AckMode) -> usize {
    match mode {
        AckMode::WaitAof { .. } | AckMode::WaitReplicas { .. } => 1,
        AckMode::FsyncAlways { replicas } => 3 + usize::from(replicas > 0),
    }
}

/// Why a write was not confirmed durable.
#[derive(Debug, PartialEq, Eq)]
pub enum NotConfirmed {
    /// WAIT/WAITAOF returned before enough copies confirmed.
    Timeout(String),
    /// The server no longer runs the settings the mode relies on.
    ModeChanged(String),
}

/// Checks the replies of the appended commands.
pub fn check_confirmation(
    mode: AckMode,
    replies: &[Value],
) -> std::result::Result<(), NotConfirmed> {
    let int = |v: &Value| match v {
        Value::Int(n) => Some(*n),
        _ => None,
    };
    let unexpected = |what: &str| NotConfirmed::ModeChanged(format!("unexpected {what} reply"));
    match mode {
        AckMode::WaitAof { local, replicas } => {
            let [Value::Array(counts)] = replies else {
                return Err(unexpected("WAITAOF"));
            };
            let (Some(got_local), Some(got_replicas)) =
                (counts.first().and_then(int), counts.get(1).and_then(int))
            else {
                return Err(unexpected("WAITAOF"));
            };
            if got_local < i64::from(local) || got_replicas < i64::from(replicas) {
                return Err(NotConfirmed::Timeout(format!(
                    "WAITAOF confirmed {got_local} of {} local and {got_replicas} of {replicas} replica fsyncs{}",
                    u8::from(local),
                    if replicas > 0 {
                        " (replicas count only when they run appendonly yes)"
                    } else {
                        ""
                    }
                )));
            }
            Ok(())
        }
        AckMode::FsyncAlways { replicas } => {
            let [aof, fsync, on_rewrite, ..] = replies else {
                return Err(unexpected("CONFIG GET"));
            };
            let aof = config_values(aof).remove("appendonly");
            let fsync = config_values(fsync).remove("appendfsync");
            let on_rewrite = config_values(on_rewrite).remove("no-appendfsync-on-rewrite");
            if aof.as_deref() != Some("yes")
                || fsync.as_deref() != Some("always")
                || on_rewrite.as_deref() != Some("no")
            {
                return Err(NotConfirmed::ModeChanged(format!(
                    "redis now runs appendonly {} with appendfsync {} and no-appendfsync-on-rewrite {}",
                    aof.as_deref().unwrap_or("?"),
                    fsync.as_deref().unwrap_or("?"),
                    on_rewrite.as_deref().unwrap_or("?")
                )));
            }
            if replicas > 0 {
                let got = replies
                    .get(3)
                    .and_then(int)
                    .ok_or_else(|| unexpected("WAIT"))?;
                if got < i64::from(replicas) {
                    return Err(NotConfirmed::Timeout(format!(
                        "WAIT confirmed {got} of {replicas} replicas"
                    )));
                }
            }
            Ok(())
        }
        AckMode::WaitReplicas { replicas } => {
            let got = replies
                .first()
                .and_then(int)
                .ok_or_else(|| unexpected("WAIT"))?;
            if got < i64::from(replicas) {
                return Err(NotConfirmed::Timeout(format!(
                    "WAIT confirmed {got} of {replicas} replicas"
                )));
            }
            Ok(())
        }
    }
}

/// The error a caller gets when its trades were written but not confirmed.
pub fn not_durable(reason: &str) -> Error {
    Error::Unavailable(format!(
        "the trades were written but redis did not confirm them durable ({reason}): they may or may not be stored; re-sending the same trades is safe (duplicates are dropped by trade id)"
    ))
}

#[derive(Clone, Debug)]
struct Detected {
    mode: AckMode,
    run_id: String,
}

/// The durable-ack state of one MarketFeed instance.
pub struct DurableAcks {
    redis: RedisHandle,
    replicas: u32,
    timeout: Duration,
    detected: RwLock<Option<Detected>>,
    detecting: Mutex<()>,
    idle: std::sync::Mutex<Vec<RedisConn>>,
    permits: Arc<Semaphore>,
    refusal_logged: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A connection held by one durable write.
pub struct HeldConnection {
    pub conn: RedisConn,
    _permit: OwnedSemaphorePermit,
}

impl DurableAcks {
    pub fn new(redis: RedisHandle, replicas: u32, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            redis,
            replicas,
            timeout,
            detected: RwLock::new(None),
            detecting: Mutex::new(()),
            idle: std::sync::Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_WAITING_WRITES)),
            refusal_logged: std::sync::Mutex::new(None),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The mode to write in, detecting it first when it is not known (at
    /// start, after a failed write, after the server changed).
    /// FAILED_PRECONDITION when the server offers no durable mode,
    /// UNAVAILABLE when it cannot be asked.
    pub async fn mode(&self) -> Result<AckMode> {
        if let Some(d) = self.detected.read().await.as_ref() {
            return Ok(d.mode);
        }
        let _one = self.detecting.lock().await;
        if let Some(d) = self.detected.read().await.as_ref() {
            return Ok(d.mode);
        }
        let detected = self.detect().await?;
        let mode = detected.mode;
        *self.detected.write().await = Some(detected);
        Ok(mode)
    }

    /// The facts of the server, or on a Redis Cluster of every master, with
    /// one run id naming them all (any restart or failover changes it).
    async fn all_facts(&self) -> Result<(ServerFacts, String)> {
        let refused = |e: redis::RedisError| {
            if e.code() == Some("NOPERM") {
                Error::FailedPrecondition(format!(
                    "marketfeed.durable_acks is on but tickmesh may not read the server's INFO ({e}): allow INFO for its Redis user, or set marketfeed.durable_acks = false"
                ))
            } else {
                unavailable(e)
            }
        };
        if !self.redis.is_cluster() {
            let facts = read_facts(&mut self.redis.conn()).await.map_err(refused)?;
            let run = facts.run_id.clone();
            return Ok((facts, run));
        }
        // Every master must offer the same mode: the weakest decides what an
        // acknowledgement means, so a mixed cluster is refused, naming it.
        let mut first: Option<(String, ServerFacts, AckMode)> = None;
        let mut runs = Vec::new();
        for (addr, mut node) in self.redis.masters().await? {
            let facts = read_facts(&mut node).await.map_err(refused)?;
            runs.push(facts.run_id.clone());
            let mode = choose_mode(&facts, self.replicas)
                .map_err(|reason| Error::FailedPrecondition(format!("master {addr}: {reason}")))?;
            match &first {
                None => first = Some((addr, facts, mode)),
                Some((a, _, m)) if *m != mode => {
                    return Err(Error::FailedPrecondition(format!(
                        "marketfeed.durable_acks: the cluster's masters differ: {a} offers {}, {addr} offers {}; configure every node alike",
                        m.describe(),
                        mode.describe()
                    )));
                }
                Some(_) => {}
            }
        }
        let (_, facts, _) = first.ok_or_else(|| {
            Error::Unavailable("redis: the cluster has no reachable master".into())
        })?;
        Ok((facts, runs.join(",")))
    }

    /// The run id(s) the server(s) report now, as [`Self::all_facts`] names them.
    async fn current_run(&self) -> Option<String> {
        let run_of = |info: String| parse_info(&info).get("run_id").unwrap_or(&"").to_string();
        if !self.redis.is_cluster() {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut self.redis.conn())
                .await
                .ok()?;
            return Some(run_of(info));
        }
        let mut runs = Vec::new();
        for (_, mut node) in self.redis.masters().await.ok()? {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut node)
                .await
                .ok()?;
            runs.push(run_of(info));
        }
        Some(runs.join(","))
    }

    async fn detect(&self) -> Result<Detected> {
        let (facts, run_id) = match self.all_facts().await {
            Ok(f) => f,
            Err(Error::FailedPrecondition(reason)) => {
                self.log_refusal(&reason, "");
                return Err(Error::FailedPrecondition(reason));
            }
            Err(e) => return Err(e),
        };
        match choose_mode(&facts, self.replicas) {
            Ok(mode) => {
                *self.refusal_logged.lock().expect("refusal log") = None;
                tracing::info!(
                    redis_version = %facts.version_text,
                    run_id = %facts.run_id,
                    mode = %mode.describe(),
                    "durable acks: mode detected"
                );
                if matches!(mode, AckMode::WaitAof { local: true, .. })
                    && facts.appendfsync.as_deref() == Some("everysec")
                {
                    tracing::warn!(
                        redis_version = %facts.version_text,
                        "durable acks: redis fsyncs its append-only file once a second, so each acknowledgement waits for the next fsync (up to 1 s); appendfsync always answers in one fsync"
                    );
                }
                if self.replicas > facts.connected_replicas {
                    tracing::warn!(
                        wanted = self.replicas,
                        connected = facts.connected_replicas,
                        "durable acks: fewer replicas are connected than marketfeed.durable_replicas; publishes fail with UNAVAILABLE until they are"
                    );
                }
                Ok(Detected { mode, run_id })
            }
            Err(reason) => {
                self.log_refusal(&reason, &facts.version_text);
                Err(Error::FailedPrecondition(reason))
            }
        }
    }

    fn log_refusal(&self, reason: &str, version: &str) {
        let mut logged = self.refusal_logged.lock().expect("refusal log");
        if logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            *logged = Some(std::time::Instant::now());
            tracing::error!(redis_version = %version, %reason, "durable acks: no durable mode, publishes fail until the server offers one");
        }
    }

    /// Forgets the mode: the next write detects it again.
    pub async fn forget(&self) {
        *self.detected.write().await = None;
    }

    /// A connection of this write's own, for a pipeline ending in WAIT/WAITAOF.
    pub async fn hold(&self) -> Result<HeldConnection> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ShuttingDown("durable acks closed".into()))?;
        let idle = self.idle.lock().expect("durable connection pool").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.redis.dedicated(self.timeout).await?,
        };
        Ok(HeldConnection {
            conn,
            _permit: permit,
        })
    }

    /// Returns a connection whose last pipeline succeeded.
    pub fn give_back(&self, held: HeldConnection) {
        self.idle
            .lock()
            .expect("durable connection pool")
            .push(held.conn);
    }

    /// Compares the server's run_id with the detected one every second; a
    /// different server (restart, failover) is detected again at once.
    pub fn spawn_watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RUN_ID_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let known = this
                    .detected
                    .read()
                    .await
                    .as_ref()
                    .map(|d| d.run_id.clone());
                let Some(known) = known else { continue };
                let Some(run_id) = this.current_run().await else {
                    continue;
                };
                if run_id != known {
                    tracing::info!(old_run_id = %known, %run_id, "durable acks: redis server changed, detecting the mode again");
                    this.forget().await;
                    // Logs the new mode, or the error a publish will get.
                    let _ = this.mode().await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As [`read_facts`] sees them (the default no-appendfsync-on-rewrite no
    /// whenever CONFIG GET is allowed).
    fn facts(version: &str, aof: bool, fsync: Option<&str>) -> ServerFacts {
        let mut f = ServerFacts::from_info(
            &format!("# Server\r\nredis_version:{version}\r\nrun_id:abc\r\n"),
            &format!("# Persistence\r\naof_enabled:{}\r\n", u8::from(aof)),
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n",
            fsync.map(str::to_string),
        )
        .unwrap();
        f.no_fsync_on_rewrite = fsync.map(|_| "no".to_string());
        f
    }

    #[test]
    fn fsync_always_that_skips_rewrites_is_not_durable() {
        let mut f = facts("7.0.15", true, Some("always"));
        f.no_fsync_on_rewrite = Some("yes".into());
        let e = choose_mode(&f, 0).unwrap_err();
        assert!(e.contains("no-appendfsync-on-rewrite yes"), "{e}");
        assert_eq!(
            choose_mode(&f, 1),
            Ok(AckMode::WaitReplicas { replicas: 1 })
        );
        // WAITAOF counts real fsyncs only, so 7.2+ is not concerned.
        f.version = (7, 2, 4);
        assert_eq!(
            choose_mode(&f, 0),
            Ok(AckMode::WaitAof {
                local: true,
                replicas: 0
            })
        );
    }

    #[test]
    fn reads_the_facts_off_info() {
        let f = facts("7.0.15", true, Some("always"));
        assert_eq!(f.version, (7, 0, 15));
        assert_eq!(f.run_id, "abc");
        assert_eq!(f.role, "master");
        assert!(f.aof_enabled);
        assert_eq!(f.connected_replicas, 1);
        assert_eq!(parse_version("7.2"), Some((7, 2, 0)));
        assert_eq!(parse_version("255.255.255"), Some((255, 255, 255)));
        assert_eq!(parse_version("x"), None);
        assert!(ServerFacts::from_info("run_id:x", "", "", None).is_err());
    }

    #[test]
    fn redis_7_2_and_later_wait_for_the_aof() {
        for version in ["7.2.0", "7.4.2", "8.0.1"] {
            for fsync in ["always", "everysec"] {
                assert_eq!(
                    choose_mode(&facts(version, true, Some(fsync)), 0),
                    Ok(AckMode::WaitAof {
                        local: true,
                        replicas: 0
                    }),
                    "{version} {fsync}"
                );
            }
            // Unknown appendfsync (CONFIG not allowed): WAITAOF still answers
            // for the local file.
            assert_eq!(
                choose_mode(&facts(version, true, None), 2),
                Ok(AckMode::WaitAof {
                    local: true,
                    replicas: 2
                })
            );
            // No local AOF (or one never fsynced): replicas only.
            for (aof, fsync) in [(false, Some("everysec")), (true, Some("no"))] {
                assert_eq!(
                    choose_mode(&facts(version, aof, fsync), 1),
                    Ok(AckMode::WaitAof {
                        local: false,
                        replicas: 1
                    })
                );
                let e = choose_mode(&facts(version, aof, fsync), 0).unwrap_err();
                assert!(
                    e.contains("marketfeed.durable_replicas") && e.contains("appendonly yes"),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn older_redis_needs_fsync_always_or_replicas() {
        for version in ["7.0.15", "7.1.99", "6.2.14"] {
            assert_eq!(
                choose_mode(&facts(version, true, Some("always")), 0),
                Ok(AckMode::FsyncAlways { replicas: 0 })
            );
            assert_eq!(
                choose_mode(&facts(version, true, Some("always")), 1),
                Ok(AckMode::FsyncAlways { replicas: 1 })
            );
            for (aof, fsync) in [
                (true, Some("everysec")),
                (true, Some("no")),
                (true, None),
                (false, Some("always")),
            ] {
                assert_eq!(
                    choose_mode(&facts(version, aof, fsync), 2),
                    Ok(AckMode::WaitReplicas { replicas: 2 })
                );
                let e = choose_mode(&facts(version, aof, fsync), 0).unwrap_err();
                assert!(
                    e.contains("marketfeed.durable_acks")
                        && e.contains("appendfsync always")
                        && e.contains("7.2")
                        && e.contains(version),
                    "{e}"
                );
            }
        }
        let e = choose_mode(&facts("7.0.15", true, Some("everysec")), 0).unwrap_err();
        assert!(e.contains("appendfsync everysec"), "{e}");
        let e = choose_mode(&facts("7.0.15", false, Some("everysec")), 0).unwrap_err();
        assert!(e.contains("appendonly no"), "{e}");
    }

    #[test]
    fn a_replica_is_refused() {
        let mut f = facts("7.4.2", true, Some("always"));
        f.role = "slave".into();
        let e = choose_mode(&f, 0).unwrap_err();
        assert!(e.contains("replica") && e.contains("redis.url"), "{e}");
    }

    fn config_reply(name: &str, value: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(name.as_bytes().to_vec()),
            Value::BulkString(value.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn appended_commands_and_their_checks() {
        let timeout = Duration::from_millis(1500);
        let waitaof = AckMode::WaitAof {
            local: true,
            replicas: 1,
        };
        let mut pipe = redis::pipe();
        append_confirmation(&mut pipe, waitaof, timeout);
        assert_eq!(
            String::from_utf8_lossy(&pipe.get_packed_pipeline()),
            "*4\r\n$7\r\nWAITAOF\r\n$1\r\n1\r\n$1\r\n1\r\n$4\r\n1500\r\n"
        );
        assert_eq!(confirmation_replies(waitaof), 1);
        let counts = |l, r| Value::Array(vec![Value::Int(l), Value::Int(r)]);
        assert_eq!(check_confirmation(waitaof, &[counts(1, 1)]), Ok(()));
        assert_eq!(check_confirmation(waitaof, &[counts(1, 2)]), Ok(()));
        for (l, r) in [(0, 1), (1, 0), (0, 0)] {
            assert!(matches!(
                check_confirmation(waitaof, &[counts(l, r)]),
                Err(NotConfirmed::Timeout(_))
            ));
        }
        let replicas_only = AckMode::WaitAof {
            local: false,
            replicas: 1,
        };
        assert_eq!(check_confirmation(replicas_only, &[counts(0, 1)]), Ok(()));

        let always = AckMode::FsyncAlways { replicas: 0 };
        assert!(!always.blocks());
        let mut pipe = redis::pipe();
        append_confirmation(&mut pipe, always, timeout);
        assert_eq!(confirmation_replies(always), 3);
        assert_eq!(pipe.len(), 3);
        let yes = config_reply("appendonly", "yes");
        let no = config_reply("no-appendfsync-on-rewrite", "no");
        let fsync = config_reply("appendfsync", "always");
        assert_eq!(
            check_confirmation(always, &[yes.clone(), fsync.clone(), no.clone()]),
            Ok(())
        );
        for (replies, what) in [
            (
                [
                    yes.clone(),
                    config_reply("appendfsync", "everysec"),
                    no.clone(),
                ],
                "everysec",
            ),
            (
                [config_reply("appendonly", "no"), fsync.clone(), no.clone()],
                "appendonly no",
            ),
            (
                [
                    yes.clone(),
                    fsync.clone(),
                    config_reply("no-appendfsync-on-rewrite", "yes"),
                ],
                "no-appendfsync-on-rewrite yes",
            ),
        ] {
            assert!(
                matches!(
                    check_confirmation(always, &replies),
                    Err(NotConfirmed::ModeChanged(ref m)) if m.contains(what)
                ),
                "{what}"
            );
        }
        assert!(matches!(
            check_confirmation(always, &[yes.clone(), fsync.clone()]),
            Err(NotConfirmed::ModeChanged(_))
        ));
        // RESP3 answers CONFIG GET with a map.
        let map = Value::Map(vec![(
            Value::BulkString(b"appendfsync".to_vec()),
            Value::BulkString(b"always".to_vec()),
        )]);
        assert_eq!(
            check_confirmation(always, &[yes.clone(), map, no.clone()]),
            Ok(())
        );

        let always_and_wait = AckMode::FsyncAlways { replicas: 2 };
        assert!(always_and_wait.blocks());
        assert_eq!(confirmation_replies(always_and_wait), 4);
        assert_eq!(
            check_confirmation(
                always_and_wait,
                &[yes.clone(), fsync.clone(), no.clone(), Value::Int(2)]
            ),
            Ok(())
        );
        assert!(matches!(
            check_confirmation(always_and_wait, &[yes, fsync, no, Value::Int(1)]),
            Err(NotConfirmed::Timeout(_))
        ));

        let wait = AckMode::WaitReplicas { replicas: 1 };
        let mut pipe = redis::pipe();
        append_confirmation(&mut pipe, wait, timeout);
        assert_eq!(
            String::from_utf8_lossy(&pipe.get_packed_pipeline()),
            "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$4\r\n1500\r\n"
        );
        assert_eq!(check_confirmation(wait, &[Value::Int(1)]), Ok(()));
        assert!(matches!(
            check_confirmation(wait, &[Value::Int(0)]),
            Err(NotConfirmed::Timeout(_))
        ));
        assert!(matches!(
            check_confirmation(wait, &[Value::Okay]),
            Err(NotConfirmed::ModeChanged(_))
        ));
    }
}
