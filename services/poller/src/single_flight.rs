//! Single flight: many askers of one key share one piece of work. The first asker leads (does
//! the work); everyone who asks while it runs waits for the same answer.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type Flights<K, V> = Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>;

pub struct SingleFlight<K, V> {
    flights: Flights<K, V>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            flights: Arc::default(),
        }
    }
}

/// The asker that does the work; [`Leader::finish`] answers everyone. Dropped unfinished
/// (cancelled, panicked), the flight ends and its askers get no answer.
pub struct Leader<K: Hash + Eq, V> {
    key: Option<K>,
    flights: Flights<K, V>,
    tx: watch::Sender<Option<V>>,
}

impl<K: Hash + Eq, V> Leader<K, V> {
    pub fn finish(mut self, value: V) {
        self.leave();
        self.tx.send_replace(Some(value));
    }

    fn leave(&mut self) {
        if let Some(key) = self.key.take() {
            self.flights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }
}

impl<K: Hash + Eq, V> Drop for Leader<K, V> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// An asker's place in a flight.
pub struct Ticket<K: Hash + Eq, V> {
    /// Some for the one asker who must do the work.
    pub leader: Option<Leader<K, V>>,
    answer: watch::Receiver<Option<V>>,
}

impl<K: Hash + Eq, V: Clone> Ticket<K, V> {
    /// The flight's answer, or None when it ended without one.
    pub async fn answer(mut self) -> Option<V> {
        match self.answer.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }

    /// A handle on the answer for an asker that hands the leadership to a task.
    pub fn split(self) -> (Option<Leader<K, V>>, impl Future<Output = Option<V>>) {
        let mut answer = self.answer;
        let leader = self.leader;
        (leader, async move {
            match answer.wait_for(Option::is_some).await {
                Ok(v) => v.clone(),
                Err(_) => None,
            }
        })
    }
}

impl<K: Hash + Eq + Clone, V> SingleFlight<K, V> {
    /// Joins the flight of `key`, starting it (and leading it) when there is none.
    pub fn join(&self, key: K) -> Ticket<K, V> {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = flights.get(&key) {
            return Ticket {
                leader: None,
                answer: rx.clone(),
            };
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.clone(), rx.clone());
        Ticket {
            leader: Some(Leader {
                key: Some(key),
                flights: self.flights.clone(),
                tx,
            }),
            answer: rx,
        }
    }

    /// Flights running now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn askers_during_a_flight_share_its_answer_and_the_next_ask_starts_anew() {
        let flights: SingleFlight<&str, u32> = SingleFlight::default();
        let first = flights.join("005930");
        let second = flights.join("005930");
        assert!(first.leader.is_some());
        assert!(second.leader.is_none());
        let (leader, first_answer) = first.split();
        leader.unwrap().finish(7);
        assert_eq!(first_answer.await, Some(7));
        assert_eq!(second.answer().await, Some(7));
        assert_eq!(flights.in_flight(), 0);
        assert!(flights.join("005930").leader.is_some());
    }

    #[tokio::test]
    async fn a_dropped_leader_ends_the_flight_without_an_answer() {
        let flights: SingleFlight<&str, u32> = SingleFlight::default();
        let first = flights.join("x");
        let second = flights.join("x");
        drop(first);
        assert_eq!(second.answer().await, None);
        assert_eq!(flights.in_flight(), 0);
    }
}
