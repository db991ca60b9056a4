//! Quorum loss on real processes (kill -9): a member that lost its quorum says so and refuses
//! fast; the survivor is reset (etcd's --force-new-cluster, or `phoenixctl disaster`) and keeps
//! every write it holds, even one acknowledged as the leader died; `disaster plan` picks the
//! most advanced survivor; the dead members are refused when they come back with their old data;
//! cleaned hosts grow the cluster back (etcdctl member add, or --join).
//!
//! Each chaos scenario runs `PHOENIX_CHAOS_ROUNDS` rounds (1 by default), each on a new cluster.

mod support;

use std::collections::HashSet;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use support::{free_ports, http_get, poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const PHOENIXCTL: &str = env!("CARGO_BIN_EXE_phoenixctl");

/// How many rounds each chaos scenario runs.
fn rounds() -> usize {
    std::env::var("PHOENIX_CHAOS_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(1)
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// etcd's own client where it is installed (CI installs it), phoenixctl otherwise.
fn etcdctl() -> &'static str {
    let installed = Command::new("etcdctl").arg("version").output().is_ok_and(|o| o.status.success());
    if installed {
        "etcdctl"
    } else {
        eprintln!("etcdctl is not installed: using phoenixctl in its place");
        PHOENIXCTL
    }
}

/// Every key member `i` holds, read locally (serializable).
async fn keys_held(cluster: &Cluster, i: usize) -> Option<HashSet<String>> {
    let mut client = Client::connect([cluster.members[i].endpoint()], None).await.ok()?;
    let options = GetOptions::new().with_from_key().with_keys_only().with_serializable();
    let response = client.get("", Some(options)).await.ok()?;
    Some(response.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect())
}

fn assert_holds_all(held: &HashSet<String>, acknowledged: &[String], who: &str) {
    let lost: Vec<&String> = acknowledged.iter().filter(|k| !held.contains(*k)).collect();
    assert!(lost.is_empty(), "{who} lost acknowledged writes: {lost:?}");
}

/// Waits until member `i` votes and holds every one of `acknowledged`.
async fn wait_caught_up(cluster: &Cluster, i: usize, acknowledged: &[String]) {
    let what = format!("{} to vote and hold every acknowledged write", cluster.members[i].name);
    poll_until(READY_TIMEOUT, &what, || async {
        let mut client = Client::connect([cluster.members[i].endpoint()], None).await.ok()?;
        let voter = !client.status().await.ok()?.is_learner();
        let held = keys_held(cluster, i).await?;
        (voter && acknowledged.iter().all(|k| held.contains(k))).then_some(())
    })
    .await;
}

/// A cleaned host joins through `via` with Phoenix's --join, as a new member.
async fn join(cluster: &mut Cluster, name: &str, via: usize, acknowledged: &[String]) -> usize {
    let endpoint = cluster.members[via].endpoint();
    let ports = free_ports(2);
    let initial = format!("{name}=http://127.0.0.1:{}", ports[1]);
    let mut flags = vec!["--join", &endpoint, "--initial-cluster", &initial];
    flags.extend(TEST_TIMINGS);
    let index = cluster.spawn_member(name.to_string(), ports[0], ports[1], &flags);
    wait_caught_up(cluster, index, acknowledged).await;
    index
}

/// A cleaned host is added etcd's way: `etcdctl member add`, then started with the
/// ETCD_INITIAL_CLUSTER it printed and --initial-cluster-state existing.
async fn add_with_etcdctl(cluster: &mut Cluster, name: &str, via: usize, acknowledged: &[String]) -> usize {
    let ports = free_ports(2);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let endpoint = cluster.members[via].endpoint();
    let added = run(etcdctl(), &["--endpoints", &endpoint, "member", "add", name, "--peer-urls", &peer_url]);
    assert!(added.status.success(), "member add: {}", stderr(&added));
    let printed = stdout(&added);
    let initial = printed
        .lines()
        .find_map(|line| line.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {printed}"))
        .to_string();
    let mut flags = vec!["--initial-cluster", &initial, "--initial-cluster-state", "existing"];
    flags.extend(TEST_TIMINGS);
    let index = cluster.spawn_member(name.to_string(), ports[0], ports[1], &flags);
    wait_caught_up(cluster, index, acknowledged).await;
    index
}

/// Old members restarted with their old data are refused and stop, pointed to `clean`.
fn assert_refused_and_clean(cluster: &mut Cluster, old: &[usize]) {
    for &i in old {
        cluster.members[i].spawn_again();
    }
    // Together they are a quorum of the old configuration: clients writing to them from the
    // start must not be told a write took, as the reset cluster never sees it.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = old
        .iter()
        .map(|&i| {
            let (endpoint, stop) = (cluster.members[i].endpoint(), stop.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(writes_acknowledged_until(&endpoint, &stop))
            })
        })
        .collect();
    for &i in old {
        let member = &mut cluster.members[i];
        assert_eq!(member.wait_exit(READY_TIMEOUT), Some(1), "old member {} kept running", member.name);
        assert!(member.log_text().contains("phoenixctl clean --data-dir"), "{}", member.log_text());
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let acknowledged = writer.join().unwrap();
        assert!(acknowledged.is_empty(), "stale members acknowledged writes: {acknowledged:?}");
    }
    for &i in old {
        let dir = cluster.members[i].data_dir.to_string_lossy().into_owned();
        let cleaned = run(PHOENIXCTL, &["clean", "--data-dir", &dir]);
        assert!(cleaned.status.success(), "clean: {}", stderr(&cleaned));
    }
    // A cleaned host started again with its old flags is told to join as a new member.
    let member = &mut cluster.members[old[0]];
    member.spawn_again();
    assert_eq!(member.wait_exit(READY_TIMEOUT), Some(1), "{}", member.log_text());
    assert!(member.log_text().contains("was removed from this cluster, and its ID is never used again"));
    assert!(!member.data_dir.exists(), "a refused member left a data dir behind");
}

/// Puts keys through `endpoint` until `stop`, reconnecting while it does not answer; the keys
/// it acknowledged.
async fn writes_acknowledged_until(endpoint: &str, stop: &AtomicBool) -> Vec<String> {
    let options = ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_millis(200))
        .with_timeout(std::time::Duration::from_secs(5));
    let mut acknowledged = Vec::new();
    for attempt in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("stale/{attempt}");
        let put =
            async { Client::connect([endpoint], Some(options.clone())).await?.put(key.as_str(), "v", None).await };
        match put.await {
            Ok(_) => acknowledged.push(key),
            Err(_) => tokio::time::sleep(support::POLL_INTERVAL).await,
        }
    }
    acknowledged
}

/// Writes `n` keys `prefix/NNN` through `client`, each acknowledged.
async fn write_keys(client: &mut Client, prefix: &str, n: usize, acknowledged: &mut Vec<String>) {
    for i in 0..n {
        let key = format!("{prefix}/{i:03}");
        client.put(key.as_str(), "v", None).await.unwrap();
        acknowledged.push(key);
    }
}

/// The gRPC code and message of a refused request.
fn refusal<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>) -> (Code, String) {
    match result {
        Err(etcd_client::Error::GRpcStatus(status)) => (status.code(), status.message().to_string()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn grpc_health(endpoint: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string()).ok()?.connect().await.ok()?;
    let mut client = HealthClient::new(channel);
    let response = client.check(HealthCheckRequest { service: String::new() }).await.ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test]
async fn a_member_that_lost_its_quorum_says_so_refuses_fast_and_recovers_when_it_returns() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    // The leader is the harder survivor: openraft 0.9 keeps it leading with nobody to follow it.
    let survivor = cluster.leader().await;
    let endpoint = cluster.members[survivor].endpoint();
    let mut client = cluster.client(survivor).await;
    client.put("k", "v", None).await.unwrap();
    let dead: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
    for &i in &dead {
        cluster.kill(i);
    }

    // Status says there is no leader, that quorum is lost, who is missing and how to recover.
    let errors = poll_until(READY_TIMEOUT, "Status to report the lost quorum", || {
        let endpoint = endpoint.clone();
        async move {
            let status = Client::connect([endpoint], None).await.ok()?.status().await.ok()?;
            let lost = status.leader() == 0 && status.errors().iter().any(|e| e.contains("quorum lost"));
            lost.then(|| status.errors().join("\n"))
        }
    })
    .await;
    assert!(errors.starts_with("etcdserver: no leader\n"), "etcd lists a missing leader first: {errors}");
    for &i in &dead {
        assert!(errors.contains(&cluster.members[i].peer_url()), "{errors}");
    }
    let reset = format!("phoenixctl disaster --data-dir {}", cluster.members[survivor].data_dir.display());
    assert!(errors.contains(&reset), "{errors}");
    // Run while the member still runs, the reset is refused before it changes anything.
    let data_dir = cluster.members[survivor].data_dir.display().to_string();
    let early = run(PHOENIXCTL, &["disaster", "--data-dir", &data_dir]);
    let in_use = format!("data dir {data_dir} is in use by member {} (", cluster.members[survivor].name);
    assert!(!early.status.success(), "{}", stdout(&early));
    assert!(
        stderr(&early).contains(&in_use) && stderr(&early).contains("which is running: stop it first"),
        "{}",
        stderr(&early)
    );
    assert!(errors.contains(&format!("phoenixctl disaster plan --endpoints={endpoint}")), "{errors}");

    // So do etcd's /health, gRPC health and the log.
    let (code, body) = http_get(&endpoint, "/health").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(r#""health":"false""#) && body.contains("RAFT NO LEADER: quorum lost"), "{body}");
    poll_until(READY_TIMEOUT, "gRPC health NOT_SERVING", || async {
        (grpc_health(&endpoint).await? == ServingStatus::NotServing).then_some(())
    })
    .await;
    assert!(cluster.members[survivor].log_text().contains(&reset));

    // Writes and linearizable reads are refused at once with etcd's retryable error;
    // serializable reads are still served.
    let no_leader = (Code::Unavailable, "etcdserver: no leader".to_string());
    assert_eq!(refusal(client.put("k", "w", None).await), no_leader);
    assert_eq!(refusal(client.get("k", None).await), no_leader);
    let local = client.get("k", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(local.kvs()[0].value(), b"v");

    // One member comes back: the quorum is whole again, and the survivor says so.
    cluster.restart(dead[0]).await;
    poll_until(READY_TIMEOUT, "/health to be healthy again", || async {
        let (code, body) = http_get(&endpoint, "/health").await.ok()?;
        (code == 200 && body == r#"{"health":"true","reason":""}"#).then_some(())
    })
    .await;
    poll_until(READY_TIMEOUT, "gRPC health SERVING", || async {
        (grpc_health(&endpoint).await? == ServingStatus::Serving).then_some(())
    })
    .await;
    client.put("k", "w", None).await.unwrap();
    assert!(cluster.members[survivor].log_text().contains("quorum regained"));
}

#[tokio::test]
async fn the_survivor_of_a_lost_majority_is_reset_and_keeps_every_acknowledged_write() {
    for round in 1..=rounds() {
        eprintln!("round {round}");
        three_members_lose_two().await;
    }
}

async fn three_members_lose_two() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    let mut client = cluster.client(survivor).await;
    let mut acknowledged = Vec::new();
    write_keys(&mut client, "before", 50, &mut acknowledged).await;
    cluster.kill(follower);
    write_keys(&mut client, "after", 50, &mut acknowledged).await;
    cluster.kill(leader);

    // Quorum is lost: writes are refused with a retryable error.
    let (code, _) = refusal(client.put("lost-quorum", "v", None).await);
    assert_eq!(code, Code::Unavailable);

    // Reset the survivor, etcd's way: restart it with --force-new-cluster; move the revision on
    // so that watchers of the old cluster relist.
    let old_revision = client.get("before/000", Some(GetOptions::new().with_serializable())).await.unwrap();
    let old_revision = old_revision.header().unwrap().revision();
    assert_eq!(cluster.members[survivor].terminate(), Some(0));
    for flag in ["--force-new-cluster", "--bump-revision", "1000", "--mark-compacted"] {
        cluster.members[survivor].add_flag(flag);
    }
    cluster.restart(survivor).await;
    assert!(cluster.members[survivor].log_text().contains("reset into a one-member cluster"));
    let mut client = cluster.client(survivor).await;
    let options = WatchOptions::new().with_start_revision(old_revision);
    let mut events = client.watch("before/", Some(options)).await.unwrap();
    // As in etcd: the watch is created, then canceled as compacted.
    let mut compacted = events.message().await.unwrap().unwrap();
    if compacted.created() && !compacted.canceled() {
        compacted = events.message().await.unwrap().unwrap();
    }
    assert!(compacted.canceled() && compacted.compact_revision() >= old_revision + 1000, "{compacted:?}");
    assert_eq!(client.member_list().await.unwrap().members().len(), 1);
    assert_holds_all(&keys_held(&cluster, survivor).await.unwrap(), &acknowledged, "the reset survivor");
    write_keys(&mut client, "reset", 10, &mut acknowledged).await;
    let report = std::fs::read_to_string(cluster.members[survivor].data_dir.join("reset.json")).unwrap();
    assert!(report.contains("\"lost_entries\": 0"), "{report}");
    let revision = client.status().await.unwrap().header().unwrap().revision();
    assert!(revision > old_revision + 1000, "the revision did not move on: {revision}");
    // endpoint status shows the loss report.
    let status = client.status().await.unwrap();
    assert!(status.errors().iter().any(|e| e.contains("no acknowledged write known lost")), "{:?}", status.errors());
    // The two others were dead: the report says it could not ask them.
    let not_asked = [follower, leader].map(|i| format!("{} (", cluster.members[i].name));
    let said =
        status.errors().iter().any(|e| e.contains("could not be asked") && not_asked.iter().all(|n| e.contains(n)));
    assert!(said, "{:?}", status.errors());

    // The flag left in place is ignored: the reset happens once.
    assert_eq!(cluster.members[survivor].terminate(), Some(0));
    cluster.restart(survivor).await;
    assert!(cluster.members[survivor].log_text().contains("--force-new-cluster ignored"));

    // The dead members come back with their old data: refused, and the survivor is unaffected.
    assert_refused_and_clean(&mut cluster, &[follower, leader]);
    assert_holds_all(&keys_held(&cluster, survivor).await.unwrap(), &acknowledged, "the survivor");

    // The cleaned hosts grow the cluster back: etcd's way, then Phoenix's.
    let first = add_with_etcdctl(&mut cluster, "n4", survivor, &acknowledged).await;
    let second = join(&mut cluster, "n5", survivor, &acknowledged).await;
    let mut client = cluster.client(first).await;
    assert_eq!(client.member_list().await.unwrap().members().len(), 3);
    write_keys(&mut client, "grown", 10, &mut acknowledged).await;
    for i in [survivor, first, second] {
        wait_caught_up(&cluster, i, &acknowledged).await;
    }

    // etcd's trap: the survivor restarts with --force-new-cluster still set. It removes nobody.
    cluster.restart_gracefully(survivor).await;
    assert_eq!(cluster.client(survivor).await.member_list().await.unwrap().members().len(), 3);
    write_keys(&mut client, "after-restart", 10, &mut acknowledged).await;
    for i in [survivor, first, second] {
        wait_caught_up(&cluster, i, &acknowledged).await;
    }
}

#[tokio::test]
async fn a_write_acknowledged_as_the_leader_dies_survives_the_reset() {
    // Whether the survivor had heard of the last commits when the leader died is a race; rounds
    // go on (up to MORE_ROUNDS more) until one shows it had not, so the case is really covered.
    const MORE_ROUNDS: usize = 10;
    let mut kept_past_commit = Vec::new();
    for round in 1..=rounds() + MORE_ROUNDS {
        kept_past_commit.push(kill_the_leader_at_an_ack().await);
        eprintln!("round {round}: the survivor kept {} entries past its commit index", kept_past_commit[round - 1]);
        if round >= rounds() && kept_past_commit.iter().any(|&kept| kept > 0) {
            return;
        }
    }
    panic!("the survivor always knew every commit: the case was never hit {kept_past_commit:?}");
}

/// Clients write as fast as they can to the leader of a 3-member cluster that lost a follower,
/// so the survivor must hold every acknowledged write; the leader is killed the moment one is
/// acknowledged. Returns how many entries past its commit index the reset kept.
async fn kill_the_leader_at_an_ack() -> u64 {
    const WRITERS: usize = 8;
    const ACKS_BEFORE_THE_KILL: usize = 300;
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    cluster.kill((leader + 2) % 3);
    let leader_pid = cluster.members[leader].pid().unwrap().to_string();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut client = cluster.client(leader).await;
        let (acknowledged, killed, pid) = (acknowledged.clone(), killed.clone(), leader_pid.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{writer}/{i:05}");
                if client.put(key.as_str(), "v", None).await.is_err() {
                    return;
                }
                let count = {
                    let mut acknowledged = acknowledged.lock().unwrap();
                    acknowledged.push(key);
                    acknowledged.len()
                };
                if count >= ACKS_BEFORE_THE_KILL && !killed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let status = Command::new("kill").args(["-KILL", &pid]).status().expect("run kill");
                    assert!(status.success());
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    cluster.kill(leader);
    let acknowledged = acknowledged.lock().unwrap().clone();

    assert_eq!(cluster.members[survivor].terminate(), Some(0));
    cluster.members[survivor].add_flag("--force-new-cluster");
    cluster.restart(survivor).await;
    assert_holds_all(&keys_held(&cluster, survivor).await.unwrap(), &acknowledged, "the reset survivor");
    let report = std::fs::read_to_string(cluster.members[survivor].data_dir.join("reset.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["lost_entries"], 0, "{report}");
    report["kept_past_commit"].as_u64().unwrap()
}

#[tokio::test]
async fn five_members_lose_three_and_the_plan_picks_the_more_advanced_survivor() {
    for round in 1..=rounds() {
        eprintln!("round {round}");
        five_members_lose_three().await;
    }
}

async fn five_members_lose_three() {
    let mut cluster = Cluster::start(5, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let ahead = (leader + 1) % 5;
    let behind = (leader + 2) % 5;
    let dead = [leader, (leader + 3) % 5, (leader + 4) % 5];
    let mut client = cluster.client(ahead).await;
    let mut acknowledged = Vec::new();
    write_keys(&mut client, "all", 20, &mut acknowledged).await;
    // With one more member down, every commit needs the survivor ahead: it holds every
    // acknowledged write, and the one behind misses the last ones.
    cluster.kill(behind);
    cluster.kill(dead[1]);
    write_keys(&mut client, "most", 30, &mut acknowledged).await;
    cluster.kill(dead[0]);
    cluster.kill(dead[2]);
    // The member that fell behind comes back: two survivors, no quorum.
    cluster.members[behind].spawn_again();

    // The plan, asked of the one behind only, finds the other and recommends it.
    let (ahead_name, behind_name) = (cluster.members[ahead].name.clone(), cluster.members[behind].name.clone());
    let endpoints = format!("--endpoints={}", cluster.members[behind].endpoint());
    let recommendation = format!("Recommended survivor: {ahead_name} ");
    let plan = poll_until(READY_TIMEOUT, "disaster plan to recommend the survivor ahead", || async {
        let plan = run(PHOENIXCTL, &["disaster", "plan", &endpoints]);
        stdout(&plan).contains(&recommendation).then_some(plan)
    })
    .await;
    assert!(plan.status.success(), "{}", stderr(&plan));
    let ahead_dir = cluster.members[ahead].data_dir.to_string_lossy().into_owned();
    assert!(stdout(&plan).contains(&format!("phoenixctl disaster --data-dir {ahead_dir}")), "{}", stdout(&plan));

    // Resetting the one behind is refused while the one ahead answers; a plan from its stopped
    // data dir says the same.
    assert_eq!(cluster.members[behind].terminate(), Some(0));
    let behind_dir = cluster.members[behind].data_dir.to_string_lossy().into_owned();
    let refused = run(PHOENIXCTL, &["disaster", "--data-dir", &behind_dir]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(stderr(&refused).contains(&format!("member {ahead_name} ")), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("holds a more advanced log"), "{}", stderr(&refused));
    let offline_plan = run(PHOENIXCTL, &["disaster", "plan", "--data-dir", &behind_dir]);
    assert!(stdout(&offline_plan).contains(&recommendation), "{}", stdout(&offline_plan));
    assert!(stdout(&offline_plan).contains(&behind_name), "{}", stdout(&offline_plan));
    assert!(stdout(&offline_plan).contains("3 member(s) gave no answer"), "{}", stdout(&offline_plan));

    // Reset the one ahead offline, once no old member runs, and start it with its usual flags.
    assert_eq!(cluster.members[ahead].terminate(), Some(0));
    cluster.members[behind].spawn_again();
    let behind_endpoint = cluster.members[behind].endpoint();
    poll_until(READY_TIMEOUT, "the member behind to serve", || async {
        http_get(&behind_endpoint, "/health").await.ok().map(|_| ())
    })
    .await;
    let refused = run(PHOENIXCTL, &["disaster", "--data-dir", &ahead_dir]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(stderr(&refused).contains(&format!("member {behind_name} (")), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("of the old cluster is still running: stop it"), "{}", stderr(&refused));
    assert_eq!(cluster.members[behind].terminate(), Some(0));
    let reset = run(PHOENIXCTL, &["disaster", "--data-dir", &ahead_dir]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert!(stdout(&reset).contains("no acknowledged write known lost"), "{}", stdout(&reset));
    // Stopped, the others could not say whether they hold more: the output says how to undo it.
    assert!(
        stdout(&reset).contains("Not asked: ") && stdout(&reset).contains("to undo the reset"),
        "{}",
        stdout(&reset)
    );
    cluster.restart(ahead).await;
    assert_holds_all(&keys_held(&cluster, ahead).await.unwrap(), &acknowledged, "the reset survivor");

    // Every other old member is refused until cleaned; the cluster grows back to five.
    let mut old = dead.to_vec();
    old.push(behind);
    assert_refused_and_clean(&mut cluster, &old);
    let mut client = cluster.client(ahead).await;
    write_keys(&mut client, "reset", 10, &mut acknowledged).await;
    let mut members = vec![ahead];
    for name in ["n6", "n7", "n8", "n9"] {
        members.push(join(&mut cluster, name, ahead, &acknowledged).await);
    }
    assert_eq!(client.member_list().await.unwrap().members().len(), 5);
    write_keys(&mut client, "grown", 10, &mut acknowledged).await;
    for i in members {
        wait_caught_up(&cluster, i, &acknowledged).await;
    }
}

/// A learner never campaigns, so it would go on naming a dead leader: it counts the leader only
/// while it hears from it, says there is none once the voters' quorum is gone, and so lets the
/// plan go ahead instead of claiming the quorum is not lost.
#[tokio::test]
async fn a_learner_whose_voters_lost_their_quorum_knows_no_leader() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    let ports = free_ports(2);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let learner = etcd_client::MemberAddOptions::new().with_is_learner();
    client.member_add([peer.clone()], Some(learner)).await.unwrap();
    let mut initial = cluster.initial_cluster(&[0, 1, 2]);
    initial.push_str(&format!(",m4={peer}"));
    let mut flags = vec!["--initial-cluster", &initial, "--initial-cluster-state", "existing"];
    flags.extend(TEST_TIMINGS);
    let learner = cluster.spawn_member("m4".to_string(), ports[0], ports[1], &flags);
    let endpoint = cluster.members[learner].endpoint();
    let health = |want: u16| {
        let endpoint = endpoint.clone();
        async move { (http_get(&endpoint, "/health").await.ok()?.0 == want).then_some(()) }
    };
    poll_until(READY_TIMEOUT, "the learner to know its leader", || health(200)).await;

    cluster.kill(leader);
    cluster.kill((leader + 1) % 3);
    poll_until(READY_TIMEOUT, "the learner to know no leader", || health(503)).await;
    // The surviving voter forgets the leader when it campaigns, an election timeout later.
    let endpoints = format!("--endpoints={endpoint}");
    poll_until(READY_TIMEOUT, "the plan to recommend a survivor", || async {
        stdout(&run(PHOENIXCTL, &["disaster", "plan", &endpoints])).contains("Recommended survivor: ").then_some(())
    })
    .await;
}

/// A member of the old configuration that runs but answers with an error instead of its report
/// might be ahead or have a leader: the reset is refused until it stops, and the plan says it
/// gave no report (and that a dead one gave no answer).
#[tokio::test]
async fn a_member_that_runs_but_gives_no_report_holds_a_reset_back() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut client = cluster.client(0).await;
    write_keys(&mut client, "k", 5, &mut Vec::new()).await;
    cluster.kill(2);
    cluster.members[2].add_env("PHOENIX_TEST_FAULTS", "failing-reports");
    cluster.restart(2).await;
    cluster.kill(0);
    cluster.kill(1);
    let (dead, failing) = (cluster.members[1].name.clone(), cluster.members[2].name.clone());
    let dir = cluster.members[0].data_dir.display().to_string();

    let refused = run(PHOENIXCTL, &["disaster", "--data-dir", &dir]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let said = stderr(&refused);
    assert!(said.contains(&format!("member {failing} (")) && said.contains(") gave no report ("), "{said}");
    assert!(said.contains("injected failure (PHOENIX_TEST_FAULTS=failing-reports)"), "{said}");
    assert!(said.contains("a reset could lose writes or split the cluster") && said.contains("--force"), "{said}");

    let plan = run(PHOENIXCTL, &["disaster", "plan", "--data-dir", &dir]);
    assert!(stdout(&plan).contains(&format!("no report: member {failing} (")), "{}", stdout(&plan));
    assert!(stdout(&plan).contains(&format!("no answer: member {dead} (")), "{}", stdout(&plan));
    assert!(!stdout(&plan).contains("Recommended survivor"), "{}", stdout(&plan));
    assert!(stderr(&plan).contains("so no survivor is recommended"), "{}", stderr(&plan));

    cluster.kill(2);
    let reset = run(PHOENIXCTL, &["disaster", "--data-dir", &dir]);
    assert!(reset.status.success(), "{}", stderr(&reset));
}

#[tokio::test]
async fn a_stopped_member_that_holds_its_port_holds_a_reset_back() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut client = cluster.client(0).await;
    write_keys(&mut client, "k", 5, &mut Vec::new()).await;
    // Frozen, it answers nothing, and it may resume (with the most advanced log, for all a reset
    // could tell).
    cluster.members[2].freeze();
    cluster.kill(1);
    cluster.kill(0);
    let dir = cluster.members[0].data_dir.display().to_string();

    let refused = run(PHOENIXCTL, &["disaster", "--data-dir", &dir]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let said = stderr(&refused);
    let name = &cluster.members[2].name;
    assert!(
        said.contains(&format!("member {name} (")) && said.contains("took the connection but gave no answer"),
        "{said}"
    );
    let plan = run(PHOENIXCTL, &["disaster", "plan", "--data-dir", &dir]);
    assert!(stdout(&plan).contains(&format!("no report: member {name} (")), "{}", stdout(&plan));

    cluster.kill(2);
    let reset = run(PHOENIXCTL, &["disaster", "--data-dir", &dir]);
    assert!(reset.status.success(), "{}", stderr(&reset));
}

#[tokio::test]
async fn a_survivor_reset_offline_can_start_at_a_new_address() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    let mut client = cluster.client(survivor).await;
    let mut acknowledged = Vec::new();
    write_keys(&mut client, "k", 20, &mut acknowledged).await;
    for i in (0..3).filter(|&i| i != survivor) {
        cluster.kill(i);
    }
    assert_eq!(cluster.members[survivor].terminate(), Some(0));

    // The survivor's disk moves to a host with other addresses: reset it there.
    let ports = free_ports(2);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let dir = cluster.members[survivor].data_dir.to_string_lossy().into_owned();
    // Not while a snapshot install it was receiving is half done: its store may have lost the
    // membership that says whom to ask.
    let snap_dir = cluster.members[survivor].data_dir.join("snap");
    std::fs::create_dir_all(&snap_dir).unwrap();
    let loading = snap_dir.join("LOADING");
    std::fs::write(&loading, "x.snap").unwrap();
    let half_loaded = run(PHOENIXCTL, &["disaster", "--data-dir", &dir]);
    assert_eq!(half_loaded.status.code(), Some(1));
    assert!(
        stderr(&half_loaded).contains("a snapshot install from the leader was interrupted"),
        "{}",
        stderr(&half_loaded)
    );
    std::fs::remove_file(&loading).unwrap();
    // Fenced off (as by a reset cluster of the wrong survivor), it is refused unless --force.
    let fenced = cluster.members[survivor].data_dir.join("FENCED");
    std::fs::write(&fenced, "member x was removed from cluster y").unwrap();
    let refused = run(PHOENIXCTL, &["disaster", "--data-dir", &dir]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains(&format!("disaster --force --data-dir {dir}")), "{}", stderr(&refused));
    let misnamed = run(PHOENIXCTL, &["disaster", "--force", "--data-dir", &dir, "--name", "a=b"]);
    assert!(!misnamed.status.success() && stderr(&misnamed).contains("a member name"), "{}", stderr(&misnamed));
    let args = ["disaster", "--force", "--data-dir", &dir, "--initial-advertise-peer-urls", &peer_url];
    let reset = run(PHOENIXCTL, &args);
    assert!(reset.status.success(), "{}", stderr(&reset));
    // At a new address, it is told the flags to start with.
    let survivor_name = &cluster.members[survivor].name;
    let start_with = format!("--initial-cluster {survivor_name}={peer_url}");
    assert!(stdout(&reset).contains(&start_with), "{}", stdout(&reset));
    assert!(!fenced.exists(), "the reset member is a cluster of its own: no longer fenced");
    assert!(stdout(&reset).contains(&format!("one-member cluster at {peer_url}")), "{}", stdout(&reset));
    // A second reset is refused: members added since would be removed.
    let again = run(PHOENIXCTL, &["disaster", "--data-dir", &dir]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("was reset already"), "{}", stderr(&again));

    // It starts with flags that name only its new address, and the cluster grows from there.
    let name = cluster.members[survivor].name.clone();
    let initial = format!("{name}={peer_url}");
    let mut flags = vec!["--initial-cluster", initial.as_str()];
    flags.extend(TEST_TIMINGS);
    let moved = cluster.spawn_member(name, ports[0], ports[1], &flags);
    cluster.wait_ready(moved).await;
    assert_holds_all(&keys_held(&cluster, moved).await.unwrap(), &acknowledged, "the moved survivor");
    let members = cluster.client(moved).await.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].peer_urls(), std::slice::from_ref(&peer_url));
    let joined = join(&mut cluster, "n4", moved, &acknowledged).await;
    wait_caught_up(&cluster, joined, &acknowledged).await;
}

#[tokio::test]
async fn a_cluster_whose_members_all_died_is_rebuilt_from_their_disks_on_new_hosts() {
    let mut old = Cluster::start(3, TEST_TIMINGS).await;
    let leader = old.leader().await;
    let mut client = old.client(leader).await;
    let mut acknowledged = Vec::new();
    write_keys(&mut client, "early", 20, &mut acknowledged).await;
    let behind = (leader + 1) % 3;
    old.kill(behind);
    write_keys(&mut client, "late", 20, &mut acknowledged).await;
    for i in 0..3 {
        old.kill(i);
    }

    // Every disk moves to a new host, with a new path and new addresses.
    let mut new = Cluster::empty();
    let hosts: Vec<String> = (1..=3).map(|i| format!("host{i}")).collect();
    let disks: Vec<String> = (0..3)
        .map(|i| {
            let disk = new.data_dir_of(&hosts[i]);
            std::fs::rename(&old.members[i].data_dir, &disk).unwrap();
            disk.to_string_lossy().into_owned()
        })
        .collect();

    // 1. The plan reads the disks and picks the most advanced.
    let mut args = vec!["disaster", "plan"];
    for disk in &disks {
        args.extend(["--data-dir", disk.as_str()]);
    }
    let plan = run(PHOENIXCTL, &args);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let advice = stdout(&plan);
    let chosen = (0..3)
        .find(|&i| advice.contains(&format!("phoenixctl disaster --data-dir {}`", disks[i])))
        .unwrap_or_else(|| panic!("no disk recommended: {advice}"));
    assert_ne!(chosen, behind, "the disk that missed the last writes was chosen: {advice}");

    // 2. It is reset into a one-member cluster at its new host's address, under the host's name.
    let ports = free_ports(2);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let name = hosts[chosen].as_str();
    let reset_args =
        ["disaster", "--data-dir", &disks[chosen], "--name", name, "--initial-advertise-peer-urls", &peer_url];
    let reset = run(PHOENIXCTL, &reset_args);
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert!(stdout(&reset).contains("no acknowledged write known lost"), "{}", stdout(&reset));
    // Stopped, the others could not say whether they hold more: the output says how to undo it.
    assert!(
        stdout(&reset).contains("Not asked: ") && stdout(&reset).contains("to undo the reset"),
        "{}",
        stdout(&reset)
    );
    let initial = format!("{name}={peer_url}");
    let mut flags = vec!["--initial-cluster", initial.as_str()];
    flags.extend(TEST_TIMINGS);
    let first = new.spawn_member(name.to_string(), ports[0], ports[1], &flags);
    new.wait_ready(first).await;
    assert_holds_all(&keys_held(&new, first).await.unwrap(), &acknowledged, "the rebuilt cluster");

    // 3. The other disks are cleaned and their hosts join as new members.
    for i in (0..3).filter(|&i| i != chosen) {
        let cleaned = run(PHOENIXCTL, &["clean", "--data-dir", &disks[i]]);
        assert!(cleaned.status.success(), "clean: {}", stderr(&cleaned));
        join(&mut new, &hosts[i], first, &acknowledged).await;
    }
    let mut client = new.client(first).await;
    assert_eq!(client.member_list().await.unwrap().members().len(), 3);
    write_keys(&mut client, "rebuilt", 10, &mut acknowledged).await;
    let mut hashes = HashSet::new();
    for i in 0..3 {
        wait_caught_up(&new, i, &acknowledged).await;
        hashes.insert(new.client(i).await.hash_kv(0).await.unwrap().hash());
    }
    assert_eq!(hashes.len(), 1, "the members hold different data");
}
