//! The data dir's sled database and the one way to make what was written to it durable.
//!
//! Invariant: when [`Db::flush`] or [`Db::flush_async`] returns Ok, every write made to the
//! database before the call is on the disk itself: not only in the page cache, and not only in
//! the disk's own write cache.
//!
//! sled 0.34's flush alone does not promise that on Linux. It ends with `sync_file_range`, which
//! neither commits the file's new size nor empties a volatile disk cache (`man 2
//! sync_file_range`), and it writes any value over a quarter of a segment (128 KiB) to its own
//! file under `blobs/`, which it never syncs. Only its background thread fsyncs, every 500 ms, so
//! a power cut could take back acknowledged writes. So after sled's flush this module does what
//! etcd does after each write to its WAL: an fdatasync of the log file, plus an fsync of each
//! blob file it has not synced yet and of their directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// sled's database, whose flushes are durable. Dereferences to [`sled::Db`] for everything else.
#[derive(Clone)]
pub struct Db {
    sled: sled::Db,
    files: Arc<Files>,
}

/// The files under sled's directory that its flush leaves unsynced.
struct Files {
    /// sled's log, `<dir>/db`. An fdatasync on any handle of a file syncs the file.
    log: File,
    /// Where sled writes large values, one file each.
    blobs: PathBuf,
    /// The blob files known to be synced. Held while syncing, so two flushes never race to
    /// report a blob synced that the other is still writing out.
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Db {
    /// Opens (or creates) sled's database in `dir`, then syncs whatever an earlier process may
    /// have left unsynced, so that every blob sled can see is known to be on disk.
    pub fn open(dir: &Path, cache_bytes: u64) -> sled::Result<Db> {
        let sled = sled::Config::new().path(dir).cache_capacity(cache_bytes).open()?;
        let files = Files {
            log: File::open(dir.join("db"))?,
            blobs: dir.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
        };
        let db = Db { sled, files: Arc::new(files) };
        db.sync_files()?;
        sync_dir(dir)?;
        Ok(db)
    }

    /// Flushes sled and syncs its files; blocks the calling thread for the disk's round trips.
    pub fn flush(&self) -> sled::Result<()> {
        self.sled.flush()?;
        Ok(self.sync_files()?)
    }

    /// [`Db::flush`] off the async runtime's threads.
    pub async fn flush_async(&self) -> sled::Result<()> {
        self.sled.flush_async().await?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.sync_files()).await.map_err(io::Error::other)??;
        Ok(())
    }

    fn sync_files(&self) -> io::Result<()> {
        self.sync_new_blobs()?;
        self.files.log.sync_data()
    }

    /// Syncs the blob files not synced yet and, if there were any, the directory naming them.
    /// Forgets the ones sled has removed since, so the set only holds what is on disk.
    fn sync_new_blobs(&self) -> io::Result<()> {
        let mut synced = self.files.synced_blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let listing = match fs::read_dir(&self.files.blobs) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        let mut any_new = false;
        for entry in listing {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(blob) => blob.sync_all()?,
                    // sled removed it between the listing and the open: nothing left to sync.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                any_new = true;
            }
            present.insert(name);
        }
        if any_new {
            sync_dir(&self.files.blobs)?;
        }
        *synced = present;
        Ok(())
    }

    /// How many blob files are known to be synced, for tests.
    #[cfg(test)]
    fn synced_blob_count(&self) -> usize {
        self.files.synced_blobs.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Deref for Db {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.sled
    }
}

/// Makes the names in `dir` durable: a new file is only reachable after a crash once its
/// directory is synced.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over 128 KiB, sled's blob threshold with its default 512 KiB segments.
    const LARGE: usize = 200 * 1024;

    fn blob_files(dir: &Path) -> usize {
        fs::read_dir(dir.join("blobs")).map(|listing| listing.count()).unwrap_or(0)
    }

    #[test]
    fn a_flush_syncs_every_blob_sled_wrote_and_forgets_the_removed_ones() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path(), 1 << 20)?;
        db.insert(b"small", vec![1u8; 64])?;
        db.flush()?;
        assert_eq!(db.synced_blob_count(), 0);

        db.insert(b"large-1", vec![2u8; LARGE])?;
        db.insert(b"large-2", vec![3u8; LARGE])?;
        db.flush()?;
        let blobs = blob_files(dir.path());
        assert!(blobs >= 2, "sled wrote {blobs} blob files for two large values");
        assert_eq!(db.synced_blob_count(), blobs);

        db.remove(b"large-1")?;
        db.remove(b"large-2")?;
        db.flush()?;
        assert_eq!(db.synced_blob_count(), blob_files(dir.path()));
        Ok(())
    }

    #[tokio::test]
    async fn a_large_value_flushed_async_is_synced_and_read_back_after_reopening() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path(), 1 << 20)?;
        db.insert(b"large", vec![4u8; LARGE])?;
        db.flush_async().await?;
        assert_eq!(db.synced_blob_count(), blob_files(dir.path()));
        drop(db);

        let reopened = Db::open(dir.path(), 1 << 20)?;
        assert_eq!(reopened.get(b"large")?.map(|value| value.len()), Some(LARGE));
        assert_eq!(reopened.synced_blob_count(), blob_files(dir.path()));
        Ok(())
    }
}
