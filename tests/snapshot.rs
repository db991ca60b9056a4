//! Backups: Maintenance.Snapshot streams a consistent copy of the whole store from any member in
//! etcd's envelope (padded to 512 bytes, then a SHA-256), so `etcdctl snapshot save` works
//! against Phoenix unchanged.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use support::{free_ports, poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};

const PHOENIXCTL: &str = env!("CARGO_BIN_EXE_phoenixctl");

fn phoenixctl(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(PHOENIXCTL).args(args).output().expect("run phoenixctl");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// Checks etcd's envelope: a body whose length is a multiple of 512, then its SHA-256; the body
/// is a Phoenix state machine snapshot.
fn assert_is_a_backup(bytes: &[u8]) {
    assert_eq!(bytes.len() % 512, 32, "length {}", bytes.len());
    let (body, checksum) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(body).as_slice(), checksum, "the SHA-256 does not match");
    assert!(body.starts_with(b"PHXSNAP1"), "not a Phoenix snapshot");
}

fn etcdctl_installed() -> bool {
    Command::new("etcdctl").arg("version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn a_snapshot_streams_from_any_member_while_writes_go_on() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut client = cluster.client(leader).await;
    for i in 0..200 {
        client.put(format!("k/{i:03}"), vec![b'v'; 1000], None).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                client.put(format!("during/{i:05}"), "v", None).await.unwrap();
                i += 1;
            }
        })
    };

    // From the leader, with the Rust client.
    let mut stream = client.snapshot().await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend_from_slice(chunk.blob());
    }
    assert_is_a_backup(&bytes);
    assert!(bytes.len() > 200 * 1000, "the snapshot holds {} bytes", bytes.len());

    // From a follower, with etcdctl.
    if etcdctl_installed() {
        let file = cluster.dir().join("backup.db");
        let endpoint = cluster.members[follower].endpoint();
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "snapshot", "save"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "etcdctl: {}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(&format!("Snapshot saved at {}", file.display())), "{stdout}");
        assert_is_a_backup(&std::fs::read(&file).unwrap());
    } else {
        eprintln!("SKIPPED etcdctl snapshot save: etcdctl is not installed");
    }
    // From a follower, with phoenixctl; status checks the file whole.
    let before = client.get("k/000", None).await.unwrap().header().unwrap().revision();
    let file = cluster.dir().join("phoenix-backup.db");
    let file_arg = file.to_string_lossy().into_owned();
    let endpoint = cluster.members[follower].endpoint();
    let (code, out, err) = phoenixctl(&["--endpoints", &endpoint, "snapshot", "save", &file_arg]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("Snapshot saved at {file_arg}\n"));
    assert!(!cluster.dir().join("phoenix-backup.db.part").exists());
    let after = client.get("k/000", None).await.unwrap().header().unwrap().revision();
    let (code, out, err) = phoenixctl(&["snapshot", "status", &file_arg, "-w", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let revision = status["revision"].as_i64().unwrap();
    assert!((before..=after).contains(&revision), "revision {revision} not within [{before}, {after}]");
    assert!(status["totalKey"].as_u64().unwrap() > 200, "{status}");
    assert_eq!(status["totalSize"].as_u64().unwrap(), std::fs::metadata(&file).unwrap().len());
    let (_, simple, _) = phoenixctl(&["snapshot", "status", &file_arg]);
    let fields: Vec<&str> = simple.trim_end().split(", ").collect();
    assert_eq!(fields.len(), 4, "{simple}");
    assert_eq!(fields[1], revision.to_string());
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // Damaged files are refused: a flipped byte, a cut tail, something else entirely.
    let bytes = std::fs::read(&file).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0xff;
    let damaged = [
        ("flipped", flipped, "SHA-256 does not match"),
        ("truncated", bytes[..bytes.len() - 100].to_vec(), "truncated"),
        ("foreign", vec![7u8; 512 + 32], "SHA-256 does not match"),
    ];
    for (name, content, why) in damaged {
        let path = cluster.dir().join(name);
        std::fs::write(&path, content).unwrap();
        let (code, _, err) = phoenixctl(&["snapshot", "status", &path.to_string_lossy()]);
        assert_eq!(code, Some(1), "{name}");
        assert!(err.starts_with("Error: ") && err.contains(why), "{name}: {err}");
    }

    // A save that fails leaves nothing behind.
    let nowhere = format!("127.0.0.1:{}", free_ports(1)[0]);
    let failed = cluster.dir().join("failed.db").to_string_lossy().into_owned();
    let (code, _, _) = phoenixctl(&["--endpoints", &nowhere, "--dial-timeout", "1s", "snapshot", "save", &failed]);
    assert_eq!(code, Some(1));
    assert!(!cluster.dir().join("failed.db").exists() && !cluster.dir().join("failed.db.part").exists());

    // The copies the members streamed from are gone.
    for member in &cluster.members {
        poll_until(READY_TIMEOUT, "the snapshot exports to be removed", || async {
            let left = std::fs::read_dir(&member.data_dir)
                .ok()?
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().starts_with("snapshot-export-"));
            (!left).then_some(())
        })
        .await;
    }
}
