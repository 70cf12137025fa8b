//! Client-side routing over llama-server endpoints, as plain bookkeeping (no I/O, no clock of
//! its own): which endpoint takes a request (document affinity, then the least busy), a bounded
//! in-flight window per endpoint (its slots), and failures: an endpoint that fails cools down
//! for a growing backoff and is taken out after [`MAX_FAILURES`] failures in a row. The pass in
//! `pass.rs` drives it; unit tests drive it with made-up clocks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures in a row that take an endpoint out (for the rest of the pass; it is probed again
/// before the next one).
pub const MAX_FAILURES: u32 = 2;

/// The first backoff after a failure; doubled per failure in a row, at most [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(250);
pub const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// One endpoint's state.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    /// Requests it may hold at once (its slots).
    pub window: usize,
    pub in_flight: usize,
    /// Failures in a row (reset by a success).
    pub failures: u32,
    /// Not given requests before this instant (backing off after a failure).
    pub cooling_until: Option<Instant>,
    /// Why it was taken out; `None` while it is in the fleet.
    pub down: Option<String>,
    /// Requests answered by it.
    pub served: u64,
}

impl Endpoint {
    fn usable(&self, now: Instant) -> bool {
        self.down.is_none() && self.in_flight < self.window && self.cooling_until.is_none_or(|t| now >= t)
    }
}

/// Where a request goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// This endpoint; its in-flight count was taken.
    Endpoint(usize),
    /// Nothing free now (windows full, or backing off); ask again after an answer or a backoff.
    Wait,
    /// Every endpoint is taken out.
    AllDown,
}

/// The endpoints and the document affinity (prefix key -> endpoint).
#[derive(Debug, Clone)]
pub struct Fleet {
    pub endpoints: Vec<Endpoint>,
    affinity: HashMap<u64, usize>,
}

impl Fleet {
    /// A fleet of `(url, slots)`; an endpoint with a reason is down from the start.
    pub fn new(endpoints: impl IntoIterator<Item = (String, usize, Option<String>)>) -> Self {
        let endpoints = endpoints
            .into_iter()
            .map(|(url, window, down)| Endpoint {
                url,
                window: window.max(1),
                in_flight: 0,
                failures: 0,
                cooling_until: None,
                down,
                served: 0,
            })
            .collect();
        Fleet { endpoints, affinity: HashMap::new() }
    }

    /// Chooses an endpoint for a request with document key `key` and takes one of its window.
    /// A document stays on its endpoint while that one is in the fleet; when it is busy, the
    /// request goes to an idle endpoint instead (and the document moves there), else waits.
    /// A new document, or a request without one, goes to the least busy endpoint (in-flight
    /// relative to window; ties to the first).
    pub fn pick(&mut self, key: Option<u64>, now: Instant) -> Pick {
        if self.endpoints.iter().all(|e| e.down.is_some()) {
            return Pick::AllDown;
        }
        let home = key.and_then(|k| self.affinity.get(&k).copied()).filter(|&i| self.endpoints[i].down.is_none());
        let chosen = match home {
            Some(i) if self.endpoints[i].usable(now) => Some(i),
            Some(_) => self.endpoints.iter().position(|e| e.usable(now) && e.in_flight == 0),
            None => self.least_busy(now),
        };
        let Some(i) = chosen else { return Pick::Wait };
        if let Some(k) = key {
            self.affinity.insert(k, i);
        }
        self.endpoints[i].in_flight += 1;
        Pick::Endpoint(i)
    }

    fn least_busy(&self, now: Instant) -> Option<usize> {
        let usable = self.endpoints.iter().enumerate().filter(|(_, e)| e.usable(now));
        // in_flight / window compared without division: a.in * b.win < b.in * a.win.
        usable.min_by(|(_, a), (_, b)| (a.in_flight * b.window).cmp(&(b.in_flight * a.window))).map(|(i, _)| i)
    }

    /// Endpoint `i` answered a request.
    pub fn succeeded(&mut self, i: usize) {
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        e.failures = 0;
        e.cooling_until = None;
        e.served += 1;
    }

    /// Endpoint `i` turned a request down for the request's own sake (a 4xx: too long, a bad
    /// schema): the endpoint is fine.
    pub fn released(&mut self, i: usize) {
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        e.served += 1;
    }

    /// Endpoint `i` failed a request (transport error, 5xx, garbage). It backs off, or is taken
    /// out after [`MAX_FAILURES`] in a row; returns whether it was taken out.
    pub fn failed(&mut self, i: usize, reason: &str, now: Instant) -> bool {
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        if e.down.is_some() {
            return true;
        }
        e.failures += 1;
        if e.failures >= MAX_FAILURES {
            e.down = Some(reason.to_owned());
            e.cooling_until = None;
            self.affinity.retain(|_, home| *home != i);
            return true;
        }
        e.cooling_until = Some(now + backoff(e.failures));
        false
    }

    /// Takes endpoint `i` out now (it answered its health check wrongly).
    pub fn take_out(&mut self, i: usize, reason: String) {
        self.endpoints[i].down = Some(reason);
        self.affinity.retain(|_, home| *home != i);
    }

    /// Puts endpoint `i` back (it answered its health check again).
    pub fn bring_back(&mut self, i: usize) {
        let e = &mut self.endpoints[i];
        e.down = None;
        e.failures = 0;
        e.cooling_until = None;
    }

    /// The earliest instant after `now` at which a backing-off endpoint takes requests again.
    pub fn next_ready(&self, now: Instant) -> Option<Instant> {
        self.endpoints.iter().filter(|e| e.down.is_none()).filter_map(|e| e.cooling_until).filter(|&t| t > now).min()
    }

    /// Every endpoint that is down, with why: `url (reason); url (reason)`.
    pub fn down_report(&self) -> String {
        let down: Vec<String> =
            self.endpoints.iter().filter_map(|e| e.down.as_ref().map(|why| format!("{} ({why})", e.url))).collect();
        down.join("; ")
    }
}

/// The backoff after `failures` failures in a row: 250 ms, 500 ms, 1 s, … at most 4 s.
pub fn backoff(failures: u32) -> Duration {
    BASE_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(8)).min(MAX_BACKOFF)
}

/// The slot of an endpoint with `slots` slots that a document with `key` is pinned to.
pub fn slot_for(key: u64, slots: usize) -> usize {
    (key % slots.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(windows: &[usize]) -> Fleet {
        Fleet::new(windows.iter().enumerate().map(|(i, &w)| (format!("http://e{i}"), w, None)))
    }

    #[test]
    fn least_busy_fills_windows_evenly_and_then_waits() {
        let now = Instant::now();
        let mut f = fleet(&[1, 2]);
        let picks: Vec<Pick> = (0..4).map(|_| f.pick(None, now)).collect();
        assert_eq!(picks, [Pick::Endpoint(0), Pick::Endpoint(1), Pick::Endpoint(1), Pick::Wait]);
        f.succeeded(1);
        assert_eq!(f.pick(None, now), Pick::Endpoint(1));
        assert_eq!(f.endpoints[1].served, 1);
    }

    #[test]
    fn a_document_stays_on_its_endpoint_unless_it_is_busy_and_another_is_idle() {
        let now = Instant::now();
        let mut f = fleet(&[1, 1, 1]);
        assert_eq!(f.pick(Some(7), now), Pick::Endpoint(0));
        assert_eq!(f.pick(Some(8), now), Pick::Endpoint(1));
        f.succeeded(0);
        f.succeeded(1);
        // Pass 2: the same documents, the same endpoints, even where another is less busy.
        assert_eq!(f.pick(Some(8), now), Pick::Endpoint(1));
        assert_eq!(f.pick(Some(7), now), Pick::Endpoint(0));
        // Busy home, idle endpoint 2: the document moves there.
        assert_eq!(f.pick(Some(7), now), Pick::Endpoint(2));
        // Busy home and nothing idle: wait.
        assert_eq!(f.pick(Some(8), now), Pick::Wait);
        f.succeeded(2);
        assert_eq!(f.pick(Some(7), now), Pick::Endpoint(2), "the document moved to endpoint 2");
    }

    #[test]
    fn failures_back_off_then_take_the_endpoint_out_and_its_documents_move() {
        let now = Instant::now();
        let mut f = fleet(&[1, 1]);
        assert_eq!(f.pick(Some(1), now), Pick::Endpoint(0));
        assert!(!f.failed(0, "connection refused", now));
        // Backing off: the retry goes elsewhere, and nothing goes to endpoint 0 until it ends.
        assert_eq!(f.pick(Some(1), now), Pick::Endpoint(1), "home backing off: the idle one");
        assert_eq!(f.pick(None, now), Pick::Wait);
        assert_eq!(f.next_ready(now), Some(now + BASE_BACKOFF));
        assert_eq!(f.next_ready(now + BASE_BACKOFF), None);
        assert_eq!(f.pick(None, now + BASE_BACKOFF), Pick::Endpoint(0));
        assert!(f.failed(0, "connection refused", now), "two failures in a row take it out");
        assert_eq!(f.down_report(), "http://e0 (connection refused)");
        f.succeeded(1);
        assert_eq!(f.pick(Some(1), now), Pick::Endpoint(1));
        assert!(!f.failed(1, "reset", now));
        assert!(f.failed(1, "reset", now + MAX_BACKOFF));
        assert_eq!(f.pick(Some(1), now), Pick::AllDown);
        f.bring_back(0);
        assert_eq!(f.pick(Some(1), now), Pick::Endpoint(0));
    }

    #[test]
    fn a_success_resets_the_failure_count_and_a_rejection_blames_nobody() {
        let now = Instant::now();
        let mut f = fleet(&[1]);
        f.pick(None, now);
        f.failed(0, "x", now);
        f.pick(None, now + MAX_BACKOFF);
        f.succeeded(0);
        f.pick(None, now);
        assert!(!f.failed(0, "x", now), "the count started again");
        f.pick(None, now + MAX_BACKOFF);
        f.released(0);
        assert_eq!((f.endpoints[0].in_flight, f.endpoints[0].failures), (0, 1));
        f.take_out(0, "garbage".into());
        assert_eq!(f.pick(None, now + MAX_BACKOFF), Pick::AllDown);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_slots_spread_by_key() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(slot_for(7, 4), 3);
        assert_eq!(slot_for(7, 0), 0);
    }

    #[test]
    fn an_endpoint_down_from_the_start_gets_nothing() {
        let now = Instant::now();
        let mut f = Fleet::new([("http://a".to_owned(), 1, Some("refused".to_owned())), ("http://b".to_owned(), 1, None)]);
        assert_eq!(f.pick(None, now), Pick::Endpoint(1));
        assert_eq!(f.pick(None, now), Pick::Wait);
    }
}
