//! The one error type of the crate.

use std::fmt;

/// Why a block could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The input ends before the block does (fewer bytes than its header says).
    Truncated,
    /// The CRC-32 stored at the end does not match the bytes before it.
    BadChecksum,
    /// The first byte names a format version this code does not know.
    UnknownVersion(u8),
    /// The checksum matched but the content is inconsistent (or too large).
    Malformed(String),
    /// `encode` was given candles whose `open_ns` are not strictly increasing.
    NotSorted,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Truncated => f.write_str("candle block is truncated"),
            BlockError::BadChecksum => f.write_str("candle block checksum mismatch"),
            BlockError::UnknownVersion(v) => write!(f, "unknown candle block format version {v}"),
            BlockError::Malformed(why) => write!(f, "malformed candle block: {why}"),
            BlockError::NotSorted => f.write_str("candle open times are not strictly increasing"),
        }
    }
}

impl std::error::Error for BlockError {}

pub(crate) fn malformed(why: impl Into<String>) -> BlockError {
    BlockError::Malformed(why.into())
}
