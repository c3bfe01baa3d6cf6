//! The queue of pods waiting for a node.
//!
//! Keys (`namespace/name`) are de-duplicated: a pod is either active (try it
//! now), backing off (try again at an instant), or absent. Time is passed in,
//! never read, so the queue is tested without clocks; the scheduler loop
//! sleeps until [`SchedulingQueue::next_deadline`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// De-duplicated active queue plus per-pod exponential backoff.
#[derive(Debug)]
pub struct SchedulingQueue {
    active: VecDeque<String>,
    in_active: HashSet<String>,
    backoff: HashMap<String, Instant>,
    attempts: HashMap<String, u32>,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl SchedulingQueue {
    /// A queue whose retry delay starts at `initial_backoff` and doubles up to `max_backoff`.
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        SchedulingQueue {
            active: VecDeque::new(),
            in_active: HashSet::new(),
            backoff: HashMap::new(),
            attempts: HashMap::new(),
            initial_backoff,
            max_backoff,
        }
    }

    /// Queues a pod unless it is already queued or backing off (a pod update
    /// must not cut its backoff short).
    pub fn add(&mut self, key: &str) {
        if self.in_active.contains(key) || self.backoff.contains_key(key) {
            return;
        }
        self.in_active.insert(key.to_string());
        self.active.push_back(key.to_string());
    }

    /// Moves backed-off pods whose time has come to the active queue.
    fn promote(&mut self, now: Instant) {
        let mut due: Vec<(Instant, String)> = self
            .backoff
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, at)| (*at, k.clone()))
            .collect();
        due.sort();
        for (_, key) in due {
            self.backoff.remove(&key);
            if self.in_active.insert(key.clone()) {
                self.active.push_back(key);
            }
        }
    }

    /// True when [`pop`](Self::pop) would return a pod at `now`.
    pub fn has_ready(&self, now: Instant) -> bool {
        !self.active.is_empty() || self.backoff.values().any(|at| *at <= now)
    }

    /// The next pod to try.
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        self.promote(now);
        let key = self.active.pop_front()?;
        self.in_active.remove(&key);
        Some(key)
    }

    /// The pod could not be placed: retry after its backoff, which doubles
    /// with each consecutive failure. Returns the delay.
    pub fn requeue_with_backoff(&mut self, key: &str, now: Instant) -> Duration {
        let attempts = self.attempts.entry(key.to_string()).or_insert(0);
        let delay = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(*attempts))
            .min(self.max_backoff);
        *attempts = attempts.saturating_add(1);
        if self.in_active.remove(key) {
            self.active.retain(|k| k != key);
        }
        self.backoff.insert(key.to_string(), now + delay);
        delay
    }

    /// The pod was bound or deleted: drop every trace of it.
    pub fn forget(&mut self, key: &str) {
        if self.in_active.remove(key) {
            self.active.retain(|k| k != key);
        }
        self.backoff.remove(key);
        self.attempts.remove(key);
    }

    /// The cluster changed (a node appeared or changed, a pod freed
    /// resources): every backed-off pod may fit now, try them all again.
    /// Their failure counts are kept, so a pod that still does not fit
    /// backs off longer.
    pub fn wake_all(&mut self) {
        let mut keys: Vec<String> = self.backoff.drain().map(|(k, _)| k).collect();
        keys.sort();
        for key in keys {
            if self.in_active.insert(key.clone()) {
                self.active.push_back(key);
            }
        }
    }

    /// When the earliest backed-off pod becomes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.backoff.values().min().copied()
    }

    /// Number of pods queued or backing off.
    pub fn len(&self) -> usize {
        self.active.len() + self.backoff.len()
    }

    /// No pod is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    #[test]
    fn adds_are_deduplicated_and_fifo() {
        let now = Instant::now();
        let mut q = queue();
        q.add("ns/a");
        q.add("ns/b");
        q.add("ns/a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(now).as_deref(), Some("ns/a"));
        assert_eq!(q.pop(now).as_deref(), Some("ns/b"));
        assert_eq!(q.pop(now), None);
        assert!(q.is_empty());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_is_not_cut_by_updates() {
        let now = Instant::now();
        let mut q = queue();
        let delays: Vec<u64> = (0..6)
            .map(|_| q.requeue_with_backoff("ns/a", now).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        q.add("ns/a");
        assert!(!q.has_ready(now));
        assert_eq!(q.pop(now), None);
        assert_eq!(q.next_deadline(), Some(now + Duration::from_secs(10)));
        let later = now + Duration::from_secs(10);
        assert!(q.has_ready(later));
        assert_eq!(q.pop(later).as_deref(), Some("ns/a"));
    }

    #[test]
    fn forget_resets_attempts() {
        let now = Instant::now();
        let mut q = queue();
        q.requeue_with_backoff("ns/a", now);
        q.requeue_with_backoff("ns/a", now);
        q.forget("ns/a");
        assert!(q.is_empty());
        assert_eq!(q.requeue_with_backoff("ns/a", now), Duration::from_secs(1));
    }

    #[test]
    fn wake_all_makes_backed_off_pods_ready_now() {
        let now = Instant::now();
        let mut q = queue();
        q.requeue_with_backoff("ns/b", now);
        q.requeue_with_backoff("ns/a", now);
        assert!(!q.has_ready(now));
        q.wake_all();
        assert_eq!(q.next_deadline(), None);
        assert_eq!(q.pop(now).as_deref(), Some("ns/a"));
        assert_eq!(q.pop(now).as_deref(), Some("ns/b"));
        // Attempts survive a wake: the next failure waits longer.
        assert_eq!(q.requeue_with_backoff("ns/a", now), Duration::from_secs(2));
    }

    #[test]
    fn requeue_of_an_active_key_moves_it_to_backoff() {
        let now = Instant::now();
        let mut q = queue();
        q.add("ns/a");
        q.requeue_with_backoff("ns/a", now);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(now), None);
    }
}
