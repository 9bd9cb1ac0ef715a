//! Deterministic synthetic 1m candles for size measurements and tests.
//!
//! Everything is integer arithmetic driven by a xorshift64* generator, so the
//! same seed gives the same candles on every platform. The model, per minute:
//!
//! * an *activity* level (log2 units, Q16) = intraday seasonality (quiet Asian
//!   night, busy US session) + a weekend discount + a slow AR(1) regime + rare
//!   news bursts that decay over the following hour;
//! * per-minute volatility = price × 0.040% × 2^(0.75 × activity): an RMS
//!   return of about 0.048% per minute (median |return| 0.026%), plus jumps of
//!   0.3–1.5% roughly once every 2,500 minutes and a weak pull back towards
//!   67,000.00 (a year stays within about 53,000–72,000);
//! * volume (scale 5) ≈ 0.6 × 2^activity with lognormal noise (σ = 0.7 in log2
//!   units): median 0.68, 90th percentile 1.6 per minute, a mid-sized BTC/USD
//!   venue; trade count = volume / 0.006 (the average trade) with its own
//!   noise: median ~100, from tens to a couple of thousand;
//! * the minute is simulated as up to 40 prints along a random walk (each print
//!   stands for one trade or a burst of trades at the same price); open, high,
//!   low, close, volume and quote volume (Σ price × quantity, exact) all come
//!   from those prints;
//! * about 0.2% of minutes have no trades, plus outages of 1–89 minutes about
//!   once every three weeks: those minutes have no candle;
//! * revision is 1, except about 0.2% of 2s and 0.01% of 3s.

use crate::BlockCandle;

const MINUTE_NS: i64 = 60_000_000_000;
const MINUTES_PER_DAY: i64 = 1_440;
const DAYS: i64 = 365;
/// 67,000.00 at price scale 2.
const TARGET_PRICE: i64 = 6_700_000;
/// Most prints simulated inside one minute.
const MAX_PRINTS: u64 = 40;
/// One in log2 units, Q16.
const ONE: i64 = 1 << 16;

/// A deterministic, realistic year (365 days) of 1m candles starting at
/// `start_ns` (expected to be a UTC midnight). See the module docs for the
/// model. Minutes without trades are skipped, so the result is sparse.
pub fn year_of_minutes(seed: u64, start_ns: i64) -> Vec<BlockCandle> {
    minutes(seed, start_ns, DAYS)
}

/// The first `days` days of [`year_of_minutes`] (same seed, same candles).
pub fn days_of_minutes(seed: u64, start_ns: i64, days: u32) -> Vec<BlockCandle> {
    minutes(seed, start_ns, i64::from(days))
}

fn minutes(seed: u64, start_ns: i64, days: i64) -> Vec<BlockCandle> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(usize::try_from(days * MINUTES_PER_DAY).unwrap_or(0));
    let mut price = TARGET_PRICE;
    let mut regime: i64 = 0; // log2 Q16, AR(1)
    let mut burst: i64 = 0; // log2 Q16, decays
    let mut outage_left: u64 = 0;
    let start_day = start_ns.div_euclid(MINUTE_NS * MINUTES_PER_DAY);
    for minute in 0..days * MINUTES_PER_DAY {
        // Stop rather than overflow if `start_ns` is within a year of i64::MAX.
        let Some(open_ns) = start_ns
            .checked_add(minute * MINUTE_NS)
            .filter(|t| t.checked_add(MINUTE_NS).is_some())
        else {
            break;
        };
        let minute_of_day = minute % MINUTES_PER_DAY;
        // 1970-01-01 was a Thursday: (day + 4) % 7 is 0 on Sundays, 6 on Saturdays.
        let weekday = (start_day + minute / MINUTES_PER_DAY + 4).rem_euclid(7);
        let weekend = if weekday == 0 || weekday == 6 {
            -ONE / 2
        } else {
            0
        };

        regime = regime - regime / 512 + rng.gauss() / 32;
        burst -= burst / 64;
        if rng.below(20_000) == 0 {
            burst += ONE + i64::try_from(rng.below(ONE as u64)).unwrap_or(0);
        }
        let activity = seasonality(minute_of_day) + weekend + regime + burst;

        // Weak mean reversion towards 67,000.00 (applied as a drift on the
        // minute's first move), then the minute's volatility.
        let pull = (TARGET_PRICE - price) >> 15;
        let sigma = ((i128::from(price) * 40 / 100_000 * i128::from(exp2_q16(activity * 3 / 4)))
            >> 16) as i64;

        // Volume and trade count for the minute.
        let volume_target = mul_q16(60_000, exp2_q16(activity + rng.gauss() * 7 / 10));
        let trades_noise = exp2_q16(rng.gauss() * 2 / 5);
        let trades = (mul_q16(volume_target, trades_noise) / 600).clamp(1, 50_000);

        if outage_left > 0 {
            outage_left -= 1;
            price += pull + ((rng.gauss() * sigma) >> 16);
            continue;
        }
        if rng.below(30_000) == 0 {
            outage_left = 1 + rng.below(89);
        }
        if rng.below(1_000) < 2 {
            price += pull + ((rng.gauss() * sigma) >> 16);
            continue;
        }

        let prints = trades.min(MAX_PRINTS);
        let step = sigma * 1_024 / isqrt(u128::from(prints.max(2) - 1) << 20) as i64;
        let jump_at = if rng.below(2_500) == 0 {
            Some(rng.below(prints))
        } else {
            None
        };

        // The first print sits at the last price or one bid/ask bounce away.
        let bounce = match rng.below(8) {
            0..=3 => 0,
            4 | 5 => 1,
            _ => -1,
        };
        let mut p = (price + bounce).max(100);
        let (open, mut high, mut low) = (p, p, p);
        let mut volume: i128 = 0;
        let mut quote: i128 = 0;
        let base_qty = (volume_target / prints).max(1) as i64;
        for i in 0..prints {
            if i > 0 {
                let drift = if i == 1 { pull } else { 0 };
                p = (p + drift + ((rng.gauss() * step) >> 16)).max(100);
            }
            if jump_at == Some(i) {
                let size = i64::try_from(30 + rng.below(121)).unwrap_or(30);
                let jump = p * size / 10_000;
                p = if rng.below(2) == 0 {
                    p + jump
                } else {
                    (p - jump).max(100)
                };
            }
            let qty = print_quantity(&mut rng, base_qty);
            high = high.max(p);
            low = low.min(p);
            volume += i128::from(qty);
            quote += i128::from(qty) * i128::from(p);
        }
        price = p;
        let revision = match rng.below(10_000) {
            0 => 3,
            1..=20 => 2,
            _ => 1,
        };
        out.push(BlockCandle {
            open_ns,
            close_ns: open_ns + MINUTE_NS,
            open,
            high,
            low,
            close: p,
            volume,
            quote_volume: quote,
            trade_count: trades,
            revision,
        });
    }
    out
}

/// Quantity of one print: lognormal-ish around `base`, sometimes rounded the
/// way people type sizes (multiples of 0.001 or 0.01 at scale 5).
fn print_quantity(rng: &mut Rng, base: i64) -> i64 {
    let q = mul_q16(base as u64, exp2_q16(rng.gauss() * 4 / 5)).max(1);
    let q = match rng.below(10) {
        0 | 1 if q > 1_000 => q / 100 * 100,
        2 if q > 10_000 => q / 1_000 * 1_000,
        _ => q,
    };
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// Intraday activity profile in log2 units (Q16), piecewise linear over the
/// minute of the UTC day: quietest around 04:00, a European bump at 08:00 and
/// the busiest hours after the US open (13:30–16:00).
fn seasonality(minute_of_day: i64) -> i64 {
    // (minute of day, log2 level × 100)
    const POINTS: [(i64, i64); 9] = [
        (0, -10),
        (120, -30),
        (240, -60),
        (420, -20),
        (480, 10),
        (780, 20),
        (840, 90),
        (1_020, 50),
        (1_440, -10),
    ];
    let mut i = 0;
    while i + 2 < POINTS.len() && POINTS[i + 1].0 <= minute_of_day {
        i += 1;
    }
    let (m0, v0) = POINTS[i];
    let (m1, v1) = POINTS[i + 1];
    let v = v0 * 100 + (v1 - v0) * 100 * (minute_of_day - m0) / (m1 - m0);
    v * ONE / 10_000
}

/// `value × factor / 2^16`, saturating.
fn mul_q16(value: u64, factor_q16: u64) -> u64 {
    u64::try_from((u128::from(value) * u128::from(factor_q16)) >> 16).unwrap_or(u64::MAX)
}

/// 2^(x / 2^16) in Q16 (x clamped to ±30 in log2 units). The fractional power
/// uses a quadratic fit, within 0.3% of the true value, which is plenty for noise.
fn exp2_q16(x: i64) -> u64 {
    let x = x.clamp(-30 * ONE, 30 * ONE);
    let int = x >> 16;
    let frac = x & (ONE - 1); // [0, 1) in Q16
    // 2^f ≈ 1 + f × (0.6565 + 0.3435 f)
    let poly = ONE + ((frac * (43_024 + ((22_512 * frac) >> 16))) >> 16);
    let poly = poly as u64;
    if int >= 0 {
        poly << int
    } else {
        poly >> (-int)
    }
}

fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Never zero, and nearby seeds diverge at once.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Approximately normal with standard deviation 2^16: the sum of four
    /// 16-bit uniforms (Irwin–Hall), centred and scaled by √3.
    fn gauss(&mut self) -> i64 {
        let r = self.next_u64();
        let sum: i64 = (0..4).map(|i| ((r >> (16 * i)) & 0xFFFF) as i64).sum();
        (sum - 2 * 65_536) * 1_774 / 1_024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_is_close() {
        assert_eq!(exp2_q16(0), 1 << 16);
        assert_eq!(exp2_q16(ONE), 2 << 16);
        assert_eq!(exp2_q16(-ONE), 1 << 15);
        let half = exp2_q16(ONE / 2) as i64; // √2 ≈ 92_682
        assert!((half - 92_682).abs() < 300, "{half}");
    }

    #[test]
    fn gauss_has_unit_spread() {
        let mut rng = Rng::new(1);
        let n = 100_000;
        let (mut sum, mut sq) = (0i128, 0i128);
        for _ in 0..n {
            let g = i128::from(rng.gauss());
            sum += g;
            sq += g * g;
        }
        let var = sq / n - (sum / n) * (sum / n);
        let sd = isqrt(var as u128) as i64;
        assert!((sd - 65_536).abs() < 1_500, "{sd}");
    }
}
