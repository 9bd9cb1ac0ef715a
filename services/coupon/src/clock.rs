//! Where "now" comes from. Campaigns open and close by it, so tests drive a
//! [`ManualClock`] past start and end times instead of sleeping.

pub use tickmesh_runtime::clock::{Clock, ManualClock, SystemClock};
