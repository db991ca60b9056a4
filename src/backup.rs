//! Scheduled backups (`phoenix --backup-dir DIR --backup-interval 30m --backup-retention 24h`,
//! `--backup-from leader|all`): every interval the chosen members save a backup of the store,
//! in the format `snapshot save` writes ([`crate::snapshot`]), and prune old ones.
//!
//! Invariants:
//! - A backup appears under its final name (`phoenix-<member>-<UTC time>.db`) only once it is
//!   complete, synced and checked whole; until then it is a hidden `.part` file, removed if the
//!   save fails.
//! - Pruning removes only this member's backups older than the retention, and never its newest:
//!   when saves keep failing, the last good backup stays.
//! - The disk is never filled silently: a backup that would leave less than
//!   `--backup-min-free-bytes` free is not attempted, and every failure is logged as an error and
//!   reported in Status and `/metrics` until a save succeeds.
//! - Nothing here touches the state machine: the store is copied as for any snapshot (see
//!   [`StateMachine::export`]), and the clock only names files and schedules saves.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{BackupFrom, BackupSchedule};
use crate::raft::node::Node;
use crate::raft::state_machine::StateMachine;
use crate::{Error, Result};

/// How backup file names carry their time (UTC, to the millisecond, sortable as text).
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";

/// A backup that was saved.
#[derive(Debug, Clone)]
pub struct Saved {
    pub at: DateTime<Utc>,
    pub path: PathBuf,
    pub size: u64,
    pub revision: i64,
}

/// What the schedule has done so far.
#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    pub last_saved: Option<Saved>,
    /// The last failure, while no save has succeeded since.
    pub failing: Option<(DateTime<Utc>, String)>,
    pub failures: u64,
}

/// One member's scheduled backups: the schedule and what it has done.
pub struct Backups {
    schedule: BackupSchedule,
    member: String,
    report: Mutex<BackupReport>,
}

impl Backups {
    /// Creates the backup dir if needed (refusing one that cannot be created), and removes the
    /// `.part` file a save this member was making when it crashed may have left.
    pub fn new(schedule: BackupSchedule, member: String) -> Result<Backups> {
        let dir = &schedule.dir;
        crate::disk::create_private_dir_all(dir)
            .map_err(|e| Error::Config(format!("--backup-dir: cannot create {}: {e}", dir.display())))?;
        let backups = Backups { schedule, member, report: Mutex::new(BackupReport::default()) };
        for (_, path) in backups.files(".phoenix-", ".db.part")? {
            tracing::warn!(path = %path.display(), "removing an unfinished backup");
            fs::remove_file(&path)?;
        }
        Ok(backups)
    }

    pub fn report(&self) -> BackupReport {
        self.report.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// One line for Status: the last backup saved, or why the last one failed.
    pub fn status_line(&self) -> Option<String> {
        let report = self.report();
        let last = report.last_saved.as_ref().map(|saved| {
            format!(
                "{} at {} ({} bytes, revision {})",
                saved.at.format("%Y-%m-%dT%H:%M:%SZ"),
                saved.path.display(),
                saved.size,
                saved.revision
            )
        });
        match (report.failing, last) {
            (Some((at, why)), last) => Some(format!(
                "backup failed {}: {why}; last good backup: {}",
                at.format("%Y-%m-%dT%H:%M:%SZ"),
                last.unwrap_or_else(|| "none".into())
            )),
            (None, Some(last)) => Some(format!("backup: last saved {last}")),
            (None, None) => None,
        }
    }

    /// Saves a backup now and prunes old ones; records and logs the outcome.
    async fn save_now(&self, node: &Node, state_machine: &StateMachine) -> Result<Saved> {
        let now = Utc::now();
        let outcome = self.save(node, state_machine, now).await;
        let mut report = self.report.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &outcome {
            Ok(saved) => {
                tracing::info!(path = %saved.path.display(), size = saved.size, revision = saved.revision, "saved a scheduled backup");
                report.last_saved = Some(saved.clone());
                report.failing = None;
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.schedule.dir.display(), "scheduled backup failed");
                report.failing = Some((now, e.to_string()));
                report.failures += 1;
            }
        }
        outcome
    }

    async fn save(&self, node: &Node, state_machine: &StateMachine, now: DateTime<Utc>) -> Result<Saved> {
        self.check_space(node)?;
        let name = format!("phoenix-{}-{}.db", self.member, now.format(STAMP));
        let part = self.schedule.dir.join(format!(".{name}.part"));
        let path = self.schedule.dir.join(name);
        let saved = crate::snapshot::save_local(state_machine, &part, &path).await?;
        // A backup that could not be pruned is still saved: report the pruning, not the save.
        if let Err(e) = self.prune(now) {
            tracing::warn!(error = %e, dir = %self.schedule.dir.display(), "could not prune old backups");
        }
        Ok(Saved { at: now, path, size: saved.total_size, revision: saved.revision })
    }

    /// Refuses a backup that would leave less than the minimum free: its size is taken to be the
    /// last backup's, or the whole database's before the first.
    fn check_space(&self, node: &Node) -> Result<()> {
        let estimate = match self.report().last_saved {
            Some(saved) => saved.size,
            None => node.kv.size_on_disk(&node.db)?,
        };
        let dir = &self.schedule.dir;
        let free = fs2::available_space(dir).map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
        let needed = estimate.saturating_add(self.schedule.min_free_bytes);
        if free < needed {
            return Err(Error::Storage(format!(
                "not enough space in {}: {free} bytes free, a backup needs about {estimate} and \
                 --backup-min-free-bytes keeps {} free",
                dir.display(),
                self.schedule.min_free_bytes
            )));
        }
        Ok(())
    }

    /// Removes this member's backups older than the retention, except the newest.
    fn prune(&self, now: DateTime<Utc>) -> Result<()> {
        let mut mine = self.files("phoenix-", ".db")?;
        mine.sort();
        mine.pop(); // the newest stays, whatever its age
        let oldest_kept = now - self.schedule.retention;
        for (at, path) in mine.into_iter().filter(|(at, _)| *at < oldest_kept) {
            fs::remove_file(&path)?;
            tracing::info!(path = %path.display(), saved = %at, "pruned a backup past its retention");
        }
        Ok(())
    }

    /// This member's files `<prefix><member>-<UTC time><suffix>` in the backup dir, with the
    /// time their names carry. Only this member's: another's name may start with this one's and a
    /// dash, but then what follows is no time.
    fn files(&self, prefix: &str, suffix: &str) -> Result<Vec<(DateTime<Utc>, PathBuf)>> {
        let mine = format!("{prefix}{}-", self.member);
        let mut found = Vec::new();
        for dirent in fs::read_dir(&self.schedule.dir)? {
            let path = dirent?.path();
            let stamp = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(&mine));
            if let Some(at) = stamp.and_then(|s| s.strip_suffix(suffix)).and_then(parse_stamp) {
                found.push((at, path));
            }
        }
        Ok(found)
    }
}

fn parse_stamp(stamp: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(stamp, STAMP).ok().map(|t| t.and_utc())
}

/// Saves a backup every interval (on the leader only, unless every member is to) until `stop`.
pub async fn run(backups: Arc<Backups>, node: Arc<Node>, state_machine: StateMachine, stop: watch::Receiver<bool>) {
    let interval = backups.schedule.interval;
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let mut stop = stop.clone();
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = ticks.tick() => {}
        }
        if backups.schedule.from == BackupFrom::Leader && node.usable_leader() != Some(node.id) {
            continue;
        }
        // The outcome is recorded and logged by save_now.
        let _ = backups.save_now(&node, &state_machine).await;
    }
}
