//! The etcd v3 gRPC services. Each handler validates, proposes or reads, and maps the result;
//! the rules themselves live in [`crate::kv`], availability in [`crate::raft`].
//!
//! Auth, and the parts of Cluster and Maintenance not listed in the README,
//! are registered and answer Unimplemented, so a client gets an answer rather than a hang.

mod authority;
mod cluster;
mod election;
pub mod http;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod recipes;
mod validate;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::kv::KvStore;
use crate::pb::{self, command, command_result};
use crate::raft::node::Node;
use crate::{Error, Result};
pub use validate::Limits;

pub use authority::MendedAuthority;
pub use cluster::ClusterService;
pub use election::ElectionService;
pub use kv::KvService;
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use recipes::Recipes;
pub use watch::WatchService;

/// How often a request waiting for a snapshot install to end looks again.
const INSTALL_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Auth is not written yet: [`refuse_auth`] answers every call before it reaches tonic's default
/// stubs (whose "Not yet implemented" names neither the service nor Phoenix).
pub struct AuthService;

impl pb::auth_server::Auth for AuthService {}

/// The interceptor in front of [`AuthService`].
pub fn refuse_auth(_: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
    Err(Error::Unimplemented("Auth").into())
}

/// What every service shares.
#[derive(Clone)]
pub struct Context {
    pub node: Arc<Node>,
    pub limits: Arc<Limits>,
    pub quota_backend_bytes: u64,
    pub election_timeout: std::time::Duration,
    /// This member's data dir, for the recovery commands a lost quorum calls for.
    pub data_dir: std::path::PathBuf,
    /// The loss report of the reset this data dir went through, if any: fixed while it runs.
    pub reset_summary: Option<String>,
    /// The store's snapshot side, for Maintenance.Snapshot.
    pub state_machine: crate::raft::state_machine::StateMachine,
    /// Scheduled backups, when --backup-dir is given: reported by Status and /metrics.
    pub backups: Option<Arc<crate::backup::Backups>>,
}

impl Context {
    /// Proposes a command and returns its result, already checked for a refusal.
    async fn propose(&self, op: command::Op) -> Result<command_result::Result> {
        let result = self.node.propose(pb::Command::from(op)).await?;
        result.result.ok_or_else(|| Error::Internal("empty command result".into()))
    }

    /// Runs `read`, and again once the snapshot install it overlapped on this member has ended,
    /// until the request timeout: etcd holds reads while it swaps a snapshot in, and not every
    /// etcd client retries Unavailable. A read still overlapping an install after the timeout
    /// fails with it (Unavailable). The timeout counts from the first try, so a linearizable
    /// read may have waited for its read index before (in practice an install starts before the
    /// read index is reached, not after).
    async fn wait_out_installs<T, Fut>(&self, read: impl Fn() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.node.request_timeout();
        loop {
            match read().await {
                Err(Error::Installing) if tokio::time::Instant::now() < deadline => {
                    // Either way one more read: it answers if the install has just ended.
                    let _ = tokio::time::timeout_at(deadline, install_ended(&self.node.kv)).await;
                }
                result => return result,
            }
        }
    }

    /// etcd's learners serve only serializable ranges, Status and Snapshot: refuse anything
    /// else (see [`call_check`] for whole services). A member added as a voter and still
    /// catching up is not a learner in this sense.
    fn refuse_on_learner(&self) -> Result<()> {
        if self.node.is_learner() {
            return Err(Error::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Fills in what etcd puts in every header; keeps the revision the state machine set.
    fn header(&self, header: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
        let revision = header.map_or(0, |h| h.revision);
        Some(self.node.header(revision))
    }

    /// A header for an answer that read no revision of its own: the store's revision, or during
    /// a snapshot install the last one before it, so that it never goes backwards (the last
    /// revision is recorded just after a write lands, which a read may see first).
    fn current_header(&self) -> Option<pb::ResponseHeader> {
        let last = self.node.kv.last_revision();
        Some(self.node.header(self.node.kv.revision().map_or(last, |current| current.max(last))))
    }

    /// etcd refuses a write that costs space (see [`crate::kv::put_cost`]) once the backend and it would
    /// pass the quota, and raises NOSPACE for the cluster. Once sled's file has passed the quota,
    /// what counts is the space the store takes: the file never shrinks, and a store compacted,
    /// defragmented and disarmed (etcd's way out of NOSPACE) must take writes again.
    async fn check_quota(&self, cost: u64) -> Result<()> {
        if cost == 0 {
            return Ok(());
        }
        let fits = |size: u64| size.saturating_add(cost) < self.quota_backend_bytes;
        let file_bytes = self.node.recent_db_size()?;
        if fits(file_bytes) || fits(self.node.recent_size_in_use(file_bytes).await?) {
            return Ok(());
        }
        let alarm = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: self.node.id,
            alarm: pb::AlarmType::Nospace as i32,
        };
        self.propose(command::Op::Alarm(alarm)).await?;
        Err(Error::NoSpace)
    }
}

/// Whether the client asked, as `clientv3.WithRequireLeader` does, to be refused when this
/// member has no leader.
pub fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.get("hasleader").is_some_and(|v| v == "true")
}

/// Whether a service serves its calls on a learner, or leaves it to each call to decide.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnLearner {
    /// The service refuses every call on a learner.
    Refused,
    /// Each call decides (KV serves serializable ranges, Maintenance serves Status and Snapshot).
    ByCall,
}

/// Refuses what etcd's interceptors refuse: every call of a service a learner does not serve,
/// on a learner, and calls that require a leader while this member has none.
pub fn call_check(
    node: Arc<Node>,
    on_learner: OnLearner,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request| {
        if on_learner == OnLearner::Refused && node.is_learner() {
            return Err(Error::NotSupportedForLearner.into());
        }
        if requires_leader(request.metadata()) && !node.has_leader() {
            return Err(Error::NoLeader.into());
        }
        Ok(request)
    }
}

fn unexpected(what: &str) -> Error {
    Error::Internal(format!("unexpected result for {what}"))
}

/// Waits until no snapshot install is replacing the store. An install takes about half a second
/// per 100,000 keys; when one fails, openraft stops and the member exits.
async fn install_ended(kv: &KvStore) {
    while kv.installing() {
        tokio::time::sleep(INSTALL_POLL_INTERVAL).await;
    }
}
