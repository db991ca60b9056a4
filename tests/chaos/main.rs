//! Jepsen-style runs: concurrent clients do gets, puts, deletes, compare-and-sets and multi-key
//! txns on a few keys of a 3- or 5-member cluster while a nemesis kills (kill -9) and restarts
//! followers, the leader or a minority, pauses members (SIGSTOP) for longer than an election
//! timeout, cuts the network between a minority (or the leader alone) and the rest
//! ([`network`]), and replaces followers; in some runs a majority dies halfway and the most
//! advanced survivor is reset ([`disaster`]). Every operation is recorded with its invocation
//! and completion time and what it was told; at the end the cluster heals, every member must
//! hold the same data (HashKV at the same revision), a lease kept alive must never have expired,
//! the history must be linearizable (across a reset: keep every write the survivor held), and
//! every watcher (one starting on each member, moving on when its stream breaks) must have
//! received exactly the history ([`checker`]).
//!
//! `PHOENIX_CHAOS_SEED` replays a run's schedule (the seed is printed at the start);
//! `PHOENIX_CHAOS_SECONDS` sets how long the faults go on (default 15 s, 45 s in a release
//! build). A failing run writes the operations, the history and every member's log to a
//! directory it names.

#[path = "../support/mod.rs"]
mod support;

mod checker;
mod checker_tests;
mod disaster;
mod history;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use history::{Call, Event, Op, Outcome, Seen, Watched};
use support::network::Network;
use support::{poll_until, Cluster, Rng, READY_TIMEOUT, TEST_TIMINGS};

/// The keys every client works on: few, so operations on one key overlap often.
const KEYS: usize = 4;
const CLIENTS: usize = 6;
/// A request without an answer by then is recorded as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Pacing after a failed connection attempt or an unanswered request, not synchronisation.
const RECONNECT_PACING: Duration = Duration::from_millis(50);
/// How long one Status call may take while looking for the leader (a paused member never answers).
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// A fault lasts this long at least, plus up to as long again: a pause outlasts the election
/// timeout (1 s in TEST_TIMINGS), so the others elect a new leader meanwhile.
const FAULT_MIN: Duration = Duration::from_millis(1500);
/// A watch stream silent this long is left for another member (it may be cut off or paused);
/// the watcher resumes after the last revision it received.
const WATCH_SILENCE: Duration = Duration::from_secs(2);
/// After healing, the cluster runs without faults this long before the next one.
const QUIET: Duration = Duration::from_millis(500);

fn seed() -> u64 {
    std::env::var("PHOENIX_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
    })
}

fn fault_time() -> Duration {
    let default = if cfg!(debug_assertions) { 15 } else { 45 };
    let seconds = std::env::var("PHOENIX_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    Duration::from_secs(seconds)
}

fn key(i: usize) -> String {
    format!("c/{i}")
}

/// Microseconds since the run started: the clock every operation is timed with.
fn since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

async fn execute(client: &mut Client, call: &Call) -> Result<Outcome, etcd_client::Error> {
    let revision = |header: Option<&etcd_client::ResponseHeader>| header.map_or(0, |h| h.revision());
    let seen = |kvs: &[etcd_client::KeyValue]| {
        kvs.first()
            .map(|kv| Seen { value: kv.value_str().unwrap_or_default().to_string(), mod_revision: kv.mod_revision() })
    };
    Ok(match call {
        Call::Get { key } => {
            let got = client.get(key.as_str(), None).await?;
            Outcome::Got { revision: revision(got.header()), kv: seen(got.kvs()) }
        }
        Call::Put { key, value } => {
            let put = client.put(key.as_str(), value.as_str(), None).await?;
            Outcome::Put { revision: revision(put.header()) }
        }
        Call::Delete { key } => {
            let deleted = client.delete(key.as_str(), None).await?;
            Outcome::Deleted { revision: revision(deleted.header()), deleted: deleted.deleted() }
        }
        Call::MultiPut { puts } => {
            let txn = Txn::new()
                .and_then(puts.iter().map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None)).collect::<Vec<_>>());
            let done = client.txn(txn).await?;
            Outcome::Put { revision: revision(done.header()) }
        }
        Call::Cas { key, expect, value } => {
            let txn = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, *expect)])
                .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let done = client.txn(txn).await?;
            let kv = done.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(got) => Some(seen(got.kvs())),
                _ => None,
            });
            Outcome::Cas { revision: revision(done.header()), succeeded: done.succeeded(), kv: kv.flatten() }
        }
    })
}

/// A random call on key `k`; compare-and-sets expect the mod revision this client last saw of
/// it (or a stale one, so that some fail).
fn next_call(rng: &mut Rng, client: usize, seq: u64, k: usize, last_seen: &[i64; KEYS]) -> Call {
    let (key, value) = (key(k), format!("v{client}-{seq}"));
    match rng.below(10) {
        0..=3 => Call::Get { key },
        4 | 5 => Call::Put { key, value },
        6 => Call::Delete { key },
        7 | 8 => {
            let expect = if rng.below(4) == 0 { last_seen[k].saturating_sub(1) } else { last_seen[k] };
            Call::Cas { key, expect, value }
        }
        _ => {
            // This key and one or two others, in one txn.
            let mut keys = vec![k];
            for _ in 0..1 + rng.below(2) {
                let other = rng.below(KEYS);
                if !keys.contains(&other) {
                    keys.push(other);
                }
            }
            let puts = keys.into_iter().map(|k| (self::key(k), format!("{value}/{k}"))).collect();
            Call::MultiPut { puts }
        }
    }
}

async fn run_client(id: usize, endpoints: Vec<String>, seed: u64, start: Instant, stop: Arc<AtomicBool>) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut member = id % endpoints.len();
    let mut last_seen = [0i64; KEYS];
    let (mut ops, mut seq, mut client) = (Vec::new(), 0, None);
    while !stop.load(Ordering::SeqCst) {
        let Some(connected) = client.as_mut() else {
            match tokio::time::timeout(OP_TIMEOUT, Client::connect([&endpoints[member]], None)).await {
                Ok(Ok(connected)) => client = Some(connected),
                _ => {
                    member = (member + 1) % endpoints.len();
                    tokio::time::sleep(RECONNECT_PACING).await;
                }
            }
            continue;
        };
        seq += 1;
        let k = rng.below(KEYS);
        let call = next_call(&mut rng, id, seq, k, &last_seen);
        let invoked = since(start);
        let outcome = match tokio::time::timeout(OP_TIMEOUT, execute(connected, &call)).await {
            Ok(Ok(outcome)) => outcome,
            _ => Outcome::Unknown,
        };
        let completed = (outcome != Outcome::Unknown).then(|| since(start));
        match &outcome {
            Outcome::Got { kv, .. } | Outcome::Cas { kv, succeeded: false, .. } => {
                last_seen[k] = kv.as_ref().map_or(0, |seen| seen.mod_revision)
            }
            Outcome::Put { revision } | Outcome::Cas { revision, succeeded: true, .. } => last_seen[k] = *revision,
            Outcome::Deleted { .. } | Outcome::Unknown => {}
        }
        let unanswered = outcome == Outcome::Unknown;
        ops.push(Op { client: id, call, invoked, completed, outcome });
        if unanswered {
            // Try another member (this one may be down or cut off), without spinning while the
            // cluster elects a leader.
            client = None;
            member = (member + 1) % endpoints.len();
            tokio::time::sleep(RECONNECT_PACING).await;
        }
    }
    ops
}

fn as_watched(event: &etcd_client::Event) -> Option<Watched> {
    let kv = event.kv()?;
    let value = (event.event_type() == EventType::Put).then(|| kv.value_str().unwrap_or_default().to_string());
    let key = kv.key_str().unwrap_or_default().to_string();
    let prev = event.prev_kv().map(|prev| prev.value_str().unwrap_or_default().to_string());
    Some(Watched { event: Event { revision: kv.mod_revision(), key, value }, prev })
}

/// Watches every key from revision 1 with prev_kv, moving to another member whenever its stream
/// breaks or stays silent and resuming after the last revision it received, until it has every
/// change up to the revision `until` names (set once the clients have stopped).
async fn run_watcher(first: usize, endpoints: Vec<String>, until: tokio::sync::watch::Receiver<i64>) -> Vec<Watched> {
    let (mut seen, mut member): (Vec<Watched>, usize) = (Vec::new(), first);
    let reached = |seen: &[Watched]| {
        let target = *until.borrow();
        target > 0 && seen.last().map_or(0, |w| w.event.revision) >= target
    };
    while !reached(&seen) {
        let from = seen.last().map_or(0, |w| w.event.revision) + 1;
        let opened = async {
            let mut client = Client::connect([&endpoints[member]], None).await.ok()?;
            let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(from);
            client.watch("c/", Some(options)).await.ok()
        };
        if let Ok(Some(mut stream)) = tokio::time::timeout(OP_TIMEOUT, opened).await {
            while let Ok(Ok(Some(response))) = tokio::time::timeout(WATCH_SILENCE, stream.message()).await {
                seen.extend(response.events().iter().filter_map(as_watched));
                if response.canceled() || reached(&seen) {
                    break;
                }
            }
        } else {
            tokio::time::sleep(RECONNECT_PACING).await;
        }
        member = (member + 1) % endpoints.len();
    }
    seen
}

/// A lease that is kept alive must not expire: the keeper's lease TTL, and how often it renews.
const LEASE_TTL: Duration = Duration::from_secs(10);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);

/// One lease kept alive at a time, its key read after every renewal: a key missing (or a renewal
/// told the lease is gone) before the TTL since the last renewal that was answered has run out
/// means a lease expired while kept alive. (A renewal is counted from when it was sent, which
/// is no later than when the leader restarted the countdown.) Returns how many renewals were
/// answered, and the broken promises.
async fn run_lease_keeper(endpoints: Vec<String>, started: Instant, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let (mut renewals, mut broken) = (0, Vec::new());
    let mut member = 0;
    // The lease, its key, and until when it must live (microseconds since the start).
    let mut kept: Option<(i64, String, u64)> = None;
    while !stop.load(Ordering::SeqCst) {
        let Ok(Ok(mut client)) = tokio::time::timeout(OP_TIMEOUT, Client::connect([&endpoints[member]], None)).await
        else {
            member = (member + 1) % endpoints.len();
            tokio::time::sleep(RECONNECT_PACING).await;
            continue;
        };
        while !stop.load(Ordering::SeqCst) {
            let sent = since(started);
            let answered = tokio::time::timeout(OP_TIMEOUT, keep_once(&mut client, &kept)).await;
            let Ok(Ok(answer)) = answered else { break };
            let done = since(started);
            let must_live = |kept: &Option<(i64, String, u64)>| kept.as_ref().map_or(0, |k| k.2);
            match answer {
                Kept::Granted(id, key) => kept = Some((id, key, sent + LEASE_TTL.as_micros() as u64)),
                Kept::Renewed => {
                    renewals += 1;
                    if let Some(k) = kept.as_mut() {
                        k.2 = k.2.max(sent + LEASE_TTL.as_micros() as u64);
                    }
                }
                Kept::Gone(what) => {
                    if done < must_live(&kept) {
                        broken.push(format!(
                            "{what} at {done} µs, though it was renewed to live until {} µs",
                            must_live(&kept)
                        ));
                    }
                    kept = None;
                }
            }
            tokio::time::sleep(KEEPALIVE_EVERY).await;
        }
        member = (member + 1) % endpoints.len();
    }
    (renewals, broken)
}

enum Kept {
    Granted(i64, String),
    Renewed,
    Gone(String),
}

/// Grants a lease with a key on it, or renews the kept one and reads its key back.
async fn keep_once(client: &mut Client, kept: &Option<(i64, String, u64)>) -> Result<Kept, etcd_client::Error> {
    let Some((id, key, _)) = kept else {
        let id = client.lease_grant(LEASE_TTL.as_secs() as i64, None).await?.id();
        let key = format!("l/{id:x}");
        client.put(key.as_str(), "kept", Some(etcd_client::PutOptions::new().with_lease(id))).await?;
        return Ok(Kept::Granted(id, key));
    };
    // Opening the keep-alive stream renews once; the client reports an answer with TTL 0 (the
    // lease is gone) as an error of its own.
    match client.lease_keep_alive(*id).await {
        Ok(_) => {}
        Err(etcd_client::Error::LeaseKeepAliveError(why)) if why == "lease not found" => {
            return Ok(Kept::Gone(format!("lease {id:x} was not found on renewal")));
        }
        Err(e) => return Err(e),
    }
    if client.get(key.as_str(), None).await?.kvs().is_empty() {
        return Ok(Kept::Gone(format!("key {key} of lease {id:x} was gone")));
    }
    Ok(Kept::Renewed)
}

/// The leader a majority of the members agree on, asking each with a short timeout (a paused
/// member never answers, and a cut-off leader may still think it leads).
async fn leader(cluster: &Cluster) -> Option<usize> {
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (i, member) in cluster.members.iter().enumerate().filter(|(_, m)| m.is_running()) {
        let status = async {
            let mut client = Client::connect([member.endpoint()], None).await.ok()?;
            client.status().await.ok()
        };
        let Ok(Some(status)) = tokio::time::timeout(STATUS_TIMEOUT, status).await else { continue };
        *votes.entry(status.leader()).or_default() += 1;
        if let Some(header) = status.header() {
            ids.insert(header.member_id(), i);
        }
    }
    let majority = cluster.members.len() / 2 + 1;
    let (leader, _) = votes.into_iter().find(|(leader, count)| *leader != 0 && *count >= majority)?;
    ids.get(&leader).copied()
}

fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// The faults of one round: which members are killed, which paused, whether the network is cut.
struct Fault {
    killed: Vec<usize>,
    paused: Vec<u32>,
    partitioned: bool,
    what: String,
}

/// A random minority of `n` members (at least one).
fn minority(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let size = 1 + rng.below((n - 1) / 2);
    for i in 0..size {
        all.swap(i, i + rng.below(n - i));
    }
    all.truncate(size);
    all
}

/// The kinds of fault the nemesis picks from.
#[derive(Clone, Copy, Debug)]
enum Nemesis {
    KillFollower,
    KillLeader,
    KillMinority,
    Pause,
    CutMinority,
    CutLeader,
    CutFollower,
    /// Remove a follower, clean its data dir and have it join again as a new member.
    ReplaceFollower,
}

const EVERY_FAULT: &[Nemesis] = &[
    Nemesis::KillFollower,
    Nemesis::KillLeader,
    Nemesis::KillMinority,
    Nemesis::Pause,
    Nemesis::CutMinority,
    Nemesis::CutLeader,
    Nemesis::CutFollower,
    Nemesis::ReplaceFollower,
];

async fn inject(cluster: &mut Cluster, network: &Network, rng: &mut Rng, kinds: &[Nemesis]) -> Fault {
    let n = cluster.members.len();
    let leader = leader(cluster).await;
    let others: Vec<usize> = (0..n).filter(|&i| Some(i) != leader).collect();
    let follower = others[rng.below(others.len())];
    let leader = leader.unwrap_or(follower);
    let kind = kinds[rng.below(kinds.len())];
    let mut fault = Fault { killed: Vec::new(), paused: Vec::new(), partitioned: false, what: String::new() };
    match kind {
        Nemesis::KillFollower => fault.killed = vec![follower],
        Nemesis::KillLeader => fault.killed = vec![leader],
        Nemesis::KillMinority => fault.killed = minority(rng, n),
        Nemesis::Pause => {
            let i = if rng.below(2) == 0 { leader } else { follower };
            if let Some(pid) = cluster.members[i].pid() {
                signal(pid, "-STOP");
                fault.paused.push(pid);
            }
        }
        Nemesis::CutMinority | Nemesis::CutLeader | Nemesis::CutFollower => {
            let side = match kind {
                Nemesis::CutLeader => vec![leader],
                Nemesis::CutFollower => vec![follower],
                _ => minority(rng, n),
            };
            network.partition(&side);
            fault.partitioned = true;
            fault.what = format!("{kind:?}: {side:?} cut off from the others");
        }
        Nemesis::ReplaceFollower => {
            disaster::replace(cluster, follower).await;
            fault.what = format!("{kind:?}: {follower} removed, cleaned, and joined again as a new member");
        }
    }
    for &i in &fault.killed {
        cluster.kill(i);
    }
    if fault.what.is_empty() {
        fault.what = format!("{kind:?}: killed {:?}, paused pids {:?}", fault.killed, fault.paused);
    }
    fault
}

fn heal(cluster: &mut Cluster, network: &Network, fault: &Fault) {
    for &pid in &fault.paused {
        signal(pid, "-CONT");
    }
    for &i in &fault.killed {
        cluster.members[i].spawn_again();
    }
    if fault.partitioned {
        network.heal();
    }
}

/// Injects faults until `deadline`, healing each before the next (none, if `kinds` is empty);
/// returns what it did.
async fn nemesis(
    cluster: &mut Cluster,
    network: &Network,
    rng: &mut Rng,
    kinds: &[Nemesis],
    (started, deadline): (Instant, Instant),
) -> Vec<String> {
    let mut done = Vec::new();
    if kinds.is_empty() {
        tokio::time::sleep_until(deadline.into()).await;
    }
    while Instant::now() < deadline {
        let fault = inject(cluster, network, rng, kinds).await;
        done.push(format!("at {:.1} s: {}", since(started) as f64 / 1e6, fault.what));
        tokio::time::sleep(FAULT_MIN + FAULT_MIN.mul_f64(rng.below(100) as f64 / 100.0)).await;
        heal(cluster, network, &fault);
        poll_until(READY_TIMEOUT, "a leader after healing", || leader(cluster)).await;
        tokio::time::sleep(QUIET).await;
    }
    done
}

/// Every change of the keys, read back with a watch from revision 1 up to `revision`.
async fn history(client: &mut Client, revision: i64) -> Vec<Event> {
    let options = WatchOptions::new().with_prefix().with_start_revision(1);
    let mut stream = client.watch("c/", Some(options)).await.expect("open the history watch");
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &Event| e.revision < revision) {
        let response = tokio::time::timeout(READY_TIMEOUT, stream.message()).await;
        let response = response.expect("the history in time").expect("the history watch").expect("an open watch");
        events.extend(response.events().iter().filter_map(|e| {
            let kv = e.kv()?;
            let value = (e.event_type() == EventType::Put).then(|| kv.value_str().unwrap_or_default().to_string());
            Some(Event { revision: kv.mod_revision(), key: kv.key_str().unwrap_or_default().to_string(), value })
        }));
        if revision <= 1 {
            break;
        }
    }
    events
}

/// Waits until every member has applied `revision` and returns their HashKV at it.
async fn hashes_at(cluster: &Cluster, revision: i64) -> Vec<u32> {
    let mut hashes = Vec::new();
    for member in &cluster.members {
        let hash = poll_until(READY_TIMEOUT, &format!("{} to apply revision {revision}", member.name), || async {
            let mut client = Client::connect([member.endpoint()], None).await.ok()?;
            let local = client.get("c/", Some(GetOptions::new().with_serializable())).await.ok()?;
            if local.header()?.revision() < revision {
                return None;
            }
            Some(client.hash_kv(revision).await.ok()?.hash())
        })
        .await;
        hashes.push(hash);
    }
    hashes
}

/// Where a failing run leaves what it recorded.
fn keep_evidence(cluster: &Cluster, name: &str, ops: &[Op], events: &[Event], faults: &[String], why: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("create the evidence dir");
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write evidence");
    write("explanation.txt", why.to_string());
    write("operations.json", serde_json::to_string_pretty(ops).unwrap_or_default());
    write("history.json", serde_json::to_string_pretty(events).unwrap_or_default());
    write("faults.txt", faults.join("\n"));
    for member in &cluster.members {
        write(&format!("{}.log", member.name), member.log_text());
    }
    dir
}

/// What a run does to the cluster: faults of `kinds` for `time`; with `lose_majority`, halfway
/// through, a majority dies and the most advanced survivor is reset ([`disaster`]).
struct Schedule {
    kinds: &'static [Nemesis],
    time: Duration,
    lose_majority: bool,
}

/// One run: `members` members started with `env`, the faults of `schedule`, then the checks.
/// Returns a summary, or why it failed and where the evidence is.
///
/// Watchers do not run across a reset: one that resumes after a revision the survivor never
/// reached would skip the new history's revisions up to it. `--bump-revision` and
/// `--mark-compacted` exist for that, and tests/recovery.rs tests them.
async fn run(members: usize, env: &[(&str, &str)], schedule: Schedule) -> Result<String, String> {
    let seed = seed();
    eprintln!("chaos with {members} members {env:?}: PHOENIX_CHAOS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let (mut cluster, network) = Cluster::start_behind_proxies(members, TEST_TIMINGS, env).await;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (endpoints, stop) = (cluster.endpoints(), stop.clone());
            tokio::spawn(run_client(id, endpoints, rng.next(), started, stop))
        })
        .collect();
    let keeper = tokio::spawn(run_lease_keeper(cluster.endpoints(), started, stop.clone()));
    let (until, watching) = tokio::sync::watch::channel(0);
    let watchers: Vec<_> = (0..members)
        .filter(|_| !schedule.lose_majority)
        .map(|first| tokio::spawn(run_watcher(first, cluster.endpoints(), watching.clone())))
        .collect();
    let (kinds, time) = (schedule.kinds, schedule.time);
    let mut faults;
    let reset = if schedule.lose_majority {
        faults = nemesis(&mut cluster, &network, &mut rng, kinds, (started, started + time / 2)).await;
        let reset = disaster::lose_majority_and_reset(&mut cluster, &mut rng, started).await;
        faults.push(format!("at {:.1} s: {}", since(started) as f64 / 1e6, reset.what));
        faults.extend(nemesis(&mut cluster, &network, &mut rng, kinds, (started, Instant::now() + time / 2)).await);
        Some(reset)
    } else {
        faults = nemesis(&mut cluster, &network, &mut rng, kinds, (started, started + time)).await;
        None
    };
    stop.store(true, Ordering::SeqCst);
    let (renewals, broken_leases) = keeper.await.expect("the lease keeper");
    let mut ops = Vec::new();
    for client in clients {
        ops.extend(client.await.expect("a client task"));
    }
    for i in 0..members {
        cluster.wait_ready(i).await;
    }
    // The history must reach past every revision any client was told of (a member's own idea of
    // the current revision may lag, when reads are broken on purpose).
    let mut client = cluster.client(0).await;
    let current = client.get("c/", None).await.expect("read after healing").header().map_or(0, |h| h.revision());
    let revision = ops.iter().filter_map(|op| op.outcome.revision()).fold(current, i64::max);
    let events = history(&mut client, revision).await;
    until.send_replace(revision);
    let mut watched = Vec::new();
    for watcher in watchers {
        let received = tokio::time::timeout(READY_TIMEOUT, watcher).await;
        watched.push(received.expect("a watcher to reach the last revision").expect("a watcher task"));
    }
    let hashes = hashes_at(&cluster, revision).await;
    let answered = ops.iter().filter(|op| op.completed.is_some()).count();
    let watches_right =
        watched.iter().enumerate().try_for_each(|(i, seen)| checker::check_watch(&format!("w{i}"), seen, &events));
    let linearizable = match &reset {
        Some(reset) => checker::check_across_reset(&ops, &events, reset),
        None => checker::check(&ops, &events).map(|summary| (summary, 0)),
    };
    let verdict = match linearizable.and_then(|summary| watches_right.map(|()| summary)) {
        Err(violation) => Err(violation.to_string()),
        Ok(_) if hashes.iter().any(|h| *h != hashes[0]) => {
            Err(format!("members differ at revision {revision}: HashKV {hashes:?}"))
        }
        Ok(_) if !broken_leases.is_empty() => Err(format!("a lease expired while kept alive: {broken_leases:?}")),
        Ok(_) if renewals == 0 => Err("no lease renewal was answered: the lease check checked nothing".to_string()),
        Ok(_) if answered < 100 => {
            Err(format!("only {answered} operations were answered: the cluster made no progress"))
        }
        Ok(summary) => Ok(summary),
    };
    match verdict {
        Ok((summary, excused)) => {
            eprintln!("faults of the run with {members} members:\n  {}", faults.join("\n  "));
            let (total, faults) = (ops.len(), faults.len());
            let excused = if reset.is_some() { format!(", {excused} excused by the reset") } else { String::new() };
            Ok(format!(
                "{total} operations ({answered} answered), {summary:?}{excused}, {renewals} lease renewals, {faults} faults"
            ))
        }
        Err(why) => {
            let name = format!("chaos-{members}m-{seed}");
            let dir = keep_evidence(&cluster, &name, &ops, &events, &faults, &why);
            Err(format!("{members} members, PHOENIX_CHAOS_SEED={seed}: {why}\nevidence in {}", dir.display()))
        }
    }
}

async fn must_pass(members: usize, lose_majority: bool) {
    let schedule = Schedule { kinds: EVERY_FAULT, time: fault_time(), lose_majority };
    match run(members, &[], schedule).await {
        Ok(summary) => eprintln!("chaos with {members} members passed: {summary}"),
        Err(why) => panic!("chaos failed: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_stay_linearizable_under_kills_and_pauses() {
    must_pass(3, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_stay_linearizable_under_kills_and_pauses() {
    must_pass(5, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_that_lose_two_keep_every_write_the_reset_survivor_held() {
    must_pass(3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_that_lose_three_keep_every_write_the_reset_survivor_held() {
    must_pass(5, true).await;
}

/// A run on members broken on purpose (`fault`, one of src/faults.rs) must fail, for a reason
/// that contains one of `because`.
async fn must_catch(fault: &str, schedule: Schedule, because: &[&str]) {
    match run(3, &[("PHOENIX_TEST_FAULTS", fault)], schedule).await {
        Ok(summary) => panic!("the checker missed {fault}: {summary}"),
        Err(why) => {
            assert!(because.iter().any(|reason| why.contains(reason)), "{why}");
            eprintln!("caught, as it must be: {why}");
        }
    }
}

/// The checker proves its worth on members that serve linearizable reads from local state
/// without a read index: a short run that cuts followers off, so that one serves old data while
/// the others write, must catch a stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_without_a_read_index_are_caught() {
    let schedule = Schedule { kinds: &[Nemesis::CutFollower], time: Duration::from_secs(8), lose_majority: false };
    must_catch("stale-reads", schedule, &["real time", "but the key then held"]).await;
}

/// The lease check proves its worth on members that answer keep-alives without renewing the
/// lease: the kept lease expires one TTL after it was granted, and a run longer than that must
/// catch it. The run has no faults: a new leader restarts every lease's countdown, which would
/// hide the fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_that_renew_nothing_are_caught() {
    let schedule = Schedule { kinds: &[], time: 2 * LEASE_TTL, lose_majority: false };
    must_catch("lost-renewals", schedule, &["a lease expired while kept alive"]).await;
}
