//! The data dir's high-water mark: the term, commit index and applied index its database is
//! known to have held on disk, recorded in a small file beside sled, so that a database that
//! went back is refused instead of served.
//!
//! sled treats a segment it cannot read as the end of its log, so a file damaged part way (a bad
//! sector, a stray write, a careless copy) opens as a shorter log and an older store: the member
//! would serve old data, and could vote again in a term it voted in, or deny entries its leader
//! counted as replicated. etcd's WAL catches this with its records' checksums; here the mark does.
//!
//! Invariants:
//! - A mark is written only after a durable flush of everything it records ([`Recorder::record`]),
//!   so a database that lost nothing always holds at least its mark.
//! - The three values only ever grow in a working data dir: the vote's term is never lowered,
//!   committed entries are never truncated (a purged prefix is still counted as the log's end),
//!   and the applied index moves forward only, also by a snapshot install (one interrupted by a
//!   crash is finished from the snapshot file before the store is used; while one is pending,
//!   only the term is compared, and no mark is recorded). The mark is raised, never lowered.
//! - Losses newer than the last mark (about a second) cannot be told from a crash's torn write,
//!   which sled also drops: those go unnoticed, as before.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cluster::DataDir;
use crate::disk::Db;
use crate::kv::KvStore;
use crate::raft::log_store::LogStore;
use crate::{Error, Result};

/// Where the mark is kept, in the data dir.
pub const FILE: &str = "highwater.json";
/// Held while the mark's file is written: writers share its temporary file.
static WRITING: Mutex<()> = Mutex::new(());
/// How often a running member raises its mark: each time costs one flush of sled and one small
/// file written and synced.
const RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// What a database holds, as far as the mark compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighWater {
    /// The term of the stored vote.
    pub term: u64,
    /// The highest index known committed: the log (with its purged prefix) reaches at least this.
    pub committed: u64,
    /// The state machine's last applied index.
    pub applied: u64,
}

impl HighWater {
    /// What the database holds now. Applied entries count as committed: the stored commit
    /// index is written lazily and may lag the state machine.
    fn held(log: &LogStore, kv: &KvStore) -> Result<HighWater> {
        let state = log.survivor_state().map_err(|e| Error::Storage(e.to_string()))?;
        let (applied, _) = crate::raft::state_machine::applied_state(kv)?;
        let applied = applied.map_or(0, |id| id.index);
        Ok(HighWater {
            term: state.vote.map_or(0, |vote| vote.leader_id.term),
            committed: state.committed.map_or(0, |id| id.index).max(applied),
            applied,
        })
    }

    /// The log's end, which committed entries never exceed.
    fn log_end(log: &LogStore) -> Result<u64> {
        let state = log.survivor_state().map_err(|e| Error::Storage(e.to_string()))?;
        Ok(state.last_log_id.map_or(0, |id| id.index))
    }

    fn raised_to(self, other: HighWater) -> HighWater {
        HighWater {
            term: self.term.max(other.term),
            committed: self.committed.max(other.committed),
            applied: self.applied.max(other.applied),
        }
    }

    /// What `held` falls short of, in words, or None when it holds everything the mark records.
    /// While a snapshot install is pending (`install_pending`), only the term is compared: the
    /// store holds part of the snapshot, and the log may end before the snapshot does.
    fn shortfall(&self, held: &HighWater, log_end: u64, install_pending: bool) -> Option<String> {
        let mut short = Vec::new();
        if held.term < self.term {
            short.push(format!("its vote is for term {}, having been for term {}", held.term, self.term));
        }
        if install_pending {
            return (!short.is_empty()).then(|| short.join("; "));
        }
        // A committed entry is in the log or applied: the log behind an installed snapshot is
        // purged after the store holds it, and a crash between the two leaves the log short.
        if log_end.max(held.applied) < self.committed {
            short.push(format!("its log ends at index {log_end}, having reached {}", self.committed));
        }
        if held.applied < self.applied {
            short.push(format!("it has applied up to index {}, having applied {}", held.applied, self.applied));
        }
        (!short.is_empty()).then(|| short.join("; "))
    }
}

/// Refuses the data dir at `path` when its database holds less than its mark records. A data
/// dir with no mark (new, restored, or written by an earlier Phoenix) passes.
pub fn check(data: &DataDir) -> Result<()> {
    let path = &data.path;
    let Some(mark) = read(path)? else { return Ok(()) };
    let log = data.log_store()?;
    let held = HighWater::held(&log, &data.kv_store())?;
    let pending_install = crate::raft::state_machine::install_interrupted(&data.snapshot_dir());
    match mark.shortfall(&held, HighWater::log_end(&log)?, pending_install) {
        None => Ok(()),
        Some(short) => Err(Error::Config(format!(
            "data dir {} has lost part of its database (a damaged or truncated file): {short}; {}; or, to start it \
             with what it still holds, remove {}",
            path.display(),
            data.lost_data_advice(),
            path.join(FILE).display()
        ))),
    }
}

fn read(path: &Path) -> Result<Option<HighWater>> {
    let file = path.join(FILE);
    match fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Config(format!(
                "{} is unreadable ({e}): it records how far this data dir's database reached; remove it to start \
                 without that check",
                file.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Config(format!("{}: {e}", file.display()))),
    }
}

/// Raises a running member's mark.
struct Recorder {
    path: PathBuf,
    snapshot_dir: PathBuf,
    db: Db,
    log: LogStore,
    kv: KvStore,
    last: HighWater,
}

impl Recorder {
    fn new(data: &DataDir) -> Result<Recorder> {
        Ok(Recorder {
            path: data.path.clone(),
            snapshot_dir: data.snapshot_dir(),
            db: data.db.clone(),
            log: data.log_store()?,
            kv: data.kv_store(),
            last: read(&data.path)?.unwrap_or_default(),
        })
    }

    /// Reads what the database holds, makes it durable, then records it if it is higher. The
    /// read comes first: whatever it saw is on disk once the flush returns.
    async fn record(&mut self) -> Result<()> {
        // A store part way through an install is neither the old one nor the new.
        if self.kv.installing() || crate::raft::state_machine::install_interrupted(&self.snapshot_dir) {
            return Ok(());
        }
        let held = HighWater::held(&self.log, &self.kv)?.raised_to(self.last);
        if held == self.last {
            return Ok(());
        }
        let (db, path) = (self.db.clone(), self.path.clone());
        let flush_and_write = move || {
            // A recorder aborted at shutdown may still be writing when the last one starts.
            let _one_writer = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
            db.flush()?;
            write(&path, &held)
        };
        crate::disk::spawn_blocking(flush_and_write)
            .await
            .map_err(|e| Error::Internal(format!("writing {FILE}: {e}")))??;
        self.last = held;
        Ok(())
    }
}

/// Raises the mark every [`RECORD_INTERVAL`] until `stop`.
pub fn keep_recording(data: &DataDir, mut stop: watch::Receiver<bool>) -> impl Future<Output = ()> {
    let recorder = Recorder::new(data);
    async move {
        let mut recorder = match recorder {
            Ok(recorder) => recorder,
            Err(e) => return warn_unrecorded(&e),
        };
        while tokio::time::timeout(RECORD_INTERVAL, stop.wait_for(|stopped| *stopped)).await.is_err() {
            if let Err(e) = recorder.record().await {
                warn_unrecorded(&e);
            }
        }
    }
}

/// Raises the mark once: for a member that has stopped, so the mark holds all it wrote.
pub async fn record_once(data: &DataDir) {
    let recorded = match Recorder::new(data) {
        Ok(mut recorder) => recorder.record().await,
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        warn_unrecorded(&e);
    }
}

/// Failing to raise the mark loses nothing but the check's reach, so the member goes on.
fn warn_unrecorded(e: &Error) {
    tracing::warn!(error = %e, "could not record the data dir's high-water mark in {FILE}");
}

/// Writes the mark whole or not at all.
fn write(path: &Path, mark: &HighWater) -> Result<()> {
    let bytes = serde_json::to_vec(mark).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(crate::disk::replace_file(path, FILE, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: HighWater = HighWater { term: 3, committed: 120, applied: 110 };

    #[test]
    fn a_database_that_holds_its_mark_or_more_passes() {
        assert_eq!(MARK.shortfall(&MARK, 120, false), None);
        let more = HighWater { term: 4, committed: 130, applied: 125 };
        assert_eq!(MARK.shortfall(&more, 131, false), None);
    }

    #[test]
    fn each_value_that_went_back_is_named() {
        let older = HighWater { term: 2, committed: 60, applied: 50 };
        let short = MARK.shortfall(&older, 60, false).unwrap();
        assert_eq!(
            short,
            "its vote is for term 2, having been for term 3; its log ends at index 60, having reached 120; it has \
             applied up to index 50, having applied 110"
        );
    }

    #[test]
    fn a_snapshot_applied_past_the_log_covers_the_commit_index() {
        let installed = HighWater { term: 3, committed: 120, applied: 120 };
        assert_eq!(MARK.shortfall(&installed, 60, false), None);
    }

    #[test]
    fn only_the_term_is_compared_while_an_install_is_pending() {
        let half_installed = HighWater { term: 3, committed: 0, applied: 0 };
        assert_eq!(MARK.shortfall(&half_installed, 60, true), None);
        assert!(MARK.shortfall(&half_installed, 60, false).is_some());
        let older_vote = HighWater { term: 2, ..half_installed };
        assert!(MARK.shortfall(&older_vote, 60, true).is_some());
    }

    #[test]
    fn the_mark_is_only_ever_raised() {
        let lower = HighWater { term: 2, committed: 200, applied: 0 };
        assert_eq!(MARK.raised_to(lower), HighWater { term: 3, committed: 200, applied: 110 });
    }
}
