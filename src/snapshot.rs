//! Backups: the file `Maintenance.Snapshot` streams and `etcdctl snapshot save` writes.
//!
//! A backup is a state machine snapshot file (see [`crate::raft::state_machine`]: magic, meta,
//! entries, CRC32), zero-padded to a multiple of 512 bytes, followed by the SHA-256 of all that
//! precedes it. This is etcd's envelope: etcd streams its bbolt file (a multiple of the 512-byte
//! page) and then its SHA-256, and `etcdctl snapshot save` checks exactly that shape, so it saves
//! Phoenix's backups unchanged.
//!
//! Restoring writes the data dir of one member of a new cluster from a backup: the store with
//! every key, revision and lease, none of the old cluster's membership, and a Raft state as if
//! the new cluster's first entry (its members, at index 0) had been applied to that store and
//! snapshotted, as etcd's restore writes one. Every restored member starts from the same state,
//! and members added later are sent the snapshot. The cluster ID includes the backup's hash, so
//! members of the old cluster are refused by the new one.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;

use crate::cluster::{DataDir, Identity};
use crate::pb;
use crate::raft::state_machine::{scan_snapshot, StateMachine};
use crate::{Error, Result};

/// The length of a SHA-256.
const CHECKSUM_BYTES: u64 = 32;

/// What a backup holds, as `snapshot status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStatus {
    /// The CRC32 of the snapshot inside.
    pub hash: u32,
    pub revision: i64,
    /// Every key of the store: records of every revision kept, and the store's own.
    pub total_keys: u64,
    pub total_size: u64,
}

/// Checks the backup at `path` whole (its SHA-256, its snapshot's CRC, its padding) and says
/// what it holds; a truncated, corrupted or foreign file is refused.
pub fn status(path: &Path) -> Result<BackupStatus> {
    let refused = |why: &str| Error::Corrupt(format!("{}: {why}", path.display()));
    let total_size = open(path)?.metadata()?.len();
    if total_size < CHECKSUM_BYTES || !(total_size - CHECKSUM_BYTES).is_multiple_of(ALIGNMENT) {
        return Err(refused("not a snapshot, or truncated (its size is not that of one)"));
    }
    let body = total_size - CHECKSUM_BYTES;
    let mut file = BufReader::new(File::open(path)?);
    let mut hasher = Sha256::new();
    std::io::copy(&mut (&mut file).take(body), &mut hasher)?;
    let mut stored = [0u8; CHECKSUM_BYTES as usize];
    file.read_exact(&mut stored)?;
    if hasher.finalize().as_slice() != stored {
        return Err(refused("its SHA-256 does not match: the file is corrupted or truncated"));
    }
    let mut body_reader = BufReader::new(File::open(path)?).take(body);
    let (mut revision, mut total_keys) = (1, 0u64);
    let hash = scan_snapshot(&mut body_reader, |key, value| {
        total_keys += 1;
        if let Some(r) = crate::kv::exported_revision(key, value) {
            revision = r;
        }
    })
    .map_err(|e| in_file(path, e))?;
    let mut padding = Vec::new();
    body_reader.read_to_end(&mut padding)?;
    if padding.len() as u64 >= ALIGNMENT || padding.iter().any(|&b| b != 0) {
        return Err(refused("unexpected bytes after the snapshot"));
    }
    Ok(BackupStatus { hash, revision, total_keys, total_size })
}

/// Where and as whom a backup is restored: one member of a new cluster.
pub struct RestoreTarget {
    pub data_dir: PathBuf,
    pub name: String,
    /// Who the member is, from its flags as for a member of a new cluster.
    pub identity: Identity,
    /// How far to move the revision on (and whether to compact there).
    pub bump: pb::RevisionBump,
    /// Accept a snapshot without the backup's SHA-256 (a `.snap` file from a data dir); its
    /// own CRC is still checked.
    pub skip_hash_check: bool,
}

/// What a restore produced.
#[derive(Debug)]
pub struct Restored {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The store revision the member starts at.
    pub revision: i64,
}

/// Restores the backup at `path` into a new data dir for `target`; refuses a damaged backup
/// and a data dir that is not empty, and leaves nothing behind when it fails.
pub fn restore(path: &Path, target: RestoreTarget) -> Result<Restored> {
    let hash = if target.skip_hash_check {
        scan_snapshot(BufReader::new(open(path)?), |_, _| {}).map_err(|e| in_file(path, e))?
    } else {
        status(path)?.hash
    };
    let members = target.identity.initial_members.clone();
    let mut revision = 0;
    let fill = |data: &DataDir| {
        let kv = data.kv_store();
        let crc = crate::raft::state_machine::restore(&kv, BufReader::new(open(path)?), &target.bump)
            .map_err(|e| in_file(path, e))?;
        if crc != hash {
            return Err(Error::Corrupt(format!("{}: changed while it was restored", path.display())));
        }
        revision = kv.revision()?;
        let state_machine =
            StateMachine::new(kv, data.db.clone(), data.snapshot_dir(), Default::default(), Default::default());
        let first = state_machine.seed_restored(members)?;
        data.log_store()?.seed_restored(first).map_err(|e| Error::Storage(e.to_string()))
    };
    let meta = DataDir::restore(&target.data_dir, &target.name, target.identity, hash, fill)?;
    Ok(Restored { cluster_id: meta.cluster_id, member_id: meta.member_id, revision })
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::Config(format!("open {}: {e}", path.display())))
}

/// Names the file in an error about its content.
fn in_file(path: &Path, error: Error) -> Error {
    match error {
        Error::Corrupt(why) => Error::Corrupt(format!("{}: {why}", path.display())),
        other => other,
    }
}

/// The length of a backup before its checksum is a multiple of this, as etcd's bbolt file is.
pub const ALIGNMENT: u64 = 512;
/// How much of the backup one stream message carries (etcd sends 32 KiB).
const CHUNK_BYTES: usize = 32 * 1024;

/// Writes a backup of the store to `part` (see [`StateMachine::export`]), then publishes it at
/// `file` (see [`publish`]). Nothing is left at `part` when it fails.
pub async fn save_local(state_machine: &StateMachine, part: &Path, file: &Path) -> Result<BackupStatus> {
    let exported = state_machine.export(part.to_path_buf()).await;
    let (part, file) = (part.to_path_buf(), file.to_path_buf());
    #[allow(clippy::disallowed_methods)] // sealing and renaming files: no sled
    tokio::task::spawn_blocking(move || match exported.and_then(|()| seal(&part)) {
        Ok(()) => publish(&part, &file),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

/// Checks the backup written at `part` whole, then renames it to `file` and syncs the directory:
/// a backup appears under its name only once it is known to be good. A bad one is removed.
pub fn publish(part: &Path, file: &Path) -> Result<BackupStatus> {
    let published = status(part).and_then(|status| {
        std::fs::rename(part, file)
            .map_err(|e| Error::Storage(format!("could not rename {} to {}: {e}", part.display(), file.display())))?;
        let dir = file.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
        Ok(status)
    });
    if published.is_err() {
        let _ = std::fs::remove_file(part);
    }
    published
}

/// Turns the snapshot file at `path` into a backup in place: zero padding to a multiple of
/// [`ALIGNMENT`], then the SHA-256 of everything before it.
fn seal(path: &Path) -> Result<()> {
    let mut file = std::fs::OpenOptions::new().read(true).append(true).open(path)?;
    let mut hasher = Sha256::new();
    let length = std::io::copy(&mut BufReader::new(&mut file), &mut hasher)?;
    let padding = vec![0u8; (length.div_ceil(ALIGNMENT) * ALIGNMENT - length) as usize];
    hasher.update(&padding);
    file.write_all(&padding)?;
    file.write_all(&hasher.finalize())?;
    file.sync_all()?;
    Ok(())
}

/// Distinguishes concurrent exports in one data dir.
static EXPORTS: AtomicU64 = AtomicU64::new(0);
/// How an export's file in the data dir is named: `snapshot-export-<pid>-<n>.tmp`.
const EXPORT_PREFIX: &str = "snapshot-export-";
const EXPORT_SUFFIX: &str = ".tmp";

/// Removes the exports a member killed mid-stream left in `data_dir`: each is a whole copy of
/// the store, and no later start would reuse its name. Called before the member serves.
pub fn remove_stale_exports(data_dir: &Path) -> Result<()> {
    let failed =
        |what: &str, path: &Path, e: std::io::Error| Error::Storage(format!("cannot {what} {}: {e}", path.display()));
    for dirent in std::fs::read_dir(data_dir).map_err(|e| failed("list", data_dir, e))? {
        let path = dirent.map_err(|e| failed("list", data_dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(EXPORT_PREFIX) && name.ends_with(EXPORT_SUFFIX) {
            tracing::info!(path = %path.display(), "removing a snapshot export left by an earlier run");
            std::fs::remove_file(&path).map_err(|e| failed("remove the snapshot export left at", &path, e))?;
        }
    }
    Ok(())
}

/// A file that is removed when dropped: an export lives only as long as its stream.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(error = %e, path = %self.0.display(), "could not remove a snapshot export");
        }
    }
}

/// Space an export leaves free on the data dir's disk besides its own size: a member whose disk
/// fills can no longer write its log or apply, so a backup must never fill it.
const EXPORT_HEADROOM_BYTES: u64 = 256 * 1024 * 1024;
/// What the exports under way in this process are expected to take on disk.
static EXPORT_BYTES_RESERVED: AtomicU64 = AtomicU64::new(0);

/// Free space claimed for one export, given back when dropped (with the export's file).
struct SpaceReservation(u64);

impl Drop for SpaceReservation {
    fn drop(&mut self) {
        EXPORT_BYTES_RESERVED.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Claims `size` bytes of `data_dir`'s disk for an export, or refuses it if that, with the other
/// exports under way and [`EXPORT_HEADROOM_BYTES`], is more than is free.
fn reserve_export_space(data_dir: &Path, size: u64) -> Result<SpaceReservation> {
    let free = fs2::available_space(data_dir).map_err(|e| Error::Storage(format!("{}: {e}", data_dir.display())))?;
    let others = EXPORT_BYTES_RESERVED.fetch_add(size, Ordering::Relaxed);
    let reservation = SpaceReservation(size);
    export_fits(free, others, size).map_err(|why| Error::Storage(format!("{}: {why}", data_dir.display())))?;
    Ok(reservation)
}

/// Whether a copy of about `size` bytes fits in `free`, beside `others` and the headroom.
fn export_fits(free: u64, others: u64, size: u64) -> std::result::Result<(), String> {
    let needed = size.saturating_add(others).saturating_add(EXPORT_HEADROOM_BYTES);
    if free < needed {
        return Err(format!(
            "not enough space for a snapshot copy: {free} bytes free, the copy needs about {size}, \
             copies under way {others}, and {EXPORT_HEADROOM_BYTES} stay free for the member's own writes"
        ));
    }
    Ok(())
}

/// Copies the store to a file in `data_dir` (see [`StateMachine::export`]) and returns a
/// channel that streams it as etcd does: chunks with the bytes still to come, padding, and a last
/// message with the SHA-256. `header` goes on every message. `size` is what the copy is expected
/// to take: it is refused if the disk has not that much free and more.
pub async fn stream(
    state_machine: &StateMachine,
    data_dir: &Path,
    size: u64,
    header: pb::ResponseHeader,
) -> Result<mpsc::Receiver<std::result::Result<pb::SnapshotResponse, Status>>> {
    let space = reserve_export_space(data_dir, size)?;
    let n = EXPORTS.fetch_add(1, Ordering::Relaxed);
    let file = TempFile(data_dir.join(format!("{EXPORT_PREFIX}{}-{n}{EXPORT_SUFFIX}", std::process::id())));
    if crate::faults::enabled("slow-snapshot-export") {
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    }
    state_machine.export(file.0.clone()).await?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        if let Err(e) = send_file(&file.0, header, &tx).await {
            let _ = tx.send(Err(Status::from(e))).await;
        }
        drop((file, space));
    });
    Ok(rx)
}

async fn send_file(
    path: &Path,
    header: pb::ResponseHeader,
    tx: &mpsc::Sender<std::result::Result<pb::SnapshotResponse, Status>>,
) -> Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let length = file.metadata().await?.len();
    let total = length.div_ceil(ALIGNMENT) * ALIGNMENT;
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    while sent < total {
        let want = (total - sent).min(CHUNK_BYTES as u64) as usize;
        let mut blob = vec![0u8; want];
        let from_file = (length.saturating_sub(sent) as usize).min(want);
        file.read_exact(&mut blob[..from_file]).await?;
        // Whatever is not from the file is the zero padding.
        hasher.update(&blob);
        sent += want as u64;
        let message =
            pb::SnapshotResponse { header: Some(header), remaining_bytes: total - sent, blob, ..Default::default() };
        if tx.send(Ok(message)).await.is_err() {
            return Ok(()); // the client went away
        }
    }
    let checksum =
        pb::SnapshotResponse { header: Some(header), blob: hasher.finalize().to_vec(), ..Default::default() };
    let _ = tx.send(Ok(checksum)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_must_leave_the_headroom_free_beside_the_copies_under_way() {
        let size = 1_000_000;
        assert!(export_fits(size + EXPORT_HEADROOM_BYTES, 0, size).is_ok());
        assert!(export_fits(size + EXPORT_HEADROOM_BYTES - 1, 0, size).is_err());
        let why = export_fits(2 * size + EXPORT_HEADROOM_BYTES - 1, size, size).unwrap_err();
        assert!(why.contains("copies under way 1000000"), "{why}");
        assert!(export_fits(u64::MAX - 1, u64::MAX, size).is_err(), "no overflow");
    }
}
