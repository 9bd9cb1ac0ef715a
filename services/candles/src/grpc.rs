//! The tonic adapter of CandleQueryService. SubscribeCandles is served by
//! [`crate::subscribe_route`], which sends the indicator values the way the
//! engines encoded them; the generated server answers the other methods.

use std::pin::Pin;
use std::sync::Arc;

use prost::Message as _;
use prost::bytes::BufMut;
use tickmesh_api::candles::candle_query_service_server::CandleQueryService;
use tickmesh_api::candles::{
    self as pb, CandleFill, CandleOrder, GetAggregationStatusRequest, GetAggregationStatusResponse,
    GetCandlesRequest, GetCandlesResponse, GetIndicatorsRequest, GetIndicatorsResponse,
    SubscribeCandlesRequest, SubscribeCandlesResponse,
};
use tickmesh_core::Error;
use tickmesh_runtime::proto_time::{nanos_to_timestamp, timestamp_to_nanos};
use tickmesh_runtime::status::{IntoStatus, to_status};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::candle::Candle;
use crate::indicators::live::Values;
use crate::indicators::query::IndicatorsQuery;
use crate::indicators::render::{IndicatorValue, to_pb};
use crate::query::CandlesQuery;
use crate::service::CandleService;

pub struct CandleGrpc {
    service: Arc<CandleService>,
}

pub fn server(
    service: Arc<CandleService>,
    max_message_bytes: usize,
) -> crate::subscribe_route::CandleRoutes {
    crate::subscribe_route::CandleRoutes::new(Arc::new(CandleGrpc { service }), max_message_bytes)
}

pub fn candle_to_pb(symbol: &str, c: &Candle) -> pb::Candle {
    pb::Candle {
        symbol: symbol.to_string(),
        interval: c.interval.to_string(),
        open_time: Some(nanos_to_timestamp(c.bucket.open_ns)),
        close_time: Some(nanos_to_timestamp(c.bucket.close_ns)),
        open: c.price(c.open),
        high: c.price(c.high),
        low: c.price(c.low),
        close: c.price(c.close),
        volume: c.volume_text(),
        quote_volume: c.quote_volume_text(),
        trade_count: c.trade_count,
        closed: c.closed,
        revision: c.revision,
        indicators: Vec::new(),
    }
}

/// A candle with its indicator values.
pub fn candle_with_values_to_pb(symbol: &str, c: &Candle, values: &[IndicatorValue]) -> pb::Candle {
    let mut candle = candle_to_pb(symbol, c);
    candle.indicators = values.iter().map(to_pb).collect();
    candle
}

fn time_field(ts: Option<&prost_types::Timestamp>, field: &str) -> Result<Option<i64>, Status> {
    ts.map(|t| timestamp_to_nanos(t).map_err(|r| to_status(Error::invalid(field, r))))
        .transpose()
}

type CandleStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<SubscribeCandlesResponse, Status>> + Send>>;

/// The messages of a SubscribeCandles stream, before encoding.
pub type OutgoingStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<Outgoing, Status>> + Send>>;

/// One SubscribeCandles message: each candle as protobuf without its
/// indicator values, and the values already encoded (empty without
/// indicators). Its encoding is the bytes prost writes for the
/// [`SubscribeCandlesResponse`] of [`into_message`](Self::into_message):
/// a candle's `indicators` (field 14) come last in it, so the encoded
/// values follow its other fields as they are.
pub struct Outgoing {
    pub candles: Vec<(pb::Candle, Values)>,
    pub snapshot: bool,
    pub cursor: String,
}

impl Outgoing {
    fn new(symbol: &str, m: crate::subscribe::Message) -> Outgoing {
        let mut values = m.indicators.into_iter();
        Outgoing {
            candles: m
                .candles
                .iter()
                .map(|c| (candle_to_pb(symbol, c), values.next().unwrap_or_default()))
                .collect(),
            snapshot: m.snapshot,
            cursor: m.cursor,
        }
    }

    /// The message with the values decoded.
    pub fn into_message(self) -> SubscribeCandlesResponse {
        SubscribeCandlesResponse {
            candles: self
                .candles
                .into_iter()
                .map(|(mut candle, values)| {
                    candle
                        .merge(values)
                        .expect("encoded indicator values decode");
                    candle
                })
                .collect(),
            snapshot: self.snapshot,
            cursor: self.cursor,
        }
    }

    /// Bytes of one candle with its values: the candle's fields, then the values.
    fn candle_len((candle, values): &(pb::Candle, Values)) -> usize {
        candle.encoded_len() + values.len()
    }

    /// Writes the message (fields in number order, as prost does).
    pub fn encode(&self, buf: &mut impl BufMut) {
        use prost::encoding::{WireType, bool, encode_key, encode_varint, string};
        for c in &self.candles {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(Self::candle_len(c) as u64, buf);
            c.0.encode_raw(buf);
            buf.put_slice(&c.1);
        }
        if self.snapshot {
            bool::encode(2, &self.snapshot, buf);
        }
        if !self.cursor.is_empty() {
            string::encode(3, &self.cursor, buf);
        }
    }
}

impl CandleGrpc {
    /// A SubscribeCandles stream, as [`Outgoing`] messages.
    pub async fn subscribe_outgoing(
        &self,
        request: Request<SubscribeCandlesRequest>,
    ) -> Result<Response<OutgoingStream>, Status> {
        let r = request.into_inner();
        let symbol = r.symbol.clone();
        let rx = self
            .service
            .subscribe(r.symbol, r.intervals, r.cursor, r.indicators)
            .await
            .into_status()?;
        // Held for as long as the client keeps the stream.
        let follow = self.service.follow(&symbol);
        let stream = ReceiverStream::new(rx).map(move |item| {
            let _ = &follow;
            item.map(|m| Outgoing::new(&symbol, m)).map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl CandleQueryService for CandleGrpc {
    async fn get_candles(
        &self,
        request: Request<GetCandlesRequest>,
    ) -> Result<Response<GetCandlesResponse>, Status> {
        let r = request.into_inner();
        let order = CandleOrder::try_from(r.order)
            .map_err(|_| to_status(Error::invalid("order", "is not a CandleOrder")))?;
        let fill = CandleFill::try_from(r.fill)
            .map_err(|_| to_status(Error::invalid("fill", "is not a CandleFill")))?;
        let query = CandlesQuery {
            start_ns: time_field(r.start_time.as_ref(), "start_time")?,
            end_ns: time_field(r.end_time.as_ref(), "end_time")?,
            symbol: r.symbol,
            interval: r.interval,
            page_size: r.page_size,
            page_token: r.page_token,
            newest_first: order != CandleOrder::OldestFirst,
            fill: fill == CandleFill::PreviousClose,
        };
        let symbol = query.symbol.clone();
        let (candles, next_page_token) = self.service.get_candles(query).await.into_status()?;
        Ok(Response::new(GetCandlesResponse {
            candles: candles.iter().map(|c| candle_to_pb(&symbol, c)).collect(),
            next_page_token,
        }))
    }

    async fn get_indicators(
        &self,
        request: Request<GetIndicatorsRequest>,
    ) -> Result<Response<GetIndicatorsResponse>, Status> {
        let r = request.into_inner();
        let order = CandleOrder::try_from(r.order)
            .map_err(|_| to_status(Error::invalid("order", "is not a CandleOrder")))?;
        let query = IndicatorsQuery {
            start_ns: time_field(r.start_time.as_ref(), "start_time")?,
            end_ns: time_field(r.end_time.as_ref(), "end_time")?,
            symbol: r.symbol,
            interval: r.interval,
            indicators: r.indicators,
            page_size: r.page_size,
            page_token: r.page_token,
            newest_first: order != CandleOrder::OldestFirst,
        };
        let symbol = query.symbol.clone();
        let (page, next_page_token) = self.service.get_indicators(query).await.into_status()?;
        Ok(Response::new(GetIndicatorsResponse {
            candles: page
                .iter()
                .map(|(c, values)| candle_with_values_to_pb(&symbol, c, values))
                .collect(),
            next_page_token,
        }))
    }

    type SubscribeCandlesStream = CandleStream;

    /// Served by [`crate::subscribe_route`]; this path (the generated
    /// server's) gives the same messages, decoded.
    async fn subscribe_candles(
        &self,
        request: Request<SubscribeCandlesRequest>,
    ) -> Result<Response<CandleStream>, Status> {
        let stream = self.subscribe_outgoing(request).await?.into_inner();
        Ok(Response::new(Box::pin(
            stream.map(|m| m.map(Outgoing::into_message)),
        )))
    }

    async fn get_aggregation_status(
        &self,
        request: Request<GetAggregationStatusRequest>,
    ) -> Result<Response<GetAggregationStatusResponse>, Status> {
        let statuses = self
            .service
            .status(request.into_inner().symbols)
            .await
            .into_status()?;
        Ok(Response::new(GetAggregationStatusResponse {
            statuses: statuses
                .into_iter()
                .map(|s| pb::AggregationStatus {
                    pending_trades: s.pending_trades(),
                    symbol: s.symbol,
                    applied_sequence: s.applied_sequence,
                    owner: s.owner,
                    late_corrections: s.late_corrections,
                    late_dropped: s.late_dropped,
                    missed_trades: s.missed_trades,
                    unflushed_candles: s.unflushed_candles,
                    last_flush_time: (s.last_flush_ns > 0)
                        .then(|| nanos_to_timestamp(s.last_flush_ns)),
                    tick_log_sequence: s.tick_log_sequence,
                    oldest_pending_ingest_time: (s.oldest_pending_ingest_ns > 0)
                        .then(|| nanos_to_timestamp(s.oldest_pending_ingest_ns)),
                    verified_candles: s.verified_candles,
                    verify_mismatches: s.verify_mismatches,
                    verify_repairs: s.verify_repairs,
                    last_verify_time: (s.last_verify_ns > 0)
                        .then(|| nanos_to_timestamp(s.last_verify_ns)),
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(close: &str, revision: u64) -> pb::Candle {
        pb::Candle {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time: Some(nanos_to_timestamp(1_700_000_040_000_000_000)),
            close_time: Some(nanos_to_timestamp(1_700_000_100_000_000_000)),
            open: "67000.10".into(),
            high: "67010.00".into(),
            low: "66990.00".into(),
            close: close.into(),
            volume: "1.25000000".into(),
            quote_volume: "83750.12500000".into(),
            trade_count: 3,
            closed: false,
            revision,
            indicators: Vec::new(),
        }
    }

    /// The `indicators` entries of a candle as prost encodes them.
    fn encoded(values: Vec<pb::IndicatorValue>) -> Values {
        pb::Candle {
            indicators: values,
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn an_outgoing_message_is_the_bytes_prost_writes_for_it() {
        let values = encoded(vec![
            pb::IndicatorValue {
                indicator: "macd(12,26,9)".into(),
                outputs: vec![
                    pb::IndicatorOutput {
                        name: "macd".into(),
                        value: Some("1.2345".into()),
                    },
                    pb::IndicatorOutput {
                        name: "signal".into(),
                        value: None,
                    },
                ],
                warming_up: true,
                out_of_range: false,
            },
            pb::IndicatorValue {
                indicator: "sma(20)".into(),
                outputs: vec![pb::IndicatorOutput {
                    name: "value".into(),
                    value: Some("67001.5".into()),
                }],
                warming_up: false,
                out_of_range: false,
            },
        ]);
        for (snapshot, cursor) in [(true, "1700000000000-0"), (false, "")] {
            let outgoing = Outgoing {
                candles: vec![
                    (candle("67005.00", 7), values.clone()),
                    (candle("67006.00", 8), Values::new()),
                ],
                snapshot,
                cursor: cursor.into(),
            };
            let mut bytes = Vec::new();
            outgoing.encode(&mut bytes);
            let message = outgoing.into_message();
            assert_eq!(bytes, message.encode_to_vec());
            assert_eq!(message.candles[0].indicators.len(), 2);
            assert_eq!(message.candles[0].indicators[1].indicator, "sma(20)");
            assert!(message.candles[1].indicators.is_empty());
            assert_eq!(message.snapshot, snapshot);
        }
    }
}
