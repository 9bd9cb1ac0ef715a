//! Just enough unsigned 256-bit integer arithmetic for the two places where a
//! 128-bit intermediate is not enough: `a × b / c` with an 18-place scale
//! factor, and the integer square root behind the standard deviation.
//!
//! Every operation is exact or says it overflowed; nothing here rounds.

use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct U256 {
    pub hi: u128,
    pub lo: u128,
}

impl PartialOrd for U256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for U256 {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.hi, self.lo).cmp(&(other.hi, other.lo))
    }
}

const LO64: u128 = u64::MAX as u128;

impl U256 {
    pub const ZERO: U256 = U256 { hi: 0, lo: 0 };

    pub fn from_u128(v: u128) -> U256 {
        U256 { hi: 0, lo: v }
    }

    /// The full product of two `u128`.
    pub fn mul(a: u128, b: u128) -> U256 {
        let (a1, a0) = (a >> 64, a & LO64);
        let (b1, b0) = (b >> 64, b & LO64);
        let p00 = a0 * b0;
        let p01 = a0 * b1;
        let p10 = a1 * b0;
        let p11 = a1 * b1;
        // Middle column: the high half of p00 plus the low halves of the cross products.
        let mid = (p00 >> 64) + (p01 & LO64) + (p10 & LO64);
        let lo = (p00 & LO64) | (mid << 64);
        let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
        U256 { hi, lo }
    }

    pub fn checked_add(self, other: U256) -> Option<U256> {
        let (lo, carry) = self.lo.overflowing_add(other.lo);
        let hi = self
            .hi
            .checked_add(other.hi)?
            .checked_add(u128::from(carry))?;
        Some(U256 { hi, lo })
    }

    /// `self - other`, or `None` when `other > self`.
    pub fn checked_sub(self, other: U256) -> Option<U256> {
        if other > self {
            return None;
        }
        let (lo, borrow) = self.lo.overflowing_sub(other.lo);
        Some(U256 {
            hi: self.hi - other.hi - u128::from(borrow),
            lo,
        })
    }

    pub fn checked_mul_u128(self, m: u128) -> Option<U256> {
        let low = U256::mul(self.lo, m);
        let high = self.hi.checked_mul(m)?;
        Some(U256 {
            hi: low.hi.checked_add(high)?,
            lo: low.lo,
        })
    }

    /// Quotient and remainder by a `u128`, when the quotient fits in a `u128`
    /// (that is, when `hi < d`); `None` otherwise or when `d` is zero.
    pub fn div_rem_u128(self, d: u128) -> Option<(u128, u128)> {
        if d == 0 || self.hi >= d {
            return None;
        }
        if self.hi == 0 {
            return Some(div_rem(self.lo, d));
        }
        if d <= LO64 {
            // Two 64-bit digits, each a native 128-by-64 step (the remainder
            // stays below `d`, so `rem << 64` cannot overflow).
            let cur = (self.hi << 64) | (self.lo >> 64);
            let (q1, r1) = div_rem(cur, d);
            let cur = (r1 << 64) | (self.lo & LO64);
            let (q0, r0) = div_rem(cur, d);
            return Some(((q1 << 64) | q0, r0));
        }
        // Knuth's algorithm D with 64-bit digits: normalise so the divisor's
        // top bit is set, then two quotient digits. `hi < d` keeps the
        // shifted numerator within 256 bits.
        let s = d.leading_zeros();
        let d = d << s;
        let (hi, lo) = if s == 0 {
            (self.hi, self.lo)
        } else {
            ((self.hi << s) | (self.lo >> (128 - s)), self.lo << s)
        };
        let (q1, r) = div_3by2(hi, (lo >> 64) as u64, d);
        let (q0, r) = div_3by2(r, lo as u64, d);
        Some(((u128::from(q1) << 64) | u128::from(q0), r >> s))
    }

    /// Quotient and remainder by a `u64` (the quotient may need all 256 bits).
    pub fn div_rem_u64(self, d: u64) -> Option<(U256, u64)> {
        if d == 0 {
            return None;
        }
        let d = u128::from(d);
        let digits = [self.hi >> 64, self.hi & LO64, self.lo >> 64, self.lo & LO64];
        let mut q = [0u128; 4];
        let mut rem = 0u128;
        for (i, digit) in digits.into_iter().enumerate() {
            let cur = (rem << 64) | digit;
            (q[i], rem) = div_rem(cur, d);
        }
        let quotient = U256 {
            hi: (q[0] << 64) | q[1],
            lo: (q[2] << 64) | q[3],
        };
        Some((quotient, rem as u64))
    }

    fn bits(self) -> u32 {
        if self.hi != 0 {
            256 - self.hi.leading_zeros()
        } else {
            128 - self.lo.leading_zeros()
        }
    }

    fn shr(self, n: u32) -> U256 {
        match n {
            0 => self,
            1..=127 => U256 {
                hi: self.hi >> n,
                lo: (self.lo >> n) | (self.hi << (128 - n)),
            },
            128..=255 => U256 {
                hi: 0,
                lo: self.hi >> (n - 128),
            },
            _ => U256::ZERO,
        }
    }

    /// ⌊√self⌋ by integer Newton iteration, started from above with an
    /// estimate taken from the top 128 bits (so it takes one or two steps).
    pub fn isqrt(self) -> u128 {
        if self.hi == 0 {
            return self.lo.isqrt();
        }
        // self = top × 4^s + rest with top < 2^128, so
        // √self < √(top + 1) × 2^s ≤ (⌊√top⌋ + 1) × 2^s.
        let s = (self.bits() - 128).div_ceil(2);
        let top = self.shr(2 * s).lo;
        let estimate = top.isqrt() + 1;
        let mut x = if estimate.leading_zeros() >= s {
            estimate << s
        } else {
            u128::MAX
        };
        loop {
            // Newton from above never goes below ⌊√self⌋. The quotient fits
            // unless self ≥ x·2^128 > x², i.e. x < √self: then x is the floor.
            let Some((q, _)) = self.div_rem_u128(x) else {
                return x;
            };
            let next = (x & q) + ((x ^ q) >> 1);
            if next >= x {
                return x;
            }
            x = next;
        }
    }
}

/// One digit of long division: `(top·2^64 + next) / d` and its remainder,
/// for a normalised `d` (top bit set) and `top < d`, so the quotient is one
/// 64-bit digit. The estimate from the divisor's top digit is at most two too
/// large (Knuth, TAOCP vol. 2, 4.3.1, theorem B).
fn div_3by2(top: u128, next: u64, d: u128) -> (u64, u128) {
    let d1 = d >> 64;
    let numerator = U256 {
        hi: top >> 64,
        lo: (top << 64) | u128::from(next),
    };
    let mut q = if top >> 64 >= d1 {
        u128::from(u64::MAX)
    } else {
        top / d1
    };
    let mut product = U256::mul(q, d);
    while product > numerator {
        q -= 1;
        product = product
            .checked_sub(U256 { hi: 0, lo: d })
            .expect("the product exceeds the numerator, so it exceeds d");
    }
    let rem = numerator
        .checked_sub(product)
        .expect("the product is at most the numerator");
    debug_assert!(rem.hi == 0 && rem.lo < d);
    (q as u64, rem.lo)
}

/// `n / d` and `n % d` with one division (a 128-bit division is a library
/// call; `/` and `%` would make two).
pub(crate) fn div_rem(n: u128, d: u128) -> (u128, u128) {
    let q = n / d;
    (q, n - q * d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift*), so tests need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn u128(&mut self) -> u128 {
            let v = (u128::from(self.next()) << 64) | u128::from(self.next());
            // Vary the magnitude so every code path is hit.
            v >> (self.next() % 128)
        }
    }

    fn slow_div(n: U256, d: u128) -> (u128, u128) {
        let mut rem = U256::ZERO;
        let mut quot = 0u128;
        for i in (0..256).rev() {
            let bit = if i >= 128 {
                (n.hi >> (i - 128)) & 1
            } else {
                (n.lo >> i) & 1
            };
            rem = U256 {
                hi: (rem.hi << 1) | (rem.lo >> 127),
                lo: (rem.lo << 1) | bit,
            };
            if rem >= U256::from_u128(d) {
                rem = rem.checked_sub(U256::from_u128(d)).unwrap();
                if i < 128 {
                    quot |= 1 << i;
                }
            }
        }
        (quot, rem.lo)
    }

    #[test]
    fn multiplies_like_schoolbook() {
        assert_eq!(
            U256::mul(u128::MAX, u128::MAX),
            U256 {
                hi: u128::MAX - 1,
                lo: 1
            }
        );
        assert_eq!(U256::mul(1 << 100, 1 << 100), U256 { hi: 1 << 72, lo: 0 });
        assert_eq!(U256::mul(12345, 678), U256::from_u128(12345 * 678));
    }

    #[test]
    fn division_matches_bitwise_long_division() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let d = rng.u128().max(1);
            let a = rng.u128();
            let b = rng.u128();
            let n = U256::mul(a, b);
            match n.div_rem_u128(d) {
                Some((q, r)) => {
                    assert_eq!((q, r), slow_div(n, d), "{n:?} / {d}");
                    // q × d + r == n
                    let back = U256::mul(q, d).checked_add(U256::from_u128(r)).unwrap();
                    assert_eq!(back, n);
                }
                None => assert!(n.hi >= d),
            }
        }
    }

    #[test]
    fn division_by_u64_is_exact() {
        let mut rng = Rng(7);
        for _ in 0..10_000 {
            let n = U256::mul(rng.u128(), rng.u128());
            let d = rng.next().max(1);
            let (q, r) = n.div_rem_u64(d).unwrap();
            assert!(u128::from(r) < u128::from(d));
            let back = q
                .checked_mul_u128(u128::from(d))
                .unwrap()
                .checked_add(U256::from_u128(u128::from(r)))
                .unwrap();
            assert_eq!(back, n);
        }
    }

    #[test]
    fn square_roots_are_floors() {
        let mut rng = Rng(42);
        let check = |n: U256| {
            let r = n.isqrt();
            assert!(U256::mul(r, r) <= n, "{n:?}: {r}² too big");
            // (r + 1)² > n; when r + 1 = 2^128, (r + 1)² is past 2^256 > n.
            if let Some(r1) = r.checked_add(1) {
                assert!(U256::mul(r1, r1) > n, "{n:?}: {r1}² not above");
            }
        };
        for _ in 0..20_000 {
            check(U256::mul(rng.u128(), rng.u128()));
            let r = rng.u128();
            let sq = U256::mul(r, r);
            assert_eq!(sq.isqrt(), r);
            if let Some(less) = sq.checked_sub(U256::from_u128(1)) {
                assert_eq!(less.isqrt(), r - 1);
            }
        }
        check(U256 {
            hi: u128::MAX,
            lo: u128::MAX,
        });
        assert_eq!(
            U256 {
                hi: u128::MAX,
                lo: u128::MAX
            }
            .isqrt(),
            u128::MAX
        );
        for v in 0..10_000u128 {
            let r = U256::from_u128(v).isqrt();
            assert!(r * r <= v && (r + 1) * (r + 1) > v);
        }
        assert_eq!(U256::from_u128(u128::MAX).isqrt(), u64::MAX as u128);
    }
}
