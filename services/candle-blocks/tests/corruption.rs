//! Decoding damaged or hostile input never panics and never silently returns
//! a different block.

use tickmesh_candle_blocks::{
    Block, BlockError, FORMAT_VERSION, MAX_CANDLES, decode, encode, synthetic,
};

const JAN_2024: i64 = 1_704_067_200_000_000_000;

fn sample() -> (Block, Vec<u8>) {
    sample_of(300)
}

fn sample_of(n: usize) -> (Block, Vec<u8>) {
    let mut candles = synthetic::days_of_minutes(3, JAN_2024, 1);
    candles.truncate(n);
    let block = Block {
        price_scale: 2,
        quantity_scale: 5,
        candles,
    };
    let bytes = encode(&block).expect("encodes");
    (block, bytes)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length of the varint starting at `bytes[0]`.
fn varint_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("varint ends")
        + 1
}

/// Wraps an arbitrary body as a block with a correct length and CRC, so the
/// parser behind the checksum gets exercised.
fn seal(body: &[u8]) -> Vec<u8> {
    seal_as(FORMAT_VERSION, body)
}

fn seal_as(version: u8, body: &[u8]) -> Vec<u8> {
    let mut total = 1 + 1 + body.len() + 4;
    loop {
        let mut len = Vec::new();
        put_varint(&mut len, total as u128);
        let t = 1 + len.len() + body.len() + 4;
        if t == total {
            let mut out = vec![version];
            out.extend_from_slice(&len);
            out.extend_from_slice(body);
            let crc = crc32(&out);
            out.extend_from_slice(&crc.to_le_bytes());
            return out;
        }
        total = t;
    }
}

/// The body (between the length field and the CRC) of an encoded block.
fn body(bytes: &[u8]) -> &[u8] {
    &bytes[1 + varint_len(&bytes[1..])..bytes.len() - 4]
}

/// Bitwise CRC-32, independent of the crate's table-driven one.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn every_truncation_is_reported() {
    let (_, bytes) = sample();
    for len in 0..bytes.len() {
        assert_eq!(
            decode(&bytes[..len]),
            Err(BlockError::Truncated),
            "prefix of {len} bytes"
        );
    }
    let empty = encode(&Block {
        price_scale: 2,
        quantity_scale: 5,
        candles: vec![],
    })
    .unwrap();
    for len in 0..empty.len() {
        assert_eq!(decode(&empty[..len]), Err(BlockError::Truncated));
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let (_, mut bytes) = sample();
    bytes.push(0);
    assert!(matches!(decode(&bytes), Err(BlockError::Malformed(_))));
}

#[test]
fn every_single_byte_flip_is_detected() {
    let (block, bytes) = sample();
    let mut rng = Rng(99);
    let header = 1 + varint_len(&bytes[1..]);
    for pos in 0..bytes.len() {
        for _ in 0..3 {
            let mut bad = bytes.clone();
            bad[pos] ^= 1 + rng.below(255) as u8;
            let got = decode(&bad);
            assert!(got.is_err(), "flip at {pos} decoded to a block");
            if pos == 0 {
                // Another known version fails its checksum (the CRC covers the version).
                assert!(
                    matches!(
                        got,
                        Err(BlockError::UnknownVersion(_) | BlockError::BadChecksum)
                    ),
                    "{got:?}"
                );
            } else if pos >= header {
                assert_eq!(got, Err(BlockError::BadChecksum), "flip at {pos}");
            }
        }
    }
    assert_eq!(decode(&bytes), Ok(block));
}

#[test]
fn random_damage_never_yields_another_block() {
    let (block, bytes) = sample();
    let mut rng = Rng(7);
    for _ in 0..3_000 {
        let mut bad = bytes.clone();
        for _ in 0..1 + rng.below(8) {
            let pos = rng.below(bad.len());
            bad[pos] = rng.next() as u8;
        }
        if let Ok(b) = decode(&bad) {
            assert_eq!(b, block, "damage produced a different block");
        }
    }
    for len in 0..200 {
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = decode(&garbage);
        let mut versioned = garbage.clone();
        versioned.insert(0, FORMAT_VERSION);
        let _ = decode(&versioned);
    }
}

#[test]
fn resealed_damage_never_panics() {
    // Damage behind a valid checksum reaches the column parser itself.
    let (block, bytes) = sample_of(60);
    let original = body(&bytes).to_vec();
    assert_eq!(
        decode(&seal(&original)),
        Ok(block.clone()),
        "seal matches encode"
    );
    let mut rng = Rng(12_345);
    let mut rejected = 0;
    for round in 0..4_000 {
        let mut b = original.clone();
        match round % 4 {
            0 => {
                let pos = rng.below(b.len());
                b[pos] ^= 1 << rng.below(8);
            }
            1 => {
                for _ in 0..1 + rng.below(10) {
                    let pos = rng.below(b.len());
                    b[pos] = rng.next() as u8;
                }
            }
            2 => b.truncate(rng.below(b.len())),
            _ => {
                let pos = rng.below(b.len());
                b.insert(pos, rng.next() as u8);
            }
        }
        match decode(&seal(&b)) {
            Ok(decoded) => assert!(
                encode(&decoded).is_ok(),
                "a decoded block always re-encodes"
            ),
            Err(BlockError::Malformed(_)) => rejected += 1,
            Err(e) => panic!("behind a valid CRC only Malformed is possible, got {e:?}"),
        }
    }
    assert!(
        rejected > 3_000,
        "{rejected} of 4000 damaged bodies rejected"
    );
}

#[test]
fn hostile_headers_are_rejected_cheaply() {
    // Huge counts with next to no data: refused without allocating for them.
    for count in [
        u128::from(u64::MAX),
        MAX_CANDLES as u128 + 1,
        MAX_CANDLES as u128,
        1 << 20,
    ] {
        let mut b = Vec::new();
        for v in [2, 5, count, 0, 60_000_000_000, 0, 0] {
            put_varint(&mut b, v);
        }
        assert!(
            matches!(decode(&seal(&b)), Err(BlockError::Malformed(_))),
            "count {count}"
        );
    }
    // The same in version 1, whose frames are zstd.
    for count in [u128::from(u64::MAX), MAX_CANDLES as u128, 1 << 20] {
        let mut b = Vec::new();
        for v in [2, 5, count, 0, 60_000_000_000, 0, 0] {
            put_varint(&mut b, v);
        }
        assert!(
            matches!(decode(&seal_as(1, &b)), Err(BlockError::Malformed(_))),
            "count {count}"
        );
    }
    // A version-1 frame that inflates far beyond what one candle can need.
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
    let mut b = Vec::new();
    for v in [2, 5, 1, 0, 60_000_000_000, 0, bomb.len() as u128] {
        put_varint(&mut b, v);
    }
    b.extend_from_slice(&bomb);
    assert!(matches!(
        decode(&seal_as(1, &b)),
        Err(BlockError::Malformed(_))
    ));
    // A version-2 stream of zeros claiming many candles runs dry early.
    let mut b = Vec::new();
    for v in [2, 5, MAX_CANDLES as u128, 0, 60_000_000_000, 0, 64] {
        put_varint(&mut b, v);
    }
    b.extend_from_slice(&[0u8; 64]);
    let start = std::time::Instant::now();
    assert!(matches!(decode(&seal(&b)), Err(BlockError::Malformed(_))));
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    // Scales beyond u32, a frame length beyond the block, an empty block with leftovers.
    let cases: [&[u128]; 3] = [
        &[u128::from(u32::MAX) + 1, 5, 0],
        &[2, 5, 1, 0, 0, 0, 1_000],
        &[2, 5, 0, 7],
    ];
    for fields in cases {
        let mut b = Vec::new();
        for &v in fields {
            put_varint(&mut b, v);
        }
        assert!(
            matches!(decode(&seal(&b)), Err(BlockError::Malformed(_))),
            "{fields:?}"
        );
    }
    // Unknown versions are named.
    let (_, mut bytes) = sample();
    bytes[0] = 3;
    assert_eq!(decode(&bytes), Err(BlockError::UnknownVersion(3)));
    assert_eq!(decode(&[0]), Err(BlockError::UnknownVersion(0)));
}

#[test]
fn errors_display() {
    for e in [
        BlockError::Truncated,
        BlockError::BadChecksum,
        BlockError::UnknownVersion(9),
        BlockError::Malformed("x".into()),
        BlockError::NotSorted,
    ] {
        let text = e.to_string();
        assert!(!text.is_empty());
        let _: &dyn std::error::Error = &e;
    }
}
