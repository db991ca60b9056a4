//! `cargo bench --bench cluster`: Phoenix beside etcd on the same machine, in one run.
//!
//! A 3-member Phoenix cluster (the binary cargo builds for benches, release profile) and, where
//! etcd is installed (Debian's etcd-server), a 3-member etcd cluster started with the same
//! flags, on loopback; identical workloads through the same client library (the etcd-client
//! crate), alternating between the two systems round by round to cancel machine drift. For each
//! workload and system: throughput, p50 and p99 latency, CPU seconds and peak resident memory
//! per member, the leader's log flushes per second and client writes per flush, and the ratio
//! Phoenix/etcd. The table is printed at the end and written as JSON.
//!
//! `cargo bench --bench cluster -- --quick` runs smaller workloads once; `--workload NAME`
//! (repeatable) runs only those; `--rounds N` runs each N times (more rounds even out more
//! drift); `--json FILE` says where the JSON goes; `--etcd PATH` names another etcd binary.

#[path = "../../tests/support/mod.rs"]
mod support;

mod report;
mod stats;
mod workloads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use etcd_client::Client;

use report::{Measured, Report};
use support::Cluster;
use workloads::Sample;

#[derive(Parser)]
#[command(about = "Phoenix beside etcd: the same workloads, the same machine, one run")]
struct Args {
    /// Smaller workloads, one round each.
    #[arg(long)]
    quick: bool,
    /// Run only these workloads.
    #[arg(long, value_enum)]
    workload: Vec<Workload>,
    /// Rounds per workload, each system once per round (default: 2, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: Option<u16>,
    /// Where the JSON results go (default: target/bench/cluster-<unix time>.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The etcd binary to compare with.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Members per cluster (3 is the comparison the README reports; 1 shows what consensus
    /// adds to a workload).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    members: u8,
    /// Passed by `cargo bench` to every benchmark binary.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Puts from 1 client.
    #[value(name = "put-1")]
    Put1,
    /// Puts from 10 clients over 10 connections: a write pipeline that waits on the disk and
    /// the network more than on the CPU.
    #[value(name = "put-10")]
    Put10,
    /// Puts from 100 clients over 10 connections.
    #[value(name = "put-100")]
    Put100,
    /// Txns holding one put, 100 clients.
    #[value(name = "txn-put-100")]
    TxnPut100,
    /// Linearizable gets, 100 clients.
    #[value(name = "get-linearizable-100")]
    GetLinearizable100,
    /// Serializable gets, 100 clients.
    #[value(name = "get-serializable-100")]
    GetSerializable100,
    /// Linearizable ranges of 1,000 keys each, 10 clients.
    #[value(name = "range-1000")]
    Range1000,
    /// Latency of 1,000 watchers of one key over 10 streams.
    #[value(name = "watch-1000")]
    Watch1000,
    /// Lease keep-alives, 100 clients with a lease each.
    #[value(name = "lease-keepalive-100")]
    LeaseKeepalive100,
    /// A new member catching up a store of 100,000 keys.
    CatchUp,
    /// From a restart with --force-new-cluster to the first acknowledged write.
    ForceNewCluster,
}

impl Workload {
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    /// Whether it changes the cluster's members, and so needs a cluster of its own.
    fn reshapes(self) -> bool {
        matches!(self, Workload::CatchUp | Workload::ForceNewCluster)
    }
}

/// The sizes of the workloads.
struct Sizes {
    rounds: usize,
    put_1: u64,
    many: u64,
    watch_puts: u64,
    catch_up_keys: u64,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes { rounds: 1, put_1: 300, many: 10_000, watch_puts: 20, catch_up_keys: 20_000 }
        } else {
            Sizes { rounds: 2, put_1: 2_000, many: 50_000, watch_puts: 100, catch_up_keys: workloads::KEY_SPACE }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Phoenix,
    Etcd,
}

impl System {
    fn program(self, args: &Args) -> String {
        match self {
            System::Phoenix => env!("CARGO_BIN_EXE_phoenix").to_string(),
            System::Etcd => args.etcd.to_string_lossy().into_owned(),
        }
    }
}

/// The flags both systems start with: etcd's defaults spelled out, so both get the same.
const FLAGS: &[&str] = &["--heartbeat-interval", "100", "--election-timeout", "1000"];

/// What `catch-up` adds to `FLAGS`: both systems snapshot every 500 entries, so that the new
/// member is always caught up by a snapshot. Phoenix batches writes into fewer entries (about
/// 2,900 for the workload's 100,000 writes), hence a count this low. (etcd's new member still
/// takes 7 s in some rounds, three of ten once: its first publish of itself times out.)
const CATCH_UP_FLAGS: &[&str] = &["--snapshot-count", "500"];

/// The flags of `workload`'s members.
fn flags(workload: Option<Workload>) -> Vec<&'static str> {
    let extra = if workload == Some(Workload::CatchUp) { CATCH_UP_FLAGS } else { &[] };
    FLAGS.iter().chain(extra).copied().collect()
}

/// A cluster of `system` for `workload`, or for every workload that doesn't reshape one.
async fn start(system: System, args: &Args, workload: Option<Workload>) -> Cluster {
    Cluster::start_program(&system.program(args), usize::from(args.members), &flags(workload)).await
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let mut sizes = Sizes::new(args.quick);
    if let Some(rounds) = args.rounds {
        sizes.rounds = usize::from(rounds);
    }
    let mut systems = vec![System::Phoenix];
    if args.etcd.exists() {
        systems.push(System::Etcd);
    } else {
        eprintln!("{} not found: measuring Phoenix alone (apt-get install etcd-server)", args.etcd.display());
    }
    let chosen = if args.workload.is_empty() { Workload::value_variants().to_vec() } else { args.workload.clone() };
    let mut standing = Vec::new();
    if chosen.iter().any(|w| !w.reshapes()) {
        for &system in &systems {
            standing.push(start(system, &args, None).await);
        }
    }
    let mut report = Report::new(machine());
    for &workload in &chosen {
        for round in 0..sizes.rounds {
            // Alternate which system goes first, so drift favours neither.
            let mut order: Vec<usize> = (0..systems.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                eprintln!("{} on {:?}, round {}", workload.name(), systems[i], round + 1);
                let measured = if workload.reshapes() {
                    let mut cluster = start(systems[i], &args, Some(workload)).await;
                    measure(&mut cluster, workload, &sizes).await
                } else {
                    measure(&mut standing[i], workload, &sizes).await
                };
                report.add(workload, systems[i], measured);
            }
        }
    }
    report.print();
    let path = args.json.unwrap_or_else(|| {
        let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        PathBuf::from(format!("target/bench/cluster-{seconds}.json"))
    });
    match report.write_json(&path) {
        Ok(()) => eprintln!("results written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// Prepares `cluster` for one workload (unmeasured), runs it, and reads what it cost the members.
async fn measure(cluster: &mut Cluster, workload: Workload, sizes: &Sizes) -> Measured {
    let mut clients = workloads::connect(cluster, 10).await;
    prepare(&clients, workload, sizes).await;
    let leader = cluster.leader().await;
    // Client i was connected to member i % members; rotated so that the first, which the
    // single-client workloads use, talks to the leader in both systems, as etcd's "write to
    // leader" figures do.
    let connections = clients.len();
    clients.rotate_left(leader % connections);
    let leader_endpoint = cluster.members[leader].endpoint();
    let pids: Vec<u32> = cluster.members.iter().filter_map(|m| m.pid()).collect();
    pids.iter().for_each(|&pid| stats::reset_peak(pid));
    let before: HashMap<u32, Duration> = pids.iter().map(|&pid| (pid, stats::read(pid).cpu)).collect();
    let flushes_before = stats::log_flushes(&leader_endpoint).await;
    let sample = execute(cluster, &clients, workload, sizes).await;
    let flushes_after = stats::log_flushes(&leader_endpoint).await;
    // By process: a member started during the workload (a new one, or one restarted) counts
    // from zero.
    let members: Vec<_> = cluster
        .members
        .iter()
        .filter_map(|m| m.pid())
        .map(|pid| {
            let after = stats::read(pid);
            let cpu = after.cpu.saturating_sub(before.get(&pid).copied().unwrap_or_default());
            stats::ProcessStats { cpu, peak_rss_bytes: after.peak_rss_bytes }
        })
        .collect();
    let flushes = flushes_before.zip(flushes_after).map(|(b, a)| a.saturating_sub(b));
    let writes = matches!(workload, Workload::Put1 | Workload::Put10 | Workload::Put100 | Workload::TxnPut100);
    Measured { sample, members, leader_flushes: flushes, counts_writes: writes }
}

/// The keys a workload reads, or the store a new member catches up.
async fn prepare(clients: &[Client], workload: Workload, sizes: &Sizes) {
    let keys = match workload {
        Workload::GetLinearizable100 | Workload::GetSerializable100 => workloads::KEYS_READ,
        Workload::CatchUp | Workload::ForceNewCluster => sizes.catch_up_keys,
        Workload::Range1000 => return workloads::fill_range_keys(clients).await,
        _ => return,
    };
    workloads::put(clients, 100, keys).await;
}

async fn execute(cluster: &mut Cluster, clients: &[Client], workload: Workload, sizes: &Sizes) -> Sample {
    use workloads::*;
    match workload {
        Workload::Put1 => put(&clients[..1], 1, sizes.put_1).await,
        Workload::Put10 => put(clients, 10, sizes.many / 5).await,
        Workload::Put100 => put(clients, 100, sizes.many).await,
        Workload::TxnPut100 => txn_put(clients, 100, sizes.many).await,
        Workload::GetLinearizable100 => get(clients, 100, sizes.many, false).await,
        Workload::GetSerializable100 => get(clients, 100, sizes.many, true).await,
        Workload::Range1000 => range(clients, 10, sizes.many / 50).await,
        Workload::Watch1000 => watch_latency(clients, 1_000, 10, sizes.watch_puts, 50).await,
        Workload::LeaseKeepalive100 => lease_keepalive(clients, 100, sizes.many).await,
        Workload::CatchUp => catch_up(cluster, clients, sizes.catch_up_keys, &flags(Some(workload))).await,
        Workload::ForceNewCluster => force_new_cluster(cluster).await,
    }
}

/// The machine, for the record: CPU model and count, memory.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|m| m.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    format!("{} x {}, {} GiB", cpus, model.unwrap_or("unknown CPU"), memory_kb / (1024 * 1024))
}
