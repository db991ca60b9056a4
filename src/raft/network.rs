//! The sending side of the peer protocol.
//!
//! openraft asks for a new client per replication stream, per vote and per read-index round, so
//! [`Peers`] caches one lazily connected tonic channel per member; a client is a cheap clone.
//! A replication stream's AppendEntries go over one gRPC stream it keeps open (see
//! [`AppendStream`]); votes are plain calls. A snapshot goes whole in one stream of parts, as
//! etcd streams its database, rather than in openraft's chunks, one call each with a round trip
//! (and openraft's 1 ms pause) between; a member from before such streams still gets chunks.
//! Every request carries our cluster ID and member ID so the receiver can refuse it.
//! A peer that cannot be reached is reported as `Unreachable` (openraft backs off), anything
//! else as a network error (openraft retries on the next heartbeat).

use std::collections::HashMap;
use std::future::Future;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Timeout, Unreachable,
};
use openraft::network::snapshot_transport::{Chunked, SnapshotTransport};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RPCTypes, Snapshot, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::leader_flush::LeaderFlush;
use super::{LogId, NodeId, PeerNode, SnapshotMeta, StorageError, TypeConfig};
use crate::pb::peer_client::PeerClient;
use crate::pb::{PeerHeader, RaftReply, RaftRequest, SnapshotPart};
use crate::{Error, Result};

/// Replication's wait between tries at an unreachable peer once the first quick ones failed.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(500);
/// Largest peer message: a batch of entries or a snapshot part, with room to spare.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// A snapshot stream's parts. The leader reads the next part while the last ones are on their
/// way, and each is copied a few times (read, encoded, framed): in a new member's catch-up
/// (benches/cluster; the leader's resident memory when the member is added, and its peak after;
/// 7 interleaved rounds) the leader grew by 4-7 MiB with parts of this size and
/// [`SNAPSHOT_PARTS_QUEUED`], against 6-9 MiB with 1 MiB parts and two queued, and the catch-up
/// took as long (p50 1.06x, 0.96x and 1.03x in three runs). A part is a message on a stream,
/// not a call: smaller ones cost no round trips.
pub const SNAPSHOT_PART_BYTES: u64 = 256 * 1024;
/// Parts read ahead of the one being sent (see [`SNAPSHOT_PART_BYTES`]).
const SNAPSHOT_PARTS_QUEUED: usize = 1;
/// openraft's chunks, sent to members from before snapshot streams, one call each (openraft's
/// default is 3 MiB). Measured beside 3 MiB (benches/cluster catch-up, 4 interleaved rounds),
/// the transfer took as long and every member's peak resident memory was 7-10 MiB lower; 256
/// KiB chunks took a quarter longer, a round trip each.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// openraft's `install_snapshot_timeout`: how long a snapshot's sender waits for the peer to
/// take each part (a chunk's call, for members from before snapshot streams) and to answer after
/// the last, which includes installing the whole snapshot; and how long the peer waits for each
/// next part before it gives the stream up.
pub const SNAPSHOT_PART_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP/2 flow-control window of a peer stream, both ways: a snapshot stream's sender stops for
/// the receiver's window updates only once it is 8 MiB ahead. 2 MiB did not lower any member's
/// peak memory in catch-up and may have slowed it (p50 523 against 463 ms, 4 rounds).
pub const PEER_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// A peer connection's window: room for a snapshot stream's window and for the entries and
/// heartbeats streaming beside it.
pub const PEER_CONNECTION_WINDOW_BYTES: u32 = 4 * PEER_WINDOW_BYTES;
/// HTTP/2 frame size on peer connections: 1 MiB instead of 16 KiB, so that a snapshot part is
/// one frame instead of 16, and a large batch of entries or an old member's chunk one instead of
/// up to 64, to cut, send and reassemble.
pub const PEER_FRAME_BYTES: u32 = 1024 * 1024;

/// One cached channel per member, keyed by member ID and the URL it was made for; when each
/// peer last answered; and whether a peer told us we are fenced off.
#[derive(Clone)]
pub struct Peers {
    header: PeerHeader,
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
    last_contact: Arc<Mutex<HashMap<NodeId, Instant>>>,
    fenced: Arc<watch::Sender<Option<String>>>,
    /// Set on the member's own peers: AppendEntries wait for it (see [`super::leader_flush`]).
    leader_flush: Option<LeaderFlush>,
}

impl Peers {
    pub fn new(cluster_id: u64, self_id: NodeId) -> Peers {
        Peers {
            header: PeerHeader { cluster_id, from: self_id, to: 0 },
            channels: Arc::default(),
            last_contact: Arc::default(),
            fenced: Arc::new(watch::channel(None).0),
            leader_flush: None,
        }
    }

    /// An AppendEntries carries a commit index only once `flush` has made the leader's own copy
    /// of the committed entries durable: a follower applies what it is told is committed (see
    /// [`super::leader_flush`]; a request that would wait long carries the last one sent).
    pub fn telling_commits_after(self, flush: LeaderFlush) -> Peers {
        Peers { leader_flush: Some(flush), ..self }
    }

    /// When `peer` last answered a Raft RPC or sent one, if ever since this member started.
    pub fn last_contact(&self, peer: NodeId) -> Option<Instant> {
        lock(&self.last_contact).get(&peer).copied()
    }

    pub fn record_contact(&self, peer: NodeId) {
        lock(&self.last_contact).insert(peer, Instant::now());
    }

    /// Completes with the reason once a peer has refused this member for good (it was removed).
    pub fn fenced(&self) -> watch::Receiver<Option<String>> {
        self.fenced.subscribe()
    }

    pub fn fence(&self, reason: String) {
        self.fenced.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }

    /// The header of a request to member `to` (whose peer service refuses it if its peer URL
    /// now belongs to another member).
    pub fn header(&self, to: NodeId) -> PeerHeader {
        PeerHeader { to, ..self.header }
    }

    /// A client for `target`, connecting lazily to its first peer URL.
    pub fn client(&self, target: NodeId, node: &PeerNode) -> Result<PeerClient<Channel>> {
        let url =
            node.peer_urls.first().ok_or_else(|| Error::Internal(format!("member {target:x} has no peer URL")))?;
        let mut channels = lock(&self.channels);
        let channel = match channels.get(&target) {
            Some((cached_url, channel)) if cached_url == url => channel.clone(),
            _ => {
                let dial = crate::faults::peer_route(url).unwrap_or_else(|| url.clone());
                let channel = Endpoint::from_shared(dial)
                    .map_err(|e| Error::Internal(format!("peer URL {url}: {e}")))?
                    .connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .initial_stream_window_size(PEER_WINDOW_BYTES)
                    .initial_connection_window_size(PEER_CONNECTION_WINDOW_BYTES)
                    .max_frame_size(PEER_FRAME_BYTES)
                    .connect_lazy();
                channels.insert(target, (url.clone(), channel.clone()));
                channel
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Connection {
        let client = self.client(target, node).map_err(|e| e.to_string());
        Connection { target, client, peers: self.clone(), append_stream: None, told_commit: None }
    }
}

pub struct Connection {
    target: NodeId,
    client: std::result::Result<PeerClient<Channel>, String>,
    peers: Peers,
    /// The AppendEntries stream, between exchanges. An exchange takes it out and puts it back
    /// only once it has its reply, so a failed exchange, or one openraft gave up on (it drops the
    /// future after its own timeout), closes the stream: a late reply can never be taken for
    /// another request's.
    append_stream: Option<AppendStream>,
    /// The last commit index sent to the target; the leader's copy of it was durable.
    told_commit: Option<LogId>,
}

/// An AppendEntries stream to the target: requests go in, replies come out in the same order.
struct AppendStream {
    requests: mpsc::Sender<RaftRequest>,
    replies: tonic::Streaming<RaftReply>,
}

#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    InstallSnapshot,
}

type RpcResult<T, E = openraft::error::Infallible> =
    std::result::Result<T, RPCError<NodeId, PeerNode, RaftError<NodeId, E>>>;

type SnapshotResult<T = SnapshotResponse<NodeId>> = std::result::Result<T, StreamingError<TypeConfig, Fatal<NodeId>>>;

/// Why a snapshot's parts stopped coming before the last.
enum FeedError {
    Read(std::io::Error),
    /// The peer took no part for this long.
    Stalled(Duration),
}

impl Connection {
    /// A client for the target (a cheap clone), or why there is none.
    fn client(&self) -> std::result::Result<PeerClient<Channel>, Unreachable> {
        self.client.clone().map_err(|reason| Unreachable::new(&Error::Internal(reason)))
    }

    /// Sends `req`, and `snapshot_data` beside it (see [`RaftRequest::snapshot_data`]).
    async fn call<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        snapshot_data: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let payload = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let header = Some(self.peers.header(self.target));
        let mut request = tonic::Request::new(RaftRequest { header, payload, snapshot_data });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| self.transport_error(status))?.into_inner();
        self.answer(&reply)
    }

    /// Sends one AppendEntries over the open stream (opening one first if there is none).
    async fn append(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let payload = bincode::serialize(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = RaftRequest { header: Some(self.peers.header(self.target)), payload, snapshot_data: Vec::new() };
        let reply = match tokio::time::timeout(option.hard_ttl(), self.exchange(request)).await {
            Ok(reply) => reply,
            Err(_) => Err(Status::deadline_exceeded("AppendEntries timed out")),
        };
        match reply {
            Ok(reply) => self.answer(&reply),
            Err(status) => Err(self.transport_error(status)),
        }
    }

    async fn exchange(&mut self, request: RaftRequest) -> std::result::Result<RaftReply, Status> {
        let mut stream = match self.append_stream.take() {
            Some(stream) => stream,
            None => self.open_append_stream().await?,
        };
        stream.requests.send(request).await.map_err(|_| Status::unavailable("AppendEntries stream closed"))?;
        let reply = stream.replies.message().await?.ok_or_else(|| Status::unavailable("AppendEntries stream ended"))?;
        self.append_stream = Some(stream);
        Ok(reply)
    }

    async fn open_append_stream(&mut self) -> std::result::Result<AppendStream, Status> {
        let client = self.client.as_mut().map_err(|reason| Status::unavailable(reason.clone()))?;
        let (requests, outgoing) = mpsc::channel(1);
        let replies = client.append_entries(ReceiverStream::new(outgoing)).await?.into_inner();
        Ok(AppendStream { requests, replies })
    }

    /// Sends `snapshot` as one stream of parts (`StreamSnapshot` in proto/peer.proto), without
    /// the round trip per part openraft's chunks take. `None` if the peer serves no such streams
    /// (a member from before them).
    ///
    /// A large snapshot may take longer than any one timeout, so there is none for the whole
    /// stream: the peer must take each part, and answer after the last, within `option`'s time.
    async fn stream_snapshot(
        &mut self,
        vote: &Vote<NodeId>,
        snapshot: &mut Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed>,
        option: &RPCOption,
    ) -> SnapshotResult<Option<SnapshotResponse<NodeId>>> {
        let mut client = self.client()?;
        let Snapshot { meta, snapshot: file } = snapshot;
        let size = file.seek(SeekFrom::End(0)).await.map_err(|e| unreadable(meta, e))?;
        file.seek(SeekFrom::Start(0)).await.map_err(|e| unreadable(meta, e))?;
        let offer = bincode::serialize(&(vote, &*meta)).map_err(|e| NetworkError::new(&e))?;
        let first = SnapshotPart { header: Some(self.peers.header(self.target)), offer, size, data: Vec::new() };
        let (parts, outgoing) = mpsc::channel(SNAPSHOT_PARTS_QUEUED);
        let call = client.stream_snapshot(ReceiverStream::new(outgoing));
        let feed = feed_parts(file, first, parts, option.hard_ttl());
        tokio::pin!(call, feed, cancel);
        let reply = tokio::select! {
            // Before the last part: a refusal, or the vote of a leader the peer knows is stale.
            reply = &mut call => reply,
            fed = &mut feed => {
                fed.map_err(|failed| self.feed_error(failed, meta))?;
                tokio::select! {
                    reply = tokio::time::timeout(option.hard_ttl(), &mut call) => {
                        reply.unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer to a snapshot")))
                    }
                    closed = &mut cancel => return Err(closed.into()),
                }
            }
            closed = &mut cancel => return Err(closed.into()),
        };
        match reply {
            Ok(reply) => self.snapshot_answer(&reply.into_inner()).map(Some),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(streaming_error(self.transport_error(status))),
        }
    }

    fn feed_error(&self, failed: FeedError, meta: &SnapshotMeta) -> StreamingError<TypeConfig, Fatal<NodeId>> {
        match failed {
            FeedError::Read(e) => unreadable(meta, e).into(),
            FeedError::Stalled(timeout) => {
                let (id, target) = (self.peers.header.from, self.target);
                Timeout { action: RPCTypes::InstallSnapshot, id, target, timeout }.into()
            }
        }
    }

    /// The peer's answer to a snapshot stream: openraft's, or the fatal error its Raft stopped on.
    fn snapshot_answer(&self, reply: &RaftReply) -> SnapshotResult {
        let result: std::result::Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = self.decode_reply(reply)?;
        result.map_err(|fatal| RemoteError::new(self.target, fatal).into())
    }

    /// A reply's payload, from a peer that has just answered.
    fn decode_reply<T: DeserializeOwned>(&self, reply: &RaftReply) -> std::result::Result<T, NetworkError> {
        self.peers.record_contact(self.target);
        bincode::deserialize(&reply.payload).map_err(|e| NetworkError::new(&e))
    }

    /// The commit index to send: `committed` once the leader's own copy of it is durable (see
    /// [`super::leader_flush`]). If its flush takes more than a quarter of the request's time,
    /// the last commit index sent instead, so that a slow disk does not time the request out:
    /// the follower learns the rest from a later request.
    async fn durable_commit(
        &mut self,
        flush: &LeaderFlush,
        committed: Option<LogId>,
        option: &RPCOption,
    ) -> RpcResult<Option<LogId>> {
        let Some(committed) = committed else { return Ok(None) };
        match tokio::time::timeout(option.hard_ttl() / 4, flush.durable_through(committed.index)).await {
            Ok(Ok(())) => {
                self.told_commit = Some(committed);
                Ok(Some(committed))
            }
            Ok(Err(failed)) => Err(RPCError::Network(NetworkError::new(&Error::Storage(failed)))),
            Err(_) => Ok(self.told_commit),
        }
    }

    /// A peer's reply: openraft's answer, or the error the peer's Raft returned.
    fn answer<Resp, E>(&self, reply: &RaftReply) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let result: std::result::Result<Resp, RaftError<NodeId, E>> =
            self.decode_reply(reply).map_err(RPCError::Network)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn transport_error<E: std::error::Error>(
        &self,
        status: tonic::Status,
    ) -> RPCError<NodeId, PeerNode, RaftError<NodeId, E>> {
        let err = Error::Internal(format!("{}: {}", status.code(), status.message()));
        match status.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
            tonic::Code::PermissionDenied => {
                // The peer refused us for good: we were removed.
                tracing::error!(
                    peer = format!("{:x}", self.target),
                    reason = status.message(),
                    "peer refused our traffic"
                );
                self.peers.fence(status.message().to_string());
                RPCError::Unreachable(Unreachable::new(&err))
            }
            tonic::Code::FailedPrecondition => {
                // Its peer URL leads to another cluster or another member: a wrong address. The
                // member at it may be replaced by the right one, so we back off and try again.
                tracing::error!(
                    peer = format!("{:x}", self.target),
                    reason = status.message(),
                    "peer URL leads to the wrong member"
                );
                RPCError::Unreachable(Unreachable::new(&err))
            }
            _ => RPCError::Network(NetworkError::new(&err)),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        if let Some(flush) = self.peers.leader_flush.clone() {
            rpc.leader_commit = self.durable_commit(&flush, rpc.leader_commit, &option).await?;
        }
        self.append(&rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.call(Rpc::Vote, &rpc, Vec::new(), &option).await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let data = std::mem::take(&mut rpc.data);
        self.call(Rpc::InstallSnapshot, &rpc, data, &option).await
    }

    /// A snapshot goes as one stream ([`Connection::stream_snapshot`]); a peer from before such
    /// streams is sent openraft's chunks, one call each.
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        mut snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> SnapshotResult {
        let cancel = cancel.shared();
        if let Some(response) = self.stream_snapshot(&vote, &mut snapshot, cancel.clone(), &option).await? {
            return Ok(response);
        }
        tracing::info!(peer = format!("{:x}", self.target), "peer takes no snapshot streams: sending chunks");
        Chunked::send_snapshot(self, vote, snapshot, cancel, option).await
    }

    /// How long replication waits before each next try at a peer it found unreachable: briefly
    /// at first, because a member that restarts or has just been added is usually back within a
    /// fraction of a second, then openraft's default of 500 ms (every failed try logs a
    /// warning). A new member is added before it starts, so the leader's first try finds nothing
    /// listening: with 50 ms as the first wait the leader reached it about 50 ms after it
    /// started, with 10 ms about 10 ms after (benches/cluster catch-up, the new member's log).
    /// A snapshot stream that fails is tried again whole, after these waits if the peer was
    /// unreachable. openraft's chunks, sent to members from before such streams, wait these
    /// between the tries of a chunk the peer did not take, and give the snapshot up after five
    /// failures in a row, after 0.75 s of waiting (its default: 2 s), to start it again.
    fn backoff(&self) -> Backoff {
        let first_tries = [10, 40, 200].map(Duration::from_millis);
        Backoff::new(first_tries.into_iter().chain(std::iter::repeat(UNREACHABLE_BACKOFF)))
    }
}

/// Hands `first`, then `file`'s bytes in parts of [`SNAPSHOT_PART_BYTES`], to a snapshot
/// stream. Stops early, without an error, once the stream is gone: the call's answer says why.
async fn feed_parts(
    file: &mut tokio::fs::File,
    first: SnapshotPart,
    parts: mpsc::Sender<SnapshotPart>,
    wait: Duration,
) -> std::result::Result<(), FeedError> {
    let mut part = first;
    loop {
        match tokio::time::timeout(wait, parts.send(part)).await {
            Ok(Ok(())) => {}
            Ok(Err(_gone)) => return Ok(()),
            Err(_) => return Err(FeedError::Stalled(wait)),
        }
        let mut data = Vec::with_capacity(SNAPSHOT_PART_BYTES as usize);
        while data.len() < data.capacity() {
            if file.read_buf(&mut data).await.map_err(FeedError::Read)? == 0 {
                break;
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        part = SnapshotPart { data, ..SnapshotPart::default() };
    }
}

/// A failure to read the snapshot being sent: the leader's own storage, not the network.
fn unreadable(meta: &SnapshotMeta, e: std::io::Error) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e)
}

/// A transport failure as openraft's snapshot sending reports it.
fn streaming_error(err: RPCError<NodeId, PeerNode, RaftError<NodeId>>) -> StreamingError<TypeConfig, Fatal<NodeId>> {
    match err {
        RPCError::Unreachable(e) => e.into(),
        RPCError::Network(e) => e.into(),
        other => NetworkError::new(&other).into(),
    }
}

#[cfg(test)]
mod tests {
    //! The AppendEntries stream's one rule: a reply belongs to the request it answers, even when
    //! openraft gives up on an exchange halfway; the commit index a leader sends is one its own
    //! copy of is durable; and a snapshot stream carries the whole file, or stops at the peer's
    //! early answer. Provoking those needs a peer that answers late or early on purpose, or a
    //! leader whose flush never ends, so these tests run a stand-in peer service in process.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use openraft::error::Fatal;
    use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse};
    use openraft::{CommittedLeaderId, LogId, Snapshot, Vote};
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
    use tonic::codegen::BoxStream;
    use tonic::{Request, Response, Status, Streaming};

    use super::super::{NodeId, PeerNode, SnapshotMeta, TypeConfig};
    use super::{LeaderFlush, Peers, PEER_WINDOW_BYTES, SNAPSHOT_PART_BYTES};
    use crate::disk::Db;
    use crate::pb::peer_server::{Peer, PeerServer};
    use crate::pb::{RaftReply, RaftRequest, SnapshotPart};

    /// Answers an AppendEntries whose previous entry is 1 with a conflict, half a second late;
    /// any other at once, with success. Records the commit index each one carried.
    #[derive(Default)]
    struct SlowFirstPeer {
        commits_seen: Arc<Mutex<Vec<Option<u64>>>>,
    }

    fn answer(request: &RaftRequest, commits_seen: &Mutex<Vec<Option<u64>>>) -> (Duration, RaftReply) {
        let rpc: AppendEntriesRequest<TypeConfig> = bincode::deserialize(&request.payload).expect("a request");
        commits_seen.lock().expect("not poisoned").push(rpc.leader_commit.map(|id| id.index));
        let (delay, response) = match rpc.prev_log_id.map(|id| id.index) {
            Some(1) => (Duration::from_millis(500), AppendEntriesResponse::<NodeId>::Conflict),
            _ => (Duration::ZERO, AppendEntriesResponse::Success),
        };
        let result: Result<_, openraft::error::RaftError<NodeId>> = Ok(response);
        (delay, RaftReply { payload: bincode::serialize(&result).expect("a reply") })
    }

    #[tonic::async_trait]
    impl Peer for SlowFirstPeer {
        async fn append_entries(
            &self,
            request: Request<Streaming<RaftRequest>>,
        ) -> Result<Response<BoxStream<RaftReply>>, Status> {
            let mut requests = request.into_inner();
            let (replies, outgoing) = tokio::sync::mpsc::channel(1);
            let commits_seen = self.commits_seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(request)) = requests.message().await {
                    let (delay, reply) = answer(&request, &commits_seen);
                    tokio::time::sleep(delay).await;
                    if replies.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
        }
    }

    /// Takes snapshot streams, keeping the bytes and the number of parts each carried. With a
    /// `newer_vote`, it answers with that after the first part, as a member that knows a newer
    /// leader does, reading no further but keeping the stream open.
    #[derive(Default)]
    struct SnapshotTaker {
        newer_vote: Option<Vote<NodeId>>,
        received: Arc<Mutex<(Vec<u8>, usize)>>,
    }

    #[tonic::async_trait]
    impl Peer for SnapshotTaker {
        async fn stream_snapshot(
            &self,
            request: Request<Streaming<SnapshotPart>>,
        ) -> Result<Response<RaftReply>, Status> {
            let mut parts = request.into_inner();
            let first = parts.message().await?.expect("a first part");
            let (offered, _): (Vote<NodeId>, SnapshotMeta) = bincode::deserialize(&first.offer).expect("an offer");
            let mut vote = offered;
            let mut part = Some(first);
            while let Some(SnapshotPart { data, .. }) = part {
                {
                    let mut received = self.received.lock().expect("not poisoned");
                    received.0.extend_from_slice(&data);
                    received.1 += 1;
                }
                if let Some(newer) = self.newer_vote {
                    vote = newer;
                    // Unread but open, so that only the answer can end the sender's wait.
                    tokio::spawn(async move { (parts, std::future::pending::<()>().await) });
                    break;
                }
                part = parts.message().await?;
            }
            let result: Result<_, Fatal<NodeId>> = Ok(SnapshotResponse::new(vote));
            Ok(Response::new(RaftReply { payload: bincode::serialize(&result).expect("a reply") }))
        }
    }

    /// A snapshot of `len` bytes, its file in `dir`.
    async fn snapshot_of(dir: &std::path::Path, len: u64) -> (Vec<u8>, Snapshot<TypeConfig>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let path = dir.join("snapshot");
        std::fs::write(&path, &bytes).expect("a snapshot file");
        let file = tokio::fs::File::open(&path).await.expect("the snapshot file");
        (bytes, Snapshot { meta: SnapshotMeta::default(), snapshot: Box::new(file) })
    }

    #[tokio::test]
    async fn a_snapshot_reaches_the_peer_whole_in_one_stream_of_parts() {
        let peer = SnapshotTaker::default();
        let received = peer.received.clone();
        let node = serve(peer).await;
        let dir = tempfile::tempdir().expect("a dir");
        let (bytes, snapshot) = snapshot_of(dir.path(), SNAPSHOT_PART_BYTES * 5 / 2).await;
        let mut connection = Peers::new(1, 1).new_client(2, &node).await;
        let vote = Vote::new_committed(1, 1);

        let option = RPCOption::new(Duration::from_secs(5));
        let response = connection.full_snapshot(vote, snapshot, std::future::pending(), option).await.expect("sent");

        assert_eq!(response.vote, vote);
        let (data, parts) = &*received.lock().expect("not poisoned");
        assert!(data == &bytes, "the peer received {} bytes, not the snapshot's {}", data.len(), bytes.len());
        assert_eq!(*parts, 4, "the offer, then three parts of at most {SNAPSHOT_PART_BYTES} bytes");
    }

    #[tokio::test]
    async fn a_peer_that_knows_a_newer_leader_answers_before_the_last_part() {
        let newer = Vote::new_committed(2, 3);
        let node = serve(SnapshotTaker { newer_vote: Some(newer), ..SnapshotTaker::default() }).await;
        let dir = tempfile::tempdir().expect("a dir");
        // Far more than the HTTP/2 window and the buffers on the way hold, so the sender stalls.
        let (_, snapshot) = snapshot_of(dir.path(), u64::from(PEER_WINDOW_BYTES) * 3).await;
        let mut connection = Peers::new(1, 1).new_client(2, &node).await;

        let option = RPCOption::new(Duration::from_secs(10));
        let sent = connection.full_snapshot(Vote::new_committed(1, 1), snapshot, std::future::pending(), option);
        let response =
            tokio::time::timeout(Duration::from_secs(5), sent).await.expect("an early answer").expect("sent");

        assert_eq!(response.vote, newer, "the newer vote, for the sender to step down");
    }

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn append_after(prev_index: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(prev_index)),
            leader_commit: None,
            entries: Vec::new(),
        }
    }

    /// Serves `peer` on a free port, and what a member needs to reach it.
    async fn serve(peer: impl Peer) -> PeerNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeerServer::new(peer))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        PeerNode { name: "peer".into(), peer_urls: vec![url], voter: true }
    }

    #[tokio::test]
    async fn an_exchange_openraft_gave_up_on_leaves_no_reply_for_the_next() {
        let node = serve(SlowFirstPeer::default()).await;
        let mut connection = Peers::new(1, 1).new_client(2, &node).await;
        let option = RPCOption::new(Duration::from_secs(5));

        // As openraft does when its own timeout fires first: the exchange is dropped mid-way.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(100),
            connection.append_entries(append_after(1), option.clone()),
        )
        .await;
        assert!(abandoned.is_err(), "the slow reply must still be on its way");

        let answered = connection.append_entries(append_after(2), option).await.expect("an answer");
        assert_eq!(answered, AppendEntriesResponse::Success, "the answer to this request, not the late one");
    }

    #[tokio::test]
    async fn a_commit_the_leader_has_not_made_durable_is_held_back_without_a_wait() {
        let peer = SlowFirstPeer::default();
        let commits_seen = peer.commits_seen.clone();
        let node = serve(peer).await;
        let dir = tempfile::tempdir().expect("a dir");
        let flush = LeaderFlush::new(Db::open(&dir.path().join("db"), 1 << 20).expect("a database"));
        let mut connection = Peers::new(1, 1).telling_commits_after(flush.clone()).new_client(2, &node).await;
        let option = RPCOption::new(Duration::from_secs(2));
        let committed_at = |index| AppendEntriesRequest { leader_commit: Some(log_id(index)), ..append_after(2) };

        connection.append_entries(committed_at(4), option.clone()).await.expect("an answer");
        flush.stall(5);
        // Past the unflushed append: sent at once, with the last commit index sent before.
        let sent = tokio::time::timeout(option.hard_ttl(), connection.append_entries(committed_at(6), option.clone()));
        sent.await.expect("no wait for a flush that never ends").expect("an answer");
        connection.append_entries(committed_at(4), option).await.expect("an answer");

        assert_eq!(*commits_seen.lock().expect("not poisoned"), [Some(4), Some(4), Some(4)]);
    }
}
