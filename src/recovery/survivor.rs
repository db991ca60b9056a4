//! Where a survivor stands, and which survivor to reset.
//!
//! A running member answers the Recovery service's `Survivor` on its client and peer URLs,
//! without a quorum; a stopped member's data dir is read in place. Both give the same
//! [`pb::SurvivorReport`]. The survivor to reset is the one with the highest last log id (term,
//! then index), Raft's rule for the most up-to-date log: every entry a quorum accepted, and so
//! every acknowledged write, is in the log of whichever survivor of that quorum is most advanced.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic::{Code, Request, Response, Status};

use crate::cluster::DataDir;
use crate::pb::{self, recovery_client::RecoveryClient, recovery_server::Recovery};
use crate::raft::log_store::{LogStore, SurvivorState};
use crate::raft::membership::describe_members;
use crate::raft::node::Node;
use crate::raft::state_machine::applied_state;
use crate::raft::{membership_with_votes, LogId};
use crate::{Error, Result};

/// Serves `Survivor` for a running member.
pub struct RecoveryService {
    node: Arc<Node>,
    log: LogStore,
    name: String,
    data_dir: PathBuf,
}

impl RecoveryService {
    pub fn new(node: Arc<Node>, log: LogStore, name: String, data_dir: PathBuf) -> RecoveryService {
        RecoveryService { node, log, name, data_dir }
    }

    async fn report(&self) -> Result<pb::SurvivorReport> {
        if crate::faults::enabled("failing-reports") {
            return Err(Error::Storage("injected failure (PHOENIX_TEST_FAULTS=failing-reports)".into()));
        }
        let node = &self.node;
        let state = self.log.survivor_state().map_err(|e| Error::Storage(e.to_string()))?;
        let applied = node.raft.metrics().borrow().last_applied;
        // Never refused for a snapshot install: a member installing one has a leader, and its
        // report is what stops a reset of another member.
        let mut report = position(&state, applied, node.kv.last_revision(), &self.data_dir)?;
        report.name = self.name.clone();
        report.member_id = node.id;
        report.cluster_id = node.cluster_id;
        report.members = node.member_list_as_known().await?;
        report.has_leader = node.has_leader();
        Ok(report)
    }
}

#[tonic::async_trait]
impl Recovery for RecoveryService {
    async fn survivor(&self, _: Request<pb::SurvivorRequest>) -> Result<Response<pb::SurvivorReport>, Status> {
        Ok(Response::new(self.report().await?))
    }
}

/// The report of the stopped member whose data dir is `data`, read without changing it.
pub fn inspect(data: &DataDir) -> Result<pb::SurvivorReport> {
    let log = data.log_store()?;
    let kv = data.kv_store();
    let state = log.survivor_state().map_err(|e| Error::Storage(e.to_string()))?;
    let (applied, membership) = applied_state(&kv)?;
    let mut report = position(&state, applied, kv.revision()?, &data.path)?;
    report.name = data.meta.name.clone();
    report.member_id = data.meta.member_id;
    report.cluster_id = data.meta.cluster_id;
    // Every member of the applied configuration and of a newer one in the log: the newer may
    // have been committed without this member hearing so, and its members may be ahead.
    let mut members = membership_with_votes(membership.membership());
    if let Some(newer) = log.membership_after(applied).map_err(|e| Error::Storage(e.to_string()))? {
        members.extend(membership_with_votes(&newer));
    }
    report.members = describe_members(members, &kv.members()?);
    report.fenced = data.fenced_reason().unwrap_or_default();
    Ok(report)
}

/// The log position and reset record every report carries.
fn position(
    state: &SurvivorState,
    applied: Option<LogId>,
    revision: i64,
    data_dir: &Path,
) -> Result<pb::SurvivorReport> {
    let reset = super::recorded_reset(data_dir)?.map(|report| report.summary()).unwrap_or_default();
    Ok(pb::SurvivorReport {
        data_dir: data_dir.display().to_string(),
        last_log_term: state.last_log_id.map_or(0, |id| id.leader_id.term),
        last_log_index: state.last_log_id.map_or(0, |id| id.index),
        commit_index: state.committed.map_or(0, |id| id.index),
        leader_commit_index: state.leader_commit,
        applied_index: applied.map_or(0, |id| id.index),
        revision,
        reset,
        ..Default::default()
    })
}

/// Raft's order of logs: the later last term wins, then the higher last index.
pub fn log_position(report: &pb::SurvivorReport) -> (u64, u64) {
    (report.last_log_term, report.last_log_index)
}

/// Acknowledged entries a reset of `report` cannot keep: those a leader said were committed and
/// that never reached it.
pub fn possibly_lost(report: &pb::SurvivorReport) -> u64 {
    report.leader_commit_index.max(report.commit_index).saturating_sub(report.last_log_index)
}

/// The index of the most advanced report (the first of equals).
pub fn most_advanced(reports: &[pb::SurvivorReport]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, report) in reports.iter().enumerate() {
        if best.is_none_or(|b| log_position(report) > log_position(&reports[b])) {
            best = Some(i);
        }
    }
    best
}

/// Why asking a member where it stands gave no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoReport {
    /// No running Phoenix member answered there: nothing listens (or no connection could be
    /// made in time), the call broke, the member is stopping, or what answers has no Recovery
    /// service. Taken for dead.
    Unreachable(String),
    /// A running member answered with an error instead of its report, or took the connection
    /// and gave no answer in time: a process holds the port but is stopped (SIGSTOP) or hung,
    /// and may resume holding the most advanced log.
    Failed(String),
}

impl std::fmt::Display for NoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoReport::Unreachable(why) | NoReport::Failed(why) => f.write_str(why),
        }
    }
}

/// Asks the member at `url` (a client or peer URL) where it stands, giving it `timeout` to
/// take the connection and as long again to answer.
pub async fn ask(url: &str, timeout: Duration) -> std::result::Result<pb::SurvivorReport, NoReport> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| NoReport::Unreachable(format!("bad URL {url:?}: {e}")))?
        .connect_timeout(timeout);
    let channel = endpoint.connect().await.map_err(|e| NoReport::Unreachable(format!("{url}: unreachable: {e}")))?;
    let mut client = RecoveryClient::new(channel);
    match tokio::time::timeout(timeout, client.survivor(pb::SurvivorRequest {})).await {
        Ok(Ok(report)) => Ok(report.into_inner()),
        Ok(Err(status)) if sent_by_a_running_member(&status) => {
            Err(NoReport::Failed(format!("{url}: it runs, but answered: {}", status.message())))
        }
        Ok(Err(status)) => Err(NoReport::Unreachable(format!("{url}: {}", status.message()))),
        // The port took the connection, so a process holds it: one that is stopped or hung, not
        // a dead one, and it may resume.
        Err(_) => Err(NoReport::Failed(format!(
            "{url}: it took the connection but gave no answer within {timeout:?}: stopped or hung? kill it first"
        ))),
    }
}

/// Whether an error answer shows a member running there: not a call that broke or timed out,
/// not a member whose Raft stopped (it exits), and not something without a Recovery service.
fn sent_by_a_running_member(status: &Status) -> bool {
    let gone = [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled, Code::Unimplemented];
    !gone.contains(&status.code()) && !crate::error::broke_mid_call(status)
}

/// What the other members of a survivor's last configuration said.
#[derive(Debug, Default)]
pub struct Answers {
    /// The reports of those that gave one.
    pub reports: Vec<pb::SurvivorReport>,
    /// One line for each member that runs but answered with an error on every peer URL that
    /// answered at all.
    pub failures: Vec<String>,
    /// The members that nothing answered for ("name (id)"): dead, or stopped.
    pub unreachable: Vec<String>,
}

/// Asks `member` on each of its peer URLs until one gives its report (returned with that URL).
/// Otherwise the last error answer, if a URL gave one (the member runs), or the URLs tried.
pub async fn ask_member(
    member: &pb::Member,
    timeout: Duration,
) -> std::result::Result<(String, pb::SurvivorReport), NoReport> {
    let mut no_report = NoReport::Unreachable(member.peer_ur_ls.join(","));
    for url in &member.peer_ur_ls {
        match ask(url, timeout).await {
            Ok(report) => return Ok((url.clone(), report)),
            Err(failed @ NoReport::Failed(_)) => no_report = failed,
            Err(NoReport::Unreachable(_)) => {}
        }
    }
    Err(no_report)
}

/// What the other members of `this` survivor's last configuration say ([`ask_member`]);
/// members that no URL answers for are taken for dead.
pub async fn ask_other_members(this: &pb::SurvivorReport, timeout: Duration) -> Answers {
    let mut answers = Answers::default();
    for member in this.members.iter().filter(|m| m.id != this.member_id) {
        match ask_member(member, timeout).await {
            Ok((_, report)) => answers.reports.push(report),
            Err(NoReport::Failed(why)) => {
                answers.failures.push(format!("member {} ({:x}) gave no report ({why})", member.name, member.id))
            }
            Err(NoReport::Unreachable(_)) => answers.unreachable.push(format!("{} ({:x})", member.name, member.id)),
        }
    }
    answers
}

/// Why `this` survivor must not be reset given what the others answered, if it must not: another
/// is more advanced, the cluster still has a leader, a member that runs would not say which, or
/// another member of the old cluster still runs at all.
pub fn objection(this: &pb::SurvivorReport, answers: &Answers) -> Option<String> {
    let mut same_cluster =
        answers.reports.iter().filter(|o| o.cluster_id == this.cluster_id && o.member_id != this.member_id);
    for other in same_cluster.clone() {
        if other.has_leader {
            return Some(format!(
                "member {} ({:x}) still has a leader: quorum is not lost, and a reset would split the cluster",
                other.name, other.member_id
            ));
        }
        if log_position(other) > log_position(this) {
            return Some(format!(
                "member {} ({:x}, data dir {}) holds a more advanced log (term {}, index {}) than {} (term {}, index {}): \
                 reset that one instead, or lose up to {} entries",
                other.name,
                other.member_id,
                other.data_dir,
                other.last_log_term,
                other.last_log_index,
                this.name,
                this.last_log_term,
                this.last_log_index,
                other.last_log_index.saturating_sub(this.last_log_index).max(1)
            ));
        }
    }
    if let Some(failure) = answers.failures.first() {
        return Some(format!(
            "{failure}: it may hold a more advanced log or have a leader, so a reset could lose writes or split \
             the cluster; stop it, and compare the survivors with `phoenixctl disaster plan --data-dir <dir> \
             --data-dir <dir>`"
        ));
    }
    // It is fenced off only once it reaches the reset member; until then, with another old member
    // that comes back, it could still elect a leader of the old cluster and take writes there.
    same_cluster.next().map(|other| {
        format!(
            "member {} ({:x}) of the old cluster is still running: stop it before the reset (with another old \
             member that comes back it could still elect a leader of the old cluster)",
            other.name, other.member_id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(member_id: u64, last_log_index: u64) -> pb::SurvivorReport {
        pb::SurvivorReport { member_id, cluster_id: 7, last_log_term: 2, last_log_index, ..Default::default() }
    }

    #[test]
    fn a_member_that_runs_is_an_objection_and_a_silent_one_is_not() {
        let this = report(1, 10);
        assert_eq!(objection(&this, &Answers::default()), None, "the others are taken for dead");
        let behind = Answers { reports: vec![report(2, 9)], ..Answers::default() };
        let said = objection(&this, &behind).expect("a member of the old cluster that still runs");
        assert!(said.contains("of the old cluster is still running: stop it before the reset"), "{said}");
        let other_cluster = pb::SurvivorReport { cluster_id: 8, ..report(2, 11) };
        assert_eq!(objection(&this, &Answers { reports: vec![other_cluster], ..Answers::default() }), None);
        let failing = Answers {
            reports: vec![report(2, 9)],
            failures: vec!["member c (3) gave no report (why)".into()],
            ..Answers::default()
        };
        let said = objection(&this, &failing).expect("a member that runs and will not say where it stands");
        assert!(said.starts_with("member c (3) gave no report (why): it may hold a more advanced log"), "{said}");
        let ahead = Answers { reports: vec![report(2, 11)], failures: failing.failures.clone(), ..Answers::default() };
        let said = objection(&this, &ahead).expect("a more advanced member");
        assert!(said.contains("holds a more advanced log"), "{said}");
    }

    #[test]
    fn only_errors_a_running_member_sends_show_it_runs() {
        assert!(sent_by_a_running_member(&Status::unknown("storage failed")));
        assert!(sent_by_a_running_member(&Status::data_loss("corrupt")));
        for gone in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled, Code::Unimplemented] {
            assert!(!sent_by_a_running_member(&Status::new(gone, "x")), "{gone:?}");
        }
        assert!(!sent_by_a_running_member(&Status::unknown("transport error")));
    }
}
