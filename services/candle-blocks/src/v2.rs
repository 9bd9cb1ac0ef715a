//! Format version 2: every candle coded field after field with an adaptive
//! binary range coder (see the crate docs for the exact model).

use crate::BlockCandle;
use crate::bits::BitReader;
use crate::model::{Avg, Coder, NumModel, Reader, Writer, lg};
use crate::params::{Params, gap_code, gap_from_code, predicted_trades};
use crate::rc;
use crate::varint::{unzigzag64, zigzag64};

/// Coded after the last candle; a decoder that went astray rarely reads it back.
const END_MARK: u32 = 0xC0DE;

/// The adaptive state shared by encoder and decoder.
struct Model {
    gap: NumModel<2>,
    duration: NumModel<1>,
    revision: NumModel<1>,
    open: NumModel<2>,
    range: NumModel<1>,
    body: NumModel<1>,
    high: NumModel<2>,
    volume: NumModel<3>,
    quote: NumModel<1>,
    trades: NumModel<1>,
    gap_avg: Avg,
    duration_avg: Avg,
    revision_avg: Avg,
    open_avg: [Avg; 2],
    /// log2 of the range (high − low): the volatility.
    range_avg: Avg,
    /// log2 |close − open| − log2 range.
    body_bias: Avg,
    /// log2 (high − max(open, close)) − log2 (range − |close − open|).
    high_bias: Avg,
    volume_avg: Avg,
    /// log2 |quote residual| − log2 volume − log2 range.
    quote_bias: Avg,
    /// log2 |trade residual| − log2 predicted trades.
    trades_bias: Avg,
    prev_close_ns: i64,
    prev_close: i64,
    prev_gap_zero: bool,
}

impl Model {
    fn new(p: &Params) -> Box<Model> {
        Box::new(Model {
            gap: NumModel::new(),
            duration: NumModel::new(),
            revision: NumModel::new(),
            open: NumModel::new(),
            range: NumModel::new(),
            body: NumModel::new(),
            high: NumModel::new(),
            volume: NumModel::new(),
            quote: NumModel::new(),
            trades: NumModel::new(),
            gap_avg: Avg::new(3),
            duration_avg: Avg::new(3),
            revision_avg: Avg::new(3),
            open_avg: [Avg::new(4); 2],
            range_avg: Avg::new(4),
            body_bias: Avg::new(5),
            high_bias: Avg::new(5),
            volume_avg: Avg::new(4),
            quote_bias: Avg::new(5),
            trades_bias: Avg::new(5),
            prev_close_ns: p.base_ns,
            prev_close: 0,
            prev_gap_zero: true,
        })
    }

    /// Codes one candle. The encoder passes the candle, the decoder any
    /// candle (ignored); both get back the candle as the decoder sees it.
    fn candle<C: Coder>(&mut self, c: &mut C, x: &BlockCandle, p: &Params) -> Option<BlockCandle> {
        // Times.
        c.field(0);
        let g = gap_code(x.open_ns.wrapping_sub(self.prev_close_ns), p.unit_ns);
        let gap_zero = self
            .gap
            .is_zero(c, usize::from(!self.prev_gap_zero), g == 0);
        let g = if gap_zero {
            0
        } else {
            let g = self.gap.magnitude(c, 0, self.gap_avg.value, g)?;
            if g == 0 {
                return None;
            }
            self.gap_avg.update(lg(g));
            g
        };
        let open_ns = self
            .prev_close_ns
            .wrapping_add(gap_from_code(g, p.unit_ns)?);
        c.field(1);
        let dur = zigzag64(x.close_ns.wrapping_sub(x.open_ns).wrapping_sub(p.unit_ns));
        let dur = unsigned(
            c,
            &mut self.duration,
            &mut self.duration_avg,
            u128::from(dur),
        )?;
        let close_ns = open_ns
            .wrapping_add(p.unit_ns)
            .wrapping_add(unzigzag64(u64::try_from(dur).ok()?));
        c.field(2);
        let rev = unsigned(
            c,
            &mut self.revision,
            &mut self.revision_avg,
            u128::from(x.revision.wrapping_sub(1)),
        )?;
        let revision = u64::try_from(rev).ok()?.wrapping_add(1);

        // Prices.
        c.field(3);
        let class = usize::from(g != 0);
        let jump = x.open.wrapping_sub(self.prev_close);
        let e = self.open_avg[class].value;
        let jump = if self.open.is_zero(c, class, jump == 0) {
            0
        } else {
            match signed(c, &mut self.open, class, e, i128::from(jump))? {
                0 => return None,
                j => j,
            }
        };
        if jump != 0 {
            self.open_avg[class].update(lg(jump.unsigned_abs()));
        }
        let open = self.prev_close.wrapping_add(i64::try_from(jump).ok()?);

        c.field(4);
        let range = x.high.wrapping_sub(x.low) as u64;
        let e = self.range_avg.value;
        let range = u64::try_from(self.range.magnitude(c, 0, e, u128::from(range))?).ok()?;
        let lg_range = lg(u128::from(range));

        c.field(5);
        let body = x.close.wrapping_sub(x.open);
        let e = lg_range + self.body_bias.value;
        let body = i64::try_from(signed(c, &mut self.body, 0, e, i128::from(body))?).ok()?;
        let lg_body = lg(u128::from(body.unsigned_abs()));
        self.body_bias.update(lg_body - lg_range);
        let close = open.wrapping_add(body);

        c.field(6);
        let slack = range.wrapping_sub(body.unsigned_abs());
        let lg_slack = lg(u128::from(slack));
        let over = x.high.wrapping_sub(x.open.max(x.close)) as u64;
        let over = if self.high.is_zero(c, usize::from(slack == 0), over == 0) {
            0
        } else {
            let e = lg_slack + self.high_bias.value;
            let v = self.high.magnitude(c, 0, e, u128::from(over))?;
            if v == 0 {
                return None;
            }
            self.high_bias.update(lg(v) - lg_slack);
            u64::try_from(v).ok()?
        };
        let high = open.max(close).wrapping_add(over as i64);
        let low = high.wrapping_sub(range as i64);

        // Volume, quote volume, trades.
        let surprise = lg_range - self.range_avg.value;
        let class = if surprise < -8 {
            0
        } else if surprise > 8 {
            2
        } else {
            1
        };
        c.field(7);
        let volume = x.volume as u128;
        let volume = self
            .volume
            .magnitude(c, class, self.volume_avg.value, volume)?;
        let lg_volume = lg(volume);
        self.volume_avg.update(lg_volume);
        let volume = volume as i128;

        c.field(8);
        let mid = (i128::from(high) + i128::from(low)) >> 1;
        let guess = volume.wrapping_mul(mid);
        let e = lg_volume + lg_range + self.quote_bias.value;
        let resid = signed(c, &mut self.quote, 0, e, x.quote_volume.wrapping_sub(guess))?;
        if resid != 0 {
            self.quote_bias
                .update(lg(resid.unsigned_abs()) - lg_volume - lg_range);
        }
        let quote_volume = guess.wrapping_add(resid);

        self.range_avg.update(lg_range);
        let mut out = BlockCandle {
            open_ns,
            close_ns,
            open,
            high,
            low,
            close,
            volume,
            quote_volume,
            trade_count: 0,
            revision,
        };
        c.field(9);
        let pred = predicted_trades(&out, p);
        let lg_pred = lg(u128::from(pred));
        let e = lg_pred + self.trades_bias.value;
        let resid = x.trade_count.wrapping_sub(pred) as i64;
        let resid = i64::try_from(signed(c, &mut self.trades, 0, e, i128::from(resid))?).ok()?;
        if resid != 0 {
            self.trades_bias
                .update(lg(u128::from(resid.unsigned_abs())) - lg_pred);
        }
        out.trade_count = pred.wrapping_add(resid as u64);

        self.prev_close_ns = close_ns;
        self.prev_close = close;
        self.prev_gap_zero = g == 0;
        Some(out)
    }
}

/// A value that is usually 0: a zero flag, then the magnitude.
fn unsigned<C: Coder>(c: &mut C, m: &mut NumModel<1>, avg: &mut Avg, v: u128) -> Option<u128> {
    if m.is_zero(c, 0, v == 0) {
        return Some(0);
    }
    let v = m.magnitude(c, 0, avg.value, v)?;
    if v == 0 {
        return None;
    }
    avg.update(lg(v));
    Some(v)
}

/// A signed value in i128 (any i128): sign (0 counts as positive), then the
/// magnitude.
fn signed<C: Coder, const K: usize>(
    c: &mut C,
    m: &mut NumModel<K>,
    class: usize,
    e: i32,
    v: i128,
) -> Option<i128> {
    let negative = m.sign(c, class, v < 0);
    let mag = m.magnitude(c, class, e, v.unsigned_abs())?;
    match (negative, mag) {
        (true, 0) => None,
        (true, m) if m <= 1 << 127 => Some((m as i128).wrapping_neg()),
        (false, m) if m < 1 << 127 => Some(m as i128),
        _ => None,
    }
}

/// The range-coded stream and the raw bits of `candles`.
pub fn encode_candles(candles: &[BlockCandle], p: &Params) -> (Vec<u8>, Vec<u8>) {
    let w = write(candles, p, false);
    (w.rc.finish(), w.raw.finish())
}

/// Bits spent on each field of `candles` (see [`FIELDS`]), by the model's
/// own probabilities: within a few bytes per block of the real size.
pub fn field_costs(candles: &[BlockCandle], p: &Params) -> Vec<f64> {
    let mut costs = write(candles, p, true).costs.unwrap_or_default();
    costs.truncate(FIELDS.len());
    costs
}

/// Field names, in the order of [`field_costs`].
pub const FIELDS: [&str; 11] = [
    "gap", "duration", "revision", "open", "range", "body", "high", "volume", "quote", "trades",
    "end",
];

fn write(candles: &[BlockCandle], p: &Params, accounting: bool) -> Writer {
    let mut w = Writer::new(accounting);
    let mut model = Model::new(p);
    for x in candles {
        let back = model.candle(&mut w, x, p);
        debug_assert_eq!(back.as_ref(), Some(x));
    }
    w.field(FIELDS.len() - 1);
    w.direct(END_MARK, 16);
    w
}

/// Decodes `count` candles; `None` if the streams are not exactly what
/// [`encode_candles`] writes.
pub fn decode_candles(
    count: usize,
    p: &Params,
    stream: &[u8],
    raw: &[u8],
) -> Option<Vec<BlockCandle>> {
    let mut r = Reader {
        rc: rc::Decoder::new(stream),
        raw: BitReader::new(raw),
        failed: false,
    };
    let mut model = Model::new(p);
    let dummy = BlockCandle {
        open_ns: 0,
        close_ns: 0,
        open: 0,
        high: 0,
        low: 0,
        close: 0,
        volume: 0,
        quote_volume: 0,
        trade_count: 0,
        revision: 0,
    };
    // Grows with what the input yields, not with what the header claims.
    let mut out = Vec::with_capacity(count.min(4_096));
    for _ in 0..count {
        let candle = model.candle(&mut r, &dummy, p)?;
        if !r.ok() {
            return None;
        }
        out.push(candle);
    }
    (r.direct(0, 16) == END_MARK && r.rc.finished_cleanly() && r.raw.finished_cleanly())
        .then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_candle() {
        let x = BlockCandle {
            open_ns: 1_704_067_200_000_000_000,
            close_ns: 1_704_067_260_000_000_000,
            open: 6_700_000,
            high: 6_701_000,
            low: 6_699_000,
            close: 6_700_500,
            volume: 150_000,
            quote_volume: 10_050_123_456_789,
            trade_count: 120,
            revision: 1,
        };
        let p = Params::of(std::slice::from_ref(&x));
        let (s, r) = encode_candles(std::slice::from_ref(&x), &p);
        let mut rd = Reader {
            rc: rc::Decoder::new(&s),
            raw: BitReader::new(&r),
            failed: false,
        };
        let mut model = Model::new(&p);
        let got = model.candle(&mut rd, &x, &p);
        assert_eq!(got.as_ref(), Some(&x));
        assert!(rd.ok());
        assert_eq!(rd.direct(0, 16), END_MARK);
        assert!(rd.rc.finished_cleanly());
        assert!(rd.raw.finished_cleanly());
    }
}
