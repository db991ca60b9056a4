//! The KV API on a one-member cluster, through the etcd-client crate: every Range, Put,
//! DeleteRange, Txn and Compact option, and etcd's exact error codes and messages.

mod support;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use support::{Cluster, TEST_TIMINGS};
use tonic::Code;

fn status_of(err: etcd_client::Error) -> (Code, String) {
    match err {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn single() -> (Cluster, Client) {
    let cluster = Cluster::start(1, TEST_TIMINGS).await;
    let client = cluster.client(0).await;
    (cluster, client)
}

fn keys(resp: &etcd_client::GetResponse) -> Vec<String> {
    resp.kvs().iter().map(|kv| kv.key_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn put_get_and_revisions_follow_etcd() {
    let (_cluster, mut c) = single().await;
    let first = c.put("foo", "bar", None).await.unwrap();
    let header = first.header().unwrap();
    assert_eq!(header.revision(), 2, "a new store is at revision 1");
    assert_ne!(header.cluster_id(), 0);
    assert_ne!(header.member_id(), 0);
    assert!(header.raft_term() >= 1);

    let second = c.put("foo", "baz", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(second.prev_key().unwrap().value(), b"bar");
    let got = c.get("foo", None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (2, 3, 2));
    assert_eq!(kv.value(), b"baz");

    let old = c.get("foo", Some(GetOptions::new().with_revision(2))).await.unwrap();
    assert_eq!(old.kvs()[0].value(), b"bar");
    assert_eq!(old.header().unwrap().revision(), 3, "the header carries the current revision");

    c.delete("foo", None).await.unwrap();
    c.put("foo", "again", None).await.unwrap();
    let kv = c.get("foo", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.mod_revision(), kv.version()), (5, 5, 1), "re-created after delete");
}

#[tokio::test]
async fn range_options_match_etcd() {
    let (_cluster, mut c) = single().await;
    for (k, v) in [("a", "3"), ("b", "1"), ("b1", "2"), ("b2", "0"), ("c", "4")] {
        c.put(k, v, None).await.unwrap();
    }
    c.put("b1", "5", None).await.unwrap(); // b1 at version 2, mod revision 7

    let prefix = c.get("b", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(&prefix), ["b", "b1", "b2"]);
    let from = c.get("b1", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(keys(&from), ["b1", "b2", "c"]);
    let all = c.get("\0", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(all.count(), 5);
    let range = c.get("a", Some(GetOptions::new().with_range("b2"))).await.unwrap();
    assert_eq!(keys(&range), ["a", "b", "b1"]);

    let limited = c.get("\0", Some(GetOptions::new().with_from_key().with_limit(2))).await.unwrap();
    assert_eq!((keys(&limited).len(), limited.more(), limited.count()), (2, true, 5));
    let exact = c.get("\0", Some(GetOptions::new().with_from_key().with_limit(5))).await.unwrap();
    assert!(!exact.more());

    let by_value = GetOptions::new().with_from_key().with_sort(SortTarget::Value, SortOrder::Descend);
    assert_eq!(keys(&c.get("\0", Some(by_value)).await.unwrap()), ["b1", "c", "a", "b", "b2"]);
    let by_key_desc = GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Descend).with_limit(2);
    let desc = c.get("b", Some(by_key_desc)).await.unwrap();
    assert_eq!((keys(&desc), desc.more()), (vec!["b2".to_string(), "b1".to_string()], true));
    let by_version = GetOptions::new().with_from_key().with_sort(SortTarget::Version, SortOrder::None);
    assert_eq!(keys(&c.get("\0", Some(by_version)).await.unwrap()).last().unwrap(), "b1");

    let keys_only = c.get("a", Some(GetOptions::new().with_keys_only())).await.unwrap();
    assert!(keys_only.kvs()[0].value().is_empty());
    let count_only = c.get("b", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((count_only.kvs().len(), count_only.count()), (0, 3));

    let newer = GetOptions::new().with_from_key().with_min_mod_revision(6);
    let filtered = c.get("\0", Some(newer)).await.unwrap();
    assert_eq!((keys(&filtered), filtered.count()), (vec!["b1".to_string(), "c".to_string()], 5));
    let older = GetOptions::new().with_from_key().with_max_create_revision(3);
    assert_eq!(keys(&c.get("\0", Some(older)).await.unwrap()), ["a", "b"]);

    let serializable = c.get("a", Some(GetOptions::new().with_serializable())).await.unwrap();
    assert_eq!(serializable.kvs()[0].value(), b"3");
}

#[tokio::test]
async fn put_and_delete_options() {
    let (_cluster, mut c) = single().await;
    c.put("k", "v1", None).await.unwrap();
    c.put("k", "", Some(PutOptions::new().with_ignore_value())).await.unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.version()), (&b"v1"[..], 2), "ignore_value keeps the value");

    let missing = c.put("nope", "", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert_eq!(status_of(missing), (Code::InvalidArgument, "etcdserver: key not found".into()));
    let missing = c.put("nope", "x", Some(PutOptions::new().with_ignore_lease())).await.unwrap_err();
    assert_eq!(status_of(missing), (Code::InvalidArgument, "etcdserver: key not found".into()));
    let with_value = c.put("k", "x", Some(PutOptions::new().with_ignore_value())).await.unwrap_err();
    assert_eq!(status_of(with_value), (Code::InvalidArgument, "etcdserver: value is provided".into()));
    let unknown_lease = c.put("k", "x", Some(PutOptions::new().with_lease(42))).await.unwrap_err();
    assert_eq!(status_of(unknown_lease), (Code::NotFound, "etcdserver: requested lease not found".into()));

    for k in ["p1", "p2", "p3", "q"] {
        c.put(k, "x", None).await.unwrap();
    }
    let deleted = c.delete("p", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert_eq!(deleted.deleted(), 3);
    assert_eq!(deleted.prev_kvs().len(), 3);
    let rev = deleted.header().unwrap().revision();
    let nothing = c.delete("p", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    assert_eq!((nothing.deleted(), nothing.header().unwrap().revision()), (0, rev), "no change, no revision");
}

#[tokio::test]
async fn txn_compares_branches_and_nesting() {
    let (_cluster, mut c) = single().await;
    c.put("x", "1", None).await.unwrap(); // revision 2

    let cas = Txn::new()
        .when([Compare::mod_revision("x", CompareOp::Equal, 2), Compare::value("x", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("x", "2", None), TxnOp::put("y", "1", None), TxnOp::get("x", None)])
        .or_else([TxnOp::get("x", None)]);
    let resp = c.txn(cas.clone()).await.unwrap();
    assert!(resp.succeeded());
    assert_eq!(resp.header().unwrap().revision(), 3, "all ops of a txn share one revision");
    match &resp.op_responses()[2] {
        TxnOpResponse::Get(get) => assert_eq!(get.kvs()[0].value(), b"2", "reads see the txn's writes"),
        other => panic!("unexpected {other:?}"),
    }
    let y = c.get("y", None).await.unwrap().kvs()[0].clone();
    assert_eq!(y.mod_revision(), 3);

    let again = c.txn(cas).await.unwrap();
    assert!(!again.succeeded());
    assert_eq!(again.header().unwrap().revision(), 3, "a read-only branch changes nothing");

    let missing = Txn::new().when([Compare::value("absent", CompareOp::NotEqual, "z")]).and_then([]);
    assert!(!c.txn(missing).await.unwrap().succeeded(), "a VALUE compare on a missing key fails");
    let absent = Txn::new().when([Compare::create_revision("absent", CompareOp::Equal, 0)]).and_then([]);
    assert!(c.txn(absent).await.unwrap().succeeded(), "a missing key has create_revision 0");
    let versions = Txn::new().when([Compare::version("x", CompareOp::Greater, 1)]).and_then([]);
    assert!(c.txn(versions).await.unwrap().succeeded());
    let ranged = Txn::new().when([Compare::version("x", CompareOp::Less, 5).with_range("z")]).and_then([]);
    assert!(c.txn(ranged).await.unwrap().succeeded(), "every key in the range passes");

    let nested = Txn::new().and_then([TxnOp::txn(
        Txn::new().when([Compare::lease("x", CompareOp::Equal, 0)]).and_then([TxnOp::delete("y", None)]),
    )]);
    let resp = c.txn(nested).await.unwrap();
    assert!(resp.succeeded());
    assert!(c.get("y", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn compaction_and_revision_errors() {
    let (_cluster, mut c) = single().await;
    for v in ["1", "2", "3"] {
        c.put("k", v, None).await.unwrap(); // revisions 2, 3, 4
    }
    c.compact(3, None).await.unwrap();
    let compacted = c.get("k", Some(GetOptions::new().with_revision(2))).await.unwrap_err();
    let expected = (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_string());
    assert_eq!(status_of(compacted), expected);
    let at = c.get("k", Some(GetOptions::new().with_revision(3))).await.unwrap();
    assert_eq!(at.kvs()[0].value(), b"2", "reading at the compacted revision is allowed");
    assert_eq!(status_of(c.compact(3, None).await.unwrap_err()), expected);
    let future = (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".to_string());
    assert_eq!(status_of(c.compact(99, None).await.unwrap_err()), future);
    let read_future = c.get("k", Some(GetOptions::new().with_revision(99))).await.unwrap_err();
    assert_eq!(status_of(read_future), future);
}

#[tokio::test]
async fn invalid_requests_get_etcds_errors() {
    let (_cluster, mut c) = single().await;
    let empty = (Code::InvalidArgument, "etcdserver: key is not provided".to_string());
    assert_eq!(status_of(c.put("", "v", None).await.unwrap_err()), empty);
    assert_eq!(status_of(c.get("", None).await.unwrap_err()), empty);
    assert_eq!(status_of(c.delete("", None).await.unwrap_err()), empty);

    let duplicate = Txn::new().and_then([TxnOp::put("a", "1", None), TxnOp::put("a", "2", None)]);
    let dup = (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".to_string());
    assert_eq!(status_of(c.txn(duplicate).await.unwrap_err()), dup);
    let too_many = Txn::new().and_then((0..129).map(|i| TxnOp::put(format!("k{i}"), "v", None)).collect::<Vec<_>>());
    let ops = (Code::InvalidArgument, "etcdserver: too many operations in txn request".to_string());
    assert_eq!(status_of(c.txn(too_many).await.unwrap_err()), ops);
    assert_eq!(c.status().await.unwrap().header().unwrap().revision(), 1, "nothing bad reached the log");
}

#[tokio::test]
async fn request_size_and_quota_limits() {
    let cluster = Cluster::start(1, &["--max-request-bytes", "1024", "--quota-backend-bytes", "1"]).await;
    let mut c = cluster.client(0).await;
    let big = c.put("big", vec![b'x'; 2048], None).await.unwrap_err();
    assert_eq!(status_of(big), (Code::InvalidArgument, "etcdserver: request is too large".into()));

    let full = c.put("k", "v", None).await.unwrap_err();
    assert_eq!(status_of(full), (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".into()));
    let alarms = c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.unwrap();
    assert_eq!(alarms.alarms().len(), 1);
    assert_eq!(alarms.alarms()[0].alarm(), etcd_client::AlarmType::Nospace);
    assert_eq!(c.status().await.unwrap().errors().len(), 1);
    let grant = c.lease_grant(60, None).await.unwrap_err();
    assert_eq!(status_of(grant), (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".into()));
    // As in etcd, only a txn's own puts cost space: a txn of deletes can still free some.
    let deletes = etcd_client::Txn::new().and_then([etcd_client::TxnOp::delete("k", None)]);
    assert!(c.txn(deletes).await.unwrap().succeeded());
    let puts = etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("k", "v", None)]);
    let full = c.txn(puts).await.unwrap_err();
    assert_eq!(status_of(full), (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".into()));

    let member = alarms.alarms()[0].member_id();
    let mut disarm = etcd_client::AlarmOptions::new();
    disarm.with_member(member);
    c.alarm(etcd_client::AlarmAction::Deactivate, etcd_client::AlarmType::Nospace, Some(disarm)).await.unwrap();
    let after = c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.unwrap();
    assert!(after.alarms().is_empty());
}

/// etcd's way out of NOSPACE: compact, defragment, disarm. sled never shrinks its file, so the
/// quota must then count what the store holds, not the file's size.
#[tokio::test]
async fn a_store_over_its_quota_takes_writes_again_once_compacted_defragmented_and_disarmed() {
    let cluster = Cluster::start(1, &["--quota-backend-bytes", "4000000"]).await;
    let mut c = cluster.client(0).await;
    let value = vec![b'x'; 100_000];
    let mut refused = None;
    for i in 0..200 {
        if let Err(e) = c.put(format!("k{}", i % 5), value.clone(), None).await {
            refused = Some(e);
            break;
        }
    }
    let full = refused.expect("200 puts of 100 kB fit in a quota of 4 MB");
    assert_eq!(status_of(full), (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".into()));

    let revision = c.status().await.unwrap().header().unwrap().revision();
    c.compact(revision, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    c.defragment().await.unwrap();
    let member = c.status().await.unwrap().header().unwrap().member_id();
    let mut disarm = etcd_client::AlarmOptions::new();
    disarm.with_member(member);
    c.alarm(etcd_client::AlarmAction::Deactivate, etcd_client::AlarmType::Nospace, Some(disarm)).await.unwrap();
    c.put("k0", value, None).await.unwrap();
    let alarms = c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.unwrap();
    assert!(alarms.alarms().is_empty(), "the put raised NOSPACE again");
}

#[tokio::test]
async fn maintenance_answers_and_unwritten_services_say_unimplemented() {
    let (_cluster, mut c) = single().await;
    c.put("k", "v", None).await.unwrap();
    let status = c.status().await.unwrap();
    assert!(status.version().starts_with("3.5."));
    assert_eq!(status.leader(), status.header().unwrap().member_id());
    assert!(status.raft_index() >= 2 && status.raft_applied_index() >= 2);
    assert!(status.db_size() > 0);

    let hash = c.hash_kv(0).await.unwrap();
    assert_eq!(hash.hash(), c.hash_kv(0).await.unwrap().hash());
    c.defragment().await.unwrap();

    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "m1");

    let auth = c.user_list().await.unwrap_err();
    assert_eq!(status_of(auth), (Code::Unimplemented, "Auth is not implemented yet in Phoenix".into()));
    let mut maintenance = c.maintenance_client();
    let downgrade = maintenance.downgrade(etcd_client::DowngradeOptions::Validate("3.4.0".into())).await.unwrap_err();
    assert_eq!(status_of(downgrade), (Code::Unimplemented, "Downgrade is not implemented yet in Phoenix".into()));
}
