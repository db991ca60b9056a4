//! The Maintenance service: status, alarms, hashes, defragmentation and snapshots.
//!
//! Status tells the truth about a lost quorum: no leader, and in `errors` which voters are
//! missing and the commands that recover the cluster; after a reset, the loss report.

use std::future::ready;

use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{unexpected, Context};
use crate::pb::{self, alarm_request::AlarmAction, command, command_result, maintenance_server::Maintenance};
use crate::recovery::quorum::quorum_loss;

pub struct MaintenanceService {
    ctx: Context,
}

impl MaintenanceService {
    pub fn new(ctx: Context) -> MaintenanceService {
        MaintenanceService { ctx }
    }

    /// Active alarms of one type, or of every type for NONE (etcd's GET).
    fn alarm_list(&self, alarm: i32) -> crate::Result<Vec<pb::AlarmMember>> {
        Ok(self
            .ctx
            .node
            .kv
            .alarms()?
            .into_iter()
            .filter(|a| alarm == pb::AlarmType::None as i32 || a.alarm == alarm)
            .map(|a| pb::AlarmMember { member_id: a.member_id, alarm: a.alarm })
            .collect())
    }
}

pub(super) fn alarm_name(alarm: i32) -> &'static str {
    pb::AlarmType::try_from(alarm).map_or("UNKNOWN", |a| a.as_str_name())
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        let req = request.into_inner();
        if req.action == AlarmAction::Get as i32 {
            let alarms = self.ctx.wait_out_installs(|| ready(self.alarm_list(req.alarm))).await?;
            return Ok(Response::new(pb::AlarmResponse { header: self.ctx.current_header(), alarms }));
        }
        match self.ctx.propose(command::Op::Alarm(req)).await? {
            command_result::Result::Alarm(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("alarm").into()),
        }
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let node = &self.ctx.node;
        let committed = node.raft.with_raft_state(|state| state.committed).await.map_err(|_| crate::Error::Stopped)?;
        let metrics = node.raft.metrics().borrow().clone();
        let db_size = node.kv.size_on_disk(&node.db)? as i64;
        // A leader that lost its quorum keeps the title in openraft 0.9 but leads nobody.
        let leader = node.usable_leader().unwrap_or(0);
        // etcd lists a missing leader first, then the alarms.
        let mut errors: Vec<String> = Vec::new();
        if leader == 0 {
            errors.push(crate::Error::NoLeader.to_string());
        }
        // Status still answers while a snapshot install hides the alarms; it says so instead.
        match self.alarm_list(pb::AlarmType::None as i32) {
            Ok(alarms) => {
                errors.extend(alarms.iter().map(|a| format!("memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm))))
            }
            Err(installing @ crate::Error::Installing) => errors.push(installing.to_string()),
            Err(e) => return Err(e.into()),
        }
        errors.extend(quorum_loss(node).map(|loss| loss.explain(&self.ctx.data_dir)));
        errors.extend(self.ctx.reset_summary.as_ref().map(|summary| format!("reset: {summary}")));
        errors.extend(self.ctx.backups.as_ref().and_then(|backups| backups.status_line()));
        Ok(Response::new(pb::StatusResponse {
            header: self.ctx.current_header(),
            version: crate::ETCD_API_VERSION.to_string(),
            db_size,
            leader,
            raft_index: committed.map_or(0, |id| id.index),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |id| id.index),
            errors,
            // sled reclaims space itself, so everything it holds counts as in use.
            db_size_in_use: db_size,
            is_learner: !metrics.membership_config.membership().voter_ids().any(|id| id == node.id),
            // A disabled quota (crate::config::NO_QUOTA) reads -1, as the flag that disabled it.
            db_size_quota: i64::try_from(self.ctx.quota_backend_bytes).unwrap_or(-1),
            ..Default::default()
        }))
    }

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<BoxStream<pb::SnapshotResponse>>, Status> {
        let header = self.ctx.current_header().unwrap_or_default();
        // The copy holds the store's records, which the database file holds and more.
        let size = self.ctx.node.kv.size_on_disk(&self.ctx.node.db)?;
        let chunks = crate::snapshot::stream(&self.ctx.state_machine, &self.ctx.data_dir, size, header).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks))))
    }

    async fn defragment(&self, _: Request<pb::DefragmentRequest>) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        // sled compacts its segments continuously; there is nothing to rewrite, only to flush.
        self.ctx.node.db.flush_async().await.map_err(crate::Error::from)?;
        Ok(Response::new(pb::DefragmentResponse { header: self.ctx.current_header() }))
    }

    async fn downgrade(&self, _: Request<pb::DowngradeRequest>) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(crate::Error::Unimplemented("Downgrade").into())
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        self.ctx.node.move_leader(request.into_inner().target_id).await?;
        Ok(Response::new(pb::MoveLeaderResponse { header: self.ctx.current_header() }))
    }

    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        let (hash, _, _) = self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.hash_kv(0))).await?;
        Ok(Response::new(pb::HashResponse { header: self.ctx.current_header(), hash }))
    }

    async fn hash_kv(&self, request: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        self.ctx.refuse_on_learner()?;
        let revision = request.get_ref().revision;
        let hashed = self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.hash_kv(revision))).await?;
        let (hash, compact_revision, hash_revision) = hashed;
        Ok(Response::new(pb::HashKvResponse {
            header: self.ctx.current_header(),
            hash,
            compact_revision,
            hash_revision,
        }))
    }
}
