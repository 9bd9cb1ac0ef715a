//! Decimal text exactly as a venue wrote it. Venues that send JSON numbers
//! (Upbit's `trade_price: 94999000.0`, `trade_volume: 1.0E-4`) are read
//! through `serde_json`'s raw values, so the digits are never a float; this
//! turns such a number's text into plain decimal text.

/// Plain decimal text of a JSON number or decimal string: "1.0E-4" →
/// "0.00010", "94999000.0" unchanged. `None` for anything that is not a
/// non-negative decimal.
pub fn plain_decimal(text: &str) -> Option<String> {
    let text = text.trim().trim_matches('"');
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if exponent == 0 {
        return Some(if int.is_empty() {
            format!("0.{frac}")
        } else {
            mantissa.to_string()
        });
    }
    let digits = format!("{int}{frac}");
    // Position of the decimal point within `digits` after the shift.
    let point = int.len() as i64 + i64::from(exponent);
    let out = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    let out = out.trim_start_matches('0');
    Some(if out.is_empty() || out.starts_with('.') {
        format!("0{out}")
    } else {
        out.to_string()
    })
}

/// Decimal places a venue's tick or lot size asks for: "0.01000000" → 2,
/// "1.00000000" → 0, "0.0001" → 4, "1e-8" → 8. `None` when it is not a
/// decimal.
pub fn scale_of_step(step: &str) -> Option<u32> {
    let plain = plain_decimal(step)?;
    Some(match plain.split_once('.') {
        Some((_, frac)) => frac.trim_end_matches('0').len() as u32,
        None => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::{plain_decimal, scale_of_step};

    #[test]
    fn steps_give_scales() {
        assert_eq!(scale_of_step("0.01000000"), Some(2));
        assert_eq!(scale_of_step("1.00000000"), Some(0));
        assert_eq!(scale_of_step("0.0001"), Some(4));
        assert_eq!(scale_of_step("1e-8"), Some(8));
        assert_eq!(scale_of_step("1000"), Some(0));
        assert_eq!(scale_of_step("x"), None);
    }

    #[test]
    fn numbers_keep_their_digits() {
        assert_eq!(plain_decimal("94999000.0").as_deref(), Some("94999000.0"));
        assert_eq!(plain_decimal("1.0E-4").as_deref(), Some("0.00010"));
        assert_eq!(plain_decimal("1.5e3").as_deref(), Some("1500"));
        assert_eq!(plain_decimal("0.00123456").as_deref(), Some("0.00123456"));
        assert_eq!(plain_decimal("\"67012.25\"").as_deref(), Some("67012.25"));
        assert_eq!(plain_decimal("12").as_deref(), Some("12"));
        assert_eq!(plain_decimal("1.23E+2").as_deref(), Some("123"));
        assert_eq!(plain_decimal("-1"), None);
        assert_eq!(plain_decimal("abc"), None);
        assert_eq!(plain_decimal(""), None);
    }
}
