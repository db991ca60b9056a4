//! `phoenixctl clean` on a real member's data dir: refused while the member runs, moved aside
//! once it stopped, and the backup purged; directories that are not Phoenix data dirs are left
//! alone. The messages are Phoenix's own, so they are compared with the expected text.

use std::path::{Path, PathBuf};

use super::process::{Outcome, Running};
use super::{Server, PHOENIXCTL};

/// What `clean` says after cleaning the data dir of a member named `name`.
fn next_steps(name: &str) -> String {
    format!(
        "Next, add this host back as a new member, either\n  \
         etcdctl member add {name} --peer-urls=<its peer URLs>, then start it with --initial-cluster-state existing, or\n  \
         start it with phoenix --join <client endpoints of the cluster> (a learner until it has caught up).\n"
    )
}

fn clean(args: &[&str]) -> Outcome {
    let args: Vec<String> = ["clean"].iter().chain(args).map(|arg| arg.to_string()).collect();
    Running::start(PHOENIXCTL, "127.0.0.1:1", &args).finish()
}

fn refused(message: String) -> Outcome {
    Outcome { stdout: String::new(), stderr: format!("Error: {message}\n"), code: Some(1) }
}

/// The directories next to `dir` whose names start with its name and `.removed-`.
fn backups_of(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.removed-", dir.file_name().and_then(|n| n.to_str()).unwrap_or_default());
    let parent = dir.parent().expect("the data dir has a parent");
    let entries = std::fs::read_dir(parent).expect("list the data dir's parent").map(|e| e.expect("an entry").path());
    entries.filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix))).collect()
}

#[test]
fn clean_moves_a_stopped_members_data_dir_aside_and_refuses_anything_else() {
    let mut phoenix = Server::phoenix();
    let ids = phoenix.ids();
    let data = phoenix.dir.path().join("data");
    let shown = data.display().to_string();
    let member = format!("member default ({:x}) of cluster {:x}", ids.member, ids.cluster);

    let running =
        format!("data dir {shown} is in use by member default ({:x}), which is running: stop it first", ids.member);
    assert_eq!(clean(&["--data-dir", &shown]), refused(running));
    assert_eq!(clean(&["--data-dir", &shown, "--purge"]).code, Some(1));
    assert!(data.join("phoenix.json").exists(), "a running member's data dir was touched");

    let other = phoenix.dir.path().join("other");
    std::fs::create_dir(&other).expect("create a directory");
    std::fs::write(other.join("keep"), "x").expect("write a file");
    let other_shown = other.display().to_string();
    let not_phoenix = format!("{other_shown} is not a Phoenix data dir (it has no phoenix.json); it is left alone");
    assert_eq!(clean(&["--data-dir", &other_shown, "--purge"]), refused(not_phoenix));
    assert!(other.join("keep").exists());
    let missing = phoenix.dir.path().join("missing").display().to_string();
    assert_eq!(clean(&["--data-dir", &missing]), refused(format!("data dir {missing} does not exist")));
    let empty = phoenix.dir.path().join("empty");
    std::fs::create_dir(&empty).expect("create a directory");
    let nothing = clean(&["--data-dir", &empty.display().to_string()]);
    let said = format!("Data dir {} is empty: there is nothing to clean.\n{}", empty.display(), next_steps("<name>"));
    assert_eq!((nothing.code, nothing.stdout), (Some(0), said));
    assert!(empty.exists());

    phoenix.kill();
    let moved = clean(&["--data-dir", &shown]);
    let backups = backups_of(&data);
    let [backup] = backups.as_slice() else { panic!("not one backup but {backups:?}: {moved:?}") };
    let stamp = backup.display().to_string().rsplit("removed-").next().unwrap_or_default().to_string();
    let stamped = stamp.chars().enumerate().all(|(i, c)| match i {
        8 => c == 'T',
        15 => c == 'Z',
        _ => c.is_ascii_digit(),
    });
    assert!(stamp.len() == 16 && stamped, "not a UTC yyyymmddThhmmssZ stamp: {stamp}");
    let remove_first = format!(
        "If etcdctl member list still lists member {:x}, remove it first: etcdctl member remove {:x}\n",
        ids.member, ids.member
    );
    let said = format!(
        "Moved data dir {shown} of {member} aside to {}.\n{remove_first}{}",
        backup.display(),
        next_steps("default")
    );
    assert_eq!(moved, Outcome { stdout: said, stderr: String::new(), code: Some(0) });
    assert!(!data.exists() && backup.join("phoenix.json").exists() && backup.join("db").exists());

    // A reset survivor, perhaps its cluster's only copy, is not deleted as if it were stale.
    let record = r#"{"last_log_index":1,"known_commit_index":1,"kept_past_commit":0,"lost_entries":0,"new_term":2,"backup":"/b"}"#;
    std::fs::write(backup.join("reset.json"), record).unwrap();
    let kept = clean(&["--data-dir", &backup.display().to_string(), "--purge"]);
    assert_eq!(kept.code, Some(1), "{kept:?}");
    assert!(kept.stderr.contains("holds the reset survivor of its cluster"), "{kept:?}");
    std::fs::remove_file(backup.join("reset.json")).unwrap();
    let purged = clean(&["--data-dir", &backup.display().to_string(), "--purge"]);
    let said = format!("Deleted data dir {} of {member}.\n{remove_first}{}", backup.display(), next_steps("default"));
    assert_eq!(purged, Outcome { stdout: said, stderr: String::new(), code: Some(0) });
    assert!(!backup.exists());
}
