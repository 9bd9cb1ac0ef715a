//! Transport-free building blocks shared by every tickmesh service: exact
//! decimals, human durations, identifiers, page tokens and the domain error
//! type that the runtime maps to gRPC status codes in one place.

pub mod decimal;
pub mod duration;
pub mod error;
pub mod ids;
pub mod page_token;
pub mod time_zone;

pub use error::{Error, FieldViolation, Result};
