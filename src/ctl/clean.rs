//! `clean --data-dir DIR [--purge]`, Phoenix's own command (etcdctl has none): gets a stopped
//! member's data dir out of the way so that its host can join the cluster again as a new member.
//!
//! A member that was removed or fenced off must never start from its old data (DESIGN.md,
//! "Identity and fencing"), and a member that rejoins does so empty and under a new ID. `clean`
//! moves the data dir aside to `DIR.removed-<UTC yyyymmddThhmmssZ>` next to it (or, with
//! `--purge`, deletes it) and says what to do next. It refuses, with a one-line error and exit 1,
//! a DIR that does not exist, is not a directory, is a symbolic link, or is not a Phoenix data
//! dir (no `phoenix.json`); a data dir a running member holds, which it finds out by opening
//! the member's database, as sled locks it while a member runs; and `--purge` of a reset
//! survivor that was not fenced off since (perhaps the only copy of its cluster). An empty DIR
//! is already clean.

use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::cli::CleanArgs;
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use super::printer::write_error;
use super::Io;
use crate::cluster::DataDirMeta;

/// The file that makes a directory a Phoenix data dir (`crate::cluster`).
const META_FILE: &str = "phoenix.json";

/// The file a member writes when it learns it was removed or fenced off, holding the reason.
const FENCED_FILE: &str = "FENCED";

/// How many backups of one data dir may be made within one second before `clean` gives up.
const MAX_BACKUPS_PER_SECOND: u32 = 100;

/// What DIR turned out to hold.
enum Found {
    Empty,
    Member(DataDirMeta),
}

pub fn clean(args: CleanArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let Some(dir) = args.data_dir else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "clean needs --data-dir DIR, the data dir of a stopped member"));
    };
    let meta = match inspect(&dir)? {
        Found::Empty => {
            let done = format!("Data dir {} is empty: there is nothing to clean.", dir.display());
            return report(io.out, &done, "<name>", None);
        }
        Found::Member(meta) => meta,
    };
    // Held until the data dir is gone from its place, so that no member starts on it meanwhile.
    let _locked = ensure_stopped(&dir, &meta)?;
    let mut member = format!("member {} ({:x}) of cluster {:x}", meta.name, meta.member_id, meta.cluster_id);
    let fenced = fs::read_to_string(dir.join(FENCED_FILE)).ok();
    if let Some(reason) = &fenced {
        member.push_str(&format!(", fenced off ({})", reason.trim()));
    }
    // The survivor of a reset may be the only copy of its cluster's data: never deleted by
    // mistake for a stale member.
    let reset = crate::recovery::recorded_reset(&dir).ok().flatten().is_some();
    if args.purge && reset && fenced.is_none() {
        return Err(failed(format!(
            "data dir {} holds the reset survivor of its cluster ({member}), perhaps its only copy: --purge \
             would delete it; move it aside with `phoenixctl clean --data-dir {}` (without --purge) if that \
             is what you mean",
            dir.display(),
            dir.display()
        )));
    }
    let done = if args.purge {
        fs::remove_dir_all(&dir).map_err(|e| failed(format!("cannot delete data dir {}: {e}", dir.display())))?;
        format!("Deleted data dir {} of {member}.", dir.display())
    } else {
        let backup = move_aside(&dir)
            .map_err(|e| failed(format!("cannot move data dir {} aside: {e}; it is unchanged", dir.display())))?;
        format!("Moved data dir {} of {member} aside to {}.", dir.display(), backup.display())
    };
    // A member fenced off was removed already; another may still be listed, under the ID its
    // data dir held, and its peer URLs then refuse a member add.
    let listed = fenced.is_none().then_some(meta.member_id);
    report(io.out, &done, &meta.name, listed)
}

/// Prints what was done and how the host rejoins: empty, under a new member ID.
fn report(out: &mut dyn Write, done: &str, name: &str, maybe_listed: Option<u64>) -> Result<(), CtlError> {
    writeln!(out, "{done}").map_err(write_error)?;
    if let Some(id) = maybe_listed {
        writeln!(
            out,
            "If etcdctl member list still lists member {id:x}, remove it first: etcdctl member remove {id:x}"
        )
        .map_err(write_error)?;
    }
    writeln!(out, "Next, add this host back as a new member, either").map_err(write_error)?;
    writeln!(
        out,
        "  etcdctl member add {name} --peer-urls=<its peer URLs>, then start it with --initial-cluster-state existing, or"
    )
    .map_err(write_error)?;
    writeln!(
        out,
        "  start it with phoenix --join <client endpoints of the cluster> (a learner until it has caught up)."
    )
    .map_err(write_error)
}

/// What DIR holds, or why `clean` leaves it alone.
fn inspect(dir: &Path) -> Result<Found, CtlError> {
    let shown = dir.display();
    if dir.file_name().is_none() {
        return Err(failed(format!("{shown} does not name a data dir; give its path (not . or ..)")));
    }
    let metadata = match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(failed(format!("data dir {shown} does not exist"))),
        Err(e) => return Err(failed(format!("cannot read data dir {shown}: {e}"))),
        Ok(metadata) => metadata,
    };
    if metadata.file_type().is_symlink() {
        let target = fs::read_link(dir).map(|t| t.display().to_string()).unwrap_or_default();
        return Err(failed(format!("{shown} is a symbolic link; give the data dir it points to ({target})")));
    }
    if !metadata.is_dir() {
        return Err(failed(format!("{shown} is not a directory")));
    }
    let mut entries = fs::read_dir(dir).map_err(|e| failed(format!("cannot read data dir {shown}: {e}")))?;
    if entries.next().is_none() {
        return Ok(Found::Empty);
    }
    let meta = match fs::read(dir.join(META_FILE)) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(failed(format!("{shown} is not a Phoenix data dir (it has no {META_FILE}); it is left alone")))
        }
        Err(e) => return Err(failed(format!("cannot read {}: {e}", dir.join(META_FILE).display()))),
        Ok(bytes) => bytes,
    };
    serde_json::from_slice(&meta)
        .map(Found::Member)
        .map_err(|e| failed(format!("{} is unreadable ({e}); {shown} is left alone", dir.join(META_FILE).display())))
}

/// Refuses a data dir whose member is running: sled locks the database while it is open.
/// Returns the database opened, whose lock keeps a member from starting on it while it is held.
fn ensure_stopped(dir: &Path, meta: &DataDirMeta) -> Result<Option<sled::Db>, CtlError> {
    let db = dir.join("db");
    if !db.exists() {
        return Ok(None);
    }
    match crate::disk::open_sled(sled::Config::new().path(&db)) {
        Ok(opened) => Ok(Some(opened)),
        Err(e) if crate::disk::is_locked(&e) => Err(failed(crate::cluster::in_use(dir, meta))),
        Err(e) => Err(failed(format!(
            "cannot open {} to check that member {} ({:x}) is stopped: {e}; the data dir is left alone",
            db.display(),
            meta.name,
            meta.member_id
        ))),
    }
}

/// Renames DIR to `DIR.removed-<UTC time>` (with `.1`, `.2`... when that name is taken). Each
/// name is claimed by creating it as an empty directory, which fails if anything has that
/// name, and DIR then replaces it (rename(2) replaces only an empty directory): nothing that
/// exists is ever overwritten.
fn move_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let mut base = dir.file_name().map(OsString::from).unwrap_or_default();
    base.push(format!(".removed-{}", utc_stamp(SystemTime::now())));
    for attempt in 0..MAX_BACKUPS_PER_SECOND {
        let mut name = base.clone();
        if attempt > 0 {
            name.push(format!(".{attempt}"));
        }
        let backup = dir.with_file_name(name);
        match fs::create_dir(&backup) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if let Err(e) = fs::rename(dir, &backup) {
            let _ = fs::remove_dir(&backup);
            return Err(e);
        }
        return Ok(backup);
    }
    Err(std::io::Error::new(ErrorKind::AlreadyExists, format!("every name {}* is taken", base.to_string_lossy())))
}

/// `yyyymmddThhmmssZ` in UTC.
fn utc_stamp(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).format("%Y%m%dT%H%M%SZ").to_string()
}

fn failed(message: String) -> CtlError {
    CtlError::new(EXIT_ERROR, message)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(seconds: u64) -> String {
        utc_stamp(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    #[test]
    fn stamps_are_utc_civil_times() {
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_700_000_000), "20231114T221320Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
    }

    #[test]
    fn moving_aside_never_overwrites() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("m1.phoenix");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(META_FILE), "{}").unwrap();
        let first = move_aside(&dir).unwrap();
        assert!(!dir.exists() && first.join(META_FILE).exists());
        fs::create_dir(&dir).unwrap();
        let second = move_aside(&dir).unwrap();
        assert_ne!(first, second);
        assert!(first.join(META_FILE).exists(), "the first backup was overwritten");
    }
}
