//! Scheduled backups: `--backup-dir`, `--backup-interval`, `--backup-retention`,
//! `--backup-from leader|all` and `--backup-min-free-bytes`, checked on real members. Every
//! backup must be whole (phoenixctl snapshot status accepts it), old ones pruned, and the last
//! one (or the failure) reported in Status and /metrics.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{http_get, poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};

const PHOENIXCTL: &str = env!("CARGO_BIN_EXE_phoenixctl");

/// Names of the finished backups in `dir`, oldest first (their names sort by time).
fn backups_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|name| name.starts_with("phoenix-") && name.ends_with(".db"));
    names.sort();
    names
}

/// The member name a backup's file name carries (`phoenix-<member>-<time>.db`).
fn member_of(name: &str) -> String {
    let rest = name.trim_start_matches("phoenix-");
    rest[..rest.rfind('-').expect("a time stamp")].to_string()
}

fn backup_flags<'a>(dir: &'a str, from: &'a str) -> Vec<&'a str> {
    let mut flags = vec!["--backup-dir", dir, "--backup-interval", "300ms", "--backup-retention", "2s"];
    flags.extend(["--backup-from", from, "--backup-min-free-bytes", "0"]);
    flags.extend(TEST_TIMINGS);
    flags
}

async fn status_errors(cluster: &Cluster, i: usize) -> Vec<String> {
    let mut client = cluster.client(i).await;
    client.status().await.unwrap().errors().to_vec()
}

async fn metric(cluster: &Cluster, i: usize, name: &str) -> u64 {
    let (code, body) = http_get(&cluster.members[i].endpoint(), "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let line = body.lines().find(|line| line.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{body}"));
    line[name.len() + 1..].parse().unwrap()
}

#[tokio::test]
async fn the_leader_saves_verified_backups_on_schedule_and_prunes_them() {
    let dir = tempfile::tempdir().unwrap();
    let backup_dir = dir.path().to_string_lossy().into_owned();
    let cluster = Cluster::start(3, &backup_flags(&backup_dir, "leader")).await;
    let leader = cluster.leader().await;
    cluster.client(leader).await.put("k", "v", None).await.unwrap();

    // Backups appear, and the first ones go once they are past the retention.
    let first = poll_until(READY_TIMEOUT, "a first backup", || async { backups_in(dir.path()).first().cloned() }).await;
    poll_until(READY_TIMEOUT, "the first backup to be pruned", || async {
        let now = backups_in(dir.path());
        (!now.contains(&first) && !now.is_empty()).then_some(())
    })
    .await;
    let kept = backups_in(dir.path());
    assert!(kept.len() <= 9, "300ms apart and kept 2s: {kept:?}");
    let savers: BTreeSet<String> = kept.iter().map(|name| member_of(name)).collect();
    if cluster.leader().await == leader {
        assert_eq!(savers, BTreeSet::from([cluster.members[leader].name.clone()]), "only the leader saves");
    } else {
        eprintln!("SKIPPED the single-saver check: leadership moved during the test");
    }

    // Each one is a whole backup of the store.
    let newest = PathBuf::from(&backup_dir).join(kept.last().unwrap());
    let output = Command::new(PHOENIXCTL).args(["snapshot", "status", "-w", "json"]).arg(&newest).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(status["revision"].as_i64().unwrap() >= 2, "{status}");

    // Status and /metrics say when the last one was saved, and how big it was.
    let errors = status_errors(&cluster, leader).await;
    assert!(errors.iter().any(|e| e.starts_with("backup: last saved ") && e.contains("bytes, revision")), "{errors:?}");
    assert!(metric(&cluster, leader, "phoenix_backup_last_size_bytes").await > 0);
    assert!(metric(&cluster, leader, "phoenix_backup_last_success_timestamp_seconds").await > 1_700_000_000);
    assert_eq!(metric(&cluster, leader, "phoenix_backup_failures_total").await, 0);
    let follower = (leader + 1) % 3;
    assert!(status_errors(&cluster, follower).await.is_empty(), "a follower saves nothing with --backup-from leader");
    assert!(std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".part")));
}

#[tokio::test]
async fn every_member_saves_with_backup_from_all() {
    let dir = tempfile::tempdir().unwrap();
    let backup_dir = dir.path().to_string_lossy().into_owned();
    let cluster = Cluster::start(3, &backup_flags(&backup_dir, "all")).await;
    let names: BTreeSet<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    poll_until(READY_TIMEOUT, "a backup from every member", || async {
        let savers: BTreeSet<String> = backups_in(dir.path()).iter().map(|name| member_of(name)).collect();
        (savers == names).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_backup_that_would_fill_the_disk_is_not_attempted_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let backup_dir = dir.path().to_string_lossy().into_owned();
    let mut flags = backup_flags(&backup_dir, "leader");
    // No filesystem here has an exabyte to spare.
    let min_free = flags.iter().position(|f| *f == "--backup-min-free-bytes").unwrap() + 1;
    flags[min_free] = "1000000000000000000";
    let cluster = Cluster::start(1, &flags).await;
    let errors = poll_until(READY_TIMEOUT, "the failure to be reported", || async {
        let errors = status_errors(&cluster, 0).await;
        errors.iter().any(|e| e.starts_with("backup failed ")).then_some(errors)
    })
    .await;
    assert!(
        errors.iter().any(|e| e.contains("not enough space") && e.contains("last good backup: none")),
        "{errors:?}"
    );
    assert_eq!(metric(&cluster, 0, "phoenix_backup_failing").await, 1);
    assert!(metric(&cluster, 0, "phoenix_backup_failures_total").await >= 1);
    assert!(cluster.members[0].log_text().contains("scheduled backup failed"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
}
