//! Prometheus metrics: the `[metrics]` settings, the process-wide recorder,
//! the `/metrics` endpoint and the instruments the runtime owns (gRPC calls,
//! Redis commands, live streams).
//!
//! Instruments are recorded through the `metrics` facade wherever the work
//! happens; until [`install`] runs (a process with `metrics.listen` empty
//! never calls it) the facade has no recorder and every instrument is a
//! no-op, and the runtime's own wrappers ([`rpc`], [`redis`]) step aside
//! entirely. The recorder is global to the process and installed once, so
//! several meshes in one process (the tests) share it.
//!
//! Every metric, its labels and its meaning are listed once, in
//! [`catalogue::CATALOGUE`] (which also gives the `# HELP` lines).
//! Labels stay bounded: services, methods, status codes, command names,
//! outcomes, configured feed and poller names; never a user, and a symbol
//! only when `metrics.symbols` names it.

pub mod catalogue;
pub mod endpoint;
pub mod redis;
pub mod rpc;
pub mod streams;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

pub use endpoint::{Collect, MetricsServer};

/// Most symbols `metrics.symbols` may name: each adds a handful of series.
pub const MAX_SYMBOLS: usize = 200;

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the admin listener that serves `GET /metrics` (Prometheus
    /// text format), e.g. "0.0.0.0:9464". Empty: no endpoint, no recorder
    /// (every instrument is a no-op).
    pub listen: String,
    /// Symbols whose aggregation lag and flush state are exported with a
    /// `symbol` label. None by default: per-symbol series are opt-in.
    #[serde(deserialize_with = "crate::config::list_or_csv")]
    pub symbols: Vec<String>,
}

impl MetricsConfig {
    /// The listen address, `None` when metrics are off (validated at load).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        if self.listen.is_empty() {
            return None;
        }
        self.listen.parse().ok()
    }

    /// Checks the settings; returns the key and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !self.listen.is_empty() && self.listen.parse::<SocketAddr>().is_err() {
            return Err((
                "metrics.listen".into(),
                format!(
                    "{:?} is not an address like \"0.0.0.0:9464\" (empty: no metrics endpoint)",
                    self.listen
                ),
            ));
        }
        if self.symbols.len() > MAX_SYMBOLS {
            return Err((
                "metrics.symbols".into(),
                format!(
                    "{} symbols is more than the {MAX_SYMBOLS} allowed: per-symbol series are for the few symbols you watch",
                    self.symbols.len()
                ),
            ));
        }
        for (i, symbol) in self.symbols.iter().enumerate() {
            if let Err(reason) = tickmesh_core::ids::check_symbol(symbol) {
                return Err((format!("metrics.symbols[{i}]"), reason.to_string()));
            }
        }
        Ok(())
    }
}

/// Buckets of the latency histograms, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of stream lifetimes, in seconds: 1 s to a day.
pub const STREAM_BUCKETS: &[f64] = &[1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0];

/// How often histogram samples are folded into their buckets, so memory
/// stays flat between scrapes (or without any).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and describes every metric of the catalogue.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(catalogue::RPC_STREAM_DURATION.into()),
                        STREAM_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = ::metrics::set_global_recorder(recorder) {
                // Another recorder was installed first (an embedding
                // program's): the endpoint then shows only what reaches ours.
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics will be empty");
            }
            catalogue::describe();
            ::metrics::gauge!(catalogue::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"))
                .set(1.0);
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// True once [`install`] ran in this process: the runtime's wrappers only
/// time calls and commands then.
pub fn is_installed() -> bool {
    HANDLE.get().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_and_symbols_are_validated() {
        let mut config = MetricsConfig::default();
        assert_eq!(config.listen_addr(), None);
        assert!(config.validate().is_ok());
        config.listen = "0.0.0.0:9464".into();
        assert_eq!(config.listen_addr(), Some("0.0.0.0:9464".parse().unwrap()));
        config.listen = "nowhere".into();
        assert_eq!(config.validate().unwrap_err().0, "metrics.listen");
        config.listen = String::new();
        config.symbols = vec!["BTCUSDT".into(), "bad symbol".into()];
        assert_eq!(config.validate().unwrap_err().0, "metrics.symbols[1]");
        config.symbols = (0..=MAX_SYMBOLS).map(|i| format!("S{i}")).collect();
        assert_eq!(config.validate().unwrap_err().0, "metrics.symbols");
    }
}
