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
