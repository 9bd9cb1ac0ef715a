//! Which codes the next request asks for, on one instance.
//!
//! In order: codes whose last request failed in a way worth retrying; *hot* codes (read by a
//! client within `hot_window` and not polled within `hot_min_interval`, most recently read
//! first), up to `hot_share_percent` of all codes sent so the full refresh keeps moving (all of
//! the request when the full refresh has nothing to do); closed codes not yet polled since
//! their market closed (once each, so the quote shows the last price); then the shared full
//! refresh ([`crate::refresh_cursor`]) over the codes that are open now.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Debug, Default)]
struct CodeState {
    last_polled: Option<Instant>,
    in_flight: bool,
    open: bool,
    /// Closed, and not polled since it closed (or since start).
    closed_poll_due: bool,
}

/// The rules of hot codes.
#[derive(Clone, Copy, Debug)]
pub struct HotRules {
    pub window: Duration,
    pub min_interval: Duration,
    pub share_percent: u8,
}

/// What [`Schedule::pick`] chose.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pick {
    /// Indices of the codes, in the order picked.
    pub codes: Vec<usize>,
    /// How many of them were hot.
    pub hot: usize,
}

pub struct Schedule {
    codes: Vec<String>,
    index: HashMap<String, usize>,
    state: Vec<CodeState>,
    touched: HashMap<usize, Instant>,
    retry: VecDeque<usize>,
    open_list: Vec<usize>,
    rules: HotRules,
    sent: u64,
    sent_hot: u64,
}

impl Schedule {
    /// All codes start closed until [`Schedule::set_open`] says otherwise.
    pub fn new(codes: Vec<String>, rules: HotRules) -> Self {
        let index = codes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        let state = vec![
            CodeState {
                closed_poll_due: true,
                ..Default::default()
            };
            codes.len()
        ];
        Self {
            codes,
            index,
            state,
            touched: HashMap::new(),
            retry: VecDeque::new(),
            open_list: Vec::new(),
            rules,
            sent: 0,
            sent_hot: 0,
        }
    }

    pub fn code(&self, i: usize) -> &str {
        &self.codes[i]
    }

    pub fn index_of(&self, code: &str) -> Option<usize> {
        self.index.get(code).copied()
    }

    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    pub fn is_open(&self, i: usize) -> bool {
        self.state[i].open
    }

    /// Codes open now, in spec order: the list the shared full refresh walks.
    pub fn open_len(&self) -> usize {
        self.open_list.len()
    }

    /// Sets which codes are open (one flag per code, in spec order). A code that just closed
    /// becomes due for one last poll.
    pub fn set_open(&mut self, open: &[bool]) {
        for (s, &now_open) in self.state.iter_mut().zip(open) {
            if s.open && !now_open {
                s.closed_poll_due = true;
            }
            if now_open {
                s.closed_poll_due = false;
            }
            s.open = now_open;
        }
        self.open_list = (0..self.state.len())
            .filter(|&i| self.state[i].open)
            .collect();
    }

    /// A client read the code.
    pub fn touch(&mut self, i: usize, now: Instant) {
        self.touched.insert(i, now);
    }

    fn is_hot(&self, i: usize, touched: Instant, now: Instant) -> bool {
        let s = &self.state[i];
        s.open
            && !s.in_flight
            && now.saturating_duration_since(touched) <= self.rules.window
            && s.last_polled
                .is_none_or(|p| now.saturating_duration_since(p) >= self.rules.min_interval)
    }

    fn hot_codes(&mut self, now: Instant) -> Vec<usize> {
        let window = self.rules.window;
        self.touched
            .retain(|_, t| now.saturating_duration_since(*t) <= window);
        let mut hot: Vec<(Instant, usize)> = self
            .touched
            .iter()
            .filter(|&(&i, &t)| self.is_hot(i, t, now))
            .map(|(&i, &t)| (t, i))
            .collect();
        hot.sort_unstable_by(|a, b| b.cmp(a));
        hot.into_iter().map(|(_, i)| i).collect()
    }

    fn retry_due(&self, i: usize) -> bool {
        let s = &self.state[i];
        !s.in_flight && (s.open || s.closed_poll_due)
    }

    /// True when there is something to send besides the full refresh.
    pub fn has_local_work(&mut self, now: Instant) -> bool {
        self.retry.iter().any(|&i| self.retry_due(i))
            || !self.hot_codes(now).is_empty()
            || self
                .state
                .iter()
                .any(|s| !s.open && s.closed_poll_due && !s.in_flight)
    }

    /// Picks up to `batch` codes from the retry list, the hot codes and the closed codes due
    /// once, and marks them in flight. `refresh_idle` says the full refresh has nothing to send
    /// now, so hot codes may take the whole request.
    pub fn pick(&mut self, now: Instant, batch: usize, refresh_idle: bool) -> Pick {
        let mut pick = Pick::default();
        while pick.codes.len() < batch
            && let Some(i) = self.retry.pop_front()
        {
            if self.retry_due(i) {
                self.state[i].in_flight = true;
                pick.codes.push(i);
            }
        }
        let quota = if refresh_idle {
            batch
        } else {
            let allowed = (self.sent + batch as u64) * u64::from(self.rules.share_percent) / 100;
            allowed.saturating_sub(self.sent_hot) as usize
        };
        for i in self.hot_codes(now) {
            if pick.codes.len() >= batch || pick.hot >= quota {
                break;
            }
            self.state[i].in_flight = true;
            pick.codes.push(i);
            pick.hot += 1;
        }
        for i in 0..self.state.len() {
            if pick.codes.len() >= batch {
                break;
            }
            let s = &mut self.state[i];
            if !s.open && s.closed_poll_due && !s.in_flight {
                s.in_flight = true;
                pick.codes.push(i);
            }
        }
        self.count_sent(pick.codes.len(), pick.hot);
        pick
    }

    /// The codes at positions `start .. start + count` of the open list (claimed from the
    /// shared full refresh), marked in flight. Positions past the list (it shrank since the
    /// claim) are skipped.
    pub fn take_refresh(&mut self, start: usize, count: usize) -> Vec<usize> {
        let end = (start + count).min(self.open_list.len());
        let codes: Vec<usize> = self.open_list.get(start..end).unwrap_or(&[]).to_vec();
        for &i in &codes {
            self.state[i].in_flight = true;
        }
        self.count_sent(codes.len(), 0);
        codes
    }

    /// Marks one code in flight outside the picks (a single-flight fetch); false when it
    /// already is.
    pub fn begin(&mut self, i: usize) -> bool {
        !std::mem::replace(&mut self.state[i].in_flight, true)
    }

    /// Ends an in-flight mark that sent nothing (a fetch that got no slot in time).
    pub fn abandon(&mut self, i: usize) {
        self.state[i].in_flight = false;
    }

    fn count_sent(&mut self, codes: usize, hot: usize) {
        self.sent += codes as u64;
        self.sent_hot += hot as u64;
    }

    /// The request for `codes` ended: polled (`ok`), failed for good this round (`retry`
    /// false: wait for the next full refresh), or failed in a way worth retrying soon.
    pub fn finish(&mut self, codes: &[usize], ok: bool, retry: bool, now: Instant) {
        for &i in codes {
            let s = &mut self.state[i];
            s.in_flight = false;
            if ok || !retry {
                s.last_polled = Some(now);
                if !s.open {
                    s.closed_poll_due = false;
                }
            } else if !self.retry.contains(&i) {
                self.retry.push_back(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(n: usize, share: u8) -> Schedule {
        let mut s = Schedule::new(
            (0..n).map(|i| format!("{i:06}")).collect(),
            HotRules {
                window: Duration::from_secs(30),
                min_interval: Duration::from_secs(1),
                share_percent: share,
            },
        );
        s.set_open(&vec![true; n]);
        s
    }

    #[test]
    fn hot_codes_go_first_most_recent_first_within_their_share() {
        let mut s = schedule(10, 50);
        let t0 = Instant::now();
        s.touch(7, t0);
        s.touch(3, t0 + Duration::from_millis(5));
        s.touch(5, t0 + Duration::from_millis(10));
        let now = t0 + Duration::from_millis(20);
        let pick = s.pick(now, 4, false);
        // Half of 4 codes may be hot.
        assert_eq!(
            pick,
            Pick {
                codes: vec![5, 3],
                hot: 2
            }
        );
        s.finish(&pick.codes, true, false, now);
        // The refresh has nothing to do: the remaining hot code takes the request.
        let pick = s.pick(now, 4, true);
        assert_eq!(pick.codes, vec![7]);
        s.finish(&pick.codes, true, false, now);
        // Polled less than a second ago: not hot again yet, even when read again.
        s.touch(5, now);
        assert!(s.pick(now, 4, true).codes.is_empty());
        // A second later every code read within the hot window is due again, the most
        // recently read first.
        let later = now + Duration::from_secs(1);
        assert_eq!(s.pick(later, 4, true).codes, vec![5, 3, 7]);
    }

    #[test]
    fn one_code_requests_alternate_between_hot_and_refresh() {
        let mut s = schedule(16, 50);
        let t0 = Instant::now();
        for i in 8..16 {
            s.touch(i, t0);
        }
        let mut pattern = String::new();
        let mut refreshed = 0;
        for _ in 0..16 {
            let p = s.pick(t0, 1, false);
            if p.hot == 1 {
                pattern.push('h');
            } else {
                assert!(p.codes.is_empty());
                assert_eq!(s.take_refresh(refreshed, 1), vec![refreshed]);
                refreshed += 1;
                pattern.push('r');
            }
        }
        assert_eq!(pattern, "rh".repeat(8));
    }

    #[test]
    fn failures_are_retried_first_and_closed_codes_polled_once() {
        let mut s = schedule(3, 50);
        let now = Instant::now();
        let codes = s.take_refresh(0, 2);
        assert_eq!(codes, vec![0, 1]);
        s.finish(&codes, false, true, now);
        assert_eq!(s.pick(now, 1, false).codes, vec![0]);
        // Code 2 closes: it is polled once, then left alone.
        s.set_open(&[true, true, false]);
        assert_eq!(s.open_len(), 2);
        let p = s.pick(now, 5, false);
        assert_eq!(p.codes, vec![1, 2]);
        s.finish(&p.codes, true, false, now);
        assert!(!s.has_local_work(now));
        assert!(s.pick(now, 5, true).codes.is_empty());
        // Reads of a closed code do not make it hot.
        s.touch(2, now);
        assert!(!s.has_local_work(now + Duration::from_secs(2)));
    }

    #[test]
    fn refresh_positions_follow_the_open_list() {
        let mut s = schedule(5, 50);
        s.set_open(&[false, true, false, true, true]);
        assert_eq!(s.take_refresh(1, 5), vec![3, 4]);
        assert!(s.take_refresh(3, 1).is_empty());
        assert!(!s.begin(3));
    }
}
