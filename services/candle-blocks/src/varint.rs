//! LEB128 varints (7 bits per byte, low groups first, high bit = "more
//! follows") and zigzag mapping of signed integers onto unsigned ones
//! (0, -1, 1, -2, … → 0, 1, 2, 3, …).

/// Appends `v` as a LEB128 varint (1 to 19 bytes).
pub fn put(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over bytes holding varints. Every read is bounds-checked.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Reads one varint. `None` if the input ends inside it, if it does not
    /// fit in 128 bits, or if it is not in its shortest form.
    pub fn get(&mut self) -> Option<u128> {
        let mut v: u128 = 0;
        let mut shift = 0u32;
        loop {
            let b = *self.bytes.get(self.pos)?;
            self.pos += 1;
            let group = u128::from(b & 0x7F);
            if shift == 126 && group > 0b11 {
                return None; // would overflow 128 bits
            }
            v |= group << shift;
            if b & 0x80 == 0 {
                // A last byte of 0 after other bytes is an over-long encoding.
                return if b == 0 && shift > 0 { None } else { Some(v) };
            }
            shift += 7;
            if shift > 126 {
                return None;
            }
        }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
}

pub fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag64(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[cfg(test)]
pub fn zigzag128(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

pub fn unzigzag128(u: u128) -> i128 {
    ((u >> 1) as i128) ^ -((u & 1) as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        let values = [
            0,
            1,
            127,
            128,
            300,
            u64::MAX as u128,
            u128::MAX - 1,
            u128::MAX,
            1 << 126,
            3 << 126,
        ];
        let mut buf = Vec::new();
        for &v in &values {
            put(&mut buf, v);
        }
        let mut r = Reader::new(&buf);
        for &v in &values {
            assert_eq!(r.get(), Some(v));
        }
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.get(), None);
    }

    #[test]
    fn rejects_bad_varints() {
        assert_eq!(Reader::new(&[0x80]).get(), None, "ends inside");
        assert_eq!(Reader::new(&[0x80, 0x00]).get(), None, "over-long");
        let mut too_big = vec![0xFF; 18];
        too_big.push(0x04);
        assert_eq!(Reader::new(&too_big).get(), None, "129 bits");
        let mut max = vec![0xFF; 18];
        max.push(0x03);
        assert_eq!(Reader::new(&max).get(), Some(u128::MAX));
        let mut too_long = vec![0x80; 19];
        too_long.push(0x01);
        assert_eq!(Reader::new(&too_long).get(), None, "20 bytes");
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0, 1, -1, 2, -2, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag64(zigzag64(v)), v);
        }
        assert_eq!(zigzag64(-1), 1);
        assert_eq!(zigzag64(1), 2);
        for v in [0, 1, -1, i128::MAX, i128::MIN] {
            assert_eq!(unzigzag128(zigzag128(v)), v);
        }
    }
}
