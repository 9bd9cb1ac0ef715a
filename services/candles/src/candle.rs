//! One OHLCV candle as scaled integers, how trades fold into it, and its
//! compact text form in Redis.
//!
//! Open and close are the prices of the first and last trade by event time
//! (ties by sequence), not by arrival, so a late trade lands where it belongs.
//! High, low, volume and quote volume take every trade into account, so
//! coalescing updates can never lose an extreme.

use tickmesh_calendar::{Bucket, Interval};
use tickmesh_core::decimal::format_units;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candle {
    pub interval: Interval,
    pub bucket: Bucket,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    /// Sum of quantities, in quantity units.
    pub volume: i128,
    /// Sum of price × quantity, in units of 10^-(price_scale + quantity_scale).
    pub quote_volume: i128,
    pub trade_count: u64,
    /// (event time, sequence) of the trade that set `open`.
    pub first: (i64, u64),
    /// (event time, sequence) of the trade that set `close`.
    pub last: (i64, u64),
    pub revision: u64,
    pub closed: bool,
    pub price_scale: u32,
    pub quantity_scale: u32,
    /// Wall-clock time of the last write to Redis (ns; 0 before the first).
    pub updated_ns: i64,
}

/// A trade as the aggregator folds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    pub time_ns: i64,
    pub sequence: u64,
    pub price: i64,
    pub quantity: i64,
}

impl Candle {
    /// A candle holding one trade.
    pub fn new(
        interval: Interval,
        bucket: Bucket,
        tick: Tick,
        price_scale: u32,
        quantity_scale: u32,
    ) -> Self {
        Self {
            interval,
            bucket,
            open: tick.price,
            high: tick.price,
            low: tick.price,
            close: tick.price,
            volume: i128::from(tick.quantity),
            quote_volume: i128::from(tick.price) * i128::from(tick.quantity),
            trade_count: 1,
            first: (tick.time_ns, tick.sequence),
            last: (tick.time_ns, tick.sequence),
            revision: 0,
            closed: false,
            price_scale,
            quantity_scale,
            updated_ns: 0,
        }
    }

    /// Folds one more trade in.
    #[inline]
    pub fn apply(&mut self, tick: Tick) {
        let at = (tick.time_ns, tick.sequence);
        if at < self.first {
            self.first = at;
            self.open = tick.price;
        }
        if at >= self.last {
            self.last = at;
            self.close = tick.price;
        }
        self.high = self.high.max(tick.price);
        self.low = self.low.min(tick.price);
        self.volume += i128::from(tick.quantity);
        self.quote_volume += i128::from(tick.price) * i128::from(tick.quantity);
        self.trade_count += 1;
    }

    /// Folds the trades of another candle in (OHLCV and count only).
    pub fn merge_trades(&mut self, other: &Candle) {
        if other.first < self.first {
            self.first = other.first;
            self.open = other.open;
        }
        if other.last >= self.last {
            self.last = other.last;
            self.close = other.close;
        }
        self.high = self.high.max(other.high);
        self.low = self.low.min(other.low);
        self.volume += other.volume;
        self.quote_volume += other.quote_volume;
        self.trade_count += other.trade_count;
    }

    /// Folds a whole candle of a smaller interval in (for rollups): its trades,
    /// and its revisions, so the rolled candle's revision moves whenever a part does.
    pub fn merge(&mut self, other: &Candle) {
        self.merge_trades(other);
        self.revision += other.revision;
        self.closed &= other.closed;
    }

    /// A flat candle at `price` with no trades (fill).
    pub fn flat(
        interval: Interval,
        bucket: Bucket,
        price: i64,
        price_scale: u32,
        quantity_scale: u32,
        closed: bool,
    ) -> Self {
        Self {
            interval,
            bucket,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 0,
            quote_volume: 0,
            trade_count: 0,
            first: (bucket.open_ns, 0),
            last: (bucket.open_ns, 0),
            revision: 0,
            closed,
            price_scale,
            quantity_scale,
            updated_ns: 0,
        }
    }

    pub fn price(&self, units: i64) -> String {
        format_units(i128::from(units), self.price_scale)
    }

    pub fn volume_text(&self) -> String {
        format_units(self.volume, self.quantity_scale)
    }

    pub fn quote_volume_text(&self) -> String {
        format_units(self.quote_volume, self.price_scale + self.quantity_scale)
    }

    /// The Redis sorted-set score: open time in whole seconds.
    pub fn score(&self) -> i64 {
        self.bucket.open_ns.div_euclid(1_000_000_000)
    }

    /// Compact text form (one sorted-set member / stream field).
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.interval,
            self.bucket.open_ns,
            self.bucket.close_ns,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.quote_volume,
            self.trade_count,
            self.first.0,
            self.first.1,
            self.last.0,
            self.last.1,
            self.revision,
            u8::from(self.closed),
            self.price_scale,
            self.quantity_scale,
            self.updated_ns
        )
    }

    pub fn decode(text: &str) -> Option<Candle> {
        let f: Vec<&str> = text.split('|').collect();
        if f.len() != 19 {
            return None;
        }
        Some(Candle {
            interval: Interval::parse(f[0]).ok()?,
            bucket: Bucket {
                open_ns: f[1].parse().ok()?,
                close_ns: f[2].parse().ok()?,
            },
            open: f[3].parse().ok()?,
            high: f[4].parse().ok()?,
            low: f[5].parse().ok()?,
            close: f[6].parse().ok()?,
            volume: f[7].parse().ok()?,
            quote_volume: f[8].parse().ok()?,
            trade_count: f[9].parse().ok()?,
            first: (f[10].parse().ok()?, f[11].parse().ok()?),
            last: (f[12].parse().ok()?, f[13].parse().ok()?),
            revision: f[14].parse().ok()?,
            closed: f[15] == "1",
            price_scale: f[16].parse().ok()?,
            quantity_scale: f[17].parse().ok()?,
            updated_ns: f[18].parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_calendar::Unit;

    fn tick(time_ns: i64, sequence: u64, price: i64, quantity: i64) -> Tick {
        Tick {
            time_ns,
            sequence,
            price,
            quantity,
        }
    }

    #[test]
    fn extremes_and_order_by_event_time() {
        let b = Bucket {
            open_ns: 0,
            close_ns: 60_000_000_000,
        };
        let m1 = Interval::new(Unit::Minute, 1);
        // 100 -> 150 -> 90 within half a second, then a late trade from earlier.
        let mut c = Candle::new(m1, b, tick(100, 1, 10_000, 1), 2, 0);
        c.apply(tick(200, 2, 15_000, 2));
        c.apply(tick(300, 3, 9_000, 3));
        c.apply(tick(50, 4, 9_500, 1));
        assert_eq!(
            (c.open, c.high, c.low, c.close),
            (9_500, 15_000, 9_000, 9_000)
        );
        assert_eq!((c.volume, c.trade_count), (7, 4));
        assert_eq!(c.quote_volume, 10_000 + 30_000 + 27_000 + 9_500);
        assert_eq!(c.price(c.high), "150.00");
        assert_eq!(c.quote_volume_text(), "765.00");
    }

    #[test]
    fn same_time_trades_order_by_sequence() {
        let b = Bucket {
            open_ns: 0,
            close_ns: 10,
        };
        let m1 = Interval::new(Unit::Minute, 1);
        let mut c = Candle::new(m1, b, tick(5, 2, 200, 1), 0, 0);
        c.apply(tick(5, 1, 100, 1));
        c.apply(tick(5, 3, 300, 1));
        assert_eq!((c.open, c.close), (100, 300));
    }

    #[test]
    fn encoding_round_trips() {
        let b = Bucket {
            open_ns: 1_704_067_200_000_000_000,
            close_ns: 1_704_067_260_000_000_000,
        };
        let mut c = Candle::new(
            Interval::new(Unit::Month, 1),
            b,
            tick(1_704_067_200_500_000_000, 9, 6_701_225, 1_500),
            2,
            5,
        );
        c.apply(tick(1_704_067_201_000_000_000, 10, 6_700_000, 300));
        c.revision = 3;
        c.closed = true;
        assert_eq!(Candle::decode(&c.encode()), Some(c.clone()));
        assert_eq!(c.score(), 1_704_067_200);
        assert!(Candle::decode("garbage").is_none());
    }
}
