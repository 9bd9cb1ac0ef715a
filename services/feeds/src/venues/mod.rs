//! One file per venue.

pub mod binance;
pub mod bybit;
pub mod upbit;
