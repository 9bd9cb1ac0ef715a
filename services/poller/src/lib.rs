//! `tickmesh-poller`: quotes from request/response upstreams, such as a broker's current-price
//! REST API (modelled on Korea Investment & Securities' "KIS Developers" `inquire-price`), into
//! MarketFeed's quote hash, within the upstream's rate limit for the whole mesh.
//!
//! - [`spec`]: what a poller is ([`PollerSpec`]) and its validation.
//! - [`upstream`]: the REST client: token, one-code and batch requests, rate-limit answers.
//! - [`rate_limit`]: one GCRA limit per app key in Redis, shared by every instance, with a
//!   mesh-wide pause after a rate-limit answer.
//! - [`refresh_cursor`]: the full refresh as one cursor in Redis, split among instances.
//! - [`market_hours`]: open or closed from the instrument's sessions and the holidays.
//! - [`mesh_flight`]: the same single flight across instances (a short lock in Redis).
//! - [`schedule`]: what the next request asks for (retries, hot codes, the full refresh).
//! - [`shared_token`]: one access token per app key for the whole mesh, in Redis.
//! - [`single_flight`]: one upstream request for many concurrent askers of a symbol.
//! - [`poller`]: the running instance ([`Poller`]); [`status`]: its counters.
//! - [`bench`]: full-refresh time against the fake broker, next to its floor.
//!
//! Several instances of one poller (the same spec on several mesh processes) share the app
//! key's rate limit and split each full refresh between them; hot codes and `fetch_now` are
//! served by the instance the client reached, but a miss's upstream request is made once in
//! the mesh ([`mesh_flight`]), and the access token is issued once and shared
//! ([`shared_token`]). Not shared between instances: the one poll of a closed code after start
//! or close (each instance makes its own). The background loop books at most about one slot ahead, so
//! a `fetch_now` waits for at most a few slots per instance before its own.
//!
//! ```no_run
//! # async fn demo(feed: std::sync::Arc<tickmesh_marketfeed::MarketFeed>) -> tickmesh_core::Result<()> {
//! use std::time::Duration;
//! use tickmesh_poller::{Poller, PollerSpec};
//! let mut spec = PollerSpec::new(
//!     "kis",
//!     "https://openapi.koreainvestment.com:9443",
//!     "<app key>",
//!     "<app secret>",
//!     vec!["005930".into(), "000660".into()],
//! );
//! spec.symbol_prefix = "krx:".into();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let poller = Poller::start(spec, feed, "instance-1", shutdown)?;
//! poller.touch("krx:005930"); // a client read it: refresh it first
//! let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
//! match poller.fetch_now("krx:005930", deadline).await {
//!     Some(fresh) => println!("{} at {}", fresh.price, fresh.time_ns),
//!     None => { /* serve the stored quote with its age */ }
//! }
//! # Ok(()) }
//! ```

pub mod bench;
pub mod from_config;
pub mod market_hours;
pub mod mesh_flight;
pub mod poller;
pub mod quote_source;
pub mod rate_limit;
pub mod refresh_cursor;
pub mod schedule;
pub mod shared_token;
pub mod single_flight;
pub mod spec;
pub mod status;
pub mod upstream;

pub use bench::{BenchConfig, BenchReport, bench_full_refresh};
pub use poller::Poller;
pub use spec::PollerSpec;
pub use status::PollerStatus;
pub use tickmesh_marketfeed::polled_quotes::PolledQuote;
