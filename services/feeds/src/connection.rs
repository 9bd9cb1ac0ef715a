//! One WebSocket connection to a venue: connect, subscribe (paced to the
//! venue's message limit), keep it alive by the venue's heartbeat rule, and
//! hand every trade frame to the feed. A socket that brings nothing (no
//! data, no ping, no pong) for `stall_timeout` is dead: the connection ends
//! and the feed reconnects.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
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
    /// Trades of the frames read from the socket at once, in order.
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

/// At most this many frames already read from the socket go to the feed as
/// one event.
const DRAIN_FRAMES: usize = 512;

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
        // The stall timer is armed once and moved on only when it fires, not
        // on every frame (a timer per frame costs at 50k frames a second).
        let mut heard = Instant::now();
        let stall = tokio::time::sleep_until(heard + self.stall_timeout);
        tokio::pin!(stall);
        let mut trades: Vec<VenueTrade> = Vec::new();
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
                () = &mut stall => {
                    let due = heard + self.stall_timeout;
                    if due <= Instant::now() {
                        return Ended::Stalled;
                    }
                    stall.as_mut().reset(due);
                    continue;
                }
                next = stream.next() => next,
            };
            heard = Instant::now();
            // This frame and every one already read from the socket, up to a
            // bound, go to the feed as one event (no waiting for more).
            let mut next = Some(next);
            let mut frames = 0;
            let mut ended = None;
            while let Some(message) = next.take() {
                if let Err(e) = self.take(message, &mut sink, &mut trades).await {
                    ended = Some(e);
                    break;
                }
                frames += 1;
                if frames < DRAIN_FRAMES {
                    next = stream.next().now_or_never();
                }
            }
            if !trades.is_empty() {
                let event = Event::Trades {
                    connection: self.id,
                    trades: std::mem::take(&mut trades),
                };
                if events.send(event).await.is_err() {
                    return Ended::Cancelled;
                }
            }
            if let Some(ended) = ended {
                return ended;
            }
        }
    }

    /// One message from the socket: its trades into `trades`, pings
    /// answered; `Err` when the connection is over.
    async fn take<S>(
        &self,
        next: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        sink: &mut S,
        trades: &mut Vec<VenueTrade>,
    ) -> Result<(), Ended>
    where
        S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        let message = match next {
            None => return Err(Ended::Closed("the venue closed the socket".into())),
            Some(Err(e)) => return Err(Ended::Failed(format!("reading: {e}"))),
            Some(Ok(message)) => message,
        };
        let frame = match message {
            Message::Text(text) => self.venue.parse(text.as_bytes()),
            Message::Binary(bytes) => self.venue.parse(&bytes),
            Message::Ping(payload) => {
                return sink
                    .send(Message::Pong(payload))
                    .await
                    .map_err(|e| Ended::Failed(format!("answering a ping: {e}")));
            }
            Message::Pong(_) | Message::Frame(_) => return Ok(()),
            Message::Close(reason) => {
                return Err(Ended::Closed(
                    reason
                        .map(|r| format!("closed by the venue: {} {}", r.code, r.reason))
                        .unwrap_or_else(|| "closed by the venue".into()),
                ));
            }
        };
        match frame {
            Frame::Trades(mut more) => trades.append(&mut more),
            Frame::Error(reason) => return Err(Ended::Failed(format!("venue error: {reason}"))),
            _ => {}
        }
        Ok(())
    }
}
