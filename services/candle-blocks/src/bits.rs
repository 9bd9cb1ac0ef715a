//! Bit-packing of the raw low bits of column values: least significant bit
//! first, each value's bits in order, the last byte padded with zeros.

pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl BitWriter {
    pub fn new() -> Self {
        BitWriter {
            out: Vec::new(),
            acc: 0,
            filled: 0,
        }
    }

    /// Appends the low `bits` bits of `v` (`bits` ≤ 128).
    pub fn put(&mut self, mut v: u128, mut bits: u32) {
        while bits > 0 {
            let take = bits.min(32);
            let chunk = (v as u64) & ((1u64 << take) - 1);
            self.acc |= chunk << self.filled;
            self.filled += take;
            while self.filled >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.filled -= 8;
            }
            v = v.checked_shr(take).unwrap_or(0);
            bits -= take;
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

pub struct BitReader<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, bit: 0 }
    }

    /// Reads `bits` bits (≤ 128). `None` if the input is too short.
    pub fn get(&mut self, bits: u32) -> Option<u128> {
        let end = self.bit.checked_add(bits as usize)?;
        if end > self.bytes.len().checked_mul(8)? {
            return None;
        }
        let mut v: u128 = 0;
        let mut done = 0u32;
        while done < bits {
            let take = (bits - done).min(56);
            v |= u128::from(self.peek(take)) << done;
            self.bit += take as usize;
            done += take;
        }
        Some(v)
    }

    /// The next `n` ≤ 56 bits, which the caller has checked are present.
    fn peek(&self, n: u32) -> u64 {
        let start = self.bit / 8;
        let word = match self.bytes.get(start..start + 8) {
            Some(eight) => u64::from_le_bytes(eight.try_into().unwrap_or_default()),
            None => {
                let mut word = [0u8; 8];
                let avail = &self.bytes[start..self.bytes.len().min(start + 8)];
                word[..avail.len()].copy_from_slice(avail);
                u64::from_le_bytes(word)
            }
        };
        (word >> (self.bit % 8)) & ((1u64 << n) - 1)
    }

    /// True if every byte was used and the padding bits are zero.
    pub fn finished_cleanly(&self) -> bool {
        let used_bytes = self.bit.div_ceil(8);
        if used_bytes != self.bytes.len() {
            return false;
        }
        let offset = self.bit % 8;
        offset == 0 || self.bytes[used_bytes - 1] >> offset == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_various_widths() {
        let items: Vec<(u128, u32)> = (0..300u32)
            .map(|i| {
                let bits = (i * 37) % 129;
                let v = (u128::MAX >> (128 - bits.max(1))) ^ u128::from(i);
                (
                    if bits == 0 {
                        0
                    } else {
                        v & (u128::MAX >> (128 - bits))
                    },
                    bits,
                )
            })
            .collect();
        let mut w = BitWriter::new();
        for &(v, b) in &items {
            w.put(v, b);
        }
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        for &(v, b) in &items {
            assert_eq!(r.get(b), Some(v), "{b} bits");
        }
        assert!(r.finished_cleanly());
        assert_eq!(r.get(8), None);
    }

    #[test]
    fn detects_leftovers() {
        let mut w = BitWriter::new();
        w.put(0b101, 3);
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        assert!(!r.finished_cleanly());
        assert_eq!(r.get(3), Some(0b101));
        assert!(r.finished_cleanly());
        let dirty = [0b1000_0101u8];
        let mut r = BitReader::new(&dirty);
        r.get(3);
        assert!(!r.finished_cleanly(), "non-zero padding");
    }
}
