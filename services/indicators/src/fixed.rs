//! The arithmetic every indicator uses: integers, an 18-place fixed point, and
//! one rounding rule.
//!
//! - Inputs (prices and volumes) are exact integers at the instrument's scales.
//! - Sums, differences and products of inputs are exact (`i128`, or 256 bits
//!   where a product needs it).
//! - A value that is not exact is held as an `i128` count of 10^-18
//!   ([`FX_SCALE`]), and every step that divides or takes a square root rounds
//!   its exact result to that grid **half to even**, once. Nothing uses
//!   floating point, so a result is the same bits on every machine and run.
//! - An intermediate that does not fit (far beyond any real price or volume)
//!   is reported as [`Overflow`], never wrapped.

use crate::wide::U256;

/// Decimal places of the fixed-point values the non-exact indicators carry
/// from one candle to the next.
pub const FX_SCALE: u32 = 18;

/// An intermediate result left the representable range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

pub(crate) type Fx<T> = Result<T, Overflow>;

/// 10^e for e ≤ 38.
pub(crate) const fn pow10(e: u32) -> i128 {
    10i128.pow(e)
}

/// `a × b / c` rounded half to even, for `c > 0`, with a 256-bit product.
pub(crate) fn mul_div(a: i128, b: i128, c: i128) -> Fx<i128> {
    debug_assert!(c > 0);
    let negative = (a < 0) != (b < 0);
    let c = c.unsigned_abs();
    let (q, r) = match a.checked_mul(b) {
        Some(p) => crate::wide::div_rem(p.unsigned_abs(), c),
        None => U256::mul(a.unsigned_abs(), b.unsigned_abs())
            .div_rem_u128(c)
            .ok_or(Overflow)?,
    };
    // r < c < 2^127, so 2r cannot overflow.
    let twice = r << 1;
    let q = if twice > c || (twice == c && q & 1 == 1) {
        q + 1
    } else {
        q
    };
    let q = i128::try_from(q).map_err(|_| Overflow)?;
    Ok(if negative { -q } else { q })
}

/// `a / c` rounded half to even, for `c > 0`.
pub(crate) fn div(a: i128, c: i128) -> Fx<i128> {
    mul_div(a, 1, c)
}

/// An exact value of `units × 10^-scale` (scale ≤ 18) on the 18-place grid.
pub(crate) fn to_fx(units: i128, scale: u32) -> Fx<i128> {
    units.checked_mul(pow10(FX_SCALE - scale)).ok_or(Overflow)
}

/// A fixed-point value rounded half to even to `scale` ≤ 18 places.
pub(crate) fn round_fx(fx: i128, scale: u32) -> i128 {
    // Dividing by at least 1 cannot overflow.
    div(fx, pow10(FX_SCALE - scale)).unwrap_or(fx)
}

/// The exact quotient `num / den` of a value at `scale` places (`den > 0`),
/// rounded half to even to `out ≥ scale` places.
pub(crate) fn ratio(num: i128, scale: u32, den: i128, out: u32) -> Fx<i128> {
    mul_div(num, pow10(out - scale), den)
}

/// One EMA step: `prev + (x − prev) × 2/(n + 1)`, rounded once.
///
/// Algebraically `(2x + (n − 1)·prev) / (n + 1)`, TA-Lib's
/// `(x − prev) × k + prev` with `k = 2/(n + 1)`.
pub(crate) fn ema_step(prev: i128, x: i128, period: u32) -> Fx<i128> {
    let delta = x.checked_sub(prev).ok_or(Overflow)?;
    let step = mul_div(delta, 2, i128::from(period) + 1)?;
    prev.checked_add(step).ok_or(Overflow)
}

/// One step of Wilder's smoothing: `prev + (x − prev)/n`, rounded once;
/// algebraically `(prev·(n − 1) + x)/n`.
pub(crate) fn wilder_step(prev: i128, x: i128, period: u32) -> Fx<i128> {
    let delta = x.checked_sub(prev).ok_or(Overflow)?;
    prev.checked_add(div(delta, i128::from(period))?)
        .ok_or(Overflow)
}

/// `√m / n` rounded half to even to an integer, for `n > 0`: the one rounding
/// of a standard deviation (`m` is n² × the variance on the 36-place grid).
///
/// With `u = √(4m/n²) = 2·(√m/n)`: round-half-up(√m/n) = ⌊(⌊u⌋ + 1)/2⌋ and
/// ⌊u⌋ = ⌊√⌊4m/n²⌋⌋, all in integers. A tie needs `u` to be an odd integer
/// exactly, which is checked, and then goes to the even neighbour.
pub(crate) fn sqrt_div(m: U256, n: u64) -> Fx<i128> {
    let four_m = m.checked_mul_u128(4).ok_or(Overflow)?;
    let n2 = n.checked_mul(n).ok_or(Overflow)?;
    let (y, rem) = four_m.div_rem_u64(n2).ok_or(Overflow)?;
    let s = y.isqrt();
    let exact_odd = s & 1 == 1 && rem == 0 && U256::mul(s, s) == y;
    let up = (s >> 1) + (s & 1);
    let rounded = if exact_odd && up & 1 == 1 { up - 1 } else { up };
    i128::try_from(rounded).map_err(|_| Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_to_even() {
        assert_eq!(div(5, 2), Ok(2));
        assert_eq!(div(7, 2), Ok(4));
        assert_eq!(div(-5, 2), Ok(-2));
        assert_eq!(div(-7, 2), Ok(-4));
        assert_eq!(div(10, 3), Ok(3));
        assert_eq!(div(11, 3), Ok(4));
        assert_eq!(div(-11, 3), Ok(-4));
        assert_eq!(mul_div(1, 2, 3), Ok(1));
        assert_eq!(round_fx(1_500_000_000_000_000_000, 0), 2);
        assert_eq!(round_fx(2_500_000_000_000_000_000, 0), 2);
        assert_eq!(round_fx(-2_500_000_000_000_000_000, 0), -2);
    }

    #[test]
    fn wide_products_divide_exactly() {
        // (10^20 × 10^20) / 10^22 = 10^18, which needs more than 128 bits inside.
        assert_eq!(mul_div(pow10(20), pow10(20), pow10(22)), Ok(pow10(18)));
        assert_eq!(mul_div(-pow10(20), pow10(20), pow10(22)), Ok(-pow10(18)));
        // (10^30 × 3) / 2 at the edge of the fast path, and a rounded wide one.
        assert_eq!(mul_div(pow10(37), 10, 4), Ok(pow10(38) / 4));
        assert_eq!(mul_div(pow10(37) + 1, 10, 4), Ok(pow10(38) / 4 + 2));
        // Quotients past i128 are overflow, not wrap.
        assert_eq!(mul_div(i128::MAX, 4, 2), Err(Overflow));
    }

    #[test]
    fn ema_and_wilder_steps_round_once() {
        // prev 10, x 11, n 2: 10 + 2/3 → 10.666… at 0 places → 11.
        assert_eq!(ema_step(10, 11, 2), Ok(11));
        assert_eq!(ema_step(10, 9, 2), Ok(9));
        assert_eq!(wilder_step(10, 13, 2), Ok(12)); // 11.5 → 12 (even)
        assert_eq!(wilder_step(10, 11, 2), Ok(10)); // 10.5 → 10 (even)
    }

    #[test]
    fn square_root_quotient_is_correctly_rounded() {
        // √100 / 4 = 2.5 → 2 (tie to even); √196 / 4 = 3.5 → 4.
        assert_eq!(sqrt_div(U256::from_u128(100), 4), Ok(2));
        assert_eq!(sqrt_div(U256::from_u128(196), 4), Ok(4));
        // √2 = 1.414… → 1; √(2·10^36) = 1.414213562373095048…e18.
        assert_eq!(sqrt_div(U256::from_u128(2), 1), Ok(1));
        assert_eq!(
            sqrt_div(U256::mul(2 * pow10(18) as u128, pow10(18) as u128), 1),
            Ok(1_414_213_562_373_095_049)
        );
        // √3 / 2 = 0.8660254037844386467637… at 18 places → …447 (7637 rounds up).
        assert_eq!(
            sqrt_div(U256::mul(3 * pow10(18) as u128, pow10(18) as u128), 2),
            Ok(866_025_403_784_438_647)
        );
    }
}
