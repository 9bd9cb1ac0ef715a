//! GetIndicators: the page GetCandles gives for the same symbol, interval,
//! range, page size and order, each candle with its indicator values.
//!
//! The values of a page are computed from the series state before its oldest
//! candle ([`Series::state_before`], from a checkpoint), then along the page.
//! A request for only the newest candle of a stored interval is answered from
//! the latest values in Redis when they belong to that candle's current
//! revision and their basis (the newest candles' revisions) is still current.

use std::sync::Arc;

use tickmesh_calendar::Interval;
use tickmesh_core::ids::check_symbol;
use tickmesh_core::{Error, FieldViolation, Result, page_token};
use tickmesh_indicators::Indicator;

use super::SeriesSpec;
use super::latest::{LatestStore, basis, basis_len};
use super::render::{IndicatorValue, render};
use super::series::Series;
use crate::candle::Candle;
use crate::directory::Directory;
use crate::query::CandlesQuery;

const PAGE_KIND: &str = "indicators";

#[derive(Clone, Debug, Default)]
pub struct IndicatorsQuery {
    pub symbol: String,
    pub interval: String,
    pub indicators: Vec<String>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    pub page_size: i32,
    pub page_token: String,
    pub newest_first: bool,
}

/// A page of candles with their values.
pub type IndicatorsPage = (Vec<(Candle, Vec<IndicatorValue>)>, String);

pub struct IndicatorsService {
    pub series: Arc<Series>,
    pub latest: Arc<LatestStore>,
    pub directory: Arc<Directory>,
}

impl IndicatorsService {
    pub async fn get_indicators(&self, q: IndicatorsQuery) -> Result<IndicatorsPage> {
        let mut violations = Vec::new();
        if let Err(r) = check_symbol(&q.symbol) {
            violations.push(FieldViolation::new("symbol", r));
        }
        let interval = match Interval::parse(&q.interval) {
            Ok(i) => Some(i),
            Err(r) => {
                violations.push(FieldViolation::new("interval", r));
                None
            }
        };
        // Syntax first, so every bad field is reported at once.
        if q.indicators.is_empty() {
            violations.push(FieldViolation::new(
                "indicators",
                "must name at least one indicator, e.g. [\"sma(20)\", \"rsi(14)\"]",
            ));
        } else if let Err(Error::InvalidArgument(v)) =
            tickmesh_indicators::parse_indicators(&q.indicators)
        {
            violations.extend(v);
        }
        let canonical: Vec<String> = q
            .indicators
            .iter()
            .filter_map(|t| Indicator::parse(t).ok())
            .map(|i| i.to_string())
            .collect();
        let fingerprint = page_token::fingerprint(&[
            &q.symbol,
            &q.interval,
            &canonical.join(","),
            &format!("{:?}", q.start_ns),
            &format!("{:?}", q.end_ns),
            &q.newest_first.to_string(),
        ]);
        let inner_token = if q.page_token.is_empty() {
            String::new()
        } else {
            match page_token::decode(&q.page_token, PAGE_KIND, fingerprint) {
                Ok(t) => t,
                Err(r) => {
                    violations.push(FieldViolation::new("page_token", r));
                    String::new()
                }
            }
        };
        Error::check(violations)?;
        let interval = interval.expect("checked");
        let info = self.directory.get(&q.symbol).await?;
        let spec = SeriesSpec::new(&info, interval, &q.indicators, "indicators")?;
        let newest_only = q.page_size == 1
            && q.newest_first
            && q.page_token.is_empty()
            && q.start_ns.is_none()
            && q.end_ns.is_none();
        let (candles, next) = self
            .series
            .query
            .get_candles(CandlesQuery {
                symbol: q.symbol.clone(),
                interval: q.interval.clone(),
                start_ns: q.start_ns,
                end_ns: q.end_ns,
                page_size: q.page_size,
                page_token: inner_token,
                newest_first: q.newest_first,
                fill: false,
            })
            .await?;
        let next = if next.is_empty() {
            next
        } else {
            page_token::encode(PAGE_KIND, fingerprint, &next)
        };
        let basis_of = |candles: &[Candle]| {
            let mut text = String::new();
            basis(
                candles
                    .iter()
                    .take(basis_len(self.series.late_window_ns, interval))
                    .map(|c| (c.score(), c.revision)),
                &mut text,
            );
            text
        };
        if newest_only
            && interval.is_stored()
            && let Some(candle) = candles.first()
            && let Some(latest) = self.latest.read(&self.series.store, &spec).await?
            && latest.open_s == candle.score()
            && latest.revision == candle.revision
        {
            // Trusted only if no candle it was computed from changed since.
            let newest = self
                .series
                .store
                .range(
                    &q.symbol,
                    interval,
                    "-inf",
                    "+inf",
                    true,
                    basis_len(self.series.late_window_ns, interval),
                )
                .await?;
            if newest.first().map(|c| c.bucket.open_ns) == Some(candle.bucket.open_ns)
                && basis_of(&newest) == latest.basis
            {
                return Ok((vec![(candle.clone(), latest.values)], next));
            }
        }
        let mut ordered = candles;
        if q.newest_first {
            ordered.reverse();
        }
        let finality = self.series.finality(&q.symbol).await?;
        let readings = self.series.readings(&spec, &finality, &ordered).await?;
        let mut page: Vec<(Candle, Vec<IndicatorValue>)> = ordered
            .into_iter()
            .zip(readings)
            .map(|(c, r)| {
                let values = render(&spec.set, &r);
                (c, values)
            })
            .collect();
        if q.newest_first {
            page.reverse();
            // The first page newest first holds the newest candle: keep its
            // values as the set's latest, with the basis the page shows.
            let len = basis_len(self.series.late_window_ns, interval);
            if q.page_token.is_empty()
                && q.end_ns.is_none()
                && interval.is_stored()
                && (page.len() >= len || next.is_empty())
                && let Some((candle, values)) = page.first()
            {
                let shown: Vec<Candle> = page.iter().take(len).map(|(c, _)| c.clone()).collect();
                self.latest
                    .write(&self.series.store, &spec, candle, values, &basis_of(&shown))
                    .await?;
            }
        }
        Ok((page, next))
    }
}
