//! The Cluster service: list, add, remove, update and promote members. Changes run on the
//! leader ([`crate::raft::membership`]); answers carry the member list as etcd's do.

use tonic::{Request, Response, Status};

use super::Context;
use crate::pb::{self, cluster_server::Cluster, membership_change::Change};

pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub fn new(ctx: Context) -> ClusterService {
        ClusterService { ctx }
    }

    /// etcd leaves the revision out of membership answers.
    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.ctx.node.header(0))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let changed = self.ctx.node.change_members(Change::Add(request.into_inner())).await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: changed.member,
            members: changed.members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let changed = self.ctx.node.change_members(Change::Remove(request.into_inner())).await?;
        Ok(Response::new(pb::MemberRemoveResponse { header: self.header(), members: changed.members }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let changed = self.ctx.node.change_members(Change::Update(request.into_inner())).await?;
        Ok(Response::new(pb::MemberUpdateResponse { header: self.header(), members: changed.members }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let changed = self.ctx.node.change_members(Change::Promote(request.into_inner())).await?;
        Ok(Response::new(pb::MemberPromoteResponse { header: self.header(), members: changed.members }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.ctx.node.linearize().await?;
        }
        let members = self.ctx.wait_out_installs(|| self.ctx.node.member_list()).await?;
        Ok(Response::new(pb::MemberListResponse { header: self.header(), members }))
    }
}
