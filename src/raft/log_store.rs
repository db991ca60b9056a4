//! The Raft log and vote, in one sled tree.
//!
//! Layout: `'l' + index (big endian)` -> bincode(Entry); `'m' + name` -> bincode(meta value).
//! Purging entries and recording the last purged id happen in one batch, so a restart never
//! sees a hole. Durability: `save_vote` and a follower's `append` flush sled before reporting
//! success, which is what lets openraft count them toward a quorum; a leader's own appends after
//! its first are reported at once and flushed while they replicate (see [`super::leader_flush`]).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, Membership, RaftLogReader, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::leader_flush::LeaderFlush;
use super::{storage_error, LogId, NodeId, PeerNode, StorageError, TypeConfig};
use crate::disk::Db;

type Entry = openraft::Entry<TypeConfig>;

const ENTRY: u8 = b'l';
const META: u8 = b'm';
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const LEADER_COMMIT: &str = "leader_commit";
/// The term of the last leadership whose appends were reported before they were flushed.
const REPORTED_EARLY_IN: &str = "reported_early_in";

/// Log flushes (each an fsync) since the process started, for /metrics.
static FLUSHES: AtomicU64 = AtomicU64::new(0);

/// How many times the Raft log was flushed to disk since the process started.
pub fn flushes() -> u64 {
    FLUSHES.load(Ordering::Relaxed)
}

/// Counts one flush of the Raft log for [`flushes`].
pub(super) fn count_flush() {
    FLUSHES.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    tree: sled::Tree,
    /// Set on the log store Raft runs with: see [`LogStore::purge`].
    applied: Option<AppliedIndex>,
    /// Held by a purge from reading the last purged id to writing the next.
    purges: Arc<tokio::sync::Mutex<()>>,
    /// Set on the log store Raft runs with: see [`CommitNote`].
    commit_note: Option<Arc<CommitNote>>,
    /// Set on the log store Raft runs with: this member's id, and the flusher of the appends it
    /// makes as leader (see [`super::leader_flush`]).
    leader_flush: Option<(NodeId, LeaderFlush)>,
}

/// The commit index, written to a file of its own at every change as well as to sled. sled
/// keeps its copy in its buffer until its next flush, and so do the state machine's writes: a
/// member killed meanwhile would restart with both older than what it had answered from, and
/// serve that older state until its leader told it the commit index again. A plain write
/// reaches the kernel, which a killed process cannot take back (etcd writes its HardState to its
/// WAL without a sync in the same way), so a restart re-applies from its own log as far as it
/// had. Not synced: after a power cut the member re-applies as far as sled's copy says.
struct CommitNote {
    file: std::fs::File,
}

impl CommitNote {
    const FILE: &'static str = "committed";

    fn open(dir: &std::path::Path) -> std::io::Result<CommitNote> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(Self::FILE))?;
        Ok(CommitNote { file })
    }

    /// Every value has the same length, so each write replaces the last whole.
    fn write(&self, committed: &LogId) -> Result<(), StorageError> {
        use std::os::unix::fs::FileExt;
        let bytes = LogStore::encode(committed)?;
        self.file.write_all_at(&bytes, 0).map_err(|e| write_err(ErrorSubject::Store, e))
    }

    /// The commit index last written, if the file holds one.
    fn read(&self) -> Option<LogId> {
        use std::os::unix::fs::FileExt;
        let mut bytes = [0u8; 64];
        let read = self.file.read_at(&mut bytes, 0).ok()?;
        bincode::deserialize(&bytes[..read]).ok()
    }
}

/// How far the state machine has applied (or installed), shared with the log store that Raft
/// purges, and whether a snapshot install failed.
#[derive(Clone, Default)]
pub struct AppliedIndex(Arc<tokio::sync::watch::Sender<Applied>>);

#[derive(Clone, Copy, Default)]
struct Applied {
    index: u64,
    install_failed: bool,
}

impl AppliedIndex {
    /// Called by the state machine once entries up to `index`, or a snapshot of them, are in it.
    pub fn advance(&self, index: u64) {
        self.0.send_if_modified(|applied| {
            let raised = index > applied.index;
            applied.index = applied.index.max(index);
            raised
        });
    }

    /// Called by the state machine when a snapshot install failed: a purge waiting for it gives up.
    pub fn install_failed(&self) {
        self.0.send_modify(|applied| applied.install_failed = true);
    }

    /// Whether the state machine holds the entries up to `index` now.
    fn holds(&self, index: u64) -> bool {
        self.0.borrow().index >= index
    }

    /// Whether the state machine reaches `index`; false if an install fails first.
    async fn reached(&self, index: u64) -> bool {
        let mut applied = self.0.subscribe();
        let reached = applied.wait_for(|applied| applied.index >= index || applied.install_failed).await;
        reached.is_ok_and(|applied| applied.index >= index)
    }
}

const fn entry_key(index: u64) -> [u8; 9] {
    let i = index.to_be_bytes();
    [ENTRY, i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7]]
}

/// The key of the highest possible index: the end of the entries, before any meta key. (An end
/// of `[ENTRY + 1; 9]` would take in meta keys such as `"mcommitted"` and `"mlast_purged"`.)
const LAST_ENTRY: [u8; 9] = entry_key(u64::MAX);

fn meta_key(name: &str) -> Vec<u8> {
    let mut key = vec![META];
    key.extend_from_slice(name.as_bytes());
    key
}

fn read_err(subject: ErrorSubject<NodeId>, err: impl std::fmt::Display) -> StorageError {
    storage_error(subject, ErrorVerb::Read, err)
}

fn write_err(subject: ErrorSubject<NodeId>, err: impl std::fmt::Display) -> StorageError {
    storage_error(subject, ErrorVerb::Write, err)
}

/// A member's Raft position: its vote, its last log id, what it knows to be committed, and the
/// highest commit index a leader announced to it (which may be past its own log).
pub struct SurvivorState {
    pub vote: Option<Vote<NodeId>>,
    pub last_log_id: Option<LogId>,
    pub committed: Option<LogId>,
    pub leader_commit: u64,
}

/// The highest commit index any leader announced to this member, for the quorum-loss reset's
/// loss report: a leader's commit index past this member's last entry means entries a client
/// may have been told are written, and which this member never received.
#[derive(Clone)]
pub struct CommitWatermark {
    tree: sled::Tree,
    highest: Arc<AtomicU64>,
}

impl CommitWatermark {
    /// Records that a leader announced `index` as committed.
    pub fn note(&self, index: u64) -> Result<(), StorageError> {
        if self.highest.fetch_max(index, Ordering::Relaxed) >= index {
            return Ok(());
        }
        // Not flushed: it rides along with the log's next flush; the report is a best estimate.
        self.tree
            .fetch_and_update(meta_key(LEADER_COMMIT), |old| {
                let old = old.and_then(|bytes| bincode::deserialize::<u64>(bytes).ok()).unwrap_or(0);
                bincode::serialize(&old.max(index)).ok()
            })
            .map_err(|e| write_err(ErrorSubject::Store, e))?;
        Ok(())
    }
}

impl LogStore {
    pub fn new(db: Db, tree: sled::Tree) -> LogStore {
        LogStore { db, tree, applied: None, purges: Arc::default(), commit_note: None, leader_flush: None }
    }

    /// The log store Raft runs with, on member `id`, reports its appends as leader (after each
    /// leadership's first) at once and has `flush` flush them (see [`super::leader_flush`]).
    pub fn flushing_leader_appends_with(self, id: NodeId, flush: LeaderFlush) -> LogStore {
        LogStore { leader_flush: Some((id, flush)), ..self }
    }

    /// The flusher for an append made now, if the append may be reported before it is flushed:
    /// it is this member's own as leader (the vote openraft saved last is this member's,
    /// committed: openraft saves the vote it leads with before its first append, and the vote of
    /// any other leader before appending its entries), and not the first of its leadership. The
    /// first is flushed before it is reported, together with a mark naming the term, so a
    /// restart knows whether its leadership may have lost entries others hold (see
    /// [`LogStore::resign_leadership_reported_early`]).
    fn early_report_flush(&self) -> Result<Option<&LeaderFlush>, StorageError> {
        let Some((id, flush)) = &self.leader_flush else { return Ok(None) };
        let Some(led) = self.saved_leadership_of(*id)? else { return Ok(None) };
        let term = led.leader_id().get_term();
        if self.reported_early_in(term)? {
            return Ok(Some(flush));
        }
        let mark = Self::encode(&term)?;
        self.tree.insert(meta_key(REPORTED_EARLY_IN), mark).map_err(|e| write_err(ErrorSubject::Logs, e))?;
        Ok(None)
    }

    /// Whether the leadership of `term` may have reported appends before flushing them.
    fn reported_early_in(&self, term: u64) -> Result<bool, StorageError> {
        Ok(self.read_meta::<u64>(REPORTED_EARLY_IN)? == Some(term))
    }

    /// The vote saved last, if it is `id`'s own and committed: `id` led with it.
    fn saved_leadership_of(&self, id: NodeId) -> Result<Option<Vote<NodeId>>, StorageError> {
        let vote: Option<Vote<NodeId>> = self.read_meta(VOTE)?;
        Ok(vote.filter(|vote| vote.is_committed() && vote.leader_id().voted_for() == Some(id)))
    }

    /// Called before Raft starts. openraft 0.9 resumes a member's leadership at start, in the
    /// same term, when the vote it saved last is its own and committed. A leadership that
    /// reported appends before flushing them may have lost some that its followers hold; leading
    /// on in the same term, it would write other entries under their log ids, and the logs
    /// would diverge. Such a vote is replaced by `id`'s uncommitted vote in the same term, as if
    /// it had only campaigned: the member starts as a follower, as every etcd member does, and
    /// leads again only once elected, in a new term. A leadership that appended nothing leads on
    /// at once. True if the vote was replaced.
    pub fn resign_leadership_reported_early(&self, id: NodeId) -> Result<bool, StorageError> {
        let Some(led) = self.saved_leadership_of(id)? else { return Ok(false) };
        let term = led.leader_id().get_term();
        if !self.reported_early_in(term)? {
            return Ok(false);
        }
        let campaigned = Self::encode(&Vote::new(term, id))?;
        self.tree.insert(meta_key(VOTE), campaigned).map_err(|e| write_err(ErrorSubject::Vote, e))?;
        self.db.flush().map_err(|e| write_err(ErrorSubject::Vote, e))?;
        Ok(true)
    }

    /// The log store Raft runs with also notes each commit index in a file in `dir` (see
    /// [`CommitNote`]).
    pub fn noting_commits_in(self, dir: &std::path::Path) -> std::io::Result<LogStore> {
        Ok(LogStore { commit_note: Some(Arc::new(CommitNote::open(dir)?)), ..self })
    }

    /// The commit index the note holds, if it is ahead of sled's copy and names an entry this
    /// log holds (a note from before the log was damaged or replaced names none, or another).
    fn noted_commit_ahead_of(&self, stored: Option<LogId>) -> Result<Option<LogId>, StorageError> {
        let Some(noted) = self.commit_note.as_ref().and_then(|note| note.read()) else { return Ok(None) };
        if stored.is_some_and(|stored| stored.index >= noted.index) {
            return Ok(None);
        }
        let key = entry_key(noted.index);
        let held = self.entries(key, Bound::Included(key)).next().transpose()?;
        Ok(held.filter(|entry| entry.log_id == noted).map(|entry| entry.log_id))
    }

    /// The log store Raft runs with: its purges wait for the state machine (see [`LogStore::purge`]).
    pub fn purging_behind(self, applied: AppliedIndex) -> LogStore {
        LogStore { applied: Some(applied), ..self }
    }

    fn read_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self.tree.get(meta_key(name)).map_err(|e| read_err(ErrorSubject::Store, e))? else {
            return Ok(None);
        };
        bincode::deserialize(&bytes).map(Some).map_err(|e| read_err(ErrorSubject::Store, e))
    }

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
        bincode::serialize(value).map_err(|e| write_err(ErrorSubject::Store, e))
    }

    /// Writes `entries` (not flushed), in order, each a plain insert. A crash keeps a prefix of
    /// them, since sled recovers a prefix of its log: a log Raft accepts, as none of them was
    /// acknowledged before the flush. Not a sled batch: that also writes out sled's IO buffer
    /// before and after its manifest, each write a hand-off to sled's thread pool and a wait for
    /// the disk, which cost a single client's put a seventh of its throughput.
    fn write_entries(&self, entries: &[Entry]) -> Result<(), StorageError> {
        for entry in entries {
            self.tree
                .insert(entry_key(entry.log_id.index), Self::encode(entry)?)
                .map_err(|e| write_err(ErrorSubject::Logs, e))?;
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        count_flush();
        self.db.flush_async().await.map_err(|e| write_err(ErrorSubject::Logs, e))?;
        Ok(())
    }

    /// What a survivor holds, for the quorum-loss reset.
    pub fn survivor_state(&self) -> Result<SurvivorState, StorageError> {
        let committed = self.read_meta::<Option<LogId>>(COMMITTED)?.flatten();
        Ok(SurvivorState {
            vote: self.read_meta(VOTE)?,
            last_log_id: self.last_log_id()?,
            committed,
            leader_commit: self.read_meta(LEADER_COMMIT)?.unwrap_or(0),
        })
    }

    /// The newest configuration in the entries after `applied`, if one of them holds one: a
    /// stopped member's newest configuration, which its state machine may not have reached.
    pub fn membership_after(
        &self,
        applied: Option<LogId>,
    ) -> Result<Option<Membership<NodeId, PeerNode>>, StorageError> {
        let first = entry_key(applied.map_or(0, |id| id.index + 1));
        let mut newest = None;
        for entry in self.entries(first, Bound::Included(LAST_ENTRY)) {
            if let EntryPayload::Membership(membership) = entry?.payload {
                newest = Some(membership);
            }
        }
        Ok(newest)
    }

    /// The entries from key `first` to `end`, decoded one at a time.
    fn entries(&self, first: [u8; 9], end: Bound<[u8; 9]>) -> impl Iterator<Item = Result<Entry, StorageError>> + '_ {
        self.tree.range((Bound::Included(first), end)).map(|item| {
            let (_, bytes) = item.map_err(|e| read_err(ErrorSubject::Logs, e))?;
            bincode::deserialize(&bytes).map_err(|e| read_err(ErrorSubject::Logs, e))
        })
    }

    /// The record of the highest commit index leaders announced, to be fed by the peer service.
    pub fn commit_watermark(&self) -> Result<CommitWatermark, StorageError> {
        let highest = self.read_meta(LEADER_COMMIT)?.unwrap_or(0);
        Ok(CommitWatermark { tree: self.tree.clone(), highest: Arc::new(AtomicU64::new(highest)) })
    }

    /// The quorum-loss reset's one write: `entries` (a membership entry naming this member the
    /// only voter, perhaps a revision bump) appended after the last entry, and `vote`, in one
    /// flushed batch. The whole log before them is kept.
    pub fn append_reset(&self, entries: &[Entry], vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&entry_key(entry.log_id.index), Self::encode(entry)?);
        }
        batch.insert(meta_key(VOTE), Self::encode(vote)?);
        self.tree.apply_batch(batch).map_err(|e| write_err(ErrorSubject::Logs, e))?;
        self.db.flush().map_err(|e| write_err(ErrorSubject::Logs, e))?;
        Ok(())
    }

    /// For a member restored from a backup: its log starts after `first`, the entry its
    /// snapshot holds, as if that entry had been committed and purged.
    pub fn seed_restored(&self, first: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(meta_key(LAST_PURGED), Self::encode(&first)?);
        batch.insert(meta_key(COMMITTED), Self::encode(&Some(first))?);
        self.tree.apply_batch(batch).map_err(|e| write_err(ErrorSubject::Logs, e))?;
        self.db.flush().map_err(|e| write_err(ErrorSubject::Logs, e))?;
        Ok(())
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let last =
            self.tree.scan_prefix([ENTRY]).next_back().transpose().map_err(|e| read_err(ErrorSubject::Logs, e))?;
        match last {
            Some((_, bytes)) => {
                let entry: Entry = bincode::deserialize(&bytes).map_err(|e| read_err(ErrorSubject::Logs, e))?;
                Ok(Some(entry.log_id))
            }
            None => self.read_meta(LAST_PURGED),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => entry_key(i),
            Bound::Excluded(&i) => entry_key(i + 1),
            Bound::Unbounded => entry_key(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(entry_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(entry_key(i)),
            Bound::Unbounded => Bound::Included(LAST_ENTRY),
        };
        self.entries(start, end).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_meta(LAST_PURGED)?;
        Ok(LogState { last_purged_log_id, last_log_id: self.last_log_id()? })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.tree.insert(meta_key(VOTE), Self::encode(vote)?).map_err(|e| write_err(ErrorSubject::Vote, e))?;
        self.flush().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE)
    }

    /// openraft calls this before it applies up to `committed`: it waits for the leader's own
    /// flush of the entries (see [`super::leader_flush`]), which may still be running.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let (Some((_, flush)), Some(committed)) = (&self.leader_flush, committed) {
            flush.durable_through(committed.index).await.map_err(|e| write_err(ErrorSubject::Logs, e))?;
        }
        // Not flushed: it only saves re-applying entries after a restart.
        self.tree
            .insert(meta_key(COMMITTED), Self::encode(&committed)?)
            .map_err(|e| write_err(ErrorSubject::Store, e))?;
        if let (Some(note), Some(committed)) = (&self.commit_note, committed) {
            note.write(&committed)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let stored = self.read_meta::<Option<LogId>>(COMMITTED)?.flatten();
        Ok(self.noted_commit_ahead_of(stored)?.or(stored))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.write_entries(&entries)?;
        if let (Some(flush), Some(first)) = (self.early_report_flush()?, entries.first()) {
            flush.flush_soon(first.log_id.index).map_err(|e| write_err(ErrorSubject::Logs, e))?;
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // A follower's (or a leadership's first): flushed before the callback, as its leader
        // counts these entries toward a quorum from then on. In place rather than with
        // flush_async: openraft 0.9's core waits for this flush anyway, and a hand-off to another
        // thread and back cost a single client's put a third of its latency (benches/cluster,
        // put-1).
        count_flush();
        let flushed = self.db.flush().map_err(std::io::Error::other);
        let failed = flushed.as_ref().err().map(|e| write_err(ErrorSubject::Logs, e));
        callback.log_io_completed(flushed);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.tree.range(entry_key(log_id.index)..=LAST_ENTRY).keys() {
            batch.remove(key.map_err(|e| read_err(ErrorSubject::Logs, e))?);
        }
        self.tree.apply_batch(batch).map_err(|e| write_err(ErrorSubject::Logs, e))?;
        self.flush().await
    }

    /// Purges the entries up to `log_id` once the state machine holds them. openraft 0.9 purges
    /// the log behind a snapshot it installs as soon as it hands the install to the state
    /// machine, without waiting (`FollowingHandler::install_full_snapshot`): a member killed in
    /// between had its log purged past its newest snapshot file, which openraft refuses at every
    /// start (`purge_upto <= snapshot_last_log_id`). Such a purge is done in the background once
    /// the install is (openraft's core must not wait: the member answers clients meanwhile);
    /// other purges are of applied entries already, and done at once.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let Some(applied) = self.applied.clone().filter(|applied| !applied.holds(log_id.index)) else {
            return self.purge_now(log_id).await;
        };
        let mut later = self.clone();
        tokio::spawn(async move {
            if !applied.reached(log_id.index).await {
                tracing::warn!(upto = %log_id, "not purging the log: the snapshot it was to follow was not installed");
            } else if let Err(e) = later.purge_now(log_id).await {
                tracing::warn!(upto = %log_id, error = %e, "could not purge the log behind an installed snapshot");
            }
        });
        Ok(())
    }
}

impl LogStore {
    /// Removes the entries up to `log_id` and records it as the last purged, unless a purge
    /// further on came first (a purge put off until an install ends may).
    async fn purge_now(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let _one_at_a_time = self.purges.lock().await;
        if self.read_meta::<LogId>(LAST_PURGED)?.is_some_and(|purged| purged.index >= log_id.index) {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        batch.insert(meta_key(LAST_PURGED), Self::encode(&log_id)?);
        for key in self.tree.range(entry_key(0)..=entry_key(log_id.index)).keys() {
            batch.remove(key.map_err(|e| read_err(ErrorSubject::Logs, e))?);
        }
        self.tree.apply_batch(batch).map_err(|e| write_err(ErrorSubject::Logs, e))?;
        self.flush().await
    }
}
