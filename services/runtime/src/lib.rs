//! What every tickmesh server shares: layered config, the gRPC server with
//! health, reflection, keepalive, limits and graceful shutdown, admin auth, the
//! one map from domain errors to gRPC status codes, telemetry (logs and
//! OpenTelemetry traces with W3C propagation) and the Redis connection.

pub mod auth;
pub mod clock;
pub mod config;
pub mod feeds_config;
pub mod health;
pub mod interest;
pub mod metrics;
pub mod pollers_config;
pub mod proto_time;
pub mod redis_conn;
pub mod redis_slots;
pub mod redis_tls;
pub mod replica_acks;
pub mod server;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod web;

pub use config::Config;
pub use redis_conn::{RedisConn, RedisHandle};
pub mod redis_cluster;
pub mod redis_server;
pub mod stream_hub;
pub mod test_certs;
