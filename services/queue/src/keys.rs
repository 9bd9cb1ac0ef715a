//! Redis key layout. Every key of one room carries the room id as its hash
//! tag, so on Redis Cluster a room lives in one slot and one script can move
//! users between its sets atomically.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:queue:rooms` | set | every room id (what the scheduler visits) |
//! | `<p>:queue:{R}:room` | hash | settings (`def` JSON and the fields scripts read), ticket counter `tick`, token bucket `tok`/`tok_ms` (`tok_ms`: the last pass), serving counter `served`, `sold`, measured rate `ewma_m`, `resume_ms` (the first pass after an outage) |
//! | `<p>:queue:{R}:wait` | sorted set | waiting user → ticket (FIFO order; `ZRANK` = people ahead) |
//! | `<p>:queue:{R}:seen` | sorted set | waiting user → last heartbeat (ms) |
//! | `<p>:queue:{R}:pre` | sorted set | random pre-queue user → random draw, until the opening |
//! | `<p>:queue:{R}:active` | sorted set | admitted user → session expiry (ms) |
//! | `<p>:queue:{R}:chg` | stream | admissions, departures, sold-out: what WatchPosition follows |
//! | `<p>:queue:{R}:ack` | string | a counter written (`INCR`) only as the fence before `WAIT` when `queue.replica_acks` is on (see `tickmesh_runtime::replica_acks`) |

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: format!("{prefix}:queue:"),
        }
    }

    pub fn rooms(&self) -> String {
        format!("{}rooms", self.prefix)
    }

    fn room_key(&self, room: &str, what: &str) -> String {
        format!("{}{{{room}}}:{what}", self.prefix)
    }

    pub fn room(&self, room: &str) -> String {
        self.room_key(room, "room")
    }

    pub fn waiting(&self, room: &str) -> String {
        self.room_key(room, "wait")
    }

    pub fn seen(&self, room: &str) -> String {
        self.room_key(room, "seen")
    }

    pub fn pre_queue(&self, room: &str) -> String {
        self.room_key(room, "pre")
    }

    pub fn active(&self, room: &str) -> String {
        self.room_key(room, "active")
    }

    pub fn changes(&self, room: &str) -> String {
        self.room_key(room, "chg")
    }

    /// The fence a replica-acknowledged write increments before its `WAIT`.
    pub fn ack_fence(&self, room: &str) -> String {
        self.room_key(room, "ack")
    }

    /// The room of a changes stream key.
    pub fn room_of_changes<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix("}:chg")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rooms_keys_share_a_hash_tag() {
        let k = Keys::new("tm");
        for key in [
            k.room("launch"),
            k.waiting("launch"),
            k.seen("launch"),
            k.pre_queue("launch"),
            k.active("launch"),
            k.changes("launch"),
            k.ack_fence("launch"),
        ] {
            assert!(key.starts_with("tm:queue:{launch}:"), "{key}");
        }
        assert_eq!(k.room_of_changes(&k.changes("a.b")), Some("a.b"));
        assert_eq!(k.room_of_changes("tm:queue:{x}:wait"), None);
    }
}
