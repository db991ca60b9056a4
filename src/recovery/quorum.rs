//! Telling the truth while quorum is lost: which voters this member cannot reach and since
//! when, and the commands that recover the cluster, in Status, `/health`, gRPC health and the
//! logs.
//!
//! Quorum counts as lost when this member has known no leader for longer than an election takes
//! ([`Node::leaderless_patience`]) and fewer than a majority of the voters, itself included,
//! answered it within that time. A member without a leader that still reaches a majority is
//! only waiting for an election, and says nothing more than "no leader".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::raft::node::Node;
use crate::raft::NodeId;

/// How often the monitor looks at the quorum.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often a lost quorum is logged again while it lasts.
const REMINDER_INTERVAL: Duration = Duration::from_secs(30);

/// A voter this member has not heard from lately.
#[derive(Debug, Clone)]
pub struct UnreachableVoter {
    pub id: NodeId,
    pub name: String,
    pub peer_urls: Vec<String>,
    /// When it last answered this member, if it did since this member started.
    pub last_contact: Option<SystemTime>,
}

/// What this member sees while quorum is lost.
#[derive(Debug, Clone)]
pub struct QuorumLoss {
    pub voters: usize,
    pub unreachable: Vec<UnreachableVoter>,
    /// Client URLs of the members still answering (this one included): where to ask for a plan.
    pub reachable_endpoints: Vec<String>,
}

/// The lost quorum, if it is lost.
pub fn quorum_loss(node: &Node) -> Option<QuorumLoss> {
    let window = node.leaderless_patience();
    if node.leaderless_for() < window {
        return None;
    }
    let attributes = node.kv.members().unwrap_or_default();
    let voters: Vec<_> = node.members().into_iter().filter(|(_, (_, is_voter))| *is_voter).collect();
    let answered = |id: NodeId| id == node.id || node.peers().last_contact(id).is_some_and(|t| t.elapsed() <= window);
    let (reachable, unreachable): (Vec<_>, Vec<_>) = voters.iter().partition(|(id, _)| answered(*id));
    if reachable.len() > voters.len() / 2 {
        return None;
    }
    let now = SystemTime::now();
    let unreachable = unreachable
        .into_iter()
        .map(|(id, (peer, _))| UnreachableVoter {
            id: *id,
            name: attributes.get(id).map_or_else(|| peer.name.clone(), |a| a.name.clone()),
            peer_urls: peer.peer_urls.clone(),
            last_contact: node.peers().last_contact(*id).map(|t| now - t.elapsed()),
        })
        .collect();
    // This member's own URLs are known even before it has published them.
    let client_urls = |id: &NodeId| {
        let urls = if *id == node.id { Some(&node.client_urls) } else { attributes.get(id).map(|a| &a.client_urls) };
        urls.and_then(|urls| urls.first().cloned())
    };
    let reachable_endpoints = reachable.iter().filter_map(|(id, _)| client_urls(id)).collect();
    Some(QuorumLoss { voters: voters.len(), unreachable, reachable_endpoints })
}

impl QuorumLoss {
    /// One line: that quorum is lost, and who is missing since when.
    pub fn describe(&self) -> String {
        let missing: Vec<String> = self
            .unreachable
            .iter()
            .map(|voter| {
                let since = match voter.last_contact {
                    Some(t) => format!("unreachable since {}", utc(t)),
                    None => "not reached since this member started".to_string(),
                };
                format!("{} ({:x}, {}) {since}", display_name(&voter.name), voter.id, voter.peer_urls.join(","))
            })
            .collect();
        format!(
            "quorum lost: {} of {} voters unreachable: {}; writes and linearizable reads are refused",
            self.unreachable.len(),
            self.voters,
            missing.join(", ")
        )
    }

    /// The commands that recover the cluster if the missing voters cannot come back. A data dir
    /// reset before ignores --force-new-cluster, and `disaster` asks for --force.
    pub fn recovery_commands(&self, data_dir: &Path) -> String {
        let reset_before = super::recorded_reset(data_dir).ok().flatten().is_some();
        let (force, or_restart) = if reset_before {
            ("--force ", ", as it was reset before")
        } else {
            ("", ", or restart it with --force-new-cluster")
        };
        format!(
            "if they cannot come back, choose the survivor with `phoenixctl disaster plan --endpoints={}`, \
             then stop it and run `phoenixctl disaster --data-dir <its data dir>` (for this member: \
             `phoenixctl disaster {force}--data-dir {}`{or_restart})",
            self.reachable_endpoints.join(","),
            data_dir.display()
        )
    }

    /// The whole story, for Status and `/health`.
    pub fn explain(&self, data_dir: &Path) -> String {
        format!("{}; {}", self.describe(), self.recovery_commands(data_dir))
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "(unnamed)"
    } else {
        name
    }
}

/// `2026-11-21T10:04:05Z`.
fn utc(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Watches the quorum: logs when it is lost (and again every [`REMINDER_INTERVAL`] while it
/// stays lost) and when it is back, and keeps gRPC health NOT_SERVING meanwhile.
pub async fn monitor(node: Arc<Node>, data_dir: PathBuf, health: HealthReporter, mut stop: watch::Receiver<bool>) {
    let mut last_logged: Option<tokio::time::Instant> = None;
    loop {
        match quorum_loss(&node) {
            Some(loss) if last_logged.is_none_or(|at| at.elapsed() >= REMINDER_INTERVAL) => {
                if last_logged.is_none() {
                    health.set_service_status("", ServingStatus::NotServing).await;
                }
                tracing::error!(recover = %loss.recovery_commands(&data_dir), "{}", loss.describe());
                last_logged = Some(tokio::time::Instant::now());
            }
            Some(_) => {}
            None if last_logged.is_some() => {
                health.set_service_status("", ServingStatus::Serving).await;
                tracing::info!("quorum regained");
                last_logged = None;
            }
            None => {}
        }
        if tokio::time::timeout(CHECK_INTERVAL, stop.wait_for(|stopped| *stopped)).await.is_ok() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_reset_before_is_told_to_reset_again_with_force() {
        let loss = QuorumLoss { voters: 3, unreachable: Vec::new(), reachable_endpoints: vec!["http://a:2379".into()] };
        let dir = tempfile::tempdir().unwrap();
        let first = loss.recovery_commands(dir.path());
        let shown = dir.path().display();
        assert!(first
            .contains(&format!("`phoenixctl disaster --data-dir {shown}`, or restart it with --force-new-cluster")));
        let record = r#"{"last_log_index":1,"known_commit_index":1,"kept_past_commit":0,"lost_entries":0,"new_term":2,"backup":"/b"}"#;
        std::fs::write(dir.path().join("reset.json"), record).unwrap();
        let again = loss.recovery_commands(dir.path());
        assert!(
            again.contains(&format!("`phoenixctl disaster --force --data-dir {shown}`, as it was reset before")),
            "{again}"
        );
        assert!(!again.contains("--force-new-cluster"), "{again}");
    }
}
