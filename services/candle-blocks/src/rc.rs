//! A binary range coder with adaptive bit probabilities (the LZMA design:
//! 32-bit range, carry propagation through a cached byte, 12-bit
//! probabilities when coding). Integer-only, so encoder and decoder agree
//! on every platform.
//!
//! The stream is LZMA's without its first byte (always 0): the decoder starts
//! by reading 4 bytes into `code`, and a stream the encoder wrote ends exactly
//! where the decoder's last read does.

/// Probabilities are kept in 16 bits; the coder uses the top 12.
const PROB_BITS: u32 = 16;
/// Adaptation stops speeding up after this many updates: the rate is
/// 1/(n + 2) for the n-th update (a Krichevsky–Trofimov estimate while it
/// learns), then stays at 1/(LIMIT + 2).
const LIMIT: usize = 126;
/// `RATE[n]` = ⌊2¹⁶ / (n + 2)⌋.
const RATE: [u32; LIMIT + 1] = {
    let mut t = [0u32; LIMIT + 1];
    let mut n = 0;
    while n <= LIMIT {
        t[n] = (1 << 16) / (n as u32 + 2);
        n += 1;
    }
    t
};
const TOP: u32 = 1 << 24;

/// An adaptive probability that the next bit is 0, in 1/2¹⁶.
#[derive(Clone, Copy, Debug)]
pub struct Bit {
    p0: u16,
    seen: u16,
}

impl Bit {
    pub const NEW: Bit = Bit {
        p0: 1 << (PROB_BITS - 1),
        seen: 0,
    };

    /// The probability of 0 as the coder uses it, for size accounting.
    pub fn p0_f64(self) -> f64 {
        f64::from(self.p12()) / 4096.0
    }

    /// The probability of 0 in 1/2¹², within 1..=4095.
    #[inline]
    fn p12(self) -> u32 {
        (u32::from(self.p0) >> 4).max(1)
    }

    /// Moves the probability towards the bit just coded. `p0` stays within
    /// 1..=65535: each step covers at most half the distance to 0 or 2¹⁶.
    #[inline]
    fn update(&mut self, bit: bool) {
        let rate = RATE[usize::from(self.seen)];
        let p = u32::from(self.p0);
        let p = if bit {
            p - ((p * rate) >> 16)
        } else {
            p + ((((1 << 16) - p) * rate) >> 16)
        };
        self.p0 = p as u16;
        if usize::from(self.seen) < LIMIT {
            self.seen += 1;
        }
    }
}

pub struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    first: bool,
    out: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            first: true,
            out: Vec::new(),
        }
    }

    #[inline]
    pub fn encode(&mut self, model: &mut Bit, bit: bool) {
        let bound = (self.range >> 12) * model.p12();
        if bit {
            self.low += u64::from(bound);
            self.range -= bound;
        } else {
            self.range = bound;
        }
        model.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// Codes the low `n` bits of `v` (n ≤ 32), most significant first, each
    /// with probability 1/2.
    pub fn encode_direct(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            self.range >>= 1;
            if (v >> i) & 1 == 1 {
                self.low += u64::from(self.range);
            }
            while self.range < TOP {
                self.range <<= 8;
                self.shift_low();
            }
        }
    }

    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low > u64::from(u32::MAX) {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            loop {
                self.emit(byte.wrapping_add(carry));
                byte = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn emit(&mut self, byte: u8) {
        if self.first {
            debug_assert_eq!(byte, 0, "the first byte never takes a carry");
            self.first = false;
        } else {
            self.out.push(byte);
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

pub struct Decoder<'a> {
    code: u32,
    range: u32,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let mut d = Decoder {
            code: 0,
            range: u32::MAX,
            bytes,
            pos: 0,
        };
        for _ in 0..4 {
            d.code = (d.code << 8) | u32::from(d.next_byte());
        }
        d
    }

    /// The next byte; past the end, 0, and `pos` keeps counting so the
    /// overrun is detected.
    #[inline]
    fn next_byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    #[inline]
    pub fn decode(&mut self, model: &mut Bit) -> bool {
        let bound = (self.range >> 12) * model.p12();
        let bit = self.code >= bound;
        if bit {
            self.code -= bound;
            self.range -= bound;
        } else {
            self.range = bound;
        }
        model.update(bit);
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next_byte());
        }
        bit
    }

    pub fn decode_direct(&mut self, n: u32) -> u32 {
        let mut v = 0;
        for _ in 0..n {
            self.range >>= 1;
            let bit = self.code >= self.range;
            if bit {
                self.code -= self.range;
            }
            v = (v << 1) | u32::from(bit);
            while self.range < TOP {
                self.range <<= 8;
                self.code = (self.code << 8) | u32::from(self.next_byte());
            }
        }
        v
    }

    /// True once the decoder has read past the end: the input is not a
    /// stream the encoder wrote.
    #[inline]
    pub fn overrun(&self) -> bool {
        self.pos > self.bytes.len()
    }

    /// True if the decoder read the stream to its last byte and no further.
    pub fn finished_cleanly(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_bits(n: usize) -> Vec<(usize, bool)> {
        let mut x = 0x1234_5678_9ABC_DEF1u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let ctx = i % 4;
                // Context 0 is mostly 0, 1 mostly 1, 2 fair, 3 always 0.
                let bit = match ctx {
                    0 => x.is_multiple_of(10),
                    1 => !x.is_multiple_of(10),
                    2 => x & 1 == 1,
                    _ => false,
                };
                (ctx, bit)
            })
            .collect()
    }

    #[test]
    fn round_trip_and_compression() {
        let bits = sample_bits(100_000);
        let mut models = [Bit::NEW; 4];
        let mut e = Encoder::new();
        for &(ctx, bit) in &bits {
            e.encode(&mut models[ctx], bit);
        }
        e.encode_direct(0xABCD, 16);
        let bytes = e.finish();
        // Entropy: 2 × 0.469 + 1 + 0 ≈ 1.94 bits per 4 bits.
        assert!(bytes.len() < 100_000 / 4 * 2 / 8 + 200, "{}", bytes.len());
        let mut models = [Bit::NEW; 4];
        let mut d = Decoder::new(&bytes);
        for &(ctx, bit) in &bits {
            assert_eq!(d.decode(&mut models[ctx]), bit);
        }
        assert_eq!(d.decode_direct(16), 0xABCD);
        assert!(d.finished_cleanly());
    }

    #[test]
    fn extreme_probabilities_and_carries() {
        // Long runs of the likely bit push p to its limits; unlikely bits
        // then force carries through runs of 0xFF.
        for pattern in 0..4u32 {
            let bits: Vec<bool> = (0..20_000u32)
                .map(|i| match pattern {
                    0 => i % 1_000 == 999,
                    1 => i % 1_000 != 999,
                    2 => true,
                    _ => i.wrapping_mul(2_654_435_761) >> 31 == 1,
                })
                .collect();
            let mut m = Bit::NEW;
            let mut e = Encoder::new();
            for &b in &bits {
                e.encode(&mut m, b);
            }
            let bytes = e.finish();
            let mut m = Bit::NEW;
            let mut d = Decoder::new(&bytes);
            for &b in &bits {
                assert_eq!(d.decode(&mut m), b, "pattern {pattern}");
            }
            assert!(d.finished_cleanly(), "pattern {pattern}");
        }
    }

    #[test]
    fn empty_stream() {
        let bytes = Encoder::new().finish();
        let d = Decoder::new(&bytes);
        assert!(d.finished_cleanly(), "{bytes:?}");
    }

    #[test]
    fn probabilities_stay_in_range() {
        let mut m = Bit::NEW;
        for _ in 0..1_000 {
            m.update(false);
        }
        assert!(m.p0 < u16::MAX && m.p12() <= 4095);
        for _ in 0..1_000 {
            m.update(true);
        }
        assert!(m.p0 >= 1 && m.p12() >= 1);
    }
}
