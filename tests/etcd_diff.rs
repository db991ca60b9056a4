//! Differential test: the same KV operations against Phoenix and real etcd 3.4 (Debian's
//! etcd-server), compared response by response after removing what legitimately differs
//! (cluster and member IDs, Raft terms). Skipped, visibly, where etcd is not installed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    WatchFilterType, WatchOptions, WatchRequestSender, WatchResponse,
};
use support::{free_ports, poll_until, Cluster, Rng, READY_TIMEOUT};

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

/// A one-member etcd and a one-member Phoenix; none, said visibly, where etcd is not installed.
async fn etcd_and_phoenix() -> Option<(Etcd, Cluster)> {
    if !Path::new(ETCD).exists() {
        eprintln!("SKIPPED: {ETCD} is not installed (apt-get install etcd-server); .ci/run installs it");
        return None;
    }
    Some((Etcd::start().await, Cluster::start(1, &[]).await))
}

/// The two systems' outcomes of the same steps, compared step by step.
fn assert_same_outcomes(expected: &[String], actual: &[String]) {
    assert_eq!(expected.len(), actual.len(), "the two runs took different numbers of steps");
    let mut differences = Vec::new();
    for (step, (want, got)) in expected.iter().zip(actual).enumerate() {
        if want != got {
            differences.push(format!("step {step}:\n  etcd:    {want}\n  phoenix: {got}"));
        }
    }
    assert!(differences.is_empty(), "{} differences from etcd:\n{}", differences.len(), differences.join("\n"));
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
    // etcd's duplicate check compares a range's end as bytes, so a delete from a key onwards
    // overlaps nothing, and counts a nested delete only against what comes after it. (Where the
    // branches run would then change a key twice, Phoenix refuses: `kv::tests`.)
    let from_key = Txn::new()
        .and_then([TxnOp::put("x", "2", None), TxnOp::delete("y", Some(DeleteOptions::new().with_from_key()))]);
    out.push(outcome(c.txn(from_key).await));
    let not_run = Compare::version("x", CompareOp::Equal, 0);
    let nested_put = |key: &str| TxnOp::txn(Txn::new().when([not_run.clone()]).and_then([TxnOp::put(key, "3", None)]));
    let nested_delete = |key: &str| TxnOp::txn(Txn::new().and_then([TxnOp::delete(key, None)]));
    out.push(outcome(c.txn(Txn::new().and_then([nested_put("x"), nested_delete("x")])).await));
    out.push(outcome(c.txn(Txn::new().and_then([nested_delete("x"), nested_put("x")])).await));
    out.push(outcome(c.delete("c", Some(DeleteOptions::new().with_prev_key())).await));
    out.push(outcome(c.delete("c", None).await));
    out.push(outcome(c.compact(5, None).await));
    out.push(outcome(c.compact(5, None).await));
    out.push(outcome(c.compact(1000, None).await));
    out.push(outcome(c.get("a", Some(GetOptions::new().with_revision(4))).await));
    out.push(outcome(c.get("a", Some(GetOptions::new().with_revision(5))).await));
    out.push(outcome(c.get("\0", Some(GetOptions::new().with_from_key())).await));
    // The hashes differ by design (etcd hashes its bbolt records); what they name must not.
    for revision in [0, 5, 6, 2, 1000] {
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
    let Some((etcd, phoenix)) = etcd_and_phoenix().await else { return };
    let expected = workload(Client::connect([etcd.endpoint.clone()], None).await.unwrap()).await;
    let actual = workload(phoenix.client(0).await).await;
    assert_same_outcomes(&expected, &actual);
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
    let Some((etcd, phoenix)) = etcd_and_phoenix().await else { return };
    let expected = watch_session(Client::connect([etcd.endpoint.clone()], None).await.unwrap()).await;
    let actual = watch_session(phoenix.client(0).await).await;
    assert_same_outcomes(&expected, &actual);
}

/// Keys the random requests use: neighbours, keys that are prefixes of others, a zero byte and
/// 0xff bytes (whose prefix ranges have no upper end).
const RANDOM_KEYS: [&[u8]; 9] = [b"a", b"ab", b"b", b"b/1", b"b/2", b"c", b"c\0", b"\xff", b"\xff\xff"];
const RANDOM_VALUES: [&str; 4] = ["", "v", "w", "xyz"];
/// The lease granted, with the same ID on both systems, before the random requests, which
/// grant, revoke and attach keys to it and to others of these IDs; the last is never granted.
const RANDOM_LEASE: i64 = 0x1234;
const RANDOM_LEASES: [i64; 4] = [RANDOM_LEASE, 0x1235, 0x1236, 0x9999];
/// Long enough that no random lease expires during a run.
const RANDOM_LEASE_TTL: i64 = 3600;

/// Which keys a request names besides its key.
#[derive(Debug, Clone)]
enum Span {
    One,
    Prefix,
    FromKey,
    To(Vec<u8>),
}

#[derive(Debug, Clone)]
struct RandomGet {
    key: Vec<u8>,
    span: Span,
    limit: i64,
    revision: i64,
    sort: Option<(SortTarget, SortOrder)>,
    serializable: bool,
    keys_only: bool,
    count_only: bool,
    /// Minimum and maximum mod revision, then minimum and maximum create revision; 0 is none.
    filters: [i64; 4],
}

#[derive(Debug, Clone)]
enum RandomOp {
    Put { key: Vec<u8>, value: &'static str, lease: i64, prev_kv: bool, ignore_value: bool, ignore_lease: bool },
    Get(RandomGet),
    Delete { key: Vec<u8>, span: Span, prev_kv: bool },
    Txn(RandomTxn),
}

#[derive(Debug, Clone)]
struct RandomCompare {
    key: Vec<u8>,
    span: Span,
    op: CompareOp,
    /// 0 value, 1 version, 2 create revision, 3 mod revision, 4 lease.
    target: usize,
    number: i64,
    value: &'static str,
}

#[derive(Debug, Clone)]
struct RandomTxn {
    compares: Vec<RandomCompare>,
    success: Vec<RandomOp>,
    failure: Vec<RandomOp>,
}

#[derive(Debug, Clone)]
enum RandomRequest {
    Op(RandomOp),
    Compact { revision: i64, physical: bool },
    LeaseGrant(i64),
    LeaseRevoke(i64),
    LeaseTimeToLive(i64),
}

/// Draws requests from a seed; `revision` is the store's latest revision as last answered, so
/// that revisions drawn are mostly real ones, some just past the end, some compacted.
struct RequestGenerator {
    rng: Rng,
    revision: i64,
}

impl RequestGenerator {
    fn one_in(&mut self, n: usize) -> bool {
        self.rng.below(n) == 0
    }

    fn key(&mut self) -> Vec<u8> {
        if self.one_in(40) {
            return Vec::new();
        }
        RANDOM_KEYS[self.rng.below(RANDOM_KEYS.len())].to_vec()
    }

    fn lease(&mut self) -> i64 {
        RANDOM_LEASES[self.rng.below(RANDOM_LEASES.len())]
    }

    fn value(&mut self) -> &'static str {
        RANDOM_VALUES[self.rng.below(RANDOM_VALUES.len())]
    }

    fn revision(&mut self) -> i64 {
        match self.rng.below(8) {
            0 => 0,
            1 => -1,
            _ => self.rng.below(self.revision.max(1) as usize + 2) as i64,
        }
    }

    fn span(&mut self) -> Span {
        match self.rng.below(6) {
            0 => Span::Prefix,
            1 => Span::FromKey,
            2 => Span::To(self.key()),
            _ => Span::One,
        }
    }

    fn request(&mut self) -> RandomRequest {
        match self.rng.below(40) {
            0 => return RandomRequest::Compact { revision: self.revision(), physical: self.one_in(2) },
            1 => return RandomRequest::LeaseGrant(self.lease()),
            2 => return RandomRequest::LeaseRevoke(self.lease()),
            3 | 4 => return RandomRequest::LeaseTimeToLive(self.lease()),
            _ => {}
        }
        loop {
            let op = self.op(0);
            if !matches!(&op, RandomOp::Txn(txn) if puts_and_deletes_a_key(txn)) {
                return RandomRequest::Op(op);
            }
        }
    }

    /// An op at `depth` txns down.
    fn op(&mut self, depth: usize) -> RandomOp {
        match self.rng.below(20) {
            0..=6 => RandomOp::Put {
                key: self.key(),
                value: self.value(),
                lease: if self.one_in(2) { self.lease() } else { 0 },
                prev_kv: self.one_in(3),
                ignore_value: self.one_in(8),
                ignore_lease: self.one_in(8),
            },
            7..=12 => RandomOp::Get(self.get()),
            13..=14 => RandomOp::Delete { key: self.key(), span: self.span(), prev_kv: self.one_in(2) },
            _ if depth < 2 => RandomOp::Txn(self.txn(depth + 1)),
            _ => RandomOp::Get(self.get()),
        }
    }

    fn get(&mut self) -> RandomGet {
        let sorts = [SortTarget::Key, SortTarget::Version, SortTarget::Create, SortTarget::Mod, SortTarget::Value];
        let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
        let mut filters = [0; 4];
        for filter in &mut filters {
            if self.one_in(8) {
                *filter = self.revision();
            }
        }
        RandomGet {
            key: self.key(),
            span: self.span(),
            limit: if self.one_in(3) { self.rng.below(5) as i64 - 1 } else { 0 },
            revision: if self.one_in(4) { self.revision() } else { 0 },
            sort: self.one_in(3).then(|| (sorts[self.rng.below(5)], orders[self.rng.below(3)])),
            serializable: self.one_in(4),
            keys_only: self.one_in(6),
            count_only: self.one_in(8),
            filters,
        }
    }

    fn txn(&mut self, depth: usize) -> RandomTxn {
        let compares = (0..self.rng.below(4))
            .map(|_| RandomCompare {
                key: self.key(),
                span: if self.one_in(5) { self.span() } else { Span::One },
                op: [CompareOp::Equal, CompareOp::Greater, CompareOp::Less, CompareOp::NotEqual][self.rng.below(4)],
                target: self.rng.below(5),
                number: match self.rng.below(3) {
                    0 => self.rng.below(4) as i64,
                    1 => self.lease(),
                    _ => self.revision(),
                },
                value: self.value(),
            })
            .collect();
        let success = (0..self.rng.below(4)).map(|_| self.op(depth)).collect();
        let failure = (0..self.rng.below(4)).map(|_| self.op(depth)).collect();
        RandomTxn { compares, success, failure }
    }
}

/// Whether a branch of `txn` (nested txns included) could put a key and delete it too. etcd 3.4
/// takes some such txns that Phoenix refuses (README, "Notes for etcd users"), and panics on
/// some (`kv::tests::a_txn_changes_a_key_once`), so the random requests hold none.
fn puts_and_deletes_a_key(txn: &RandomTxn) -> bool {
    [&txn.success, &txn.failure].into_iter().any(|ops| {
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        collect_writes(ops, &mut puts, &mut deletes);
        puts.iter().any(|key| deletes.iter().any(|(start, span)| covers(start, span, key)))
    })
}

fn collect_writes<'a>(ops: &'a [RandomOp], puts: &mut Vec<&'a [u8]>, deletes: &mut Vec<(&'a [u8], &'a Span)>) {
    for op in ops {
        match op {
            RandomOp::Put { key, .. } => puts.push(key),
            RandomOp::Delete { key, span, .. } => deletes.push((key, span)),
            RandomOp::Txn(nested) => {
                collect_writes(&nested.success, puts, deletes);
                collect_writes(&nested.failure, puts, deletes);
            }
            RandomOp::Get(_) => {}
        }
    }
}

fn covers(start: &[u8], span: &Span, key: &[u8]) -> bool {
    match span {
        Span::One => key == start,
        Span::To(end) if end.is_empty() => key == start,
        Span::Prefix => key.starts_with(start),
        Span::FromKey => key >= start,
        Span::To(end) => start <= key && key < end.as_slice(),
    }
}

fn get_options(get: &RandomGet) -> GetOptions {
    let mut options = match &get.span {
        Span::One => GetOptions::new(),
        Span::Prefix => GetOptions::new().with_prefix(),
        Span::FromKey => GetOptions::new().with_from_key(),
        Span::To(end) => GetOptions::new().with_range(end.clone()),
    };
    options = options.with_limit(get.limit).with_revision(get.revision);
    if let Some((target, order)) = get.sort {
        options = options.with_sort(target, order);
    }
    if get.serializable {
        options = options.with_serializable();
    }
    if get.keys_only {
        options = options.with_keys_only();
    }
    if get.count_only {
        options = options.with_count_only();
    }
    let [min_mod, max_mod, min_create, max_create] = get.filters;
    options
        .with_min_mod_revision(min_mod)
        .with_max_mod_revision(max_mod)
        .with_min_create_revision(min_create)
        .with_max_create_revision(max_create)
}

fn delete_options(span: &Span, prev_kv: bool) -> DeleteOptions {
    let options = match span {
        Span::One => DeleteOptions::new(),
        Span::Prefix => DeleteOptions::new().with_prefix(),
        Span::FromKey => DeleteOptions::new().with_from_key(),
        Span::To(end) => DeleteOptions::new().with_range(end.clone()),
    };
    if prev_kv {
        options.with_prev_key()
    } else {
        options
    }
}

fn put_options(lease: i64, prev_kv: bool, ignore_value: bool, ignore_lease: bool) -> PutOptions {
    let mut options = PutOptions::new().with_lease(lease);
    if prev_kv {
        options = options.with_prev_key();
    }
    if ignore_value {
        options = options.with_ignore_value();
    }
    if ignore_lease {
        options = options.with_ignore_lease();
    }
    options
}

fn txn_op(op: &RandomOp) -> TxnOp {
    match op {
        RandomOp::Put { key, value, lease, prev_kv, ignore_value, ignore_lease } => {
            TxnOp::put(key.clone(), *value, Some(put_options(*lease, *prev_kv, *ignore_value, *ignore_lease)))
        }
        RandomOp::Get(get) => TxnOp::get(get.key.clone(), Some(get_options(get))),
        RandomOp::Delete { key, span, prev_kv } => TxnOp::delete(key.clone(), Some(delete_options(span, *prev_kv))),
        RandomOp::Txn(txn) => TxnOp::txn(build_txn(txn)),
    }
}

fn build_txn(txn: &RandomTxn) -> Txn {
    let compares: Vec<Compare> = txn
        .compares
        .iter()
        .map(|c| {
            let key = c.key.clone();
            let compare = match c.target {
                0 => Compare::value(key, c.op, c.value),
                1 => Compare::version(key, c.op, c.number),
                2 => Compare::create_revision(key, c.op, c.number),
                3 => Compare::mod_revision(key, c.op, c.number),
                _ => Compare::lease(key, c.op, c.number),
            };
            match &c.span {
                Span::One => compare,
                Span::Prefix => compare.with_prefix(),
                Span::FromKey => compare.with_range("\0"),
                Span::To(end) => compare.with_range(end.clone()),
            }
        })
        .collect();
    Txn::new()
        .when(compares)
        .and_then(txn.success.iter().map(txn_op).collect::<Vec<_>>())
        .or_else(txn.failure.iter().map(txn_op).collect::<Vec<_>>())
}

/// Runs one request; its outcome normalised, and the revision its header names.
async fn run_request(c: &mut Client, request: &RandomRequest) -> (String, Option<i64>) {
    fn revision(header: Option<&etcd_client::ResponseHeader>) -> Option<i64> {
        header.map(|h| h.revision())
    }
    let mut seen = None;
    let text = match request {
        RandomRequest::Compact { revision: at, physical } => {
            let options = physical.then(|| etcd_client::CompactionOptions::new().with_physical());
            outcome(c.compact(*at, options).await.inspect(|r| seen = revision(r.header())))
        }
        RandomRequest::Op(RandomOp::Put { key, value, lease, prev_kv, ignore_value, ignore_lease }) => {
            let options = put_options(*lease, *prev_kv, *ignore_value, *ignore_lease);
            outcome(c.put(key.clone(), *value, Some(options)).await.inspect(|r| seen = revision(r.header())))
        }
        RandomRequest::Op(RandomOp::Get(get)) => {
            outcome(c.get(get.key.clone(), Some(get_options(get))).await.inspect(|r| seen = revision(r.header())))
        }
        RandomRequest::Op(RandomOp::Delete { key, span, prev_kv }) => {
            let options = delete_options(span, *prev_kv);
            outcome(c.delete(key.clone(), Some(options)).await.inspect(|r| seen = revision(r.header())))
        }
        RandomRequest::Op(RandomOp::Txn(txn)) => {
            outcome(c.txn(build_txn(txn)).await.inspect(|r| seen = revision(r.header())))
        }
        RandomRequest::LeaseGrant(id) => {
            let options = etcd_client::LeaseGrantOptions::new().with_id(*id);
            outcome(c.lease_grant(RANDOM_LEASE_TTL, Some(options)).await.inspect(|r| seen = revision(r.header())))
        }
        RandomRequest::LeaseRevoke(id) => outcome(c.lease_revoke(*id).await.inspect(|r| seen = revision(r.header()))),
        // The time left differs by when each system counted, and etcd lists keys in no set order.
        RandomRequest::LeaseTimeToLive(id) => {
            let options = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
            outcome(c.lease_time_to_live(*id, Some(options)).await.map(|r| {
                let mut keys = r.keys().to_vec();
                keys.sort();
                let left = if r.ttl() > 0 { "some" } else { "none" };
                format!("lease {:x} granted {} s, {left} left, keys {keys:?}", r.id(), r.granted_ttl())
            }))
        }
    };
    (text, seen)
}

/// The seeds the random comparison runs: `PHOENIX_DIFF_SEEDS` (comma-separated) replays or
/// explores others.
fn random_seeds() -> Vec<u64> {
    match std::env::var("PHOENIX_DIFF_SEEDS") {
        Ok(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![1, 2, 3],
    }
}

const RANDOM_REQUESTS_PER_SEED: usize = 400;

/// Random KV requests (puts with and without leases, ranges with every option, deletes,
/// nested txns, compactions) and lease grants, revokes and TimeToLives, each sent to etcd and
/// then to Phoenix, their answers compared.
#[tokio::test]
async fn random_kv_requests_match_real_etcd() {
    let Some((etcd, phoenix)) = etcd_and_phoenix().await else { return };
    let [mut expected_client, mut actual_client] = random_request_clients(&etcd, &phoenix).await;
    let mut differences = Vec::new();
    for seed in random_seeds() {
        let mut generator = RequestGenerator { rng: Rng::new(seed), revision: 2 };
        for step in 0..RANDOM_REQUESTS_PER_SEED {
            let request = generator.request();
            let clients = [&mut expected_client, &mut actual_client];
            differences.extend(compare_request(&mut generator, clients, &request, seed, step).await);
        }
    }
    assert_no_differences(&differences);
}

/// Clients of etcd and of Phoenix for the random requests, each system holding RANDOM_LEASE.
async fn random_request_clients(etcd: &Etcd, phoenix: &Cluster) -> [Client; 2] {
    let mut clients = [Client::connect([etcd.endpoint.clone()], None).await.unwrap(), phoenix.client(0).await];
    for c in &mut clients {
        let options = etcd_client::LeaseGrantOptions::new().with_id(RANDOM_LEASE);
        let grant = c.lease_grant(RANDOM_LEASE_TTL, Some(options)).await;
        assert_eq!(grant.unwrap().id(), RANDOM_LEASE);
    }
    clients
}

/// Sends `request` to etcd and then to Phoenix, and notes the revision etcd answered in
/// `generator`; the difference between the two answers, if any.
async fn compare_request(
    generator: &mut RequestGenerator,
    [etcd, phoenix]: [&mut Client; 2],
    request: &RandomRequest,
    seed: u64,
    step: usize,
) -> Option<String> {
    let (want, revision) = run_request(etcd, request).await;
    let (got, _) = run_request(phoenix, request).await;
    if let Some(revision) = revision {
        generator.revision = revision;
    }
    (want != got).then(|| format!("seed {seed} step {step}: {request:?}\n  etcd:    {want}\n  phoenix: {got}"))
}

/// A difference in one request can make every later one differ, so the first few are shown.
fn assert_no_differences(differences: &[String]) {
    let shown: Vec<&str> = differences.iter().take(8).map(String::as_str).collect();
    assert!(
        differences.is_empty(),
        "{} differences from etcd, the first {}:\n{}",
        differences.len(),
        shown.len(),
        shown.join("\n")
    );
}

/// A random watcher: its ID, the same on both systems, what it watches and from where.
#[derive(Debug, Clone)]
struct RandomWatch {
    id: i64,
    key: Vec<u8>,
    span: Span,
    /// 0 is the next revision; otherwise one the store has not reached yet. A start in the
    /// past is left to `watch_responses_match_real_etcd`: whether a compaction sent just after
    /// it cancels the watcher depends on when each system replays the history.
    start_revision: i64,
    prev_kv: bool,
    filter: Option<WatchFilterType>,
}

impl RequestGenerator {
    fn watch(&mut self, id: i64) -> RandomWatch {
        RandomWatch {
            id,
            key: self.key(),
            span: self.span(),
            start_revision: if self.one_in(2) { 0 } else { self.revision + 1 + self.rng.below(10) as i64 },
            prev_kv: self.one_in(2),
            filter: [None, None, Some(WatchFilterType::NoPut), Some(WatchFilterType::NoDelete)][self.rng.below(4)],
        }
    }
}

fn watch_options(watch: &RandomWatch) -> WatchOptions {
    let mut options = match &watch.span {
        Span::One => WatchOptions::new(),
        Span::Prefix => WatchOptions::new().with_prefix(),
        Span::FromKey => WatchOptions::new().with_from_key(),
        Span::To(end) => WatchOptions::new().with_range(end.clone()),
    };
    options = options.with_watch_id(watch.id).with_start_revision(watch.start_revision);
    if watch.prev_kv {
        options = options.with_prev_key();
    }
    if let Some(filter) = watch.filter {
        options = options.with_filters([filter]);
    }
    options
}

/// Whether `watch` is sent the changes of `key`: etcd watches `"\0"` for an empty key.
fn watch_covers(watch: &RandomWatch, key: &[u8]) -> bool {
    match (&watch.span, watch.key.is_empty()) {
        (Span::Prefix | Span::FromKey, true) => true,
        (span, true) => covers(b"\0", span, key),
        (span, false) => covers(&watch.key, span, key),
    }
}

/// Everything one system sent its random watchers, by watch ID.
#[derive(Default)]
struct WatchLog {
    /// Each watcher's responses, one line per creation, event and cancellation; progress
    /// notifications are left out (when they come is the server's choice).
    seen: BTreeMap<i64, Vec<String>>,
    /// The revision of the last event each watcher was sent.
    last_event: BTreeMap<i64, i64>,
    canceled: BTreeSet<i64>,
    /// The watcher asked for last: the test waits for its answer before it asks for another.
    creating: i64,
}

impl WatchLog {
    fn record(&mut self, response: &WatchResponse) {
        // A refused watch is answered as watch -1, created and canceled at once.
        let id = match response.watch_id() {
            -1 if response.created() => self.creating,
            id => id,
        };
        let seen = self.seen.entry(id).or_default();
        if response.created() {
            seen.push(format!("created as {}", response.watch_id()));
        }
        for event in response.events() {
            seen.push(format!("{:?} {:?} prev {:?}", event.event_type(), event.kv(), event.prev_kv()));
            if let Some(kv) = event.kv() {
                self.last_event.insert(id, kv.mod_revision());
            }
        }
        if response.canceled() {
            seen.push(format!("canceled, compacted at {}: {}", response.compact_revision(), response.cancel_reason()));
            self.canceled.insert(id);
        }
    }
}

/// One system's random watchers: a few watch streams, each read into the log by a task.
struct Watchers {
    client: Client,
    senders: Vec<WatchRequestSender>,
    log: Arc<Mutex<WatchLog>>,
}

const RANDOM_WATCH_STREAMS: usize = 4;

impl Watchers {
    fn new(client: Client) -> Watchers {
        Watchers { client, senders: Vec::new(), log: Arc::default() }
    }

    /// Asks for `watch`, on a new stream while there are fewer than RANDOM_WATCH_STREAMS.
    async fn watch(&mut self, watch: &RandomWatch) {
        let options = watch_options(watch);
        self.log.lock().unwrap().creating = watch.id;
        if self.senders.len() < RANDOM_WATCH_STREAMS {
            let (sender, mut stream) = self.client.watch(watch.key.clone(), Some(options)).await.unwrap().split();
            let log = self.log.clone();
            tokio::spawn(async move {
                while let Ok(Some(response)) = stream.message().await {
                    log.lock().unwrap().record(&response);
                }
            });
            self.senders.push(sender);
        } else {
            let sender = &mut self.senders[watch.id as usize % RANDOM_WATCH_STREAMS];
            sender.watch(watch.key.clone(), Some(options)).await.unwrap();
        }
    }

    fn answered(&self, id: i64) -> bool {
        self.log.lock().unwrap().seen.contains_key(&id)
    }

    /// Whether `watch` has been sent all it will be: its cancellation, or the first of the
    /// closing put and delete (at `closing`) that it is sent.
    fn done(&self, watch: &RandomWatch, closing: [(i64, WatchFilterType); 2]) -> bool {
        let log = self.log.lock().unwrap();
        let covers_any = RANDOM_KEYS.iter().any(|key| watch_covers(watch, key));
        let last = closing
            .into_iter()
            .find(|&(revision, kind)| covers_any && revision >= watch.start_revision && watch.filter != Some(kind));
        log.canceled.contains(&watch.id)
            || last.map_or(log.seen.contains_key(&watch.id), |(revision, _)| {
                log.last_event.get(&watch.id).is_some_and(|&seen| seen >= revision)
            })
    }
}

const RANDOM_WATCHES_PER_SEED: usize = 6;

/// Random watchers (ranges, prefixes, from-keys, filters, prev_kv, start revisions now and
/// ahead) on etcd and on Phoenix, while the random requests of the KV test run, some
/// watchers joining midway; at the end a put and a delete of every key tell each watcher it has
/// been sent everything, and each watcher's events are compared.
#[tokio::test]
async fn random_watchers_match_real_etcd() {
    let Some((etcd, phoenix)) = etcd_and_phoenix().await else { return };
    let [mut expected_client, mut actual_client] = random_request_clients(&etcd, &phoenix).await;
    let mut expected = Watchers::new(expected_client.clone());
    let mut actual = Watchers::new(actual_client.clone());
    let mut watches = Vec::new();
    let mut differences = Vec::new();
    for seed in random_seeds() {
        let mut generator = RequestGenerator { rng: Rng::new(seed), revision: 1 };
        for step in 0..RANDOM_REQUESTS_PER_SEED {
            if step < RANDOM_WATCHES_PER_SEED || generator.one_in(25) {
                let watch = generator.watch(watches.len() as i64 + 1);
                // Created on both before the next write, so that both send it the same events.
                expected.watch(&watch).await;
                actual.watch(&watch).await;
                let what = format!("{watch:?} created");
                poll_until(WATCH_WAIT, &what, || async {
                    (expected.answered(watch.id) && actual.answered(watch.id)).then_some(())
                })
                .await;
                watches.push(watch);
            }
            let mut request = generator.request();
            // A compaction past a revision whose events a watcher may not have been sent yet
            // would race with its prev_kv read, on both systems.
            if let RandomRequest::Compact { revision, .. } = &mut request {
                *revision = (*revision).min(generator.revision - 5);
            }
            let clients = [&mut expected_client, &mut actual_client];
            differences.extend(compare_request(&mut generator, clients, &request, seed, step).await);
        }
    }
    let closing = close_random_watchers([&mut expected_client, &mut actual_client]).await;
    let deadline = std::time::Instant::now() + WATCH_WAIT;
    let unfinished = || -> Vec<i64> {
        let done = |w: &RandomWatch| expected.done(w, closing) && actual.done(w, closing);
        watches.iter().filter(|w| !done(w)).map(|w| w.id).collect()
    };
    while !unfinished().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(support::POLL_INTERVAL).await;
    }
    let unfinished = unfinished();
    let (expected, actual) = (expected.log.lock().unwrap(), actual.log.lock().unwrap());
    for watch in &watches {
        let (want, got) = (expected.seen.get(&watch.id), actual.seen.get(&watch.id));
        if want != got {
            differences.push(format!("{watch:?}\n  etcd:    {want:?}\n  phoenix: {got:?}"));
        }
    }
    assert_no_differences(&differences);
    assert!(unfinished.is_empty(), "watchers {unfinished:?} were not sent the closing writes");
}

/// Puts every random key in one revision and then deletes them all in the next, on both
/// systems; those revisions, with the filter that hides each.
async fn close_random_watchers(clients: [&mut Client; 2]) -> [(i64, WatchFilterType); 2] {
    let mut revisions = Vec::new();
    for c in clients {
        let put_all = Txn::new().and_then(RANDOM_KEYS.iter().map(|k| TxnOp::put(*k, "end", None)).collect::<Vec<_>>());
        let put = c.txn(put_all).await.unwrap().header().unwrap().revision();
        let delete = c.delete("\0", Some(DeleteOptions::new().with_from_key())).await.unwrap();
        revisions.push((put, delete.header().unwrap().revision()));
    }
    assert_eq!(revisions[0], revisions[1], "the closing writes' revisions differ");
    let (put, delete) = revisions[0];
    [(put, WatchFilterType::NoPut), (delete, WatchFilterType::NoDelete)]
}
