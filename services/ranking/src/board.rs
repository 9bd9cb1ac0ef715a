//! A board as the domain sees it, its defaults and validation rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickmesh_core::FieldViolation;
use tickmesh_core::ids::check_symbol;
use tickmesh_core::time_zone::{Tz, parse_time_zone};

/// Default time a closed window's keys stay in Redis.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(35 * 86_400);
/// Shortest retention: the snapshotter needs time to copy a closed window.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// Longest retention (about 10 years).
pub const MAX_RETENTION: Duration = Duration::from_secs(3660 * 86_400);
/// Hourly buckets of a rolling board outlive the 24 h they are summed over,
/// with a margin for the roll-off to run.
pub const ROLLING_BUCKET_RETENTION: Duration = Duration::from_secs(26 * 3600);
/// Most decimal places of a score.
pub const MAX_SCORE_SCALE: u32 = 9;
const MAX_DISPLAY_NAME: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    HigherFirst,
    LowerFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    #[default]
    Increment,
    Set,
    Best,
}

impl Operator {
    /// The letter the record and roll-off scripts take.
    pub fn script_code(self) -> &'static str {
        match self {
            Operator::Increment => "i",
            Operator::Set => "s",
            Operator::Best => "b",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    AllTime,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Rolling24h,
}

impl WindowKind {
    /// The name requests use for the current window of this kind.
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::AllTime => "all",
            WindowKind::Hourly => "hour",
            WindowKind::Daily => "day",
            WindowKind::Weekly => "week",
            WindowKind::Monthly => "month",
            WindowKind::Rolling24h => "24h",
        }
    }

    /// Kinds whose windows close (and are snapshotted).
    pub fn is_periodic(self) -> bool {
        matches!(
            self,
            WindowKind::Hourly | WindowKind::Daily | WindowKind::Weekly | WindowKind::Monthly
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    #[default]
    EarlierFirst,
    SharedRank,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Board {
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    pub order: Order,
    pub operator: Operator,
    /// Sorted, without duplicates; never empty once validated.
    pub windows: Vec<WindowKind>,
    pub time_zone: String,
    pub retention_secs: u64,
    pub tie_break: TieBreak,
    pub score_scale: u32,
    #[serde(default)]
    pub update_time_ns: i64,
}

impl Board {
    /// Fills defaults (all-time only, UTC, 35 days) and normalises the window
    /// list (sorted, deduplicated, hourly added for rolling 24 h); returns every
    /// rule broken, with fields named under `prefix`.
    pub fn normalize(&mut self, prefix: &str) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        let field = |name: &str| format!("{prefix}{name}");
        if let Err(r) = check_symbol(&self.id) {
            violations.push(FieldViolation::new(field("id"), r));
        }
        if self.display_name.len() > MAX_DISPLAY_NAME
            || self.display_name.chars().any(char::is_control)
        {
            violations.push(FieldViolation::new(
                field("display_name"),
                format!("must be at most {MAX_DISPLAY_NAME} bytes without control characters"),
            ));
        }
        if self.windows.is_empty() {
            self.windows.push(WindowKind::AllTime);
        }
        if self.windows.contains(&WindowKind::Rolling24h) {
            if self.operator == Operator::Set {
                violations.push(FieldViolation::new(
                    field("windows"),
                    "a rolling 24 h window needs the increment or best operator (the latest of several set scores over a sliding window is not kept)",
                ));
            }
            self.windows.push(WindowKind::Hourly);
        }
        self.windows.sort();
        self.windows.dedup();
        if let Err(r) = parse_time_zone(&self.time_zone) {
            violations.push(FieldViolation::new(field("time_zone"), r));
        }
        if self.time_zone.is_empty() {
            self.time_zone = "UTC".into();
        }
        if self.retention_secs == 0 {
            self.retention_secs = DEFAULT_RETENTION.as_secs();
        }
        if !(MIN_RETENTION.as_secs()..=MAX_RETENTION.as_secs()).contains(&self.retention_secs) {
            violations.push(FieldViolation::new(
                field("retention"),
                "must be between 1 hour and 3660 days",
            ));
        }
        if self.score_scale > MAX_SCORE_SCALE {
            violations.push(FieldViolation::new(
                field("score_scale"),
                format!("must be at most {MAX_SCORE_SCALE}"),
            ));
        }
        violations
    }

    /// Changes UpsertBoard refuses on an existing board: they would reorder or
    /// reinterpret what is stored.
    pub fn immutable_changes(&self, stored: &Board) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.order != stored.order {
            changed.push("order");
        }
        if self.operator != stored.operator {
            changed.push("operator");
        }
        if self.tie_break != stored.tie_break {
            changed.push("tie_break");
        }
        if self.score_scale != stored.score_scale {
            changed.push("score_scale");
        }
        if self.time_zone != stored.time_zone {
            changed.push("time_zone");
        }
        changed
    }

    pub fn tz(&self) -> Tz {
        parse_time_zone(&self.time_zone).unwrap_or(Tz::UTC)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }

    pub fn keeps(&self, kind: WindowKind) -> bool {
        self.windows.contains(&kind)
    }

    /// How long the keys of a closed window of `kind` stay in Redis.
    pub fn key_retention(&self, kind: WindowKind) -> Duration {
        if kind == WindowKind::Hourly && self.keeps(WindowKind::Rolling24h) {
            self.retention().max(ROLLING_BUCKET_RETENTION)
        } else {
            self.retention()
        }
    }

    /// The window names this board answers, for error messages.
    pub fn window_names(&self) -> String {
        self.windows
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> Board {
        Board {
            id: "orders".into(),
            display_name: String::new(),
            order: Order::HigherFirst,
            operator: Operator::Increment,
            windows: vec![],
            time_zone: String::new(),
            retention_secs: 0,
            tie_break: TieBreak::EarlierFirst,
            score_scale: 0,
            update_time_ns: 0,
        }
    }

    #[test]
    fn defaults_and_normalised_windows() {
        let mut b = board();
        assert!(b.normalize("board.").is_empty());
        assert_eq!(b.windows, vec![WindowKind::AllTime]);
        assert_eq!(b.time_zone, "UTC");
        assert_eq!(b.retention(), DEFAULT_RETENTION);

        let mut b = board();
        b.windows = vec![WindowKind::Rolling24h, WindowKind::Daily, WindowKind::Daily];
        assert!(b.normalize("board.").is_empty());
        assert_eq!(
            b.windows,
            vec![
                WindowKind::Hourly,
                WindowKind::Daily,
                WindowKind::Rolling24h
            ]
        );
        assert_eq!(b.key_retention(WindowKind::Hourly), DEFAULT_RETENTION);
        b.retention_secs = 3600;
        assert_eq!(
            b.key_retention(WindowKind::Hourly),
            ROLLING_BUCKET_RETENTION
        );
        assert_eq!(
            b.key_retention(WindowKind::Daily),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn refuses_bad_fields_naming_each() {
        let mut b = board();
        b.id = "{x}".into();
        b.time_zone = "Mars/Base".into();
        b.retention_secs = 60;
        b.score_scale = 10;
        b.operator = Operator::Set;
        b.windows = vec![WindowKind::Rolling24h];
        let fields: Vec<String> = b.normalize("board.").into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            vec![
                "board.id",
                "board.windows",
                "board.time_zone",
                "board.retention",
                "board.score_scale"
            ]
        );
    }
}
