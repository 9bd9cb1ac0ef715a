//! Exact decimals as scaled integers: `units × 10^-scale`.
//!
//! Prices and quantities cross the API as decimal strings ("67012.25") and live
//! everywhere else as integers at the instrument's scale. Nothing here touches
//! floating point.

use std::fmt;

/// The largest scale (decimal places) an instrument may use.
pub const MAX_SCALE: u32 = 18;

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecimalError {
    Empty,
    Malformed,
    Negative,
    TooManyDecimals { scale: u32 },
    Overflow,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecimalError::Empty => write!(f, "must not be empty"),
            DecimalError::Malformed => write!(
                f,
                "must be a plain decimal number like \"123.45\" (digits, one optional point; no sign, exponent or spaces)"
            ),
            DecimalError::Negative => write!(f, "must not be negative"),
            DecimalError::TooManyDecimals { scale } => {
                write!(f, "has more than {scale} decimal places")
            }
            DecimalError::Overflow => write!(f, "is too large"),
        }
    }
}

impl std::error::Error for DecimalError {}

/// Parses a non-negative decimal string into integer units at `scale`.
///
/// Digits past `scale` are accepted only when they are zeros ("1.2300" at scale
/// 2 is 123 units), so no value is ever rounded.
pub fn parse_units(text: &str, scale: u32) -> Result<i64, DecimalError> {
    debug_assert!(scale <= MAX_SCALE);
    if text.is_empty() {
        return Err(DecimalError::Empty);
    }
    if text.starts_with('-') {
        return Err(DecimalError::Negative);
    }
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecimalError::Malformed);
    }
    let frac = frac_part.unwrap_or("");
    if frac_part.is_some() && (frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit())) {
        return Err(DecimalError::Malformed);
    }
    let scale_usize = scale as usize;
    let (kept, extra) = if frac.len() > scale_usize {
        frac.split_at(scale_usize)
    } else {
        (frac, "")
    };
    if extra.bytes().any(|b| b != b'0') {
        return Err(DecimalError::TooManyDecimals { scale });
    }
    let mut units: i64 = 0;
    for b in int_part.bytes().chain(kept.bytes()) {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(i64::from(b - b'0')))
            .ok_or(DecimalError::Overflow)?;
    }
    for _ in kept.len()..scale_usize {
        units = units.checked_mul(10).ok_or(DecimalError::Overflow)?;
    }
    Ok(units)
}

/// Formats integer units at `scale` with exactly `scale` decimal places, the
/// way exchanges print prices ("67012.25000000" at scale 8).
pub fn format_units(units: i128, scale: u32) -> String {
    let mut out = String::new();
    write_units(&mut out, units, scale);
    out
}

/// [`format_units`] appended to bytes (protobuf being written, say).
pub fn extend_units(out: &mut Vec<u8>, units: i128, scale: u32) {
    write_units(out, units, scale);
}

/// Where [`write_units`] puts text.
trait Text {
    fn reserve(&mut self, additional: usize);
    fn put(&mut self, part: &str);
}

impl Text for String {
    fn reserve(&mut self, additional: usize) {
        String::reserve(self, additional);
    }
    fn put(&mut self, part: &str) {
        self.push_str(part);
    }
}

impl Text for Vec<u8> {
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
    fn put(&mut self, part: &str) {
        self.extend_from_slice(part.as_bytes());
    }
}

/// The text of [`format_units`] appended to `out`: digits come from a stack
/// buffer (two at a time), and `out` grows at most once.
fn write_units(out: &mut impl Text, units: i128, scale: u32) {
    const ZEROS: &str = "0000000000000000";
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(units.unsigned_abs());
    let scale = scale as usize;
    out.reserve(digits.len() + scale + 3);
    if units < 0 {
        out.put("-");
    }
    if scale == 0 {
        out.put(digits);
        return;
    }
    if digits.len() <= scale {
        out.put("0.");
        let mut zeros = scale - digits.len();
        while zeros > 0 {
            let n = zeros.min(ZEROS.len());
            out.put(&ZEROS[..n]);
            zeros -= n;
        }
        out.put(digits);
    } else {
        let (int_part, frac_part) = digits.split_at(digits.len() - scale);
        out.put(int_part);
        out.put(".");
        out.put(frac_part);
    }
}

/// Re-expresses `units` at `from` scale at the larger or equal `to` scale.
pub fn rescale_up(units: i64, from: u32, to: u32) -> Option<i64> {
    debug_assert!(to >= from);
    10i64
        .checked_pow(to - from)
        .and_then(|factor| units.checked_mul(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_values_at_scale() {
        assert_eq!(parse_units("67012.25", 2), Ok(6_701_225));
        assert_eq!(parse_units("67012.25", 8), Ok(6_701_225_000_000));
        assert_eq!(parse_units("7", 3), Ok(7_000));
        assert_eq!(parse_units("0.001", 3), Ok(1));
        assert_eq!(parse_units("0", 0), Ok(0));
        assert_eq!(parse_units("1.2300", 2), Ok(123));
        assert_eq!(parse_units("000123.5", 1), Ok(1235));
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for bad in [
            "1e5", "+1", " 1", "1 ", "1.", ".5", "1..2", "1.2.3", "abc", "1,5", "NaN", "inf",
        ] {
            assert_eq!(parse_units(bad, 4), Err(DecimalError::Malformed), "{bad}");
        }
        assert_eq!(parse_units("", 2), Err(DecimalError::Empty));
        assert_eq!(parse_units("-1", 2), Err(DecimalError::Negative));
    }

    #[test]
    fn refuses_precision_it_would_have_to_round() {
        assert_eq!(
            parse_units("1.234", 2),
            Err(DecimalError::TooManyDecimals { scale: 2 })
        );
        assert_eq!(
            parse_units("1.5", 0),
            Err(DecimalError::TooManyDecimals { scale: 0 })
        );
    }

    #[test]
    fn refuses_overflow() {
        assert_eq!(
            parse_units("92233720368547758080", 0),
            Err(DecimalError::Overflow)
        );
        assert_eq!(parse_units("100000000000", 8), Err(DecimalError::Overflow));
    }

    #[test]
    fn formats_with_fixed_decimals() {
        assert_eq!(format_units(6_701_225, 2), "67012.25");
        assert_eq!(format_units(1, 8), "0.00000001");
        assert_eq!(format_units(0, 2), "0.00");
        assert_eq!(format_units(42, 0), "42");
        assert_eq!(format_units(-150, 2), "-1.50");
        assert_eq!(
            format_units(i128::from(i64::MAX) * 1000, 3),
            "9223372036854775807.000"
        );
        // Beyond u64, and the extremes of i128.
        assert_eq!(
            format_units(i128::from(u64::MAX) + 1, 0),
            "18446744073709551616"
        );
        assert_eq!(
            format_units(i128::MIN, 18),
            "-170141183460469231731.687303715884105728"
        );
        assert_eq!(
            format_units(i128::MAX, 0),
            "170141183460469231731687303715884105727"
        );
        assert_eq!(format_units(-1, 3), "-0.001");
    }

    #[test]
    fn round_trips() {
        for (text, scale) in [("67012.25000000", 8), ("0.01", 2), ("5", 0), ("123.400", 3)] {
            let units = parse_units(text, scale).unwrap();
            assert_eq!(format_units(i128::from(units), scale), text);
        }
    }

    #[test]
    fn rescales() {
        assert_eq!(rescale_up(123, 2, 4), Some(12_300));
        assert_eq!(rescale_up(i64::MAX, 0, 1), None);
    }
}
