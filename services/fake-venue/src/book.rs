//! Per-symbol trade books: exact decimal random walk, id allocation and history.

use std::collections::VecDeque;

use crate::{FakeTrade, VenueKind};

/// A decimal as integer mantissa and scale (number of fractional digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dec {
    pub m: i128,
    pub scale: u32,
}

impl Dec {
    pub fn parse(s: &str) -> Option<Dec> {
        let s = s.trim();
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits = format!("{int}{frac}");
        let m: i128 = digits.parse().ok()?;
        Some(Dec {
            m,
            scale: frac.len() as u32,
        })
    }

    /// Mantissa at a larger scale.
    pub fn at(self, scale: u32) -> i128 {
        self.m * 10i128.pow(scale - self.scale)
    }
}

/// Formats `units * 10^-scale` with exactly `decimals` (>= scale) fractional digits.
pub(crate) fn fmt_units(units: i128, scale: u32, decimals: u32) -> String {
    let decimals = decimals.max(scale);
    let v = units * 10i128.pow(decimals - scale);
    let neg = v < 0;
    let v = v.unsigned_abs();
    let p = 10u128.pow(decimals);
    let int = v / p;
    let frac = v % p;
    let sign = if neg { "-" } else { "" };
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac:0width$}", width = decimals as usize)
    }
}

/// splitmix64: small deterministic generator.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn seeded(seed: &str) -> Rng {
        // FNV-1a
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One produced trade plus the venue-specific extras needed to render it.
#[derive(Clone, Debug)]
pub(crate) struct Rec {
    pub t: FakeTrade,
    /// Binance aggregate trade id.
    pub agg_id: u64,
    /// Bybit tick direction ("PlusTick", ...).
    pub tick_dir: &'static str,
    /// Bybit per-symbol sequence.
    pub seq: u64,
    /// Upbit extras, as decimal text.
    pub prev_close: String,
    pub change: &'static str,
    pub change_price: String,
    pub best_ask: String,
    pub best_bid: String,
}

#[derive(Debug)]
pub(crate) struct Book {
    pub symbol: String,
    pub tick: String,
    pub step: String,
    price_scale: u32,
    qty_scale: u32,
    tick_units: i128,
    step_units: i128,
    start_units: i128,
    price_units: i128,
    last_dir: &'static str,
    next_id: u64,
    next_agg: u64,
    next_seq: u64,
    last_upbit_seq: u64,
    bybit_counter: u64,
    rng: Rng,
    pub history: VecDeque<Rec>,
    pub produced: Vec<FakeTrade>,
    pub history_limit: Option<usize>,
    pub withhold: usize,
}

impl Book {
    pub fn new(kind: VenueKind, symbol: &str, tick: &str, step: &str, start: &str) -> Book {
        let t = Dec::parse(tick)
            .filter(|d| d.m > 0)
            .unwrap_or(Dec { m: 1, scale: 2 });
        let s = Dec::parse(step)
            .filter(|d| d.m > 0)
            .unwrap_or(Dec { m: 1, scale: 3 });
        let p = Dec::parse(start).unwrap_or(Dec { m: 100, scale: 0 });
        let price_scale = t.scale.max(p.scale);
        let tick_units = t.at(price_scale);
        let mut start_units = p.at(price_scale);
        // snap onto the tick grid
        start_units = (start_units / tick_units).max(1) * tick_units;
        Book {
            symbol: symbol.to_string(),
            tick: tick.to_string(),
            step: step.to_string(),
            price_scale,
            qty_scale: s.scale,
            tick_units,
            step_units: s.m,
            start_units,
            price_units: start_units,
            last_dir: "ZeroPlusTick",
            next_id: 1,
            next_agg: 1,
            next_seq: 1_000_000,
            last_upbit_seq: 0,
            bybit_counter: 0,
            rng: Rng::seeded(&format!("{kind:?}/{symbol}")),
            history: VecDeque::new(),
            produced: Vec::new(),
            history_limit: None,
            withhold: 0,
        }
    }

    fn price_text(&self, kind: VenueKind, units: i128) -> String {
        match kind {
            // Binance prints 8 fractional digits (e.g. "4.00000100").
            VenueKind::Binance => fmt_units(units, self.price_scale, 8),
            VenueKind::Bybit => fmt_units(units, self.price_scale, self.price_scale),
            // Upbit: a JSON number; keep at least one fractional digit ("94999000.0").
            VenueKind::Upbit => fmt_units(units, self.price_scale, self.price_scale.max(1)),
        }
    }

    fn qty_text(&self, kind: VenueKind, units: i128) -> String {
        match kind {
            VenueKind::Binance => fmt_units(units, self.qty_scale, 8),
            VenueKind::Bybit => fmt_units(units, self.qty_scale, self.qty_scale),
            VenueKind::Upbit => fmt_units(units, self.qty_scale, self.qty_scale.max(1)),
        }
    }

    /// Makes one new trade, appends it to the history and returns it.
    pub fn make(&mut self, kind: VenueKind, now_ms: i64) -> Rec {
        let step = self.rng.below(5) as i128 - 2;
        let old = self.price_units;
        let mut new = old + step * self.tick_units;
        if new < self.tick_units {
            new = self.tick_units;
        }
        self.price_units = new;
        self.last_dir = match new.cmp(&old) {
            std::cmp::Ordering::Greater => "PlusTick",
            std::cmp::Ordering::Less => "MinusTick",
            std::cmp::Ordering::Equal => {
                if self.last_dir.contains("Minus") {
                    "ZeroMinusTick"
                } else {
                    "ZeroPlusTick"
                }
            }
        };
        let qty_units = self.step_units * (1 + self.rng.below(100) as i128);
        let buyer_is_maker = self.rng.below(2) == 0;
        let (trade_id, ordinal) = match kind {
            VenueKind::Binance => {
                let id = self.next_id;
                self.next_id += 1;
                (id.to_string(), Some(id))
            }
            VenueKind::Upbit => {
                // Upbit style: millisecond timestamp * 1000 + k, increasing with gaps.
                let base = (now_ms.max(0) as u64) * 1000;
                let sid = if base > self.last_upbit_seq {
                    base
                } else {
                    self.last_upbit_seq + 1
                };
                self.last_upbit_seq = sid;
                (sid.to_string(), Some(sid))
            }
            VenueKind::Bybit => {
                self.bybit_counter += 1;
                let a = self.rng.next();
                let b = self.rng.next();
                let id = format!(
                    "{:08x}-{:04x}-5{:03x}-{:04x}-{:012x}",
                    (a >> 32) as u32,
                    (a >> 16) as u16,
                    (a as u16) & 0xfff,
                    ((b >> 48) as u16 & 0x3fff) | 0x8000,
                    (b & 0xffff_ffff_ffff) ^ self.bybit_counter
                );
                (id, None)
            }
        };
        let agg_id = self.next_agg;
        self.next_agg += 1;
        self.next_seq += 1 + self.rng.below(3);
        let diff = new - self.start_units;
        let rec = Rec {
            t: FakeTrade {
                symbol: self.symbol.clone(),
                trade_id,
                ordinal,
                price: self.price_text(kind, new),
                quantity: self.qty_text(kind, qty_units),
                time_ms: now_ms,
                buyer_is_maker,
            },
            agg_id,
            tick_dir: self.last_dir,
            seq: self.next_seq,
            prev_close: self.price_text(kind, self.start_units),
            change: match diff.cmp(&0) {
                std::cmp::Ordering::Greater => "RISE",
                std::cmp::Ordering::Less => "FALL",
                std::cmp::Ordering::Equal => "EVEN",
            },
            change_price: self.price_text(kind, diff.abs()),
            best_ask: self.price_text(kind, new + self.tick_units),
            best_bid: self.price_text(kind, new),
        };
        self.produced.push(rec.t.clone());
        self.history.push_back(rec.clone());
        if let Some(limit) = self.history_limit {
            while self.history.len() > limit {
                self.history.pop_front();
            }
        }
        rec
    }
}

/// Civil date and time (UTC) of a millisecond timestamp: ("yyyy-MM-dd", "HH:mm:ss").
pub(crate) fn utc_date_time(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", sod / 3600, (sod / 60) % 60, sod % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(Dec::parse("0.001"), Some(Dec { m: 1, scale: 3 }));
        assert_eq!(fmt_units(1234, 2, 2), "12.34");
        assert_eq!(fmt_units(1234, 2, 8), "12.34000000");
        assert_eq!(fmt_units(5, 0, 1), "5.0");
        assert_eq!(fmt_units(5, 3, 3), "0.005");
    }

    #[test]
    fn dates() {
        assert_eq!(
            utc_date_time(1_704_067_200_000),
            ("2024-01-01".to_string(), "00:00:00".to_string())
        );
        assert_eq!(
            utc_date_time(1_499_865_549_590),
            ("2017-07-12".to_string(), "13:19:09".to_string())
        );
    }

    #[test]
    fn grid() {
        let mut b = Book::new(VenueKind::Bybit, "BTCUSDT", "0.50", "0.001", "16578.5");
        for _ in 0..200 {
            let r = b.make(VenueKind::Bybit, 1);
            let p = Dec::parse(&r.t.price).unwrap();
            assert_eq!(p.scale, 2);
            assert_eq!(p.m % 50, 0, "{}", r.t.price);
            let q = Dec::parse(&r.t.quantity).unwrap();
            assert_eq!(q.scale, 3);
            assert!(q.m >= 1);
        }
    }
}
