//! upbit (being written).
