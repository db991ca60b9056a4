//! openraft's state machine: applies committed entries to the MVCC store, and builds, stores
//! and installs snapshots.
//!
//! Invariants:
//! - An applied batch, Raft's last applied log id and the last membership land together
//!   ([`crate::kv::WriteTxn`], through the apply journal: a crash part way is finished when the
//!   store opens).
//! - A command a follower forwarded is applied only in an entry of the term its origin names
//!   (see [`super::outcome`]); in any other it is refused as "not leader" and changes nothing.
//! - A failure to write while applying is fatal for this node (openraft stops it): continuing
//!   would let replicas diverge.
//! - A snapshot is a consistent copy of the store at one revision: apply pauses only while the
//!   meta and the leases are copied; the records (immutable once written) are copied after it
//!   resumes, up to that revision, and physical compaction waits for the copy ([`CopyFence`]).
//!   It is written to a temporary file, fsynced and renamed into `<data-dir>/snap/`; only the
//!   newest is kept.
//! - A received snapshot is checked (checksum, and that it is the snapshot its meta names) and
//!   loaded before it becomes the current snapshot; a damaged one changes nothing.
//!
//! Snapshot file: `MAGIC`, bincode(SnapshotMeta) with its length, then `(key, value)` entries of
//! the state machine tree with their lengths, an end marker, and a CRC32 of all that precedes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, StoredMembership};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::log_store::AppliedIndex;
use super::outcome::Outcomes;
use super::{storage_error, Applied, LogId, NodeId, PeerNode, Proposal, StorageError, TypeConfig};
use crate::disk::Db;
use crate::kv::KvStore;
use crate::lease::Lessor;
use crate::pb::{self, command, command_result};
use crate::watch::{self, WatchHub};

const META_APPLIED: &str = "raft_applied";
const META_MEMBERSHIP: &str = "raft_membership";
const MAGIC: &[u8; 8] = b"PHXSNAP1";
const END_OF_ENTRIES: u32 = u32::MAX;
/// A frame's buffer is allocated at its stated length up to this, and grows past it only as the
/// bytes arrive, so a damaged length (the CRC is checked only at the end) allocates no more than
/// this before the file runs out. A key or a value (at most 1.5 MiB with etcd's request limit)
/// is nearly always far shorter; reading each in the pieces an empty, growing buffer asks for
/// took most of a snapshot check's time.
const WHOLE_FRAME_BYTES: usize = 1024 * 1024;
/// Where a snapshot from the leader arrives, and where it is verified before it is installed.
const INCOMING: &str = "incoming.tmp";
const INSTALLING: &str = "installing.tmp";
/// Where a snapshot is built before it is renamed to `<id>.snap`.
const SNAPSHOT_TMP: &str = "building.tmp";
/// Present while a snapshot is being loaded into the store.
const LOADING: &str = "LOADING";

type Membership = StoredMembership<NodeId, PeerNode>;
type Meta = super::SnapshotMeta;

/// Whether a snapshot load into the store in the data dir with `snapshot_dir` was interrupted:
/// the store then holds part of it, which only the member's next start completes.
pub fn install_interrupted(snapshot_dir: &Path) -> bool {
    snapshot_dir.join(LOADING).exists()
}

/// The last log id and the membership the state machine in `kv` has applied.
pub fn applied_state(kv: &KvStore) -> crate::Result<(Option<LogId>, Membership)> {
    let applied = match kv.meta(META_APPLIED)? {
        Some(bytes) => bincode::deserialize(&bytes)?,
        None => None,
    };
    let membership = match kv.meta(META_MEMBERSHIP)? {
        Some(bytes) => bincode::deserialize(&bytes)?,
        None => Membership::default(),
    };
    Ok((applied, membership))
}

#[derive(Clone)]
pub struct StateMachine {
    kv: KvStore,
    db: Db,
    snapshot_dir: PathBuf,
    /// Held while applying and while copying a snapshot, so a snapshot sees whole batches only.
    /// A tokio mutex because the snapshot copy holds it across a blocking task.
    apply_lock: Arc<Mutex<()>>,
    /// Told about every applied change, once it is in the store.
    watchers: WatchHub,
    /// Told about every lease granted or revoked, once it is in the store.
    lessor: Lessor,
    /// Holds physical compaction (and snapshot installs) off while copies are being made.
    pub(super) fence: Arc<CopyFence>,
    /// Told how far the store has applied, for the log store's purges.
    applied: AppliedIndex,
    /// Told the results of the commands this member forwarded and waits to hear about.
    outcomes: Outcomes,
}

/// Whether `command` was forwarded to the leader of a term other than `term`, its entry's.
fn forwarded_for_another_term(command: &pb::Command, term: u64) -> bool {
    command.origin.is_some_and(|origin| origin.term != term)
}

fn not_leader() -> pb::CommandResult {
    pb::CommandResult { result: Some(command_result::Result::Error(crate::Error::NotLeader.to_command_error())) }
}

/// The lease a command granted or revoked, if it did.
fn granted_or_revoked((command, result): (&pb::Command, &pb::CommandResult)) -> Option<i64> {
    match (&command.op, &result.result) {
        (Some(command::Op::LeaseGrant(_)), Some(command_result::Result::LeaseGrant(granted))) => Some(granted.id),
        (Some(command::Op::LeaseRevoke(revoked)), Some(command_result::Result::LeaseRevoke(_))) => Some(revoked.id),
        _ => None,
    }
}

impl StateMachine {
    pub fn new(kv: KvStore, db: Db, snapshot_dir: PathBuf, watchers: WatchHub, lessor: Lessor) -> StateMachine {
        let fence = Arc::new(CopyFence::default());
        let applied = AppliedIndex::default();
        let apply_lock = Arc::new(Mutex::new(()));
        let outcomes = Outcomes::default();
        StateMachine { kv, db, snapshot_dir, apply_lock, watchers, lessor, fence, applied, outcomes }
    }

    /// The lease deadlines this state machine tells about grants and revokes.
    pub fn lessor(&self) -> Lessor {
        self.lessor.clone()
    }

    /// The forwards this state machine tells about their results.
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes.clone()
    }

    /// How far the store has applied, kept up to date from now on, for the log store Raft runs
    /// with (see [`crate::raft::log_store::LogStore::purge`]).
    pub fn applied_index(&self) -> crate::Result<AppliedIndex> {
        let (applied, _) = self.read_state()?;
        self.applied.advance(applied.map_or(0, |id| id.index));
        Ok(self.applied.clone())
    }

    fn read_state(&self) -> crate::Result<(Option<LogId>, Membership)> {
        applied_state(&self.kv)
    }

    fn apply_entries(&self, entries: impl Iterator<Item = openraft::Entry<TypeConfig>>) -> crate::Result<Vec<Applied>> {
        let mut txn = self.kv.write()?;
        let mut replies = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        let mut members: BTreeSet<NodeId> = self.read_state()?.1.nodes().map(|(id, _)| *id).collect();
        let mut leases_changed = Vec::new();
        let mut awaited = Vec::new();
        for entry in entries {
            last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Applied::default(),
                EntryPayload::Normal(Proposal(batch)) => {
                    let term = entry.log_id.leader_id.term;
                    let results: Vec<_> = batch
                        .commands
                        .iter()
                        .map(|c| if forwarded_for_another_term(c, term) { Ok(not_leader()) } else { txn.execute(c) })
                        .collect::<crate::Result<_>>()?;
                    leases_changed.extend(batch.commands.iter().zip(&results).filter_map(granted_or_revoked));
                    awaited.extend(batch.commands.iter().zip(&results).filter_map(|(command, result)| {
                        let origin = command.origin.filter(|origin| self.outcomes.awaits(origin))?;
                        Some((origin, result.clone()))
                    }));
                    Applied(pb::CommandResults { results })
                }
                EntryPayload::Membership(m) => {
                    let now: BTreeSet<NodeId> = m.nodes().map(|(id, _)| *id).collect();
                    txn.tombstone_members(&members.difference(&now).copied().collect::<Vec<_>>())?;
                    members = now;
                    membership = Some(Membership::new(Some(entry.log_id), m));
                    Applied::default()
                }
            };
            replies.push(reply);
        }
        if last_applied.is_none() {
            return Ok(replies);
        }
        txn.put_meta(META_APPLIED, bincode::serialize(&last_applied)?);
        let joint = membership.as_ref().is_some_and(|m| m.membership().get_joint_config().len() > 1);
        if let Some(membership) = membership {
            txn.put_meta(META_MEMBERSHIP, bincode::serialize(&membership)?);
        }
        let committed = txn.commit()?;
        self.applied.advance(last_applied.map_or(0, |id| id.index));
        if joint {
            crate::faults::joint_configuration_applied();
        }
        if committed.compacted {
            self.fence.compact(&self.kv)?;
        }
        self.watchers.publish(watch::Applied { revision: committed.revision, events: committed.events, reset: false });
        for id in leases_changed {
            self.lessor.forget(id);
        }
        self.outcomes.deliver(awaited);
        Ok(replies)
    }

    /// The newest snapshot file, opened at its start, with its meta. A build or install that
    /// publishes a newer one removes the older files, perhaps between listing and opening one:
    /// the listing is then read again. The open file stays readable once removed.
    fn newest_snapshot(&self) -> std::io::Result<Option<(Meta, File, PathBuf)>> {
        const ATTEMPTS: usize = 5;
        let mut attempt = 1;
        loop {
            match self.scan_snapshots() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < ATTEMPTS => attempt += 1,
                scanned => return scanned,
            }
        }
    }

    fn scan_snapshots(&self) -> std::io::Result<Option<(Meta, File, PathBuf)>> {
        if !self.snapshot_dir.exists() {
            return Ok(None);
        }
        let mut newest: Option<(Meta, File, PathBuf)> = None;
        for dirent in fs::read_dir(&self.snapshot_dir)? {
            let path = dirent?.path();
            if path.extension().is_some_and(|e| e == "snap") {
                let (meta, file) = open_at_start(&path)?;
                if newest.as_ref().is_none_or(|(m, _, _)| m.last_log_id < meta.last_log_id) {
                    newest = Some((meta, file, path));
                }
            }
        }
        Ok(newest)
    }

    /// Keeps `keep` as the only snapshot file. Temporary files are left alone: they belong to a
    /// build, a transfer or an install that may be in progress, and each reuses its own.
    fn remove_other_snapshots(&self, keep: &Path) -> std::io::Result<()> {
        for dirent in fs::read_dir(&self.snapshot_dir)? {
            let path = dirent?.path();
            if path != keep && path.extension().is_some_and(|e| e == "snap") {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }

    /// Copies the whole state machine into a new snapshot file and returns it, opened at its
    /// start, and its meta.
    async fn write_snapshot(&self) -> std::io::Result<(Meta, File)> {
        fs::create_dir_all(&self.snapshot_dir)?;
        let tmp = self.snapshot_dir.join(SNAPSHOT_TMP);
        // Published and opened while the copy still counts, so an install (which waits for
        // copies to end) never interleaves with the rename and the cleanup, nor removes the file
        // before it is open.
        let built = tmp.clone();
        let publish = move |this: &StateMachine, meta| {
            let (path, _) = this.publish_snapshot(&built, meta)?;
            open_at_start(&path)
        };
        self.copy_store(tmp, publish).await
    }

    /// Makes the finished copy at `tmp` the current snapshot, the only one kept.
    fn publish_snapshot(&self, tmp: &Path, meta: Meta) -> std::io::Result<(PathBuf, Meta)> {
        let path = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        fs::rename(tmp, &path)?;
        File::open(&self.snapshot_dir)?.sync_all()?;
        self.remove_other_snapshots(&path)?;
        Ok((path, meta))
    }

    /// Writes a consistent copy of the store to `path` in the snapshot format, synced, then runs
    /// `publish` with its meta before the copy ends. Apply pauses only while the meta, the
    /// leases and the revision are read; the records, the bulk of the store, are copied after it
    /// resumes, up to that revision.
    async fn copy_store<T: Send + 'static>(
        &self,
        path: PathBuf,
        publish: impl FnOnce(&StateMachine, Meta) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let applying = self.apply_lock.clone().lock_owned().await;
        let this = self.clone();
        crate::disk::spawn_blocking(move || {
            let _copying = this.fence.begin_copy(this.kv.clone());
            let meta = this.write_copy(&path, || drop(applying))?;
            publish(&this, meta)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Writes the copy of [`StateMachine::copy_store`], calling `resume` once apply may go on.
    /// The caller holds the apply lock (released by `resume`) and a [`CopyGuard`], unless
    /// nothing else uses the store (a restore, before the member first starts).
    fn write_copy(&self, path: &Path, resume: impl FnOnce()) -> std::io::Result<Meta> {
        let (meta, revision) = (self.meta_now()?, self.kv.revision().map_err(std::io::Error::other)?);
        let mut out = ChecksumWriter::new(BufWriter::new(crate::disk::create_private_file(path)?));
        out.write_all(MAGIC)?;
        write_frame(&mut out, &bincode::serialize(&meta).map_err(std::io::Error::other)?)?;
        write_entries(&mut out, self.kv.export_state())?;
        resume();
        write_entries(&mut out, self.kv.export_records(revision))?;
        out.write_all(&END_OF_ENTRIES.to_be_bytes())?;
        out.finish()?.sync_all()?;
        Ok(meta)
    }

    /// For a member restored from a backup, before it first starts: makes the store the state
    /// of a new cluster whose first log entry (the one `Raft::initialize` writes: `members` as
    /// voters, at index 0) is applied, and keeps it as the current snapshot. Members added later
    /// are sent that snapshot, since no log before it exists for them to replay. Returns the
    /// entry's log id, which the log store records as purged.
    pub fn seed_restored(&self, members: BTreeMap<NodeId, PeerNode>) -> crate::Result<LogId> {
        let first = LogId::default();
        let voters: BTreeSet<NodeId> = members.keys().copied().collect();
        let membership = Membership::new(Some(first), openraft::Membership::new(vec![voters], members));
        let mut txn = self.kv.write()?;
        txn.put_meta(META_APPLIED, bincode::serialize(&Some(first))?);
        txn.put_meta(META_MEMBERSHIP, bincode::serialize(&membership)?);
        txn.commit()?;
        fs::create_dir_all(&self.snapshot_dir)?;
        let tmp = self.snapshot_dir.join(SNAPSHOT_TMP);
        let meta = self.write_copy(&tmp, || {})?;
        self.publish_snapshot(&tmp, meta)?;
        Ok(first)
    }

    /// The meta of a snapshot of the store as it is; the caller holds the apply lock.
    fn meta_now(&self) -> std::io::Result<Meta> {
        let (last_log_id, last_membership) = self.read_state().map_err(std::io::Error::other)?;
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.leader_id.node_id, id.index),
            None => "0-0-0".to_string(),
        };
        Ok(Meta { last_log_id, last_membership, snapshot_id })
    }

    /// Writes a consistent copy of the whole store to `path` (the snapshot file format), for
    /// Maintenance.Snapshot and scheduled backups; writes wait only while the meta and leases
    /// are read (see `copy_store`).
    pub async fn export(&self, path: PathBuf) -> crate::Result<()> {
        Ok(self.copy_store(path, |_, _| Ok(())).await?)
    }

    /// Installs a received snapshot: takes it into the snapshot dir, verifies and loads it, and
    /// only then makes it the current snapshot. A damaged snapshot is refused before anything is
    /// loaded, and a crash part way leaves either the old state or the new state with its file.
    fn install_file(&self, meta: &Meta, received: File) -> crate::Result<()> {
        // A copy still reading records would see the store replaced under it.
        self.fence.wait_idle();
        fs::create_dir_all(&self.snapshot_dir)?;
        let tmp = self.snapshot_dir.join(INSTALLING);
        self.take_received(received, &tmp)?;
        if let Err(err) = verify(meta, &tmp) {
            if let Err(cleanup) = fs::remove_file(&tmp) {
                tracing::warn!(error = %cleanup, path = %tmp.display(), "could not remove a refused snapshot");
            }
            return Err(err);
        }
        let path = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        // Marked before the new file is in place: a crash after the rename must not leave the
        // newest snapshot ahead of a store that nothing says to load it into.
        self.mark_loading(&path)?;
        fs::rename(&tmp, &path)?;
        File::open(&self.snapshot_dir)?.sync_all()?;
        self.remove_other_snapshots(&path)?;
        self.load(&path)
    }

    /// Puts the received snapshot at `tmp`, synced. openraft hands over whatever file holds it,
    /// at any position: the one begin_receiving_snapshot made is moved (a large snapshot is not
    /// written to the disk twice, nor held there twice), any other is copied whole and left as
    /// it was.
    fn take_received(&self, mut received: File, tmp: &Path) -> std::io::Result<()> {
        let incoming = self.snapshot_dir.join(INCOMING);
        if is_same_file(&received, &incoming)? {
            received.sync_all()?;
            return fs::rename(&incoming, tmp);
        }
        received.seek(SeekFrom::Start(0))?;
        let mut copy = File::create(tmp)?;
        std::io::copy(&mut received, &mut copy)?;
        copy.sync_all()
    }

    /// Writes the marker naming the snapshot file being loaded (see [`StateMachine::load`]).
    fn mark_loading(&self, path: &Path) -> crate::Result<()> {
        let marker = self.snapshot_dir.join(LOADING);
        fs::write(&marker, path.file_name().unwrap_or_default().as_encoded_bytes())?;
        File::open(&marker)?.sync_all()?;
        File::open(&self.snapshot_dir)?.sync_all()?;
        Ok(())
    }

    /// Replaces the store with the verified snapshot file `path`, in bounded batches so that a
    /// large snapshot never has to fit in memory. The marker written before covers the load: a
    /// crash part way leaves it behind, and [`StateMachine::finish_interrupted_install`] loads
    /// again.
    fn load(&self, path: &Path) -> crate::Result<()> {
        let mut reader = BufReader::new(File::open(path)?);
        read_meta(&mut reader)?;
        self.kv.replace_all(SnapshotEntries { reader })?;
        self.db.flush()?;
        fs::remove_file(self.snapshot_dir.join(LOADING))?;
        File::open(&self.snapshot_dir)?.sync_all()?;
        Ok(())
    }

    /// Completes a snapshot install that a crash interrupted; called before Raft starts. The
    /// marker names the snapshot file; if that is not in place, the crash came before the
    /// store was touched, and the install is simply forgotten (the leader sends it again).
    pub fn finish_interrupted_install(&self) -> crate::Result<()> {
        let marker = self.snapshot_dir.join(LOADING);
        let name = match fs::read(&marker) {
            Ok(name) => name,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let path = self.snapshot_dir.join(String::from_utf8_lossy(&name).as_ref());
        if name.is_empty() || !path.exists() {
            tracing::warn!("forgetting a snapshot install a crash interrupted before it began");
            fs::remove_file(&marker)?;
            File::open(&self.snapshot_dir)?.sync_all()?;
            return Ok(());
        }
        tracing::warn!(snapshot = %path.display(), "finishing a snapshot install a crash interrupted");
        self.load(&path)
    }
}

/// Whether the open `file` is the one at `path` (false when nothing is there).
fn is_same_file(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let opened = file.metadata()?;
    match fs::metadata(path) {
        Ok(named) => Ok(opened.dev() == named.dev() && opened.ino() == named.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks that a snapshot file is intact and is the snapshot `meta` names.
fn verify(meta: &Meta, path: &Path) -> crate::Result<()> {
    let mut input = BufReader::new(File::open(path)?);
    scan_snapshot(&mut input, |_, _| {})?;
    if input.read(&mut [0u8])? != 0 {
        return Err(crate::Error::Corrupt(format!("snapshot {} has bytes after its checksum", path.display())));
    }
    let stored = read_meta(&mut BufReader::new(File::open(path)?))?;
    if &stored != meta {
        return Err(crate::Error::Corrupt(format!(
            "snapshot file holds {}, but {} was to be installed",
            stored.snapshot_id, meta.snapshot_id
        )));
    }
    Ok(())
}

fn sm_error(verb: ErrorVerb, err: impl std::fmt::Display) -> StorageError {
    storage_error(ErrorSubject::StateMachine, verb, err)
}

fn snapshot_error(verb: ErrorVerb, err: impl std::fmt::Display) -> StorageError {
    storage_error(ErrorSubject::Snapshot(None), verb, err)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        self.read_state().map_err(|e| sm_error(ErrorVerb::Read, e))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let _applying = self.apply_lock.lock().await;
        if crate::faults::enabled("failing-storage") {
            return Err(sm_error(ErrorVerb::Write, "injected failure (PHOENIX_TEST_FAULTS=failing-storage)"));
        }
        self.apply_entries(entries.into_iter()).map_err(|e| sm_error(ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        fs::create_dir_all(&self.snapshot_dir).map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        let path = self.snapshot_dir.join(INCOMING);
        // A new file each time, not the last one truncated: a receipt given up (a stream a newer
        // one took over, chunks a stream overtook) may still write through its handle, and that
        // must land neither in this snapshot nor in the one it becomes once installed.
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(snapshot_error(ErrorVerb::Write, e)),
            _ => {}
        }
        // Readable too: install_snapshot reads the snapshot back from this handle.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<tokio::fs::File>) -> Result<(), StorageError> {
        let mut received = *snapshot;
        // A tokio file may still have writes in flight; flushing completes them.
        received.flush().await.map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        let received = received.into_std().await;
        let applying = self.apply_lock.clone().lock_owned().await;
        let (this, install_meta) = (self.clone(), meta.clone());
        let installed = crate::disk::spawn_blocking(move || {
            let _applying = applying;
            this.install_file(&install_meta, received)
        })
        .await
        .map_err(|e| snapshot_error(ErrorVerb::Write, e))
        .and_then(|installed| installed.map_err(|e| snapshot_error(ErrorVerb::Write, e)));
        match &installed {
            Ok(()) => self.applied.advance(meta.last_log_id.map_or(0, |id| id.index)),
            Err(_) => self.applied.install_failed(),
        }
        // Failed or not, part of the store may have changed under the snapshot's entries.
        self.outcomes.forget_all();
        installed?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot from leader");
        let revision = self.kv.revision().map_err(|e| sm_error(ErrorVerb::Read, e))?;
        // The store was replaced wholesale: watchers re-read what they need from it.
        self.watchers.publish(watch::Applied { revision, events: Vec::new(), reset: true });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let newest = self.newest_snapshot().map_err(|e| snapshot_error(ErrorVerb::Read, e))?;
        Ok(newest.map(|(meta, file, _)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, file) = self.write_snapshot().await.map_err(|e| snapshot_error(ErrorVerb::Write, e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

/// Opens the snapshot file at `path`, reads its meta and returns both, the file at its start.
fn open_at_start(path: &Path) -> std::io::Result<(Meta, File)> {
    let mut file = File::open(path)?;
    let meta = read_meta(&mut BufReader::new(&file))?;
    file.seek(SeekFrom::Start(0))?;
    Ok((meta, file))
}

fn write_entries(
    out: &mut impl Write,
    entries: impl Iterator<Item = crate::Result<(sled::IVec, sled::IVec)>>,
) -> std::io::Result<()> {
    for entry in entries {
        let (key, value) = entry.map_err(std::io::Error::other)?;
        write_frame(out, &key)?;
        write_frame(out, &value)?;
    }
    Ok(())
}

/// Holds physical compaction off while copies of the store are being made. A copy reads the
/// records after apply resumes and must find every record up to its revision, so a compaction
/// applied meanwhile removes nothing until the last copy ends (compaction is done logically when
/// it is applied: readers below it are refused; the physical removal only reclaims space). A
/// snapshot install, which replaces the store, waits until no copy runs.
#[derive(Default)]
pub(super) struct CopyFence {
    state: std::sync::Mutex<FenceState>,
    idle: std::sync::Condvar,
}

#[derive(Default)]
struct FenceState {
    copies: usize,
    compaction_deferred: bool,
}

impl CopyFence {
    fn state(&self) -> std::sync::MutexGuard<'_, FenceState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a copy. Called with the apply lock held, so that no compaction is applied
    /// between this and the copy's reading the revision.
    pub(super) fn begin_copy(self: &Arc<Self>, kv: KvStore) -> CopyGuard {
        self.state().copies += 1;
        CopyGuard { fence: self.clone(), kv }
    }

    /// Removes compacted history now, or when the running copies end. Called with the apply
    /// lock held.
    fn compact(&self, kv: &KvStore) -> crate::Result<()> {
        let mut state = self.state();
        if state.copies > 0 {
            state.compaction_deferred = true;
            return Ok(());
        }
        drop(state);
        let removed = kv.compact_physically()?;
        tracing::debug!(removed, "compacted history");
        Ok(())
    }

    /// Blocks until no copy runs. Called with the apply lock held, so that none starts.
    fn wait_idle(&self) {
        let mut state = self.state();
        while state.copies > 0 {
            state = self.idle.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// A running copy; the last one to end does the compaction deferred meanwhile.
pub(super) struct CopyGuard {
    fence: Arc<CopyFence>,
    kv: KvStore,
}

impl Drop for CopyGuard {
    fn drop(&mut self) {
        let mut state = self.fence.state();
        // The last copy compacts while still counted, so no install starts meanwhile.
        while state.copies == 1 && std::mem::take(&mut state.compaction_deferred) {
            drop(state);
            // Safe outside the apply lock: it removes only records below the compacted
            // revision, which every reader (and every copy started meanwhile) treats as gone.
            match self.kv.compact_physically() {
                Ok(removed) => tracing::debug!(removed, "compacted history after a snapshot copy"),
                Err(e) => tracing::warn!(error = %e, "compacting history after a snapshot copy failed"),
            }
            state = self.fence.state();
        }
        state.copies -= 1;
        if state.copies == 0 {
            self.fence.idle.notify_all();
        }
    }
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("snapshot entry over 4 GiB"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

/// Reads one length-prefixed frame; None at the end marker.
fn read_frame(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len == END_OF_ENTRIES {
        return Ok(None);
    }
    let len = len as usize;
    // Read through `take` into a buffer of the stated length, but never more than
    // WHOLE_FRAME_BYTES at first: a damaged length (the CRC is checked only at the end) must not
    // allocate gigabytes before the file runs out.
    let mut bytes = Vec::with_capacity(len.min(WHOLE_FRAME_BYTES));
    input.take(len as u64).read_to_end(&mut bytes)?;
    if bytes.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(bytes))
}

fn read_meta(input: &mut impl Read) -> std::io::Result<Meta> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(std::io::Error::other("not a Phoenix snapshot file (an etcd backup cannot be read by Phoenix)"));
    }
    let bytes = read_frame(input)?.ok_or_else(|| std::io::Error::other("snapshot has no meta"))?;
    bincode::deserialize(&bytes).map_err(std::io::Error::other)
}

/// Reads a snapshot file from `input` up to and including its CRC32, checking it: hands every
/// entry to `visit` and returns the CRC. Reads nothing past the CRC.
pub fn scan_snapshot(input: impl Read, mut visit: impl FnMut(&[u8], &[u8])) -> crate::Result<u32> {
    let mut reader = SnapshotReader::open(input)?;
    for entry in reader.entries() {
        let (key, value) = entry?;
        visit(&key, &value);
    }
    reader.finish()
}

/// Fills the empty store of a new cluster's member from the snapshot in `input`: every key with
/// its history, revisions and leases, without the Raft state and the membership of the cluster
/// it came from; then moves the revision on as `bump` says. Returns the snapshot's CRC32; a
/// damaged snapshot is an error (the caller discards the store).
pub fn restore(kv: &KvStore, input: impl Read, bump: &pb::RevisionBump) -> crate::Result<u32> {
    let mut reader = SnapshotReader::open(input)?;
    kv.load(reader.entries())?;
    let crc = reader.finish()?;
    kv.forget_cluster(&[META_APPLIED, META_MEMBERSHIP])?;
    if bump.by > 0 {
        let mut txn = kv.write()?;
        txn.execute(&pb::Command::from(pb::command::Op::RevisionBump(*bump)))?;
        if txn.commit()?.compacted {
            kv.compact_physically()?;
        }
    }
    Ok(crc)
}

/// The entries of a snapshot file in order, with a CRC32 of everything read, which
/// [`SnapshotReader::finish`] checks against the one stored after them.
struct SnapshotReader<R: Read> {
    entries: SnapshotEntries<CrcReader<R>>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the magic and the meta.
    fn open(input: R) -> crate::Result<Self> {
        let mut input = CrcReader { inner: input, hasher: crc32fast::Hasher::new() };
        read_meta(&mut input).map_err(corrupt)?;
        Ok(SnapshotReader { entries: SnapshotEntries { reader: input } })
    }

    fn entries(&mut self) -> &mut SnapshotEntries<CrcReader<R>> {
        &mut self.entries
    }

    /// Reads the stored CRC32 (nothing past it) and checks it; returns it.
    fn finish(self) -> crate::Result<u32> {
        let CrcReader { mut inner, hasher } = self.entries.reader;
        let mut stored = [0u8; 4];
        inner.read_exact(&mut stored).map_err(corrupt)?;
        let crc = hasher.finalize();
        if u32::from_be_bytes(stored) != crc {
            return Err(crate::Error::Corrupt("snapshot fails its checksum".into()));
        }
        Ok(crc)
    }
}

/// A snapshot file that cannot be read as one.
fn corrupt(error: std::io::Error) -> crate::Error {
    crate::Error::Corrupt(format!("snapshot: {error}"))
}

/// A reader that keeps a CRC32 of what it read.
struct CrcReader<R: Read> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The `(key, value)` entries of a snapshot file whose meta has been read.
struct SnapshotEntries<R: Read> {
    reader: R,
}

impl<R: Read> Iterator for SnapshotEntries<R> {
    type Item = crate::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = (|| {
            let Some(key) = read_frame(&mut self.reader)? else { return Ok(None) };
            let value = read_frame(&mut self.reader)?.ok_or_else(|| std::io::Error::other("entry without value"))?;
            Ok::<_, std::io::Error>(Some((key, value)))
        })();
        entry.map_err(corrupt).transpose()
    }
}

/// A writer that appends a CRC32 of everything written when finished.
struct ChecksumWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> ChecksumWriter<W> {
    fn new(inner: W) -> Self {
        ChecksumWriter { inner, hasher: crc32fast::Hasher::new() }
    }
}

impl ChecksumWriter<BufWriter<File>> {
    fn finish(mut self) -> std::io::Result<File> {
        let crc = self.hasher.clone().finalize();
        self.inner.write_all(&crc.to_be_bytes())?;
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        write_frame(&mut frame, bytes).expect("writing to memory");
        frame
    }

    #[test]
    fn a_frame_the_file_ends_inside_is_an_error() {
        let mut damaged = (END_OF_ENTRIES - 1).to_be_bytes().to_vec();
        damaged.extend_from_slice(b"short");
        let err = read_frame(&mut damaged.as_slice()).expect_err("the file ends inside the frame");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(read_frame(&mut frame(b"abc").as_slice()).ok().flatten(), Some(b"abc".to_vec()));
        let cut = frame(b"abc");
        let err = read_frame(&mut &cut[..cut.len() - 1]).expect_err("a short frame cut off");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_frame_longer_than_its_first_buffer_is_read_whole() {
        let long: Vec<u8> = (0..WHOLE_FRAME_BYTES + 10).map(|i| i as u8).collect();
        let whole = frame(&long);
        assert_eq!(read_frame(&mut whole.as_slice()).ok().flatten(), Some(long));
        let err = read_frame(&mut &whole[..whole.len() - 1]).expect_err("a long frame cut off");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
