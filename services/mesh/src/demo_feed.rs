//! The development feed: a deterministic random walk of a few instruments,
//! published through `MarketFeedService.Publish` like any feed handler.

use std::time::Duration;

use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{
    Instrument, PublishRequest, Side, Trade, TradingSession, UpsertInstrumentRequest, Weekday,
};
use tickmesh_core::decimal::format_units;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, now_nanos};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;

/// One demo instrument and where its walk starts.
pub struct DemoSymbol {
    pub instrument: Instrument,
    pub start_units: i64,
    pub lot_units: i64,
}

pub fn demo_symbols() -> Vec<DemoSymbol> {
    let plain = |symbol: &str, venue: &str, ps: u32, qs: u32| Instrument {
        symbol: symbol.into(),
        venue: venue.into(),
        price_scale: ps,
        quantity_scale: qs,
        time_zone: "UTC".into(),
        sessions: vec![],
        update_time: None,
    };
    let mut samsung = plain("005930.KS", "krx", 0, 0);
    samsung.time_zone = "Asia/Seoul".into();
    samsung.sessions = vec![TradingSession {
        days: [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
        ]
        .map(|d| d as i32)
        .to_vec(),
        open_time: "09:00".into(),
        close_time: "15:30".into(),
    }];
    vec![
        DemoSymbol {
            instrument: plain("BTCUSDT", "demo", 2, 5),
            start_units: 6_700_000,
            lot_units: 50_000,
        },
        DemoSymbol {
            instrument: plain("ETHUSDT", "demo", 2, 4),
            start_units: 350_000,
            lot_units: 20_000,
        },
        DemoSymbol {
            instrument: samsung,
            start_units: 71_000,
            lot_units: 100,
        },
    ]
}

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A random walk of trades for one instrument: steps of up to ±0.05 %.
pub struct Walk {
    pub symbol: String,
    pub price_scale: u32,
    pub quantity_scale: u32,
    pub units: i64,
    pub lot_units: i64,
    rng: Rng,
}

impl Walk {
    pub fn new(symbol: &DemoSymbol, seed: u64) -> Self {
        Self {
            symbol: symbol.instrument.symbol.clone(),
            price_scale: symbol.instrument.price_scale,
            quantity_scale: symbol.instrument.quantity_scale,
            units: symbol.start_units,
            lot_units: symbol.lot_units,
            rng: Rng::new(seed),
        }
    }

    /// The next trade, stamped `time_ns`, with id `trade_id`.
    pub fn next_trade(&mut self, trade_id: String, time_ns: i64) -> Trade {
        let max_step = (self.units / 2000).max(1);
        let step = self.rng.below(2 * max_step as u64 + 1) as i64 - max_step;
        self.units = (self.units + step).max(1);
        let quantity = 1 + self.rng.below(self.lot_units as u64 * 4) as i64;
        Trade {
            symbol: self.symbol.clone(),
            trade_id,
            price: format_units(i128::from(self.units), self.price_scale),
            quantity: format_units(i128::from(quantity), self.quantity_scale),
            time: Some(nanos_to_timestamp(time_ns)),
            side: if self.rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            } as i32,
            ..Default::default()
        }
    }
}

/// Registers the demo instruments through the API.
pub async fn register(endpoint: &str, admin_token: &str) -> anyhow::Result<()> {
    let mut client = MarketFeedServiceClient::connect(endpoint.to_string()).await?;
    for symbol in demo_symbols() {
        let mut request = tonic::Request::new(UpsertInstrumentRequest {
            instrument: Some(symbol.instrument),
        });
        if !admin_token.is_empty() {
            let value: MetadataValue<_> = format!("Bearer {admin_token}").parse()?;
            request.metadata_mut().insert("authorization", value);
        }
        client.upsert_instrument(request).await?;
    }
    Ok(())
}

/// Publishes `per_second` trades per symbol until shutdown, reconnecting when
/// the server goes away.
pub async fn run(endpoint: String, per_second: u32, shutdown: CancellationToken) {
    let symbols = demo_symbols();
    let mut walks: Vec<Walk> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| Walk::new(s, 42 + i as u64))
        .collect();
    // Ids unique per run, so a restarted dev session is not taken for duplicates.
    let run = now_nanos() / 1_000_000;
    let mut n: u64 = 0;
    let tick = Duration::from_millis(100);
    let per_tick = (per_second / 10).max(1);
    while !shutdown.is_cancelled() {
        let mut client = match MarketFeedServiceClient::connect(endpoint.clone()).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(8);
        let call = tokio::spawn(async move { client.publish(ReceiverStream::new(rx)).await });
        let mut interval = tokio::time::interval(tick);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let now = now_nanos();
            let mut trades = Vec::new();
            for walk in &mut walks {
                for k in 0..per_tick {
                    n += 1;
                    trades
                        .push(walk.next_trade(format!("{run}-{n}"), now - i64::from(per_tick - k)));
                }
            }
            if tx.send(PublishRequest { trades }).await.is_err() {
                break;
            }
        }
        drop(tx);
        match call.await {
            Ok(Ok(summary)) => tracing::info!(
                accepted = summary.get_ref().accepted,
                "demo feed stream closed"
            ),
            Ok(Err(status)) => tracing::warn!(%status, "demo feed stream failed; reconnecting"),
            Err(_) => {}
        }
        if !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_is_deterministic_and_valid() {
        let symbols = demo_symbols();
        let mut a = Walk::new(&symbols[0], 7);
        let mut b = Walk::new(&symbols[0], 7);
        for i in 0..1000 {
            let (x, y) = (
                a.next_trade(i.to_string(), 0),
                b.next_trade(i.to_string(), 0),
            );
            assert_eq!(x, y);
            let units = tickmesh_core::decimal::parse_units(&x.price, 2).unwrap();
            assert!(units > 0);
            tickmesh_core::decimal::parse_units(&x.quantity, 5).unwrap();
        }
    }
}
