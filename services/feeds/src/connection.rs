//! One WebSocket connection to a venue: connect, subscribe (paced to the
//! venue's message limit), keep it alive by the venue's heartbeat rule, and
//! hand every trade frame to the feed. A socket that brings nothing (no
//! data, no ping, no pong) for `stall_timeout` is dead: the connection ends
//! and the feed reconnects.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::venue::{Frame, Heartbeat, Venue, VenueTrade};

/// What a connection tells its feed.
#[derive(Debug)]
pub enum Event {
    /// The socket is open and the subscriptions are sent.
    Connected { connection: u64 },
    /// Trades from one frame.
    Trades {
        connection: u64,
        trades: Vec<VenueTrade>,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Cancelled by the feed (shutdown, lease change, or a rotation that
    /// replaced it).
    Cancelled,
    /// Nothing arrived within the stall timeout.
    Stalled,
    /// The venue closed it (Binance's 24 h disconnect, a server restart).
    Closed(String),
    /// Connecting, reading or writing failed, or the venue refused a request.
    Failed(String),
}

pub struct Connection {
    pub venue: Arc<dyn Venue>,
    pub symbols: Vec<String>,
    pub stall_timeout: Duration,
    pub id: u64,
}

impl Connection {
    pub async fn run(self, events: mpsc::Sender<Event>, cancel: CancellationToken) -> Ended {
        tokio::select! {
            _ = cancel.cancelled() => Ended::Cancelled,
            ended = self.serve(&events) => ended,
        }
    }

    async fn serve(&self, events: &mpsc::Sender<Event>) -> Ended {
        let url = self.venue.ws_url(&self.symbols);
        let connect = tokio_tungstenite::connect_async(url.as_str());
        let (socket, _) = match tokio::time::timeout(self.stall_timeout, connect).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Ended::Failed(format!("connecting to {url}: {e}")),
            Err(_) => return Ended::Failed(format!("connecting to {url}: timed out")),
        };
        let (mut sink, mut stream) = socket.split();
        let pace = Duration::from_secs(1) / self.venue.limits().messages_per_second.max(1);
        for message in self.venue.subscribe_messages(&self.symbols) {
            if let Err(e) = sink.send(Message::text(message)).await {
                return Ended::Failed(format!("subscribing: {e}"));
            }
            tokio::time::sleep(pace).await;
        }
        if events
            .send(Event::Connected {
                connection: self.id,
            })
            .await
            .is_err()
        {
            return Ended::Cancelled;
        }
        let (beat_every, beat) = match self.venue.heartbeat() {
            // The venue pings (answered below); a ping of ours on a quiet
            // socket makes its pong prove the socket alive well inside the
            // stall timeout, whatever the venue's ping interval (RFC 6455
            // peers answer pings; Binance counts one toward its 5 messages a
            // second, so once per half stall timeout is nothing).
            Heartbeat::ServerPings => (
                Duration::from_secs(3600),
                Some(Message::Ping(Vec::new().into())),
            ),
            Heartbeat::ClientText { text, every } => (every, Some(Message::text(text))),
            Heartbeat::ClientPing { every } => (every, Some(Message::Ping(Vec::new().into()))),
        };
        // Beat well inside the stall timeout, so a quiet but healthy socket
        // answers before it is given up on.
        let beat_every = beat_every
            .min(self.stall_timeout / 2)
            .max(Duration::from_millis(10));
        let mut beats = tokio::time::interval_at(Instant::now() + beat_every, beat_every);
        beats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Only what the venue sends moves this; our own heartbeats do not.
        let mut heard = Instant::now();
        loop {
            let next = tokio::select! {
                _ = beats.tick() => {
                    if let Some(beat) = &beat
                        && let Err(e) = sink.send(beat.clone()).await
                    {
                        return Ended::Failed(format!("sending a heartbeat: {e}"));
                    }
                    continue;
                }
                next = tokio::time::timeout_at(heard + self.stall_timeout, stream.next()) => next,
            };
            heard = Instant::now();
            let message = match next {
                Err(_) => return Ended::Stalled,
                Ok(None) => return Ended::Closed("the venue closed the socket".into()),
                Ok(Some(Err(e))) => return Ended::Failed(format!("reading: {e}")),
                Ok(Some(Ok(message))) => message,
            };
            let frame = match message {
                Message::Text(text) => self.venue.parse(text.as_bytes()),
                Message::Binary(bytes) => self.venue.parse(&bytes),
                Message::Ping(payload) => {
                    if let Err(e) = sink.send(Message::Pong(payload)).await {
                        return Ended::Failed(format!("answering a ping: {e}"));
                    }
                    continue;
                }
                Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(reason) => {
                    return Ended::Closed(
                        reason
                            .map(|r| format!("closed by the venue: {} {}", r.code, r.reason))
                            .unwrap_or_else(|| "closed by the venue".into()),
                    );
                }
            };
            match frame {
                Frame::Trades(trades) if !trades.is_empty() => {
                    let event = Event::Trades {
                        connection: self.id,
                        trades,
                    };
                    if events.send(event).await.is_err() {
                        return Ended::Cancelled;
                    }
                }
                Frame::Error(reason) => return Ended::Failed(format!("venue error: {reason}")),
                _ => {}
            }
        }
    }
}
