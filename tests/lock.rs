//! The Lock and Election services (etcd's v3lock and v3election) through etcd-client.

mod support;

use std::time::Duration;

use etcd_client::{Client, LockOptions, ProclaimOptions, ResignOptions};
use support::{Cluster, TEST_TIMINGS};
use tonic::Code;

async fn lease(client: &mut Client, ttl: i64) -> i64 {
    client.lease_grant(ttl, None).await.unwrap().id()
}

#[tokio::test]
async fn a_lock_has_one_holder_and_passes_on_unlock_or_expiry() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    let (lease_a, lease_b, lease_c) = (lease(&mut a, 30).await, lease(&mut b, 30).await, lease(&mut b, 2).await);

    let held = a.lock("my-lock", Some(LockOptions::new().with_lease(lease_a))).await.unwrap();
    assert_eq!(held.key(), format!("my-lock/{lease_a:x}").as_bytes());
    let again = a.lock("my-lock", Some(LockOptions::new().with_lease(lease_a))).await.unwrap();
    assert_eq!(again.key(), held.key(), "locking twice with one lease is one acquisition");

    let mut waiting_b = b.clone();
    let held_key = held.key().to_vec();
    let mut contender = tokio::spawn(async move {
        let key = waiting_b.lock("my-lock", Some(LockOptions::new().with_lease(lease_b))).await.unwrap().key().to_vec();
        // Exclusion, whatever the timing: the first holder's key is gone when the second holds.
        let first_still_held = waiting_b.get(held_key, None).await.unwrap().count() > 0;
        (key, first_still_held)
    });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut contender).await;
    assert!(early.is_err(), "a second holder got the lock");
    a.unlock(held.key()).await.unwrap();
    let (key_b, first_still_held) =
        tokio::time::timeout(Duration::from_secs(10), contender).await.expect("lock not passed on").unwrap();
    assert!(!first_still_held, "two holders at once");
    assert_eq!(key_b, format!("my-lock/{lease_b:x}").as_bytes());

    // The next holder's lease expires instead of unlocking: the lock passes on all the same.
    b.unlock(key_b).await.unwrap();
    let short = b.lock("my-lock", Some(LockOptions::new().with_lease(lease_c))).await.unwrap();
    assert_eq!(short.key(), format!("my-lock/{lease_c:x}").as_bytes());
    let next =
        tokio::time::timeout(Duration::from_secs(15), a.lock("my-lock", Some(LockOptions::new().with_lease(lease_a))));
    assert!(next.await.expect("expiry did not release the lock").is_ok());
    assert_eq!(a.get(short.key(), None).await.unwrap().count(), 0, "granted while the expiring holder held it");

    let missing = a.lock("other", Some(LockOptions::new().with_lease(999))).await.unwrap_err();
    match missing {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!((s.code(), s.message()), (Code::NotFound, "etcdserver: requested lease not found"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn elections_have_one_leader_who_proclaims_and_resigns() {
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let mut c = cluster.client(0).await;
    let none = c.leader("vote").await.unwrap_err();
    match none {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!((s.code(), s.message()), (Code::Unknown, "election: no leader"))
        }
        other => panic!("{other:?}"),
    }
    let (first, second) = (lease(&mut c, 30).await, lease(&mut c, 30).await);
    let mut observer = c.observe("vote").await.unwrap();

    let won = c.campaign("vote", "alpha", first).await.unwrap();
    let leader_key = won.leader().unwrap().clone();
    assert_eq!(leader_key.key(), format!("vote/{first:x}").as_bytes());
    let seen = observer.message().await.unwrap().unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"alpha");

    let mut challenger = c.clone();
    let first_key = leader_key.key().to_vec();
    let campaign = tokio::spawn(async move {
        let won = challenger.campaign("vote", "beta", second).await;
        // One leader, whatever the timing: the first leader's key is gone when the second wins.
        let first_still_leads = challenger.get(first_key, None).await.unwrap().count() > 0;
        won.map(|won| (won, first_still_leads))
    });
    c.proclaim("alpha-2", Some(ProclaimOptions::new().with_leader(leader_key.clone()))).await.unwrap();
    assert_eq!(observer.message().await.unwrap().unwrap().kv().unwrap().value(), b"alpha-2");
    assert_eq!(c.leader("vote").await.unwrap().kv().unwrap().value(), b"alpha-2");
    assert!(!campaign.is_finished(), "two leaders at once");

    c.resign(Some(ResignOptions::new().with_leader(leader_key.clone()))).await.unwrap();
    let (beta, first_still_leads) =
        tokio::time::timeout(Duration::from_secs(10), campaign).await.expect("no new leader").unwrap().unwrap();
    assert!(!first_still_leads, "two leaders at once");
    assert_eq!(beta.leader().unwrap().key(), format!("vote/{second:x}").as_bytes());
    assert_eq!(observer.message().await.unwrap().unwrap().kv().unwrap().value(), b"beta");

    let stale = c.proclaim("again", Some(ProclaimOptions::new().with_leader(leader_key))).await.unwrap_err();
    match stale {
        etcd_client::Error::GRpcStatus(s) => {
            assert_eq!((s.code(), s.message()), (Code::Unknown, "election: not leader"))
        }
        other => panic!("{other:?}"),
    }
}
