//! The tonic adapter: converts messages, checks admin auth, calls
//! [`MarketFeed`], maps errors through `tickmesh_runtime::status`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tickmesh_api::marketfeed::market_feed_service_server::{
    MarketFeedService, MarketFeedServiceServer,
};
use tickmesh_api::marketfeed::{
    self as pb, GetInstrumentRequest, GetInstrumentResponse, GetQuotesRequest, GetQuotesResponse,
    ListInstrumentsRequest, ListInstrumentsResponse, PublishRequest, PublishResponse,
    PublishTradesRequest, PublishTradesResponse, StreamTradesRequest, StreamTradesResponse,
    UpsertInstrumentRequest, UpsertInstrumentResponse,
};
use tickmesh_core::{Error, FieldViolation};
use tickmesh_runtime::auth::AdminAuth;
use tickmesh_runtime::proto_time::{
    nanos_to_pb_duration, nanos_to_timestamp, pb_duration_to_std, timestamp_to_nanos,
};
use tickmesh_runtime::status::{IntoStatus, to_status};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::model::{self, Instrument, RawTrade, RejectKind, TradeRecord, TradingSession};
use crate::service::{MarketFeed, PublishOutcome, TradeRejection};

/// Rejections kept in a Publish summary (counts stay exact).
const MAX_REPORTED_REJECTIONS: usize = 1000;

pub struct MarketFeedGrpc {
    feed: Arc<MarketFeed>,
    admin: AdminAuth,
}

/// The tonic service with explicit message-size limits.
pub fn server(
    feed: Arc<MarketFeed>,
    admin: AdminAuth,
    max_message_bytes: usize,
) -> MarketFeedServiceServer<MarketFeedGrpc> {
    MarketFeedServiceServer::new(MarketFeedGrpc { feed, admin })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

type TradeStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<StreamTradesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MarketFeedService for MarketFeedGrpc {
    async fn upsert_instrument(
        &self,
        request: Request<UpsertInstrumentRequest>,
    ) -> Result<Response<UpsertInstrumentResponse>, Status> {
        self.admin.check(request.metadata()).into_status()?;
        let instrument = request
            .into_inner()
            .instrument
            .ok_or_else(|| to_status(Error::invalid("instrument", "is required")))?;
        let instrument = instrument_from_pb(instrument).into_status()?;
        let (stored, created) = self
            .feed
            .upsert_instrument(instrument)
            .await
            .into_status()?;
        tracing::info!(symbol = %stored.symbol, created, "instrument upserted");
        Ok(Response::new(UpsertInstrumentResponse {
            instrument: Some(instrument_to_pb(&stored)),
            created,
        }))
    }

    async fn get_instrument(
        &self,
        request: Request<GetInstrumentRequest>,
    ) -> Result<Response<GetInstrumentResponse>, Status> {
        let instrument = self
            .feed
            .get_instrument(&request.into_inner().symbol)
            .await
            .into_status()?;
        Ok(Response::new(GetInstrumentResponse {
            instrument: Some(instrument_to_pb(&instrument)),
        }))
    }

    async fn list_instruments(
        &self,
        request: Request<ListInstrumentsRequest>,
    ) -> Result<Response<ListInstrumentsResponse>, Status> {
        let request = request.into_inner();
        let (page, next_page_token) = self
            .feed
            .list_instruments(request.page_size, &request.page_token)
            .await
            .into_status()?;
        Ok(Response::new(ListInstrumentsResponse {
            instruments: page.iter().map(instrument_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn publish_trades(
        &self,
        request: Request<PublishTradesRequest>,
    ) -> Result<Response<PublishTradesResponse>, Status> {
        let request = request.into_inner();
        let trades = request.trades.into_iter().map(raw_from_pb).collect();
        let outcome = self
            .feed
            .publish(trades, request.all_or_nothing)
            .await
            .into_status()?;
        Ok(Response::new(PublishTradesResponse {
            accepted: outcome.accepted as u32,
            duplicate: outcome.duplicate as u32,
            rejected: outcome.rejected as u32,
            rejections: outcome
                .rejections
                .iter()
                .map(|r| rejection_to_pb(r, 0))
                .collect(),
            last_sequences: sequences_to_pb(&outcome.last_sequences),
        }))
    }

    async fn publish(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<PublishResponse>, Status> {
        let mut stream = request.into_inner();
        let mut summary = PublishResponse::default();
        let mut last = HashMap::new();
        while let Some(message) = stream.message().await? {
            let batch = summary.batches;
            let trades = message.trades.into_iter().map(raw_from_pb).collect();
            let outcome: PublishOutcome = match self.feed.publish(trades, false).await {
                Ok(o) => o,
                Err(e) => {
                    let status = to_status(e);
                    return Err(Status::with_details(
                        status.code(),
                        format!(
                            "batch {batch}: {}; the {batch} batches before it were stored ({} accepted, {} duplicate)",
                            status.message(),
                            summary.accepted,
                            summary.duplicate
                        ),
                        status.details().to_vec().into(),
                    ));
                }
            };
            summary.batches += 1;
            summary.accepted += outcome.accepted;
            summary.duplicate += outcome.duplicate;
            summary.rejected += outcome.rejected;
            let room = MAX_REPORTED_REJECTIONS.saturating_sub(summary.rejections.len());
            summary.rejections.extend(
                outcome
                    .rejections
                    .iter()
                    .take(room)
                    .map(|r| rejection_to_pb(r, batch)),
            );
            last.extend(outcome.last_sequences);
        }
        summary.last_sequences = sequences_to_pb(&last);
        Ok(Response::new(summary))
    }

    type StreamTradesStream = TradeStream;

    async fn stream_trades(
        &self,
        request: Request<StreamTradesRequest>,
    ) -> Result<Response<Self::StreamTradesStream>, Status> {
        let client_reads = !request
            .metadata()
            .contains_key(tickmesh_runtime::interest::INTERNAL_READER_HEADER);
        let request = request.into_inner();
        let cursors = request
            .cursors
            .into_iter()
            .map(|c| (c.symbol, c.sequence))
            .collect();
        let rx = self
            .feed
            .stream_trades(
                request.symbols,
                request.from_sequence,
                cursors,
                client_reads,
            )
            .await
            .into_status()?;
        let stream = ReceiverStream::new(rx).map(|item| {
            item.map(|chunk| StreamTradesResponse {
                trades: chunk.trades.iter().map(trade_to_pb).collect(),
                gaps: chunk
                    .gaps
                    .into_iter()
                    .map(|g| pb::SequenceGap {
                        symbol: g.symbol.to_string(),
                        first_sequence: g.first,
                        last_sequence: g.last,
                    })
                    .collect(),
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_quotes(
        &self,
        request: Request<GetQuotesRequest>,
    ) -> Result<Response<GetQuotesResponse>, Status> {
        let request = request.into_inner();
        let stale_after = request
            .stale_after
            .as_ref()
            .map(pb_duration_to_std)
            .transpose()
            .map_err(|r| to_status(Error::invalid("stale_after", r)))?;
        let outcome = self
            .feed
            .quotes(request.symbols, stale_after)
            .await
            .into_status()?;
        Ok(Response::new(GetQuotesResponse {
            quotes: outcome
                .quotes
                .into_iter()
                .map(|v| pb::Quote {
                    symbol: v.quote.symbol,
                    price: v.quote.price,
                    quantity: v.quote.quantity,
                    time: Some(nanos_to_timestamp(v.quote.time_ns)),
                    sequence: v.quote.sequence,
                    ingest_time: Some(nanos_to_timestamp(v.quote.ingest_ns)),
                    age: Some(nanos_to_pb_duration(v.age_ns)),
                    stale: v.stale,
                    trade_id: v.quote.trade_id,
                    side: v.quote.side,
                    from_last_session: v.from_last_session,
                })
                .collect(),
            missing_symbols: outcome.missing,
        }))
    }
}

pub fn raw_from_pb(t: pb::Trade) -> RawTrade {
    RawTrade {
        symbol: t.symbol,
        trade_id: t.trade_id,
        price: t.price,
        quantity: t.quantity,
        time_ns: t
            .time
            .as_ref()
            .ok_or_else(|| "is required".to_string())
            .and_then(timestamp_to_nanos),
        side: t.side,
    }
}

pub fn trade_to_pb(t: &TradeRecord) -> pb::Trade {
    pb::Trade {
        symbol: t.symbol.to_string(),
        trade_id: t.trade_id.clone(),
        price: t.price.clone(),
        quantity: t.quantity.clone(),
        time: Some(nanos_to_timestamp(t.time_ns)),
        side: t.side,
        sequence: t.sequence,
        ingest_time: Some(nanos_to_timestamp(t.ingest_ns)),
        trace_parent: t.trace_parent.clone(),
    }
}

fn rejection_to_pb(r: &TradeRejection, batch: u64) -> pb::TradeRejection {
    pb::TradeRejection {
        index: r.index as u32,
        batch,
        field: r.field.clone(),
        reason: r.reason.clone(),
        code: match r.kind {
            RejectKind::Invalid => pb::RejectionCode::InvalidArgument,
            RejectKind::UnknownSymbol => pb::RejectionCode::UnknownSymbol,
        } as i32,
        symbol: r.symbol.clone(),
        trade_id: r.trade_id.clone(),
    }
}

fn sequences_to_pb(map: &HashMap<String, u64>) -> Vec<pb::SymbolSequence> {
    let mut out: Vec<_> = map
        .iter()
        .map(|(symbol, &sequence)| pb::SymbolSequence {
            symbol: symbol.clone(),
            sequence,
        })
        .collect();
    out.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    out
}

pub fn instrument_from_pb(i: pb::Instrument) -> Result<Instrument, Error> {
    let mut violations = Vec::new();
    let mut sessions = Vec::with_capacity(i.sessions.len());
    for (n, s) in i.sessions.into_iter().enumerate() {
        let open = model::parse_local_time(&s.open_time)
            .map_err(|r| {
                violations.push(FieldViolation::new(
                    format!("instrument.sessions[{n}].open_time"),
                    r,
                ))
            })
            .unwrap_or(0);
        let close = model::parse_local_time(&s.close_time)
            .map_err(|r| {
                violations.push(FieldViolation::new(
                    format!("instrument.sessions[{n}].close_time"),
                    r,
                ))
            })
            .unwrap_or(1);
        sessions.push(TradingSession {
            days: s
                .days
                .iter()
                .map(|&d| u8::try_from(d).unwrap_or(0))
                .collect(),
            open_minute: open,
            close_minute: close,
        });
    }
    Error::check(violations)?;
    Ok(Instrument {
        symbol: i.symbol,
        venue: i.venue,
        price_scale: i.price_scale,
        quantity_scale: i.quantity_scale,
        time_zone: i.time_zone,
        sessions,
        update_time_ns: 0,
    })
}

pub fn instrument_to_pb(i: &Instrument) -> pb::Instrument {
    pb::Instrument {
        symbol: i.symbol.clone(),
        venue: i.venue.clone(),
        price_scale: i.price_scale,
        quantity_scale: i.quantity_scale,
        time_zone: i.time_zone.clone(),
        sessions: i
            .sessions
            .iter()
            .map(|s| pb::TradingSession {
                days: s.days.iter().map(|&d| i32::from(d)).collect(),
                open_time: model::format_local_time(s.open_minute),
                close_time: model::format_local_time(s.close_minute),
            })
            .collect(),
        update_time: Some(nanos_to_timestamp(i.update_time_ns)),
    }
}
