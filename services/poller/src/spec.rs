//! What one poller is, resolved from config, and the rules it must follow.

use std::time::Duration;

use chrono::NaiveDate;
use tickmesh_core::FieldViolation;
use tickmesh_core::ids::check_symbol;

/// Most codes one batched request may name.
pub const MAX_BATCH_SIZE: usize = 100;

/// One poller: a set of codes of one upstream, behind one app key.
#[derive(Clone, Debug)]
pub struct PollerSpec {
    /// Unique name (its shared full-refresh cursor and logs are under it).
    pub name: String,
    /// `https://openapi.koreainvestment.com:9443`, or a fake broker's `http://127.0.0.1:P`.
    pub base_url: String,
    pub app_key: String,
    pub app_secret: String,
    /// Codes as the upstream spells them ("005930").
    pub symbols: Vec<String>,
    /// Prepended to a code to make the mesh symbol ("krx:" makes "krx:005930").
    pub symbol_prefix: String,
    /// Codes per request: 1 uses the current-price API (`inquire-price`), more the batch
    /// endpoint (`multi-price`).
    pub batch_size: usize,
    /// The upstream's limit for this app key: the mesh never sends more than this many
    /// requests in any one-second window, however many pollers share the key.
    pub requests_per_second: u32,
    /// Requests that may go back to back after a quiet spell. They come out of the per-second
    /// budget: the steady rate is `requests_per_second - burst` per `1 s + jitter_margin`, so
    /// the default 0 gives the fastest full refresh; a burst helps a mostly idle poller answer
    /// `fetch_now` without waiting for a slot.
    pub burst: u32,
    /// Slack for the time between the limiter granting a request and the upstream counting
    /// it (scheduling, network): the limiter keeps the budget over `1 s + jitter_margin`.
    pub jitter_margin: Duration,
    /// Shortest time between the starts of two full refreshes (zero: back to back).
    pub refresh_interval: Duration,
    /// Local dates (`YYYY-MM-DD`, in each instrument's zone) on which no session opens.
    pub holidays: Vec<String>,
    /// A read (`touch`) makes a symbol hot for this long.
    pub hot_window: Duration,
    /// A hot symbol is polled again at most this often.
    pub hot_min_interval: Duration,
    /// Most of the request capacity hot symbols may take, in percent (the rest keeps the full
    /// refresh moving); when the full refresh has nothing to do they may take all of it.
    pub hot_share_percent: u8,
    /// Publish a trade through MarketFeed when the cumulative volume grew (quantity = the
    /// growth), so candles get ticks from a polled upstream.
    pub publish_trades: bool,
    /// Timeout of one upstream request.
    pub request_timeout: Duration,
    /// Upstream requests one poller instance keeps in flight at most.
    pub max_in_flight: usize,
    /// First mesh-wide pause after a rate-limit answer; doubled for each further one in quick
    /// succession. The answer also halves the mesh's rate for this app key.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// After a rate-limit answer halved the rate, the time to climb back by half the nominal
    /// rate (so from half to full).
    pub recovery: Duration,
    /// How often instrument definitions (time zone, sessions) are reloaded.
    pub instrument_refresh: Duration,
}

impl PollerSpec {
    /// A spec with the defaults for everything but what names the upstream.
    pub fn new(
        name: &str,
        base_url: &str,
        app_key: &str,
        app_secret: &str,
        symbols: Vec<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            base_url: base_url.to_string(),
            app_key: app_key.to_string(),
            app_secret: app_secret.to_string(),
            symbols,
            symbol_prefix: String::new(),
            batch_size: 1,
            // KIS's documented limit for a real-account app key.
            requests_per_second: 20,
            burst: 0,
            jitter_margin: Duration::from_millis(25),
            refresh_interval: Duration::ZERO,
            holidays: Vec::new(),
            hot_window: Duration::from_secs(30),
            hot_min_interval: Duration::from_secs(1),
            hot_share_percent: 50,
            publish_trades: false,
            request_timeout: Duration::from_secs(5),
            max_in_flight: 16,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            recovery: Duration::from_secs(60),
            instrument_refresh: Duration::from_secs(30),
        }
    }

    pub fn mesh_symbol(&self, code: &str) -> String {
        format!("{}{code}", self.symbol_prefix)
    }

    /// The holidays as dates (after [`PollerSpec::violations`] found none bad).
    pub fn holiday_dates(&self) -> Vec<NaiveDate> {
        self.holidays
            .iter()
            .filter_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .collect()
    }

    /// Every rule the spec breaks, as field violations under `prefix` ("pollers[0].").
    pub fn violations(&self, prefix: &str) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        let mut bad = |field: &str, reason: String| {
            out.push(FieldViolation::new(format!("{prefix}{field}"), reason))
        };
        if self.name.is_empty() {
            bad("name", "must not be empty".into());
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            bad(
                "base_url",
                format!("{:?} must start with http:// or https://", self.base_url),
            );
        }
        if self.app_key.is_empty() {
            bad("app_key", "must not be empty".into());
        }
        if self.app_secret.is_empty() {
            bad("app_secret", "must not be empty".into());
        }
        if self.symbols.is_empty() {
            bad("symbols", "must name at least one code".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, code) in self.symbols.iter().enumerate() {
            if code.is_empty() || code.contains(',') {
                bad(
                    &format!("symbols[{i}]"),
                    format!("{code:?} is not a code (empty or contains a comma)"),
                );
            } else if let Err(reason) = check_symbol(&self.mesh_symbol(code)) {
                bad(&format!("symbols[{i}]"), reason);
            }
            if !seen.insert(code) {
                bad(
                    &format!("symbols[{i}]"),
                    format!("{code:?} is listed twice"),
                );
            }
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            bad(
                "batch_size",
                format!("must be 1 to {MAX_BATCH_SIZE}, got {}", self.batch_size),
            );
        }
        if self.requests_per_second == 0 {
            bad("requests_per_second", "must be at least 1".into());
        }
        if self.burst >= self.requests_per_second.max(1) {
            bad(
                "burst",
                format!(
                    "must be less than requests_per_second ({}), got {}",
                    self.requests_per_second, self.burst
                ),
            );
        }
        if self.jitter_margin > Duration::from_secs(1) {
            bad("jitter_margin", "must be at most 1s".into());
        }
        for (i, day) in self.holidays.iter().enumerate() {
            if NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
                bad(
                    &format!("holidays[{i}]"),
                    format!("{day:?} is not a date like \"2024-12-25\""),
                );
            }
        }
        if self.hot_share_percent > 100 {
            bad("hot_share_percent", "must be 0 to 100".into());
        }
        if self.max_in_flight == 0 {
            bad("max_in_flight", "must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            bad("request_timeout", "must be positive".into());
        }
        if self.recovery.is_zero() {
            bad("recovery", "must be positive".into());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            bad(
                "backoff_min",
                "must be positive and at most backoff_max".into(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PollerSpec {
        PollerSpec::new(
            "kis",
            "https://openapi.koreainvestment.com:9443",
            "key",
            "secret",
            vec!["005930".into(), "000660".into()],
        )
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(spec().violations("").is_empty());
        assert_eq!(spec().mesh_symbol("005930"), "005930");
    }

    #[test]
    fn every_rule() {
        let mut s = spec();
        s.name.clear();
        s.base_url = "ftp://x".into();
        s.symbols.push("005930".into());
        s.symbols.push("a,b".into());
        s.batch_size = 0;
        s.burst = 20;
        s.holidays = vec!["2024-12-25".into(), "25/12/2024".into()];
        s.hot_share_percent = 101;
        let fields: Vec<String> = s.violations("p.").into_iter().map(|v| v.field).collect();
        for f in [
            "p.name",
            "p.base_url",
            "p.symbols[2]",
            "p.symbols[3]",
            "p.batch_size",
            "p.burst",
            "p.holidays[1]",
            "p.hot_share_percent",
        ] {
            assert!(
                fields.contains(&f.to_string()),
                "{f} missing from {fields:?}"
            );
        }
        assert_eq!(s.holiday_dates().len(), 1);
    }
}
