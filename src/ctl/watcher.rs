//! clientv3's watcher as etcdctl 3.4 sees it: watches multiplexed over one Watch stream, each
//! with its own sequence of answers, created again from where they stopped when the connection
//! breaks (etcd-io/etcd v3.4 `clientv3/watch.go`).
//!
//! What a watch's owner is handed:
//! - every answer with events, fragments joined into one;
//! - a progress notification, which for the whole stream (watch ID -1) goes to every watch;
//! - a cancellation by compaction, with `etcdserver: mvcc: required revision has been
//!   compacted`, after which the watch is closed; any other cancellation by the server closes the
//!   watch without an answer;
//! - for a refused create (watch ID -1, or canceled with a reason) and for a stream that fails
//!   for good, a notice without header that carries the error, then the close.
//!
//! `created` answers are not handed on. A stream that fails with Unavailable or Internal (other
//! than `etcdserver: no leader`), or with Unknown, which is how tonic reports a dropped
//! connection, is opened again after a pause and every watch is created again from the revision
//! after the last one it was handed.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::client::{Client, Duplex};
use super::error::status_message;
use crate::pb;
use crate::pb::watch_request::RequestUnion;

/// clientv3's text for a watch canceled because its revision was compacted.
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// The server's `etcdserver: no leader`, which ends a stream instead of resuming it.
const NO_LEADER: &str = "etcdserver: no leader";

/// The watch ID of an answer meant for the whole stream, or of a refused create.
const STREAM_WATCH_ID: i64 = -1;

/// How long one attempt to reopen a broken stream may take.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause before reopening a broken stream.
const REOPEN_PAUSE: Duration = Duration::from_millis(500);

/// The watcher's own name for a watch; it outlives the server's watch IDs across reconnections.
pub type WatchKey = usize;

/// Something that happened to one watch.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// An answer to hand on; `error` is set when it is the watch's last.
    Response { key: WatchKey, response: pb::WatchResponse, error: Option<String> },
    /// The watch ended; nothing more comes for it.
    Closed { key: WatchKey },
}

/// One watch: what to ask for when (re)creating it, and the fragments received so far.
struct Watch {
    /// The create request; its start revision follows the answers handed on.
    request: pb::WatchCreateRequest,
    partial: Option<pb::WatchResponse>,
}

/// Watches over one Watch stream, opened when the first watch or progress request is made.
pub struct Watcher {
    client: Client,
    /// Whether the stream asks the server to end it when the cluster has no leader.
    require_leader: bool,
    stream: Option<Duplex<pb::WatchRequest, pb::WatchResponse>>,
    watches: BTreeMap<WatchKey, Watch>,
    /// The server's watch IDs of the watches it confirmed.
    ids: BTreeMap<i64, WatchKey>,
    /// Watches whose create awaits its `created` answer, in the order the creates were sent.
    creating: VecDeque<WatchKey>,
    updates: VecDeque<Update>,
    next_key: WatchKey,
}

impl Watcher {
    pub fn new(client: Client, require_leader: bool) -> Watcher {
        Watcher {
            client,
            require_leader,
            stream: None,
            watches: BTreeMap::new(),
            ids: BTreeMap::new(),
            creating: VecDeque::new(),
            updates: VecDeque::new(),
            next_key: 0,
        }
    }

    /// Asks for a new watch; its answers come from [`Watcher::next`] under the returned key.
    pub async fn watch(
        &mut self,
        deadline: Instant,
        request: pb::WatchCreateRequest,
    ) -> Result<WatchKey, super::error::CtlError> {
        let key = self.next_key;
        self.next_key += 1;
        self.send(deadline, create(&request)).await?;
        self.watches.insert(key, Watch { request, partial: None });
        self.creating.push_back(key);
        Ok(key)
    }

    /// Asks the server for a progress notification on every watch.
    pub async fn request_progress(&mut self, deadline: Instant) -> Result<(), super::error::CtlError> {
        let progress = pb::WatchRequest { request_union: Some(RequestUnion::ProgressRequest(Default::default())) };
        self.send(deadline, progress).await
    }

    /// The next thing that happened to a watch; waits for ever while there is no stream.
    pub async fn next(&mut self) -> Update {
        loop {
            if let Some(update) = self.updates.pop_front() {
                return update;
            }
            let Some(stream) = &mut self.stream else {
                return std::future::pending().await;
            };
            match stream.responses.message().await {
                Ok(Some(response)) => self.receive(response),
                Ok(None) => self.fail("EOF".to_string()),
                Err(status) if resumable(&status) => self.reopen().await,
                Err(status) => self.fail(status_message(&status)),
            }
        }
    }

    /// Sends `request` on the stream, opening the stream with it if there is none.
    async fn send(&mut self, deadline: Instant, request: pb::WatchRequest) -> Result<(), super::error::CtlError> {
        match &self.stream {
            // A stream whose call has ended reports why on its answers; the request is moot.
            Some(stream) => {
                let _ = stream.requests.send(request).await;
            }
            None => self.stream = Some(self.client.watch(deadline, request, self.require_leader).await?),
        }
        Ok(())
    }

    fn receive(&mut self, response: pb::WatchResponse) {
        if response.created {
            self.confirm(response);
        } else if response.canceled && response.compact_revision == 0 {
            if let Some(key) = self.ids.remove(&response.watch_id) {
                self.watches.remove(&key);
                self.updates.push_back(Update::Closed { key });
            }
        } else if response.watch_id == STREAM_WATCH_ID && is_progress_notify(&response) {
            let keys: Vec<WatchKey> = self.ids.values().copied().collect();
            for key in keys {
                self.hand_on(key, response.clone());
            }
        } else if let Some(&key) = self.ids.get(&response.watch_id) {
            self.join_fragments(key, response);
        }
    }

    /// Pairs a `created` answer with the oldest create still waiting for one.
    fn confirm(&mut self, response: pb::WatchResponse) {
        let Some(key) = self.creating.pop_front() else { return };
        if response.watch_id == STREAM_WATCH_ID || (response.canceled && !response.cancel_reason.is_empty()) {
            self.watches.remove(&key);
            self.close_with(key, response.cancel_reason);
            return;
        }
        self.ids.insert(response.watch_id, key);
        if let Some(watch) = self.watches.get_mut(&key) {
            if watch.request.start_revision == 0 {
                watch.request.start_revision = response.header.map_or(0, |h| h.revision) + 1;
            }
        }
    }

    fn join_fragments(&mut self, key: WatchKey, response: pb::WatchResponse) {
        let Some(watch) = self.watches.get_mut(&key) else { return };
        let whole = match watch.partial.take() {
            Some(mut partial) => {
                partial.events.extend(response.events);
                partial.fragment = response.fragment;
                partial
            }
            None => response,
        };
        if whole.fragment {
            watch.partial = Some(whole);
        } else {
            self.hand_on(key, whole);
        }
    }

    /// Hands an answer on and moves the watch's resume point past it.
    fn hand_on(&mut self, key: WatchKey, response: pb::WatchResponse) {
        let Some(watch) = self.watches.get_mut(&key) else { return };
        let next = match response.events.last() {
            Some(event) => event.kv.as_ref().map_or(0, |kv| kv.mod_revision) + 1,
            None => response.header.map_or(0, |h| h.revision),
        };
        watch.request.start_revision = watch.request.start_revision.max(next);
        let error = (response.compact_revision != 0).then(|| COMPACTED.to_string());
        let ends = error.is_some();
        self.updates.push_back(Update::Response { key, response, error });
        if ends {
            self.watches.remove(&key);
            self.ids.retain(|_, k| *k != key);
            self.updates.push_back(Update::Closed { key });
        }
    }

    /// Ends every watch with `error`, as clientv3 does when its stream fails for good.
    fn fail(&mut self, error: String) {
        self.stream = None;
        self.ids.clear();
        self.creating.clear();
        let keys: Vec<WatchKey> = std::mem::take(&mut self.watches).into_keys().collect();
        for key in keys {
            self.close_with(key, error.clone());
        }
    }

    /// clientv3's closing notice: canceled, no header, then the close.
    fn close_with(&mut self, key: WatchKey, error: String) {
        let notice = pb::WatchResponse { canceled: true, ..Default::default() };
        self.updates.push_back(Update::Response { key, response: notice, error: Some(error) });
        self.updates.push_back(Update::Closed { key });
    }

    /// Opens the stream again and creates every watch again, trying until it works.
    async fn reopen(&mut self) {
        self.stream = None;
        self.ids.clear();
        self.creating = self.watches.keys().copied().collect();
        let requests: Vec<pb::WatchRequest> = self
            .watches
            .values_mut()
            .map(|watch| {
                watch.partial = None;
                create(&watch.request)
            })
            .collect();
        let Some((first, rest)) = requests.split_first() else { return };
        loop {
            sleep(REOPEN_PAUSE).await;
            let deadline = Instant::now() + REOPEN_TIMEOUT;
            if let Ok(stream) = self.client.watch(deadline, first.clone(), self.require_leader).await {
                for request in rest {
                    let _ = stream.requests.send(request.clone()).await;
                }
                self.stream = Some(stream);
                return;
            }
        }
    }
}

fn create(request: &pb::WatchCreateRequest) -> pb::WatchRequest {
    pb::WatchRequest { request_union: Some(RequestUnion::CreateRequest(request.clone())) }
}

/// clientv3's `IsProgressNotify`.
pub fn is_progress_notify(response: &pb::WatchResponse) -> bool {
    response.events.is_empty()
        && !response.canceled
        && !response.created
        && response.compact_revision == 0
        && response.header.is_some_and(|h| h.revision != 0)
}

/// Whether clientv3 would reopen the stream rather than end its watches.
fn resumable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(status.code(), Code::Unavailable | Code::Internal | Code::Unknown) && status.message() != NO_LEADER
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::cli::GlobalFlags;

    fn watcher() -> Watcher {
        let flags = GlobalFlags {
            endpoints: vec![],
            dial_timeout: Duration::from_secs(1),
            command_timeout: Some(Duration::from_secs(1)),
            keepalive_time: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            write_out: "simple".into(),
            hex: false,
        };
        let client = Client::new(&["127.0.0.1:1".to_string()], &flags).unwrap();
        let mut watcher = Watcher::new(client, true);
        for key in 0..2 {
            watcher.watches.insert(key, Watch { request: Default::default(), partial: None });
            watcher.creating.push_back(key);
        }
        watcher
    }

    fn header(revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader { revision, ..Default::default() })
    }

    fn event(revision: i64) -> pb::mvccpb::Event {
        let kv = pb::KeyValue { key: b"k".to_vec(), mod_revision: revision, ..Default::default() };
        pb::mvccpb::Event { kv: Some(kv), ..Default::default() }
    }

    fn created(watch_id: i64, revision: i64) -> pb::WatchResponse {
        pb::WatchResponse { watch_id, created: true, header: header(revision), ..Default::default() }
    }

    #[test]
    fn answers_go_to_their_watch_and_progress_to_all() {
        let mut w = watcher();
        w.receive(created(7, 4));
        w.receive(created(8, 4));
        assert!(w.updates.is_empty(), "created answers are not handed on");
        w.receive(pb::WatchResponse { watch_id: 8, header: header(5), events: vec![event(5)], ..Default::default() });
        w.receive(pb::WatchResponse { watch_id: STREAM_WATCH_ID, header: header(5), ..Default::default() });
        let keys: Vec<WatchKey> = w
            .updates
            .iter()
            .map(|u| match u {
                Update::Response { key, error: None, .. } => *key,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(keys, [1, 0, 1]);
        assert_eq!(w.watches[&0].request.start_revision, 5);
        assert_eq!(w.watches[&1].request.start_revision, 6);
    }

    #[test]
    fn fragments_are_joined() {
        let mut w = watcher();
        w.receive(created(0, 1));
        let part = |rev, fragment| pb::WatchResponse {
            watch_id: 0,
            header: header(3),
            events: vec![event(rev)],
            fragment,
            ..Default::default()
        };
        w.receive(part(2, true));
        assert!(w.updates.is_empty());
        w.receive(part(3, false));
        let Some(Update::Response { response, .. }) = w.updates.pop_front() else { panic!("no answer") };
        assert_eq!(response.events.len(), 2);
    }

    #[test]
    fn compaction_is_reported_and_other_cancels_close_quietly() {
        let mut w = watcher();
        w.receive(created(0, 9));
        w.receive(created(1, 9));
        let compacted = pb::WatchResponse { watch_id: 0, canceled: true, compact_revision: 7, ..Default::default() };
        w.receive(compacted);
        w.receive(pb::WatchResponse { watch_id: 1, canceled: true, ..Default::default() });
        let updates: Vec<Update> = w.updates.drain(..).collect();
        assert!(matches!(&updates[0], Update::Response { key: 0, error: Some(e), .. } if e == COMPACTED));
        assert_eq!(updates[1..], [Update::Closed { key: 0 }, Update::Closed { key: 1 }]);
        assert!(w.watches.is_empty());
    }

    #[test]
    fn a_refused_create_closes_with_its_reason() {
        let mut w = watcher();
        let refused = pb::WatchResponse {
            watch_id: STREAM_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream".into(),
            ..Default::default()
        };
        w.receive(refused);
        let Some(Update::Response { key: 0, response, error: Some(error) }) = w.updates.pop_front() else {
            panic!("no notice")
        };
        assert_eq!((response.header, response.canceled), (None, true));
        assert_eq!(error, "mvcc: duplicate watch ID provided on the WatchStream");
        assert_eq!(w.updates.pop_front(), Some(Update::Closed { key: 0 }));
        assert_eq!(w.creating, [1]);
    }
}
