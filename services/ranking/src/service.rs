//! The Ranking domain: what each RPC does, in plain Rust. The gRPC adapter
//! ([`crate::grpc`]) only converts messages and errors.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tickmesh_core::ids::{check_symbol, check_text_id};
use tickmesh_core::{Error, FieldViolation, Result, page_token};
use tickmesh_runtime::RedisHandle;
use tickmesh_runtime::config::RankingConfig;
use tickmesh_runtime::redis_conn::unavailable;
use tickmesh_runtime::replica_acks::ReplicaAcks;
use tickmesh_runtime::stream_hub::StreamHub;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::board::{Board, Operator, WindowKind};
use crate::boards::BoardBook;
use crate::clock::Clock;
use crate::group_commit::GroupCommit;
use crate::keys::Keys;
use crate::read::{Page, Ranked, Reader, Standing};
use crate::record::{Outcome, Recorder, ValidEvent};
use crate::rolling::Roller;
use crate::score::{MAX_SCORE_UNITS, format_score, parse_score};
use crate::snapshot::{SnapshotStore, WindowSnapshot};
use crate::snapshotter::Snapshotter;
use crate::watch::{ChangeCodec, TopState};
use crate::window::{self, Window};

pub const MAX_MEMBER_BYTES: usize = 256;
pub const MAX_EVENT_ID_BYTES: usize = 128;
pub const MAX_MEMBER_DATA_BYTES: usize = 1024;
pub const DEFAULT_PAGE_SIZE: u64 = 10;
pub const MAX_PAGE_SIZE: u64 = 1000;
pub const DEFAULT_RADIUS: u64 = 5;
pub const MAX_RADIUS: u64 = 100;
pub const MAX_RANKS_MEMBERS: usize = 1000;
const TOP_PAGE_KIND: &str = "ranking-top";
/// Change batches buffered per watched board per instance.
const WATCH_BUFFER: usize = 16;

/// An event as received.
#[derive(Clone, Debug, Default)]
pub struct RawEvent {
    pub board_id: String,
    pub member: String,
    pub delta: String,
    pub score: String,
    pub event_id: String,
    pub member_data: String,
}

/// A page of the top of a window.
#[derive(Clone, Debug)]
pub struct TopView {
    pub board: Arc<Board>,
    pub window: String,
    pub entries: Vec<Ranked>,
    pub next_page_token: String,
    pub total: u64,
    pub from_snapshot: bool,
}

/// One member's standing with its movement.
#[derive(Clone, Debug)]
pub struct RankView {
    pub board: Arc<Board>,
    pub window: String,
    pub standing: Standing,
    pub previous_rank: Option<u64>,
    pub from_snapshot: bool,
}

#[derive(Clone, Debug)]
pub struct RanksView {
    pub board: Arc<Board>,
    pub window: String,
    pub entries: Vec<Ranked>,
    pub missing: Vec<String>,
    pub total: u64,
}

pub struct Ranking {
    pub(crate) config: RankingConfig,
    pub(crate) redis: RedisHandle,
    pub(crate) keys: Keys,
    pub(crate) boards: Arc<BoardBook>,
    committer: GroupCommit,
    pub(crate) reader: Reader,
    roller: Roller,
    snapshotter: Option<Snapshotter>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hub: StreamHub<ChangeCodec>,
    pub(crate) shutdown: CancellationToken,
    /// `ranking.replica_acks`: what event, board and removal writes wait for.
    acks: Arc<ReplicaAcks>,
    remove_script: redis::Script,
}

impl Ranking {
    pub fn new(
        config: RankingConfig,
        redis: RedisHandle,
        snapshots: Option<Arc<dyn SnapshotStore>>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let keys = Keys::new(redis.prefix());
        let acks = Arc::new(ReplicaAcks::new(
            redis.clone(),
            config.replicas_to_wait(),
            config.replica_ack_timeout,
            "ranking.replica_acks",
        ));
        if acks.is_on() {
            tracing::info!(
                replicas = acks.replicas(),
                timeout_ms = acks.timeout().as_millis() as u64,
                "ranking writes are answered once replicated (ranking.replica_acks)"
            );
        }
        let boards = Arc::new(BoardBook::with_acks(
            redis.clone(),
            keys.clone(),
            acks.clone(),
        ));
        boards
            .clone()
            .spawn_refresh(config.board_refresh, shutdown.clone());
        let hub = StreamHub::new(
            redis.clone(),
            ChangeCodec { keys: keys.clone() },
            WATCH_BUFFER,
            shutdown.clone(),
        );
        Arc::new(Self {
            committer: GroupCommit::start(
                Arc::new(Recorder::new(
                    acks.clone(),
                    keys.clone(),
                    config.changes_max_len,
                    config.dedupe_ttl,
                )),
                clock.clone(),
                config.max_batch_events,
            ),
            reader: Reader::new(redis.clone(), keys.clone()),
            roller: Roller::new(
                redis.clone(),
                keys.clone(),
                config.changes_max_len,
                2 * config.board_refresh + Duration::from_secs(1),
            ),
            snapshotter: snapshots.map(|store| Snapshotter {
                redis: redis.clone(),
                keys: keys.clone(),
                store,
                top: config.snapshot_top,
                grace: config.snapshot_grace,
            }),
            config,
            redis,
            keys,
            boards,
            clock,
            hub,
            shutdown,
            acks,
            remove_script: crate::lua::script(REMOVE_LUA),
        })
    }

    pub fn config(&self) -> &RankingConfig {
        &self.config
    }

    pub fn now_ns(&self) -> i64 {
        self.clock.now_ns()
    }

    /// Boards this instance follows for WatchTop streams.
    pub fn watched_boards(&self) -> usize {
        self.hub.followed()
    }

    /// Runs [`Ranking::maintain`] every `ranking.maintenance_interval` until shutdown.
    pub fn spawn_maintenance(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.maintain().await {
                    tracing::warn!(error = %e, "ranking maintenance failed; retrying next tick");
                }
                tokio::select! {
                    _ = this.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(this.config.maintenance_interval) => {}
                }
            }
        })
    }

    /// One maintenance pass over every board: roll hours off rolling windows,
    /// snapshot closed windows. Returns the snapshots written.
    pub async fn maintain(&self) -> Result<Vec<(String, String)>> {
        let now = self.now_ns();
        let mut written = Vec::new();
        for board in self.boards.refresh().await? {
            self.roller.catch_up(&board, now).await?;
            if let Some(s) = &self.snapshotter {
                for w in s.run(&self.reader, &board, now).await? {
                    written.push((board.id.clone(), w));
                }
            }
        }
        Ok(written)
    }

    /// Creates or changes a board. A rolling 24 h window that is new to the
    /// board is built from the hour buckets it already has.
    pub async fn upsert_board(&self, board: Board) -> Result<(Board, bool)> {
        let before = self.boards.get(&board.id).await.ok();
        let now = self.now_ns();
        let (stored, created) = self.boards.upsert(board, now).await?;
        let had_rolling = before.is_some_and(|b| b.keeps(WindowKind::Rolling24h));
        // (An upsert that dies before this leaves a rolling window without a
        // build on record, which the next catch-up builds: see rolling.rs.)
        if stored.keeps(WindowKind::Rolling24h) && !had_rolling {
            let settled = now
                + 2 * i64::try_from(self.config.board_refresh.as_nanos()).unwrap_or(i64::MAX / 4)
                + 1_000_000_000;
            self.roller.added(&stored, now, settled).await?;
        } else if had_rolling && !stored.keeps(WindowKind::Rolling24h) {
            // Its build mark goes with it, so adding it again builds it anew.
            self.roller.removed(&stored).await?;
        }
        Ok((stored, created))
    }

    pub async fn get_board(&self, id: &str) -> Result<Board> {
        check_symbol(id).map_err(|r| Error::invalid("board_id", r))?;
        self.boards.get(id).await
    }

    pub async fn list_boards(&self, page_size: i32, token: &str) -> Result<(Vec<Board>, String)> {
        self.boards.list(page_size, token).await
    }

    pub(crate) async fn board(&self, id: &str) -> Result<Arc<Board>> {
        check_symbol(id).map_err(|r| Error::invalid("board_id", r))?;
        self.boards.resolve(id).await
    }

    /// Records a batch. Every event is validated first: any invalid one fails
    /// the call with all violations and nothing is written; an unknown board is
    /// NOT_FOUND. An event whose score would leave the range is refused alone.
    pub async fn record(&self, events: Vec<RawEvent>) -> Result<Vec<Outcome>> {
        if events.is_empty() {
            return Err(Error::invalid("events", "must contain at least one event"));
        }
        if events.len() > self.config.max_batch_events {
            return Err(Error::invalid(
                "events",
                format!(
                    "{} events is more than the {} allowed per call; split the batch",
                    events.len(),
                    self.config.max_batch_events
                ),
            ));
        }
        let single = events.len() == 1;
        let mut violations = Vec::new();
        let mut valid = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let prefix = if single {
                String::new()
            } else {
                format!("events[{i}].")
            };
            if let Err(r) = check_symbol(&e.board_id) {
                violations.push(FieldViolation::new(format!("{prefix}board_id"), r));
                continue;
            }
            let board = match self.boards.resolve(&e.board_id).await {
                Ok(b) => b,
                Err(Error::NotFound(what)) if !single => {
                    return Err(Error::NotFound(format!("{what} (events[{i}])")));
                }
                Err(other) => return Err(other),
            };
            match validate_event(board, e, &prefix) {
                Ok(v) => valid.push(v),
                Err(mut v) => violations.append(&mut v),
            }
        }
        Error::check(violations)?;
        self.committer.record(valid).await
    }

    /// Records one event; a score out of range is INVALID_ARGUMENT.
    pub async fn record_one(&self, event: RawEvent) -> Result<(Arc<Board>, Outcome)> {
        let field = if event.score.is_empty() {
            "delta"
        } else {
            "score"
        };
        let board_id = event.board_id.clone();
        let outcome = self.record(vec![event]).await?.remove(0);
        if outcome == Outcome::OutOfRange {
            return Err(Error::invalid(
                field,
                format!(
                    "would take the member's score past ±{MAX_SCORE_UNITS} units (2^53 - 1); nothing was recorded"
                ),
            ));
        }
        Ok((self.board(&board_id).await?, outcome))
    }

    /// Resolves a window name for reading, catching up the rolling window first.
    async fn open(&self, board: &Board, window_text: &str) -> Result<Window> {
        let now = self.now_ns();
        let w =
            window::resolve(board, window_text, now).map_err(|r| Error::invalid("window", r))?;
        if w.kind == WindowKind::Rolling24h {
            self.roller.catch_up(board, now).await?;
        }
        Ok(w)
    }

    /// The snapshot to answer from when a closed window's keys are gone.
    async fn snapshot_of(&self, board: &Board, w: &Window) -> Result<Option<WindowSnapshot>> {
        match &self.snapshotter {
            Some(s) if w.is_closed(self.now_ns()) => Ok(s.store.get(&board.id, &w.name).await?),
            _ => Ok(None),
        }
    }

    pub async fn top(
        &self,
        board_id: &str,
        window_text: &str,
        page_size: i32,
        token: &str,
    ) -> Result<TopView> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            n if n as u64 > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n as u64,
        };
        let board = self.board(board_id).await?;
        let query = page_token::fingerprint(&[board_id, window_text]);
        let (w, offset) = if token.is_empty() {
            (self.open(&board, window_text).await?, 0)
        } else {
            let cursor = page_token::decode(token, TOP_PAGE_KIND, query)
                .map_err(|r| Error::invalid("page_token", r))?;
            let bad =
                || Error::invalid("page_token", "is not a page token issued for this request");
            let (name, offset) = cursor.split_once('\n').ok_or_else(bad)?;
            let offset: u64 = offset.parse().map_err(|_| bad())?;
            (self.open(&board, name).await?, offset)
        };
        let page = self.reader.top(&board, &w.name, offset, size).await?;
        if page.total == 0
            && let Some(snapshot) = self.snapshot_of(&board, &w).await?
        {
            let entries: Vec<Ranked> = snapshot
                .entries
                .iter()
                .skip(offset as usize)
                .take(size as usize)
                .map(|e| Ranked {
                    member: e.member.clone(),
                    score: e.score,
                    seq: e.seq,
                    rank: e.rank,
                    member_data: e.member_data.clone(),
                })
                .collect();
            let end = offset + entries.len() as u64;
            let next = if end < snapshot.entries.len() as u64 {
                page_token::encode(TOP_PAGE_KIND, query, &format!("{}\n{end}", w.name))
            } else {
                String::new()
            };
            return Ok(TopView {
                board,
                window: w.name,
                entries,
                next_page_token: next,
                total: snapshot.total_members,
                from_snapshot: true,
            });
        }
        let end = page.start + page.entries.len() as u64;
        let next = if end < page.total && !page.entries.is_empty() {
            page_token::encode(TOP_PAGE_KIND, query, &format!("{}\n{end}", w.name))
        } else {
            String::new()
        };
        Ok(TopView {
            board,
            window: w.name,
            entries: page.entries,
            next_page_token: next,
            total: page.total,
            from_snapshot: false,
        })
    }

    /// A member's standing in a window (Redis, else the window's snapshot).
    async fn standing(
        &self,
        board: &Board,
        w: &Window,
        member: &str,
    ) -> Result<(Option<Standing>, bool)> {
        let (total, mut found) = self
            .reader
            .ranks(board, &w.name, std::slice::from_ref(&member.to_string()))
            .await?;
        if total == 0
            && let Some(snapshot) = self.snapshot_of(board, w).await?
        {
            let standing = snapshot
                .entries
                .iter()
                .find(|e| e.member == member)
                .map(|e| Standing {
                    entry: Ranked {
                        member: e.member.clone(),
                        score: e.score,
                        seq: e.seq,
                        rank: e.rank,
                        member_data: e.member_data.clone(),
                    },
                    total: snapshot.total_members,
                    below: e.below,
                });
            return Ok((standing, true));
        }
        Ok((found.pop().flatten(), false))
    }

    pub async fn rank(&self, board_id: &str, window_text: &str, member: &str) -> Result<RankView> {
        check_member("member", member)?;
        let board = self.board(board_id).await?;
        let w = self.open(&board, window_text).await?;
        let (standing, from_snapshot) = self.standing(&board, &w, member).await?;
        let standing = standing.ok_or_else(|| {
            Error::NotFound(format!(
                "member {member:?} in window {:?} of board {board_id:?}",
                w.name
            ))
        })?;
        let previous_rank = match window::previous(&w, board.tz()) {
            Some(prev) => self
                .standing(&board, &prev, member)
                .await?
                .0
                .map(|s| s.entry.rank),
            None => None,
        };
        Ok(RankView {
            board,
            window: w.name,
            standing,
            previous_rank,
            from_snapshot,
        })
    }

    pub async fn ranks(
        &self,
        board_id: &str,
        window_text: &str,
        members: Vec<String>,
    ) -> Result<RanksView> {
        if members.is_empty() {
            return Err(Error::invalid("members", "must name at least one member"));
        }
        if members.len() > MAX_RANKS_MEMBERS {
            return Err(Error::invalid(
                "members",
                format!("at most {MAX_RANKS_MEMBERS} per call"),
            ));
        }
        let mut violations = Vec::new();
        for (i, m) in members.iter().enumerate() {
            if let Err(r) = check_text_id(m, MAX_MEMBER_BYTES) {
                violations.push(FieldViolation::new(format!("members[{i}]"), r));
            }
        }
        Error::check(violations)?;
        let mut seen = HashSet::new();
        let members: Vec<String> = members
            .into_iter()
            .filter(|m| seen.insert(m.clone()))
            .collect();
        let board = self.board(board_id).await?;
        let w = self.open(&board, window_text).await?;
        let (mut total, standings) = self.reader.ranks(&board, &w.name, &members).await?;
        let mut entries = Vec::new();
        let mut missing = Vec::new();
        if total == 0
            && let Some(snapshot) = self.snapshot_of(&board, &w).await?
        {
            total = snapshot.total_members;
            for m in members {
                match snapshot.entries.iter().find(|e| e.member == m) {
                    Some(e) => entries.push(Ranked {
                        member: e.member.clone(),
                        score: e.score,
                        seq: e.seq,
                        rank: e.rank,
                        member_data: e.member_data.clone(),
                    }),
                    None => missing.push(m),
                }
            }
        } else {
            for (m, s) in members.into_iter().zip(standings) {
                match s {
                    Some(s) => entries.push(s.entry),
                    None => missing.push(m),
                }
            }
        }
        entries.sort_by(|a, b| (a.rank, a.seq, &a.member).cmp(&(b.rank, b.seq, &b.member)));
        Ok(RanksView {
            board,
            window: w.name,
            entries,
            missing,
            total,
        })
    }

    pub async fn around(
        &self,
        board_id: &str,
        window_text: &str,
        member: &str,
        radius: i32,
    ) -> Result<(Arc<Board>, String, Page)> {
        check_member("member", member)?;
        let radius = match radius {
            0 => DEFAULT_RADIUS,
            n if n < 0 => return Err(Error::invalid("radius", "must not be negative")),
            n if n as u64 > MAX_RADIUS => {
                return Err(Error::invalid(
                    "radius",
                    format!("must be at most {MAX_RADIUS}"),
                ));
            }
            n => n as u64,
        };
        let board = self.board(board_id).await?;
        let w = self.open(&board, window_text).await?;
        let page = self.reader.around(&board, &w.name, member, radius).await?;
        let page = match page {
            Some(p) => p,
            None => {
                let snapshot = self.snapshot_of(&board, &w).await?;
                let found = snapshot.as_ref().and_then(|s| {
                    s.entries
                        .iter()
                        .position(|e| e.member == member)
                        .map(|pos| (s, pos))
                });
                let Some((snapshot, pos)) = found else {
                    return Err(Error::NotFound(format!(
                        "member {member:?} in window {:?} of board {board_id:?}",
                        w.name
                    )));
                };
                let start = pos.saturating_sub(radius as usize);
                let stop = (pos + radius as usize + 1).min(snapshot.entries.len());
                Page {
                    total: snapshot.total_members,
                    start: start as u64,
                    entries: snapshot.entries[start..stop]
                        .iter()
                        .map(|e| Ranked {
                            member: e.member.clone(),
                            score: e.score,
                            seq: e.seq,
                            rank: e.rank,
                            member_data: e.member_data.clone(),
                        })
                        .collect(),
                }
            }
        };
        Ok((board, w.name, page))
    }

    /// Removes a member from every live window of a board; returns how many
    /// windows held it.
    pub async fn remove_member(&self, board_id: &str, member: &str) -> Result<u32> {
        check_member("member", member)?;
        let board = self.board(board_id).await?;
        let id = board.id.as_str();
        let mut conn = self.redis.conn();
        let periodic: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.keys.window_index(id))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut names: Vec<String> = vec!["all".into(), "24h".into()];
        names.extend(periodic);
        let mut keys = vec![
            self.keys.member_data(id),
            self.keys.changes(id),
            self.keys.window_index(id),
        ];
        for n in &names {
            keys.push(self.keys.entries(id, n));
            keys.push(self.keys.members(id, n));
        }
        let script = &self.remove_script;
        let mut pipe = redis::pipe();
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(member)
            .arg(self.config.changes_max_len);
        for n in &names {
            cmd.arg(n);
        }
        self.acks.fence(&mut pipe, &self.keys.ack_fence(id));
        let replies = self.acks.query(&pipe, &[script]).await?;
        let removed = match replies.first() {
            Some(redis::Value::Int(n)) => *n as u32,
            other => {
                return Err(Error::Internal(format!("remove script answered {other:?}")));
            }
        };
        if let Some(wait) = replies.get(2) {
            self.acks.check(
                wait,
                &format!("removal of {member:?} from board {id:?}"),
                "removing it again is safe",
            )?;
        }
        tracing::info!(board = %id, member, windows = removed, "member removed");
        Ok(removed)
    }

    /// Starts watching the top `n` of a window.
    pub async fn watch_top(
        self: &Arc<Self>,
        board_id: &str,
        window_text: &str,
        n: i32,
    ) -> Result<mpsc::Receiver<Result<TopState>>> {
        let n = match n {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(Error::invalid("top", "must not be negative")),
            n if n as u64 > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "top",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n as u64,
        };
        let board = self.board(board_id).await?;
        // Validate now, so a bad window fails the call rather than the stream.
        self.open(&board, window_text).await?;
        Ok(crate::watch::spawn(
            self.clone(),
            board,
            window_text.to_string(),
            n,
        ))
    }

    /// The current top `n` of a window, for watchers.
    pub(crate) async fn top_state(
        &self,
        board: &Board,
        window_text: &str,
        n: u64,
    ) -> Result<TopState> {
        let w = self.open(board, window_text).await?;
        let page = self.reader.top(board, &w.name, 0, n).await?;
        Ok(TopState {
            window: w.name,
            entries: page.entries,
            total: page.total,
            read_ns: self.now_ns(),
        })
    }
}

/// KEYS: member data, changes, window index, then (entries, members) per window.
/// ARGV: member, changes max length, then the window names.
/// Returns the windows that held the member. A periodic window left empty is
/// taken out of the index, so its keys get their expiry again if recreated.
const REMOVE_LUA: &str = r#"
local n = 0
for i = 4, #KEYS, 2 do
  local e = redis.call('HGET', KEYS[i + 1], ARGV[1])
  if e then
    redis.call('ZREM', KEYS[i], e)
    redis.call('HDEL', KEYS[i + 1], ARGV[1])
    n = n + 1
    if redis.call('EXISTS', KEYS[i]) == 0 then
      redis.call('ZREM', KEYS[3], ARGV[3 + (i - 4) / 2])
    end
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
if n > 0 then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'removed', ARGV[1]) end
return n
"#;

fn check_member(field: &str, member: &str) -> Result<()> {
    check_text_id(member, MAX_MEMBER_BYTES).map_err(|r| Error::invalid(field, r))
}

/// Checks one event against its board; the value becomes units.
fn validate_event(
    board: Arc<Board>,
    e: RawEvent,
    prefix: &str,
) -> std::result::Result<ValidEvent, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let field = |name: &str| format!("{prefix}{name}");
    if let Err(r) = check_text_id(&e.member, MAX_MEMBER_BYTES) {
        v.push(FieldViolation::new(field("member"), r));
    }
    if let Err(r) = check_text_id(&e.event_id, MAX_EVENT_ID_BYTES) {
        v.push(FieldViolation::new(field("event_id"), r));
    }
    if e.member_data.len() > MAX_MEMBER_DATA_BYTES {
        v.push(FieldViolation::new(
            field("member_data"),
            format!("must be at most {MAX_MEMBER_DATA_BYTES} bytes"),
        ));
    }
    let scale = board.score_scale;
    let value = match board.operator {
        Operator::Increment => {
            if !e.score.is_empty() {
                v.push(FieldViolation::new(
                    field("score"),
                    format!(
                        "board {:?} adds deltas (operator increment): send `delta`, not `score`",
                        board.id
                    ),
                ));
            }
            if e.delta.is_empty() {
                Some(10i64.pow(scale))
            } else {
                parse_score(&e.delta, scale)
                    .map_err(|r| v.push(FieldViolation::new(field("delta"), r)))
                    .ok()
            }
        }
        Operator::Set | Operator::Best => {
            if !e.delta.is_empty() {
                v.push(FieldViolation::new(
                    field("delta"),
                    format!(
                        "board {:?} takes scores (operator {}): send `score`, not `delta`",
                        board.id,
                        if board.operator == Operator::Set {
                            "set"
                        } else {
                            "best"
                        }
                    ),
                ));
            }
            if e.score.is_empty() {
                v.push(FieldViolation::new(field("score"), "is required"));
                None
            } else {
                parse_score(&e.score, scale)
                    .map_err(|r| v.push(FieldViolation::new(field("score"), r)))
                    .ok()
            }
        }
    };
    match value {
        Some(value) if v.is_empty() => Ok(ValidEvent {
            board,
            member: e.member,
            value,
            event_id: e.event_id,
            member_data: e.member_data,
        }),
        _ => Err(v),
    }
}

/// Scores of `entries` at the board's scale.
pub fn display_score(board: &Board, units: i64) -> String {
    format_score(units, board.score_scale)
}
