//! Quorum-loss recovery: turning the most advanced survivor into a one-member cluster that
//! keeps everything it holds (`phoenix --force-new-cluster`).
//!
//! The reset (see DESIGN.md, "Quorum-loss recovery"), on a stopped member's data dir:
//! 1. copy the data dir aside (abort if that fails);
//! 2. keep the whole log, including entries past the survivor's commit index: the old leader
//!    may have acknowledged them (etcd's --force-new-cluster drops them and can lose
//!    acknowledged writes);
//! 3. append, in one flushed batch, a membership entry in a new term T naming this member the
//!    only voter, and the vote (T, self). On start openraft elects the sole voter, whose first
//!    entry commits everything before it; applying the new membership tombstones every other
//!    old member, so their peers refuse them if they come back with their old data;
//! 4. record the reset and its loss report in the data dir, once: a later start with the flag
//!    still set is reported and ignored, so members added since are never removed.
//!
//! `quorum` tells operators when quorum is lost; `survivor` says where each survivor stands and
//! which one to reset.

pub mod quorum;
pub mod survivor;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
use serde::{Deserialize, Serialize};

use crate::cluster::DataDir;
use crate::pb;
use crate::raft::{PeerNode, Proposal, TypeConfig};
use crate::{Error, Result};

const RESET_FILE: &str = "reset.json";
/// How long a reset waits for each member of the old configuration to say where it stands.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the reset kept and what may have been lost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LossReport {
    /// The index of the survivor's last log entry before the reset (all of it is kept).
    pub last_log_index: u64,
    /// The highest commit index a leader told the survivor about (its own log may end before).
    pub known_commit_index: u64,
    /// Entries past the known commit index that were kept (and are now committed).
    pub kept_past_commit: u64,
    /// Committed entries the survivor never received: acknowledged writes that are lost.
    pub lost_entries: u64,
    /// The term of the new one-member configuration.
    pub new_term: u64,
    /// How far the revision was moved ahead, and whether it was compacted there.
    #[serde(default)]
    pub revision_bump: i64,
    #[serde(default)]
    pub mark_compacted: bool,
    /// The other members of the old configuration that nothing answered for when the reset
    /// asked: any of them may hold writes committed without the survivor.
    #[serde(default)]
    pub not_asked: Vec<String>,
    /// Where the data dir was copied before the reset.
    pub backup: PathBuf,
}

impl LossReport {
    pub fn summary(&self) -> String {
        let loss = match self.lost_entries {
            0 => "no acknowledged write known lost".to_string(),
            n => format!("up to {n} acknowledged entries lost"),
        };
        let loss = match self.not_asked.as_slice() {
            [] => loss,
            names => format!("{loss}, but {} could not be asked", names.join(", ")),
        };
        let bump = match (self.revision_bump, self.mark_compacted) {
            (0, _) => String::new(),
            (by, false) => format!("; revision moved ahead by {by}"),
            (by, true) => format!("; revision moved ahead by {by} and compacted there"),
        };
        format!(
            "kept {} log entries ({} past the last known commit index {}); {loss}{bump}; backup at {}",
            self.last_log_index,
            self.kept_past_commit,
            self.known_commit_index,
            self.backup.display()
        )
    }
}

/// The reset recorded in `data_dir`, if one was done.
pub fn recorded_reset(data_dir: &Path) -> Result<Option<LossReport>> {
    match fs::read(data_dir.join(RESET_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", data_dir.join(RESET_FILE).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Where the stopped survivor in `data_dir` stands, and why it must not be reset, if so: a
/// member of its old configuration that answers holds a more advanced log, still has a leader,
/// answers with an error instead of its report, or runs at all. A data dir whose member was
/// fenced off is refused outright, unless `fenced_too` (`disaster --force`: the wrong survivor
/// was reset, and this one, fenced off by it, holds writes it lacks).
pub async fn examine_survivor(data: &DataDir, fenced_too: bool) -> Result<Examination> {
    let data_dir = &data.path;
    // Half a store may have lost the membership, and a reset would then ask no one.
    if crate::raft::state_machine::install_interrupted(&data.snapshot_dir()) {
        return Err(Error::Config(format!(
            "{}: a snapshot install from the leader was interrupted, and the store holds part of it; \
             start the member once with its usual flags (it completes the install first), stop it, \
             and reset it then",
            data_dir.display()
        )));
    }
    // A reset would make whatever a damaged database still holds the cluster's whole history.
    crate::highwater::check(data)?;
    let report = survivor::inspect(data)?;
    if !report.fenced.is_empty() && !fenced_too {
        return Err(Error::Config(format!(
            "{}; if it holds writes the member that fenced it off lacks (the wrong survivor was reset), stop \
             that member and run `phoenixctl disaster --force --data-dir {}` to reset this one instead",
            crate::cluster::fenced_off(data_dir, &report.fenced),
            data_dir.display()
        )));
    }
    let others = survivor::ask_other_members(&report, ASK_TIMEOUT).await;
    let objection = survivor::objection(&report, &others);
    Ok(Examination { report, objection, not_asked: others.unreachable })
}

/// What [`examine_survivor`] found.
pub struct Examination {
    pub report: pb::SurvivorReport,
    /// Why the survivor must not be reset, if so.
    pub objection: Option<String>,
    /// The other members of its old configuration that nothing answered for.
    pub not_asked: Vec<String>,
}

/// What a reset starts from: the copy [`back_up`] made, and who [`examine_survivor`] could not
/// ask (for the loss report).
pub struct ResetBasis {
    pub backup: PathBuf,
    pub not_asked: Vec<String>,
}

/// Copies the survivor's data dir aside before the reset changes it; the reset is aborted if
/// this fails. Returns where the copy is. The caller holds the data dir open from its
/// examination to its reset, so that no member starts on it in between (sled locks it).
pub fn back_up(data: &DataDir) -> Result<PathBuf> {
    data.db.flush()?;
    copy_beside(&data.path)
}

/// Copies `data_dir` to `<its name>.before-reset-<unix time>` beside it.
fn copy_beside(data_dir: &Path) -> Result<PathBuf> {
    let aborted = |e: std::io::Error| Error::Config(format!("reset aborted: cannot copy {}: {e}", data_dir.display()));
    // Named by its full path, so that `.` or `dir/..` is copied beside itself, not into itself.
    let data_dir = &fs::canonicalize(data_dir).map_err(aborted)?;
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let Some(mut name) = data_dir.file_name().map(|name| name.to_os_string()) else {
        return Err(Error::Config(format!("reset aborted: {} cannot be copied beside itself", data_dir.display())));
    };
    name.push(format!(".before-reset-{seconds}"));
    let backup = data_dir.with_file_name(name);
    copy_dir(data_dir, &backup).map_err(|e| {
        Error::Config(format!("reset aborted: cannot copy {} to {}: {e}", data_dir.display(), backup.display()))
    })?;
    Ok(backup)
}

/// Resets the survivor whose data dir is `data` into a one-member cluster of itself at
/// `peer_urls`. A non-zero `bump` is written as a second entry, applied once everything before
/// it is.
pub fn reset(
    data: &DataDir,
    name: &str,
    peer_urls: Vec<String>,
    basis: ResetBasis,
    bump: pb::RevisionBump,
) -> Result<LossReport> {
    let log = data.log_store()?;
    let state = log.survivor_state().map_err(|e| Error::Storage(e.to_string()))?;
    let (vote, last) = (state.vote, state.last_log_id);
    let self_id = data.meta.member_id;
    let vote_term = vote.map_or(0, |v| v.leader_id.term);
    let last_term = last.map_or(0, |l| l.leader_id.term);
    let new_term = vote_term.max(last_term) + 1;
    let last_index = last.map_or(0, |l| l.index);
    let node = PeerNode { name: name.to_string(), peer_urls, voter: true };
    let membership = Membership::new(vec![BTreeSet::from([self_id])], BTreeMap::from([(self_id, node)]));
    let log_id = |index| LogId::new(CommittedLeaderId::new(new_term, self_id), index);
    let mut entries = vec![openraft::Entry::<TypeConfig> {
        log_id: log_id(last_index + 1),
        payload: EntryPayload::Membership(membership),
    }];
    if bump.by > 0 {
        let command = pb::Command::from(pb::command::Op::RevisionBump(bump));
        entries.push(openraft::Entry::<TypeConfig> {
            log_id: log_id(last_index + 2),
            payload: EntryPayload::Normal(Proposal(pb::CommandBatch { commands: vec![command] })),
        });
    }
    let known_commit = state.committed.map_or(0, |c| c.index).max(state.leader_commit);
    let report = LossReport {
        last_log_index: last_index,
        known_commit_index: known_commit,
        kept_past_commit: last_index.saturating_sub(known_commit),
        lost_entries: known_commit.saturating_sub(last_index),
        new_term,
        revision_bump: bump.by,
        mark_compacted: bump.mark_compacted,
        not_asked: basis.not_asked,
        backup: basis.backup,
    };
    // The record goes first: it is what stops a second reset (a --force-new-cluster left in a
    // unit file) from removing the members added since, so a reset must never land without it.
    // A crash between the two leaves a record of a reset that did not happen, which only asks
    // for --force.
    write_record(&data.path, &report)?;
    if let Err(e) = log.append_reset(&entries, &Vote::new(new_term, self_id)) {
        if let Err(cleanup) = fs::remove_file(data.path.join(RESET_FILE)) {
            tracing::warn!(error = %cleanup, "could not remove the record of a reset that failed");
        }
        return Err(Error::Storage(e.to_string()));
    }
    // A member fenced off by another reset cluster (reset with --force) is a cluster of its own now.
    data.clear_fence()?;
    Ok(report)
}

fn write_record(data_dir: &Path, report: &LossReport) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(report).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(crate::disk::replace_file(data_dir, RESET_FILE, &bytes)?)
}

/// Copies a directory tree; refuses to write into an existing destination.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    // Its user's alone, as the data dir it copies: it holds the same secrets.
    std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700).create(to)?;
    for dirent in fs::read_dir(from)? {
        let dirent = dirent?;
        let target = to.join(dirent.file_name());
        if dirent.file_type()?.is_dir() {
            copy_dir(&dirent.path(), &target)?;
        } else {
            fs::copy(dirent.path(), &target)?;
        }
    }
    fs::File::open(to)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_named_through_dot_dot_is_backed_up_beside_itself() -> std::io::Result<()> {
        let parent = tempfile::tempdir()?;
        let data = parent.path().join("data");
        fs::create_dir_all(data.join("sub"))?;
        fs::write(data.join("db"), b"records")?;
        let backup = copy_beside(&data.join("sub/..")).map_err(std::io::Error::other)?;
        assert_eq!(backup.parent(), Some(fs::canonicalize(parent.path())?.as_path()));
        assert!(backup.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("data.before-reset-")));
        assert_eq!(fs::read(backup.join("db"))?, b"records");
        assert_eq!(fs::read_dir(&data)?.count(), 2, "nothing was copied into the data dir");
        Ok(())
    }
}
