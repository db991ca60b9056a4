//! The two nemeses that change who the members are: replacing a member (removed, its data dir
//! cleaned, joined again as a new member), and the fault Phoenix exists for, a majority dying at
//! once, after which the most advanced survivor is reset into a one-member cluster
//! (`phoenixctl disaster`) and every other host is cleaned and joins again.
//!
//! Before the reset, the chosen survivor's Raft log is read from its stopped data dir: the
//! values it holds and the revision it had applied are what `checker::check_across_reset` needs
//! to hold the reset to its promise, that no write the survivor held is lost.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use etcd_client::Client;
use openraft::storage::RaftLogReader;
use openraft::EntryPayload;
use phoenix::pb::{command, request_op};

use super::support::{poll_until, Cluster, Rng, READY_TIMEOUT, TEST_TIMINGS};
use super::{since, OP_TIMEOUT};

const PHOENIXCTL: &str = env!("CARGO_BIN_EXE_phoenixctl");

/// What the disaster reset started from.
pub struct Reset {
    /// When the last member of the old cluster died (microseconds since the run started): a
    /// request sent before then may have been answered by the old cluster.
    pub began: u64,
    /// Every value the chosen survivor's log held (puts, in txns too).
    pub held: HashSet<String>,
    /// The store revision the chosen survivor had applied: it held everything up to it.
    pub applied_revision: i64,
    pub what: String,
}

/// Removes member `i` through the others, cleans its data dir, and has it join again through
/// them as a new member with the same name and URLs; returns once it votes.
pub async fn replace(cluster: &mut Cluster, i: usize) {
    let peer_url = cluster.members[i].peer_url();
    let others: Vec<String> =
        cluster.members.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, m)| m.endpoint()).collect();
    // An unanswered removal may still have happened: the list says.
    poll_until(READY_TIMEOUT, &format!("{} removed", cluster.members[i].name), || async {
        let mut client = Client::connect(&others, None).await.ok()?;
        let list = tokio::time::timeout(OP_TIMEOUT, client.member_list()).await.ok()?.ok()?;
        let Some(old) = list.members().iter().find(|m| m.peer_urls().contains(&peer_url)) else { return Some(()) };
        let _ = tokio::time::timeout(OP_TIMEOUT, client.member_remove(old.id())).await;
        None
    })
    .await;
    // Removed, the member learns it and fences itself off: only then is it cleaned. Cleaned
    // sooner, a former reset survivor would still be unfenced, and `clean --purge` rightly
    // refuses to delete what may be its cluster's only copy.
    let fenced = cluster.members[i].data_dir.join("FENCED");
    poll_until(READY_TIMEOUT, &format!("{} to fence itself off", cluster.members[i].name), || async {
        fenced.exists().then_some(())
    })
    .await;
    rejoin(cluster, i, &others[0]).await;
}

/// Starts member `i` afresh with `--join` through `via`, and waits until it votes.
async fn rejoin(cluster: &mut Cluster, i: usize, via: &str) {
    let initial = format!("{}={}", cluster.members[i].name, cluster.members[i].peer_url());
    let mut flags = vec!["--join", via, "--initial-cluster", &initial];
    flags.extend(TEST_TIMINGS);
    cluster.members[i].start_afresh(&flags);
    let endpoint = cluster.members[i].endpoint();
    poll_until(READY_TIMEOUT, &format!("{} to join and vote", cluster.members[i].name), || async {
        let mut client = Client::connect([endpoint.clone()], None).await.ok()?;
        let status = client.status().await.ok()?;
        (status.leader() != 0 && !status.is_learner()).then_some(())
    })
    .await;
}

/// kill -9 of a random majority; the survivors are stopped too, the most advanced one (by
/// `phoenixctl disaster plan`) is reset and started, and every other member joins it again.
pub async fn lose_majority_and_reset(cluster: &mut Cluster, rng: &mut Rng, started: Instant) -> Reset {
    let n = cluster.members.len();
    let mut order: Vec<usize> = (0..n).collect();
    for i in 0..n {
        order.swap(i, i + rng.below(n - i));
    }
    let (dead, survivors) = order.split_at(n / 2 + 1);
    for &i in dead.iter().chain(survivors) {
        cluster.kill(i);
    }
    // Only now is the old cluster gone: a request sent while the kills went on may have been
    // answered by a member not yet killed, from history the survivor may not hold.
    let began = since(started);
    let chosen = plan(cluster, survivors);
    let (held, applied_revision) = held_by(&cluster.members[chosen].data_dir).await;
    let data_dir = cluster.members[chosen].data_dir.to_string_lossy().into_owned();
    let reset = phoenixctl(&["disaster", "--data-dir", &data_dir]);
    assert!(reset.status.success(), "the reset failed: {}", String::from_utf8_lossy(&reset.stderr));
    cluster.members[chosen].spawn_again();
    cluster.wait_ready(chosen).await;
    let via = cluster.members[chosen].endpoint();
    for i in (0..n).filter(|&i| i != chosen) {
        rejoin(cluster, i, &via).await;
    }
    let what = format!(
        "LoseMajority: killed {dead:?}, reset survivor {chosen} of {survivors:?} (applied revision \
         {applied_revision}, {} values in its log): {}",
        held.len(),
        String::from_utf8_lossy(&reset.stdout).lines().find(|l| l.contains("lost")).unwrap_or("no loss report")
    );
    Reset { began, held, applied_revision, what }
}

fn phoenixctl(args: &[&str]) -> Output {
    Command::new(PHOENIXCTL).args(args).output().expect("run phoenixctl")
}

/// The survivor `phoenixctl disaster plan` recommends, from the stopped survivors' data dirs.
fn plan(cluster: &Cluster, survivors: &[usize]) -> usize {
    let dirs: Vec<String> =
        survivors.iter().map(|&i| cluster.members[i].data_dir.to_string_lossy().into_owned()).collect();
    let mut args = vec!["disaster", "plan"];
    for dir in &dirs {
        args.extend(["--data-dir", dir.as_str()]);
    }
    let plan = phoenixctl(&args);
    assert!(plan.status.success(), "disaster plan failed: {}", String::from_utf8_lossy(&plan.stderr));
    let advice = String::from_utf8_lossy(&plan.stdout).into_owned();
    let recommended =
        survivors.iter().zip(&dirs).find(|(_, dir)| advice.contains(&format!("disaster --data-dir {dir}`")));
    *recommended.unwrap_or_else(|| panic!("the plan recommends none of the survivors: {advice}")).0
}

/// The values a stopped member's Raft log holds, and the revision it had applied.
async fn held_by(data_dir: &Path) -> (HashSet<String>, i64) {
    let data = phoenix::cluster::DataDir::open_stopped(data_dir).expect("open the survivor's data dir");
    let applied = phoenix::recovery::survivor::inspect(&data).expect("inspect the survivor").revision;
    let mut log = data.log_store().expect("open the survivor's log");
    let entries = log.try_get_log_entries(..).await.expect("read the survivor's log");
    let mut held = HashSet::new();
    for entry in entries {
        let EntryPayload::Normal(proposal) = entry.payload else { continue };
        for op in proposal.0.commands.into_iter().filter_map(|c| c.op) {
            let puts = match op {
                command::Op::Put(put) => vec![put],
                command::Op::Txn(txn) => txn
                    .success
                    .into_iter()
                    .filter_map(|op| match op.request {
                        Some(request_op::Request::RequestPut(put)) => Some(put),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            held.extend(puts.into_iter().map(|put| String::from_utf8_lossy(&put.value).into_owned()));
        }
    }
    (held, applied)
}
