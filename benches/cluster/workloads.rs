//! The workloads, shaped like etcd's benchmark tool: 8-byte keys from a 100,000-key space,
//! 256-byte values, closed loops of clients sharing a few connections. Each returns what it
//! did: operations, how long they took, each one's latency, and how many failed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, Txn, TxnOp};

use super::support::{poll_until, Cluster, READY_TIMEOUT};

/// The size of the key space, and of a value.
pub const KEY_SPACE: u64 = 100_000;
const VALUE_BYTES: usize = 256;

#[derive(Default)]
pub struct Sample {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Sample {
    /// Two runs of the same workload as one.
    pub fn merge(&mut self, other: Sample) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
}

/// The `n`th key of a run: 8 bytes; the first `KEY_SPACE` are all different, in a scattered
/// order (7919 is prime to the space's size, so multiplying by it permutes the space).
pub fn key(n: u64) -> String {
    format!("{:08}", (n % KEY_SPACE) * 7919 % KEY_SPACE)
}

pub fn value() -> String {
    "v".repeat(VALUE_BYTES)
}

/// `connections` clients spread over the members' endpoints.
pub async fn connect(cluster: &Cluster, connections: usize) -> Vec<Client> {
    let endpoints = cluster.endpoints();
    let mut clients = Vec::new();
    for i in 0..connections {
        let endpoint = &endpoints[i % endpoints.len()];
        clients.push(Client::connect([endpoint], None).await.expect("connect a benchmark client"));
    }
    clients
}

/// `tasks` closed loops over `clients` doing `op(client, n)` until `total` are done.
pub async fn closed_loop<F, Fut>(clients: &[Client], tasks: usize, total: u64, op: F) -> Sample
where
    F: Fn(Client, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), etcd_client::Error>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut running = Vec::new();
    for t in 0..tasks {
        let (client, next, op) = (clients[t % clients.len()].clone(), next.clone(), op.clone());
        running.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return sample;
                }
                let sent = Instant::now();
                match op(client.clone(), n).await {
                    Ok(()) => {
                        sample.ops += 1;
                        sample.latencies.push(sent.elapsed());
                    }
                    Err(_) => sample.errors += 1,
                }
            }
        }));
    }
    let mut sample = Sample::default();
    for task in running {
        sample.merge(task.await.expect("a benchmark task"));
    }
    sample.elapsed = started.elapsed();
    sample
}

pub async fn put(clients: &[Client], tasks: usize, total: u64) -> Sample {
    let value = Arc::new(value());
    closed_loop(clients, tasks, total, move |mut client, n| {
        let value = value.clone();
        async move { client.put(key(n), value.as_str(), None).await.map(drop) }
    })
    .await
}

/// A txn holding one put, as etcd's `txn-put`.
pub async fn txn_put(clients: &[Client], tasks: usize, total: u64) -> Sample {
    let value = Arc::new(value());
    closed_loop(clients, tasks, total, move |mut client, n| {
        let value = value.clone();
        async move { client.txn(Txn::new().and_then([TxnOp::put(key(n), value.as_str(), None)])).await.map(drop) }
    })
    .await
}

/// How many keys the gets read: the first of the space, written before they run.
pub const KEYS_READ: u64 = 1_000;

/// Gets of keys that exist.
pub async fn get(clients: &[Client], tasks: usize, total: u64, serializable: bool) -> Sample {
    closed_loop(clients, tasks, total, move |mut client, n| async move {
        let options = serializable.then(|| GetOptions::new().with_serializable());
        client.get(key(n % KEYS_READ), options).await.map(drop)
    })
    .await
}

/// The keys the ranges read: written before they run, under a prefix of their own so that
/// every range finds the same number of keys whichever workloads ran before.
pub const RANGE_KEYS: u64 = 10_000;
/// How many keys one range returns.
const RANGE_WIDTH: u64 = 1_000;

fn range_key(i: u64) -> String {
    format!("range/{i:08}")
}

/// Writes the keys [`range`] reads.
pub async fn fill_range_keys(clients: &[Client]) {
    let value = Arc::new(value());
    let sample = closed_loop(clients, 100, RANGE_KEYS, move |mut client, n| {
        let value = value.clone();
        async move { client.put(range_key(n), value.as_str(), None).await.map(drop) }
    })
    .await;
    assert_eq!(sample.errors, 0, "writing the keys the ranges read");
}

/// Linearizable ranges of [`RANGE_WIDTH`] consecutive keys (256 KiB of values each), as a
/// Kubernetes list of a resource type reads; a range that returns another count is an error.
pub async fn range(clients: &[Client], tasks: usize, total: u64) -> Sample {
    closed_loop(clients, tasks, total, move |mut client, n| async move {
        let start = n * 7919 % (RANGE_KEYS - RANGE_WIDTH);
        let options = GetOptions::new().with_range(range_key(start + RANGE_WIDTH));
        let response = client.get(range_key(start), Some(options)).await?;
        match response.kvs().len() as u64 {
            RANGE_WIDTH => Ok(()),
            other => Err(etcd_client::Error::InvalidArgs(format!("a range returned {other} keys"))),
        }
    })
    .await
}

/// Lease keep-alives: each task keeps one lease, renewing it over one stream, as etcd's
/// `lease-keepalive`.
pub async fn lease_keepalive(clients: &[Client], tasks: usize, total: u64) -> Sample {
    // The leases and their streams first: grants are writes, not what is measured.
    let mut streams = Vec::new();
    for t in 0..tasks {
        let mut client = clients[t % clients.len()].clone();
        let id = client.lease_grant(600, None).await.expect("grant a lease").id();
        streams.push(client.lease_keep_alive(id).await.expect("open a keep-alive stream"));
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut running = Vec::new();
    for (mut keeper, mut answers) in streams {
        let next = next.clone();
        running.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let sent = Instant::now();
                let renewed = async {
                    keeper.keep_alive().await?;
                    answers.message().await
                };
                match renewed.await {
                    Ok(Some(_)) => {
                        sample.ops += 1;
                        sample.latencies.push(sent.elapsed());
                    }
                    _ => sample.errors += 1,
                }
            }
            sample
        }));
    }
    let mut sample = Sample::default();
    for task in running {
        sample.merge(task.await.expect("a keep-alive task"));
    }
    sample.elapsed = started.elapsed();
    sample
}

/// Watch latency, as etcd's `watch-latency`: `watchers` watches of one key over `streams`
/// streams (spread over the members); `puts` puts of the key at `rate` per second; each event's
/// latency runs from its put being sent to the watcher receiving it.
pub async fn watch_latency(clients: &[Client], watchers: usize, streams: usize, puts: u64, rate: u64) -> Sample {
    const KEY: &str = "watched";
    let sent: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..puts).map(|_| OnceLock::new()).collect());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut receivers = Vec::new();
    for s in 0..streams {
        let mut client = clients[s % clients.len()].clone();
        let per_stream = watchers / streams;
        let mut stream = client.watch(KEY, None).await.expect("open a watch stream");
        for _ in 1..per_stream {
            stream.watch(KEY, None).await.expect("add a watch");
        }
        let mut created = 0;
        while created < per_stream {
            let response = stream.message().await.expect("a watch answer").expect("an open stream");
            created += usize::from(response.created());
        }
        let (sent, latencies) = (sent.clone(), latencies.clone());
        receivers.push(tokio::spawn(async move {
            let mut received = 0;
            while received < per_stream as u64 * puts {
                let Ok(Ok(Some(response))) = tokio::time::timeout(READY_TIMEOUT, stream.message()).await else {
                    break;
                };
                let arrived = Instant::now();
                let mut latencies = latencies.lock().expect("latencies");
                for event in response.events() {
                    let put = event.kv().and_then(|kv| kv.value_str().ok()?.parse::<usize>().ok());
                    if let Some(put_sent) = put.and_then(|i| sent.get(i)?.get()) {
                        latencies.push(arrived - *put_sent);
                        received += 1;
                    }
                }
            }
        }));
    }
    let mut client = clients[0].clone();
    let started = Instant::now();
    let mut errors = 0;
    for i in 0..puts {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let _ = sent[i as usize].set(Instant::now());
        errors += u64::from(client.put(KEY, i.to_string(), None).await.is_err());
    }
    for receiver in receivers {
        receiver.await.expect("a watch receiver");
    }
    let latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
    Sample { ops: latencies.len() as u64, errors, elapsed: started.elapsed(), latencies }
}

/// A new member, started with `flags` as well, joins a cluster holding `keys` keys (written
/// before): the time from its start until it has applied the leader's revision.
pub async fn catch_up(cluster: &mut Cluster, clients: &[Client], keys: u64, flags: &[&str]) -> Sample {
    let mut client = clients[0].clone();
    let revision = client.get("x", None).await.expect("read the revision").header().map_or(0, |h| h.revision());
    let ports = super::support::free_ports(2);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    // etcd refuses a new member until every member has been connected a few seconds.
    poll_until(READY_TIMEOUT, "the member add to be accepted", || {
        let (mut client, peer_url) = (client.clone(), peer_url.clone());
        async move { client.member_add([peer_url.as_str()], None).await.ok() }
    })
    .await;
    let mut all: Vec<usize> = (0..cluster.members.len()).collect();
    let initial = format!("{},new={peer_url}", cluster.initial_cluster(&all));
    let mut flags = flags.to_vec();
    flags.extend(["--initial-cluster", &initial, "--initial-cluster-state", "existing"]);
    let started = Instant::now();
    let joined = cluster.spawn_member("new".to_string(), ports[0], ports[1], &flags);
    all.push(joined);
    let endpoint = cluster.members[joined].endpoint();
    poll_until(READY_TIMEOUT * 4, "the new member to catch up", || async {
        let mut client = Client::connect([endpoint.clone()], None).await.ok()?;
        let local = client.get("x", Some(GetOptions::new().with_serializable())).await.ok()?;
        (local.header()?.revision() >= revision).then_some(())
    })
    .await;
    Sample { ops: keys, errors: 0, elapsed: started.elapsed(), latencies: vec![started.elapsed()] }
}

/// Every member is killed; the first restarts with `--force-new-cluster`: the time from its
/// start to the first acknowledged write.
pub async fn force_new_cluster(cluster: &mut Cluster) -> Sample {
    for i in 0..cluster.members.len() {
        cluster.kill(i);
    }
    cluster.members[0].add_flag("--force-new-cluster");
    let started = Instant::now();
    cluster.members[0].spawn_again();
    let endpoint = cluster.members[0].endpoint();
    poll_until(READY_TIMEOUT, "a write after --force-new-cluster", || async {
        let mut client = Client::connect([endpoint.clone()], None).await.ok()?;
        client.put("after-reset", "v", None).await.ok()
    })
    .await;
    let elapsed = started.elapsed();
    Sample { ops: 1, errors: 0, elapsed, latencies: vec![elapsed] }
}
