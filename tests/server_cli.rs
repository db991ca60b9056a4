//! The `phoenix` command line: etcd's flags, one-line errors, and nothing written on error.

mod support;

use support::{free_ports, run_phoenix, run_phoenix_with_env, Cluster, TEST_TIMINGS};

/// Flags for a one-member cluster named `name` on the given client and peer URLs.
fn lone_member_flags(name: &str, client: &str, peer: &str) -> Vec<String> {
    let initial_cluster = format!("{name}={peer}");
    ["--name", name, "--listen-client-urls", client, "--advertise-client-urls", client, "--listen-peer-urls", peer]
        .into_iter()
        .chain(["--initial-advertise-peer-urls", peer, "--initial-cluster", &initial_cluster])
        .map(str::to_string)
        .collect()
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

#[test]
fn version_prints_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_phoenix(&["--version"], dir.path());
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("phoenix Version:") && stdout.contains("etcd API Version: 3.5."), "{stdout}");
}

#[test]
fn bad_flags_get_one_line_and_write_nothing() {
    let cases: &[(&[&str], &str)] = &[
        (&["--no-such-flag"], "unexpected argument"),
        (&["--listen-client-urls", "http//nonsense"], "--listen-client-urls"),
        (&["--initial-cluster", "other=http://localhost:2380"], "couldn't find local name \"default\""),
        (&["--initial-cluster-state", "sideways"], "sideways"),
        (&["--heartbeat-interval", "500"], "--election-timeout"),
        (&["--election-timeout", "50000"], "is too long, and should be set less than 50000ms"),
        (&["--initial-cluster", "default=http://localhost:2380,b=http://localhost:2380"], "has duplicate url"),
        (&["--listen-client-urls", "http://127.0.0.1:1"], "--advertise-client-urls is required"),
        // Serving in the clear what the operator meant to protect would be worse than not starting.
        (
            &["--cert-file", "/etc/server.crt"],
            "--cert-file: TLS is not supported yet; Phoenix serves http:// URLs only",
        ),
        (&["-peer-client-cert-auth"], "--peer-client-cert-auth: TLS is not supported yet"),
    ];
    type Variables<'a> = &'a [(&'a str, &'a str)];
    let with_env: &[(&[&str], Variables, &str)] = &[
        (&["--name", "b"], &[("ETCD_NAME", "a")], "conflicting environment variable \"ETCD_NAME\""),
        // Empty is unset, as in etcd: the flags' own error comes, not one about the variable.
        (&["--initial-cluster", "x=http://localhost:1"], &[("ETCD_INITIAL_CLUSTER_STATE", "")], "local name"),
        (&[], &[("ETCD_CLIENT_CERT_AUTH", "true")], "ETCD_CLIENT_CERT_AUTH: TLS is not supported yet"),
    ];
    let cases = cases.iter().map(|(args, expected)| (*args, &[][..], *expected)).chain(with_env.iter().copied());
    for (args, env, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = run_phoenix_with_env(args, dir.path(), env);
        let stderr = stderr_of(&output);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{args:?} wrote something");
    }
}

/// As etcd 3.4.23: a flag that cannot be parsed exits 2, a flag set that fails a check exits 1.
#[test]
fn flags_that_cannot_be_parsed_exit_2_as_in_etcd() {
    let dir = tempfile::tempdir().unwrap();
    for (args, code) in [
        (&["--no-such-flag"][..], 2),
        (&["--initial-cluster-state", "sideways"], 2),
        (&["--heartbeat-interval", "soon"], 2),
        (&["--initial-cluster", "other=http://localhost:2380"], 1),
    ] {
        assert_eq!(run_phoenix(args, dir.path()).status.code(), Some(code), "{args:?}");
    }
}

/// A member whose Raft core stops on a storage failure exits with the reason, instead of going on
/// answering clients it can no longer serve.
#[test]
fn a_member_whose_storage_fails_stops_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let (client, peer) = (format!("http://127.0.0.1:{}", ports[0]), format!("http://127.0.0.1:{}", ports[1]));
    let flags = lone_member_flags("lone", &client, &peer);
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let output = run_phoenix_with_env(&args, dir.path(), &[("PHOENIX_TEST_FAULTS", "failing-storage")]);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    // openraft reports the failure itself or, when its core notices first, the closed channel
    // to the state machine task that failed.
    assert!(stderr.lines().last().unwrap_or_default().starts_with("phoenix: Raft stopped: "), "{stderr}");
    assert!(stderr.contains("injected failure (PHOENIX_TEST_FAULTS=failing-storage)"), "{stderr}");
}

#[test]
fn go_style_single_dash_flags_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_phoenix(&["-initial-cluster", "x=http://localhost:1"], dir.path());
    assert!(stderr_of(&output).contains("couldn't find local name"), "{}", stderr_of(&output));
}

#[tokio::test]
async fn a_data_dir_of_another_member_is_refused() {
    let mut cluster = Cluster::start(1, TEST_TIMINGS).await;
    cluster.kill(0);
    let member = &cluster.members[0];
    let data_dir = member.data_dir.to_string_lossy().to_string();
    let ports = free_ports(2);
    let (client, peer) = (format!("http://127.0.0.1:{}", ports[0]), format!("http://127.0.0.1:{}", ports[1]));
    let mut args = lone_member_flags("m2", &client, &peer);
    args.extend(["--data-dir".to_string(), data_dir.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = std::fs::read(member.data_dir.join("phoenix.json")).unwrap();
    let output = run_phoenix(&args, cluster.dir());
    let stderr = stderr_of(&output);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("belongs to member m1") && stderr.contains(&data_dir), "{stderr}");
    assert!(stderr.contains("start it with --name m1"), "{stderr}");
    assert_eq!(std::fs::read(member.data_dir.join("phoenix.json")).unwrap(), before);
}

/// An `ETCD_*` variable that names no flag Phoenix takes is ignored with a warning, as etcd
/// warns of those it does not know.
#[tokio::test]
async fn an_unknown_etcd_variable_is_named_in_a_warning() {
    let cluster = Cluster::start_with_env(1, TEST_TIMINGS, &[("ETCD_AUTO_COMPACTION_RETENTION", "1h")]).await;
    let log = cluster.members[0].log_text();
    assert!(
        log.contains("unrecognized environment variable") && log.contains("ETCD_AUTO_COMPACTION_RETENTION"),
        "{log}"
    );
}

/// Limits of zero, and a negative quota, mean what they mean to etcd 3.4.23 (checked against it):
/// `--snapshot-count 0` is its default, `--quota-backend-bytes` below 0 disables the quota,
/// `--max-txn-ops 0` refuses every txn with an operation, `--max-request-bytes 0` every write.
#[tokio::test]
async fn zero_limits_and_a_negative_quota_are_read_as_etcd_reads_them() {
    let mut flags = vec!["--snapshot-count", "0", "--quota-backend-bytes=-1", "--max-txn-ops", "0"];
    flags.extend(TEST_TIMINGS);
    let cluster = Cluster::start(1, &flags).await;
    let mut client = cluster.client(0).await;
    client.put("k", "v", None).await.unwrap();
    let txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("k", "w", None)]);
    let refused = client.txn(txn).await.unwrap_err().to_string();
    assert!(refused.contains("etcdserver: too many operations in txn request"), "{refused}");
    assert!(cluster.members[0].log_text().contains("disabling backend quota"));

    let mut flags = vec!["--max-request-bytes", "0"];
    flags.extend(TEST_TIMINGS);
    let cluster = Cluster::start(1, &flags).await;
    let mut client = cluster.client(0).await;
    for refused in [client.put("k", "v", None).await.map(drop), client.delete("k", None).await.map(drop)] {
        let refused = refused.unwrap_err().to_string();
        assert!(refused.contains("etcdserver: request is too large"), "{refused}");
    }
}

/// etcd ignores --initial-cluster, its token and --initial-advertise-peer-urls on a restart:
/// operators refresh them after a member add. So does Phoenix, and it warns when the peer URLs
/// the cluster knows differ from the flags'.
#[tokio::test]
async fn a_restart_ignores_a_changed_initial_cluster_and_token() {
    let mut cluster = Cluster::start(1, TEST_TIMINGS).await;
    cluster.client(0).await.put("kept", "v", None).await.unwrap();
    cluster.kill(0);
    let old = cluster.members.remove(0);
    let moved = free_ports(1)[0];
    let initial = format!("m1=http://127.0.0.1:{moved},m9=http://127.0.0.1:1");
    let mut flags = vec!["--initial-cluster", &initial, "--initial-cluster-token", "refreshed"];
    flags.extend(TEST_TIMINGS);
    let i = cluster.spawn_member(old.name.clone(), old.client_port, moved, &flags);
    cluster.wait_ready(i).await;
    let read = cluster.client(i).await.get("kept", None).await.unwrap();
    assert_eq!(read.kvs()[0].value(), b"v");
    let members = cluster.client(i).await.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].peer_urls(), [old.peer_url()]);
    let log = cluster.members[i].log_text();
    assert!(log.contains("differ from --initial-advertise-peer-urls") && log.contains("member update"), "{log}");
}

/// A member whose data dir was wiped and that starts again with its first flags is refused, as
/// etcd refuses it: its cluster knows it ran. Its database emptied under its identity file is
/// refused too. The leader goes on serving.
#[tokio::test]
async fn a_member_that_lost_its_data_is_refused_at_start() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let wiped = (leader + 1) % 3;
    cluster.client(leader).await.put("before", "v", None).await.unwrap();
    cluster.kill(wiped);
    let data_dir = cluster.members[wiped].data_dir.clone();
    std::fs::remove_dir_all(data_dir.join("db")).unwrap();
    cluster.members[wiped].spawn_again();
    assert_eq!(cluster.members[wiped].wait_exit(support::READY_TIMEOUT), Some(1));
    let log = cluster.members[wiped].log_text();
    assert!(log.contains("has lost its Raft log"), "{log}");
    std::fs::remove_dir_all(&data_dir).unwrap();
    cluster.members[wiped].spawn_again();
    assert_eq!(cluster.members[wiped].wait_exit(support::READY_TIMEOUT), Some(1));
    let log = cluster.members[wiped].log_text();
    assert!(log.contains("has already been bootstrapped"), "{log}");
    assert!(!data_dir.exists(), "a refused member left a data dir behind");
    cluster.client(leader).await.put("after", "v", None).await.unwrap();
}

/// sled opens a database damaged part way as a shorter log and an older store; the data dir's
/// high-water mark (`highwater.json`) makes the member refuse it, and `disaster plan` report it,
/// instead of serving old data. Removing the mark starts the member with what is left.
#[tokio::test]
async fn a_member_whose_database_went_back_is_refused_at_start() {
    let mut cluster = Cluster::start(1, TEST_TIMINGS).await;
    let mut client = cluster.client(0).await;
    for i in 0..200 {
        client.put(format!("k{i:03}"), vec![b'v'; 200], None).await.unwrap();
    }
    let raft_index = client.status().await.unwrap().raft_index();
    assert_eq!(cluster.members[0].terminate(), Some(0));
    let data_dir = cluster.members[0].data_dir.clone();
    // A stopping member records its mark once more, so it holds everything written.
    let mark = std::fs::read_to_string(data_dir.join("highwater.json")).unwrap();
    let mark: serde_json::Value = serde_json::from_str(&mark).unwrap();
    assert!(mark["applied"].as_u64().unwrap() >= raft_index, "{mark} against raft index {raft_index}");

    // Bytes overwritten a quarter of the way into sled's file: it reads the log up to them.
    let db = data_dir.join("db").join("db");
    let quarter = std::fs::metadata(&db).unwrap().len() / 4;
    let mut file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(quarter)).unwrap();
    std::io::Write::write_all(&mut file, &[0xab; 4096]).unwrap();
    drop(file);

    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_phoenixctl"))
        .args(["disaster", "plan", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("has lost part of its database"), "{plan}");

    cluster.members[0].spawn_again();
    assert_eq!(cluster.members[0].wait_exit(support::READY_TIMEOUT), Some(1));
    let log = cluster.members[0].log_text();
    assert!(
        log.contains("has lost part of its database (a damaged or truncated file): its log ends at index"),
        "{log}"
    );
    assert!(log.contains("remove this member (etcdctl member remove"), "{log}");

    std::fs::remove_file(data_dir.join("highwater.json")).unwrap();
    cluster.restart(0).await;
    let left = cluster.client(0).await.get("k", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert!(left.count() < 200, "the damaged database still held every key: {}", left.count());
}

#[test]
fn a_directory_that_is_not_phoenix_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("default.phoenix")).unwrap();
    std::fs::write(dir.path().join("default.phoenix/notes.txt"), "mine").unwrap();
    let ports = free_ports(2);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let args = lone_member_flags("default", &client, &peer);
    let output = run_phoenix(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir.path());
    assert!(!output.status.success());
    assert!(stderr_of(&output).contains("holds no Phoenix data"), "{}", stderr_of(&output));
}

/// A data dir marked format 1 (earlier Phoenix; its records are converted as the unit tests in
/// src/kv show) is marked format 2 once its member has started on it; a format this Phoenix
/// does not know is refused, and the member exits saying so.
#[tokio::test]
async fn a_data_dir_of_format_1_is_converted_and_one_of_an_unknown_format_refused() {
    let mut cluster = Cluster::start(1, TEST_TIMINGS).await;
    cluster.client(0).await.put("k", "v", None).await.unwrap();
    assert_eq!(cluster.members[0].terminate(), Some(0));
    let meta = cluster.members[0].data_dir.join("phoenix.json");
    let mark = |format: &str| {
        let text = std::fs::read_to_string(&meta).unwrap();
        assert!(text.contains("\"format\": 2"), "{text}");
        std::fs::write(&meta, text.replace("\"format\": 2", &format!("\"format\": {format}"))).unwrap();
    };

    mark("99");
    cluster.members[0].spawn_again();
    assert!(matches!(cluster.members[0].wait_exit(support::READY_TIMEOUT), Some(code) if code != 0));
    let log = cluster.members[0].log_text();
    assert!(log.contains("has format 99, this Phoenix reads 2 (and converts 1)"), "{log}");

    std::fs::write(&meta, std::fs::read_to_string(&meta).unwrap().replace("\"format\": 99", "\"format\": 2")).unwrap();
    mark("1");
    cluster.restart(0).await;
    let got = cluster.client(0).await.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
    assert!(std::fs::read_to_string(&meta).unwrap().contains("\"format\": 2"));
}
