//! Differential test: the same KV operations against Phoenix and real etcd 3.4 (Debian's
//! etcd-server), compared response by response after removing what legitimately differs
//! (cluster and member IDs, Raft terms). Skipped, visibly, where etcd is not installed.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use support::{free_ports, poll_until, Cluster, READY_TIMEOUT};

const ETCD: &str = "/usr/bin/etcd";

/// A single-member etcd in a temporary directory, killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2);
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let child = Command::new(ETCD)
            .args(["--name", "m1", "--data-dir"])
            .arg(dir.path().join("m1.etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m1={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd { child, endpoint: client, _dir: dir };
        poll_until(READY_TIMEOUT, "etcd ready", || async {
            let mut c = Client::connect([etcd.endpoint.clone()], None).await.ok()?;
            (c.status().await.ok()?.leader() != 0).then_some(())
        })
        .await;
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces the numbers after the fields that differ between any two clusters.
fn normalize(text: &str) -> String {
    let mut out = text.to_string();
    for field in ["cluster_id: ", "member_id: ", "raft_term: "] {
        let mut result = String::new();
        let mut rest = out.as_str();
        while let Some(at) = rest.find(field) {
            result.push_str(&rest[..at + field.len()]);
            rest = rest[at + field.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
            result.push('_');
        }
        result.push_str(rest);
        out = result;
    }
    out
}

fn outcome<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>) -> String {
    match result {
        Ok(resp) => normalize(&format!("{resp:?}")),
        Err(etcd_client::Error::GRpcStatus(status)) => format!("error {:?}: {}", status.code(), status.message()),
        Err(other) => format!("client error: {other}"),
    }
}

/// The workload: each step's outcome, in order.
async fn workload(mut c: Client) -> Vec<String> {
    let mut out = Vec::new();
    out.push(outcome(c.put("a", "1", None).await));
    out.push(outcome(c.put("a", "2", Some(PutOptions::new().with_prev_key())).await));
    for (k, v) in [("b", "x"), ("b/1", "y"), ("b/2", "z"), ("c", "w"), ("key\0zero", "0")] {
        out.push(outcome(c.put(k, v, None).await));
    }
    out.push(outcome(c.put("a", "", Some(PutOptions::new().with_ignore_value())).await));
    out.push(outcome(c.put("missing", "", Some(PutOptions::new().with_ignore_value())).await));
    out.push(outcome(c.put("a", "v", Some(PutOptions::new().with_lease(7))).await));
    out.push(outcome(c.put("", "v", None).await));

    out.push(outcome(c.get("a", None).await));
    out.push(outcome(c.get("b", Some(GetOptions::new().with_prefix())).await));
    out.push(outcome(c.get("b", Some(GetOptions::new().with_from_key().with_limit(2))).await));
    out.push(outcome(c.get("\0", Some(GetOptions::new().with_from_key().with_count_only())).await));
    out.push(outcome(c.get("a", Some(GetOptions::new().with_range("c").with_keys_only())).await));
    let by_mod = GetOptions::new().with_from_key().with_sort(SortTarget::Mod, SortOrder::Descend);
    out.push(outcome(c.get("\0", Some(by_mod)).await));
    let by_value = GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::None);
    out.push(outcome(c.get("b", Some(by_value)).await));
    out.push(outcome(c.get("a", Some(GetOptions::new().with_revision(2))).await));
    out.push(outcome(c.get("a", Some(GetOptions::new().with_revision(1000))).await));
    let filtered = GetOptions::new().with_from_key().with_min_mod_revision(4).with_max_create_revision(6);
    out.push(outcome(c.get("\0", Some(filtered)).await));
    out.push(outcome(c.get("key\0zero", Some(GetOptions::new().with_serializable())).await));

    let cas = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "2"), Compare::version("b", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("a", "3", Some(PutOptions::new().with_prev_key())), TxnOp::get("a", None)])
        .or_else([TxnOp::get("b", None)]);
    out.push(outcome(c.txn(cas.clone()).await));
    out.push(outcome(c.txn(cas).await));
    let nested = Txn::new().when([Compare::create_revision("nope", CompareOp::Equal, 0)]).and_then([
        TxnOp::delete("b/", Some(DeleteOptions::new().with_prefix().with_prev_key())),
        TxnOp::txn(
            Txn::new().when([Compare::mod_revision("c", CompareOp::Less, 100)]).and_then([TxnOp::put("d", "n", None)]),
        ),
    ]);
    out.push(outcome(c.txn(nested).await));
    let ranged = Txn::new().when([Compare::lease("a", CompareOp::NotEqual, 1).with_range("z")]).and_then([]);
    out.push(outcome(c.txn(ranged).await));
    let duplicate = Txn::new()
        .and_then([TxnOp::put("x", "1", None), TxnOp::delete("w", Some(DeleteOptions::new().with_range("y")))]);
    out.push(outcome(c.txn(duplicate).await));

    out.push(outcome(c.delete("c", Some(DeleteOptions::new().with_prev_key())).await));
    out.push(outcome(c.delete("c", None).await));
    out.push(outcome(c.compact(5, None).await));
    out.push(outcome(c.compact(5, None).await));
    out.push(outcome(c.compact(1000, None).await));
    out.push(outcome(c.get("a", Some(GetOptions::new().with_revision(4))).await));
    out.push(outcome(c.get("a", Some(GetOptions::new().with_revision(5))).await));
    out.push(outcome(c.get("\0", Some(GetOptions::new().with_from_key())).await));
    // The hashes differ by design (etcd hashes its bbolt records); what they name must not.
    for revision in [0, 6, 2, 1000] {
        let hashed = c.hash_kv(revision).await.map(|resp| {
            let header_revision = resp.header().map(|h| h.revision());
            format!("hashkv header revision {header_revision:?}, compact revision {}", resp.compact_version())
        });
        out.push(outcome(hashed));
    }
    out
}

#[tokio::test]
async fn kv_responses_match_real_etcd() {
    if !Path::new(ETCD).exists() {
        eprintln!("SKIPPED: {ETCD} is not installed (apt-get install etcd-server); .ci/run installs it");
        return;
    }
    let etcd = Etcd::start().await;
    let phoenix = Cluster::start(1, &[]).await;
    let expected = workload(Client::connect([etcd.endpoint.clone()], None).await.unwrap()).await;
    let actual = workload(phoenix.client(0).await).await;
    let mut differences = Vec::new();
    for (step, (want, got)) in expected.iter().zip(&actual).enumerate() {
        if want != got {
            differences.push(format!("step {step}:\n  etcd:    {want}\n  phoenix: {got}"));
        }
    }
    assert!(differences.is_empty(), "{} differences from etcd:\n{}", differences.len(), differences.join("\n"));
}

/// How long a watch response may take; etcd syncs unsynced watchers every 100 ms.
const WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The next response on a watch stream, normalised.
async fn next_response(stream: &mut etcd_client::WatchStream) -> String {
    match tokio::time::timeout(WATCH_WAIT, stream.message()).await {
        Ok(result) => outcome(result),
        Err(_) => "no response".to_string(),
    }
}

/// A watch session: history with prev_kv, live events, filters, IDs, cancel, progress and
/// compaction; every response in order.
async fn watch_session(mut c: Client) -> Vec<String> {
    use etcd_client::{WatchFilterType, WatchOptions};
    let mut out = Vec::new();
    out.push(outcome(c.put("a", "1", None).await)); // 2
    out.push(outcome(c.put("a", "2", None).await)); // 3
    out.push(outcome(c.put("b", "1", None).await)); // 4
    out.push(outcome(c.delete("a", None).await)); // 5
    let txn = Txn::new().and_then([TxnOp::put("c", "1", None), TxnOp::put("d", "1", None), TxnOp::delete("b", None)]);
    out.push(outcome(c.txn(txn).await)); // 6
    out.push(outcome(c.put("a", "3", None).await)); // 7

    // Everything from revision 2, with previous values: created, then the history.
    let all = WatchOptions::new().with_all_keys().with_start_revision(2).with_prev_key();
    let mut stream = c.watch("", Some(all)).await.unwrap();
    out.push(next_response(&mut stream).await);
    out.push(next_response(&mut stream).await);
    // Live events.
    out.push(outcome(c.put("a", "4", None).await)); // 8
    out.push(next_response(&mut stream).await);

    // A client-chosen ID with a filter, then the same ID again.
    let no_put = WatchOptions::new().with_watch_id(5).with_from_key().with_filters([WatchFilterType::NoPut]);
    stream.watch("c", Some(no_put.clone())).await.unwrap();
    out.push(next_response(&mut stream).await);
    stream.watch("c", Some(no_put)).await.unwrap();
    out.push(next_response(&mut stream).await);
    out.push(outcome(c.delete("c", Some(DeleteOptions::new().with_prev_key())).await)); // 9
                                                                                        // Both watchers get the delete; etcd sends to its watchers in no fixed order.
    let mut both = [next_response(&mut stream).await, next_response(&mut stream).await];
    both.sort();
    out.extend(both);

    // Progress while every watcher is synced; cancel of an unknown ID says nothing, so the
    // progress response is the next message.
    stream.cancel(99).await.unwrap();
    stream.request_progress().await.unwrap();
    out.push(next_response(&mut stream).await);
    stream.cancel(5).await.unwrap();
    out.push(next_response(&mut stream).await);

    // Compaction: a watch below it is created and then canceled; one at it replays from it.
    out.push(outcome(c.compact(7, None).await));
    stream.watch("a", Some(WatchOptions::new().with_start_revision(3).with_watch_id(10))).await.unwrap();
    out.push(next_response(&mut stream).await);
    out.push(next_response(&mut stream).await);
    stream
        .watch("a", Some(WatchOptions::new().with_start_revision(7).with_watch_id(11).with_prev_key()))
        .await
        .unwrap();
    out.push(next_response(&mut stream).await);
    out.push(next_response(&mut stream).await);

    // A negative start revision is below the compaction too; an empty range is refused.
    stream.watch("a", Some(WatchOptions::new().with_start_revision(-1))).await.unwrap();
    out.push(next_response(&mut stream).await);
    out.push(next_response(&mut stream).await);
    stream.watch("b", Some(WatchOptions::new().with_range("a"))).await.unwrap();
    out.push(next_response(&mut stream).await);
    stream.watch("b", Some(WatchOptions::new().with_range("b"))).await.unwrap();
    out.push(next_response(&mut stream).await);
    out
}

#[tokio::test]
async fn watch_responses_match_real_etcd() {
    if !Path::new(ETCD).exists() {
        eprintln!("SKIPPED: {ETCD} is not installed (apt-get install etcd-server); .ci/run installs it");
        return;
    }
    let etcd = Etcd::start().await;
    let phoenix = Cluster::start(1, &[]).await;
    let expected = watch_session(Client::connect([etcd.endpoint.clone()], None).await.unwrap()).await;
    let actual = watch_session(phoenix.client(0).await).await;
    let mut differences = Vec::new();
    for (step, (want, got)) in expected.iter().zip(&actual).enumerate() {
        if want != got {
            differences.push(format!("step {step}:\n  etcd:    {want}\n  phoenix: {got}"));
        }
    }
    assert!(differences.is_empty(), "{} differences from etcd:\n{}", differences.len(), differences.join("\n"));
}
