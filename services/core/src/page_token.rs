//! Opaque AIP-158 page tokens.
//!
//! A token carries the kind of listing it belongs to, a fingerprint of the
//! query it continues and a cursor, plus a checksum, hex-encoded. A token that
//! was edited, belongs to another listing or to the same listing with other
//! filters is refused, as AIP-158 asks.

const CHECK_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: cheap and stable across builds, enough to notice tampering by
/// accident or by hand (tokens are not a security boundary).
pub fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash = CHECK_SEED;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Encodes a token for `kind` continuing the query with fingerprint `query` at `cursor`.
pub fn encode(kind: &str, query: u64, cursor: &str) -> String {
    let body = format!("{kind}\n{query:016x}\n{cursor}");
    let check = fingerprint(&[&body]);
    let raw = format!("{body}\n{check:016x}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a token, returning its cursor; the error says why it was refused.
pub fn decode(token: &str, kind: &str, query: u64) -> Result<String, &'static str> {
    const BAD: &str = "is not a page token issued for this request";
    if !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(BAD);
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| BAD)?;
    let raw = String::from_utf8(bytes).map_err(|_| BAD)?;
    let (body, check) = raw.rsplit_once('\n').ok_or(BAD)?;
    if format!("{:016x}", fingerprint(&[body])) != check {
        return Err(BAD);
    }
    let mut parts = body.splitn(3, '\n');
    let (Some(k), Some(q), Some(cursor)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BAD);
    };
    if k != kind {
        return Err(BAD);
    }
    if q != format!("{query:016x}") {
        return Err(
            "belongs to a request with other parameters; repeat them unchanged when paging",
        );
    }
    Ok(cursor.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let q = fingerprint(&["BTCUSDT", "1m"]);
        let token = encode("candles", q, "12345");
        assert_eq!(decode(&token, "candles", q), Ok("12345".into()));
    }

    #[test]
    fn refuses_forgeries_and_reuse_elsewhere() {
        let q = fingerprint(&["a"]);
        let token = encode("instruments", q, "BTC");
        assert!(decode("zz", "instruments", q).is_err());
        assert!(decode("abc", "instruments", q).is_err());
        assert!(decode(&token, "candles", q).is_err());
        assert!(decode(&token, "instruments", fingerprint(&["b"])).is_err());
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 20;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        assert!(decode(std::str::from_utf8(&tampered).unwrap(), "instruments", q).is_err());
    }
}
