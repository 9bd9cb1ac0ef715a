//! Size measurement: candles split into one block per UTC day, encoded,
//! decoded and compared, with the JSON size of the same candles for
//! comparison. Used by the size test (30 days) and by benchmarks (a year).

use std::fmt;

use crate::{Block, BlockCandle, BlockError, decode, encode};

const DAY_NS: i64 = 86_400_000_000_000;

/// Sizes of a set of candles stored as daily blocks, in whole bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeReport {
    pub candles: usize,
    pub blocks: usize,
    /// Sum of the encoded block sizes.
    pub bytes: usize,
    /// Sum of [`json_len`] over the candles (one JSON document each).
    pub json_bytes: usize,
}

impl SizeReport {
    /// Encoded bytes per candle, in thousandths of a byte (11_616 = 11.616 B).
    pub fn milli_bytes_per_candle(&self) -> usize {
        (self.bytes * 1_000).checked_div(self.candles).unwrap_or(0)
    }

    /// JSON bytes per candle, in thousandths of a byte.
    pub fn milli_json_bytes_per_candle(&self) -> usize {
        (self.json_bytes * 1_000)
            .checked_div(self.candles)
            .unwrap_or(0)
    }
}

impl fmt::Display for SizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (b, j) = (
            self.milli_bytes_per_candle(),
            self.milli_json_bytes_per_candle(),
        );
        write!(
            f,
            "{} candles in {} daily blocks: {} bytes, {}.{:03} bytes/candle (JSON: {}.{:03} bytes/candle, {}x larger)",
            self.candles,
            self.blocks,
            self.bytes,
            b / 1_000,
            b % 1_000,
            j / 1_000,
            j % 1_000,
            self.json_bytes.checked_div(self.bytes).unwrap_or(0),
        )
    }
}

/// Splits sorted candles into one block per UTC day (by `open_ns`).
pub fn daily_blocks(candles: &[BlockCandle], price_scale: u32, quantity_scale: u32) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for c in candles {
        let day = c.open_ns.div_euclid(DAY_NS);
        match blocks.last_mut() {
            Some(b) if b.candles[0].open_ns.div_euclid(DAY_NS) == day => b.candles.push(c.clone()),
            _ => blocks.push(Block {
                price_scale,
                quantity_scale,
                candles: vec![c.clone()],
            }),
        }
    }
    blocks
}

/// Encodes `candles` as daily blocks, checks that each decodes to exactly
/// what went in, and reports the sizes.
pub fn measure_daily(
    candles: &[BlockCandle],
    price_scale: u32,
    quantity_scale: u32,
) -> Result<SizeReport, BlockError> {
    let blocks = daily_blocks(candles, price_scale, quantity_scale);
    let mut bytes = 0;
    for block in &blocks {
        let encoded = encode(block)?;
        if decode(&encoded)? != *block {
            return Err(BlockError::Malformed("round trip changed the block".into()));
        }
        bytes += encoded.len();
    }
    Ok(SizeReport {
        candles: candles.len(),
        blocks: blocks.len(),
        bytes,
        json_bytes: candles
            .iter()
            .map(|c| json_len(c, price_scale, quantity_scale))
            .sum(),
    })
}

/// Bytes per candle spent on each field when `candles` are stored as daily
/// blocks, by the coder's own probabilities (for tuning the format): pairs
/// of field name and bytes per candle. Headers and CRCs are not included.
pub fn field_breakdown(
    candles: &[BlockCandle],
    price_scale: u32,
    quantity_scale: u32,
) -> Vec<(&'static str, f64)> {
    let mut bits = vec![0.0; crate::v2::FIELDS.len()];
    for block in daily_blocks(candles, price_scale, quantity_scale) {
        let params = crate::params::Params::of(&block.candles);
        for (total, cost) in bits
            .iter_mut()
            .zip(crate::v2::field_costs(&block.candles, &params))
        {
            *total += cost;
        }
    }
    let n = candles.len().max(1) as f64;
    crate::v2::FIELDS
        .iter()
        .zip(bits)
        .map(|(&name, b)| (name, b / 8.0 / n))
        .collect()
}

/// Length of the candle as a compact JSON document of the kind this format
/// replaces (decimal strings for scaled numbers, as exchanges publish them).
pub fn json_len(c: &BlockCandle, price_scale: u32, quantity_scale: u32) -> usize {
    let p = |v: i64| decimal(i128::from(v), price_scale);
    format!(
        r#"{{"symbol":"BTCUSDT","interval":"1m","open_time":{},"close_time":{},"open":"{}","high":"{}","low":"{}","close":"{}","volume":"{}","quote_volume":"{}","trade_count":{},"revision":{}}}"#,
        c.open_ns,
        c.close_ns,
        p(c.open),
        p(c.high),
        p(c.low),
        p(c.close),
        decimal(c.volume, quantity_scale),
        decimal(c.quote_volume, price_scale + quantity_scale),
        c.trade_count,
        c.revision,
    )
    .len()
}

/// `v / 10^scale` as a decimal string, with integer arithmetic only.
fn decimal(v: i128, scale: u32) -> String {
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if v < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimals() {
        assert_eq!(decimal(6_700_012, 2), "67000.12");
        assert_eq!(decimal(5, 5), "0.00005");
        assert_eq!(decimal(-5, 2), "-0.05");
        assert_eq!(decimal(42, 0), "42");
        assert_eq!(decimal(i128::MIN, 3).len(), 41);
    }
}
