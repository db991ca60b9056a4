//! The receiving side of the peer protocol: Raft RPCs handed to openraft, forwarded proposals
//! and read-index requests handed to the local [`Node`].
//!
//! Every request must carry this cluster's ID and be meant for this member. Traffic from another
//! cluster, or meant for whoever had this peer URL before, is refused as a failed precondition
//! (etcd's 412): the sender logs it and keeps trying, since the mistake is an address, not its
//! data. Only a removed member is refused for good (permission denied), and it stops.
//! AppendEntries arrive on a gRPC stream per replication session and are checked one by one; a
//! refused one ends its stream with the refusal.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest};

use super::log_store::CommitWatermark;
use super::node::Node;
use super::TypeConfig;
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
}

impl PeerService {
    pub fn new(node: Arc<Node>, leader_commits: CommitWatermark, stop: watch::Receiver<bool>) -> PeerService {
        PeerService { node, leader_commits, stop }
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
        let mut request = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = self.decode(&request)?;
        // A sender from before `snapshot_data` carries the chunk inside the payload instead.
        if rpc.data.is_empty() {
            rpc.data = std::mem::take(&mut request.snapshot_data);
        }
        reply(&self.node.raft.install_snapshot(rpc).await)
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
