//! WatchPosition: a waiter's state, pushed.
//!
//! Every admission pass that changes a room, every Leave and every sold-out
//! flip appends an entry to the room's change stream. Each instance follows
//! the change streams its watchers need with one shared tailer
//! (`tickmesh_runtime::stream_hub`). An admission entry names the admitted
//! users, so a watcher whose user is among them pushes ADMITTED (with the
//! admission token) at once, without a read; every other waiter moves up by
//! the number admitted (they came from the head of the line), counted
//! without a read and pushed at most once per `queue.watch_interval`. Any
//! other entry (a Leave, expired places) marks the position dirty; a dirty position is re-read at most once per
//! `queue.watch_interval` — a single `ZRANK` while the user is waiting (the
//! estimated wait scales with the people ahead), the full standing when the
//! user is no longer in line or on a sold-out change — and pushed only if it
//! went down: positions never go up on a stream. A watcher also reads its
//! full standing every 5 s whatever happens (the opening of a pre-queue, a
//! change of the measured rate, an entry it could not see), and heartbeats
//! for its user, so an open stream keeps the place.
//!
//! Memory per watcher is one state and a channel of two messages; a watcher
//! that lags the tailer's buffer just re-reads. The stream ends after
//! ADMITTED, SOLD_OUT or NOT_IN_QUEUE, when the client goes away, or at
//! shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::stream_hub::{HubCodec, id_cmp};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::keys::Keys;
use crate::places::Standing;
use crate::service::Queue;

/// Messages queued per watcher before its task waits for the client.
const QUEUE: usize = 2;
/// Full re-read whatever the change stream says.
const REREAD: Duration = Duration::from_secs(5);

/// One entry of a room's change stream.
#[derive(Debug, Default)]
pub struct Change {
    pub id: String,
    /// 'a' admission pass, 'l' leave, 's' sold-out flip.
    pub kind: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// Waiting places the pass expired (their holders may have been ahead).
    pub expired: u64,
    pub admitted: HashSet<String>,
}

/// Change streams as hub topics (one per room).
pub struct ChangeCodec {
    pub keys: Keys,
}

impl HubCodec for ChangeCodec {
    type Item = Arc<Change>;

    fn key(&self, topic: &str) -> String {
        self.keys.changes(topic)
    }

    fn topic<'a>(&self, key: &'a str) -> Option<&'a str> {
        self.keys.room_of_changes(key)
    }

    fn decode(&self, _topic: &Arc<str>, entries: Value) -> Result<Vec<Arc<Change>>> {
        let Value::Array(entries) = entries else {
            return Err(Error::Internal(
                "change stream entries are not a list".into(),
            ));
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => String::new(),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let [id, Value::Array(fields)] = parts.as_slice() else {
                continue;
            };
            let mut change = Change {
                id: text(id),
                ..Default::default()
            };
            for pair in fields.chunks(2) {
                let [name, value] = pair else { continue };
                let value = text(value);
                match text(name).as_str() {
                    "k" => change.kind = value,
                    "i" => change.issued_ms = value.parse().unwrap_or(0),
                    "x" => change.expires_ms = value.parse().unwrap_or(0),
                    "g" => change.expired = value.parse().unwrap_or(0),
                    "u" if !value.is_empty() => {
                        change.admitted = value.split('\n').map(String::from).collect()
                    }
                    _ => {}
                }
            }
            out.push(Arc::new(change));
        }
        Ok(out)
    }

    fn entry_id(&self, item: &Arc<Change>) -> String {
        item.id.clone()
    }
}

/// Starts a watcher for `user` in `room`; states arrive on the channel.
pub fn spawn(
    queue: Arc<Queue>,
    room: String,
    user: String,
    heartbeat_every: Duration,
) -> mpsc::Receiver<Result<Standing>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        run(queue, room, user, heartbeat_every, tx).await;
    });
    rx
}

fn is_final(s: &Standing) -> bool {
    matches!(
        s,
        Standing::Admitted { .. } | Standing::SoldOut | Standing::NotInQueue
    )
}

/// Whether `next` is worth a message after `last`: another state, or a
/// lower position. Never a higher one.
fn worth_sending(last: Option<&Standing>, next: &Standing) -> bool {
    match (last, next) {
        (None, _) => true,
        (Some(Standing::Waiting { ahead: a, .. }), Standing::Waiting { ahead: b, .. }) => b < a,
        (Some(Standing::PreQueue { .. }), Standing::PreQueue { .. }) => false,
        (Some(l), n) => std::mem::discriminant(l) != std::mem::discriminant(n),
    }
}

async fn run(
    queue: Arc<Queue>,
    room: String,
    user: String,
    heartbeat_every: Duration,
    tx: mpsc::Sender<Result<Standing>>,
) {
    let mut sub = queue.hub.subscribe(&room);
    let interval = queue.config.watch_interval;
    let shutdown = queue.shutdown.clone();
    let mut last: Option<Standing> = None;
    let mut dirty = true;
    let mut next_read = Instant::now();
    let mut reread = tokio::time::interval(REREAD);
    reread.reset();
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.reset();
    let mut full_read = true;
    // People ahead as counted from admission entries since the last message:
    // admitted users come from the head of the line, so each one moves this
    // waiter up by one, exactly, without a read.
    let mut counted: Option<u64> = None;
    // The newest change entry the last read already reflects: older entries
    // must not be counted again.
    let mut reflected = String::from("0-0");
    loop {
        if (dirty || counted.is_some()) && Instant::now() >= next_read {
            next_read = Instant::now() + interval;
            let read = if !dirty {
                Ok(counted_standing(last.as_ref(), counted.take()))
            } else {
                let read = if full_read {
                    queue.places.standing_at(&room, &user, queue.now_ms()).await
                } else {
                    light_read(&queue, &room, &user, last.as_ref()).await
                };
                read.map(|(standing, newest)| {
                    reflected = newest;
                    standing
                })
            };
            dirty = false;
            counted = None;
            full_read = false;
            match read {
                Ok(state) => {
                    if worth_sending(last.as_ref(), &state) {
                        if tx.send(Ok(state)).await.is_err() {
                            return; // the client went away
                        }
                        last = Some(state);
                    }
                    if is_final(&state) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(room = %room, error = %e, "position read failed; ending the stream");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        let wake = if dirty || counted.is_some() {
            next_read
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        tokio::select! {
            r = sub.rx.recv() => match r {
                Ok(batch) => {
                    if batch.items.is_empty() {
                        // The hub starts reading here: what came before it
                        // and after the last read was never delivered.
                        next_read = Instant::now();
                        full_read = true;
                        dirty = true;
                    }
                    for change in &batch.items {
                        if change.kind == "a" && change.admitted.contains(&user) {
                            let admitted = Standing::Admitted {
                                issued_ms: change.issued_ms,
                                expires_ms: change.expires_ms,
                            };
                            let _ = tx.send(Ok(admitted)).await;
                            return;
                        }
                        if id_cmp(&change.id, &reflected).is_le() {
                            continue;
                        }
                        if change.kind == "a" && change.expired == 0 && !dirty
                            && let Some(Standing::Waiting { ahead, .. }) = last
                        {
                            let base = counted.unwrap_or(ahead);
                            if !change.admitted.is_empty() {
                                counted = Some(base.saturating_sub(change.admitted.len() as u64));
                            }
                            continue;
                        }
                        if change.kind == "s" {
                            next_read = Instant::now();
                            full_read = true;
                        }
                        dirty = true;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => dirty = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(wake) => {}
            _ = reread.tick() => {
                dirty = true;
                full_read = true;
            }
            _ = heartbeat.tick() => {
                if matches!(last, Some(Standing::Waiting { .. })) {
                    let _ = queue.places.heartbeat(&room, &user, queue.now_ms()).await;
                }
            }
            _ = tx.closed() => return,
            _ = shutdown.cancelled() => break,
        }
    }
    // Never wait for a client that does not read: the stream just ends.
    let _ = tx.try_send(Err(Error::ShuttingDown(
        "reconnect to watch the position again".into(),
    )));
}

/// A waiting standing `ahead` counted from admissions, with the wait per
/// person of the last message.
fn counted_standing(last: Option<&Standing>, ahead: Option<u64>) -> Standing {
    let (was, wait) = match last {
        Some(Standing::Waiting {
            ahead,
            estimated_wait_ms,
        }) => (*ahead, *estimated_wait_ms),
        _ => (0, 0),
    };
    let ahead = ahead.unwrap_or(was);
    Standing::Waiting {
        ahead,
        estimated_wait_ms: wait.checked_div(was).unwrap_or(0) * ahead,
    }
}

/// The standing from one `ZRANK` when the user was waiting and still is;
/// otherwise (admitted, left, expired) the full standing.
async fn light_read(
    queue: &Queue,
    room: &str,
    user: &str,
    last: Option<&Standing>,
) -> Result<(Standing, String)> {
    if let Some(Standing::Waiting { .. }) = last
        && let (Some(ahead), newest) = queue.places.ahead_at(room, user).await?
    {
        // The same wait per person ahead as the last message.
        return Ok((counted_standing(last, Some(ahead)), newest));
    }
    queue.places.standing_at(room, user, queue.now_ms()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(ahead: u64) -> Standing {
        Standing::Waiting {
            ahead,
            estimated_wait_ms: 0,
        }
    }

    #[test]
    fn positions_only_go_down() {
        assert!(worth_sending(None, &waiting(5)));
        assert!(worth_sending(Some(&waiting(5)), &waiting(4)));
        assert!(!worth_sending(Some(&waiting(5)), &waiting(5)));
        assert!(!worth_sending(Some(&waiting(5)), &waiting(6)));
        assert!(worth_sending(Some(&waiting(5)), &Standing::SoldOut));
        assert!(worth_sending(
            Some(&Standing::PreQueue { opens_in_ms: 5 }),
            &waiting(9)
        ));
        assert!(!worth_sending(
            Some(&Standing::PreQueue { opens_in_ms: 5 }),
            &Standing::PreQueue { opens_in_ms: 1 }
        ));
    }
}
