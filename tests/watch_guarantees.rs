//! Watch guarantees under kill -9: concurrent writers (puts, deletes, range deletes, multi-key
//! txns, keys on leases that are revoked or expire) run against a three-member cluster while followers and the leader are killed and
//! restarted; watchers on every member record what they get, reconnecting (and sometimes
//! leaving on purpose) and resuming from the last revision they saw. At the end every record is
//! checked against the history read back from each member, as etcd's robustness tests check
//! theirs: ordered, unique, no gaps (reliable), atomic per revision, prev_kv right, filters
//! right, resumed watches continuing exactly, progress never ahead of the events, and every
//! acknowledged write in the history at its revision.
//!
//! Randomness comes from a seed printed at the start; set WATCH_SEED to replay a schedule.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, DeleteOptions, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};
use support::{Cluster, Rng, TEST_TIMINGS};

/// How long the writers run while members are killed and restarted.
const TRAFFIC: Duration = Duration::from_secs(20);
/// The keys everything touches: few, so keys are rewritten, deleted and re-created often.
const KEYS: usize = 10;
/// One request, or one expected watch response, may take this long before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A watch that gets nothing for this long, while writes go on, has stalled.
const STALL: Duration = Duration::from_secs(30);
/// The value the last write puts in every key: watchers stop once they see it.
const FINAL: &str = "final";

/// Pacing, not synchronisation: between attempts to reach a member that is down, for watchers
/// and for writers.
const RETRY_PACING: Duration = Duration::from_millis(100);
const WRITER_PACING: Duration = Duration::from_millis(50);
/// How long the deliberately slow reader stops reading, so that its stream backs up.
const SLOW_READER_STALL: Duration = Duration::from_secs(12);

fn key(i: usize) -> String {
    format!("g/{i}")
}

/// One event as the checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    rev: i64,
    key: String,
    put: bool,
    value: String,
    create: i64,
    version: i64,
    /// (value, mod_revision, create_revision, version) of prev_kv.
    prev: Option<(String, i64, i64, i64)>,
}

impl Ev {
    fn of(e: &etcd_client::Event) -> Ev {
        let kv = e.kv().expect("an event has a kv");
        Ev {
            rev: kv.mod_revision(),
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            put: e.event_type() == EventType::Put,
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            create: kv.create_revision(),
            version: kv.version(),
            prev: e.prev_kv().map(|p| {
                (String::from_utf8_lossy(p.value()).into_owned(), p.mod_revision(), p.create_revision(), p.version())
            }),
        }
    }
}

/// What a watcher saw, in order.
#[derive(Debug)]
enum Item {
    /// One response's events.
    Events(Vec<Ev>),
    /// A progress report (requested or periodic) at this revision.
    Progress(i64),
    /// The stream was lost or left; the watch was reopened (elsewhere) from `from`.
    Resumed { from: i64 },
}

/// What a watcher watches and how it behaves.
#[derive(Clone, Debug)]
struct Spec {
    name: &'static str,
    member: usize,
    /// `[key, range_end)`.
    range: (String, String),
    /// 0: from the next revision.
    start: i64,
    prev_kv: bool,
    filter: Option<WatchFilterType>,
    progress_notify: bool,
    /// Ask for progress after every this many responses.
    progress_every: Option<usize>,
    /// Leave and resume elsewhere after every this many responses.
    leave_every: Option<usize>,
    /// Stop reading for a while every so often, so its stream falls behind the hub.
    slow: bool,
}

impl Spec {
    fn covers(&self, e: &Ev) -> bool {
        let (start, end) = &self.range;
        let in_range = e.key.as_str() >= start.as_str() && e.key.as_str() < end.as_str();
        let filtered = match self.filter {
            Some(WatchFilterType::NoPut) => e.put,
            Some(WatchFilterType::NoDelete) => !e.put,
            None => false,
        };
        in_range && !filtered
    }

    fn options(&self, start: i64) -> WatchOptions {
        let mut options = WatchOptions::new().with_range(self.range.1.as_str()).with_start_revision(start);
        if self.prev_kv {
            options = options.with_prev_key();
        }
        if let Some(filter) = self.filter {
            options = options.with_filters([filter]);
        }
        if self.progress_notify {
            options = options.with_progress_notify();
        }
        options
    }
}

struct Record {
    spec: Spec,
    /// The first revision the watch covers.
    start: i64,
    items: Vec<Item>,
}

/// Opens the watch on `endpoint` and returns the stream with its created header revision.
async fn open(endpoint: &str, spec: &Spec, start: i64) -> Result<(WatchStream, i64), String> {
    let attempt = async {
        let mut client = Client::connect([endpoint], None).await.map_err(|e| e.to_string())?;
        let mut stream =
            client.watch(spec.range.0.as_str(), Some(spec.options(start))).await.map_err(|e| e.to_string())?;
        let created = stream.message().await.map_err(|e| e.to_string())?.ok_or("stream ended")?;
        assert!(created.created() && !created.canceled(), "{}: bad create response {created:?}", spec.name);
        Ok((stream, created.header().map_or(0, |h| h.revision())))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, attempt).await.map_err(|_| "timed out".to_string())?
}

/// Records what one watcher sees until it has everything up to the last write (`last_write`,
/// 0 until it is made): an event at it, or a progress report vouching for it.
async fn run_watcher(spec: Spec, endpoints: Vec<String>, seed: u64, last_write: Arc<AtomicI64>) -> Record {
    let mut rng = Rng::new(seed);
    let mut member = spec.member;
    let mut start = None; // the first revision covered, once known
    let mut items = Vec::new();
    let mut last_seen: Option<i64> = None;
    let mut total = 0; // responses over all streams
    let mut covered = 0; // every event up to this revision has been delivered
    loop {
        let from = match (last_seen, start) {
            (Some(rev), _) => rev + 1,
            (None, Some(start)) => start,
            (None, None) => spec.start,
        };
        let (mut stream, created_at) = match open(&endpoints[member], &spec, from).await {
            Ok(opened) => opened,
            Err(_) => {
                // That member is down; try the next one (pacing between attempts).
                member = (member + 1) % endpoints.len();
                tokio::time::sleep(RETRY_PACING).await;
                continue;
            }
        };
        if start.is_none() {
            start = Some(if spec.start == 0 { created_at + 1 } else { spec.start });
        } else {
            items.push(Item::Resumed { from });
        }
        let mut responses = 0;
        let mut last_activity = Instant::now();
        // Once the last write is made, progress is asked for on every tick, so even a watch
        // whose filter hides the last write learns that it has everything.
        let mut ask = tokio::time::interval(Duration::from_millis(200));
        let finished = loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = ask.tick() => {
                    // The last write may have been seen before it was known to be the last.
                    let last = last_write.load(Ordering::SeqCst);
                    if last > 0 && covered >= last {
                        break true;
                    }
                    if last_activity.elapsed() > STALL {
                        let status = match Client::connect([&endpoints[member]], None).await {
                            Ok(mut c) => format!("{:?}", c.status().await),
                            Err(e) => e.to_string(),
                        };
                        panic!("{}: nothing for {STALL:?} on member {member} watching from {from}; last write {}; member status {status}", spec.name, last_write.load(Ordering::SeqCst));
                    }
                    if last_write.load(Ordering::SeqCst) > 0 && stream.request_progress().await.is_err() {
                        break false;
                    }
                    continue;
                }
            };
            let resp: WatchResponse = match message {
                Ok(Some(resp)) => resp,
                Ok(None) | Err(_) => break false, // the member went away
            };
            last_activity = Instant::now();
            assert!(!resp.canceled(), "{}: canceled: {resp:?}", spec.name);
            responses += 1;
            total += 1;
            covered = covered.max(if resp.events().is_empty() {
                let rev = resp.header().map_or(0, |h| h.revision());
                items.push(Item::Progress(rev));
                rev
            } else {
                let events: Vec<Ev> = resp.events().iter().map(Ev::of).collect();
                last_seen = events.last().map(|e| e.rev);
                items.push(Item::Events(events));
                last_seen.unwrap_or(0)
            });
            let last = last_write.load(Ordering::SeqCst);
            if last > 0 && covered >= last {
                break true;
            }
            if spec.progress_every.is_some_and(|n| responses % n == 0) && stream.request_progress().await.is_err() {
                break false;
            }
            if spec.slow && total == 100 {
                // A deliberately slow reader: its stream backs up, and it usually comes back to a
                // stream its member's death ended, resuming far behind (tests/watch.rs covers a
                // stream that falls behind the hub's buffer while its member lives).
                tokio::time::sleep(SLOW_READER_STALL).await;
            }
            if spec.leave_every.is_some_and(|n| responses % n == 0) {
                break false;
            }
        };
        if finished {
            let start = start.expect("known once opened");
            return Record { spec, start, items };
        }
        member = (member + 1 + rng.below(endpoints.len() - 1)) % endpoints.len();
    }
}

/// An acknowledged write: its revision and the changes it made (key, Some(value) or None).
#[derive(Debug)]
struct Acked {
    rev: i64,
    changes: BTreeSet<(String, Option<String>)>,
}

/// Sends one random write to some member; None if it failed (its outcome is then unknown).
async fn write_once(client: &mut Client, rng: &mut Rng, writer: usize, seq: u64) -> Option<Acked> {
    let value = format!("w{writer}-{seq}");
    let request = async {
        match rng.below(11) {
            0..=4 => {
                let k = key(rng.below(KEYS));
                let resp = client.put(k.as_str(), value.as_str(), None).await.ok()?;
                Some(Acked { rev: resp.header()?.revision(), changes: [(k, Some(value))].into() })
            }
            5 | 6 => {
                let k = key(rng.below(KEYS));
                let resp = client.delete(k.as_str(), Some(DeleteOptions::new().with_prev_key())).await.ok()?;
                let changes = resp.prev_kvs().iter().map(|kv| (kv.key_str().unwrap().to_string(), None)).collect();
                Some(Acked { rev: resp.header()?.revision(), changes })
            }
            7 => {
                let from = rng.below(KEYS - 3);
                let to = from + 1 + rng.below(3);
                let options = DeleteOptions::new().with_range(key(to)).with_prev_key();
                let resp = client.delete(key(from), Some(options)).await.ok()?;
                let changes = resp.prev_kvs().iter().map(|kv| (kv.key_str().unwrap().to_string(), None)).collect();
                Some(Acked { rev: resp.header()?.revision(), changes })
            }
            9 => {
                // A key on a short lease: revoked at once, or left to expire (the leader's
                // expiry then deletes it, perhaps across a failover).
                let lease = client.lease_grant(1 + rng.below(3) as i64, None).await.ok()?.id();
                let k = key(rng.below(KEYS));
                let options = PutOptions::new().with_lease(lease);
                let resp = client.put(k.as_str(), value.as_str(), Some(options)).await.ok()?;
                if rng.below(2) == 0 {
                    client.lease_revoke(lease).await.ok()?;
                }
                Some(Acked { rev: resp.header()?.revision(), changes: [(k, Some(value))].into() })
            }
            _ => {
                // Two or three puts and a delete of distinct keys, in one revision.
                let mut keys: Vec<usize> = (0..KEYS).collect();
                for i in 0..4 {
                    keys.swap(i, i + rng.below(KEYS - i));
                }
                let puts = 2 + rng.below(2);
                let mut ops: Vec<TxnOp> =
                    keys[..puts].iter().map(|&k| TxnOp::put(key(k), value.as_str(), Some(PutOptions::new()))).collect();
                ops.push(TxnOp::delete(key(keys[puts]), Some(DeleteOptions::new().with_prev_key())));
                let resp = client.txn(Txn::new().and_then(ops)).await.ok()?;
                let mut changes: BTreeSet<_> = keys[..puts].iter().map(|&k| (key(k), Some(value.clone()))).collect();
                for op in resp.op_responses() {
                    if let TxnOpResponse::Delete(deleted) = op {
                        changes.extend(deleted.prev_kvs().iter().map(|kv| (kv.key_str().unwrap().to_string(), None)));
                    }
                }
                Some(Acked { rev: resp.header()?.revision(), changes })
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, request).await.ok().flatten()
}

async fn run_writer(writer: usize, endpoints: Vec<String>, seed: u64, stop: Arc<AtomicBool>) -> Vec<Acked> {
    let mut rng = Rng::new(seed);
    let mut member = writer % endpoints.len();
    let mut acked = Vec::new();
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let Ok(Ok(mut client)) =
            tokio::time::timeout(REQUEST_TIMEOUT, Client::connect([&endpoints[member]], None)).await
        else {
            member = (member + 1) % endpoints.len();
            tokio::time::sleep(WRITER_PACING).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            seq += 1;
            match write_once(&mut client, &mut rng, writer, seq).await {
                // A write that changed nothing (a delete of a missing key) has no revision of its own.
                Some(a) if a.changes.is_empty() => {}
                Some(a) => acked.push(a),
                None => {
                    member = (member + 1) % endpoints.len();
                    break;
                }
            }
        }
    }
    acked
}

/// The whole history of the keys, read back with a watch from revision 1 on one member.
async fn history(endpoint: &str) -> Vec<Vec<Ev>> {
    let spec = Spec {
        name: "history",
        member: 0,
        range: ("g/".into(), "g0".into()),
        start: 1,
        prev_kv: true,
        filter: None,
        progress_notify: false,
        progress_every: None,
        leave_every: None,
        slow: false,
    };
    let (mut stream, _) = open(endpoint, &spec, 1).await.expect("open the history watch");
    let mut revisions: Vec<Vec<Ev>> = Vec::new();
    loop {
        let resp = tokio::time::timeout(STALL, stream.message()).await.unwrap().unwrap().unwrap();
        for e in resp.events().iter().map(Ev::of) {
            match revisions.last_mut() {
                Some(last) if last[0].rev == e.rev => last.push(e),
                _ => revisions.push(vec![e]),
            }
        }
        if revisions.last().is_some_and(|r| r.iter().any(|e| e.value == FINAL)) {
            return revisions;
        }
    }
}

/// Checks the history itself: revisions increase, and each event follows from the key's
/// previous event (prev_kv, create revision, version).
fn check_history(history: &[Vec<Ev>]) {
    let mut state: BTreeMap<&str, &Ev> = BTreeMap::new();
    let mut last_rev = 0;
    for revision in history {
        let rev = revision[0].rev;
        assert!(rev > last_rev, "history revision {rev} after {last_rev}");
        last_rev = rev;
        let keys: BTreeSet<&str> = revision.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys.len(), revision.len(), "a key changed twice at revision {rev}");
        for e in revision {
            assert_eq!(e.rev, rev);
            let before = state.get(e.key.as_str()).copied();
            let expected_prev = before.map(|p| (p.value.clone(), p.rev, p.create, p.version));
            assert_eq!(e.prev, expected_prev, "prev_kv of {e:?}");
            if e.put {
                let (create, version) = before.map_or((rev, 1), |p| (p.create, p.version + 1));
                assert_eq!((e.create, e.version), (create, version), "create revision and version of {e:?}");
                state.insert(&e.key, e);
            } else {
                assert!(before.is_some(), "delete of a missing key: {e:?}");
                state.remove(e.key.as_str());
            }
        }
    }
}

/// Checks one watcher's record against the history.
fn check_record(record: &Record, history: &[Vec<Ev>]) {
    let spec = &record.spec;
    let name = spec.name;
    let expected: Vec<Ev> = history
        .iter()
        .flatten()
        .filter(|e| e.rev >= record.start && spec.covers(e))
        .map(|e| Ev { prev: if spec.prev_kv { e.prev.clone() } else { None }, ..e.clone() })
        .collect();
    let mut got = Vec::new();
    let mut response_of_revision: BTreeMap<i64, usize> = BTreeMap::new();
    let mut last_progress = 0;
    for (i, item) in record.items.iter().enumerate() {
        match item {
            Item::Events(events) => {
                for e in events {
                    assert!(e.rev > last_progress, "{name}: event at {} after progress at {last_progress}", e.rev);
                    // Atomic: every event of a revision in one response.
                    let first = *response_of_revision.entry(e.rev).or_insert(i);
                    assert_eq!(first, i, "{name}: revision {} split over responses {first} and {i}", e.rev);
                }
                got.extend(events.iter().cloned());
            }
            Item::Progress(rev) => {
                let last_event = got.last().map_or(0, |e: &Ev| e.rev);
                assert!(*rev >= last_event, "{name}: progress at {rev} behind event at {last_event}");
                last_progress = last_progress.max(*rev);
            }
            Item::Resumed { from, .. } => {
                let last_event = got.last().map_or(record.start - 1, |e: &Ev| e.rev);
                assert_eq!(*from, last_event + 1, "{name}: resumed from {from} after {last_event}");
            }
        }
    }
    // Ordered, unique, reliable and with the right prev_kv and filters: exactly the history.
    if got != expected {
        let at = got.iter().zip(&expected).position(|(g, e)| g != e).unwrap_or(got.len().min(expected.len()));
        panic!(
            "{name} differs from the history at event {at} (got {} events, expected {}):\n  got:      {:?}\n  expected: {:?}",
            got.len(),
            expected.len(),
            &got[at.saturating_sub(2)..(at + 3).min(got.len())],
            &expected[at.saturating_sub(2)..(at + 3).min(expected.len())],
        );
    }
}

fn specs() -> Vec<Spec> {
    let all = || ("g/".to_string(), "g0".to_string());
    let base = Spec {
        name: "",
        member: 0,
        range: all(),
        start: 0,
        prev_kv: true,
        filter: None,
        progress_notify: false,
        progress_every: None,
        leave_every: None,
        slow: false,
    };
    vec![
        Spec { name: "all-from-now@0", ..base.clone() },
        Spec { name: "all-from-1@1", member: 1, start: 1, ..base.clone() },
        Spec {
            name: "one-key-leaving@2",
            member: 2,
            range: (key(1), format!("{}\0", key(1))),
            leave_every: Some(15),
            ..base.clone()
        },
        Spec {
            name: "range-noput-progress@0",
            range: (key(2), key(6)),
            prev_kv: false,
            filter: Some(WatchFilterType::NoPut),
            progress_every: Some(5),
            ..base.clone()
        },
        Spec { name: "all-slow@1", member: 1, slow: true, ..base.clone() },
        Spec {
            name: "all-nodelete-notify-leaving@2",
            member: 2,
            filter: Some(WatchFilterType::NoDelete),
            progress_notify: true,
            progress_every: Some(7),
            leave_every: Some(40),
            ..base
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_keep_their_guarantees_while_members_are_killed() {
    let seed = std::env::var("WATCH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("watch guarantees: seed {seed} (rerun with WATCH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let mut flags = TEST_TIMINGS.to_vec();
    // Frequent snapshots, so a restarted member may catch up from one under its watchers.
    flags.extend(["--snapshot-count", "200", "--experimental-watch-progress-notify-interval", "300ms"]);
    let mut cluster = Cluster::start(3, &flags).await;
    let endpoints = cluster.endpoints();

    let last_write = Arc::new(AtomicI64::new(0));
    let watchers: Vec<_> = specs()
        .into_iter()
        .map(|spec| tokio::spawn(run_watcher(spec, endpoints.clone(), rng.next(), last_write.clone())))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> =
        (0..3).map(|w| tokio::spawn(run_writer(w, endpoints.clone(), rng.next(), stop.clone()))).collect();

    // The fault schedule: kill -9 the leader or a follower, restart it, repeat. The sleeps pace
    // the schedule; nothing waits on them for a result.
    let traffic_end = Instant::now() + TRAFFIC;
    let mut faults = Vec::new();
    while Instant::now() < traffic_end {
        tokio::time::sleep(Duration::from_millis(1000 + rng.below(1500) as u64)).await;
        let leader = cluster.leader().await;
        let victim = if faults.len() % 2 == 0 { leader } else { (leader + 1 + rng.below(2)) % 3 };
        faults.push(format!("{}{}", cluster.members[victim].name, if victim == leader { "(leader)" } else { "" }));
        cluster.kill(victim);
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1000) as u64)).await;
        cluster.restart(victim).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }

    // The last write: once a watch has everything up to it, it stops.
    let mut client = cluster.client(cluster.leader().await).await;
    let last = Txn::new().and_then((0..KEYS).map(|k| TxnOp::put(key(k), FINAL, None)).collect::<Vec<_>>());
    let final_rev = client.txn(last).await.unwrap().header().unwrap().revision();
    last_write.store(final_rev, Ordering::SeqCst);

    let mut records = Vec::new();
    for watcher in watchers {
        records.push(tokio::time::timeout(STALL, watcher).await.expect("a watcher never saw the last write").unwrap());
    }
    let histories = [history(&endpoints[0]).await, history(&endpoints[1]).await, history(&endpoints[2]).await];
    let history = &histories[0];
    let tail = &history[history.len().saturating_sub(3)..];
    assert_eq!(history.last().unwrap()[0].rev, final_rev, "the last write is the newest in the history: {tail:?}");
    assert!(histories.iter().all(|h| h == history), "members disagree about the history");
    check_history(history);

    let by_revision: BTreeMap<i64, &Vec<Ev>> = history.iter().map(|r| (r[0].rev, r)).collect();
    for a in &acked {
        let events = by_revision.get(&a.rev).unwrap_or_else(|| panic!("acknowledged write missing: {a:?}"));
        let changes: BTreeSet<_> =
            events.iter().map(|e| (e.key.clone(), if e.put { Some(e.value.clone()) } else { None })).collect();
        assert_eq!(changes, a.changes, "revision {} is not the acknowledged write", a.rev);
    }
    for record in &records {
        check_record(record, history);
    }

    let resumed: Vec<String> = records
        .iter()
        .map(|r| {
            let n = |f: fn(&Item) -> bool| r.items.iter().filter(|i| f(i)).count();
            let events: usize = r.items.iter().map(|i| if let Item::Events(e) = i { e.len() } else { 0 }).sum();
            format!(
                "{}: {events} events, {} resumes, {} progress",
                r.spec.name,
                n(|i| matches!(i, Item::Resumed { .. })),
                n(|i| matches!(i, Item::Progress(_)))
            )
        })
        .collect();
    eprintln!(
        "watch guarantees: seed {seed}, {} revisions, {} acknowledged writes, faults {faults:?}\n  {}",
        history.len(),
        acked.len(),
        resumed.join("\n  ")
    );
    assert!(faults.len() >= 3, "too few faults: {faults:?}");
    assert!(records.iter().any(|r| r.items.iter().any(|i| matches!(i, Item::Resumed { .. }))));
}
