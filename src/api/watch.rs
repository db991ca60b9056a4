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

use super::Context;
use crate::pb::mvccpb::Event;
use crate::pb::{self, watch_request, watch_server::Watch, WatchCreateRequest, WatchResponse};
use crate::watch::{Applied, WatchHub, Watcher};
use crate::{Error, Result};

/// Responses queued per stream before the stream stops reading the hub (and later catches up).
const OUTPUT_BUFFER: usize = 128;
/// etcd's text for a client-chosen watch ID already in use on the stream.
const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// The watch_id etcd puts on a stream-wide progress response.
const STREAM_PROGRESS_ID: i64 = -1;

pub struct WatchService {
    ctx: Context,
    hub: WatchHub,
    progress_interval: Duration,
}

impl WatchService {
    pub fn new(ctx: Context, hub: WatchHub, progress_interval: Duration) -> WatchService {
        WatchService { ctx, hub, progress_interval }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<BoxStream<WatchResponse>>, Status> {
        // The leader_check interceptor has refused the stream if it needs a leader and has none.
        let require_leader = super::requires_leader(request.metadata());
        let (out, responses) = mpsc::channel(OUTPUT_BUFFER);
        let hub = self.hub.subscribe();
        let seen = self.ctx.node.kv.revision()?;
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
        tokio::spawn(stream.run(request.into_inner(), self.progress_interval, require_leader));
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
    async fn run(mut self, mut input: Streaming<pb::WatchRequest>, progress_interval: Duration, require_leader: bool) {
        let mut progress_tick = tokio::time::interval(progress_interval);
        progress_tick.reset();
        let leader_lost = leader_lost(self.ctx.clone(), require_leader);
        tokio::pin!(leader_lost);
        loop {
            let step = tokio::select! {
                request = input.message() => match request {
                    Ok(Some(request)) => self.handle(request).await,
                    Ok(None) | Err(_) => return,
                },
                batch = self.hub.recv() => match batch {
                    Ok(batch) => self.deliver(&batch).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up_all().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = progress_tick.tick() => self.notify_progress().await,
                _ = &mut leader_lost => {
                    let _ = self.out.send(Err(Error::NoLeader.into())).await;
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

    async fn create(&mut self, req: WatchCreateRequest) -> Sent {
        let id = match self.assign_id(req.watch_id) {
            Ok(id) => id,
            Err(reason) => return self.send_refusal(reason).await,
        };
        if req.start_revision < 0 {
            return self.send_refusal(Error::Compacted.to_string().trim_start_matches("etcdserver: ").into()).await;
        }
        let next = if req.start_revision == 0 { self.seen + 1 } else { req.start_revision };
        self.watchers.insert(id, Watcher::new(id, &req, next));
        let created =
            WatchResponse { header: self.header(self.seen), watch_id: id, created: true, ..Default::default() };
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
                let events = watcher.select(&batch.events);
                self.send_events(id, events, batch.revision).await?;
                if let Some(watcher) = self.watchers.get_mut(&id) {
                    watcher.next = batch.revision + 1;
                }
            }
        }
        self.maybe_answer_progress().await
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
        let kv = self.ctx.node.kv.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<(i64, Vec<Event>)> {
            let to = kv.revision()?;
            if watcher.next > to {
                return Ok((to, Vec::new()));
            }
            let events = kv.history(&watcher.key, &watcher.range_end, watcher.next, to)?;
            Ok((to, watcher.select(&events)))
        })
        .await
        .unwrap_or_else(|e| Err(Error::Internal(e.to_string())));
        match read {
            Ok((to, events)) => {
                self.seen = self.seen.max(to);
                self.send_events(id, events, to).await?;
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

    async fn cancel_compacted(&mut self, id: i64) -> Sent {
        self.watchers.remove(&id);
        let compact_revision = self.ctx.node.kv.compacted_revision().unwrap_or_default();
        let response = WatchResponse {
            header: self.header(self.seen),
            watch_id: id,
            canceled: true,
            compact_revision,
            cancel_reason: Error::Compacted.to_string(),
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
        if !fragment || response.encoded_len() <= self.ctx.limits.max_request_bytes {
            return self.send(response).await;
        }
        for part in fragments(response, self.ctx.limits.max_request_bytes) {
            self.send(part).await?;
        }
        Ok(())
    }

    fn synced(&self) -> bool {
        self.watchers.values().all(|w| w.next == self.seen + 1)
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
            .filter(|w| w.progress_notify && w.next == self.seen + 1)
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

/// Splits a response's events into parts no bigger than `limit` (at least one event each); all
/// but the last are marked as fragments.
fn fragments(mut response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    let events = std::mem::take(&mut response.events);
    let empty = WatchResponse { fragment: true, ..response };
    let mut parts = Vec::new();
    let mut current = empty.clone();
    for event in events {
        if !current.events.is_empty() && current.encoded_len() + event.encoded_len() > limit {
            parts.push(std::mem::replace(&mut current, empty.clone()));
        }
        current.events.push(event);
    }
    current.fragment = false;
    parts.push(current);
    parts
}

/// Completes when a stream that requires a leader has been without one for three election
/// timeouts; never completes otherwise.
async fn leader_lost(ctx: Context, require_leader: bool) {
    if !require_leader {
        return std::future::pending().await;
    }
    let mut metrics = ctx.node.raft.metrics();
    loop {
        if metrics.borrow_and_update().current_leader.is_none() {
            let patience = ctx.election_timeout * 3;
            let regained = tokio::time::timeout(patience, metrics.wait_for(|m| m.current_leader.is_some())).await;
            if regained.is_err() {
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
