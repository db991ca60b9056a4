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
//! blob file that is new or has grown since it was last synced, and of their directory.
//!
//! After a failed sync the kernel may have dropped the dirty pages and reports the failure only
//! once, so a later sync could succeed over lost data: the first failure poisons the database,
//! and every flush after it fails, as etcd (which exits) and PostgreSQL do.
//!
//! sled frees what its writes replace (old versions of pages, and its 512 KiB IO buffers once
//! written) through crossbeam's epochs: each thread defers the frees into a bag of its own, and
//! hands the bag over to be freed only when 64 are queued. A Tokio blocking thread that goes idle
//! would keep its bag, and every IO buffer named in it, until it next works or exits ten seconds
//! later; a leader, whose log flushes run on many such threads, held 20-30 MiB that way. So
//! blocking work on sled goes through [`spawn_blocking`], which hands the bag over when the work
//! ends (clippy.toml forbids Tokio's own elsewhere).
//!
//! The directories and snapshot files Phoenix creates are its user's alone (0700 and 0600, as
//! etcd makes them): a store holds secrets.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Runs `work`, which uses sled, on Tokio's blocking pool, then hands the frees sled deferred on
/// that thread over to be done, before the thread goes back to the pool (see the module's doc).
pub async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    #[allow(clippy::disallowed_methods)] // the one place blocking work on sled is started
    tokio::task::spawn_blocking(move || {
        let done = work();
        crossbeam_epoch::pin().flush();
        done
    })
    .await
}

/// sled's database, whose flushes are durable. Dereferences to [`sled::Db`] for everything else;
/// clippy.toml forbids sled's own flush outside this module.
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
    /// Each blob file's length when it was last synced. sled writes a blob in several writes
    /// while its insert runs, so a flush racing that insert may sync it part way: the length
    /// tells the insert's own flush, which comes after the blob is whole, to sync it again.
    synced_blobs: Mutex<HashMap<OsString, u64>>,
    /// Set by the first failed sync; see the module doc.
    poisoned: AtomicBool,
}

/// Whether opening sled's database failed because another process has it open: sled holds a
/// lock on its file for as long as a database is open, and says so only in its message.
pub fn is_locked(err: &sled::Error) -> bool {
    matches!(err, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// What is wrong with a database sled refused as damaged, or None for any other failure.
pub fn damage(err: &sled::Error) -> Option<String> {
    match err {
        sled::Error::Corruption { .. } => Some("sled read corrupted data from its files".to_string()),
        sled::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => Some(io.to_string()),
        _ => None,
    }
}

/// Opens sled's database as `config` says. sled 0.34 panics on some damaged files while it
/// recovers them (`tried to serialize Uninitialized`, from random bytes near the end of its
/// log): the panic is caught, kept off stderr, and returned as an error [`damage`] describes,
/// so a damaged data dir is refused with advice instead of crashing the process. Nothing is
/// written before that panic (it happens while sled sizes its recovered snapshot).
///
/// sled lets go of its lock only when its IO threads let go of the file, a moment after the
/// last handle is dropped, so a process that opens a database again (a reset examines the data
/// dir, then starts on it) could find its own lock: a locked database is tried again for
/// [`OWN_LOCK_RELEASE`] before the lock is taken to be another process's.
pub fn open_sled(config: sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + OWN_LOCK_RELEASE;
    loop {
        match open_sled_once(config.clone()) {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}

/// How long a database this process just closed may still be locked by sled's IO threads.
const OWN_LOCK_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);

fn open_sled_once(config: sled::Config) -> sled::Result<sled::Db> {
    silence_panics_while_opening();
    OPENING.with(|opening| opening.set(true));
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    OPENING.with(|opening| opening.set(false));
    opened.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(sled::Error::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sled could not recover its files: {what}"),
        )))
    })
}

thread_local! {
    /// Whether this thread is inside [`open_sled`], whose panics are reported as errors.
    static OPENING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once per process, a panic hook that stays quiet for panics [`open_sled`] catches
/// and hands every other panic to the hook that was there before.
fn silence_panics_while_opening() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !OPENING.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

impl Db {
    /// Opens (or creates) sled's database in `dir`, then syncs what sled or an earlier process
    /// may have left unsynced: the blobs, sled's config file, and the names of `dir` itself and
    /// in it, so that a fresh database cannot vanish with a power cut.
    pub fn open(dir: &Path, cache_bytes: u64) -> sled::Result<Db> {
        let sled = open_sled(sled::Config::new().path(dir).cache_capacity(cache_bytes))?;
        let files = Files {
            log: File::open(dir.join("db"))?,
            blobs: dir.join("blobs"),
            synced_blobs: Mutex::new(HashMap::new()),
            poisoned: AtomicBool::new(false),
        };
        let db = Db { sled, files: Arc::new(files) };
        db.sync_files()?;
        File::open(dir.join("conf"))?.sync_all()?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(db)
    }

    /// Flushes sled and syncs its files; blocks the calling thread for the disk's round trips.
    pub fn flush(&self) -> sled::Result<()> {
        #[allow(clippy::disallowed_methods)] // the one place sled's flush is completed
        self.sled.flush()?;
        Ok(self.sync_files()?)
    }

    /// [`Db::flush`] on a blocking thread, off the async runtime's workers: one hand-off for
    /// both steps (sled's own `flush_async` would add a second, to its IO pool and back).
    pub async fn flush_async(&self) -> sled::Result<()> {
        let db = self.clone();
        spawn_blocking(move || db.flush()).await.map_err(io::Error::other)?
    }

    fn sync_files(&self) -> io::Result<()> {
        if self.files.poisoned.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an earlier sync of the data dir failed, so written data may be lost; restart the member",
            ));
        }
        let synced = self.sync_blobs().and_then(|()| self.files.log.sync_data());
        if synced.is_err() {
            self.files.poisoned.store(true, Ordering::Release);
        }
        synced
    }

    fn sync_blobs(&self) -> io::Result<()> {
        let mut synced = self.files.synced_blobs.lock().unwrap_or_else(PoisonError::into_inner);
        sync_changed_files(&self.files.blobs, &mut synced).map(|_| ())
    }
}

impl Deref for Db {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.sled
    }
}

/// Syncs each file in `dir` that `synced` does not list at its current length, then `dir`
/// itself if a file was new; forgets the files no longer there. Returns how many it synced.
fn sync_changed_files(dir: &Path, synced: &mut HashMap<OsString, u64>) -> io::Result<usize> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut present = HashMap::with_capacity(synced.len());
    let (mut changed, mut any_new) = (0, false);
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name();
        let file = match File::open(entry.path()) {
            Ok(file) => file,
            // sled removed it between the listing and the open: nothing left to sync.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // The length is read before the sync, so a write landing in between makes the next
        // flush sync again rather than be skipped.
        let len = file.metadata()?.len();
        match synced.get(&name) {
            Some(&synced_len) if synced_len == len => {}
            known => {
                file.sync_all()?;
                any_new |= known.is_none();
                changed += 1;
            }
        }
        present.insert(name, len);
    }
    if any_new {
        sync_dir(dir)?;
    }
    *synced = present;
    Ok(changed)
}

/// Makes the names in `dir` durable: a new file is only reachable after a crash once its
/// directory is synced.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces the file `name` in `dir` with `bytes`, whole or not at all, durably: a crash leaves
/// the old contents or the new, never a mix. The file is this user's alone.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = create_private_file(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Creates `path` and any missing parent, each readable by this user only.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Creates (or truncates) the file `path`, readable by this user only.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Over 128 KiB, sled's blob threshold with its default 512 KiB segments.
    const LARGE: usize = 200 * 1024;

    fn blob_files(dir: &Path) -> usize {
        fs::read_dir(dir.join("blobs")).map(|listing| listing.count()).unwrap_or(0)
    }

    fn synced_blobs(db: &Db) -> usize {
        db.files.synced_blobs.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// sled 0.34 panics while recovering some damaged logs: bytes overwritten in about a third
    /// of the places tried here. Each such open must come back as an error that says damage.
    #[test]
    fn a_damaged_database_is_refused_as_damaged_and_never_panics() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        for round in 0u32..3 {
            let db = Db::open(&path, 1 << 20)?;
            for i in 0u32..2000 {
                db.insert((round * 10_000 + i).to_be_bytes(), vec![b'x'; 300])?;
            }
            db.flush()?;
        }
        let log = path.join("db");
        let intact = fs::read(&log)?;
        let mut noise = 7u64;
        let mut recoveries_that_panicked = 0;
        for at in (0..intact.len() - 64).step_by(intact.len() / 60) {
            let mut damaged = intact.clone();
            for byte in &mut damaged[at..at + 64] {
                noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                *byte = (noise >> 33) as u8;
            }
            fs::write(&log, damaged)?;
            for file in fs::read_dir(&path)? {
                let file = file?.path();
                if file.file_name().is_some_and(|name| name.to_string_lossy().starts_with("snap.")) {
                    fs::remove_file(file)?;
                }
            }
            if let Err(e) = Db::open(&path, 1 << 20) {
                let damage = damage(&e).unwrap_or_else(|| panic!("bytes damaged at {at}: not told as damage: {e}"));
                recoveries_that_panicked += usize::from(damage.starts_with("sled could not recover its files"));
            }
        }
        assert!(recoveries_that_panicked > 0, "no damage made sled's recovery panic: the test lost its point");
        Ok(())
    }

    #[test]
    fn a_database_another_handle_holds_open_is_told_apart_from_other_failures() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let _held = Db::open(&dir.path().join("db"), 1 << 20)?;
        let second = Db::open(&dir.path().join("db"), 1 << 20).err().expect("sled's lock refuses a second open");
        assert!(is_locked(&second), "{second}");

        fs::write(dir.path().join("file"), b"not a directory")?;
        let other = Db::open(&dir.path().join("file"), 1 << 20).err().expect("a file is not a database");
        assert!(!is_locked(&other), "{other}");
        Ok(())
    }

    /// What `open_sled`'s retry is for: a handle this process lets go of just after the open
    /// starts, whose lock the first try finds still held.
    #[test]
    fn a_database_let_go_of_while_it_is_opened_again_opens() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        let held = Db::open(&path, 1 << 20)?;
        let letting_go = std::thread::spawn(move || {
            // Not a wait for anything: how long the lock stays held, well inside the retries.
            std::thread::sleep(OWN_LOCK_RELEASE / 4);
            drop(held);
        });
        let reopened = Db::open(&path, 1 << 20);
        letting_go.join().expect("the thread letting go of the database");
        reopened.map(drop)
    }

    #[test]
    fn only_new_and_grown_files_are_synced_and_removed_ones_forgotten() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut synced = HashMap::new();
        assert_eq!(sync_changed_files(&dir.path().join("absent"), &mut synced)?, 0);

        fs::write(dir.path().join("1"), b"part")?;
        fs::write(dir.path().join("2"), b"whole")?;
        assert_eq!(sync_changed_files(dir.path(), &mut synced)?, 2);
        assert_eq!(sync_changed_files(dir.path(), &mut synced)?, 0, "nothing changed");

        // A blob synced while sled was still writing it is synced again once it has grown.
        fs::OpenOptions::new().append(true).open(dir.path().join("1"))?.write_all(b" and the rest")?;
        assert_eq!(sync_changed_files(dir.path(), &mut synced)?, 1);

        fs::remove_file(dir.path().join("2"))?;
        assert_eq!(sync_changed_files(dir.path(), &mut synced)?, 0);
        assert_eq!(synced.keys().collect::<Vec<_>>(), [&OsString::from("1")]);
        Ok(())
    }

    #[test]
    fn a_flush_syncs_the_blob_files_sled_wrote() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path(), 1 << 20)?;
        db.insert(b"large-1", vec![2u8; LARGE])?;
        db.insert(b"large-2", vec![3u8; LARGE])?;
        db.flush()?;
        let blobs = blob_files(dir.path());
        assert!(blobs >= 2, "sled wrote {blobs} blob files for two large values");
        assert_eq!(synced_blobs(&db), blobs);
        Ok(())
    }

    #[tokio::test]
    async fn a_large_value_flushed_async_is_synced_and_read_back_after_reopening() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path(), 1 << 20)?;
        db.insert(b"large", vec![4u8; LARGE])?;
        db.flush_async().await?;
        assert_eq!(synced_blobs(&db), blob_files(dir.path()));
        drop(db);

        let reopened = Db::open(dir.path(), 1 << 20)?;
        assert_eq!(reopened.get(b"large")?.map(|value| value.len()), Some(LARGE));
        assert_eq!(synced_blobs(&reopened), blob_files(dir.path()));
        Ok(())
    }

    #[tokio::test]
    async fn after_a_failed_sync_every_flush_fails() -> sled::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path(), 1 << 20)?;
        db.insert(b"key", b"value")?;
        db.flush()?;
        // A file where the blob directory belongs fails the next sync's listing of it; once it
        // is gone again, nothing on the disk is wrong, and still no flush may succeed.
        let blobs = dir.path().join("blobs");
        let _ = fs::remove_dir_all(&blobs);
        fs::write(&blobs, b"in the way")?;
        assert!(db.flush().is_err(), "a failed sync must fail its flush");
        fs::remove_file(&blobs)?;
        let error = db.flush().expect_err("a flush after a failed sync must fail").to_string();
        assert!(error.contains("an earlier sync of the data dir failed"), "{error}");
        assert!(db.flush_async().await.is_err());
        Ok(())
    }

    /// Sets its flag when dropped.
    struct Freed(Arc<AtomicBool>);

    impl Drop for Freed {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A free deferred on a blocking thread, as sled defers its own, is done once the work ends,
    /// not when that idle thread next works or exits (ten seconds later).
    #[tokio::test]
    async fn frees_deferred_by_blocking_work_are_done_once_it_ends() {
        let freed = Arc::new(AtomicBool::new(false));
        let object = Freed(freed.clone());
        spawn_blocking(move || crossbeam_epoch::pin().defer(move || drop(object))).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // Pinning here advances the epoch and frees what was handed over.
        while !freed.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            crossbeam_epoch::pin().flush();
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(freed.load(Ordering::SeqCst), "the deferred free was kept by the idle blocking thread");
    }
}
