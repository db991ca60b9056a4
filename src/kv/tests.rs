//! etcd's MVCC rules, table-driven and without a network.
//!
//! Each script runs its steps against a fresh store in order and compares a compact rendering
//! of every answer with the expected one. The expectations are etcd's: where a rule was not
//! obvious it was checked against a real etcd 3.4.23 with the same requests (the notes beside
//! those cases say what etcd does).
//!
//! Rendering: a key-value is `key=value@create/mod/vVERSION`; a read is
//! `rev=HEADER count=N [more] [kvs]`; a refusal is `Code: message`.

use tonic::Code;

use super::KvStore;
use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::range_request::{SortOrder, SortTarget};
use crate::pb::{self, command, command_result, request_op, response_op};
use crate::pb::{Command, CompactionRequest, Compare, DeleteRangeRequest, KeyValue, PutRequest, RangeRequest};
use crate::pb::{RangeResponse, RequestOp, TxnRequest, TxnResponse};
use crate::Error;

const COMPACTED: &str = "OutOfRange: etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "OutOfRange: etcdserver: mvcc: required revision is a future revision";
const KEY_NOT_FOUND: &str = "InvalidArgument: etcdserver: key not found";
const LEASE_NOT_FOUND: &str = "NotFound: etcdserver: requested lease not found";
const DUPLICATE_KEY: &str = "InvalidArgument: etcdserver: duplicate key given in txn request";
const NO_SPACE: &str = "ResourceExhausted: etcdserver: mvcc: database space exceeded";

/// A store in a temporary sled database that disappears with it.
struct Fixture {
    _db: sled::Db,
    store: KvStore,
}

impl Fixture {
    fn new() -> Fixture {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store = KvStore::open(db.open_tree("kv").unwrap()).unwrap();
        Fixture { _db: db, store }
    }

    /// Applies commands as one batch, the way the state machine applies one Raft entry.
    fn apply(&self, commands: &[Command]) -> Vec<String> {
        let mut txn = self.store.write().unwrap();
        let results: Vec<_> = commands.iter().map(|c| show_result(&txn.execute(c).unwrap())).collect();
        txn.commit().unwrap();
        results
    }

    fn run(&self, step: &Step) -> String {
        match step {
            Step::Write(commands) => self.apply(commands).join(" | "),
            Step::Read(req) => show_read(self.store.range(req)),
            Step::Physical => {
                self.store.compact_physically().unwrap();
                "physical".into()
            }
        }
    }

    /// Every live key and value, in key order.
    fn keys(&self) -> String {
        show_keys(&self.store.range(&range("\0", "\0")).unwrap())
    }
}

enum Step {
    /// Commands applied as one batch.
    Write(Vec<Command>),
    /// A Range served from the store, as the read path serves it.
    Read(RangeRequest),
    /// Removes the history below the compacted revision.
    Physical,
}

fn command(op: command::Op) -> Step {
    Step::Write(vec![Command::from(op)])
}

impl From<PutRequest> for Step {
    fn from(req: PutRequest) -> Step {
        command(command::Op::Put(req))
    }
}

impl From<DeleteRangeRequest> for Step {
    fn from(req: DeleteRangeRequest) -> Step {
        command(command::Op::DeleteRange(req))
    }
}

impl From<TxnRequest> for Step {
    fn from(req: TxnRequest) -> Step {
        command(command::Op::Txn(req))
    }
}

impl From<CompactionRequest> for Step {
    fn from(req: CompactionRequest) -> Step {
        command(command::Op::Compaction(req))
    }
}

impl From<pb::AlarmRequest> for Step {
    fn from(req: pb::AlarmRequest) -> Step {
        command(command::Op::Alarm(req))
    }
}

impl From<pb::LeaseGrantRequest> for Step {
    fn from(req: pb::LeaseGrantRequest) -> Step {
        command(command::Op::LeaseGrant(req))
    }
}

impl From<pb::LeaseRevokeRequest> for Step {
    fn from(req: pb::LeaseRevokeRequest) -> Step {
        command(command::Op::LeaseRevoke(req))
    }
}

impl From<RangeRequest> for Step {
    fn from(req: RangeRequest) -> Step {
        Step::Read(req)
    }
}

/// Several commands in one batch (one Raft entry).
fn batch(steps: Vec<Step>) -> Step {
    let mut commands = Vec::new();
    for step in steps {
        let Step::Write(mut more) = step else { panic!("only writes can be batched") };
        commands.append(&mut more);
    }
    Step::Write(commands)
}

/// Runs the steps in order against a fresh store; returns the store for further checks.
fn run(script: Vec<(Step, &str)>) -> Fixture {
    let fixture = Fixture::new();
    for (i, (step, want)) in script.iter().enumerate() {
        assert_eq!(fixture.run(step), *want, "step {i}");
    }
    fixture
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn del(key: &str, range_end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest { key: key.into(), range_end: range_end.into(), ..Default::default() }
}

fn get(key: &str) -> RangeRequest {
    range(key, "")
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: range_end.into(), ..Default::default() }
}

fn at(revision: i64, req: RangeRequest) -> RangeRequest {
    RangeRequest { revision, ..req }
}

fn sorted(target: SortTarget, order: SortOrder, limit: i64) -> RangeRequest {
    RangeRequest { sort_target: target as i32, sort_order: order as i32, limit, ..range("s/", "s0") }
}

fn compact(revision: i64) -> CompactionRequest {
    CompactionRequest { revision, physical: false }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare, success, failure }
}

/// A compare whose target is the kind of `value` (etcd's clients build them this way).
fn cmp(key: &str, result: CompareResult, value: TargetUnion) -> Compare {
    let target = match value {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        key: key.into(),
        result: result as i32,
        target: target as i32,
        target_union: Some(value),
        range_end: vec![],
    }
}

fn value(v: &str) -> TargetUnion {
    TargetUnion::Value(v.into())
}

trait IntoOp {
    fn op(self) -> RequestOp;
}

impl IntoOp for PutRequest {
    fn op(self) -> RequestOp {
        RequestOp { request: Some(request_op::Request::RequestPut(self)) }
    }
}

impl IntoOp for DeleteRangeRequest {
    fn op(self) -> RequestOp {
        RequestOp { request: Some(request_op::Request::RequestDeleteRange(self)) }
    }
}

impl IntoOp for RangeRequest {
    fn op(self) -> RequestOp {
        RequestOp { request: Some(request_op::Request::RequestRange(self)) }
    }
}

impl IntoOp for TxnRequest {
    fn op(self) -> RequestOp {
        RequestOp { request: Some(request_op::Request::RequestTxn(self)) }
    }
}

fn esc(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn show_kv(kv: &KeyValue) -> String {
    let lease = if kv.lease == 0 { String::new() } else { format!(" lease={}", kv.lease) };
    format!("{}={}@{}/{}/v{}{lease}", esc(&kv.key), esc(&kv.value), kv.create_revision, kv.mod_revision, kv.version)
}

fn show_kvs(kvs: &[KeyValue]) -> String {
    kvs.iter().map(show_kv).collect::<Vec<_>>().join(", ")
}

fn rev(header: &Option<pb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(-1, |h| h.revision)
}

fn show_range(resp: &RangeResponse) -> String {
    let more = if resp.more { " more" } else { "" };
    format!("rev={} count={}{more} [{}]", rev(&resp.header), resp.count, show_kvs(&resp.kvs))
}

/// Only the keys (with their values when present): for tables about which keys come back.
fn show_keys(resp: &RangeResponse) -> String {
    let keys: Vec<String> = resp
        .kvs
        .iter()
        .map(|kv| if kv.value.is_empty() { esc(&kv.key) } else { format!("{}={}", esc(&kv.key), esc(&kv.value)) })
        .collect();
    let more = if resp.more { " more" } else { "" };
    format!("count={}{more} [{}]", resp.count, keys.join(" "))
}

fn show_error(err: &Error) -> String {
    format!("{:?}: {err}", err.code())
}

fn show_read(result: crate::Result<RangeResponse>) -> String {
    match result {
        Ok(resp) => show_range(&resp),
        Err(err) => show_error(&err),
    }
}

fn show_txn(resp: &TxnResponse) -> String {
    let branch = if resp.succeeded { "success" } else { "failure" };
    let ops: Vec<String> = resp.responses.iter().map(show_op).collect();
    format!("rev={} {branch} [{}]", rev(&resp.header), ops.join("; "))
}

fn show_op(op: &pb::ResponseOp) -> String {
    match &op.response {
        Some(response_op::Response::ResponseRange(r)) => format!("range {}", show_range(r)),
        Some(response_op::Response::ResponsePut(r)) => format!("put {}", show_put(r)),
        Some(response_op::Response::ResponseDeleteRange(r)) => format!("delete {}", show_delete(r)),
        Some(response_op::Response::ResponseTxn(r)) => format!("txn {}", show_txn(r)),
        None => "none".into(),
    }
}

fn show_put(resp: &pb::PutResponse) -> String {
    match &resp.prev_kv {
        Some(prev) => format!("rev={} prev={}", rev(&resp.header), show_kv(prev)),
        None => format!("rev={}", rev(&resp.header)),
    }
}

fn show_delete(resp: &pb::DeleteRangeResponse) -> String {
    let prev = if resp.prev_kvs.is_empty() { String::new() } else { format!(" prev=[{}]", show_kvs(&resp.prev_kvs)) };
    format!("rev={} deleted={}{prev}", rev(&resp.header), resp.deleted)
}

fn show_result(result: &pb::CommandResult) -> String {
    use command_result::Result as R;
    match result.result.as_ref().expect("every command has a result") {
        R::Put(r) => show_put(r),
        R::DeleteRange(r) => show_delete(r),
        R::Txn(r) => show_txn(r),
        R::Compaction(r) => format!("rev={}", rev(&r.header)),
        R::Alarm(r) => format!("alarms={}", r.alarms.len()),
        R::MemberAttributes(h) => format!("rev={}", h.revision),
        R::LeaseGrant(r) => format!("rev={} lease={} ttl={}", rev(&r.header), r.id, r.ttl),
        R::LeaseRevoke(r) => format!("rev={}", rev(&r.header)),
        R::RevisionBump(h) => format!("rev={}", h.revision),
        R::Error(e) => format!("{:?}: {}", Code::from_i32(e.code), e.message),
    }
}

#[test]
fn revisions_versions_and_prev_kv() {
    run(vec![
        (get("k").into(), "rev=1 count=0 []"), // a new store is at revision 1
        (put("k", "1").into(), "rev=2"),
        (PutRequest { prev_kv: true, ..put("k", "2") }.into(), "rev=3 prev=k=1@2/2/v1"),
        (get("k").into(), "rev=3 count=1 [k=2@2/3/v2]"),
        (DeleteRangeRequest { prev_kv: true, ..del("k", "") }.into(), "rev=4 deleted=1 prev=[k=2@2/3/v2]"),
        (del("k", "").into(), "rev=4 deleted=0"), // deleting nothing is no change: no revision
        (get("k").into(), "rev=4 count=0 []"),
        // A re-created key starts over: version 1, create_revision is the new revision.
        (PutRequest { prev_kv: true, ..put("k", "3") }.into(), "rev=5"),
        (get("k").into(), "rev=5 count=1 [k=3@5/5/v1]"),
        (at(3, get("k")).into(), "rev=5 count=1 [k=2@2/3/v2]"), // the header is the current revision
        (at(4, get("k")).into(), "rev=5 count=0 []"),
        (at(1, get("k")).into(), "rev=5 count=0 []"),
        (at(-1, get("k")).into(), "rev=5 count=1 [k=3@5/5/v1]"), // <= 0 means current
        (at(6, get("k")).into(), FUTURE),
        (put("k", "4").into(), "rev=6"),
        (get("k").into(), "rev=6 count=1 [k=4@5/6/v2]"),
    ]);
}

#[test]
fn put_flags() {
    run(vec![
        (PutRequest { ignore_value: true, ..put("k", "") }.into(), KEY_NOT_FOUND),
        (PutRequest { ignore_lease: true, ..put("k", "v") }.into(), KEY_NOT_FOUND),
        (PutRequest { lease: 7, ..put("k", "v") }.into(), LEASE_NOT_FOUND),
        // A plain Put checks its lease first (etcd 3.4); inside a txn, see txn_checks_ops_first.
        (PutRequest { lease: 7, ignore_value: true, ..put("k", "") }.into(), LEASE_NOT_FOUND),
        (get("k").into(), "rev=1 count=0 []"), // refusals change nothing
        (put("k", "v1").into(), "rev=2"),
        (PutRequest { ignore_value: true, prev_kv: true, ..put("k", "") }.into(), "rev=3 prev=k=v1@2/2/v1"),
        (get("k").into(), "rev=3 count=1 [k=v1@2/3/v2]"),
        (PutRequest { ignore_lease: true, ..put("k", "v2") }.into(), "rev=4"),
        (get("k").into(), "rev=4 count=1 [k=v2@2/4/v3]"),
        (PutRequest { lease: 7, ..put("k", "v3") }.into(), LEASE_NOT_FOUND),
        (put("k", "").into(), "rev=5"), // an empty value is a value
        (get("k").into(), "rev=5 count=1 [k=@2/5/v4]"),
    ]);
}

#[test]
fn delete_ranges() {
    // Each case starts from a, ab, b, c (revisions 2 to 5).
    let cases = [
        (del("a", ""), "rev=6 deleted=1 prev=[a=1@2/2/v1]", "count=3 [ab=2 b=3 c=4]"),
        (del("a", "b"), "rev=6 deleted=2 prev=[a=1@2/2/v1, ab=2@3/3/v1]", "count=2 [b=3 c=4]"), // prefix "a"
        (del("b", "\0"), "rev=6 deleted=2 prev=[b=3@4/4/v1, c=4@5/5/v1]", "count=2 [a=1 ab=2]"), // from "b"
        (del("\0", "\0"), "rev=6 deleted=4 prev=[a=1@2/2/v1, ab=2@3/3/v1, b=3@4/4/v1, c=4@5/5/v1]", "count=0 []"),
        (del("zz", ""), "rev=5 deleted=0", "count=4 [a=1 ab=2 b=3 c=4]"),
        (del("c", "a"), "rev=5 deleted=0", "count=4 [a=1 ab=2 b=3 c=4]"), // range_end before key
        (del("abc", "b"), "rev=5 deleted=0", "count=4 [a=1 ab=2 b=3 c=4]"),
    ];
    for (req, want, left) in cases {
        let f = Fixture::new();
        for (k, v) in [("a", "1"), ("ab", "2"), ("b", "3"), ("c", "4")] {
            f.run(&put(k, v).into());
        }
        let what = format!("{req:?}");
        assert_eq!(f.run(&DeleteRangeRequest { prev_kv: true, ..req }.into()), want, "{what}");
        assert_eq!(f.keys(), left, "{what}");
    }
}

/// s/1..s/5 written so that key, create, mod, version and value orders all differ:
/// s/1=c 4/8/v3, s/2=e 6/6/v1, s/3=a 3/7/v2, s/4=d 9/9/v1, s/5=b 2/10/v2 (store at revision 10).
fn sort_fixture() -> Fixture {
    let f = Fixture::new();
    let puts = [("s/5", "x"), ("s/3", "x"), ("s/1", "x"), ("s/1", "x"), ("s/2", "e")];
    let more = [("s/3", "a"), ("s/1", "c"), ("s/4", "d"), ("s/5", "b")];
    for (k, v) in puts.into_iter().chain(more) {
        f.run(&put(k, v).into());
    }
    f
}

#[test]
fn range_options() {
    use SortOrder::{Ascend, Descend, None as Unsorted};
    use SortTarget::{Create, Key, Mod, Value, Version};
    let all = || range("s/", "s0");
    let cases = vec![
        (all(), "count=5 [s/1=c s/2=e s/3=a s/4=d s/5=b]"),
        (RangeRequest { limit: 2, ..all() }, "count=5 more [s/1=c s/2=e]"),
        (RangeRequest { limit: 5, ..all() }, "count=5 [s/1=c s/2=e s/3=a s/4=d s/5=b]"),
        (RangeRequest { limit: 9, ..all() }, "count=5 [s/1=c s/2=e s/3=a s/4=d s/5=b]"),
        // Sorting: a target other than KEY with order NONE sorts ascending. Ties keep key order,
        // descending too (etcd sorts with a reversed comparison, it does not reverse the result).
        (sorted(Version, Unsorted, 0), "count=5 [s/2=e s/4=d s/3=a s/5=b s/1=c]"),
        (sorted(Version, Ascend, 0), "count=5 [s/2=e s/4=d s/3=a s/5=b s/1=c]"),
        (sorted(Version, Descend, 0), "count=5 [s/1=c s/3=a s/5=b s/2=e s/4=d]"),
        (sorted(Create, Unsorted, 0), "count=5 [s/5=b s/3=a s/1=c s/2=e s/4=d]"),
        (sorted(Create, Descend, 0), "count=5 [s/4=d s/2=e s/1=c s/3=a s/5=b]"),
        (sorted(Mod, Ascend, 0), "count=5 [s/2=e s/3=a s/1=c s/4=d s/5=b]"),
        (sorted(Mod, Descend, 0), "count=5 [s/5=b s/4=d s/1=c s/3=a s/2=e]"),
        (sorted(Value, Ascend, 0), "count=5 [s/3=a s/5=b s/1=c s/4=d s/2=e]"),
        (sorted(Value, Descend, 3), "count=5 more [s/2=e s/4=d s/1=c]"),
        (sorted(Key, Descend, 2), "count=5 more [s/5=b s/4=d]"),
        (sorted(Key, Ascend, 2), "count=5 more [s/1=c s/2=e]"),
        // etcd quirk: with order NONE it fetches limit+1 keys in key order and sorts only those.
        (sorted(Version, Unsorted, 2), "count=5 more [s/2=e s/3=a]"),
        (sorted(Version, Ascend, 2), "count=5 more [s/2=e s/4=d]"),
        (sorted(Mod, Unsorted, 1), "count=5 more [s/2=e]"),
        (RangeRequest { keys_only: true, limit: 2, ..all() }, "count=5 more [s/1 s/2]"),
        (RangeRequest { count_only: true, ..all() }, "count=5 []"),
        (RangeRequest { count_only: true, limit: 2, ..all() }, "count=5 []"),
        // Filters drop keys from kvs but not from count.
        (RangeRequest { min_mod_revision: 8, ..all() }, "count=5 [s/1=c s/4=d s/5=b]"),
        (RangeRequest { max_mod_revision: 7, ..all() }, "count=5 [s/2=e s/3=a]"),
        (RangeRequest { min_create_revision: 4, ..all() }, "count=5 [s/1=c s/2=e s/4=d]"),
        (RangeRequest { max_create_revision: 3, ..all() }, "count=5 [s/3=a s/5=b]"),
        (RangeRequest { min_mod_revision: 7, max_mod_revision: 8, ..all() }, "count=5 [s/1=c s/3=a]"),
        (RangeRequest { min_mod_revision: 8, limit: 1, ..all() }, "count=5 more [s/1=c]"),
        (RangeRequest { min_mod_revision: 8, limit: 3, ..all() }, "count=5 [s/1=c s/4=d s/5=b]"),
        (RangeRequest { min_mod_revision: 8, sort_order: Descend as i32, ..all() }, "count=5 [s/5=b s/4=d s/1=c]"),
        // Revisions: the view as of then.
        (at(7, all()), "count=4 [s/1=x s/2=e s/3=a s/5=x]"),
        (RangeRequest { sort_target: Mod as i32, ..at(7, all()) }, "count=4 [s/5=x s/1=x s/2=e s/3=a]"),
        (at(2, all()), "count=1 [s/5=x]"),
        (at(1, all()), "count=0 []"),
        // Key ranges.
        (range("s/3", "\0"), "count=3 [s/3=a s/4=d s/5=b]"),
        (range("\0", "\0"), "count=5 [s/1=c s/2=e s/3=a s/4=d s/5=b]"),
        (range("s/3", "s/1"), "count=0 []"),
        (range("s/3", "s/3"), "count=0 []"),
        (get("s/"), "count=0 []"),
        (get("s/1"), "count=1 [s/1=c]"),
        (range("s/1", "s/3"), "count=2 [s/1=c s/2=e]"),
    ];
    let f = sort_fixture();
    for (req, want) in cases {
        let resp = f.store.range(&req).unwrap();
        assert_eq!(rev(&resp.header), 10, "{req:?}");
        assert_eq!(show_keys(&resp), want, "{req:?}");
        // A Range inside a txn gives the same answer.
        let in_txn = f.store.read_only_txn(&txn(vec![], vec![req.clone().op()], vec![])).unwrap();
        let Some(response_op::Response::ResponseRange(resp)) = &in_txn.responses[0].response else {
            panic!("not a range response")
        };
        assert_eq!(show_keys(resp), want, "in a txn: {req:?}");
    }
}

#[test]
fn compaction() {
    let f = run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("a", "2").into(), "rev=3"),
        (put("b", "1").into(), "rev=4"),
        (del("a", "").into(), "rev=5 deleted=1"),
        (put("a", "3").into(), "rev=6"),
        (put("c", "1").into(), "rev=7"),
        (del("c", "").into(), "rev=8 deleted=1"),
        (compact(4).into(), "rev=8"), // compaction takes no revision
        (at(3, get("a")).into(), COMPACTED),
        (at(4, get("a")).into(), "rev=8 count=1 [a=2@2/3/v2]"), // reading at the compacted revision is allowed
        (at(5, range("\0", "\0")).into(), "rev=8 count=1 [b=1@4/4/v1]"),
        (compact(4).into(), COMPACTED),
        (compact(3).into(), COMPACTED),
        (compact(9).into(), FUTURE),
        (Step::Physical, "physical"),
        // Removing the history below the compacted revision changes no answer.
        (at(3, get("a")).into(), COMPACTED),
        (at(4, range("\0", "\0")).into(), "rev=8 count=2 [a=2@2/3/v2, b=1@4/4/v1]"),
        (at(5, range("\0", "\0")).into(), "rev=8 count=1 [b=1@4/4/v1]"),
        (at(7, range("\0", "\0")).into(), "rev=8 count=3 [a=3@6/6/v1, b=1@4/4/v1, c=1@7/7/v1]"),
        (range("\0", "\0").into(), "rev=8 count=2 [a=3@6/6/v1, b=1@4/4/v1]"),
        (compact(8).into(), "rev=8"), // compacting at the current revision is allowed
        (Step::Physical, "physical"),
        (range("\0", "\0").into(), "rev=8 count=2 [a=3@6/6/v1, b=1@4/4/v1]"),
        (at(7, get("a")).into(), COMPACTED),
        // A range inside a txn is refused the same way, and then the whole txn is.
        (txn(vec![], vec![put("x", "1").op(), at(7, get("a")).op()], vec![]).into(), COMPACTED),
        (put("a", "4").into(), "rev=9"), // history goes on after compaction
        (get("a").into(), "rev=9 count=1 [a=4@6/9/v2]"),
    ]);
    assert_eq!(f.store.compacted_revision().unwrap(), 8);
}

fn bump(by: i64, mark_compacted: bool) -> Step {
    command(command::Op::RevisionBump(pb::RevisionBump { by, mark_compacted }))
}

#[test]
fn revision_bump_after_a_reset() {
    // etcd's restore --bump-revision moves the revision on; --mark-compacted compacts there.
    let f = run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("a", "2").into(), "rev=3"),
        (bump(100, false), "rev=103"),
        (get("a").into(), "rev=103 count=1 [a=2@2/3/v2]"), // the keys keep their revisions
        (at(2, get("a")).into(), "rev=103 count=1 [a=1@2/2/v1]"),
        (at(50, get("a")).into(), "rev=103 count=1 [a=2@2/3/v2]"),
        (put("b", "1").into(), "rev=104"), // new writes never reuse the old cluster's revisions
        (bump(10, true), "rev=114"),
        (at(113, get("a")).into(), COMPACTED), // watchers and readers from before must relist
        (range("\0", "\0").into(), "rev=114 count=2 [a=2@2/3/v2, b=1@104/104/v1]"),
        (Step::Physical, "physical"),
        (range("\0", "\0").into(), "rev=114 count=2 [a=2@2/3/v2, b=1@104/104/v1]"),
        (bump(-1, false), "Unknown: revision bump by -1 is negative"),
        (put("c", "1").into(), "rev=115"),
    ]);
    assert_eq!(f.store.compacted_revision().unwrap(), 114);
}

#[test]
fn compaction_of_a_new_store() {
    // etcd starts "never compacted" at -1, so compacting at 0 (or 1, the current revision) works once.
    let f = run(vec![
        (compact(-1).into(), COMPACTED),
        (compact(0).into(), "rev=1"),
        (compact(0).into(), COMPACTED),
        (compact(1).into(), "rev=1"),
        (at(1, get("a")).into(), "rev=1 count=0 []"),
        (compact(2).into(), FUTURE),
    ]);
    assert_eq!(f.store.compacted_revision().unwrap(), 1);
    assert_eq!(Fixture::new().store.compacted_revision().unwrap(), -1, "etcd reports -1 before any compaction");
}

#[test]
fn txn_revisions_and_reads() {
    use CompareResult::Equal;
    run(vec![
        (put("a", "1").into(), "rev=2"),
        // All ops share one revision; later ops read the earlier ones' writes.
        (
            txn(vec![], vec![put("b", "1").op(), put("c", "1").op(), range("\0", "\0").op()], vec![]).into(),
            "rev=3 success [put rev=3; put rev=3; range rev=3 count=3 [a=1@2/2/v1, b=1@3/3/v1, c=1@3/3/v1]]",
        ),
        (
            txn(vec![], vec![del("b", "").op(), get("b").op(), put("a", "2").op(), get("a").op()], vec![]).into(),
            "rev=4 success [delete rev=4 deleted=1; range rev=4 count=0 []; put rev=4; range rev=4 count=1 [a=2@2/4/v2]]",
        ),
        // Reads only, a failed compare with reads, deleting nothing: no new revision.
        (txn(vec![], vec![get("a").op()], vec![]).into(), "rev=4 success [range rev=4 count=1 [a=2@2/4/v2]]"),
        (
            txn(vec![cmp("a", Equal, value("x"))], vec![put("z", "1").op()], vec![get("z").op()]).into(),
            "rev=4 failure [range rev=4 count=0 []]",
        ),
        (txn(vec![], vec![del("nothing", "").op()], vec![]).into(), "rev=4 success [delete rev=4 deleted=0]"),
        (txn(vec![], vec![], vec![]).into(), "rev=4 success []"),
        (
            txn(vec![], vec![del("nothing", "").op(), put("d", "1").op()], vec![]).into(),
            "rev=5 success [delete rev=4 deleted=0; put rev=5]",
        ),
        // A nested txn decides its branch on the state before the outer txn (etcd 3.4 does):
        // here it does not see a=3 from the outer txn's first op.
        (
            txn(
                vec![],
                vec![
                    put("a", "3").op(),
                    txn(vec![cmp("a", Equal, value("3"))], vec![put("n", "saw").op()], vec![put("n", "not").op()])
                        .op(),
                    get("n").op(),
                ],
                vec![],
            )
            .into(),
            "rev=6 success [put rev=6; txn rev=0 failure [put rev=6]; range rev=6 count=1 [n=not@6/6/v1]]",
        ),
        (
            txn(vec![], vec![txn(vec![], vec![get("n").op()], vec![]).op()], vec![]).into(),
            "rev=6 success [txn rev=0 success [range rev=6 count=1 [n=not@6/6/v1]]]",
        ),
        // Range revisions are checked against the revision before the txn: 7 is future here
        // even though the txn's own put creates it.
        (txn(vec![], vec![put("a", "4").op(), at(7, get("a")).op()], vec![]).into(), FUTURE),
        (txn(vec![], vec![put("a", "4").op(), at(6, get("a")).op()], vec![]).into(), "rev=7 success [put rev=7; range rev=7 count=1 [a=3@2/6/v3]]"),
        (get("a").into(), "rev=7 count=1 [a=4@2/7/v4]"),
    ]);
}

#[test]
fn txn_checks_ops_first() {
    run(vec![
        (put("a", "1").into(), "rev=2"),
        // The second put fails, so the first is not applied either.
        (
            txn(vec![], vec![put("b", "1").op(), PutRequest { ignore_value: true, ..put("missing", "") }.op()], vec![])
                .into(),
            KEY_NOT_FOUND,
        ),
        (
            txn(vec![], vec![del("a", "").op(), PutRequest { lease: 9, ..put("c", "1") }.op()], vec![]).into(),
            LEASE_NOT_FOUND,
        ),
        // Inside a txn, ignore_* is checked before the lease (etcd's checkPut).
        (
            txn(vec![], vec![PutRequest { lease: 9, ignore_value: true, ..put("missing", "") }.op()], vec![]).into(),
            KEY_NOT_FOUND,
        ),
        // Puts are checked before ranges, whatever their order.
        (
            txn(
                vec![],
                vec![at(99, get("a")).op(), PutRequest { ignore_lease: true, ..put("missing", "") }.op()],
                vec![],
            )
            .into(),
            KEY_NOT_FOUND,
        ),
        // Ops of the branch not taken are not checked.
        (
            txn(vec![], vec![get("a").op()], vec![PutRequest { ignore_value: true, ..put("missing", "") }.op()]).into(),
            "rev=2 success [range rev=2 count=1 [a=1@2/2/v1]]",
        ),
        // An empty op: etcd refuses it with "key not found" (it must never stop the node).
        (txn(vec![], vec![put("b", "1").op(), RequestOp { request: None }], vec![]).into(), KEY_NOT_FOUND),
        (range("\0", "\0").into(), "rev=2 count=1 [a=1@2/2/v1]"),
    ]);
}

#[test]
fn a_txn_changes_a_key_once() {
    let nested = |op: RequestOp| txn(vec![], vec![op], vec![]).op();
    run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("c", "1").into(), "rev=3"),
        // etcd's checks let these change a key twice; the store keeps one record per key and
        // revision, so they are refused when the second change comes, and undone.
        (txn(vec![], vec![put("b", "1").op(), del("a", "\0").op()], vec![]).into(), DUPLICATE_KEY),
        (txn(vec![], vec![del("a", "\0").op(), put("c", "2").op()], vec![]).into(), DUPLICATE_KEY),
        (txn(vec![], vec![nested(put("a", "2").op()), nested(del("a", "").op())], vec![]).into(), DUPLICATE_KEY),
        // etcd 3.4 panics on this one (its check saw the key before the txn, the put then finds
        // none to keep), and again on every restart, as it replays the entry.
        (
            txn(vec![], vec![del("a", "\0").op(), PutRequest { ignore_value: true, ..put("a", "") }.op()], vec![])
                .into(),
            DUPLICATE_KEY,
        ),
        (range("\0", "\0").into(), "rev=3 count=2 [a=1@2/2/v1, c=1@3/3/v1]"),
        // A delete that covers no key the txn changed is fine, as is deleting a key twice.
        (
            txn(vec![], vec![put("b", "1").op(), del("c", "\0").op(), del("c", "").op()], vec![]).into(),
            "rev=4 success [put rev=4; delete rev=4 deleted=1; delete rev=4 deleted=0]",
        ),
        (range("\0", "\0").into(), "rev=4 count=2 [a=1@2/2/v1, b=1@4/4/v1]"),
    ]);
}

#[test]
fn compares() {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use TargetUnion::{CreateRevision as Create, Lease, ModRevision as Mod, Version};
    let with_end = |end: &str, c: Compare| Compare { range_end: end.into(), ..c };
    // k=m 2/3/v2 and k2=z 4/4/v1; "missing" does not exist.
    let cases = vec![
        (cmp("k", Equal, Version(2)), true),
        (cmp("k", Greater, Version(1)), true),
        (cmp("k", Less, Version(3)), true),
        (cmp("k", NotEqual, Version(2)), false),
        (cmp("k", Equal, Create(2)), true),
        (cmp("k", Less, Create(3)), true),
        (cmp("k", Greater, Create(2)), false),
        (cmp("k", Equal, Mod(3)), true),
        (cmp("k", Greater, Mod(2)), true),
        (cmp("k", NotEqual, Mod(3)), false),
        (cmp("k", Equal, value("m")), true),
        (cmp("k", Greater, value("a")), true),
        (cmp("k", Less, value("z")), true),
        (cmp("k", Less, value("m")), false),
        (cmp("k", NotEqual, value("x")), true),
        (cmp("k", Greater, value("")), true),
        (cmp("k", Equal, Lease(0)), true),
        (cmp("k", Less, Lease(1)), true),
        // A missing key compares as zero values, except VALUE, which always fails.
        (cmp("missing", Equal, Version(0)), true),
        (cmp("missing", Equal, Create(0)), true),
        (cmp("missing", Greater, Mod(0)), false),
        (cmp("missing", Less, Mod(1)), true),
        (cmp("missing", Equal, Lease(0)), true),
        (cmp("missing", Equal, value("")), false),
        (cmp("missing", NotEqual, value("x")), false),
        // With a range_end every key in the range must pass; an empty range is a missing key.
        (with_end("l", cmp("k", Greater, Version(0))), true),
        (with_end("l", cmp("k", Equal, Version(2))), false),
        (with_end("l", cmp("k", NotEqual, value(""))), true),
        (with_end("l", cmp("k", Less, Create(5))), true),
        (with_end("r", cmp("q", Equal, Create(0))), true),
        (with_end("r", cmp("q", Greater, Create(0))), false),
        (with_end("r", cmp("q", Equal, value(""))), false),
        (with_end("r", cmp("q", NotEqual, value(""))), false),
        (with_end("\0", cmp("k2", Equal, Mod(4))), true),
        (with_end("\0", cmp("k", Equal, Mod(4))), false),
        // A target_union of another kind reads as zero (Go's getters); unknown enums as etcd.
        (Compare { target: CompareTarget::Version as i32, ..cmp("k", Greater, Mod(9)) }, true),
        (Compare { target: 9, ..cmp("k", Equal, Version(5)) }, true),
        (Compare { result: 9, ..cmp("k", Equal, Version(5)) }, true),
    ];
    let f =
        run(vec![(put("k", "b").into(), "rev=2"), (put("k", "m").into(), "rev=3"), (put("k2", "z").into(), "rev=4")]);
    for (compare, want) in cases {
        let what = format!("{compare:?}");
        let resp = f.store.read_only_txn(&txn(vec![compare], vec![], vec![])).unwrap();
        assert_eq!(resp.succeeded, want, "{what}");
    }
    // Every compare must hold.
    let both = |second| txn(vec![cmp("k", Equal, Version(2)), second], vec![], vec![]);
    assert!(f.store.read_only_txn(&both(cmp("k2", Equal, Version(1)))).unwrap().succeeded);
    assert!(!f.store.read_only_txn(&both(cmp("k2", Equal, Version(2)))).unwrap().succeeded);
}

#[test]
fn a_batch_is_applied_in_order_and_failures_leave_nothing() {
    let f = run(vec![
        (
            batch(vec![
                put("a", "1").into(),
                txn(vec![], vec![put("b", "1").op(), PutRequest { ignore_value: true, ..put("no", "") }.op()], vec![])
                    .into(),
                txn(vec![], vec![get("a").op(), put("c", "1").op()], vec![]).into(),
                put("x", "1").into(),
                del("x", "").into(),
                put("x", "2").into(),
                compact(3).into(),
                compact(3).into(),
            ]),
            format!(
                "rev=2 | {KEY_NOT_FOUND} | rev=3 success [range rev=2 count=1 [a=1@2/2/v1]; put rev=3] \
                 | rev=4 | rev=5 deleted=1 | rev=6 | rev=6 | {COMPACTED}"
            )
            .as_str(),
        ),
        (range("\0", "\0").into(), "rev=6 count=3 [a=1@2/2/v1, c=1@3/3/v1, x=2@6/6/v1]"),
        (at(2, get("a")).into(), COMPACTED),
    ]);
    assert_eq!(f.keys(), "count=3 [a=1 c=1 x=2]");
}

#[test]
fn keys_with_zero_bytes() {
    let f = run(vec![
        (put("a", "plain").into(), "rev=2"),
        (put("a\0", "zero").into(), "rev=3"),
        (put("a\0b", "v\0v").into(), "rev=4"),
        (put("a\0\0", "two").into(), "rev=5"),
        (put("\0", "only").into(), "rev=6"),
        (put("ab", "after").into(), "rev=7"),
        (get("a").into(), "rev=7 count=1 [a=plain@2/2/v1]"),
        (get("a\0").into(), "rev=7 count=1 [a\\x00=zero@3/3/v1]"),
        (
            range("a\0", "a\x01").into(),
            "rev=7 count=3 [a\\x00=zero@3/3/v1, a\\x00\\x00=two@5/5/v1, a\\x00b=v\\x00v@4/4/v1]",
        ),
        (range("a", "a\0").into(), "rev=7 count=1 [a=plain@2/2/v1]"),
        (range("\0", "a").into(), "rev=7 count=1 [\\x00=only@6/6/v1]"),
        (
            DeleteRangeRequest { prev_kv: true, ..del("a\0", "a\x01") }.into(),
            "rev=8 deleted=3 prev=[a\\x00=zero@3/3/v1, a\\x00\\x00=two@5/5/v1, a\\x00b=v\\x00v@4/4/v1]",
        ),
        (at(7, get("a\0\0")).into(), "rev=8 count=1 [a\\x00\\x00=two@5/5/v1]"),
    ]);
    assert_eq!(f.keys(), "count=3 [\\x00=only a=plain ab=after]");
}

#[test]
fn nospace_alarm_refuses_puts_as_etcd_does() {
    let alarm = |action: pb::alarm_request::AlarmAction| pb::AlarmRequest {
        action: action as i32,
        member_id: 1,
        alarm: pb::AlarmType::Nospace as i32,
    };
    use pb::alarm_request::AlarmAction::{Activate, Deactivate, Get};
    run(vec![
        (put("a", "1").into(), "rev=2"),
        (alarm(Activate).into(), "alarms=1"),
        (put("b", "1").into(), NO_SPACE),
        // Any put in either branch of a txn is refused, whatever the compare decides.
        (txn(vec![], vec![get("a").op()], vec![put("b", "1").op()]).into(), NO_SPACE),
        // Deletes are allowed, so space can be freed.
        (del("a", "").into(), "rev=3 deleted=1"),
        (
            txn(vec![], vec![del("zz", "").op(), get("a").op()], vec![]).into(),
            "rev=3 success [delete rev=3 deleted=0; range rev=3 count=0 []]",
        ),
        // etcd 3.4 only looks at a txn's own puts, not at those of nested txns.
        (
            txn(vec![], vec![txn(vec![], vec![put("n", "1").op()], vec![]).op()], vec![]).into(),
            "rev=4 success [txn rev=0 success [put rev=4]]",
        ),
        (alarm(Deactivate).into(), "alarms=1"),
        (alarm(Deactivate).into(), "alarms=0"), // not active: nothing deactivated
        (put("b", "1").into(), "rev=5"),
        // Activating NONE does nothing and reports nothing, as in etcd 3.5 (3.4.23 stores a NONE
        // alarm, a bug fixed later; Phoenix reports a 3.5 API version).
        (pb::AlarmRequest { alarm: pb::AlarmType::None as i32, ..alarm(Activate) }.into(), "alarms=0"),
        (alarm(Activate).into(), "alarms=1"),
        (alarm(Activate).into(), "alarms=1"), // already active: reported again, kept once
        (alarm(Get).into(), "alarms=1"),
        (pb::AlarmRequest { alarm: pb::AlarmType::Corrupt as i32, ..alarm(Get) }.into(), "alarms=0"),
        (pb::AlarmRequest { alarm: pb::AlarmType::None as i32, ..alarm(Get) }.into(), "alarms=1"),
    ]);
}

/// As etcd 3.4.23 (checked against it): while a CORRUPT alarm is raised, every write, lease
/// grant and revocation and compaction is refused with DataLoss; reads are not applied, and the
/// alarm can still be disarmed. CORRUPT is checked before NOSPACE, as etcd's appliers nest.
#[test]
fn corrupt_alarm_refuses_every_write_as_etcd_does() {
    let alarm = |action: pb::alarm_request::AlarmAction, alarm: pb::AlarmType| pb::AlarmRequest {
        action: action as i32,
        member_id: 1,
        alarm: alarm as i32,
    };
    use pb::alarm_request::AlarmAction::{Activate, Deactivate};
    use pb::AlarmType::{Corrupt, Nospace};
    const CORRUPT: &str = "DataLoss: etcdserver: corrupt cluster";
    run(vec![
        (put("a", "1").into(), "rev=2"),
        (grant(7, 30).into(), "rev=2 lease=7 ttl=30"),
        (alarm(Activate, Nospace).into(), "alarms=1"),
        (alarm(Activate, Corrupt).into(), "alarms=1"),
        (put("b", "1").into(), CORRUPT),
        (del("a", "").into(), CORRUPT),
        (txn(vec![], vec![del("a", "").op()], vec![]).into(), CORRUPT),
        (compact(2).into(), CORRUPT),
        (grant(8, 30).into(), CORRUPT),
        (revoke(7).into(), CORRUPT),
        (range("a", "").into(), "rev=2 count=1 [a=1@2/2/v1]"),
        (alarm(Deactivate, Corrupt).into(), "alarms=1"),
        (put("b", "1").into(), NO_SPACE),
        (del("a", "").into(), "rev=3 deleted=1"),
    ]);
}

/// The hash covers the logical history only: two members given the same commands agree,
/// whether or not (or how far) they removed compacted history.
#[test]
fn hash_kv_ignores_physical_compaction() {
    let script = || {
        vec![
            put("a", "1").into(),
            put("a", "2").into(),
            put("b", "1").into(),
            del("a", "").into(),
            put("c", "1").into(),
            compact(5).into(), // a's last record at 5 is its deletion, which compaction drops
            put("a", "3").into(),
            del("b", "").into(),
        ]
    };
    let (lazy, eager) = (Fixture::new(), Fixture::new());
    for step in script() {
        lazy.run(&step);
    }
    for step in script() {
        eager.run(&step);
    }
    eager.store.compact_physically().unwrap();
    for revision in [0, 6, 7, 8] {
        let (l, e) = (lazy.store.hash_kv(revision).unwrap(), eager.store.hash_kv(revision).unwrap());
        assert_eq!(l, e, "revision {revision}");
        assert_eq!(l.1, 5, "compact revision");
    }
    assert_eq!(lazy.store.hash_kv(0).unwrap().2, 8, "0 hashes up to the current revision");
    assert_ne!(
        lazy.store.hash_kv(6).unwrap().0,
        lazy.store.hash_kv(7).unwrap().0,
        "a revision's writes change the hash"
    );
    assert_eq!(lazy.store.hash_kv(4), Err(Error::Compacted));
    assert_eq!(lazy.store.hash_kv(5), Err(Error::Compacted), "etcd refuses the compaction point too");
    assert_eq!(lazy.store.hash_kv(9), Err(Error::FutureRevision));
    // Different data, different hash.
    eager.run(&put("d", "1").into());
    lazy.run(&put("d", "2").into());
    assert_ne!(lazy.store.hash_kv(0).unwrap().0, eager.store.hash_kv(0).unwrap().0);
    // The same reads from both, too.
    assert_eq!(show_read(lazy.store.range(&at(6, range("\0", "\0")))), "rev=9 count=2 [b=1@4/4/v1, c=1@6/6/v1]");
    assert_eq!(show_read(eager.store.range(&at(6, range("\0", "\0")))), "rev=9 count=2 [b=1@4/4/v1, c=1@6/6/v1]");
}

fn grant(id: i64, ttl: i64) -> pb::LeaseGrantRequest {
    pb::LeaseGrantRequest { id, ttl }
}

fn revoke(id: i64) -> pb::LeaseRevokeRequest {
    pb::LeaseRevokeRequest { id }
}

#[test]
fn leases_own_their_keys_until_revoked() {
    let fixture = run(vec![
        (grant(7, 30).into(), "rev=1 lease=7 ttl=30"), // granting changes no key: no revision
        (grant(7, 30).into(), "FailedPrecondition: etcdserver: lease already exists"),
        (grant(8, 30).into(), "rev=1 lease=8 ttl=30"),
        (PutRequest { lease: 7, ..put("a", "1") }.into(), "rev=2"),
        (PutRequest { lease: 7, ..put("b", "1") }.into(), "rev=3"),
        (PutRequest { lease: 7, ..put("c", "1") }.into(), "rev=4"),
        (PutRequest { lease: 8, ..put("c", "2") }.into(), "rev=5"), // c moves to lease 8
        (PutRequest { ignore_lease: true, ..put("b", "2") }.into(), "rev=6"), // b keeps lease 7
        (del("a", "").into(), "rev=7 deleted=1"),
        (PutRequest { lease: 7, ..put("d", "1") }.into(), "rev=8"),
        (revoke(7).into(), "rev=9"), // b and d go in one revision
        (revoke(7).into(), LEASE_NOT_FOUND),
        (range("\0", "\0").into(), "rev=9 count=1 [c=2@4/5/v2 lease=8]"),
        (revoke(9).into(), LEASE_NOT_FOUND),
        (PutRequest { lease: 7, ..put("e", "1") }.into(), LEASE_NOT_FOUND),
    ]);
    assert_eq!(fixture.store.lease_with_keys(8).unwrap(), Some((30, vec![b"c".to_vec()])));
    assert_eq!(fixture.store.lease_with_keys(7).unwrap(), None);
    assert_eq!(fixture.store.leases().unwrap(), [(8, 30)]);
}

#[test]
fn server_chosen_lease_ids_are_never_reused() {
    let fixture = Fixture::new();
    let first = fixture.apply(&[Command::from(command::Op::LeaseGrant(grant(0, 5)))]);
    fixture.apply(&[Command::from(command::Op::LeaseRevoke(revoke(fixture.store.leases().unwrap()[0].0)))]);
    let second = fixture.apply(&[Command::from(command::Op::LeaseGrant(grant(0, 5)))]);
    assert_ne!(first, second);
    assert!(fixture.store.leases().unwrap()[0].0 > 0);
}

/// Everything the store exports for a snapshot, as `load` takes it.
fn exported(store: &KvStore) -> Vec<crate::Result<(Vec<u8>, Vec<u8>)>> {
    store
        .export_state()
        .chain(store.export_records(i64::MAX))
        .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect()
}

/// The key index gives the answers a scan of the tree gives: after compaction removes a key's
/// last record, to a second handle that builds it from the tree, and after a snapshot replaces
/// the store.
#[test]
fn the_key_index_agrees_with_the_tree() {
    let f = run(vec![
        (put("a", "1").into(), "rev=2"),
        (del("a", "").into(), "rev=3 deleted=1"),
        (put("b", "1").into(), "rev=4"),
        (compact(4).into(), "rev=4"),
        (Step::Physical, "physical"), // a's deletion at 3 goes: a has no record left
        (get("a").into(), "rev=4 count=0 []"),
        (PutRequest { ignore_value: true, ..put("a", "") }.into(), KEY_NOT_FOUND),
        (put("a", "2").into(), "rev=5"),
        (get("a").into(), "rev=5 count=1 [a=2@5/5/v1]"),
        (batch(vec![put("b", "2").into(), put("b", "3").into()]), "rev=6 | rev=7"),
        (get("b").into(), "rev=7 count=1 [b=3@4/7/v3]"),
        (at(6, get("b")).into(), "rev=7 count=1 [b=2@4/6/v2]"),
    ]);
    let reads = |store: &KvStore| ["a", "b", "c"].map(|key| show_read(store.range(&get(key)))).join(" ");
    let want = "rev=7 count=1 [a=2@5/5/v1] rev=7 count=1 [b=3@4/7/v3] rev=7 count=0 []";
    assert_eq!(reads(&f.store), want);
    let second = KvStore::open(f._db.open_tree("kv").unwrap()).unwrap();
    assert_eq!(reads(&second), want);

    let other = run(vec![(put("c", "1").into(), "rev=2"), (put("a", "9").into(), "rev=3")]);
    f.store.replace_all(exported(&other.store).into_iter()).unwrap();
    assert_eq!(reads(&f.store), "rev=3 count=1 [a=9@3/3/v1] rev=3 count=0 [] rev=3 count=1 [c=1@2/2/v1]");
    assert_eq!(f.store.last_revision(), 3, "what headers report follows the load");
    assert_eq!(f.apply(&[Command::from(command::Op::Put(put("a", "10")))]), ["rev=4"]);
    assert_eq!(f.store.last_revision(), 4, "and each write");
    assert_eq!(show_read(f.store.range(&get("a"))), "rev=4 count=1 [a=10@3/4/v2]");
}

/// A load into an empty store lists the records as they go in, instead of scanning the tree
/// after: the index it builds is the one a scan builds, also when the snapshot names a key's
/// records newest first or one twice.
#[test]
fn a_load_builds_the_key_index_a_scan_of_the_tree_builds() {
    let source = run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("b", "1").into(), "rev=3"),
        (put("a", "2").into(), "rev=4"),
        (del("a", "").into(), "rev=5 deleted=1"),
        (put("a", "3").into(), "rev=6"),
        (del("b", "").into(), "rev=7 deleted=1"),
    ]);
    let in_order: Vec<_> = exported(&source.store).into_iter().map(Result::unwrap).collect();
    let reversed: Vec<_> = in_order.iter().rev().cloned().collect();
    let twice: Vec<_> = in_order.iter().chain(&in_order).cloned().collect();
    for entries in [in_order, reversed, twice] {
        let f = Fixture::new();
        f.store.load(entries.into_iter().map(Ok)).unwrap();
        let scanned = KvStore::open(f._db.open_tree("kv").unwrap()).unwrap();
        assert_eq!(f.store.index.all(), scanned.index.all());
        for key in [&b"a"[..], b"b"] {
            let prefix = super::keys::key_prefix(key);
            assert_eq!(f.store.index.life(&prefix, 7), scanned.index.life(&prefix, 7));
        }
        assert_eq!(f.keys(), "count=1 [a=3]");
    }
}

/// A load deals its entries out to several inserting threads, a batch at a time: a snapshot
/// many batches long comes back whole, and the store reads as the one it was taken from.
#[test]
fn a_snapshot_of_many_batches_loads_whole() {
    let source = Fixture::new();
    let puts: Vec<Command> =
        (0..2_500).map(|i| Command::from(command::Op::Put(put(&format!("k{i:04}"), &format!("v{i}"))))).collect();
    source.apply(&puts);
    let snapshot: Vec<_> = exported(&source.store).into_iter().map(Result::unwrap).collect();
    assert!(snapshot.len() > super::REPLACE_BATCH * super::LOAD_INSERTERS, "every inserter gets more than one batch");
    let f = run(vec![(put("old", "1").into(), "rev=2")]);
    f.store.replace_all(snapshot.clone().into_iter().map(Ok)).unwrap();
    let loaded: Vec<_> = exported(&f.store).into_iter().map(Result::unwrap).collect();
    assert!(loaded == snapshot, "the loaded store exports the snapshot it loaded");
    let everything =
        RangeRequest { key: b"\0".to_vec(), range_end: b"\0".to_vec(), count_only: true, ..Default::default() };
    assert_eq!(show_read(f.store.range(&everything)), "rev=2501 count=2500 []");
    assert_eq!(show_read(f.store.range(&get("k1234"))), "rev=2501 count=1 [k1234=v1234@1236/1236/v1]");
}

/// The index lists every record of a key, deletions too, and finds its newest at a revision.
#[test]
fn the_key_index_finds_a_keys_newest_record_at_a_revision() {
    use super::index::Change;
    let f = run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("a", "2").into(), "rev=3"),
        (del("a", "").into(), "rev=4 deleted=1"),
    ]);
    let newest = |key: &[u8], revision| f.store.index.newest(&super::keys::key_prefix(key), revision);
    assert_eq!(newest(b"a", 1), None);
    assert_eq!(newest(b"a", 2), Some(Change::new(2, false)));
    assert_eq!(newest(b"a", 3), Some(Change::new(3, false)));
    assert_eq!(newest(b"a", 9), Some(Change::new(4, true)));
    assert_eq!(newest(b"b", 9), None);
}

/// The index counts a range's live keys at a revision and names only the first `limit`, so a
/// count or a limited range reads no more values than it returns.
#[test]
fn the_key_index_counts_a_range_and_names_only_its_first_keys() {
    let f = run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("b", "1").into(), "rev=3"),
        (put("c", "1").into(), "rev=4"),
        (del("b", "").into(), "rev=5 deleted=1"),
        (put("b", "2").into(), "rev=6"),
    ]);
    let live = |key: &str, range_end: &str, revision, limit| {
        let (start, end) = super::keys::record_range(key.as_bytes(), range_end.as_bytes());
        let (count, first) = f.store.index.live_in(&start, &end, revision, limit);
        let first: Vec<_> = first.iter().map(|(prefix, rev)| (super::keys::user_key(prefix), *rev)).collect();
        (count, first)
    };
    assert_eq!(live("a", "z", 6, 1), (3, vec![(b"a".to_vec(), 2)]));
    assert_eq!(live("a", "z", 6, 0), (3, vec![]));
    assert_eq!(live("a", "z", 5, usize::MAX), (2, vec![(b"a".to_vec(), 2), (b"c".to_vec(), 4)]));
    assert_eq!(live("b", "", 4, usize::MAX), (1, vec![(b"b".to_vec(), 3)]));
    assert_eq!(live("z", "a", 6, usize::MAX), (0, vec![]), "a range that ends before it starts is empty");
}

/// A key the index names but the tree lacks (what a compaction leaves for a moment to a read
/// that began before it) never comes back as a count that disagrees with the keys returned:
/// with no compaction to explain it, the read reports a damaged store. A count reads no value.
#[test]
fn a_range_never_counts_a_key_it_cannot_read() {
    let f = run(vec![(put("a", "1").into(), "rev=2"), (put("b", "1").into(), "rev=3")]);
    f.store.tree.remove(super::keys::stored(&super::keys::key_prefix(b"a"), 2)).unwrap();
    let read = f.store.range(&range("a", "z"));
    assert!(matches!(read, Err(Error::Corrupt(_))), "{read:?}");
    let count_only = RangeRequest { count_only: true, ..range("a", "z") };
    assert_eq!(show_read(f.store.range(&count_only)), "rev=3 count=2 []");
}

/// A store as data dirs of format 1 kept it (records under their logical keys) is converted
/// when opened, and then answers reads, history and the hash as before.
#[test]
fn a_store_of_format_1_is_converted_when_opened() {
    let f = run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("b", "1").into(), "rev=3"),
        (put("a", "2").into(), "rev=4"),
        (del("b", "").into(), "rev=5 deleted=1"),
    ]);
    let observe = |store: &KvStore| {
        let reads = ["a", "b"].map(|key| show_read(store.range(&get(key)))).join(" ");
        let old = show_read(store.range(&at(3, range("\0", "\0"))));
        let history = store.history(b"\0", b"\0", 2, 5).unwrap();
        let one_key = store.history(b"a", b"", 2, 5).unwrap();
        assert_eq!(one_key.len(), 2, "a's two puts");
        (reads, old, history, one_key, store.hash_kv(0).unwrap())
    };
    let before = observe(&f.store);
    let tree = f._db.open_tree("kv").unwrap();
    let records: Vec<_> = f.store.export_records(i64::MAX).map(Result::unwrap).collect();
    let (start, end) = super::keys::all_stored();
    for stored in tree.range(start..end).keys() {
        tree.remove(stored.unwrap()).unwrap();
    }
    records.into_iter().for_each(|(logical, value)| drop(tree.insert(logical, value).unwrap()));

    let converted = KvStore::open(tree.clone()).unwrap();
    let (start, end) = super::keys::all_records();
    assert_eq!(tree.range(start..end).count(), 0, "every record moved");
    assert_eq!(observe(&converted), before);
}

/// A put's watch event carries no previous value from apply; a watcher that asks reads it from
/// the store: none when the put created the key, none when compaction removed it (as etcd).
#[test]
fn watch_events_read_their_previous_values_from_the_store() {
    use crate::pb::mvccpb::{event::EventType, Event};
    let f =
        run(vec![(put("a", "1").into(), "rev=2"), (put("a", "2").into(), "rev=3"), (put("b", "1").into(), "rev=4")]);
    let put_event = |key: &str, create_revision, mod_revision, version| Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue { key: key.into(), create_revision, mod_revision, version, ..Default::default() }),
        prev_kv: None,
    };
    let mut events = vec![put_event("a", 2, 3, 2), put_event("b", 4, 4, 1)];
    f.store.fill_prev_kvs(&mut events).unwrap();
    let prevs = |events: &[Event]| events.iter().map(|e| e.prev_kv.as_ref().map(show_kv)).collect::<Vec<_>>();
    assert_eq!(prevs(&events), [Some("a=1@2/2/v1".to_string()), None]);

    assert_eq!(f.run(&compact(3).into()), "rev=4");
    let mut events = vec![put_event("a", 2, 3, 2)];
    f.store.fill_prev_kvs(&mut events).unwrap();
    assert_eq!(prevs(&events), [None], "compacted away");
}

/// The index keeps each key's life as of its newest record, for puts: unknown (None) for a
/// revision the key changed after.
#[test]
fn the_key_index_keeps_each_keys_life() {
    use super::Life;
    let f = run(vec![
        (put("a", "1").into(), "rev=2"),
        (put("a", "2").into(), "rev=3"),
        (del("b", "").into(), "rev=3 deleted=0"),
        (put("b", "1").into(), "rev=4"),
        (del("b", "").into(), "rev=5 deleted=1"),
    ]);
    let life = |key: &[u8], revision| f.store.index.life(&super::keys::key_prefix(key), revision);
    assert_eq!(life(b"a", 5), Some(Some(Life { create_revision: 2, version: 2, lease: 0 })));
    assert_eq!(life(b"a", 2), None, "changed since revision 2");
    assert_eq!(life(b"b", 5), Some(None), "deleted");
    assert_eq!(life(b"c", 5), Some(None), "never written");
}

/// A read that overlaps a snapshot install fails as unavailable instead of answering from a
/// store the install has emptied and not yet refilled; once the install ends, reads see the
/// store the snapshot holds.
#[test]
fn a_read_during_a_snapshot_install_is_refused_not_answered_from_half_a_store() {
    let f = run(vec![(put("a", "1").into(), "rev=2")]);
    let snapshot = exported(&f.store);
    assert!(snapshot.len() > 1, "the install pauses after its first entry");
    let (halfway, reached_halfway) = std::sync::mpsc::channel();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let install = scope.spawn(|| {
            let entries = snapshot.into_iter().enumerate().map(move |(i, entry)| {
                if i == 1 {
                    halfway.send(()).unwrap();
                    resumed.recv().unwrap();
                }
                entry
            });
            f.store.replace_all(entries)
        });
        reached_halfway.recv().unwrap();
        assert_eq!(
            show_read(f.store.range(&get("a"))),
            "Unavailable: etcdserver: member is installing a snapshot from the leader"
        );
        let txn = TxnRequest {
            success: vec![RequestOp { request: Some(request_op::Request::RequestRange(get("a"))) }],
            ..Default::default()
        };
        assert!(matches!(f.store.read_only_txn(&txn), Err(Error::Installing)));
        // What response headers, watches, MemberList, alarms and the lease requests read.
        assert!(matches!(f.store.revision(), Err(Error::Installing)));
        assert!(matches!(f.store.members(), Err(Error::Installing)));
        assert!(matches!(f.store.removed_members(), Err(Error::Installing)));
        assert!(matches!(f.store.alarms(), Err(Error::Installing)));
        assert!(matches!(f.store.leases(), Err(Error::Installing)));
        assert!(matches!(f.store.lease(7), Err(Error::Installing)));
        assert!(matches!(f.store.lease_with_keys(7), Err(Error::Installing)));
        assert_eq!(f.store.last_revision(), 2, "headers keep the revision from before the install");
        resume.send(()).unwrap();
        install.join().unwrap().unwrap();
    });
    assert_eq!(show_read(f.store.range(&get("a"))), "rev=2 count=1 [a=1@2/2/v1]");
    assert_eq!(f.store.revision().unwrap(), 2);
}

/// A read that an install began under is refused as well, even when the install has ended by the
/// time the read does: the read may have seen the store before the install and after it.
#[test]
fn a_read_an_install_began_under_is_refused() {
    let f = run(vec![(put("a", "1").into(), "rev=2")]);
    let overlapped = f.store.outside_installs(|| {
        let before = f.store.range(&get("a"));
        f.store.replace_all(exported(&f.store).into_iter())?;
        before
    });
    assert!(matches!(overlapped, Err(Error::Installing)));
    assert_eq!(show_read(f.store.range(&get("a"))), "rev=2 count=1 [a=1@2/2/v1]");
}

#[test]
fn a_txn_costs_its_costlier_branchs_own_puts_as_in_etcd() {
    assert_eq!(super::put_cost(&put("ab", "xyz")), 256 + 2 + 3);
    let nested = TxnRequest { success: vec![put("n", "v").op()], ..Default::default() };
    let txn = TxnRequest {
        success: vec![put("a", "1").op(), del("b", "").op(), nested.op()],
        failure: vec![put("c", "22").op(), put("d", "3").op()],
        ..Default::default()
    };
    assert_eq!(super::txn_cost(&txn), 2 * 256 + (1 + 2) + (1 + 1), "the failure branch, 517 against 259");
    let deletes = TxnRequest { success: vec![del("a", "").op(), get("b").op()], ..Default::default() };
    assert_eq!(super::txn_cost(&deletes), 0, "a txn of deletes costs nothing");
}

/// Applies are plain inserts, seen one by one (`kv::journal`): a reader that fixes a revision
/// must find every record up to it. One thread reads the key each apply writes last while
/// applies of 100 puts each run.
#[test]
fn a_reader_never_sees_a_revision_before_its_records() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let fixture = Fixture::new();
    let applying = Arc::new(AtomicBool::new(true));
    let reader = std::thread::spawn({
        let (store, applying) = (fixture.store.clone(), applying.clone());
        move || {
            let mut reads = 0;
            while applying.load(Ordering::SeqCst) {
                if let Err(e) = store.range(&get("zz")) {
                    return Err(format!("after {reads} reads: {e}"));
                }
                reads += 1;
            }
            Ok(reads)
        }
    });
    let value = "v".repeat(300);
    for round in 0..100 {
        let mut puts: Vec<Command> =
            (0..99).map(|i| Command::from(command::Op::Put(put(&format!("k{round}-{i}"), &value)))).collect();
        puts.push(Command::from(command::Op::Put(put("zz", &value))));
        fixture.apply(&puts);
    }
    applying.store(false, Ordering::SeqCst);
    let reads = reader.join().expect("the reader panicked").expect("a read failed");
    assert!(reads > 0);
}

#[test]
fn an_apply_writes_records_then_other_keys_then_the_revision_then_the_compaction_point() {
    use super::keys;
    let record = keys::stored(&keys::key_prefix(b"k"), 7);
    let attached = keys::attached_key(1, b"k");
    let revision = keys::meta_key(super::META_REVISION);
    let compacted = keys::meta_key(super::META_COMPACTED);
    let mut changes = vec![compacted.clone(), revision.clone(), attached.clone(), record.clone()];
    changes.sort_by_key(|key| super::apply::write_rank(key));
    assert_eq!(changes, vec![record, attached, revision, compacted]);
}

/// Applies are seen one change at a time, but a lease is read with its keys as one apply left
/// them: a grant that attaches keys in the same apply, and a revoke, are seen whole or not at all.
#[test]
fn a_lease_read_with_its_keys_sees_a_grant_or_a_revoke_whole() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    const KEYS: usize = 50;
    let fixture = Fixture::new();
    let (lease, applying) = (Arc::new(AtomicI64::new(1)), Arc::new(AtomicBool::new(true)));
    let reader = std::thread::spawn({
        let (store, lease, applying) = (fixture.store.clone(), lease.clone(), applying.clone());
        move || {
            let mut whole_views = 0;
            while applying.load(Ordering::SeqCst) {
                let id = lease.load(Ordering::SeqCst);
                match store.lease_with_keys(id).expect("lease") {
                    Some((_, keys)) if keys.len() != KEYS => {
                        return Err(format!("lease {id} listed with {} of its {KEYS} keys", keys.len()))
                    }
                    Some(_) => whole_views += 1,
                    None => {}
                }
            }
            Ok(whole_views)
        }
    });
    for id in 1..=20 {
        lease.store(id, Ordering::SeqCst);
        let mut commands = vec![Command::from(command::Op::LeaseGrant(grant(id, 60)))];
        commands.extend(
            (0..KEYS).map(|i| {
                Command::from(command::Op::Put(PutRequest { lease: id, ..put(&format!("k{id}-{i:02}"), "v") }))
            }),
        );
        fixture.apply(&commands);
        fixture.apply(&[Command::from(command::Op::LeaseRevoke(revoke(id)))]);
        assert_eq!(fixture.store.lease(id).unwrap(), None);
    }
    applying.store(false, Ordering::SeqCst);
    reader.join().expect("the reader panicked").expect("a partial list");
}
