//! `[[pollers]]` settings into a [`PollerSpec`].

use tickmesh_runtime::pollers_config::PollerConfig;

use crate::spec::PollerSpec;

/// The spec of a poller config; app key and secret written `env:VAR` are
/// read from the environment through `env`.
pub fn spec(
    config: &PollerConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PollerSpec, String> {
    let key =
        PollerConfig::resolve_secret(&config.app_key, &env).map_err(|e| format!("app_key: {e}"))?;
    let secret = PollerConfig::resolve_secret(&config.app_secret, &env)
        .map_err(|e| format!("app_secret: {e}"))?;
    let mut spec = PollerSpec::new(
        &config.name,
        &config.base_url,
        &key,
        &secret,
        config.symbols.clone(),
    );
    spec.symbol_prefix = config.symbol_prefix.clone();
    spec.batch_size = config.batch_size;
    spec.requests_per_second = config.requests_per_second;
    spec.burst = config.burst;
    spec.refresh_interval = config.refresh_interval;
    spec.holidays = config.holidays.clone();
    spec.hot_window = config.hot_window;
    spec.publish_trades = config.publish_trades;
    Ok(spec)
}
