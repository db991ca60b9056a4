//! The Lease service. Grants and revokes go through Raft; keepalives and TTL questions go to the
//! leader, which alone keeps the deadlines.

use std::future::ready;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::{unexpected, Context};
use crate::pb::{self, command, command_result, lease_server::Lease};
use crate::Error;

/// etcd's upper bound on a lease TTL, in seconds.
const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// Keepalive answers queued per stream.
const KEEPALIVE_BUFFER: usize = 16;

pub struct LeaseService {
    ctx: Context,
}

impl LeaseService {
    pub fn new(ctx: Context) -> LeaseService {
        LeaseService { ctx }
    }

    /// etcd raises short TTLs so a lease outlives a leader election: 1.5 election timeouts,
    /// rounded up to whole seconds.
    fn min_ttl(&self) -> i64 {
        let millis = self.ctx.election_timeout.as_millis() as i64 * 3 / 2;
        (millis + 999) / 1000
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let mut req = request.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge.into());
        }
        req.ttl = req.ttl.max(self.min_ttl());
        self.ctx.check_quota(crate::kv::LEASE_OVERHEAD_BYTES).await?;
        match self.ctx.propose(command::Op::LeaseGrant(req)).await? {
            command_result::Result::LeaseGrant(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("lease grant").into()),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        match self.ctx.propose(command::Op::LeaseRevoke(request.into_inner())).await? {
            command_result::Result::LeaseRevoke(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("lease revoke").into()),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<pb::LeaseKeepAliveResponse>>, Status> {
        let mut input = request.into_inner();
        let (out, responses) = mpsc::channel(KEEPALIVE_BUFFER);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = input.message().await {
                let answer = match ctx.node.lease_keep_alive(req.id).await {
                    Ok(ttl) => Ok(pb::LeaseKeepAliveResponse { header: ctx.current_header(), id: req.id, ttl }),
                    Err(e) => Err(Status::from(e)),
                };
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let mut response = self.ctx.node.lease_time_to_live(req.id, req.keys).await?;
        response.header = self.ctx.current_header();
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.ctx.node.linearize().await?;
        let mut leases = self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.leases())).await?;
        // etcd lists leases soonest expiry first, as its lessor counts them down: the leader's
        // does; a follower's counts none down and lists them in no set order (here, by ID).
        let node = &self.ctx.node;
        if node.usable_leader() == Some(node.id) && node.ensure_leading_leases().is_ok() {
            node.lessor.sort_by_expiry(&mut leases);
        }
        let leases = leases.into_iter().map(|(id, _)| pb::LeaseStatus { id }).collect();
        Ok(Response::new(pb::LeaseLeasesResponse { header: self.ctx.current_header(), leases }))
    }
}
