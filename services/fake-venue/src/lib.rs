//! Fake venue (being written).
