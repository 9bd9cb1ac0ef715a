//! Redis key layout. Every key of one board carries the board id as its hash
//! tag, so on Redis Cluster a board lives in one slot and one script can
//! update all its windows atomically.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:rank:boards` | hash | board id → board JSON |
//! | `<p>:rank:{B}:z:<window>` | sorted set | the window's entries (see `score.rs`), all scored 0 |
//! | `<p>:rank:{B}:h:<window>` | hash | member → its entry in the window |
//! | `<p>:rank:{B}:seq` | string | last tie-break sequence given |
//! | `<p>:rank:{B}:ev:<n>` | hash | event ids recorded in dedupe period n (event id → "1"); expires on its own |
//! | `<p>:rank:{B}:ev` | sorted set | event ids of earlier versions, scored by record time (ms): still read, no longer written; empties itself within `dedupe_ttl` |
//! | `<p>:rank:{B}:idx` | sorted set | periodic windows with live keys → close time (ms) |
//! | `<p>:rank:{B}:snap` | set | closed windows already snapshotted |
//! | `<p>:rank:{B}:data` | hash | member → display data |
//! | `<p>:rank:{B}:roll` | hash | rolling 24 h state: oldest hour bucket kept, roll-off cursor |
//! | `<p>:rank:{B}:chg` | stream | one entry per change, for WatchTop |
//! | `<p>:rank:{B}:ack` | string | a counter written (`INCR`) only as the fence before `WAIT` when `ranking.replica_acks` is on (see `tickmesh_runtime::replica_acks`) |

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: format!("{prefix}:rank:"),
        }
    }

    pub fn boards(&self) -> String {
        format!("{}boards", self.prefix)
    }

    fn board(&self, board: &str, what: &str) -> String {
        format!("{}{{{board}}}:{what}", self.prefix)
    }

    pub fn entries(&self, board: &str, window: &str) -> String {
        self.board(board, &format!("z:{window}"))
    }

    pub fn members(&self, board: &str, window: &str) -> String {
        self.board(board, &format!("h:{window}"))
    }

    pub fn sequence(&self, board: &str) -> String {
        self.board(board, "seq")
    }

    /// Event ids as earlier versions kept them (one sorted set).
    pub fn events(&self, board: &str) -> String {
        self.board(board, "ev")
    }

    /// Event ids recorded in dedupe period `period`.
    pub fn event_period(&self, board: &str, period: i64) -> String {
        self.board(board, &format!("ev:{period}"))
    }

    pub fn window_index(&self, board: &str) -> String {
        self.board(board, "idx")
    }

    pub fn snapshotted(&self, board: &str) -> String {
        self.board(board, "snap")
    }

    pub fn member_data(&self, board: &str) -> String {
        self.board(board, "data")
    }

    pub fn rolling_state(&self, board: &str) -> String {
        self.board(board, "roll")
    }

    pub fn changes(&self, board: &str) -> String {
        self.board(board, "chg")
    }

    /// The fence a replica-acknowledged write increments before its `WAIT`.
    pub fn ack_fence(&self, board: &str) -> String {
        self.board(board, "ack")
    }

    /// The board of a changes stream key.
    pub fn board_of_changes<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix("}:chg")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_boards_keys_share_a_hash_tag() {
        let k = Keys::new("tm");
        for key in [
            k.entries("orders", "day:2026-01-05"),
            k.members("orders", "all"),
            k.sequence("orders"),
            k.events("orders"),
            k.event_period("orders", 7),
            k.window_index("orders"),
            k.snapshotted("orders"),
            k.member_data("orders"),
            k.rolling_state("orders"),
            k.changes("orders"),
            k.ack_fence("orders"),
        ] {
            assert!(key.starts_with("tm:rank:{orders}:"), "{key}");
        }
        assert_eq!(k.board_of_changes(&k.changes("a.b")), Some("a.b"));
        assert_eq!(k.board_of_changes("tm:rank:{x}:seq"), None);
    }
}
