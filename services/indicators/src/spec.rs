//! Indicator specs as requests name them (`sma(20)`, `macd(12,26,9)`,
//! `bbands(20,2.5)`, `vwap`): parsing, validation with errors that say which
//! parameter is wrong and what is allowed, and the canonical text.

use std::fmt;

use tickmesh_core::decimal::{format_units, parse_units};
use tickmesh_core::{Error, FieldViolation};

/// The longest period any indicator accepts. It bounds the warm-up history a
/// query has to read before its first candle.
pub const MAX_PERIOD: u32 = 5000;

/// The most indicators one request may ask for.
pub const MAX_INDICATORS: usize = 16;

/// Decimal places of the Bollinger band multiplier.
pub const MULTIPLIER_SCALE: u32 = 8;

const MAX_MULTIPLIER: i64 = 100 * 10i64.pow(MULTIPLIER_SCALE);

const KNOWN: &str = "sma(period), ema(period), wma(period), rsi(period), \
                     macd(fast,slow,signal), bbands(period,k), atr(period), vwap, obv";

/// A Bollinger band width in standard deviations, exact to
/// [`MULTIPLIER_SCALE`] places (`2`, `2.5`, `1.75`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Multiplier {
    /// The multiplier × 10^8.
    pub units: i64,
}

impl Multiplier {
    pub const TWO: Multiplier = Multiplier {
        units: 2 * 10i64.pow(MULTIPLIER_SCALE),
    };
}

impl fmt::Display for Multiplier {
    /// The shortest exact form: `2`, `2.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format_units(i128::from(self.units), MULTIPLIER_SCALE);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        f.write_str(text)
    }
}

/// One indicator with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Indicator {
    /// Simple moving average of closes.
    Sma { period: u32 },
    /// Exponential moving average of closes, seeded with the SMA of the first `period`.
    Ema { period: u32 },
    /// Linearly weighted moving average of closes (weights 1..=period, newest heaviest).
    Wma { period: u32 },
    /// Wilder's relative strength index of closes.
    Rsi { period: u32 },
    /// MACD line, signal and histogram.
    Macd { fast: u32, slow: u32, signal: u32 },
    /// Bollinger bands: SMA ± k population standard deviations.
    Bbands { period: u32, k: Multiplier },
    /// Wilder's average true range.
    Atr { period: u32 },
    /// Volume-weighted average of the typical price (H+L+C)/3, from the session's first candle.
    Vwap,
    /// On-balance volume.
    Obv,
}

/// What one output measures, which decides its decimal places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// In price units (averages, bands, MACD, ATR, VWAP).
    Price,
    /// 0 to 100 (RSI).
    Oscillator,
    /// In quantity units (OBV).
    Volume,
}

/// Why an indicator spec was refused; the text is for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// Parses and validates a request's indicators. A bad entry `i` is reported
/// as a violation of field `indicators[i]` (all of them at once), a list
/// longer than [`MAX_INDICATORS`] as one of field `indicators`. An empty list
/// is accepted (a subscription without indicators); a query that needs at
/// least one checks that itself.
pub fn parse_indicators<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Indicator>, Error> {
    if texts.len() > MAX_INDICATORS {
        return Err(Error::invalid(
            "indicators",
            format!(
                "at most {MAX_INDICATORS} indicators per request, got {}",
                texts.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(texts.len());
    let mut violations = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match Indicator::parse(text.as_ref()) {
            Ok(indicator) => parsed.push(indicator),
            Err(e) => violations.push(FieldViolation::new(format!("indicators[{i}]"), e.0)),
        }
    }
    Error::check(violations)?;
    Ok(parsed)
}

impl Indicator {
    /// Parses `name` or `name(p1,p2,…)`. Names are case-insensitive and
    /// spaces around names and parameters are ignored. Defaults:
    /// `rsi` = `rsi(14)`, `atr` = `atr(14)`, `macd` = `macd(12,26,9)`,
    /// `bbands` = `bbands(20,2)`, `bbands(n)` = `bbands(n,2)`.
    pub fn parse(text: &str) -> Result<Indicator, SpecError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SpecError(format!(
                "must name an indicator, e.g. sma(20); known: {KNOWN}"
            )));
        }
        let (name, params) = match text.split_once('(') {
            None => (text, Vec::new()),
            Some((name, rest)) => {
                let Some(inner) = rest.strip_suffix(')') else {
                    return Err(SpecError(format!(
                        "\"{text}\" is not of the form name(parameters), e.g. macd(12,26,9)"
                    )));
                };
                if inner.contains(['(', ')']) {
                    return Err(SpecError(format!(
                        "\"{text}\" is not of the form name(parameters), e.g. macd(12,26,9)"
                    )));
                }
                let params = if inner.trim().is_empty() {
                    Vec::new()
                } else {
                    inner.split(',').map(str::trim).collect()
                };
                (name.trim(), params)
            }
        };
        let name = name.to_ascii_lowercase();
        // Too many parameters is an error here; a missing one takes its
        // default or is reported by `period` below.
        let arity = |expected: &[&str]| -> Result<(), SpecError> {
            if params.len() <= expected.len() {
                return Ok(());
            }
            let names = expected.join(", ");
            Err(SpecError(match expected.len() {
                0 => format!("{name} takes no parameters, got {}", params.len()),
                1 => format!("{name} takes 1 parameter ({names}), got {}", params.len()),
                n => format!(
                    "{name} takes {n} parameters ({names}), got {}",
                    params.len()
                ),
            }))
        };
        let period =
            |i: usize, what: &str, min: u32, default: Option<u32>| match (params.get(i), default) {
                (Some(p), _) => parse_period(&name, what, p, min),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(SpecError(format!(
                    "{name} needs its {what}, e.g. {name}(20)"
                ))),
            };
        let indicator = match name.as_str() {
            "sma" | "ema" | "wma" => {
                arity(&["period"])?;
                let period = period(0, "period", 2, None)?;
                match name.as_str() {
                    "sma" => Indicator::Sma { period },
                    "ema" => Indicator::Ema { period },
                    _ => Indicator::Wma { period },
                }
            }
            "rsi" => {
                arity(&["period"])?;
                Indicator::Rsi {
                    period: period(0, "period", 2, Some(14))?,
                }
            }
            "atr" => {
                arity(&["period"])?;
                Indicator::Atr {
                    period: period(0, "period", 1, Some(14))?,
                }
            }
            "macd" => {
                arity(&["fast", "slow", "signal"])?;
                if !params.is_empty() && params.len() != 3 {
                    return Err(SpecError(format!(
                        "macd takes 3 parameters (fast, slow, signal) or none for macd(12,26,9), got {}",
                        params.len()
                    )));
                }
                let fast = period(0, "fast period", 2, Some(12))?;
                let slow = period(1, "slow period", 2, Some(26))?;
                let signal = period(2, "signal period", 1, Some(9))?;
                if fast >= slow {
                    return Err(SpecError(format!(
                        "macd fast period ({fast}) must be less than its slow period ({slow})"
                    )));
                }
                Indicator::Macd { fast, slow, signal }
            }
            "bbands" => {
                arity(&["period", "k"])?;
                let period = period(0, "period", 2, Some(20))?;
                let k = match params.get(1) {
                    Some(k) => parse_multiplier(k)?,
                    None => Multiplier::TWO,
                };
                Indicator::Bbands { period, k }
            }
            "vwap" => {
                arity(&[])?;
                Indicator::Vwap
            }
            "obv" => {
                arity(&[])?;
                Indicator::Obv
            }
            _ => {
                return Err(SpecError(format!(
                    "unknown indicator \"{name}\"; known: {KNOWN}"
                )));
            }
        };
        Ok(indicator)
    }

    /// The lowercase name (`"macd"`).
    pub fn name(&self) -> &'static str {
        match self {
            Indicator::Sma { .. } => "sma",
            Indicator::Ema { .. } => "ema",
            Indicator::Wma { .. } => "wma",
            Indicator::Rsi { .. } => "rsi",
            Indicator::Macd { .. } => "macd",
            Indicator::Bbands { .. } => "bbands",
            Indicator::Atr { .. } => "atr",
            Indicator::Vwap => "vwap",
            Indicator::Obv => "obv",
        }
    }

    /// The names of the values each reading carries, in order.
    pub fn outputs(&self) -> &'static [&'static str] {
        match self {
            Indicator::Macd { .. } => &["macd", "signal", "histogram"],
            Indicator::Bbands { .. } => &["middle", "upper", "lower"],
            _ => &["value"],
        }
    }

    pub fn output_kind(&self) -> OutputKind {
        match self {
            Indicator::Rsi { .. } => OutputKind::Oscillator,
            Indicator::Obv => OutputKind::Volume,
            _ => OutputKind::Price,
        }
    }

    /// How many candles come before the first one with every output: the
    /// 0-based index of that candle in a series (TA-Lib's "lookback").
    pub fn warm_up(&self) -> u32 {
        match *self {
            Indicator::Sma { period }
            | Indicator::Ema { period }
            | Indicator::Wma { period }
            | Indicator::Bbands { period, .. } => period - 1,
            Indicator::Rsi { period } | Indicator::Atr { period } => period,
            Indicator::Macd { slow, signal, .. } => slow + signal - 2,
            Indicator::Vwap | Indicator::Obv => 0,
        }
    }
}

impl fmt::Display for Indicator {
    /// The canonical form: lowercase, no spaces, every parameter written out
    /// (`macd(12,26,9)`, `bbands(20,2.5)`, `vwap`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match *self {
            Indicator::Sma { period }
            | Indicator::Ema { period }
            | Indicator::Wma { period }
            | Indicator::Rsi { period }
            | Indicator::Atr { period } => write!(f, "{name}({period})"),
            Indicator::Macd { fast, slow, signal } => {
                write!(f, "{name}({fast},{slow},{signal})")
            }
            Indicator::Bbands { period, k } => write!(f, "{name}({period},{k})"),
            Indicator::Vwap | Indicator::Obv => f.write_str(name),
        }
    }
}

fn parse_period(name: &str, what: &str, text: &str, min: u32) -> Result<u32, SpecError> {
    let refuse = || {
        SpecError(format!(
            "{name} {what} must be a whole number from {min} to {MAX_PERIOD}, got \"{text}\""
        ))
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    match text.parse::<u32>() {
        Ok(p) if (min..=MAX_PERIOD).contains(&p) => Ok(p),
        _ => Err(refuse()),
    }
}

fn parse_multiplier(text: &str) -> Result<Multiplier, SpecError> {
    let refuse = |why: &str| {
        SpecError(format!(
            "bbands k {why}: it must be a decimal number greater than 0 and at most 100, \
             with at most {MULTIPLIER_SCALE} decimal places (e.g. 2 or 2.5), got \"{text}\""
        ))
    };
    let units = parse_units(text, MULTIPLIER_SCALE).map_err(|e| refuse(&e.to_string()))?;
    if units == 0 {
        return Err(refuse("is zero"));
    }
    if units > MAX_MULTIPLIER {
        return Err(refuse("is too large"));
    }
    Ok(Multiplier { units })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Indicator {
        Indicator::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        match Indicator::parse(text) {
            Ok(i) => panic!("{text} parsed as {i}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn parses_every_indicator_and_prints_it_canonically() {
        for (text, canonical) in [
            ("sma(20)", "sma(20)"),
            ("EMA(12)", "ema(12)"),
            (" wma( 10 ) ", "wma(10)"),
            ("rsi(14)", "rsi(14)"),
            ("rsi", "rsi(14)"),
            ("macd(12,26,9)", "macd(12,26,9)"),
            ("macd", "macd(12,26,9)"),
            ("macd(5, 35, 5)", "macd(5,35,5)"),
            ("bbands(20,2)", "bbands(20,2)"),
            ("bbands(20,2.5)", "bbands(20,2.5)"),
            ("bbands(20,2.50)", "bbands(20,2.5)"),
            ("bbands(10)", "bbands(10,2)"),
            ("bbands", "bbands(20,2)"),
            ("bbands(20,0.00000001)", "bbands(20,0.00000001)"),
            ("atr(14)", "atr(14)"),
            ("atr(1)", "atr(1)"),
            ("vwap", "vwap"),
            ("VWAP()", "vwap"),
            ("obv", "obv"),
            ("sma(5000)", "sma(5000)"),
        ] {
            let indicator = ok(text);
            assert_eq!(indicator.to_string(), canonical, "{text}");
            assert_eq!(ok(canonical), indicator, "{canonical} round trip");
        }
    }

    #[test]
    fn refuses_with_reasons() {
        let cases = [
            ("", "must name an indicator"),
            ("foo(3)", "unknown indicator \"foo\"; known: sma(period)"),
            ("sma", "sma needs its period"),
            ("sma()", "sma needs its period"),
            ("sma(20", "is not of the form name(parameters)"),
            ("sma(20))", "is not of the form name(parameters)"),
            (
                "sma(1)",
                "sma period must be a whole number from 2 to 5000, got \"1\"",
            ),
            ("sma(5001)", "from 2 to 5000, got \"5001\""),
            ("sma(0)", "from 2 to 5000"),
            ("sma(-3)", "got \"-3\""),
            ("sma(2.5)", "got \"2.5\""),
            ("sma(abc)", "got \"abc\""),
            ("sma(99999999999)", "got \"99999999999\""),
            ("sma(20,3)", "sma takes 1 parameter (period), got 2"),
            ("rsi(1)", "rsi period must be a whole number from 2 to 5000"),
            ("atr(0)", "atr period must be a whole number from 1 to 5000"),
            (
                "macd(12,26)",
                "macd takes 3 parameters (fast, slow, signal)",
            ),
            (
                "macd(26,12,9)",
                "macd fast period (26) must be less than its slow period (12)",
            ),
            ("macd(12,12,9)", "must be less than"),
            (
                "macd(12,26,0)",
                "macd signal period must be a whole number from 1 to 5000",
            ),
            (
                "macd(1,26,9)",
                "macd fast period must be a whole number from 2",
            ),
            ("bbands(20,0)", "bbands k is zero"),
            ("bbands(20,-2)", "bbands k must not be negative"),
            ("bbands(20,101)", "bbands k is too large"),
            ("bbands(20,2.123456789)", "has more than 8 decimal places"),
            ("bbands(20,1e3)", "must be a plain decimal number"),
            (
                "bbands(20,2,3)",
                "bbands takes 2 parameters (period, k), got 3",
            ),
            ("vwap(20)", "vwap takes no parameters, got 1"),
            ("obv(1)", "obv takes no parameters"),
        ];
        for (text, expected) in cases {
            let message = err(text);
            assert!(
                message.contains(expected),
                "{text}: {message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn reports_each_bad_entry_by_index() {
        let Err(Error::InvalidArgument(violations)) =
            parse_indicators(&["sma(20)", "nope", "rsi(14)", "ema(1)"])
        else {
            panic!("expected invalid argument");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["indicators[1]", "indicators[3]"]);
        assert!(violations[1].description.contains("ema period"));

        let many: Vec<String> = (0..17).map(|i| format!("sma({})", i + 2)).collect();
        let Err(Error::InvalidArgument(violations)) = parse_indicators(&many) else {
            panic!("expected invalid argument");
        };
        assert_eq!(violations[0].field, "indicators");

        let empty: [&str; 0] = [];
        assert_eq!(parse_indicators(&empty).unwrap(), vec![]);
        assert_eq!(
            parse_indicators(&["vwap", "macd"]).unwrap(),
            vec![
                Indicator::Vwap,
                Indicator::Macd {
                    fast: 12,
                    slow: 26,
                    signal: 9
                }
            ]
        );
    }

    #[test]
    fn warm_up_matches_ta_lib_lookback() {
        assert_eq!(ok("sma(20)").warm_up(), 19);
        assert_eq!(ok("ema(12)").warm_up(), 11);
        assert_eq!(ok("wma(10)").warm_up(), 9);
        assert_eq!(ok("rsi(14)").warm_up(), 14);
        assert_eq!(ok("macd(12,26,9)").warm_up(), 33);
        assert_eq!(ok("bbands(20,2)").warm_up(), 19);
        assert_eq!(ok("atr(14)").warm_up(), 14);
        assert_eq!(ok("vwap").warm_up(), 0);
        assert_eq!(ok("obv").warm_up(), 0);
    }
}
