//! The leader's own log appends, flushed while they are being replicated instead of before.
//!
//! openraft 0.9's core waits for an append's flush before it sends the entries to the followers,
//! so a write waited for the leader's flush and then for a follower's, one after the other.
//! etcd's leader sends first and persists meanwhile. Phoenix's log store does the same: it tells
//! openraft that a leader's append is flushed as soon as the entries are in sled's buffer, and
//! hands the flush to [`LeaderFlush`], which runs it in the background.
//!
//! Invariant: nothing acts on a commit before the leader's copy of the committed entries is
//! durable. openraft counts the leader's copy toward the quorum at once, so the commit index it
//! computes may name entries that only the followers hold durably; both ways that index leaves
//! the leader wait in [`LeaderFlush::durable_through`] first: `save_committed`, which openraft
//! calls before it applies (so before any client is answered or any read sees the write), and
//! every AppendEntries that carries the commit index to a follower (which would apply it; one
//! whose wait would be long carries the last commit index sent instead). openraft's core waits
//! in `save_committed`, so nothing else it answers (a Status, a membership change) sees the new
//! commit index before the flush either. By then a majority holds the entries durably, as Raft
//! requires. A leader killed before its flush loses only entries nobody was told are committed.
//!
//! Only a leader's appends go this way: a follower's append is counted by its leader the moment
//! it is acknowledged, so the log store flushes it before it reports it.
//!
//! A leader killed before its flush may restart without entries its followers hold, and
//! openraft 0.9 would let it lead on in the same term, writing other entries under their log
//! ids. So the first append of each leadership is flushed before it is reported, with a mark of
//! its term, and a member whose saved vote is a marked leadership starts as a follower
//! (`LogStore::resign_leadership_reported_early`).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use crate::disk::Db;

/// Flushes the leader's appends in the background and lets commits wait for them. Cheap to clone.
#[derive(Clone)]
pub struct LeaderFlush {
    db: Db,
    pending: Arc<watch::Sender<Pending>>,
}

#[derive(Default)]
struct Pending {
    /// The appends no completed flush covers yet, oldest first: (number, index of first entry).
    /// A flush covers every append numbered up to the newest when it started.
    appends: VecDeque<(u64, u64)>,
    /// The number the last append was given.
    last_number: u64,
    /// Whether a task is flushing; at most one does, and it flushes until none is pending.
    flushing: bool,
    /// Why a flush failed. The kernel reports a lost write once (see [`crate::disk`]), so no
    /// later flush can be trusted: every wait fails from then on.
    failed: Option<String>,
}

impl LeaderFlush {
    pub fn new(db: Db) -> LeaderFlush {
        LeaderFlush { db, pending: Arc::new(watch::channel(Pending::default()).0) }
    }

    /// Called once a leader's entries from `first_index` on are written to sled (not flushed):
    /// they are flushed soon. Fails once a flush has failed.
    pub fn flush_soon(&self, first_index: u64) -> Result<(), String> {
        let mut outcome = Ok(false);
        self.pending.send_modify(|pending| {
            if let Some(failed) = &pending.failed {
                outcome = Err(failed.clone());
                return;
            }
            pending.last_number += 1;
            pending.appends.push_back((pending.last_number, first_index));
            outcome = Ok(!pending.flushing);
            pending.flushing = true;
        });
        if outcome? {
            tokio::spawn(self.clone().flush_until_none_pending());
        }
        Ok(())
    }

    /// Waits until every leader append of an entry at or below `index` is durable.
    pub async fn durable_through(&self, index: u64) -> Result<(), String> {
        let mut pending = self.pending.subscribe();
        let settled = pending
            .wait_for(|pending| pending.failed.is_some() || pending.lowest_index().is_none_or(|lowest| lowest > index))
            .await
            .map_err(|_| "the log's flusher is gone".to_string())?;
        settled.failed.clone().map_or(Ok(()), Err)
    }

    /// Each flush covers every append written before it started, so appends that arrive while
    /// one runs share the next.
    async fn flush_until_none_pending(self) {
        while let Some(newest) = self.newest_pending() {
            crate::faults::hold_leader_flush().await;
            super::log_store::count_flush();
            let flushed = self.db.flush_async().await;
            let failed = flushed.is_err();
            self.pending.send_modify(|pending| match flushed {
                Ok(()) => pending.appends.retain(|&(number, _)| number > newest),
                Err(e) => {
                    tracing::error!(error = %e, "flushing the leader's log failed");
                    pending.failed = Some(format!("flushing the Raft log failed: {e}"));
                }
            });
            if failed {
                return;
            }
        }
    }

    /// The number of the newest pending append, or None (and the task ends) if none is pending.
    fn newest_pending(&self) -> Option<u64> {
        let mut newest = None;
        self.pending.send_if_modified(|pending| {
            newest = pending.appends.back().map(|&(number, _)| number);
            if newest.is_none() {
                pending.flushing = false;
            }
            false
        });
        newest
    }
}

#[cfg(test)]
impl LeaderFlush {
    /// Registers an append from `first_index` on whose flush never ends: no flushing task
    /// starts, as one seems to run already.
    pub(super) fn stall(&self, first_index: u64) {
        self.pending.send_modify(|pending| pending.flushing = true);
        self.flush_soon(first_index).expect("no flush failed");
    }
}

impl Pending {
    /// The lowest index a pending append wrote. Not always the oldest's: a leader that lost its
    /// office and won it back may have appended again below a pending append of its last term.
    fn lowest_index(&self) -> Option<u64> {
        self.appends.iter().map(|&(_, first)| first).min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::LeaderFlush;
    use crate::disk::Db;

    const PATIENCE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_commit_waits_only_for_the_appends_at_or_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let flush = LeaderFlush::new(Db::open(&dir.path().join("db"), 1 << 20).unwrap());
        tokio::time::timeout(PATIENCE, flush.durable_through(7)).await.unwrap().unwrap();

        flush.flush_soon(5).unwrap();
        flush.flush_soon(6).unwrap();
        assert_eq!(flush.pending.borrow().lowest_index(), Some(5), "nothing flushed before a task runs");
        tokio::time::timeout(PATIENCE, flush.durable_through(4)).await.unwrap().unwrap();
        tokio::time::timeout(PATIENCE, flush.durable_through(6)).await.unwrap().unwrap();
        assert!(flush.pending.borrow().appends.is_empty());

        // The flushing task ended with nothing pending; the next append starts another.
        flush.flush_soon(7).unwrap();
        tokio::time::timeout(PATIENCE, flush.durable_through(7)).await.unwrap().unwrap();
        assert!(!flush.pending.borrow().flushing);
    }
}
