//! The Watch service: one task per gRPC stream multiplexes its watchers.
//!
//! The task reads applied batches from the [`WatchHub`] and client requests from the stream, in
//! one loop, so everything a stream sends is ordered: a progress response always follows the
//! events it vouches for. A watcher that starts in the past, or whose stream fell behind the
//! hub's buffer, catches up from the MVCC store; one overtaken by compaction is canceled with
//! `compact_revision`, as etcd does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::{install_ended, Context};
use crate::kv::KvStore;
use crate::pb::mvccpb::Event;
use crate::pb::{self, watch_request, watch_server::Watch, WatchCreateRequest, WatchResponse};
use crate::watch::{Applied, WatchHub, Watcher};
use crate::{Error, Result};

/// Responses queued per stream before the stream stops reading the hub (and later catches up).
const OUTPUT_BUFFER: usize = 128;
/// etcd's text for a client-chosen watch ID already in use on the stream.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's text for a range whose end is not after its start.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// At most this many revisions go into one catch-up response, as etcd's watchBatchMaxRevs.
const CATCH_UP_REVISIONS: usize = 1000;
/// The watch_id etcd puts on a stream-wide progress response.
const STREAM_PROGRESS_ID: i64 = -1;

pub struct WatchService {
    ctx: Context,
    hub: WatchHub,
    progress_interval: Duration,
    /// Set once the member stops: every stream ends.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl WatchService {
    pub fn new(ctx: Context, hub: WatchHub, progress_interval: Duration) -> WatchService {
        WatchService { ctx, hub, progress_interval, stopping: tokio::sync::watch::Sender::new(false) }
    }

    /// Ends every watch stream, now and later, with etcd's "server stopped" (Unavailable, so
    /// clients reconnect elsewhere). A graceful gRPC shutdown waits for open streams, and a
    /// watch stream never ends on its own, so the member must call this when it stops.
    pub fn shutdown(&self) {
        self.stopping.send_replace(true);
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        // The call_check interceptor has refused the stream on a learner, and if it needs a
        // leader and this member knows none; a leader cut off from its quorum is refused here.
        let require_leader = super::requires_leader(request.metadata());
        if require_leader && !self.ctx.node.has_leader() {
            return Err(Error::NoLeader.into());
        }
        let stopping = self.stopping.subscribe();
        if *stopping.borrow() {
            return Err(Error::Stopped.into());
        }
        let (out, responses) = mpsc::channel(OUTPUT_BUFFER);
        let hub = self.hub.subscribe();
        let mut stopped = stopping.clone();
        let seen = tokio::select! {
            seen = revision_after_installs(&self.ctx.node.kv) => seen?,
            _ = stopped.wait_for(|stopping| *stopping) => return Err(Error::Stopped.into()),
        };
        let stream = WatchStream {
            ctx: self.ctx.clone(),
            hub,
            out,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            seen,
            progress_requested: false,
            sent_since_tick: BTreeMap::new(),
        };
        tokio::spawn(stream.run(request.into_inner(), self.progress_interval, require_leader, stopping));
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }
}

/// The client went away; the stream's task ends.
struct Gone;

type Sent = std::result::Result<(), Gone>;

struct WatchStream {
    ctx: Context,
    hub: broadcast::Receiver<Arc<Applied>>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    /// The newest revision whose batch this stream has processed.
    seen: i64,
    /// A progress request waits until every watcher has caught up.
    progress_requested: bool,
    /// Watchers that got a response since the last periodic progress tick.
    sent_since_tick: BTreeMap<i64, bool>,
}

impl WatchStream {
    async fn run(
        mut self,
        mut input: Streaming<pb::WatchRequest>,
        progress_interval: Duration,
        require_leader: bool,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut progress_tick = tokio::time::interval(progress_interval);
        progress_tick.reset();
        let leader_lost = leader_lost(self.ctx.clone(), require_leader);
        tokio::pin!(leader_lost);
        // A client may close its side after its requests; as in etcd, its watches go on until
        // it goes away.
        let mut reading = true;
        loop {
            let step = tokio::select! {
                request = input.message(), if reading => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) => {
                        reading = false;
                        Ok(())
                    }
                    Err(_) => return,
                },
                _ = self.out.closed() => return,
                batch = self.hub.recv() => match batch {
                    Ok(batch) => self.deliver(&batch).await,
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::info!(skipped, "a watch stream fell behind the applied events; catching up from the store");
                        self.catch_up_all().await
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = progress_tick.tick() => self.notify_progress().await,
                _ = &mut leader_lost => {
                    let _ = self.out.send(Err(Error::NoLeader.into())).await;
                    return;
                }
                _ = stopped(&mut stopping) => {
                    let _ = self.out.send(Err(Error::Stopped.into())).await;
                    return;
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, request: pb::WatchRequest) -> Sent {
        match request.request_union {
            Some(watch_request::RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(watch_request::RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                self.maybe_answer_progress().await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, mut req: WatchCreateRequest) -> Sent {
        if req.key.is_empty() {
            req.key = vec![0]; // etcd: "\x00 is the smallest key"
        }
        // etcd checks the range before the ID. A start revision below zero is not refused: as in
        // etcd it replays from the oldest history kept, or is canceled as compacted.
        if !matches!(req.range_end.as_slice(), [] | [0]) && req.key >= req.range_end {
            return self.send_refusal(EMPTY_RANGE.into()).await;
        }
        let id = match self.assign_id(req.watch_id) {
            Ok(id) => id,
            Err(reason) => return self.send_refusal(reason).await,
        };
        // As in etcd, a watch without a start revision starts after the store's revision, not
        // after what this stream has handled: a put the client already saw acknowledged may
        // still wait in the stream's queue, and the new watch must not deliver it.
        let current = self.ctx.node.kv.last_revision().max(self.seen);
        let next = if req.start_revision == 0 { current + 1 } else { req.start_revision };
        self.watchers.insert(id, Watcher::new(id, &req, next));
        let created = WatchResponse { header: self.header(current), watch_id: id, created: true, ..Default::default() };
        self.send(created).await?;
        self.catch_up(id).await
    }

    fn assign_id(&mut self, requested: i64) -> std::result::Result<i64, String> {
        if requested != 0 {
            return if self.watchers.contains_key(&requested) { Err(DUPLICATE_WATCH_ID.into()) } else { Ok(requested) };
        }
        while self.watchers.contains_key(&self.next_auto_id) {
            self.next_auto_id += 1;
        }
        self.next_auto_id += 1;
        Ok(self.next_auto_id - 1)
    }

    async fn send_refusal(&mut self, reason: String) -> Sent {
        let response = WatchResponse {
            header: self.header(self.seen),
            watch_id: STREAM_PROGRESS_ID,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        self.send(response).await
    }

    async fn cancel(&mut self, id: i64) -> Sent {
        if self.watchers.remove(&id).is_none() {
            return Ok(()); // etcd says nothing about an unknown watch ID
        }
        self.sent_since_tick.remove(&id);
        let response =
            WatchResponse { header: self.header(self.seen), watch_id: id, canceled: true, ..Default::default() };
        self.send(response).await?;
        self.maybe_answer_progress().await
    }

    /// Delivers a batch's events to every watcher that has not already seen them.
    async fn deliver(&mut self, batch: &Applied) -> Sent {
        self.seen = self.seen.max(batch.revision);
        if batch.reset {
            return self.catch_up_all().await;
        }
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(watcher) = self.watchers.get(&id) else { continue };
            if watcher.next <= batch.revision {
                let mut events = watcher.select(&batch.events);
                if watcher.prev_kv {
                    events = self.with_prev_kvs(events).await?;
                }
                self.send_events(id, events, batch.revision).await?;
                if let Some(watcher) = self.watchers.get_mut(&id) {
                    watcher.next = batch.revision + 1;
                }
            }
        }
        self.maybe_answer_progress().await
    }

    /// `events` with the previous values of their puts, for a watcher that asked for them: the
    /// apply path does not read them (see [`crate::kv::KvStore::fill_prev_kvs`]).
    async fn with_prev_kvs(&mut self, mut events: Vec<Event>) -> std::result::Result<Vec<Event>, Gone> {
        if !events.iter().any(crate::kv::lacks_prev_kv) {
            return Ok(events);
        }
        let failed = loop {
            let kv = self.ctx.node.kv.clone();
            let filled = crate::disk::spawn_blocking(move || {
                let result = kv.fill_prev_kvs(&mut events);
                (events, result)
            });
            match filled.await {
                Ok((filled, Ok(()))) => return Ok(filled),
                // As in `catch_up`: once a snapshot install has ended, read again.
                Ok((unfilled, Err(Error::Installing))) => {
                    events = unfilled;
                    install_ended(&self.ctx.node.kv).await;
                }
                Ok((_, Err(e))) => break e.to_string(),
                Err(e) => break e.to_string(),
            }
        };
        // Going on without these events, or without the values asked for, would mislead the
        // watcher: end the stream instead, and the client resumes from the last revision it was
        // sent.
        let status = Status::internal(format!("cannot read watch events' previous values: {failed}"));
        let _ = self.out.send(Err(status)).await;
        Err(Gone)
    }

    async fn catch_up_all(&mut self) -> Sent {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.catch_up(id).await?;
        }
        self.maybe_answer_progress().await
    }

    /// Reads what watcher `id` has missed from the store, up to the store's current revision.
    async fn catch_up(&mut self, id: i64) -> Sent {
        let Some(watcher) = self.watchers.get(&id).cloned() else { return Ok(()) };
        let read = loop {
            let (kv, watcher) = (self.ctx.node.kv.clone(), watcher.clone());
            let read = crate::disk::spawn_blocking(move || -> Result<(i64, Vec<Event>)> {
                let to = kv.revision()?;
                if watcher.next > to {
                    return Ok((to, Vec::new()));
                }
                let history = kv.history(&watcher.key, &watcher.range_end, watcher.next, to)?;
                let mut events = watcher.select(&history);
                if watcher.prev_kv {
                    kv.fill_prev_kvs(&mut events)?;
                }
                Ok((to, events))
            })
            .await
            .unwrap_or_else(|e| Err(Error::Internal(e.to_string())));
            // A snapshot install replaced the store under the read: read again once it has
            // ended. Meanwhile the stream sends nothing, for a watcher that took the next live
            // batch before catching up would skip what lies between.
            if !matches!(read, Err(Error::Installing)) {
                break read;
            }
            install_ended(&self.ctx.node.kv).await;
        };
        match read {
            Ok((to, events)) => {
                self.seen = self.seen.max(to);
                let mut chunks = by_revisions(events, CATCH_UP_REVISIONS).into_iter().peekable();
                while let Some(chunk) = chunks.next() {
                    // Only the last chunk vouches for everything up to `to`.
                    let last = chunk.last().and_then(|e| e.kv.as_ref()).map_or(to, |kv| kv.mod_revision);
                    let revision = if chunks.peek().is_some() { last } else { to };
                    self.send_events(id, chunk, revision).await?;
                }
                if let Some(watcher) = self.watchers.get_mut(&id) {
                    watcher.next = watcher.next.max(to + 1);
                }
                Ok(())
            }
            Err(Error::Compacted) => self.cancel_compacted(id).await,
            Err(e) => {
                tracing::error!(error = %e, watch = id, "watch cannot read history");
                self.watchers.remove(&id);
                let response = WatchResponse {
                    header: self.header(self.seen),
                    watch_id: id,
                    canceled: true,
                    cancel_reason: e.to_string(),
                    ..Default::default()
                };
                self.send(response).await
            }
        }
    }

    /// etcd's compaction cancel: no reason (the client reads compact_revision) and, because etcd
    /// builds it without a revision, a header revision of 0.
    async fn cancel_compacted(&mut self, id: i64) -> Sent {
        self.watchers.remove(&id);
        self.sent_since_tick.remove(&id);
        let compact_revision = self.ctx.node.kv.compacted_revision().unwrap_or_default();
        let response = WatchResponse {
            header: self.header(0),
            watch_id: id,
            canceled: true,
            compact_revision,
            ..Default::default()
        };
        self.send(response).await
    }

    /// Sends `events` (whole revisions) for watcher `id`, split into fragments if it asked.
    async fn send_events(&mut self, id: i64, events: Vec<Event>, revision: i64) -> Sent {
        if events.is_empty() {
            return Ok(());
        }
        self.sent_since_tick.insert(id, true);
        let fragment = self.watchers.get(&id).is_some_and(|w| w.fragment);
        let header = self.header(revision);
        let response = WatchResponse { header, watch_id: id, events, ..Default::default() };
        // etcd's watch server allows what its gRPC server takes: --max-request-bytes plus 512 KiB.
        let limit = self.ctx.limits.max_request_bytes + crate::server::GRPC_OVERHEAD_BYTES;
        // etcd's sendFragments: only a response of two or more events at or over the limit.
        if !fragment || response.events.len() < 2 || response.encoded_len() < limit {
            return self.send(response).await;
        }
        for part in fragments(response, limit) {
            self.send(part).await?;
        }
        Ok(())
    }

    fn synced(&self) -> bool {
        self.watchers.values().all(|w| w.synced_at(self.seen))
    }

    async fn maybe_answer_progress(&mut self) -> Sent {
        if !self.progress_requested || !self.synced() {
            return Ok(());
        }
        self.progress_requested = false;
        let response =
            WatchResponse { header: self.header(self.seen), watch_id: STREAM_PROGRESS_ID, ..Default::default() };
        self.send(response).await
    }

    /// The periodic progress notification, for synced watchers that asked and got nothing since.
    async fn notify_progress(&mut self) -> Sent {
        let due: Vec<i64> = self
            .watchers
            .values()
            .filter(|w| w.progress_notify && w.synced_at(self.seen))
            .filter(|w| !self.sent_since_tick.get(&w.id).copied().unwrap_or(false))
            .map(|w| w.id)
            .collect();
        self.sent_since_tick.clear();
        for id in due {
            let response = WatchResponse { header: self.header(self.seen), watch_id: id, ..Default::default() };
            self.send(response).await?;
        }
        Ok(())
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.ctx.node.header(revision))
    }

    async fn send(&self, response: WatchResponse) -> Sent {
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }
}

/// Splits a response's events into parts that stay under `limit` (at least one event each), as
/// etcd's sendFragments does; all but the last are marked as fragments.
fn fragments(mut response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    let events = std::mem::take(&mut response.events);
    let empty = WatchResponse { fragment: true, ..response };
    let mut parts = Vec::new();
    let mut current = empty.clone();
    for event in events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let overflow = current.events.pop().expect("just pushed");
            parts.push(std::mem::replace(&mut current, empty.clone()));
            current.events.push(overflow);
        }
    }
    current.fragment = false;
    parts.push(current);
    parts
}

/// Groups events (ordered by revision) into runs of at most `max_revisions` whole revisions.
fn by_revisions(events: Vec<Event>, max_revisions: usize) -> Vec<Vec<Event>> {
    let mut chunks: Vec<Vec<Event>> = Vec::new();
    let mut revisions = 0;
    let mut last = None;
    for event in events {
        let revision = event.kv.as_ref().map(|kv| kv.mod_revision);
        if revision != last {
            if revisions == max_revisions || chunks.is_empty() {
                chunks.push(Vec::new());
                revisions = 0;
            }
            revisions += 1;
            last = revision;
        }
        chunks.last_mut().expect("a chunk was pushed").push(event);
    }
    chunks
}

/// Completes once the member stops.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the service is gone, which also means stopping.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// How many election timeouts in a row a member must be without a leader before it ends the
/// streams that require one (etcd's maxNoLeaderCnt).
const NO_LEADER_CHECKS: u32 = 3;

/// Completes when a stream that requires a leader has found none at `NO_LEADER_CHECKS`
/// consecutive checks, one election timeout apart, as etcd's monitorLeader does; never
/// completes otherwise.
async fn leader_lost(ctx: Context, require_leader: bool) {
    if !require_leader {
        return std::future::pending().await;
    }
    let mut checks = tokio::time::interval(ctx.election_timeout);
    checks.reset(); // the first check one election timeout from now
    let mut without = 0;
    loop {
        checks.tick().await;
        without = if ctx.node.has_leader() { 0 } else { without + 1 };
        if without >= NO_LEADER_CHECKS {
            return;
        }
    }
}

/// The store revision, read once no snapshot install is replacing the store: a stream opened
/// during one waits for it, as etcd's does, instead of failing.
async fn revision_after_installs(kv: &KvStore) -> Result<i64> {
    loop {
        match kv.revision() {
            Err(Error::Installing) => install_ended(kv).await,
            read => return read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::KeyValue;

    fn event(key: &str, rev: i64, value_len: usize) -> Event {
        let kv = KeyValue { key: key.into(), mod_revision: rev, value: vec![b'v'; value_len], ..Default::default() };
        Event { kv: Some(kv), ..Default::default() }
    }

    fn revisions(chunk: &[Event]) -> Vec<i64> {
        chunk.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect()
    }

    #[test]
    fn catch_up_chunks_keep_revisions_whole() {
        let events: Vec<Event> =
            [2, 2, 3, 4, 4, 4, 5].iter().enumerate().map(|(i, rev)| event(&format!("k{i}"), *rev, 1)).collect();
        let chunks = by_revisions(events, 2);
        let shape: Vec<Vec<i64>> = chunks.iter().map(|c| revisions(c)).collect();
        assert_eq!(shape, [vec![2, 2, 3], vec![4, 4, 4, 5]]);
        assert!(by_revisions(Vec::new(), 2).is_empty());
    }

    #[test]
    fn fragments_stay_under_the_limit_and_join_back() {
        let events: Vec<Event> = (0..10).map(|i| event(&format!("k{i}"), 7, 100)).collect();
        let whole = WatchResponse { watch_id: 3, events: events.clone(), ..Default::default() };
        let parts = fragments(whole, 400);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() < 400 && p.watch_id == 3));
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().unwrap().fragment);
        assert_eq!(parts.into_iter().flat_map(|p| p.events).collect::<Vec<_>>(), events);

        // An event bigger than the limit goes alone rather than not at all.
        let big = WatchResponse { events: vec![event("a", 1, 1000), event("b", 1, 1)], ..Default::default() };
        let parts = fragments(big, 400);
        assert_eq!(parts.iter().map(|p| p.events.len()).collect::<Vec<_>>(), [1, 1]);
    }
}
