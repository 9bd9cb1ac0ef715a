//! Exact scores and the sortable entries that order a window.
//!
//! A score is an integer number of units at the board's scale (at scale 2,
//! "12.34" is 1234 units), never a float. Its magnitude is at most
//! [`MAX_SCORE_UNITS`] = 2^53 - 1, so the Lua scripts (whose numbers are
//! doubles) add and compare scores exactly.
//!
//! A window is a Redis sorted set whose members all have score 0 and are
//! *entries*: strings that sort, byte by byte, in rank order. An entry is the
//! score as 17 sortable characters, the tie-break sequence as 16 digits, then
//! the member id:
//!
//! ```text
//! 0 0000000000000041 0000000000000007 alice      (higher-first board, score 2^53 - 42)
//! └┬┘└──────┬───────┘└──────┬───────┘└─┬─┘
//! sign  magnitude key   seq (earlier   member
//!                       achiever first)
//! ```
//!
//! So `ZRANGE BYLEX` lists the best first, `ZRANK` is the exact rank with ties
//! broken by the sequence of the event that brought the member to its score
//! (earlier first), and `ZLEXCOUNT` counts members with a strictly better or
//! worse score. The same encoding is written in `record.rs`'s Lua; the tests
//! compare both.

use tickmesh_core::decimal::{self, DecimalError};

use crate::board::Order;

/// Largest score magnitude in units: 2^53 - 1 = 9007199254740991.
pub const MAX_SCORE_UNITS: i64 = (1 << 53) - 1;
/// Characters of the score part of an entry.
pub const SCORE_KEY_LEN: usize = 17;
/// Characters of the tie-break sequence.
pub const SEQ_LEN: usize = 16;
/// Score part + sequence: where the member id starts.
pub const MEMBER_AT: usize = SCORE_KEY_LEN + SEQ_LEN;

/// Parses a signed exact decimal at `scale` into units within ±[`MAX_SCORE_UNITS`].
pub fn parse_score(text: &str, scale: u32) -> Result<i64, String> {
    let lower = text.to_ascii_lowercase();
    if ["nan", "inf", "+inf", "-inf", "infinity", "-infinity"].contains(&lower.as_str()) {
        return Err(format!(
            "{text:?} is not finite: scores are exact decimal numbers"
        ));
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let units = decimal::parse_units(digits, scale).map_err(|e| match e {
        DecimalError::Overflow => out_of_range(text, scale),
        DecimalError::Negative => "has two signs".to_string(),
        other => format!("{text:?} {other}"),
    })?;
    if units > MAX_SCORE_UNITS {
        return Err(out_of_range(text, scale));
    }
    Ok(if negative { -units } else { units })
}

fn out_of_range(text: &str, scale: u32) -> String {
    format!(
        "{text:?} is out of range: scores are at most {} in magnitude",
        format_score(MAX_SCORE_UNITS, scale)
    )
}

/// Units as a decimal string with exactly `scale` decimal places.
pub fn format_score(units: i64, scale: u32) -> String {
    decimal::format_units(i128::from(units), scale)
}

/// The 17 characters that sort scores best first for `order`.
pub fn score_key(order: Order, score: i64) -> String {
    debug_assert!(score.abs() <= MAX_SCORE_UNITS);
    match order {
        Order::HigherFirst if score >= 0 => format!("0{:016}", MAX_SCORE_UNITS - score),
        Order::HigherFirst => format!("1{:016}", -score),
        Order::LowerFirst if score < 0 => format!("0{:016}", MAX_SCORE_UNITS + score),
        Order::LowerFirst => format!("1{score:016}"),
    }
}

/// The entry of `member` with `score` reached at tie-break sequence `seq`.
pub fn entry(order: Order, score: i64, seq: u64, member: &str) -> String {
    format!("{}{seq:016}{member}", score_key(order, score))
}

/// A decoded entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub score: i64,
    pub seq: u64,
    pub member: String,
}

/// Reads an entry back; `None` when it is not one.
pub fn decode_entry(order: Order, entry: &str) -> Option<Decoded> {
    if entry.len() <= MEMBER_AT || !entry.is_char_boundary(MEMBER_AT) {
        return None;
    }
    let sign = entry.as_bytes()[0];
    let magnitude: i64 = entry.get(1..SCORE_KEY_LEN)?.parse().ok()?;
    let seq: u64 = entry.get(SCORE_KEY_LEN..MEMBER_AT)?.parse().ok()?;
    let score = match (order, sign) {
        (Order::HigherFirst, b'0') => MAX_SCORE_UNITS - magnitude,
        (Order::HigherFirst, b'1') => -magnitude,
        (Order::LowerFirst, b'0') => magnitude - MAX_SCORE_UNITS,
        (Order::LowerFirst, b'1') => magnitude,
        _ => return None,
    };
    Some(Decoded {
        score,
        seq,
        member: entry[MEMBER_AT..].to_string(),
    })
}

/// `100 × below / total` rounded down to 4 decimal places ("0.0000" for an empty window).
pub fn percentile(below: u64, total: u64) -> String {
    if total == 0 {
        return "0.0000".into();
    }
    // Exact: 100 × 10^4 × below fits easily in u128.
    let scaled = u128::from(below) * 1_000_000 / u128::from(total);
    decimal::format_units(scaled as i128, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signed_exact_decimals_within_range() {
        assert_eq!(parse_score("12.34", 2), Ok(1234));
        assert_eq!(parse_score("-1.5", 2), Ok(-150));
        assert_eq!(parse_score("7", 0), Ok(7));
        assert_eq!(parse_score("9007199254740991", 0), Ok(MAX_SCORE_UNITS));
        assert_eq!(parse_score("-9007199254740991", 0), Ok(-MAX_SCORE_UNITS));
        assert!(parse_score("9007199254740992", 0).is_err());
        assert!(parse_score("90071992547409.92", 2).is_err());
        assert!(parse_score("99999999999999999999", 0).is_err());
        for bad in [
            "NaN",
            "inf",
            "-Infinity",
            "1e3",
            "",
            "--1",
            "1.234",
            " 1",
            "0x10",
        ] {
            assert!(parse_score(bad, 2).is_err(), "{bad}");
        }
        assert!(parse_score("NaN", 0).unwrap_err().contains("not finite"));
    }

    #[test]
    fn entries_sort_in_rank_order_for_both_orders() {
        let scores = [
            -MAX_SCORE_UNITS,
            -1_000,
            -1,
            0,
            1,
            2,
            999,
            MAX_SCORE_UNITS - 1,
            MAX_SCORE_UNITS,
        ];
        for order in [Order::HigherFirst, Order::LowerFirst] {
            let mut entries: Vec<String> =
                scores.iter().map(|&s| entry(order, s, 5, "m")).collect();
            entries.sort();
            let ranked: Vec<i64> = entries
                .iter()
                .map(|e| decode_entry(order, e).unwrap().score)
                .collect();
            let mut expected = scores.to_vec();
            if order == Order::HigherFirst {
                expected.reverse();
            }
            assert_eq!(ranked, expected, "{order:?}");
        }
    }

    #[test]
    fn equal_scores_sort_earlier_sequence_first_then_member() {
        let a = entry(Order::HigherFirst, 10, 2, "zed");
        let b = entry(Order::HigherFirst, 10, 3, "abe");
        let c = entry(Order::HigherFirst, 11, 9, "late");
        let mut v = vec![a.clone(), b.clone(), c.clone()];
        v.sort();
        assert_eq!(v, vec![c, a, b]);
    }

    #[test]
    fn decodes_what_it_encodes() {
        let e = entry(Order::LowerFirst, -42, 77, "ünïcode member");
        assert_eq!(
            decode_entry(Order::LowerFirst, &e),
            Some(Decoded {
                score: -42,
                seq: 77,
                member: "ünïcode member".into()
            })
        );
        assert_eq!(decode_entry(Order::LowerFirst, "short"), None);
    }

    #[test]
    fn percentiles_are_exact_and_rounded_down() {
        assert_eq!(percentile(0, 0), "0.0000");
        assert_eq!(percentile(3, 4), "75.0000");
        assert_eq!(percentile(1, 3), "33.3333");
        assert_eq!(percentile(2, 3), "66.6666");
        assert_eq!(percentile(999_999, 1_000_000), "99.9999");
    }
}
