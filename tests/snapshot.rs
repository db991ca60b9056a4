//! Backups: Maintenance.Snapshot streams a consistent copy of the whole store from any member in
//! etcd's envelope (padded to 512 bytes, then a SHA-256), so `etcdctl snapshot save` works
//! against Phoenix unchanged. `phoenixctl snapshot restore` writes the data dirs of a new
//! cluster from a backup: every key, revision and lease, a new cluster ID, and a revision that
//! can be moved on and compacted so that old watchers relist.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use etcd_client::{Client, GetOptions, WatchOptions};
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

/// Puts `during/NNNNN` keys one after the other until stopped: the write load a save runs under.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(client: &Client) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (mut client, stopped) = (client.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut i = 0;
            while !stopped.load(Ordering::Relaxed) {
                client.put(format!("during/{i:05}"), "v", None).await.unwrap();
                i += 1;
            }
        });
        Writer { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
    }
}

/// `body` in etcd's envelope with a correct SHA-256, as an etcd (bbolt) backup is.
fn enveloped(body: &[u8]) -> Vec<u8> {
    let mut file = body.to_vec();
    file.extend_from_slice(&Sha256::digest(body));
    file
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
    let writer = Writer::start(&client);

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
    // It holds every secret in the store: its user's alone, as etcdctl makes it.
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let data_dir_mode = std::fs::metadata(&cluster.members[follower].data_dir).unwrap().permissions().mode();
    assert_eq!(data_dir_mode & 0o777, 0o700);
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
    writer.stop().await;

    // On a terminal, save shows how far it is and how fast it goes (`script` gives it one).
    let on_terminal = cluster.dir().join("on-terminal.db").to_string_lossy().into_owned();
    let command = format!("{PHOENIXCTL} --endpoints {endpoint} snapshot save {on_terminal}");
    match Command::new("script").args(["-qec", &command, "/dev/null"]).output() {
        Ok(output) => {
            let shown = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{shown}");
            assert!(shown.contains("KiB/") && shown.contains("iB/s"), "no progress shown: {shown:?}");
            assert!(shown.contains(&format!("Snapshot saved at {on_terminal}")), "{shown:?}");
        }
        Err(e) => eprintln!("SKIPPED the progress bar: cannot run `script` ({e})"),
    }

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

    // A save that fails leaves nothing behind, and exits 5 as etcdctl's does.
    let nowhere = format!("127.0.0.1:{}", free_ports(1)[0]);
    let failed = cluster.dir().join("failed.db").to_string_lossy().into_owned();
    let (code, _, _) = phoenixctl(&["--endpoints", &nowhere, "--dial-timeout", "1s", "snapshot", "save", &failed]);
    assert_eq!(code, Some(5));
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

/// Every key a client sees at `revision` (0: now), with what restore must keep of it.
#[derive(Debug, PartialEq)]
struct Seen {
    key: Vec<u8>,
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

async fn every_key(client: &mut Client, revision: i64) -> Vec<Seen> {
    let options = GetOptions::new().with_all_keys().with_revision(revision);
    let response = client.get("", Some(options)).await.unwrap();
    let seen = response.kvs().iter().map(|kv| Seen {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    });
    seen.collect()
}

/// Saves a backup from `endpoint` with phoenixctl; returns its path and revision.
fn save(endpoint: &str, dir: &Path) -> (String, i64) {
    let file = dir.join("backup.db").to_string_lossy().into_owned();
    let (code, _, err) = phoenixctl(&["--endpoints", endpoint, "snapshot", "save", &file]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = phoenixctl(&["snapshot", "status", &file, "-w", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    (file, status["revision"].as_i64().unwrap())
}

/// Restores `file` into `cluster`'s data dir for `name` at `peer_port`, one of the members of
/// `initial_cluster` (token "restored"), with `extra` flags.
fn restore(
    cluster: &Cluster,
    file: &str,
    name: &str,
    peer_port: u16,
    initial_cluster: &str,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let data_dir = cluster.data_dir_of(name).to_string_lossy().into_owned();
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut args = vec!["snapshot", "restore", file, "--name", name, "--data-dir", &data_dir];
    args.extend(["--initial-cluster", initial_cluster, "--initial-cluster-token", "restored"]);
    args.extend(["--initial-advertise-peer-urls", &peer_url]);
    args.extend(extra);
    phoenixctl(&args)
}

/// Starts member `name` on a data dir restored for it.
fn start_restored(cluster: &mut Cluster, name: &str, ports: (u16, u16), initial_cluster: &str) -> usize {
    let mut flags = vec!["--initial-cluster", initial_cluster, "--initial-cluster-token", "restored"];
    flags.extend(TEST_TIMINGS);
    cluster.spawn_member(name.to_string(), ports.0, ports.1, &flags)
}

#[tokio::test]
async fn a_backup_from_a_follower_under_load_restores_into_a_new_three_member_cluster() {
    let source = Cluster::start(3, TEST_TIMINGS).await;
    let leader = source.leader().await;
    let mut client = source.client(leader).await;
    let lease = client.lease_grant(600, None).await.unwrap().id();
    for i in 0..100 {
        let options = (i % 10 == 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
        client.put(format!("k/{i:03}"), format!("v{i}"), options).await.unwrap();
    }
    for i in 0..20 {
        client.put(format!("k/{i:03}"), format!("again {i}"), None).await.unwrap();
    }
    client.delete("k/050", None).await.unwrap();
    let writer = Writer::start(&client);
    // The follower the backup comes from has applied some of the concurrent writes.
    let follower = (leader + 1) % 3;
    let from_follower = source.client(follower).await;
    poll_until(READY_TIMEOUT, "the follower to apply concurrent writes", || {
        let mut client = from_follower.clone();
        let options = GetOptions::new().with_serializable();
        async move { (client.get("during/00000", Some(options)).await.ok()?.count() == 1).then_some(()) }
    })
    .await;
    let (file, revision) = save(&source.members[follower].endpoint(), source.dir());
    writer.stop().await;
    let expected = every_key(&mut client, revision).await;
    assert!(expected.iter().any(|kv| kv.key.starts_with(b"during/")), "the save did not overlap the writes");
    let source_hash = client.hash_kv(revision).await.unwrap().hash();
    let source_cluster = client.status().await.unwrap().header().unwrap().cluster_id();

    let mut restored = Cluster::empty();
    let ports = free_ports(6);
    let names = ["r1", "r2", "r3"];
    let initial_cluster: Vec<String> =
        (0..3).map(|i| format!("{}=http://127.0.0.1:{}", names[i], ports[2 * i + 1])).collect();
    let initial_cluster = initial_cluster.join(",");
    for (i, name) in names.iter().enumerate() {
        let (code, out, err) = restore(&restored, &file, name, ports[2 * i + 1], &initial_cluster, &[]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains(&format!("at revision {revision}")), "{out}");
    }
    for (i, name) in names.iter().enumerate() {
        start_restored(&mut restored, name, (ports[2 * i], ports[2 * i + 1]), &initial_cluster);
    }
    let mut hashes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        restored.wait_ready(i).await;
        let mut client = restored.client(i).await;
        let response = client.get("k/000", None).await.unwrap();
        let header = response.header().unwrap();
        assert_eq!(header.revision(), revision, "{name}: the store revision moved");
        assert_ne!(header.cluster_id(), source_cluster, "a restored cluster has a new cluster ID");
        assert_eq!(every_key(&mut client, 0).await, expected, "{name}");
        hashes.push(client.hash_kv(0).await.unwrap().hash());
        let members = client.member_list().await.unwrap();
        assert_eq!(members.members().len(), 3, "only the new members");
        let leases = client.leases().await.unwrap();
        assert_eq!(leases.leases().iter().map(|l| l.id()).collect::<Vec<_>>(), vec![lease]);
    }
    assert_eq!(hashes, vec![source_hash; 3], "HashKV of the restored members and of the source");

    // The new cluster takes writes, and the revision goes on from the backup's.
    let mut client = restored.client(restored.leader().await).await;
    let put = client.put("after", "restore", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), revision + 1);
    let attached = client.lease_time_to_live(lease, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys())).await;

    // A member added later is sent the restored store: it has no log to replay from.
    let ports = free_ports(2);
    let endpoint = restored.members[0].endpoint();
    let initial = format!("r4=http://127.0.0.1:{}", ports[1]);
    let mut flags = vec!["--join", endpoint.as_str(), "--initial-cluster", initial.as_str()];
    flags.extend(TEST_TIMINGS);
    let added = restored.spawn_member("r4".to_string(), ports[0], ports[1], &flags);
    restored.wait_ready(added).await;
    let leader_hash = client.hash_kv(0).await.unwrap().hash();
    poll_until(READY_TIMEOUT, "the added member to hold the restored store", || async {
        let mut added = restored.client(added).await;
        (added.hash_kv(0).await.ok()?.hash() == leader_hash).then_some(())
    })
    .await;
    let mut added = restored.client(added).await;
    let serializable = GetOptions::new().with_all_keys().with_serializable();
    let held = added.get("", Some(serializable)).await.unwrap();
    assert_eq!(held.kvs().len(), expected.len() + 1);

    let with_lease: Vec<&[u8]> = expected.iter().filter(|kv| kv.lease == lease).map(|kv| kv.key.as_slice()).collect();
    assert_eq!(with_lease.len(), 7, "k/020..k/090 but k/050");
    assert_eq!(attached.unwrap().keys().iter().map(Vec::as_slice).collect::<Vec<_>>(), with_lease);
}

#[tokio::test]
async fn a_damaged_backup_or_an_occupied_data_dir_is_refused_and_nothing_is_left_behind() {
    let source = Cluster::start(1, TEST_TIMINGS).await;
    let mut client = source.client(0).await;
    for i in 0..50 {
        client.put(format!("k/{i:02}"), vec![b'v'; 100], None).await.unwrap();
    }
    let (file, _) = save(&source.members[0].endpoint(), source.dir());
    let bytes = std::fs::read(&file).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0xff;
    let target = Cluster::empty();
    let peer_port = free_ports(1)[0];
    let initial_cluster = format!("m1=http://127.0.0.1:{peer_port}");
    let damaged = [
        ("flipped", Some(flipped), "SHA-256 does not match"),
        ("truncated", Some(bytes[..bytes.len() - 700].to_vec()), "truncated"),
        ("foreign", Some(vec![7u8; 1024 + 32]), "SHA-256 does not match"),
        ("missing", None, "No such file"),
        ("etcd's", Some(enveloped(&[0x42; 2048])), "not a Phoenix snapshot file"),
    ];
    for (name, content, why) in damaged {
        let path = target.dir().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let (code, _, err) = restore(&target, &path.to_string_lossy(), "m1", peer_port, &initial_cluster, &[]);
        assert_eq!(code, Some(1), "{name}");
        assert!(err.starts_with("Error: ") && err.contains(why), "{name}: {err}");
        assert!(!target.data_dir_of("m1").exists(), "{name}: a data dir was left behind");
    }

    // An empty directory (a mounted volume) is used and, when the restore fails, left empty.
    std::fs::create_dir(target.data_dir_of("m1")).unwrap();
    let truncated = target.dir().join("truncated").to_string_lossy().into_owned();
    let (code, _, _) = restore(&target, &truncated, "m1", peer_port, &initial_cluster, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(std::fs::read_dir(target.data_dir_of("m1")).unwrap().count(), 0);
    let (code, _, err) = restore(&target, &file, "m1", peer_port, &initial_cluster, &[]);
    assert_eq!(code, Some(0), "{err}");

    // A data dir that holds anything is never overwritten.
    let before = std::fs::read(target.data_dir_of("m1").join("phoenix.json")).unwrap();
    let (code, _, err) = restore(&target, &file, "m1", peer_port, &initial_cluster, &[]);
    assert_eq!(code, Some(1));
    let data_dir = target.data_dir_of("m1");
    assert_eq!(err, format!("Error: data-dir {:?} not empty or could not be read\n", data_dir.display()));
    assert_eq!(std::fs::read(data_dir.join("phoenix.json")).unwrap(), before);

    // Flags that do not describe a member are refused before anything is read or written.
    let elsewhere = target.dir().join("elsewhere").to_string_lossy().into_owned();
    let (code, _, err) = phoenixctl(&["snapshot", "restore", &file, "--name", "m9", "--data-dir", &elsewhere]);
    assert_eq!(code, Some(128), "{err}");
    assert!(err.contains("couldn't find local name \"m9\""), "{err}");
    assert!(!Path::new(&elsewhere).exists());

    // A snapshot without the backup's SHA-256 (copied out of a data dir) needs --skip-hash-check;
    // its own checksum is still checked.
    let unhashed = target.dir().join("unhashed");
    std::fs::write(&unhashed, &bytes[..bytes.len() - 32]).unwrap();
    let other = Cluster::empty();
    let unhashed = unhashed.to_string_lossy().into_owned();
    let (code, _, err) = restore(&other, &unhashed, "m1", peer_port, &initial_cluster, &[]);
    assert_eq!(code, Some(1), "{err}");
    let (code, _, err) = restore(&other, &unhashed, "m1", peer_port, &initial_cluster, &["--skip-hash-check"]);
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test]
async fn a_restore_that_bumps_and_compacts_the_revision_tells_old_watchers_to_relist() {
    let mut source = Cluster::start(1, TEST_TIMINGS).await;
    let mut client = source.client(0).await;
    for i in 1..=5 {
        client.put("watched", format!("v{i}"), None).await.unwrap();
    }
    // A watcher of the old cluster: etcdctl's client resumes after the last revision it saw
    // when its connection comes back, now to the restored cluster.
    let (watch_log, watch_errors) = (source.dir().join("watch.out"), source.dir().join("watch.err"));
    let watcher = etcdctl_installed().then(|| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &source.members[0].endpoint(), "watch", "watched", "--rev", "2"])
            .stdout(std::fs::File::create(&watch_log).unwrap())
            .stderr(std::fs::File::create(&watch_errors).unwrap())
            .spawn()
            .unwrap()
    });
    if watcher.is_some() {
        poll_until(READY_TIMEOUT, "etcdctl to see every put", || async {
            std::fs::read_to_string(&watch_log).ok().filter(|out| out.contains("v5")).map(|_| ())
        })
        .await;
    }
    let (file, revision) = save(&source.members[0].endpoint(), source.dir());
    let (client_port, peer_port) = (source.members[0].client_port, source.members[0].peer_port);
    source.kill(0);

    let mut restored = Cluster::empty();
    let initial_cluster = format!("m1=http://127.0.0.1:{peer_port}");
    let bump = ["--bump-revision", "1000", "--mark-compacted"];
    let (code, out, err) = restore(&restored, &file, "m1", peer_port, &initial_cluster, &bump);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("at revision {}", revision + 1000)), "{out}");
    start_restored(&mut restored, "m1", (client_port, peer_port), &initial_cluster);
    restored.wait_ready(0).await;

    let mut client = restored.client(0).await;
    let got = client.get("watched", None).await.unwrap();
    assert_eq!(got.header().unwrap().revision(), revision + 1000);
    assert_eq!(got.kvs()[0].value(), b"v5");
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let mut events = client.watch("watched", Some(options)).await.unwrap();
    let first = events.message().await.unwrap().unwrap();
    let first = if first.created() { events.message().await.unwrap().unwrap() } else { first };
    assert!(first.canceled(), "{first:?}");
    assert_eq!(first.compact_revision(), revision + 1000);

    if let Some(mut watcher) = watcher {
        let exit = poll_until(READY_TIMEOUT, "the old watcher to be told and stop", || {
            std::future::ready(watcher.try_wait().ok().flatten())
        })
        .await;
        let told = std::fs::read_to_string(&watch_errors).unwrap();
        assert!(!exit.success());
        assert!(told.contains("watch was canceled (etcdserver: mvcc: required revision has been compacted)"), "{told}");
    } else {
        eprintln!("SKIPPED the etcdctl watcher: etcdctl is not installed");
    }
}

#[tokio::test]
async fn a_save_waits_for_a_slow_member_unless_bounded_and_a_failed_one_exits_as_etcdctl_does() {
    // The member takes 6 s before it answers a Snapshot call: past --command-timeout's 5 s
    // default, which etcdctl does not apply to a save.
    let cluster = Cluster::start_with_env(1, TEST_TIMINGS, &[("PHOENIX_TEST_FAULTS", "slow-snapshot-export")]).await;
    let endpoint = cluster.members[0].endpoint();
    let file = cluster.dir().join("slow.db");
    let (code, out, err) = phoenixctl(&["--endpoints", &endpoint, "snapshot", "save", file.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (Some(0), format!("Snapshot saved at {}\n", file.display()).as_str()), "{err}");

    // Bounded, it fails as etcdctl fails: exit 5, and no file, whole or part.
    let bounded = cluster.dir().join("bounded.db");
    let args = ["--endpoints", &endpoint, "--command-timeout", "1s", "snapshot", "save", bounded.to_str().unwrap()];
    let (code, _, err) = phoenixctl(&args);
    assert_eq!((code, err.as_str()), (Some(5), "Error: context deadline exceeded\n"));
    assert!(!bounded.exists() && !cluster.dir().join("bounded.db.part").exists());
}

#[tokio::test]
async fn an_export_left_by_a_killed_member_is_removed_when_it_starts_again() {
    let mut cluster = Cluster::start(1, TEST_TIMINGS).await;
    cluster.kill(0);
    // What a member killed while it streamed a snapshot leaves: a whole copy of its store.
    let left = cluster.members[0].data_dir.join("snapshot-export-4242-0.tmp");
    std::fs::write(&left, vec![7u8; 4096]).unwrap();
    cluster.restart(0).await;
    assert!(!left.exists(), "{} is still there", left.display());
}
