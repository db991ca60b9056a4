//! The receiving side of the peer protocol: Raft RPCs handed to openraft, forwarded proposals
//! and read-index requests handed to the local [`Node`].
//!
//! Every request must carry this cluster's ID and be meant for this member. Traffic from another
//! cluster, or meant for whoever had this peer URL before, is refused as a failed precondition
//! (etcd's 412): the sender logs it and keeps trying, since the mistake is an address, not its
//! data. Only a removed member is refused for good (permission denied), and it stops.
//! AppendEntries arrive on a gRPC stream per replication session and are checked one by one; a
//! refused one ends its stream with the refusal.
//! Snapshots arrive one at a time, each whole in one stream (or in openraft's chunks, from members
//! before such streams), since all are written to the one file openraft hands out for them; a
//! newer stream (or the member stopping) stops the one in progress. A stream installs nothing
//! unless it carried exactly the bytes it announced.

use std::cmp::Ordering;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedMutexGuard};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, SnapshotResponse};
use openraft::{Snapshot, Vote};

use super::log_store::CommitWatermark;
use super::network::SNAPSHOT_PART_TIMEOUT;
use super::node::Node;
use super::{NodeId, SnapshotMeta, TypeConfig};
use crate::pb::peer_server::Peer;
use crate::pb::{self, PeerHeader, RaftReply, RaftRequest};
use crate::Error;

#[derive(Clone)]
pub struct PeerService {
    node: Arc<Node>,
    leader_commits: CommitWatermark,
    /// Becomes true when the member stops: AppendEntries streams end then, so that the server's
    /// graceful shutdown does not wait on them (a leader never ends its own).
    stop: watch::Receiver<bool>,
    snapshot_receipts: SnapshotReceipts,
}

/// Snapshot receipts take turns: each writes the one file openraft's `begin_receiving_snapshot`
/// hands out. A newer stream stops the one in progress, whose sender may be gone without a word
/// (a host that died leaves its connection open).
#[derive(Clone)]
struct SnapshotReceipts {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Counts the streams that asked for a turn.
    newest: Arc<watch::Sender<u64>>,
}

impl SnapshotReceipts {
    fn new() -> SnapshotReceipts {
        SnapshotReceipts { turn: Arc::default(), newest: Arc::new(watch::channel(0).0) }
    }

    /// Waits for a stream's turn, having told the one in progress to stop. The future returned
    /// with it completes once a newer stream has asked for a turn.
    async fn take_turn(&self) -> (OwnedMutexGuard<()>, impl Future<Output = ()>) {
        let mut mine = 0;
        self.newest.send_modify(|newest| {
            *newest += 1;
            mine = *newest;
        });
        let mut newest = self.newest.subscribe();
        let superseded = async move {
            // The sender lives as long as the service; were it gone, stopping is right too.
            let _ = newest.wait_for(|newest| *newest != mine).await;
        };
        (self.turn.clone().lock_owned().await, superseded)
    }
}

impl PeerService {
    pub fn new(node: Arc<Node>, leader_commits: CommitWatermark, stop: watch::Receiver<bool>) -> PeerService {
        PeerService { node, leader_commits, stop, snapshot_receipts: SnapshotReceipts::new() }
    }

    fn check_header(&self, header: Option<&PeerHeader>) -> Result<(), Status> {
        let Some(header) = header else { return Err(Status::invalid_argument("peer request without header")) };
        if header.cluster_id != self.node.cluster_id {
            return Err(Status::failed_precondition(format!(
                "request from member {:x} of cluster {:x}, but this is cluster {:x}",
                header.from, header.cluster_id, self.node.cluster_id
            )));
        }
        if header.to != 0 && header.to != self.node.id {
            return Err(Status::failed_precondition(format!(
                "request for member {:x} reached member {:x}: its peer URL belongs to another member now",
                header.to, self.node.id
            )));
        }
        // Only a sender outside the configuration can be a removed member (IDs are never
        // reused), so members' traffic never pays for reading the tombstones.
        let outsider = self.node.peer_node(header.from).is_err();
        if outsider && self.node.kv.removed_members().map_err(Status::from)?.contains(&header.from) {
            return Err(Status::permission_denied(format!(
                "member {:x} was removed from cluster {:x}",
                header.from, self.node.cluster_id
            )));
        }
        // A peer that talks to us is alive, whichever way the traffic goes.
        self.node.peers().record_contact(header.from);
        Ok(())
    }

    /// Answers a replication stream's AppendEntries one at a time, in order (the leader sends the
    /// next after it has the reply); the first failure ends the stream.
    async fn serve_append_stream(
        mut self,
        mut requests: Streaming<RaftRequest>,
        replies: mpsc::Sender<Result<RaftReply, Status>>,
    ) {
        loop {
            let request = tokio::select! {
                request = requests.message() => request.transpose(),
                _ = self.stop.wait_for(|stop| *stop) => return,
            };
            let Some(request) = request else { return };
            let reply = match request {
                Ok(request) => self.append_one(&request).await,
                Err(status) => Err(status),
            };
            let failed = reply.is_err();
            if replies.send(reply).await.is_err() || failed {
                return;
            }
        }
    }

    /// One AppendEntries of a replication stream.
    async fn append_one(&self, request: &RaftRequest) -> Result<RaftReply, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.decode(request)?;
        if let Some(committed) = rpc.leader_commit {
            self.leader_commits.note(committed.index).map_err(|e| Status::internal(e.to_string()))?;
        }
        encode_reply(&self.node.raft.append_entries(rpc).await)
    }

    fn decode<T: DeserializeOwned>(&self, request: &RaftRequest) -> Result<T, Status> {
        self.check_header(request.header.as_ref())?;
        bincode::deserialize(&request.payload).map_err(|e| Status::invalid_argument(format!("bad Raft payload: {e}")))
    }
}

/// Writes a snapshot stream's bytes to `file`, the first part's `first` ahead of the rest's:
/// exactly the `size` bytes the stream announced, flushed, or an error. Stops when `stopped`
/// completes (saying why), or when no part has come for `idle` (a sender gone without a word).
///
/// A failure to write is reported as unavailable, so that the sender backs off before it tries
/// again; found only when installing, it would stop this member's Raft.
async fn receive_parts(
    parts: impl Stream<Item = Result<pb::SnapshotPart, Status>>,
    first: Vec<u8>,
    size: u64,
    file: &mut (impl AsyncWrite + Unpin),
    stopped: impl Future<Output = &'static str>,
    idle: Duration,
) -> Result<(), Status> {
    tokio::pin!(parts, stopped);
    let unwritten = |e: std::io::Error| Status::unavailable(format!("could not write a received snapshot: {e}"));
    let (mut data, mut received) = (first, 0u64);
    loop {
        received += data.len() as u64;
        if received > size {
            return Err(Status::invalid_argument(format!("snapshot stream longer than the {size} bytes it announced")));
        }
        file.write_all(&data).await.map_err(unwritten)?;
        let next = tokio::select! {
            next = tokio::time::timeout(idle, parts.next()) => next,
            why = &mut stopped => return Err(Status::aborted(why)),
        };
        match next {
            Ok(Some(part)) => data = part?.data,
            Ok(None) if received == size => return file.flush().await.map_err(unwritten),
            Ok(None) => {
                return Err(Status::invalid_argument(format!(
                    "snapshot stream ended after {received} of its {size} bytes"
                )))
            }
            Err(_) => return Err(Status::deadline_exceeded(format!("no snapshot part came for {idle:?}"))),
        }
    }
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(encode_reply(result)?))
}

fn encode_reply<T: Serialize>(result: &T) -> Result<RaftReply, Status> {
    let payload = bincode::serialize(result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftReply { payload })
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> Result<Response<BoxStream<RaftReply>>, Status> {
        let (replies, outgoing) = mpsc::channel(1);
        tokio::spawn(self.clone().serve_append_stream(request.into_inner(), replies));
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc = self.decode(request.get_ref())?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let _turn = self.snapshot_receipts.turn.lock().await;
        let mut request = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = self.decode(&request)?;
        // A sender from before `snapshot_data` carries the chunk inside the payload instead.
        if rpc.data.is_empty() {
            rpc.data = std::mem::take(&mut request.snapshot_data);
        }
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn stream_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotPart>>,
    ) -> Result<Response<RaftReply>, Status> {
        if crate::faults::enabled("no-snapshot-streams") {
            return Err(Status::unimplemented(
                "injected: no snapshot streams (PHOENIX_TEST_FAULTS=no-snapshot-streams)",
            ));
        }
        let mut parts = request.into_inner();
        let first = parts.message().await?.ok_or_else(|| Status::invalid_argument("snapshot stream without parts"))?;
        self.check_header(first.header.as_ref())?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta) = bincode::deserialize(&first.offer)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot offer: {e}")))?;
        // As openraft does for chunks: nothing is received from a leader this member knows is
        // stale; the answer tells it the newer vote.
        let known = self.node.raft.with_raft_state(|state| *state.vote_ref()).await.map_err(|_| Error::Stopped)?;
        if !matches!(vote.partial_cmp(&known), Some(Ordering::Greater | Ordering::Equal)) {
            return reply(&Ok::<_, Fatal<NodeId>>(SnapshotResponse::new(known)));
        }
        let (_turn, superseded) = self.snapshot_receipts.take_turn().await;
        let mut stop = self.stop.clone();
        let stopped = async move {
            tokio::select! {
                () = superseded => "a newer snapshot stream took over",
                _ = stop.wait_for(|stop| *stop) => "the member is stopping",
            }
        };
        let mut file = self.node.raft.begin_receiving_snapshot().await.map_err(|_| Error::Stopped)?;
        receive_parts(parts, first.data, first.size, &mut *file, stopped, SNAPSHOT_PART_TIMEOUT).await?;
        reply(&self.node.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: file }).await)
    }

    async fn propose(&self, request: Request<pb::ProposeRequest>) -> Result<Response<pb::CommandResults>, Status> {
        let request = request.into_inner();
        self.check_header(request.header.as_ref())?;
        // No forwarding chains: a follower is refused and retries with whoever it thinks leads.
        self.node.ensure_leading()?;
        crate::faults::hold_forwarded_proposals().await;
        let proposals = request.commands.into_iter().map(|command| self.node.propose_local(command));
        let results = futures::future::join_all(proposals).await;
        crate::faults::hold_forwarded_answers().await;
        // Each command's own failure goes back in its place; the follower makes it an error again.
        let results = results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|err| pb::CommandResult {
                    result: Some(pb::command_result::Result::Error(err.to_command_error())),
                })
            })
            .collect();
        Ok(Response::new(pb::CommandResults { results }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<pb::LeaseForward>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let request = request.into_inner();
        self.check_header(request.header.as_ref())?;
        let ttl = self.node.lease_keep_alive_local(request.id)?;
        Ok(Response::new(pb::LeaseKeepAliveResponse { header: None, id: request.id, ttl }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseForward>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        self.check_header(request.header.as_ref())?;
        Ok(Response::new(self.node.lease_time_to_live_local(request.id, request.keys)?))
    }

    async fn change_members(
        &self,
        request: Request<pb::MembershipChange>,
    ) -> Result<Response<pb::MembershipChanged>, Status> {
        let request = request.into_inner();
        self.check_header(request.header.as_ref())?;
        let change = request.change.ok_or_else(|| Status::invalid_argument("membership change without change"))?;
        Ok(Response::new(self.node.change_members_local(change).await?))
    }

    async fn cluster_info(&self, _: Request<pb::ClusterInfoRequest>) -> Result<Response<pb::ClusterInfoReply>, Status> {
        let members = self.node.member_list_as_known().await?;
        let removed = self.node.kv.removed_members()?.into_iter().collect();
        Ok(Response::new(pb::ClusterInfoReply { cluster_id: self.node.cluster_id, members, removed }))
    }

    async fn hold_elections(
        &self,
        request: Request<pb::HoldElectionsRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        let request = request.into_inner();
        self.check_header(request.header.as_ref())?;
        self.node.hold_own_elections(request.hold);
        Ok(Response::new(pb::ReadIndexReply { index: 0 }))
    }

    async fn campaign(&self, request: Request<pb::ReadIndexRequest>) -> Result<Response<pb::ReadIndexReply>, Status> {
        self.check_header(request.get_ref().header.as_ref())?;
        self.node.raft.trigger().elect().await.map_err(|_| Status::from(Error::Stopped))?;
        Ok(Response::new(pb::ReadIndexReply { index: 0 }))
    }

    async fn read_index(&self, request: Request<pb::ReadIndexRequest>) -> Result<Response<pb::ReadIndexReply>, Status> {
        self.check_header(request.get_ref().header.as_ref())?;
        let index = self.node.read_index().await?;
        Ok(Response::new(pb::ReadIndexReply { index }))
    }
}

#[cfg(test)]
mod tests {
    //! What a snapshot stream must carry before anything is installed from it, and how receipts
    //! take turns.

    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use futures::{stream, FutureExt};
    use tokio::io::AsyncWrite;
    use tonic::{Code, Status};

    use super::{receive_parts, SnapshotReceipts};
    use crate::pb::SnapshotPart;

    const IDLE: Duration = Duration::from_secs(5);

    fn part(data: &[u8]) -> Result<SnapshotPart, Status> {
        Ok(SnapshotPart { data: data.to_vec(), ..SnapshotPart::default() })
    }

    /// Receives `first`, then `rest`, from a stream that announced `size` bytes.
    async fn receive(
        first: &[u8],
        rest: Vec<Result<SnapshotPart, Status>>,
        size: u64,
    ) -> (Result<(), Status>, Vec<u8>) {
        let mut file = Vec::new();
        let parts = stream::iter(rest);
        let received = receive_parts(parts, first.to_vec(), size, &mut file, std::future::pending(), IDLE).await;
        (received, file)
    }

    #[tokio::test]
    async fn a_stream_of_the_announced_size_is_written_whole() {
        let (received, file) = receive(b"ab", vec![part(b"cde"), part(b""), part(b"f")], 6).await;
        received.expect("received");
        assert_eq!(file, b"abcdef");
    }

    #[tokio::test]
    async fn a_stream_short_of_its_size_or_past_it_is_refused() {
        let (short, _) = receive(b"ab", vec![part(b"cde")], 6).await;
        let short = short.expect_err("refused");
        assert_eq!(
            (short.code(), short.message()),
            (Code::InvalidArgument, "snapshot stream ended after 5 of its 6 bytes")
        );

        let (long, file) = receive(b"ab", vec![part(b"cdefg"), part(b"h")], 6).await;
        let long = long.expect_err("refused");
        assert_eq!(
            (long.code(), long.message()),
            (Code::InvalidArgument, "snapshot stream longer than the 6 bytes it announced")
        );
        assert_eq!(file, b"ab", "nothing past the announced size is written");
    }

    #[tokio::test]
    async fn a_stream_cut_by_its_sender_by_silence_or_by_a_newer_one_stops() {
        let (cut, _) = receive(b"ab", vec![part(b"c"), Err(Status::cancelled("sender gone"))], 6).await;
        assert_eq!(cut.expect_err("refused").code(), Code::Cancelled);

        let mut file = Vec::new();
        let silent = stream::pending();
        let idle = Duration::from_millis(10);
        let gone = receive_parts(silent, b"ab".to_vec(), 6, &mut file, std::future::pending(), idle).await;
        assert_eq!(gone.expect_err("stopped").code(), Code::DeadlineExceeded);

        let superseded = std::future::ready("a newer snapshot stream took over");
        let taken_over = receive_parts(stream::pending(), b"ab".to_vec(), 6, &mut file, superseded, IDLE).await;
        let taken_over = taken_over.expect_err("stopped");
        assert_eq!((taken_over.code(), taken_over.message()), (Code::Aborted, "a newer snapshot stream took over"));
    }

    /// Takes every write; fails every flush, as a disk that is full does once the writes it
    /// buffered reach it.
    struct FailingFlush;

    impl AsyncWrite for FailingFlush {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Err(std::io::Error::other("no space left")))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_stream_whose_last_write_fails_is_refused_before_any_install() {
        let parts = stream::iter(vec![part(b"cd")]);
        let failed = receive_parts(parts, b"ab".to_vec(), 4, &mut FailingFlush, std::future::pending(), IDLE).await;
        let failed = failed.expect_err("refused");
        assert_eq!(
            (failed.code(), failed.message()),
            (Code::Unavailable, "could not write a received snapshot: no space left"),
            "unavailable: the sender backs off"
        );
    }

    #[tokio::test]
    async fn a_newer_receipt_stops_the_one_in_progress_and_waits_for_it_to_end() {
        let receipts = SnapshotReceipts::new();
        let (first_turn, first_superseded) = receipts.take_turn().await;
        let mut first_superseded = Box::pin(first_superseded);
        assert!((&mut first_superseded).now_or_never().is_none(), "no newer receipt yet");

        let second = tokio::spawn({
            let receipts = receipts.clone();
            async move { drop(receipts.take_turn().await) }
        });
        tokio::time::timeout(IDLE, first_superseded).await.expect("the first receipt told to stop");
        assert!(!second.is_finished(), "the second waits while the first still has its turn");
        drop(first_turn);
        tokio::time::timeout(IDLE, second).await.expect("the second's turn").expect("no panic");
    }
}
