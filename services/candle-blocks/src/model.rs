//! Coding one number with adaptive probabilities (format version 2).
//!
//! A value is coded as its bit length `n` relative to an expected log2 `e`
//! (given by the caller, in 1/16 bits), the top [`MODELED_MANTISSA`] bits
//! below its leading 1 with adaptive probabilities, and the remaining low
//! bits raw. Signed values add an adaptive sign. The same code path serves
//! the encoder and the decoder through [`Coder`], so they cannot disagree.

use crate::bits::{BitReader, BitWriter};
use crate::rc::{self, Bit};

/// Slots above the expected bit length before an escape.
const UP: usize = 8;
/// Slots below the expected bit length before an escape.
const DOWN: usize = 20;
/// Mantissa bits (below the leading 1) coded with adaptive probabilities.
const MODELED_MANTISSA: u32 = 1;
/// Mantissa contexts per table: slot offsets −3..=3.
const MANTISSA_OFFSETS: usize = 7;

/// Number of significant bits of `v` (0 for 0).
#[inline]
pub fn bit_len(v: u128) -> i32 {
    (128 - v.leading_zeros()) as i32
}

/// `LOG2_16[i]` = round(16 × log2(1 + i/16)).
const LOG2_16: [i32; 16] = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15];

/// log2(v) in 1/16 bits from the leading 5 bits (0 for 0 and 1).
#[inline]
pub fn lg(v: u128) -> i32 {
    let n = bit_len(v);
    if n <= 1 {
        return 0;
    }
    let top4 = if n >= 5 { v >> (n - 5) } else { v << (5 - n) } as usize & 15;
    16 * (n - 1) + LOG2_16[top4]
}

/// Both directions of coding. The encoder codes the bits it is given and
/// returns them; the decoder ignores them and returns what it reads.
pub trait Coder {
    fn bit(&mut self, model: &mut Bit, bit: bool) -> bool;
    /// The low `n` bits of `v` (n ≤ 128), stored raw.
    fn raw(&mut self, v: u128, n: u32) -> u128;
    /// The low `n` ≤ 32 bits of `v`, each with probability 1/2 in the range coder.
    fn direct(&mut self, v: u32, n: u32) -> u32;
    /// False once the input is known to be bad (decoder only).
    fn ok(&self) -> bool;
    /// Names the field being coded, for size accounting (encoder only).
    #[inline]
    fn field(&mut self, _field: usize) {}
}

pub struct Writer {
    pub rc: rc::Encoder,
    pub raw: BitWriter,
    /// Bits spent per field, when accounting (see [`crate::measure`]).
    pub costs: Option<Vec<f64>>,
    pub field: usize,
}

impl Writer {
    pub fn new(accounting: bool) -> Self {
        Writer {
            rc: rc::Encoder::new(),
            raw: BitWriter::new(),
            costs: accounting.then(|| vec![0.0; 16]),
            field: 0,
        }
    }
}

impl Coder for Writer {
    #[inline]
    fn bit(&mut self, model: &mut Bit, bit: bool) -> bool {
        if let Some(costs) = &mut self.costs {
            let p0 = model.p0_f64();
            costs[self.field] -= if bit { 1.0 - p0 } else { p0 }.log2();
        }
        self.rc.encode(model, bit);
        bit
    }

    #[inline]
    fn raw(&mut self, v: u128, n: u32) -> u128 {
        if let Some(costs) = &mut self.costs {
            costs[self.field] += f64::from(n);
        }
        self.raw.put(v, n);
        v & mask(n)
    }

    #[inline]
    fn field(&mut self, field: usize) {
        self.field = field;
    }

    fn direct(&mut self, v: u32, n: u32) -> u32 {
        self.rc.encode_direct(v, n);
        v & (((1u64 << n) - 1) as u32)
    }

    fn ok(&self) -> bool {
        true
    }
}

pub struct Reader<'a> {
    pub rc: rc::Decoder<'a>,
    pub raw: BitReader<'a>,
    pub failed: bool,
}

impl Coder for Reader<'_> {
    #[inline]
    fn bit(&mut self, model: &mut Bit, _: bool) -> bool {
        self.rc.decode(model)
    }

    #[inline]
    fn raw(&mut self, _: u128, n: u32) -> u128 {
        match self.raw.get(n) {
            Some(v) => v,
            None => {
                self.failed = true;
                0
            }
        }
    }

    fn direct(&mut self, _: u32, n: u32) -> u32 {
        self.rc.decode_direct(n)
    }

    #[inline]
    fn ok(&self) -> bool {
        !self.failed && !self.rc.overrun()
    }
}

#[inline]
fn mask(n: u32) -> u128 {
    if n >= 128 { u128::MAX } else { (1 << n) - 1 }
}

/// Adaptive tables for one kind of number. `CLASSES` context classes (chosen
/// by the caller) times 4 quarter-bit positions of the expected log2.
pub struct NumModel<const CLASSES: usize> {
    zero: [Bit; CLASSES],
    sign: [Bit; CLASSES],
    mantissa: [[[Bit; 3]; MANTISSA_OFFSETS]; 4],
    escape: [Bit; 256],
    class_slots: [[[Bit; 1 + UP + DOWN]; 4]; CLASSES],
}

impl<const CLASSES: usize> NumModel<CLASSES> {
    pub fn new() -> Self {
        NumModel {
            zero: [Bit::NEW; CLASSES],
            sign: [Bit::NEW; CLASSES],
            mantissa: [[[Bit::NEW; 3]; MANTISSA_OFFSETS]; 4],
            escape: [Bit::NEW; 256],
            class_slots: [[[Bit::NEW; 1 + UP + DOWN]; 4]; CLASSES],
        }
    }

    /// Codes "is `v` zero" (class `class`); the caller then codes non-zero
    /// values with [`Self::magnitude`].
    #[inline]
    pub fn is_zero<C: Coder>(&mut self, c: &mut C, class: usize, zero: bool) -> bool {
        c.bit(&mut self.zero[class], zero)
    }

    /// Codes the sign of a non-zero value (true = negative).
    #[inline]
    pub fn sign<C: Coder>(&mut self, c: &mut C, class: usize, negative: bool) -> bool {
        c.bit(&mut self.sign[class], negative)
    }

    /// Codes `v` given its expected log2 `e` (1/16 bits) and a context class.
    /// Returns the value (what the decoder read). `None` for a bit length
    /// over 128.
    pub fn magnitude<C: Coder>(
        &mut self,
        c: &mut C,
        class: usize,
        e: i32,
        v: u128,
    ) -> Option<u128> {
        let e = e.clamp(0, 128 * 16);
        let center = e >> 4;
        let quarter = ((e >> 2) & 3) as usize;
        let n = bit_len(v);
        let d = n - center;
        let slots = &mut self.class_slots[class][quarter];
        let mut got: Option<i32> = None;
        if c.bit(&mut slots[0], d >= 0) {
            for k in 0..UP {
                if c.bit(&mut slots[1 + k], d == k as i32) {
                    got = Some(k as i32);
                    break;
                }
            }
        } else {
            for k in 0..DOWN {
                if c.bit(&mut slots[1 + UP + k], d == -1 - k as i32) {
                    got = Some(-1 - k as i32);
                    break;
                }
            }
        }
        let n = match got {
            Some(d) => center + d,
            None => {
                // Escape: the bit length itself, 8 bits through a binary tree.
                let mut node = 1usize;
                for i in (0..8).rev() {
                    let b = c.bit(&mut self.escape[node], (n >> i) & 1 == 1);
                    node = (node << 1) | usize::from(b);
                }
                node as i32 - 256
            }
        };
        if !(0..=128).contains(&n) {
            return None;
        }
        if n <= 1 {
            return Some(n as u128);
        }
        let below = (n - 1) as u32;
        let modeled = below.min(MODELED_MANTISSA);
        let offset = (n - center).clamp(-3, 3) + 3;
        let tree = &mut self.mantissa[quarter][offset as usize];
        let mut node = 1usize;
        let mut top = 1u128;
        for i in 0..modeled {
            let b = c.bit(&mut tree[node - 1], (v >> (below - 1 - i)) & 1 == 1);
            node = (node << 1) | usize::from(b);
            top = (top << 1) | u128::from(b);
        }
        let rest = below - modeled;
        let low = c.raw(v, rest);
        Some((top << rest) | low)
    }
}

/// A moving average of log2 values (1/16 bits), learning fast at first.
#[derive(Clone, Copy)]
pub struct Avg {
    pub value: i32,
    seen: u32,
    shift: u32,
}

impl Avg {
    pub const fn new(shift: u32) -> Self {
        Avg {
            value: 0,
            seen: 0,
            shift,
        }
    }

    #[inline]
    pub fn update(&mut self, x: i32) {
        self.value += (x - self.value) >> self.shift.min(self.seen);
        if self.seen < self.shift {
            self.seen += 1;
        }
    }
}
