//! Quote poller (being written).
