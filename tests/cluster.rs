//! Replication on real 3- and 5-member clusters: forwarding, linearizable reads everywhere,
//! leader failure, restarts that keep data, snapshot catch-up, and refusing other clusters.

mod support;

use std::time::Duration;

use etcd_client::{Client, GetOptions, PutResponse};
use support::{poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};

async fn value(client: &mut Client, key: &str, options: Option<GetOptions>) -> Option<Vec<u8>> {
    let resp = client.get(key, options).await.ok()?;
    resp.kvs().first().map(|kv| kv.value().to_vec())
}

#[tokio::test]
async fn three_members_replicate_and_followers_forward() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;

    let mut on_follower = cluster.client(follower).await;
    let put = on_follower.put("from-follower", "v", None).await.unwrap();
    assert_eq!(put.header().unwrap().member_id(), on_follower.status().await.unwrap().header().unwrap().member_id());

    for i in 0..3 {
        let mut client = cluster.client(i).await;
        // Linearizable by default: every member sees the write at once, no polling needed.
        assert_eq!(value(&mut client, "from-follower", None).await.as_deref(), Some(&b"v"[..]), "member {i}");
    }

    let members = on_follower.member_list().await.unwrap();
    let mut names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m1", "m2", "m3"]);
    assert!(members.members().iter().all(|m| m.client_urls().len() == 1 && !m.is_learner()));

    let hashes: Vec<u32> = {
        let mut hashes = Vec::new();
        for i in 0..3 {
            let mut client = cluster.client(i).await;
            let revision = client.status().await.unwrap().header().unwrap().revision();
            let hash = poll_until(READY_TIMEOUT, "hash at the same revision", || {
                let mut client = client.clone();
                async move { client.hash_kv(revision).await.ok().map(|h| h.hash()) }
            })
            .await;
            hashes.push(hash);
        }
        hashes
    };
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "replicas differ: {hashes:?}");
}

#[tokio::test]
async fn writes_continue_after_the_leader_is_killed() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let old_leader = cluster.leader().await;
    let survivor = (old_leader + 1) % 3;
    let mut client = cluster.client(survivor).await;
    for i in 0..20 {
        client.put(format!("before-{i}"), "v", None).await.unwrap();
    }

    cluster.kill(old_leader);
    // Sent before the survivors notice, a write waits for the next leader: its forward to the
    // dead leader either never left or, having left, broke, and the follower then learns from
    // its own applies that the write was not applied and sends it again (raft::outcome).
    client.put("during-the-election", "v", None).await.unwrap();
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    poll_until(READY_TIMEOUT, "a write after failover", || {
        let mut client = client.clone();
        async move { client.put("after", "v", None).await.ok() }
    })
    .await;
    let all = client.get("before-", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(all.count(), 20, "every acknowledged write survived the leader");

    cluster.restart(old_leader).await;
    let mut back = cluster.client(old_leader).await;
    let after = back.get("after", None).await.unwrap();
    assert_eq!(after.kvs().first().map(|kv| kv.value()), Some(&b"v"[..]));
    let count = back.get("before-", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(count.count(), 20);
}

/// A fault switch's file: members started with `env(point)` hold at that point while it exists.
struct Hold {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl Hold {
    fn new() -> Hold {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hold");
        Hold { _dir: dir, file }
    }

    fn env<'a>(&'a self, point: &'a str) -> [(&'a str, &'a str); 1] {
        [(point, self.file.to_str().unwrap())]
    }

    fn arm(&self) {
        std::fs::write(&self.file, "").unwrap();
    }

    fn release(&self) {
        std::fs::remove_file(&self.file).unwrap();
    }
}

/// A 3-member cluster whose members hold forwarded writes at `hold_point` (a fault switch), with
/// the hold armed: set up after start, as members publish their names through forwards.
async fn holding_at(hold_point: &str) -> (Cluster, Hold) {
    let hold = Hold::new();
    let cluster = Cluster::start_with_env(3, TEST_TIMINGS, &hold.env(hold_point)).await;
    hold.arm();
    (cluster, hold)
}

/// A put of `k` through `client`, sent in the background.
fn put_in_background(client: &Client) -> tokio::task::JoinHandle<Result<PutResponse, etcd_client::Error>> {
    let mut client = client.clone();
    tokio::spawn(async move { client.put("k", "v", None).await })
}

/// Waits until the member `on` reaches has applied `k`, and `leader` holds its forward's answer.
async fn applied_with_answer_held(cluster: &Cluster, leader: usize, on: &Client) {
    poll_until(READY_TIMEOUT, "the write applied, the answer to its forward held", || {
        let held = cluster.members[leader].log_text().contains("holding the answers to forwarded proposals");
        let mut on = on.clone();
        async move { value(&mut on, "k", Some(GetOptions::new().with_serializable())).await.filter(|_| held) }
    })
    .await;
}

async fn written_once(client: &mut Client, key: &str) {
    let got = client.get(key, None).await.unwrap();
    let versions: Vec<i64> = got.kvs().iter().map(|kv| kv.version()).collect();
    assert_eq!(versions, [1], "{key} written exactly once");
}

#[tokio::test]
async fn a_forwarded_write_whose_answer_died_with_the_leader_is_answered_from_the_followers_apply() {
    let (mut cluster, _hold) = holding_at("PHOENIX_TEST_HOLD_FORWARDED_ANSWERS").await;
    let leader = cluster.leader().await;
    let mut client = cluster.client((leader + 1) % 3).await;
    let put = put_in_background(&client);
    applied_with_answer_held(&cluster, leader, &client).await;

    cluster.kill(leader);
    let answer = put.await.unwrap();
    assert!(answer.is_ok(), "the write was applied, and the follower knows it: {answer:?}");
    written_once(&mut client, "k").await;
}

/// The follower learns the write's fate only from the next leader: it was cut off from the dead
/// leader's replication, so it applies the write after the forward broke.
///
/// The next leader must be elected within the write's deadline (5 s and two election timeouts),
/// after openraft's leader lease (one election timeout) and its own timeout; cut off, the
/// follower campaigns in vain and can tie the next leader's first term, which then takes a
/// second round. With one-second timeouts that left too little room under CI's load (3.2-5.9 s
/// measured beside the rest of the suite, 7 s once in CI), so this cluster elects in half-second
/// timeouts (1.7-3.1 s measured).
#[tokio::test]
async fn a_forwarded_write_the_follower_sees_applied_only_under_the_next_leader_is_answered_once() {
    let hold = Hold::new();
    let timings = ["--heartbeat-interval", "100", "--election-timeout", "500"];
    let (mut cluster, network) =
        Cluster::start_behind_proxies(3, &timings, &hold.env("PHOENIX_TEST_HOLD_FORWARDED_ANSWERS")).await;
    cluster.wait_names_published().await;
    let leader = cluster.leader().await;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    hold.arm();
    network.cut(leader, follower);
    let mut client = cluster.client(follower).await;
    let put = put_in_background(&client);
    let mut on_other = cluster.client(other).await;
    applied_with_answer_held(&cluster, leader, &on_other).await;
    let seen = value(&mut client, "k", Some(GetOptions::new().with_serializable())).await;
    assert_eq!(seen, None, "the follower was cut off from the leader's replication");

    cluster.kill(leader);
    let answer = put.await.unwrap();
    assert!(answer.is_ok(), "the next leader committed the write, and the follower applied it: {answer:?}");
    written_once(&mut on_other, "k").await;
}

#[tokio::test]
async fn a_forwarded_write_its_dead_leader_never_proposed_goes_to_the_next_leader_once() {
    let (mut cluster, hold) = holding_at("PHOENIX_TEST_HOLD_FORWARDED_PROPOSALS").await;
    let leader = cluster.leader().await;
    let mut client = cluster.client((leader + 1) % 3).await;
    let put = put_in_background(&client);
    poll_until(READY_TIMEOUT, "the forwarded write held before its proposal", || {
        let held = cluster.members[leader].log_text().contains("holding forwarded proposals");
        async move { held.then_some(()) }
    })
    .await;

    cluster.kill(leader);
    hold.release();
    let answer = put.await.unwrap();
    assert!(answer.is_ok(), "the write was never applied, so it could be sent again: {answer:?}");
    written_once(&mut client, "k").await;
}

/// The leader's own log flush, held on request (`PHOENIX_TEST_HOLD_LEADER_FLUSH`).
struct FlushHold(Hold);

impl FlushHold {
    /// Starts `n` members that hold the leader's flush on request, and returns them, their
    /// leader, a client of it, and the hold. One write has gone through: a leadership's first
    /// append is flushed before it is reported, so only later ones wait for the held flush.
    async fn start(n: usize) -> (Cluster, usize, Client, FlushHold) {
        let hold = Hold::new();
        let cluster = Cluster::start_with_env(n, TEST_TIMINGS, &hold.env("PHOENIX_TEST_HOLD_LEADER_FLUSH")).await;
        let leader = cluster.leader().await;
        let client = cluster.client(leader).await;
        client.clone().put("before", "v", None).await.unwrap();
        (cluster, leader, client, FlushHold(hold))
    }

    /// Holds the leader's flush and starts a put of `k`; returns once its flush is held.
    async fn put_held(
        &self,
        cluster: &Cluster,
        leader: usize,
        on_leader: &Client,
    ) -> tokio::task::JoinHandle<Result<PutResponse, etcd_client::Error>> {
        self.0.arm();
        let put = put_in_background(on_leader);
        poll_until(READY_TIMEOUT, "the leader's flush of the write held", || {
            let held = cluster.members[leader].log_text().contains("holding the leader's log flush");
            async move { held.then_some(()) }
        })
        .await;
        put
    }

    fn release(&self) {
        self.0.release();
    }
}

/// A leader reports its own log appends flushed at once and flushes them while its followers do
/// (`raft::leader_flush`). While that flush is held, the followers hold the write and ack it, yet
/// no client is answered and no follower applies it until the leader's copy is durable.
#[tokio::test]
async fn a_write_waits_for_the_leaders_own_flush_before_anyone_acts_on_it() {
    let (cluster, leader, on_leader, hold) = FlushHold::start(3).await;
    let put = hold.put_held(&cluster, leader, &on_leader).await;

    // Unheld, the answer and the followers' applies follow the commit within milliseconds.
    let followers = [(leader + 1) % 3, (leader + 2) % 3];
    let window = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < window {
        assert!(!put.is_finished(), "a client was answered before the leader's copy was durable");
        for follower in followers {
            let mut client = cluster.client(follower).await;
            let seen = value(&mut client, "k", Some(GetOptions::new().with_serializable())).await;
            assert_eq!(seen, None, "member {follower} applied the write before the leader's copy was durable");
        }
        tokio::time::sleep(support::POLL_INTERVAL).await;
    }

    hold.release();
    let answer = put.await.unwrap();
    assert!(answer.is_ok(), "the write goes through once the leader's flush does: {answer:?}");
    for follower in followers {
        let client = cluster.client(follower).await;
        poll_until(READY_TIMEOUT, "the write applied on a follower", || {
            let mut client = client.clone();
            async move { value(&mut client, "k", Some(GetOptions::new().with_serializable())).await }
        })
        .await;
    }
}

/// A write whose client gave up while it waited in the leader's queue is never proposed, as
/// etcd proposes none whose request is done; the writes queued beside it go through.
#[tokio::test]
async fn a_write_whose_client_gave_up_in_the_queue_is_not_proposed() {
    let (cluster, leader, client, hold) = FlushHold::start(1).await;
    let in_flight = hold.put_held(&cluster, leader, &client).await;
    // Queued behind the held entry: one client gives up, another waits.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), client.clone().put("abandoned", "v", None)).await;
    assert!(gave_up.is_err(), "answered while the leader's flush was held: {gave_up:?}");
    let waiting = {
        let mut client = client.clone();
        tokio::spawn(async move { client.put("waited", "v", None).await })
    };
    // A request after the cancellation on the same connection: once it is answered, the member
    // has read the cancellation too (HTTP/2 frames arrive in order).
    let mut reader = client.clone();
    value(&mut reader, "before", Some(GetOptions::new().with_serializable())).await;

    hold.release();
    assert!(in_flight.await.unwrap().is_ok());
    assert!(waiting.await.unwrap().is_ok());
    assert_eq!(value(&mut reader, "waited", None).await.as_deref(), Some(&b"v"[..]));
    assert_eq!(value(&mut reader, "abandoned", None).await, None, "a write its client gave up on was applied");
}

/// A leader killed before its own flush may restart without entries its followers hold
/// (`raft::leader_flush`); leading on in its old term, as openraft 0.9 would let it, it would
/// write other entries under their log ids. Restarted at once, before anyone else campaigns, it
/// leads again only after an election.
#[tokio::test]
async fn a_killed_leader_restarted_at_once_leads_again_only_in_a_new_term() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    client.put("k", "v", None).await.unwrap();
    let old_term = client.status().await.unwrap().raft_term();
    cluster.kill(leader);
    cluster.restart(leader).await;

    let endpoints = cluster.endpoints();
    poll_until(READY_TIMEOUT, "a leader in a newer term", || {
        let endpoints = endpoints.clone();
        async move {
            for endpoint in endpoints {
                let status = Client::connect([endpoint], None).await.ok()?.status().await.ok()?;
                let leads = status.leader() == status.header()?.member_id();
                if leads {
                    return (status.raft_term() > old_term).then_some(());
                }
            }
            None
        }
    })
    .await;
}

/// The only voter, restarted after it led, starts as a follower like any leader does; openraft
/// has the only voter campaign at once, not after its election timeout (here 10 s).
#[tokio::test]
async fn a_lone_member_leads_again_at_once_after_a_restart() {
    let mut cluster = Cluster::start(1, &["--heartbeat-interval", "100", "--election-timeout", "10000"]).await;
    cluster.client(0).await.put("k", "v", None).await.unwrap();
    cluster.kill(0);
    cluster.members[0].spawn_again();
    let endpoint = cluster.members[0].endpoint();
    poll_until(Duration::from_secs(5), "a leader well inside the election timeout", || {
        let endpoint = endpoint.clone();
        async move { Client::connect([endpoint], None).await.ok()?.put("k", "w", None).await.ok() }
    })
    .await;
}

#[tokio::test]
async fn a_killed_member_restarts_with_its_data() {
    let mut cluster = Cluster::start(1, TEST_TIMINGS).await;
    let mut client = cluster.client(0).await;
    for i in 0..50 {
        client.put(format!("k{i:02}"), format!("v{i}"), None).await.unwrap();
    }
    let revision = client.status().await.unwrap().header().unwrap().revision();
    cluster.kill(0);
    cluster.restart(0).await;

    let mut client = cluster.client(0).await;
    let all = client.get("k", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(all.kvs().len(), 50, "kill -9 lost acknowledged writes");
    assert_eq!(all.kvs()[49].value(), b"v49");
    assert_eq!(all.header().unwrap().revision(), revision);
}

/// openraft 0.9 can hold a member's next election back by a backoff it forgot to clear
/// (`raft::elections`). Here every member's own election timer is off for good, so only Phoenix
/// can start the elections: the first after no leader for a while, the next when the leader
/// falls silent.
#[tokio::test]
async fn members_whose_election_timers_stall_still_replace_a_dead_leader() {
    let env = [("PHOENIX_TEST_FAULTS", "stalled-election-timer")];
    let mut cluster = Cluster::start_with_env(3, TEST_TIMINGS, &env).await;
    let old_leader = cluster.leader().await;
    cluster.kill(old_leader);
    let client = cluster.client((old_leader + 1) % 3).await;
    poll_until(READY_TIMEOUT, "a write through the next leader", || {
        let mut client = client.clone();
        async move { client.put("k", "v", None).await.ok() }
    })
    .await;
    assert_ne!(cluster.leader().await, old_leader);
}

/// Three members that snapshot every 20 entries, the leader, and the member to leave behind.
async fn three_members_taking_snapshots() -> (Cluster, usize, usize) {
    let mut flags = TEST_TIMINGS.to_vec();
    flags.extend(["--snapshot-count", "20"]);
    let cluster = Cluster::start(3, &flags).await;
    let leader = cluster.leader().await;
    (cluster, leader, (leader + 1) % 3)
}

/// Waits until member `i` has taken a snapshot (and so may purge the log before it).
async fn snapshot_taken(cluster: &Cluster, i: usize) {
    let snapshots = cluster.members[i].data_dir.join("snap");
    poll_until(READY_TIMEOUT, &format!("a snapshot on {}", cluster.members[i].name), || {
        let found = std::fs::read_dir(&snapshots).ok().is_some_and(|mut d| d.next().is_some());
        async move { found.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_lagging_member_catches_up_from_a_snapshot() {
    let leader_log = lagging_member_catches_up_from_a_snapshot(&[]).await;
    assert!(!leader_log.contains("takes no snapshot streams"), "the snapshot went in chunks");
}

/// A member from before snapshot streams (it answers them Unimplemented) is sent openraft's
/// chunks instead.
#[tokio::test]
async fn a_lagging_member_that_takes_no_snapshot_streams_catches_up_from_chunks() {
    let leader_log = lagging_member_catches_up_from_a_snapshot(&[("PHOENIX_TEST_FAULTS", "no-snapshot-streams")]).await;
    assert!(leader_log.contains("takes no snapshot streams: sending chunks"), "the snapshot went in one stream");
}

/// A member, restarted with `env` after it missed 200 writes and the log before them, catches
/// up from a snapshot. Returns the leader's log.
async fn lagging_member_catches_up_from_a_snapshot(env: &[(&str, &str)]) -> String {
    let (mut cluster, leader, lagging) = three_members_taking_snapshots().await;
    cluster.kill(lagging);
    for (name, value) in env {
        cluster.members[lagging].add_env(name, value);
    }

    let mut client = cluster.client(leader).await;
    for i in 0..200 {
        client.put(format!("key-{i:03}"), format!("value-{i}"), None).await.unwrap();
    }
    snapshot_taken(&cluster, leader).await;

    cluster.restart(lagging).await;
    let mut lagging_client = cluster.client(lagging).await;
    let serializable = GetOptions::new().with_prefix().with_serializable();
    poll_until(READY_TIMEOUT, "the lagging member to catch up", || {
        let mut c = lagging_client.clone();
        let options = serializable.clone();
        async move { (c.get("key-", Some(options)).await.ok()?.kvs().len() == 200).then_some(()) }
    })
    .await;
    assert_eq!(value(&mut lagging_client, "key-199", None).await.as_deref(), Some(&b"value-199"[..]));
    assert!(cluster.members[lagging].log_text().contains("installed snapshot"), "caught up without a snapshot");
    cluster.members[leader].log_text()
}

/// While a member loads a snapshot its store is emptied: it must answer only what it knows to
/// be true, and a watch opened then must start once the load is done, from the right revision.
#[tokio::test]
async fn a_member_part_way_through_a_snapshot_install_answers_only_what_holds() {
    use etcd_client::{EventType, WatchOptions};
    use phoenix::pb::{recovery_client::RecoveryClient, SurvivorRequest};
    let (mut cluster, leader, lagging) = three_members_taking_snapshots().await;
    let mut client = cluster.client(leader).await;
    let held_revision = client.put("before", "the install", None).await.unwrap().header().unwrap().revision();
    poll_until(READY_TIMEOUT, "every member to hold the first write", || async {
        let mut c = cluster.client(lagging).await;
        let serializable = GetOptions::new().with_serializable();
        (c.get("before", Some(serializable)).await.ok()?.kvs().len() == 1).then_some(())
    })
    .await;
    cluster.kill(lagging);
    let mut last_revision = held_revision;
    for i in 0..100 {
        last_revision = client.put(format!("key-{i:03}"), "v", None).await.unwrap().header().unwrap().revision();
    }
    snapshot_taken(&cluster, leader).await;

    let hold = cluster.dir().join("hold-install");
    std::fs::write(&hold, "").unwrap();
    cluster.members[lagging].add_env("PHOENIX_TEST_HOLD_INSTALL", &hold.to_string_lossy());
    cluster.members[lagging].spawn_again();
    let endpoint = cluster.members[lagging].endpoint();
    let installing = "etcdserver: member is installing a snapshot from the leader";
    poll_until(READY_TIMEOUT, "the lagging member to be held in its install", || {
        let held = cluster.members[lagging].log_text().contains("holding the snapshot install");
        async move { held.then_some(()) }
    })
    .await;
    // Its store is empty now; what it answers must not say so. Reads wait, as etcd's do.
    let mut on_lagging = cluster.client(lagging).await;
    let status = on_lagging.status().await.unwrap();
    assert!(status.errors().iter().any(|e| e == installing), "{:?}", status.errors());
    // Before its install, it may have applied the entries its leader had not purged yet.
    let before_install = status.header().unwrap().revision();
    assert!((held_revision..last_revision).contains(&before_install), "a header went back: {before_install}");
    let read = tokio::spawn({
        let mut c = on_lagging.clone();
        async move { c.get("before", Some(GetOptions::new().with_serializable())).await }
    });
    let members = tokio::spawn({
        let mut c = on_lagging.clone();
        async move { c.member_list().await }
    });
    let (_, health) = support::http_get(&endpoint, "/health").await.unwrap();
    assert!(health.contains(r#""health":"false""#) && health.contains(installing), "{health}");
    let mut recovery = RecoveryClient::connect(endpoint.clone()).await.unwrap();
    let report = recovery.survivor(SurvivorRequest {}).await.unwrap().into_inner();
    assert!(report.has_leader, "a reset elsewhere would not know this member has a leader");
    assert_eq!(report.revision, before_install);
    let from = held_revision + 1;
    let watch = tokio::spawn(async move {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut events = on_lagging.watch("key-", Some(options)).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 100 {
            let response = events.message().await.unwrap().expect("the watch stream ended");
            for event in response.events() {
                assert_eq!(event.event_type(), EventType::Put);
                seen.push(event.kv().unwrap().mod_revision());
            }
        }
        seen
    });

    // Not a wait for something to happen: no answer may come while the install is held.
    let (mut read, mut members) = (read, members);
    let early = tokio::time::timeout(Duration::from_millis(500), futures::future::select(&mut read, &mut members));
    assert!(early.await.is_err(), "answered from a store being replaced");

    std::fs::remove_file(&hold).unwrap();
    let read = tokio::time::timeout(READY_TIMEOUT, read).await.expect("the read never ended").unwrap().unwrap();
    assert_eq!(read.kvs().len(), 1);
    assert_eq!(read.kvs()[0].value(), b"the install");
    let members = tokio::time::timeout(READY_TIMEOUT, members).await.expect("MemberList never ended").unwrap();
    let members = members.unwrap();
    assert_eq!(members.members().len(), 3);
    assert!(members.members().iter().all(|m| !m.name().is_empty()), "{members:?}");
    let seen = tokio::time::timeout(READY_TIMEOUT, watch).await.expect("the watch never started").unwrap();
    assert_eq!(seen, (from..from + 100).collect::<Vec<_>>(), "the watch missed or repeated events");
    let mut on_lagging = cluster.client(lagging).await;
    let all = on_lagging.get("key-", Some(GetOptions::new().with_prefix().with_serializable())).await.unwrap();
    assert_eq!(all.kvs().len(), 100);
    assert!(cluster.members[lagging].log_text().contains("installed snapshot"), "caught up without a snapshot");
}

#[tokio::test]
async fn five_members_bootstrap_and_serve() {
    let cluster = Cluster::start(5, TEST_TIMINGS).await;
    cluster.leader().await;
    let mut client = Client::connect(cluster.endpoints(), None).await.unwrap();
    client.put("five", "members", None).await.unwrap();
    assert_eq!(client.member_list().await.unwrap().members().len(), 5);
    for i in 0..5 {
        let mut c = cluster.client(i).await;
        assert_eq!(value(&mut c, "five", None).await.as_deref(), Some(&b"members"[..]));
    }
}

#[tokio::test]
async fn members_of_another_cluster_are_refused_without_fencing_them() {
    let ours = Cluster::start(1, TEST_TIMINGS).await;
    // A member of another cluster (another token) that believes our member is its peer: a wrong
    // address, which says nothing about its data, so it is told and keeps running.
    let ports = support::free_ports(2);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("a.phoenix");
    let initial = format!("a=http://127.0.0.1:{},b={}", ports[1], ours.members[0].peer_url());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["--name", "a", "--data-dir"])
        .arg(&data_dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", ports[0])])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", ports[0])])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", ports[1])])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", ports[1])])
        .args(["--initial-cluster", &initial, "--initial-cluster-token", "another-token"])
        .args(TEST_TIMINGS)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // A member told once that it was refused for good would have stopped before asking again.
    #[allow(clippy::disallowed_methods)] // reading a pipe: no sled
    let refused_three_times = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(stderr).lines().map_while(Result::ok);
        lines.filter(|line| line.contains("peer URL leads to the wrong member")).nth(2).is_some()
    });
    let refused = tokio::time::timeout(Duration::from_secs(30), refused_three_times).await;
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(refused, Ok(Ok(true))), "the intruder was not told, again and again, that it was refused");
    assert!(still_running, "the intruder stopped");
    assert!(!data_dir.join("FENCED").exists(), "the intruder's data dir was fenced off");

    let mut client = ours.client(0).await;
    assert_eq!(client.member_list().await.unwrap().members().len(), 1, "our cluster is untouched");
    client.put("still", "ours", None).await.unwrap();
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_of_the_leader_mid_stream() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let mut client = cluster.client(leader).await;
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..100_000 {
            match client.put(format!("w{i:06}"), "v", None).await {
                Ok(_) => acknowledged.push(format!("w{i:06}")),
                Err(_) => break,
            }
        }
        acknowledged
    });
    let probe = cluster.client((leader + 1) % 3).await;
    poll_until(READY_TIMEOUT, "some replicated writes", || {
        let mut probe = probe.clone();
        async move {
            let only_count = GetOptions::new().with_prefix().with_count_only().with_serializable();
            (probe.get("w", Some(only_count)).await.ok()?.count() >= 50).then_some(())
        }
    })
    .await;
    cluster.kill(leader);
    let acknowledged = writer.await.unwrap();
    // The writer sends one put at a time, so 50 keys on a follower mean 49 answered at least:
    // the 50th may be applied there before the leader's answer reaches the writer.
    assert!(acknowledged.len() >= 49, "the writer stopped early");

    cluster.restart(leader).await;
    for member in 0..3 {
        let client = cluster.client(member).await;
        let written = poll_until(READY_TIMEOUT, "a linearizable read after the restart", || {
            let mut client = client.clone();
            async move { client.get("w", Some(GetOptions::new().with_prefix().with_keys_only())).await.ok() }
        })
        .await;
        let present: std::collections::HashSet<&str> = written.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        let lost: Vec<&String> = acknowledged.iter().filter(|k| !present.contains(k.as_str())).collect();
        assert!(lost.is_empty(), "member {member} lost acknowledged writes: {lost:?}");
    }
}

#[tokio::test]
async fn a_peer_request_that_reaches_the_wrong_member_is_refused() {
    use phoenix::pb::{peer_client::PeerClient, PeerHeader, ReadIndexRequest};
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let status = cluster.client(0).await.status().await.unwrap();
    let (cluster_id, me) = (status.header().unwrap().cluster_id(), status.header().unwrap().member_id());
    // As if the sender believed another member lived at this peer URL (an address reused).
    let mut peer = PeerClient::connect(cluster.members[0].peer_url()).await.unwrap();
    let header = PeerHeader { cluster_id, from: me, to: me ^ 1 };
    let refused = peer.read_index(ReadIndexRequest { header: Some(header) }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("belongs to another member now"), "{}", refused.message());
    let header = PeerHeader { cluster_id, from: me, to: me };
    peer.read_index(ReadIndexRequest { header: Some(header) }).await.unwrap();
}

/// A leader whose vote the member has seen overtaken is sent the member's newer vote back at
/// once, without waiting for the rest of its snapshot, which the member would otherwise wait
/// for (a minute) before it answered.
#[tokio::test]
async fn a_snapshot_stream_from_a_stale_leader_is_answered_with_the_newer_vote_at_once() {
    use openraft::error::Fatal;
    use openraft::raft::SnapshotResponse;
    use openraft::{CommittedLeaderId, LogId, StoredMembership, Vote};
    use phoenix::pb::{peer_client::PeerClient, PeerHeader, SnapshotPart};
    use phoenix::raft::SnapshotMeta;
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let mut client = cluster.client(0).await;
    client.put("kept", "before", None).await.unwrap();
    let status = client.status().await.unwrap();
    let header = status.header().unwrap();
    let (cluster_id, me, term) = (header.cluster_id(), header.member_id(), status.raft_term());
    // Term 0: every vote this member has cast since it started is newer.
    let stale = Vote::new(0, me);
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(0, me), 1_000_000)),
        last_membership: StoredMembership::default(),
        snapshot_id: "from-a-stale-leader".into(),
    };
    let offer = SnapshotPart {
        header: Some(PeerHeader { cluster_id, from: me, to: me }),
        offer: bincode::serialize(&(stale, &meta)).unwrap(),
        size: 1 << 20,
        data: b"abc".to_vec(),
    };
    // The rest of the snapshot never comes: the answer must not wait for it.
    let parts = futures::stream::StreamExt::chain(futures::stream::iter([offer]), futures::stream::pending());
    let mut peer = PeerClient::connect(cluster.members[0].peer_url()).await.unwrap();
    let reply = tokio::time::timeout(READY_TIMEOUT, peer.stream_snapshot(parts)).await;
    let reply = reply.expect("answered before the rest of the stream").unwrap().into_inner();
    let answer: Result<SnapshotResponse<u64>, Fatal<u64>> = bincode::deserialize(&reply.payload).unwrap();
    let newer = answer.expect("an answer, not a failure").vote;
    assert_eq!(newer, Vote::new_committed(term, me), "the member's own vote comes back");

    let kept = client.get("kept", None).await.unwrap();
    assert_eq!(kept.kvs()[0].value(), b"before", "the store is untouched");
    client.put("after", "v", None).await.expect("the member still takes writes");
}

/// The leader's Raft log flush count (an fsync each), for measuring how writes are batched.
async fn log_flushes(cluster: &Cluster, i: usize) -> u64 {
    let (code, body) = support::http_get(&cluster.members[i].endpoint(), "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let line = body.lines().find(|l| l.starts_with("phoenix_log_flushes_total ")).unwrap_or_else(|| panic!("{body}"));
    line["phoenix_log_flushes_total ".len()..].parse().unwrap()
}

#[tokio::test]
async fn metrics_count_the_log_flushes_that_make_writes_durable() {
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let before = log_flushes(&cluster, 0).await;
    cluster.client(0).await.put("durable", "v", None).await.unwrap();
    assert!(log_flushes(&cluster, 0).await > before, "an acknowledged write was flushed");
}

#[tokio::test]
async fn the_leader_answers_each_forwarded_proposal_in_its_place() {
    use phoenix::pb::{
        command, command_result, peer_client::PeerClient, Command, PeerHeader, ProposeRequest, PutRequest,
    };
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let status = cluster.client(0).await.status().await.unwrap();
    let (cluster_id, me) = (status.header().unwrap().cluster_id(), status.header().unwrap().member_id());
    let put = |key: &str, lease: i64| {
        Command::from(command::Op::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        }))
    };
    // As a follower forwards the writes that queued up on it: one request, several clients.
    let mut peer = PeerClient::connect(cluster.members[0].peer_url()).await.unwrap();
    let request = ProposeRequest {
        header: Some(PeerHeader { cluster_id, from: me, to: me }),
        commands: vec![put("first", 0), put("refused", 12345), put("third", 0)],
    };
    let results = peer.propose(request).await.unwrap().into_inner().results;
    let outcomes: Vec<_> = results.into_iter().map(|r| r.result.expect("a result")).collect();
    let [command_result::Result::Put(first), command_result::Result::Error(refused), command_result::Result::Put(third)] =
        &outcomes[..]
    else {
        panic!("three answers in the order asked: {outcomes:?}");
    };
    assert_eq!((refused.code, refused.message.as_str()), (5, "etcdserver: requested lease not found"));
    let revision = |put: &phoenix::pb::PutResponse| put.header.as_ref().unwrap().revision;
    assert!(revision(first) < revision(third), "applied in the order asked");
}

#[tokio::test]
async fn concurrent_writes_through_a_follower_each_get_their_own_answer() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let follower = (cluster.leader().await + 1) % 3;
    let client = cluster.client(follower).await;
    // Sent at once, so the follower packs them into shared forwards; every tenth is refused.
    let writes = (0..200).map(|i| {
        let mut client = client.clone();
        async move {
            let lease = if i % 10 == 0 { Some(etcd_client::PutOptions::new().with_lease(777)) } else { None };
            (i, client.put(format!("k{i}"), format!("v{i}"), lease).await)
        }
    });
    let mut reader = cluster.client(follower).await;
    for (i, answer) in futures::future::join_all(writes).await {
        if i % 10 == 0 {
            let err = answer.expect_err("a put with a lease that does not exist");
            assert!(err.to_string().contains("etcdserver: requested lease not found"), "put {i}: {err}");
            continue;
        }
        let revision = answer.unwrap_or_else(|e| panic!("put {i}: {e}")).header().unwrap().revision();
        let stored = reader.get(format!("k{i}"), None).await.unwrap();
        let kv = &stored.kvs()[0];
        assert_eq!((kv.value(), kv.mod_revision()), (format!("v{i}").as_bytes(), revision), "put {i}'s own answer");
    }
}
