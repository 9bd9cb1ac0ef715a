//! Feeds: the mesh's own connections to venues. Each venue is one file under
//! [`venues`] behind the [`venue::Venue`] trait; the connection runner,
//! ownership leases and gap backfill are shared.

pub mod decimal_text;
pub mod http;
pub mod venue;
pub mod venues;
