//! Quorum loss on real processes: a majority is killed, the survivor is reset with etcd's
//! --force-new-cluster and keeps every write it holds, the dead members are refused when they
//! come back with their old data, and cleaned hosts grow the cluster back.

mod support;

use etcd_client::{Client, GetOptions};
use support::{free_ports, poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};
use tonic::Code;

async fn count(client: &mut Client, prefix: &str) -> i64 {
    let options = GetOptions::new().with_prefix().with_count_only();
    client.get(prefix, Some(options)).await.unwrap().count()
}

#[tokio::test]
async fn the_survivor_of_a_lost_majority_is_reset_and_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    let mut client = cluster.client(survivor).await;
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        client.put(format!("before/{i:03}"), "v", None).await.unwrap();
        acknowledged.push(format!("before/{i:03}"));
    }
    cluster.kill(follower);
    for i in 0..50 {
        client.put(format!("after/{i:03}"), "v", None).await.unwrap();
        acknowledged.push(format!("after/{i:03}"));
    }
    cluster.kill(leader);

    // Quorum is lost: writes are refused with a retryable error.
    let refused = client.put("lost-quorum", "v", None).await.unwrap_err();
    match refused {
        etcd_client::Error::GRpcStatus(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("{other:?}"),
    }

    // Reset the survivor, etcd's way: restart it with --force-new-cluster.
    assert_eq!(cluster.members[survivor].terminate(), Some(0));
    cluster.members[survivor].add_flag("--force-new-cluster");
    cluster.restart(survivor).await;
    assert!(cluster.members[survivor].log_text().contains("reset into a one-member cluster"));
    let mut client = cluster.client(survivor).await;
    assert_eq!(client.member_list().await.unwrap().members().len(), 1);
    let stored = client.get("", Some(GetOptions::new().with_from_key().with_keys_only())).await.unwrap();
    let stored: std::collections::HashSet<&str> = stored.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|k| !stored.contains(k.as_str())).collect();
    assert!(lost.is_empty(), "acknowledged writes lost by the reset: {lost:?}");
    client.put("after-reset", "v", None).await.unwrap();
    let report = std::fs::read_to_string(cluster.members[survivor].data_dir.join("reset.json")).unwrap();
    assert!(report.contains("\"lost_entries\": 0"), "{report}");

    // The flag left in place is ignored: the reset happens once.
    assert_eq!(cluster.members[survivor].terminate(), Some(0));
    cluster.restart(survivor).await;
    assert!(cluster.members[survivor].log_text().contains("--force-new-cluster ignored"));

    // The dead members come back with their old data: refused, and the survivor is unaffected.
    for dead in [follower, leader] {
        cluster.members[dead].spawn_again();
    }
    for dead in [follower, leader] {
        assert_eq!(cluster.members[dead].wait_exit(READY_TIMEOUT), Some(1), "an old member kept running");
        assert!(cluster.members[dead].log_text().contains("phoenixctl clean --data-dir"));
    }
    let mut client = cluster.client(survivor).await;
    assert_eq!(count(&mut client, "before/").await + count(&mut client, "after/").await, 100);

    // Cleaned hosts grow the cluster back with --join.
    let endpoint = cluster.members[survivor].endpoint();
    for (i, name) in ["n4", "n5"].into_iter().enumerate() {
        let ports = free_ports(2);
        let initial = format!("{name}=http://127.0.0.1:{}", ports[1]);
        let mut flags = vec!["--join", &endpoint, "--initial-cluster", &initial];
        flags.extend(TEST_TIMINGS);
        let index = cluster.spawn_member(name.to_string(), ports[0], ports[1], &flags);
        cluster.wait_ready(index).await;
        poll_until(READY_TIMEOUT, "the new member to hold every write", || {
            let endpoint = cluster.members[index].endpoint();
            async move {
                let mut c = Client::connect([endpoint], None).await.ok()?;
                let options = GetOptions::new().with_prefix().with_count_only().with_serializable();
                (c.get("after/", Some(options)).await.ok()?.count() == 50).then_some(())
            }
        })
        .await;
        assert_eq!(client.member_list().await.unwrap().members().len(), 2 + i);
    }
}
