//! bybit (being written).
