//! Rules for identifiers that end up inside Redis keys.
//!
//! Symbols appear in hash tags (`{SYMBOL}`), so they must never contain braces;
//! the allowed alphabet is the one exchanges use for tickers.

/// Longest symbol accepted.
pub const MAX_SYMBOL_LEN: usize = 64;

/// Checks a symbol: 1-64 characters of `A-Z a-z 0-9 . _ - / :`, starting with a
/// letter or digit. Returns the reason when it is refused.
pub fn check_symbol(symbol: &str) -> Result<(), String> {
    if symbol.is_empty() {
        return Err("must not be empty".into());
    }
    if symbol.len() > MAX_SYMBOL_LEN {
        return Err(format!("must be at most {MAX_SYMBOL_LEN} characters"));
    }
    if !symbol.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit".into());
    }
    if let Some(bad) = symbol
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':')))
    {
        return Err(format!(
            "contains {bad:?}; allowed are letters, digits and . _ - / :"
        ));
    }
    Ok(())
}

/// Checks a free-text identifier (trade id, venue, request id): 1 to `max`
/// bytes of printable characters.
pub fn check_text_id(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max {
        return Err(format!("must be at most {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols() {
        for good in [
            "BTCUSDT",
            "005930.KS",
            "ES:2412",
            "BTC-PERP",
            "EUR/USD",
            "a_b",
        ] {
            assert_eq!(check_symbol(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "{BTC}",
            "BTC USDT",
            ".BTC",
            "-X",
            "BTC\n",
            &"X".repeat(65),
        ] {
            assert!(check_symbol(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_ids() {
        assert!(check_text_id("12345", 8).is_ok());
        assert!(check_text_id("", 8).is_err());
        assert!(check_text_id("123456789", 8).is_err());
        assert!(check_text_id("a\u{0}b", 8).is_err());
    }
}
