//! The Cluster service: member list (membership changes come with the membership issue).

use tonic::{Request, Response, Status};

use super::Context;
use crate::pb::{self, cluster_server::Cluster};

pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub fn new(ctx: Context) -> ClusterService {
        ClusterService { ctx }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.ctx.node.linearize().await?;
        }
        let attributes = self.ctx.node.kv.members()?;
        let members = self
            .ctx
            .node
            .members()
            .into_iter()
            .map(|(id, (node, is_voter))| {
                let attrs = attributes.get(&id);
                pb::Member {
                    id,
                    // A member that has not published its attributes yet has no name, as in etcd.
                    name: attrs.map(|a| a.name.clone()).unwrap_or_default(),
                    peer_ur_ls: node.peer_urls,
                    client_ur_ls: attrs.map(|a| a.client_urls.clone()).unwrap_or_default(),
                    is_learner: !is_voter,
                }
            })
            .collect();
        // etcd leaves the revision out of membership answers.
        Ok(Response::new(pb::MemberListResponse { header: Some(self.ctx.node.header(0)), members }))
    }
}
