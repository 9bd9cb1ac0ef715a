//! Where "now" comes from. Window boundaries depend on it, so tests drive a
//! [`ManualClock`] across hours and days instead of sleeping.

pub use tickmesh_runtime::clock::{Clock, ManualClock, SystemClock};
