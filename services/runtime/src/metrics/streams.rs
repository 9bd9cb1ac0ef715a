//! Live-stream instruments the services share: subscribers being served
//! from the fan-out, and subscribers that fell behind it and were caught up
//! from the Redis log. `stream` is the kind of stream ("trades",
//! "candles"), never a symbol or a client.

use super::catalogue::{STREAM_CAUGHT_UP, STREAM_LAGGED, STREAM_SUBSCRIBERS};

/// Counts one live subscription in [`STREAM_SUBSCRIBERS`] while it lives.
pub struct LiveSubscriber {
    stream: &'static str,
}

impl LiveSubscriber {
    pub fn new(stream: &'static str) -> Self {
        metrics::gauge!(STREAM_SUBSCRIBERS, "stream" => stream).increment(1.0);
        Self { stream }
    }

    /// The subscriber fell behind the live buffer.
    pub fn lagged(&self) {
        metrics::counter!(STREAM_LAGGED, "stream" => self.stream).increment(1);
    }

    /// A lagged subscriber was caught up from the log.
    pub fn caught_up(&self) {
        metrics::counter!(STREAM_CAUGHT_UP, "stream" => self.stream).increment(1);
    }
}

impl Drop for LiveSubscriber {
    fn drop(&mut self) {
        metrics::gauge!(STREAM_SUBSCRIBERS, "stream" => self.stream).decrement(1.0);
    }
}
