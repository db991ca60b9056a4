//! Membership on real clusters: adding learners and voters, promotion, removal (of the leader
//! too), joining with --initial-cluster-state existing and with --join, and fencing off
//! removed members and their data.

mod support;

use std::time::Duration;

use etcd_client::{Client, GetOptions, MemberAddOptions};
use support::{free_ports, poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};
use tonic::Code;

fn status_of(err: etcd_client::Error) -> (Code, String) {
    match err {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// How long a new member may take to catch up: 100,000 keys through a snapshot, on two cores
/// shared with the other tests' clusters.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(180);

/// Polls until member `i` holds `count` keys under `prefix` (a serializable, local read).
async fn holds(cluster: &Cluster, i: usize, prefix: &str, count: i64) {
    let endpoint = cluster.members[i].endpoint();
    poll_until(CATCH_UP_TIMEOUT, &format!("{} to hold {count} keys", cluster.members[i].name), || {
        let endpoint = endpoint.clone();
        async move {
            let mut c = Client::connect([endpoint], None).await.ok()?;
            let options = GetOptions::new().with_prefix().with_count_only().with_serializable();
            (c.get(prefix, Some(options)).await.ok()?.count() == count).then_some(())
        }
    })
    .await;
}

/// Writes `count` keys in txns of 100 puts, eight txns at a time.
async fn write_keys(client: &mut Client, prefix: &str, count: usize) {
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (mut client, prefix) = (client.clone(), prefix.to_string());
            tokio::spawn(async move {
                for start in (writer * 100..count).step_by(800) {
                    let ops: Vec<etcd_client::TxnOp> = (start..(start + 100).min(count))
                        .map(|i| etcd_client::TxnOp::put(format!("{prefix}{i:06}"), "v", None))
                        .collect();
                    client.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

async fn is_learner(client: &mut Client, id: u64) -> Option<bool> {
    let members = client.member_list().await.ok()?;
    members.members().iter().find(|m| m.id() == id).map(|m| m.is_learner())
}

/// Waits for member `i` (ID `id`) to stop by itself, fenced off as removed.
fn stops_fenced_off(cluster: &mut Cluster, i: usize, id: u64) {
    assert_eq!(cluster.members[i].wait_exit(READY_TIMEOUT), Some(1), "removed member {id:x} kept running");
    let log = cluster.members[i].log_text();
    assert!(log.contains(&format!("member {id:x} was removed")), "{log}");
}

/// Starts a new member that was added with `member add`, etcd's way.
fn start_added_member(cluster: &mut Cluster, name: &str, ports: &[u16]) -> usize {
    let mut initial = cluster.initial_cluster(&(0..cluster.members.len()).collect::<Vec<_>>());
    initial.push_str(&format!(",{name}=http://127.0.0.1:{}", ports[1]));
    let mut flags = vec!["--initial-cluster", &initial, "--initial-cluster-state", "existing"];
    flags.extend(TEST_TIMINGS);
    cluster.spawn_member(name.to_string(), ports[0], ports[1], &flags)
}

#[tokio::test]
async fn a_learner_catches_up_from_a_snapshot_and_is_promoted() {
    let mut flags = TEST_TIMINGS.to_vec();
    flags.extend(["--snapshot-count", "50"]);
    let mut cluster = Cluster::start(3, &flags).await;
    let mut c = Client::connect(cluster.endpoints(), None).await.unwrap();
    write_keys(&mut c, "big/", 100_000).await;

    let ports = free_ports(2);
    let added =
        c.member_add([format!("http://127.0.0.1:{}", ports[1])], Some(MemberAddOptions::new().with_is_learner()));
    let added = added.await.unwrap();
    let id = added.member().unwrap().id();
    assert!(added.member().unwrap().is_learner());
    poll_until(READY_TIMEOUT, "every member to list the learner", || {
        let mut c = c.clone();
        async move { (c.member_list().await.ok()?.members().len() == 4).then_some(()) }
    })
    .await;
    let early = c.member_promote(id).await.unwrap_err();
    assert_eq!(
        status_of(early),
        (Code::FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader".into())
    );

    let learner = start_added_member(&mut cluster, "m4", &ports);
    let not_for_learner = not_for_learner();
    // From its first answer, before the snapshot brings it the membership: it learned that it
    // is a learner when it joined, as etcd's member does.
    let mut on_learner = answering(cluster.members[learner].endpoint()).await;
    assert_eq!(status_of(on_learner.put("k", "v", None).await.unwrap_err()), not_for_learner);
    holds(&cluster, learner, "big/", 100_000).await;
    assert!(cluster.members[learner].log_text().contains("installed snapshot"), "caught up without a snapshot");
    assert_eq!(status_of(on_learner.put("k", "v", None).await.unwrap_err()), not_for_learner);
    assert_eq!(status_of(on_learner.get("k", None).await.unwrap_err()), not_for_learner);
    assert_eq!(status_of(on_learner.member_list().await.unwrap_err()), not_for_learner);
    assert_eq!(status_of(on_learner.lease_grant(10, None).await.unwrap_err()), not_for_learner);
    assert_eq!(status_of(on_learner.hash_kv(0).await.unwrap_err()), not_for_learner);
    assert_eq!(status_of(on_learner.watch("k", None).await.unwrap_err()), not_for_learner);
    let serializable = Some(GetOptions::new().with_serializable());
    let read_only = etcd_client::Txn::new().and_then([etcd_client::TxnOp::get("k", serializable)]);
    assert_eq!(status_of(on_learner.txn(read_only).await.unwrap_err()), not_for_learner);
    let invalid = on_learner.put("", "v", None).await.unwrap_err();
    assert_eq!(status_of(invalid), not_for_learner, "refused before the request is checked, as in etcd");
    let local = on_learner.get("big/000000", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(local.kvs().len(), 1, "a learner serves serializable reads");
    assert!(on_learner.status().await.unwrap().is_learner(), "a learner serves Status");
    // phoenixctl, as etcdctl, retries a refused read on another endpoint. Either endpoint may
    // be connected to first, so several runs.
    let endpoints = format!("--endpoints={},{}", cluster.members[learner].endpoint(), cluster.members[0].endpoint());
    for _ in 0..5 {
        let listed = std::process::Command::new(env!("CARGO_BIN_EXE_phoenixctl"))
            .args([endpoints.as_str(), "member", "list"])
            .output()
            .unwrap();
        assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    }
    poll_until(READY_TIMEOUT, "the learner's promotion", || {
        let mut c = c.clone();
        async move { c.member_promote(id).await.ok() }
    })
    .await;
    assert_eq!(is_learner(&mut c, id).await, Some(false));
    let again = c.member_promote(id).await.unwrap_err();
    assert_eq!(status_of(again), (Code::FailedPrecondition, "etcdserver: can only promote a learner member".into()));
}

/// A learner that restarts before the leader has reached it (so before any membership names
/// it) still knows it is a learner: its data dir recorded how it joined.
#[tokio::test]
async fn a_learner_restarted_before_the_leader_reached_it_is_still_a_learner() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut c = Client::connect(cluster.endpoints(), None).await.unwrap();
    // It advertises a peer URL nothing listens on, and listens on another (the last of a
    // repeated flag counts, as in etcd): the leader never reaches it.
    let ports = free_ports(3);
    let unreachable = format!("http://127.0.0.1:{}", ports[1]);
    let listened = format!("http://127.0.0.1:{}", ports[2]);
    let added = c.member_add([unreachable.as_str()], Some(MemberAddOptions::new().with_is_learner())).await;
    assert!(added.unwrap().member().unwrap().is_learner());
    let mut initial = cluster.initial_cluster(&[0, 1, 2]);
    initial.push_str(&format!(",m4={unreachable}"));
    let mut flags = vec!["--initial-cluster", &initial, "--initial-cluster-state", "existing"];
    flags.extend(["--listen-peer-urls", &listened]);
    flags.extend(TEST_TIMINGS);
    let learner = cluster.spawn_member("m4".to_string(), ports[0], ports[1], &flags);
    answers_as_learner(cluster.members[learner].endpoint(), "first start").await;
    cluster.members[learner].spawn_again();
    answers_as_learner(cluster.members[learner].endpoint(), "restart").await;
}

/// A client of the member at `endpoint` once it answers Status (as a learner does).
async fn answering(endpoint: String) -> Client {
    poll_until(READY_TIMEOUT, "the member to answer", || {
        let endpoint = endpoint.clone();
        async move {
            let mut client = Client::connect([endpoint], None).await.ok()?;
            client.status().await.ok().map(|_| client)
        }
    })
    .await
}

/// What a learner answers to what only voters serve. As etcd 3.4: Unavailable, so that clients
/// go on to another member.
fn not_for_learner() -> (Code, String) {
    (Code::Unavailable, "etcdserver: rpc not supported for learner".to_string())
}

/// Waits for the member at `endpoint` to answer, then checks that it answers as a learner.
async fn answers_as_learner(endpoint: String, when: &str) {
    let mut client = answering(endpoint).await;
    assert_eq!(status_of(client.put("k", "v", None).await.unwrap_err()), not_for_learner(), "{when}");
    assert!(client.status().await.unwrap().is_learner(), "{when}");
}

#[tokio::test]
async fn membership_errors_are_etcds() {
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let mut c = cluster.client(0).await;
    let taken = c.member_add([cluster.members[0].peer_url()], None).await.unwrap_err();
    assert_eq!(status_of(taken), (Code::FailedPrecondition, "etcdserver: Peer URLs already exists".into()));
    let missing = (Code::NotFound, "etcdserver: member not found".to_string());
    assert_eq!(status_of(c.member_remove(42).await.unwrap_err()), missing);
    assert_eq!(status_of(c.member_promote(42).await.unwrap_err()), missing);
    assert_eq!(status_of(c.member_update(42, vec!["http://127.0.0.1:1".to_string()]).await.unwrap_err()), missing);
    let learner = MemberAddOptions::new().with_is_learner();
    c.member_add(["http://127.0.0.1:1"], Some(learner.clone())).await.unwrap();
    let second = c.member_add(["http://127.0.0.1:2"], Some(learner)).await.unwrap_err();
    assert_eq!(status_of(second), (Code::FailedPrecondition, "etcdserver: too many learner members in cluster".into()));
    let bad_urls = (Code::InvalidArgument, "etcdserver: given member URLs are invalid".to_string());
    assert_eq!(status_of(c.member_add(["http://127.0.0.1:3/path"], None).await.unwrap_err()), bad_urls);
    assert_eq!(status_of(c.member_add(["http://127.0.0.1"], None).await.unwrap_err()), bad_urls);
    // A default port that is written out is a port, and stays written out, as in etcd.
    let added = c.member_add(["http://localhost:80"], None).await.unwrap();
    assert_eq!(added.member().unwrap().peer_urls(), ["http://localhost:80"]);
    // etcd checks that a member has caught up before that it is a learner.
    let not_ready = c.member_promote(added.member().unwrap().id()).await.unwrap_err();
    assert_eq!(
        status_of(not_ready),
        (Code::FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader".into())
    );
    let me = c.status().await.unwrap().header().unwrap().member_id();
    let alone = c.member_remove(me).await.unwrap_err();
    assert_eq!(
        status_of(alone),
        (Code::FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members".into())
    );
}

/// etcd's `--strict-reconfig-check`: a removal that would leave fewer connected voters than a
/// quorum is refused as an unhealthy cluster.
#[tokio::test]
async fn a_removal_that_would_leave_too_few_connected_voters_is_refused() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    // Started, in etcd's sense: it has published its name (else the refusal would be for that).
    let c = cluster.client(0).await;
    poll_until(READY_TIMEOUT, "every member to publish its name", || {
        let mut c = c.clone();
        async move { c.member_list().await.ok()?.members().iter().all(|m| !m.name().is_empty()).then_some(()) }
    })
    .await;
    cluster.kill(2);
    // Restarted, the other two have never heard from member 2.
    cluster.kill(0);
    cluster.kill(1);
    cluster.members[0].spawn_again();
    cluster.members[1].spawn_again();
    cluster.wait_ready(0).await;
    cluster.wait_ready(1).await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let other = cluster.client(1 - leader).await.status().await.unwrap().header().unwrap().member_id();

    let refused = c.member_remove(other).await.unwrap_err();
    assert_eq!(status_of(refused), (Code::Unavailable, "etcdserver: unhealthy cluster".into()));
    assert_eq!(c.member_list().await.unwrap().members().len(), 3);
    c.put("still", "writable", None).await.unwrap();
}

/// Membership changes that arrive together are checked one after the other: of two adds of one
/// peer URL at the same moment, one is refused as etcd refuses it, and the URL is listed once.
#[tokio::test]
async fn concurrent_adds_of_one_peer_url_add_it_once() {
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let c = cluster.client(0).await;
    for port in 1..=5 {
        let url = format!("http://127.0.0.1:{port}");
        let (mut a, mut b) = (c.clone(), c.clone());
        let (first, second) = tokio::join!(a.member_add([url.clone()], None), b.member_add([url.clone()], None));
        let refused: Vec<_> = [first, second].into_iter().filter_map(Result::err).map(status_of).collect();
        let taken = (Code::FailedPrecondition, "etcdserver: Peer URLs already exists".to_string());
        assert_eq!(refused, [taken], "{url}");
        let members = c.clone().member_list().await.unwrap();
        let listed = members.members().iter().filter(|m| m.peer_urls().contains(&url)).count();
        assert_eq!(listed, 1, "{url}");
    }
}

/// An add's answer names and lists the member it added (`phoenix --join` takes its ID from it),
/// MemberList lists it right after, and a removal, right after too, finds it and no longer lists
/// it, under writes too. None of them reads openraft's metrics, which lag a change that has just
/// returned: once (in CI, after a disaster reset) a joiner whose answer was read from them ran
/// as member 0, and once a removal right after an add answered "member not found".
#[tokio::test]
async fn every_member_add_answer_names_the_member_it_added() {
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let mut c = cluster.client(0).await;
    // Writes keep openraft's loop busy, so a change is more often applied within its turn.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut c = c.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    c.put(format!("load/{w}/{i}"), "v", None).await.unwrap();
                }
            })
        })
        .collect();
    for port in 1..=50 {
        let url = format!("http://127.0.0.1:{port}");
        let added = c.member_add([url.clone()], None).await.unwrap();
        let member = added.member().unwrap_or_else(|| panic!("the answer to adding {url} names no member"));
        assert_ne!(member.id(), 0);
        assert_eq!(member.peer_urls(), std::slice::from_ref(&url));
        let listed: Vec<u64> = added.member_list().iter().map(|m| m.id()).collect();
        assert!(listed.contains(&member.id()), "{url} added as {:x} but not listed: {listed:x?}", member.id());
        let listed_after: Vec<u64> = c.member_list().await.unwrap().members().iter().map(|m| m.id()).collect();
        assert!(listed_after.contains(&member.id()), "{url} added but missing from MemberList: {listed_after:x?}");
        let removed = c.member_remove(member.id()).await.unwrap();
        assert!(removed.members().iter().all(|m| m.id() != member.id()), "{url} removed but still listed");
    }
    writers.iter().for_each(|w| w.abort());
}

#[tokio::test]
async fn grow_from_three_to_five_and_back_under_writes_removing_the_leader() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut c = Client::connect(cluster.endpoints(), None).await.unwrap();
    let mut writer_client = c.clone();
    let writer = tokio::spawn(async move {
        let mut written = 0;
        for i in 0..2_000 {
            if writer_client.put(format!("load/{i:05}"), "v", None).await.is_ok() {
                written += 1;
            }
        }
        written
    });

    // Two voters added etcd's way: member add, then start with --initial-cluster-state existing.
    let mut added = Vec::new();
    for name in ["m4", "m5"] {
        let ports = free_ports(2);
        let response = c.member_add([format!("http://127.0.0.1:{}", ports[1])], None).await.unwrap();
        let id = response.member().unwrap().id();
        assert!(!response.member().unwrap().is_learner(), "an added voter is listed as a voter");
        let index = start_added_member(&mut cluster, name, &ports);
        added.push((index, id));
    }
    for (index, _) in &added {
        // Listed as a voter at once (as etcd lists it); a Raft voter once it has caught up.
        let endpoint = cluster.members[*index].endpoint();
        poll_until(READY_TIMEOUT, "promotion of an added voter", || {
            let endpoint = endpoint.clone();
            async move { (!Client::connect([endpoint], None).await.ok()?.status().await.ok()?.is_learner()).then_some(()) }
        })
        .await;
    }
    let status = c.status().await.unwrap();
    assert_eq!(c.member_list().await.unwrap().members().len(), 5);

    // Back to three: remove the leader and one more.
    let leader_index = cluster.leader().await;
    let leader_id = status.leader();
    c.member_remove(leader_id).await.unwrap();
    assert_eq!(cluster.members[leader_index].wait_exit(READY_TIMEOUT), Some(1), "the removed leader kept running");
    assert!(cluster.members[leader_index].log_text().contains("was removed from the cluster"));
    let (other, other_id) = added.iter().copied().find(|(i, _)| *i != leader_index).unwrap();
    let mut survivor = cluster.client((0..5).find(|i| *i != leader_index && *i != other).unwrap()).await;
    poll_until(READY_TIMEOUT, "removing a second member", || {
        let mut c = survivor.clone();
        async move { c.member_remove(other_id).await.ok() }
    })
    .await;
    assert_eq!(cluster.members[other].wait_exit(READY_TIMEOUT), Some(1));
    assert_eq!(survivor.member_list().await.unwrap().members().len(), 3);

    let written = writer.await.unwrap();
    assert!(written > 0);
    survivor.put("after", "shrinking", None).await.unwrap();
    let all = survivor.get("load/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert!(all.count() >= written, "acknowledged writes lost: {} < {written}", all.count());
}

#[tokio::test]
async fn a_removed_member_is_fenced_off_and_refuses_to_start_again() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    let mut c = cluster.client(leader).await;
    let victim_id = cluster.client(victim).await.status().await.unwrap().header().unwrap().member_id();
    cluster.kill(victim);
    c.member_remove(victim_id).await.unwrap();
    c.put("after-removal", "v", None).await.unwrap();

    // Restarted with its old data: it refuses to start, or is refused by its old peers and stops.
    cluster.members[victim].spawn_again();
    assert_eq!(cluster.members[victim].wait_exit(READY_TIMEOUT), Some(1), "a removed member kept running");
    let log = cluster.members[victim].log_text();
    assert!(log.contains("phoenixctl clean --data-dir"), "no way forward in: {log}");
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 2);
    c.put("still", "fine", None).await.unwrap();

    // It wrote down that it was fenced off: from now on it refuses at once.
    cluster.members[victim].spawn_again();
    assert_eq!(cluster.members[victim].wait_exit(Duration::from_secs(10)), Some(1));
}

#[tokio::test]
async fn a_removal_cut_off_halfway_is_finished_by_the_leader_and_fences_the_member_off() {
    let faults = [("PHOENIX_TEST_FAULTS", "half-membership-changes")];
    let mut cluster = Cluster::start_with_env(3, TEST_TIMINGS, &faults).await;
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    let mut c = cluster.client(leader).await;
    let victim_id = cluster.client(victim).await.status().await.unwrap().header().unwrap().member_id();

    // The fault gives up on the change between openraft's two steps, as a caller's deadline can.
    let cut_off = c.member_remove(victim_id).await.unwrap_err();
    assert_eq!(status_of(cut_off), (Code::Unavailable, "etcdserver: request timed out".into()));
    poll_until(READY_TIMEOUT, "the removal to be finished", || {
        let mut c = c.clone();
        async move { (c.member_list().await.ok()?.members().len() == 2).then_some(()) }
    })
    .await;
    stops_fenced_off(&mut cluster, victim, victim_id);
    c.put("after-removal", "v", None).await.unwrap();
}

#[tokio::test]
async fn a_removed_learner_notices_its_removal_while_a_peer_is_frozen() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut c = Client::connect(cluster.endpoints(), None).await.unwrap();
    let ports = free_ports(2);
    let learner_url = format!("http://127.0.0.1:{}", ports[1]);
    let added = c.member_add([learner_url], Some(MemberAddOptions::new().with_is_learner())).await.unwrap();
    let learner_id = added.member().unwrap().id();
    let learner = start_added_member(&mut cluster, "m4", &ports);
    cluster.wait_ready(learner).await;

    // The learner asks its peers in ID order: the first one it asks answers nothing.
    let mut voters = Vec::new();
    for i in 0..3 {
        voters.push((cluster.client(i).await.status().await.unwrap().header().unwrap().member_id(), i));
    }
    voters.sort();
    cluster.members[voters[0].1].freeze();
    let mut c = cluster.client(voters[1].1).await;
    poll_until(READY_TIMEOUT, "the learner's removal", || {
        let mut c = c.clone();
        async move {
            match c.member_remove(learner_id).await.map_err(status_of) {
                Ok(_) => Some(()),
                // An earlier attempt removed it, though its answer was lost to the election.
                Err((Code::NotFound, _)) => Some(()),
                Err(_) => None,
            }
        }
    })
    .await;
    stops_fenced_off(&mut cluster, learner, learner_id);
    c.put("after-removal", "v", None).await.unwrap();
}

#[tokio::test]
async fn join_adds_a_clean_host_that_is_promoted_once_caught_up() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut c = Client::connect(cluster.endpoints(), None).await.unwrap();
    write_keys(&mut c, "pre/", 1_000).await;
    let ports = free_ports(2);
    let endpoints = cluster.endpoints().join(",");
    let initial = format!("m4=http://127.0.0.1:{}", ports[1]);
    let mut flags = vec!["--join", &endpoints, "--initial-cluster", &initial];
    flags.extend(TEST_TIMINGS);
    let joined = cluster.spawn_member("m4".into(), ports[0], ports[1], &flags);
    holds(&cluster, joined, "pre/", 1_000).await;
    let id = cluster.client(joined).await.status().await.unwrap().header().unwrap().member_id();
    poll_until(READY_TIMEOUT, "automatic promotion", || {
        let mut c = c.clone();
        async move {
            let members = c.member_list().await.ok()?;
            let me = members.members().iter().find(|m| m.id() == id)?;
            (!me.is_learner() && me.name() == "m4").then_some(())
        }
    })
    .await;
    cluster.members[joined].kill();
    cluster.restart(joined).await;
    holds(&cluster, joined, "pre/", 1_000).await;

    // Wiped, it must not take its old ID back: it lost the log and votes it held as a voter.
    cluster.members[joined].start_afresh(&flags);
    assert_eq!(cluster.members[joined].wait_exit(READY_TIMEOUT), Some(1));
    let said = cluster.members[joined].log_text();
    assert!(said.contains(&format!("member m4 ({id:x})")) && said.contains("has run before"), "{said}");
    let members = c.member_list().await.unwrap();
    assert!(members.members().iter().any(|m| m.id() == id && m.name() == "m4"), "the member list changed");
}

/// `--join` tries its endpoints in turn, each call bounded (the request timeout and a second): a
/// member that takes the connection and never answers (stopped) must not hold the join up.
#[tokio::test]
async fn join_goes_on_past_a_frozen_endpoint() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut c = Client::connect(cluster.endpoints(), None).await.unwrap();
    write_keys(&mut c, "pre/", 10).await;
    let frozen = (cluster.leader().await + 1) % 3;
    let mut endpoints = vec![cluster.members[frozen].endpoint()];
    endpoints.extend((0..3).filter(|&i| i != frozen).map(|i| cluster.members[i].endpoint()));
    let endpoints = endpoints.join(",");
    cluster.members[frozen].freeze();
    let ports = free_ports(2);
    let initial = format!("m4=http://127.0.0.1:{}", ports[1]);
    let mut flags = vec!["--join", &endpoints, "--initial-cluster", &initial];
    flags.extend(TEST_TIMINGS);
    let joined = cluster.spawn_member("m4".into(), ports[0], ports[1], &flags);
    holds(&cluster, joined, "pre/", 10).await;
}

#[tokio::test]
async fn move_leader_hands_leadership_to_the_chosen_voter() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let (leader, target, target_id) = leader_and_target(&cluster).await;
    let mut on_leader = cluster.client(leader).await;
    on_leader.move_leader(target_id).await.unwrap();
    assert_eq!(cluster.leader().await, target);
    on_leader.put("after-move", "v", None).await.unwrap();
    let bad = on_leader.move_leader(42).await.unwrap_err();
    assert!(matches!(status_of(bad), (Code::FailedPrecondition, _)));
}

/// A client that gives up on a move-leader part way (etcdctl's --command-timeout) must not leave
/// elections switched off: the cluster must still elect a leader when the new one dies.
#[tokio::test]
async fn a_move_leader_its_client_gave_up_on_leaves_elections_working() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let (leader, target, target_id) = leader_and_target(&cluster).await;
    let mut on_leader = cluster.client(leader).await;
    let gave_up = tokio::time::timeout(Duration::from_millis(300), on_leader.move_leader(target_id)).await;
    assert!(gave_up.is_err(), "the transfer finished within 300 ms: {gave_up:?}");
    // The transfer goes on without its client.
    poll_until(READY_TIMEOUT, "the target to lead", || async { (cluster.leader().await == target).then_some(()) })
        .await;

    cluster.kill(target);
    let mut c = Client::connect([cluster.members[leader].endpoint()], None).await.unwrap();
    put_after(&c, "a write after the new leader died").await;
    assert_eq!(c.get("after", None).await.unwrap().kvs()[0].value(), b"v");
}

/// The followers a transfer holds campaign again by themselves when the leader that held them
/// dies part way (here with its target): three of five are a quorum, and must elect a leader.
#[tokio::test]
async fn followers_held_by_a_transfer_whose_leader_died_campaign_again() {
    let mut cluster = Cluster::start(5, TEST_TIMINGS).await;
    let (leader, target, target_id) = leader_and_target(&cluster).await;
    let mut on_leader = cluster.client(leader).await;
    let transfer = tokio::spawn(async move { on_leader.move_leader(target_id).await });
    // Once the others hold, the leader waits out their leases (over 2 s) before the campaign.
    poll_until(READY_TIMEOUT, "the others to hold their elections", || async {
        cluster.members[leader].log_text().contains("the other voters hold their elections").then_some(())
    })
    .await;
    cluster.kill(leader);
    cluster.kill(target);
    let _ = transfer.await;
    let survivors: Vec<String> =
        (0..5).filter(|&i| i != leader && i != target).map(|i| cluster.members[i].endpoint()).collect();
    let c = Client::connect(survivors, None).await.unwrap();
    put_after(&c, "a write to the three survivors").await;
}

/// The leader, the member after it (a transfer's target) and that member's ID.
async fn leader_and_target(cluster: &Cluster) -> (usize, usize, u64) {
    let leader = cluster.leader().await;
    let target = (leader + 1) % cluster.members.len();
    let target_id = cluster.client(target).await.status().await.unwrap().header().unwrap().member_id();
    (leader, target, target_id)
}

/// Waits until a put of "after" goes through `c`.
async fn put_after(c: &Client, what: &str) {
    poll_until(READY_TIMEOUT, what, || {
        let mut c = c.clone();
        async move { c.put("after", "v", None).await.ok() }
    })
    .await;
}

/// A transfer to a member that cannot take over times out with etcd's words (code Unknown, so
/// clients do not retry it), and leaves the cluster as it was.
#[tokio::test]
async fn a_move_leader_to_a_stopped_member_times_out_and_changes_nothing() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let (leader, target, target_id) = leader_and_target(&cluster).await;
    cluster.kill(target);
    let mut on_leader = cluster.client(leader).await;
    on_leader.put("while-stopped", "v", None).await.unwrap();
    let refused = on_leader.move_leader(target_id).await.unwrap_err();
    assert_eq!(
        status_of(refused),
        (Code::Unknown, "etcdserver: request timed out, leader transfer took too long".into())
    );
    on_leader.put("after", "v", None).await.unwrap();
    assert_eq!(cluster.leader().await, leader);
}

#[tokio::test]
async fn a_rolling_restart_under_load_loses_nothing() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let client = Client::connect(cluster.endpoints(), None).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut i) = (Vec::new(), 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("roll/{w}/{i:06}");
                    match client.put(key.clone(), "v", None).await {
                        Ok(_) => acknowledged.push(key),
                        Err(e) => {
                            let (code, message) = status_of(e);
                            // Unavailable from a member, or tonic's own "transport error" when the
                            // member restarting closed the connection under a request in flight.
                            let retryable =
                                code == Code::Unavailable || (code == Code::Unknown && message == "transport error");
                            assert!(retryable, "a non-retryable error: {code:?} {message}");
                        }
                    }
                    i += 1;
                }
                acknowledged
            })
        })
        .collect();
    let mut probe = cluster.client(0).await;
    for member in [1, 2, 0] {
        let before = probe.get("roll/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count();
        poll_until(READY_TIMEOUT, "writes between restarts", || {
            let mut probe = probe.clone();
            let only_count = GetOptions::new().with_prefix().with_count_only();
            async move { (probe.get("roll/", Some(only_count)).await.ok()?.count() >= before + 20).then_some(()) }
        })
        .await;
        cluster.restart_gracefully(member).await;
        cluster.leader().await;
        probe = cluster.client((member + 1) % 3).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let mut c = cluster.client(0).await;
    let stored = c.get("roll/", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let stored: std::collections::HashSet<&[u8]> = stored.kvs().iter().map(|kv| kv.key()).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|k| !stored.contains(k.as_bytes())).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert!(acknowledged.len() >= 60, "only {} writes acknowledged", acknowledged.len());
}
