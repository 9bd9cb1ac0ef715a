//! `[[pollers]]`: request/response quote upstreams a process polls (a
//! broker's current-price REST API), one table per upstream app key. The
//! rules beyond the basics are the poller's own (`tickmesh_poller::PollerSpec`),
//! checked when the process starts.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickmesh_core::duration::serde_human;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollerConfig {
    /// Unique name; its shared full-refresh cursor is under it.
    pub name: String,
    /// The upstream's REST base, e.g. `https://openapi.koreainvestment.com:9443`.
    pub base_url: String,
    /// The app key and secret, or `env:VAR` to read them from the
    /// environment at start (keep secrets out of config files).
    pub app_key: String,
    pub app_secret: String,
    /// Codes as the upstream spells them ("005930").
    pub symbols: Vec<String>,
    /// Prepended to each code to make the mesh symbol ("krx:").
    pub symbol_prefix: String,
    /// Codes per request: 1 uses the current-price API, more the batch endpoint.
    pub batch_size: usize,
    /// The upstream's limit for this app key, for the whole mesh.
    pub requests_per_second: u32,
    /// Requests that may go back to back after a quiet spell (out of the same budget).
    pub burst: u32,
    /// Shortest time between the starts of two full refreshes (0: back to back).
    #[serde(with = "serde_human")]
    pub refresh_interval: Duration,
    /// Local dates (`YYYY-MM-DD`) on which the market does not open.
    pub holidays: Vec<String>,
    /// A client's read makes a symbol hot (refreshed first) for this long.
    #[serde(with = "serde_human")]
    pub hot_window: Duration,
    /// Also publish a trade when the cumulative volume grew, so candles get ticks.
    pub publish_trades: bool,
    /// How long a `GetQuotes` miss waits for the one upstream call it triggers
    /// before answering with what is stored.
    #[serde(with = "serde_human")]
    pub miss_wait: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            base_url: String::new(),
            app_key: String::new(),
            app_secret: String::new(),
            symbols: Vec::new(),
            symbol_prefix: String::new(),
            batch_size: 1,
            requests_per_second: 20,
            burst: 0,
            refresh_interval: Duration::ZERO,
            holidays: Vec::new(),
            hot_window: Duration::from_secs(30),
            publish_trades: false,
            miss_wait: Duration::from_millis(500),
        }
    }
}

impl PollerConfig {
    /// `value`, or the environment variable it names as `env:VAR`.
    pub fn resolve_secret(
        value: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<String, String> {
        match value.strip_prefix("env:") {
            Some(var) => env(var).ok_or_else(|| format!("environment variable {var} is not set")),
            None => Ok(value.to_string()),
        }
    }

    /// The basic rules: the key under `pollers[i]` and the reason.
    pub fn violation(&self) -> Option<(&'static str, String)> {
        if self.name.is_empty() {
            return Some(("name", "must not be empty".into()));
        }
        if self.symbols.is_empty() {
            return Some(("symbols", "must name at least one code".into()));
        }
        if self.miss_wait > Duration::from_secs(30) {
            return Some(("miss_wait", "must be at most 30s".into()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_environment_when_asked() {
        let env = |k: &str| (k == "KIS_KEY").then(|| "k-123".to_string());
        assert_eq!(
            PollerConfig::resolve_secret("env:KIS_KEY", env).unwrap(),
            "k-123"
        );
        assert_eq!(PollerConfig::resolve_secret("plain", env).unwrap(), "plain");
        let e = PollerConfig::resolve_secret("env:NOPE", env).unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
    }
}
