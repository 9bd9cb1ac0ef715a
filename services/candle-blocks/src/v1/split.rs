//! The adaptive split of column values into a high part (a varint, later
//! compressed by zstd) and `k` raw low bits (bit-packed, stored as they are).
//!
//! Low bits of prices, volumes and quote volumes are noise that no compressor
//! can shrink; mixing them into the zstd input only dilutes its statistics. So
//! each value `v` is stored as `v >> k` (varint) plus its `k` low bits, where
//! `k` is about 3 bits below the expected bit length of `v`. The expectation
//! is computed from values already coded, so the decoder derives the same `k`
//! without any side information:
//!
//! * `Scale::own`: a moving average (weight 1/8) of the column's own recent bit
//!   lengths;
//! * `Scale::with_context`: a context bit length supplied per value from
//!   columns decoded earlier (e.g. bits of volume + bits of the range for the
//!   quote volume residual) plus a moving average (weight 1/16) of how far the
//!   actual bit lengths were from the context.
//!
//! All arithmetic is on small integers (bit lengths ≤ 128, kept in 1/16ths),
//! so encoder and decoder agree exactly.

use crate::bits::BitReader;
#[cfg(test)]
use crate::bits::BitWriter;
use crate::varint;

/// How many bits below the expected bit length the split is made.
const HEADROOM: i32 = 3;
/// Moving average weights, as shifts: 1/8 for own history, 1/16 for bias.
const OWN_SHIFT: u32 = 3;
const BIAS_SHIFT: u32 = 4;

/// Number of significant bits of `v` (0 for 0).
pub fn bit_len(v: u128) -> i32 {
    (128 - v.leading_zeros()) as i32
}

/// Expected size of the next value of a column, learned from the past.
pub struct Scale {
    /// Average bit length (own) or average excess over the context (bias), in 1/16 bits.
    avg: i32,
    /// Values seen so far, capped: the first updates learn faster (warm-up).
    seen: u32,
}

impl Scale {
    pub fn new() -> Self {
        Scale { avg: 0, seen: 0 }
    }

    /// Number of raw low bits for the next value, given its context bit length
    /// (`None` for columns that learn from their own history only).
    pub fn low_bits(&self, context: Option<i32>) -> u32 {
        let expected = match context {
            Some(c) => c * 16 + self.avg,
            None => self.avg,
        };
        ((expected >> 4) - HEADROOM).clamp(0, 127) as u32
    }

    /// Learns from the value just coded.
    pub fn update(&mut self, v: u128, context: Option<i32>) {
        let (target, shift) = match context {
            Some(c) => (bit_len(v) * 16 - c * 16, BIAS_SHIFT),
            None => (bit_len(v) * 16, OWN_SHIFT),
        };
        // Weight 1, 1/2, 1/4 … for the first values, then the steady weight.
        self.avg += (target - self.avg) >> shift.min(self.seen);
        self.seen = (self.seen + 1).min(shift);
    }
}

#[cfg(test)]
/// Writes one column: high parts to `high`, low bits to `low`. `context(i)`
/// gives the context bit length of value `i` (see [`Scale`]).
pub fn put_column(
    values: &[u128],
    context: impl Fn(usize) -> Option<i32>,
    high: &mut Vec<u8>,
    low: &mut BitWriter,
) {
    let mut scale = Scale::new();
    for (i, &v) in values.iter().enumerate() {
        let ctx = context(i);
        let k = scale.low_bits(ctx);
        varint::put(high, v >> k);
        low.put(v, k);
        scale.update(v, ctx);
    }
}

/// Reads `n` values written by [`put_column`] with the same contexts.
pub fn get_column(
    n: usize,
    context: impl Fn(usize) -> Option<i32>,
    high: &mut varint::Reader<'_>,
    low: &mut BitReader<'_>,
) -> Option<Vec<u128>> {
    let mut out = Vec::with_capacity(n.min(high.remaining()));
    let mut scale = Scale::new();
    for i in 0..n {
        let ctx = context(i);
        let k = scale.low_bits(ctx);
        let hi = high.get()?;
        if k > 0 && hi.leading_zeros() < k {
            return None; // the value would not fit in 128 bits
        }
        let v = (hi << k) | low.get(k)?;
        scale.update(v, ctx);
        out.push(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip() {
        let values: Vec<u128> = (0..2_000u128)
            .map(|i| match i % 7 {
                0 => 0,
                1 => u128::MAX - i,
                2 => i * 1_000_003,
                _ => (i * i * 7_919) % 100_000,
            })
            .collect();
        let ctx = |i: usize| {
            if i.is_multiple_of(3) {
                None
            } else {
                Some((i % 40) as i32)
            }
        };
        // The context function must be the same on both sides; `None` vs
        // `Some` must not change between calls for the same index.
        let mut high = Vec::new();
        let mut low = BitWriter::new();
        put_column(&values, ctx, &mut high, &mut low);
        let low = low.finish();
        let mut hr = varint::Reader::new(&high);
        let mut lr = BitReader::new(&low);
        let back = get_column(values.len(), ctx, &mut hr, &mut lr).expect("decodes");
        assert_eq!(back, values);
        assert_eq!(hr.remaining(), 0);
        assert!(lr.finished_cleanly());
    }

    #[test]
    fn low_bits_follow_the_magnitude() {
        let mut s = Scale::new();
        assert_eq!(s.low_bits(None), 0);
        s.update(1 << 20, None); // a 21-bit value: the first one sets the level
        assert_eq!(s.low_bits(None), 21 - HEADROOM as u32);
        for _ in 0..100 {
            s.update(1 << 10, None); // then 11-bit values, learned gradually
        }
        assert_eq!(s.low_bits(None), 11 - HEADROOM as u32);
        s.update(u128::MAX, None);
        assert_eq!(
            s.low_bits(None),
            25 - HEADROOM as u32,
            "one outlier moves it 1/8 of the way"
        );

        let mut s = Scale::new();
        for _ in 0..100 {
            s.update(1 << 20, Some(10));
        }
        assert_eq!(s.low_bits(Some(10)), 21 - HEADROOM as u32);
        // The learned excess (11 bits) carries over to other contexts.
        assert_eq!(s.low_bits(Some(0)), 11 - HEADROOM as u32);
        assert_eq!(s.low_bits(Some(-20)), 0);
        assert_eq!(s.low_bits(Some(200)), 127, "capped");
    }
}
