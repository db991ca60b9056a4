//! Leases on real clusters: etcd's answers, expiry through Raft with DELETE events, and leases
//! that neither expire early nor outlive their TTL by much across a leader failure.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
use support::{poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};
use tonic::Code;

/// A client's keepalive cadence (a third of the TTL) and its pause before reopening a stream:
/// pacing of the simulated client, not synchronisation.
const RENEW_EVERY: Duration = Duration::from_secs(1);
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

fn status_of(err: etcd_client::Error) -> (Code, String) {
    match err {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn exists(client: &mut Client, key: &str) -> bool {
    let options = GetOptions::new().with_serializable().with_count_only();
    client.get(key, Some(options)).await.map(|r| r.count() == 1).unwrap_or(true)
}

#[tokio::test]
async fn lease_calls_answer_as_etcd_does() {
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let mut c = cluster.client(0).await;

    let granted = c.lease_grant(60, None).await.unwrap();
    assert!(granted.id() > 0);
    assert_eq!(granted.ttl(), 60);
    let chosen = c.lease_grant(60, Some(etcd_client::LeaseGrantOptions::new().with_id(42))).await.unwrap();
    assert_eq!(chosen.id(), 42);
    let again = c.lease_grant(60, Some(etcd_client::LeaseGrantOptions::new().with_id(42))).await.unwrap_err();
    assert_eq!(status_of(again), (Code::FailedPrecondition, "etcdserver: lease already exists".into()));
    let short = c.lease_grant(1, None).await.unwrap();
    assert_eq!(short.ttl(), 2, "election timeout 1 s: the minimum TTL is 1.5 s, rounded up");
    let huge = c.lease_grant(9_000_000_001, None).await.unwrap_err();
    assert_eq!(status_of(huge), (Code::OutOfRange, "etcdserver: too large lease TTL".into()));

    c.put("owned", "v", Some(PutOptions::new().with_lease(42))).await.unwrap();
    let ttl = c.lease_time_to_live(42, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!((ttl.granted_ttl(), ttl.keys()), (60, &[b"owned".to_vec()][..]));
    assert!(ttl.ttl() > 50 && ttl.ttl() <= 60);
    let ids: Vec<i64> = c.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
    assert!(ids.contains(&42) && ids.contains(&granted.id()));
    // As etcd's leader lists them: soonest expiry first.
    for (id, ttl) in [(7, 300), (8, 100), (9, 200)] {
        c.lease_grant(ttl, Some(etcd_client::LeaseGrantOptions::new().with_id(id))).await.unwrap();
    }
    let listed = c.leases().await.unwrap();
    let ordered: Vec<i64> = listed.leases().iter().map(|l| l.id()).filter(|id| (7..=9).contains(id)).collect();
    assert_eq!(ordered, [8, 9, 7]);

    let (mut keeper, mut answers) = c.lease_keep_alive(42).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl(), 60);
    // The server answers TTL 0 to the first keepalive, which etcd-client reports as this error.
    let unknown = c.lease_keep_alive(4242).await.unwrap_err();
    assert!(matches!(unknown, etcd_client::Error::LeaseKeepAliveError(_)), "{unknown:?}");
    let unknown = c.lease_time_to_live(4242, None).await.unwrap();
    assert_eq!(unknown.ttl(), -1, "an unknown lease has TTL -1");

    c.lease_revoke(42).await.unwrap();
    assert!(c.get("owned", None).await.unwrap().kvs().is_empty(), "revoking deletes the lease's keys");
    let missing = (Code::NotFound, "etcdserver: requested lease not found".to_string());
    assert_eq!(status_of(c.lease_revoke(42).await.unwrap_err()), missing);
    assert_eq!(status_of(c.put("k", "v", Some(PutOptions::new().with_lease(42))).await.unwrap_err()), missing);
}

#[tokio::test]
async fn expiry_deletes_the_keys_in_one_revision_with_delete_events() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut c = cluster.client(0).await;
    let lease = c.lease_grant(1, None).await.unwrap().id();
    for key in ["e/a", "e/b", "e/c"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    }
    let mut events = c.watch("e/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    // The watch starts at the revision its member has applied, so it may still see some puts.
    let deletes = tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            let response = events.message().await.unwrap().unwrap();
            if response.events().iter().any(|e| e.event_type() == EventType::Delete) {
                return response;
            }
        }
    })
    .await
    .expect("no DELETE events after the lease's TTL");
    assert_eq!(deletes.events().len(), 3, "all of the lease's keys go in one response");
    assert!(deletes.events().iter().all(|e| e.event_type() == EventType::Delete));
    let revisions: Vec<i64> = deletes.events().iter().map(|e| e.kv().unwrap().mod_revision()).collect();
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "one revision: {revisions:?}");
    assert_eq!(c.lease_time_to_live(lease, None).await.unwrap().ttl(), -1);
}

#[tokio::test]
async fn leases_survive_a_leader_failure_only_while_kept_alive() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    let mut c = cluster.client(survivor).await;
    let ttl = 4;
    let kept = c.lease_grant(ttl, None).await.unwrap().id();
    let abandoned = c.lease_grant(ttl, None).await.unwrap().id();
    c.put("kept", "v", Some(PutOptions::new().with_lease(kept))).await.unwrap();
    c.put("abandoned", "v", Some(PutOptions::new().with_lease(abandoned))).await.unwrap();

    let mut renewing = c.clone();
    let keepalive = tokio::spawn(async move {
        // Renews at a third of the TTL and reopens a broken stream, as etcd's clients do.
        loop {
            if let Ok((mut keeper, mut answers)) = renewing.lease_keep_alive(kept).await {
                while keeper.keep_alive().await.is_ok() && answers.message().await.is_ok() {
                    tokio::time::sleep(RENEW_EVERY).await;
                }
            }
            tokio::time::sleep(RECONNECT_BACKOFF).await;
        }
    });

    let killed_at = Instant::now();
    cluster.kill(leader);
    cluster.leader().await;
    poll_until(READY_TIMEOUT + Duration::from_secs(ttl as u64), "the abandoned lease to expire", || {
        let mut c = c.clone();
        async move { (!exists(&mut c, "abandoned").await).then_some(()) }
    })
    .await;
    let expired_after = killed_at.elapsed();
    assert!(
        expired_after >= Duration::from_secs(ttl as u64) - Duration::from_millis(500),
        "expired early, {expired_after:?} after the leader died"
    );
    assert!(exists(&mut c, "kept").await, "a lease kept alive expired during the failover");
    keepalive.abort();
}

/// As etcd's lessor does when promoted, a member that becomes leader gives every lease its TTL
/// plus an election timeout from then, so a restarted one-member cluster answers TimeToLive
/// with the whole TTL (for up to an election timeout). The leader's expiry task is kept idle
/// (a fault switch): the answer must not depend on that task having run since the election,
/// which under load it may not have (CI once saw 19 of 20 s).
#[tokio::test]
async fn a_new_leader_gives_every_lease_its_ttl_and_an_election_timeout() {
    let env = [("PHOENIX_TEST_FAULTS", "idle-lease-expiry")];
    let mut cluster = Cluster::start_with_env(1, &["--election-timeout", "3000"], &env).await;
    let mut c = cluster.client(0).await;
    let ttl = 20;
    let id = c.lease_grant(ttl, None).await.unwrap().id();
    cluster.restart_gracefully(0).await;
    let mut c = cluster.client(0).await;
    let answered = c.lease_time_to_live(id, None).await.unwrap().ttl();
    assert!(answered >= ttl, "TimeToLive answered {answered} s of a {ttl} s lease after the restart");
}

/// A leader cut off from its quorum renews no lease, not even for a follower that still forwards
/// keepalives to it: the rest of the cluster may have elected a leader whose countdown runs on.
#[tokio::test]
async fn a_leader_without_its_quorum_renews_no_lease() {
    let mut cluster = Cluster::start(5, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 5;
    let c = cluster.client(follower).await;
    let lease = c.clone().lease_grant(60, None).await.unwrap().id();
    for i in (0..5).filter(|&i| i != leader && i != follower) {
        cluster.kill(i);
    }
    poll_until(READY_TIMEOUT, "keepalives through the follower to be refused", || {
        let mut c = c.clone();
        async move {
            let Ok((mut keeper, mut answers)) = c.lease_keep_alive(lease).await else { return Some(()) };
            if keeper.keep_alive().await.is_err() {
                return Some(());
            }
            match answers.message().await {
                Ok(Some(answer)) if answer.ttl() > 0 => None,
                _ => Some(()),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_lease_revoked_and_granted_again_through_a_follower_gets_its_whole_ttl() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let mut c = cluster.client((leader + 1) % 3).await;
    let with_id = || Some(etcd_client::LeaseGrantOptions::new().with_id(7));
    c.lease_grant(6, with_id()).await.unwrap();
    // Let the leader's countdown of the first lease run down to its last seconds.
    poll_until(READY_TIMEOUT, "the lease's countdown to pass 3 s", || {
        let mut c = c.clone();
        async move { (c.lease_time_to_live(7, None).await.ok()?.ttl() <= 3).then_some(()) }
    })
    .await;
    c.lease_revoke(7).await.unwrap();
    c.lease_grant(6, with_id()).await.unwrap();
    let ttl = c.lease_time_to_live(7, None).await.unwrap().ttl();
    assert!(ttl >= 5, "the new lease 7 kept the old one's countdown: {ttl} s left of 6");
}
