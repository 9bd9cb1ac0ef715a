//! WatchTop: the top N of a window, pushed whenever it changes.
//!
//! Every write to a board appends an entry to the board's change stream. Each
//! instance follows the change streams its watchers need with one shared
//! tailer (`tickmesh_runtime::stream_hub`), so Redis sees one reader per
//! instance. A watcher does not look at the changes themselves: any change
//! marks its view dirty, and a dirty view is re-read (one `ZRANGE`) at most
//! once per `ranking.watch_interval`, and sent only if it differs from the
//! last one sent. A burst of ten thousand events therefore costs each watcher
//! a few reads, and memory per watcher is one top N and a bounded channel:
//! a watcher that lags the tailer's buffer just reads the current state.
//! Calendar windows ("hour", "day", …) move on to the next period by
//! themselves; the watcher checks once a second. The task ends as soon as the
//! client goes away (its channel closes) or the server shuts down.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::stream_hub::HubCodec;
use tokio::sync::{broadcast, mpsc};

use crate::board::Board;
use crate::keys::Keys;
use crate::read::Ranked;
use crate::service::Ranking;

/// Messages queued per watcher before its task waits for the client.
const QUEUE: usize = 2;
/// How often a watcher checks whether its calendar window has moved on.
const PERIOD_CHECK: Duration = Duration::from_secs(1);

/// One state of a watched top N.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopState {
    pub window: String,
    pub entries: Vec<Ranked>,
    pub total: u64,
    pub read_ns: i64,
}

impl TopState {
    fn same_as(&self, other: &TopState) -> bool {
        self.window == other.window && self.total == other.total && self.entries == other.entries
    }
}

/// Change streams as hub topics (one per board); items are entry ids.
pub struct ChangeCodec {
    pub keys: Keys,
}

impl HubCodec for ChangeCodec {
    type Item = String;

    fn key(&self, topic: &str) -> String {
        self.keys.changes(topic)
    }

    fn topic<'a>(&self, key: &'a str) -> Option<&'a str> {
        self.keys.board_of_changes(key)
    }

    fn decode(&self, _topic: &Arc<str>, entries: Value) -> Result<Vec<String>> {
        tickmesh_runtime::stream_hub::entry_ids(entries, "change stream")
    }

    fn entry_id(&self, item: &String) -> String {
        item.clone()
    }
}

/// Starts a watcher task; its states arrive on the returned channel.
pub fn spawn(
    ranking: Arc<Ranking>,
    board: Arc<Board>,
    window: String,
    n: u64,
) -> mpsc::Receiver<Result<TopState>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        run(ranking, board, window, n, tx).await;
    });
    rx
}

async fn run(
    ranking: Arc<Ranking>,
    board: Arc<Board>,
    window: String,
    n: u64,
    tx: mpsc::Sender<Result<TopState>>,
) {
    let mut sub = ranking.hub.subscribe(&board.id);
    let interval = ranking.config.watch_interval;
    let shutdown = ranking.shutdown.clone();
    let mut last: Option<TopState> = None;
    let mut dirty = true;
    let mut period_check = tokio::time::interval(PERIOD_CHECK);
    loop {
        if dirty {
            dirty = false;
            match ranking.top_state(&board, &window, n).await {
                Ok(state) => {
                    if last.as_ref().is_none_or(|l| !l.same_as(&state)) {
                        if tx.send(Ok(state.clone())).await.is_err() {
                            return; // the client went away
                        }
                        last = Some(state);
                    }
                }
                Err(e) => {
                    tracing::debug!(board = %board.id, error = %e, "watch read failed; ending the stream");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            // Coalesce: whatever changes meanwhile is covered by the next read.
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => break,
            }
            loop {
                match sub.rx.try_recv() {
                    Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => dirty = true,
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return,
                }
            }
            if dirty {
                continue;
            }
        }
        tokio::select! {
            r = sub.rx.recv() => match r {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = period_check.tick() => {
                if let Some(l) = &last
                    && let Ok(w) = crate::window::resolve(&board, &window, ranking.now_ns())
                    && w.name != l.window
                {
                    dirty = true;
                }
            }
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => break,
        }
    }
    // Never wait for a client that does not read: the stream just ends.
    let _ = tx.try_send(Err(Error::ShuttingDown(
        "reconnect to watch the top again".into(),
    )));
}
