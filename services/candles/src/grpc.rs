//! The tonic adapter of CandleQueryService.

use std::pin::Pin;
use std::sync::Arc;

use tickmesh_api::candles::candle_query_service_server::{
    CandleQueryService, CandleQueryServiceServer,
};
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
) -> CandleQueryServiceServer<CandleGrpc> {
    CandleQueryServiceServer::new(CandleGrpc { service })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
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

    async fn subscribe_candles(
        &self,
        request: Request<SubscribeCandlesRequest>,
    ) -> Result<Response<CandleStream>, Status> {
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
            item.map(|m| SubscribeCandlesResponse {
                candles: if m.indicators.is_empty() {
                    m.candles.iter().map(|c| candle_to_pb(&symbol, c)).collect()
                } else {
                    m.candles
                        .iter()
                        .zip(m.indicators)
                        .map(|(c, v)| {
                            let mut candle = candle_to_pb(&symbol, c);
                            // The last holder takes the values over; others copy.
                            candle.indicators = Arc::try_unwrap(v).unwrap_or_else(|v| v.to_vec());
                            candle
                        })
                        .collect()
                },
                snapshot: m.snapshot,
                cursor: m.cursor,
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
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
