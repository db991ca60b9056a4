//! The watch hub: events of applied commands fanned out to watch streams. In memory and per
//! member, never replicated: every member applies the same log, so watchers on any member see
//! the same sequence.
//!
//! Invariants:
//! - The apply path only ever does a non-blocking broadcast send: a slow watcher can never hold
//!   up apply or other watchers. A receiver that falls behind the bounded buffer is told it lagged
//!   and catches up from the MVCC store instead.
//! - Each [`Applied`] batch carries whole revisions, in revision order, so a watcher that keeps
//!   a `next` revision cursor delivers every event once, in order, without gaps.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::pb::mvccpb::{event::EventType, Event};
use crate::pb::{watch_create_request::FilterType, WatchCreateRequest};

/// Applied batches buffered per subscriber before it is told it lagged.
const BUFFERED_BATCHES: usize = 1024;

/// What one applied Raft batch changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// The store revision after the batch.
    pub revision: i64,
    /// Every event of the batch, ordered by revision and, within one, by the order it happened.
    pub events: Vec<Event>,
    /// The store was replaced (a snapshot was installed): watchers must re-read from the store.
    pub reset: bool,
}

#[derive(Clone)]
pub struct WatchHub {
    sender: broadcast::Sender<Arc<Applied>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub { sender: broadcast::channel(BUFFERED_BATCHES).0 }
    }
}

impl WatchHub {
    /// Called by the apply path after a batch is durable; never blocks.
    pub fn publish(&self, applied: Applied) {
        // No subscribers is not an error: nobody is watching.
        let _ = self.sender.send(Arc::new(applied));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.sender.subscribe()
    }
}

/// One watch on a stream: what it watches, and the next revision it has to deliver.
#[derive(Debug, Clone)]
pub struct Watcher {
    pub id: i64,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
    /// Every event below this revision has been delivered (or was never asked for).
    pub next: i64,
    /// The start revision the client asked for (0: the next one). A watch is not vouched for by
    /// progress reports until the store has reached it: a report below it would claim a
    /// revision the client never asked to see (etcd #20221).
    pub start: i64,
}

impl Watcher {
    pub fn new(id: i64, req: &WatchCreateRequest, next: i64) -> Watcher {
        Watcher {
            id,
            key: req.key.clone(),
            range_end: req.range_end.clone(),
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            next,
            start: req.start_revision,
        }
    }

    /// Whether a progress report at `revision` may vouch for this watch: it has been given
    /// everything up to `revision`, and `revision` is not before where it asked to start.
    pub fn synced_at(&self, revision: i64) -> bool {
        self.next == revision + 1 && revision >= self.start
    }

    /// Whether `key` is in the watched range, by etcd's range conventions.
    pub fn covers(&self, key: &[u8]) -> bool {
        match self.range_end.as_slice() {
            [] => key == self.key.as_slice(),
            [0] => key >= self.key.as_slice(),
            end => key >= self.key.as_slice() && key < end,
        }
    }

    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else { return false };
        let filtered = match EventType::try_from(event.r#type) {
            Ok(EventType::Put) => self.no_put,
            Ok(EventType::Delete) => self.no_delete,
            Err(_) => true,
        };
        !filtered && kv.mod_revision >= self.next && self.covers(&kv.key)
    }

    /// The events of `events` this watcher still has to deliver, shaped as it asked.
    pub fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| self.wants(e))
            .map(|e| if self.prev_kv { e.clone() } else { Event { prev_kv: None, ..e.clone() } })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::KeyValue;

    fn event(kind: EventType, key: &str, rev: i64) -> Event {
        let kv = KeyValue { key: key.into(), mod_revision: rev, ..Default::default() };
        Event { r#type: kind as i32, kv: Some(kv.clone()), prev_kv: Some(kv) }
    }

    fn watcher(key: &str, range_end: &str, filters: Vec<FilterType>, next: i64) -> Watcher {
        let req = WatchCreateRequest {
            key: key.into(),
            range_end: range_end.into(),
            filters: filters.into_iter().map(|f| f as i32).collect(),
            ..Default::default()
        };
        Watcher::new(0, &req, next)
    }

    #[test]
    fn selects_by_range_revision_and_filter() {
        let events = [
            event(EventType::Put, "a", 2),
            event(EventType::Put, "b", 3),
            event(EventType::Delete, "b1", 4),
            event(EventType::Put, "c", 5),
        ];
        let keys =
            |w: &Watcher| w.select(&events).iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect::<Vec<_>>();
        assert_eq!(keys(&watcher("b", "", vec![], 0)), [3]);
        assert_eq!(keys(&watcher("b", "c", vec![], 0)), [3, 4]);
        assert_eq!(keys(&watcher("b", "\0", vec![], 0)), [3, 4, 5]);
        assert_eq!(keys(&watcher("\0", "\0", vec![], 4)), [4, 5]);
        assert_eq!(keys(&watcher("a", "\0", vec![FilterType::Noput], 0)), [4]);
        assert_eq!(keys(&watcher("a", "\0", vec![FilterType::Nodelete], 0)), [2, 3, 5]);
        assert!(watcher("a", "\0", vec![], 0).select(&events).iter().all(|e| e.prev_kv.is_none()));
    }

    #[test]
    fn a_watch_is_vouched_for_only_once_caught_up_and_at_its_start() {
        let from_now = watcher("a", "", vec![], 6);
        assert!(from_now.synced_at(5));
        assert!(!from_now.synced_at(6), "revision 6 not delivered yet");
        assert!(!from_now.synced_at(4));
        let future = Watcher { start: 9, ..watcher("a", "", vec![], 9) };
        assert!(!future.synced_at(8), "a progress report below the start revision");
        assert!(Watcher { next: 10, ..future }.synced_at(9));
    }
}
