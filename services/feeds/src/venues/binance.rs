//! binance (being written).
