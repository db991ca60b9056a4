//! `member add|update|promote|remove` and `move-leader` compared with etcdctl's, each run on a
//! small cluster of its own: one member, to which learners are added (and removed) without
//! starting them, then a second member that is started, promoted, handed the leadership and
//! back, and removed. Member IDs and addresses are masked by name; listings whose order follows
//! the (masked) IDs are sorted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use tempfile::TempDir;

use super::mask::Labels;
use super::process::{Outcome, Running, Transcript, CLIENT_TIMEOUT};
use super::{free_ports, PHOENIXCTL, READY_TIMEOUT};

/// etcd's default timings, which openraft needs on a loaded machine (tests/support).
const TIMINGS: &[&str] = &["--heartbeat-interval", "100", "--election-timeout", "1000"];

/// Where a command line is sent: `--endpoints` of the first member, or of both (as etcdctl's
/// own host:port, or as URLs, which etcdctl 3.4 sends on as they are: see src/api/authority.rs).
#[derive(Debug, Clone, Copy)]
enum At {
    First,
    Both,
    BothAsUrls,
}

/// One step of the scenario. Placeholders: `<x>`, `<z>`, `<m1>`, `<m2>` are member IDs in hex,
/// `<px>`, `<px2>`, `<py>`, `<pz>`, `<p2>` peer URLs of members that are (or would be) added.
enum Step {
    Run(At, &'static str),
    /// Run again while it fails with an error that says the server is not ready yet (the
    /// third field); the last run counts.
    Patient(At, &'static str, &'static str),
    /// Start the second member, added as a learner, and wait until it serves reads.
    StartSecond,
}

use At::{Both, BothAsUrls, First};
use Step::{Patient, Run, StartSecond};

/// etcd refuses to promote a learner until it holds 90% of the leader's log.
const NOT_IN_SYNC: &str = "which is in sync with leader";

/// etcd refuses to remove a voter until the others have been connected to it for five seconds
/// (`--strict-reconfig-check`, `HealthInterval`).
const NOT_CONNECTED_LONG_ENOUGH: &str = "etcdserver: unhealthy cluster";

const SCENARIO: &[Step] = &[
    Run(First, "member add"),
    Run(First, "member add m9"),
    Run(First, "member add m9 m10 http://127.0.0.1:1"),
    Run(First, "member add m9 --peer-urls=127.0.0.1:1"),
    Run(First, "member add m9 --peer-urls=http://a"),
    Run(First, "member add m9 --peer-urls=http://a:1/path"),
    Run(First, "member remove"),
    Run(First, "member remove zz"),
    Run(First, "member remove 10000000000000000"),
    Run(First, "member remove 12"),
    Run(First, "member remove 12 -w yaml"),
    Run(First, "member update zz"),
    Run(First, "member update 12"),
    Run(First, "member update 12 --peer-urls=http://127.0.0.1:1"),
    Run(First, "member promote"),
    Run(First, "member promote 12"),
    Run(First, "move-leader"),
    Run(First, "move-leader zz"),
    Run(First, "move-leader 12"),
    // Learners that are never started. etcd 3.4 takes a learner whose peer URLs were updated
    // for a voter (see PHOENIX_DIFFERENCES), so the update comes last.
    Run(First, "member add mx --peer-urls=<px> --learner -w json"),
    Run(First, "member promote <x>"),
    Run(First, "member add my --peer-urls=<py> --learner"),
    // Not <px> alone: etcd derives an added member's ID from its peer URLs and the second, so
    // that could be refused as `member ID already exist` instead.
    Run(First, "member add my --peer-urls=<py>,<px>"),
    Run(First, "member update <x> --peer-urls=<px2> -w json"),
    Run(First, "member update <x> --peer-urls=<px>"),
    Run(First, "member remove <x> -w json"),
    Run(First, "member remove <x>"),
    Run(First, "member add mz --peer-urls=<pz> --learner -w fields"),
    Run(First, "member remove <z> -w table"),
    Run(First, "member remove <z>"),
    // A learner that is started, promoted, handed the leadership and removed.
    Run(First, "member add m2 --peer-urls=<p2> --learner"),
    StartSecond,
    Patient(First, "member promote <m2>", NOT_IN_SYNC),
    Run(First, "member promote <m2>"),
    Run(First, "member update <m2> --peer-urls=<p2>"),
    Run(Both, "move-leader <m2>"),
    Run(First, "move-leader <m1>"),
    Run(Both, "move-leader <m1> -w json"),
    Run(Both, "move-leader <m1>"),
    Run(Both, "move-leader <m1> -w fields"),
    // move-leader finds the leader among its endpoints by their client URLs.
    Run(BothAsUrls, "move-leader <m2>"),
    Run(BothAsUrls, "move-leader <m1>"),
    Run(First, "move-leader 42"),
    Patient(First, "member remove <m2>", NOT_CONNECTED_LONG_ENOUGH),
];

/// Runs the scenario with `client` on a fresh cluster of `program` (etcd or phoenix): the
/// outcomes, one per `Run` or `Patient` step, masked.
pub fn run_membership(program: &str, client: &str) -> Transcript {
    let mut cluster = Pair::start(program);
    let mut outcomes = Vec::new();
    for step in SCENARIO {
        match step {
            Run(at, args) => outcomes.push((*args, cluster.run(client, *at, args))),
            Patient(at, args, not_yet) => outcomes.push((*args, cluster.run_patiently(client, *at, args, not_yet))),
            StartSecond => cluster.start_second(program),
        }
    }
    let labels = cluster.labels();
    outcomes.into_iter().map(|(args, outcome)| (args, sort_listings(labels.mask(outcome)))).collect()
}

/// Peer URLs of members that are added, by placeholder, and the name each ID is masked as.
const ADDED: &[(&str, &str)] = &[("<px>", "x"), ("<pz>", "z"), ("<p2>", "m2")];

/// A cluster that starts with one member and may grow a second; killed when dropped.
struct Pair {
    dir: TempDir,
    nodes: Vec<Node>,
    /// The client ports of the first and second member.
    client_ports: [u16; 2],
    /// Placeholder -> peer URL (`<px>`...), and placeholder -> member ID (`<x>`...).
    urls: Vec<(&'static str, String)>,
    ids: Vec<(String, u64)>,
}

/// One member process.
struct Node {
    child: Child,
    client: String,
    log: PathBuf,
}

impl Pair {
    fn start(program: &str) -> Pair {
        let dir = TempDir::new().expect("create a temp dir");
        let [c1, c2, ports @ ..] = free_ports::<8>();
        let peers = ["<p1>", "<p2>", "<px>", "<px2>", "<py>", "<pz>"];
        let urls =
            peers.into_iter().zip(ports).map(|(name, port)| (name, format!("http://127.0.0.1:{port}"))).collect();
        let mut pair = Pair { dir, nodes: Vec::new(), client_ports: [c1, c2], urls, ids: Vec::new() };
        let initial = format!("m1={}", pair.url("<p1>"));
        pair.spawn(program, "m1", "<p1>", &initial, "new");
        pair.wait_until(0, "endpoint health --command-timeout 500ms --dial-timeout 200ms", "");
        pair.must(0, "put k v");
        let m1 = pair.status_member_id(0);
        pair.ids.push(("<m1>".to_string(), m1));
        pair
    }

    fn start_second(&mut self, program: &str) {
        let initial = format!("m1={},m2={}", self.url("<p1>"), self.url("<p2>"));
        self.spawn(program, "m2", "<p2>", &initial, "existing");
        // A learner serves serializable reads only.
        self.wait_until(1, "get k --consistency s --print-value-only --command-timeout 500ms", "v\n");
    }

    fn spawn(&mut self, program: &str, name: &str, peer: &str, initial: &str, state: &str) {
        let client = format!("127.0.0.1:{}", self.client_ports[self.nodes.len()]);
        let client_url = format!("http://{client}");
        let peer_url = self.url(peer).to_string();
        let log = self.dir.path().join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("create the member log");
        let child = Command::new(program)
            .env_clear()
            .args(["--name", name, "--data-dir"])
            .arg(self.dir.path().join(name))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial, "--initial-cluster-state", state])
            .args(TIMINGS)
            .stdout(Stdio::from(log_file.try_clone().expect("clone the log handle")))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        self.nodes.push(Node { child, client, log });
    }

    /// Polls `probe` (a phoenixctl command line) against member `i` until it succeeds and
    /// prints `stdout`.
    fn wait_until(&mut self, i: usize, probe: &str, stdout: &str) {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if let Ok(Some(status)) = self.nodes[i].child.try_wait() {
                panic!("member {i} exited with {status} before serving; its log:\n{}", self.log(i));
            }
            let outcome = self.phoenixctl(&self.nodes[i].client, probe);
            if outcome.code == Some(0) && outcome.stdout == stdout {
                return;
            }
        }
        panic!("member {i} did not serve within {READY_TIMEOUT:?}; its log:\n{}", self.log(i));
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    fn endpoints(&self, at: At) -> String {
        match at {
            First => self.nodes[0].client.clone(),
            Both => self.nodes.iter().map(|n| n.client.as_str()).collect::<Vec<_>>().join(","),
            BothAsUrls => self.nodes.iter().map(|n| format!("http://{}", n.client)).collect::<Vec<_>>().join(","),
        }
    }

    fn url(&self, placeholder: &str) -> &str {
        let found = self.urls.iter().find(|(name, _)| *name == placeholder);
        &found.unwrap_or_else(|| panic!("no URL for {placeholder}")).1
    }

    /// `args` with its placeholders filled in.
    fn fill(&self, args: &str) -> String {
        let ids = self.ids.iter().map(|(name, id)| (name.as_str(), format!("{id:x}")));
        let urls = self.urls.iter().map(|(name, url)| (*name, url.clone()));
        let filled = urls.chain(ids).fold(args.to_string(), |args, (name, value)| args.replace(name, &value));
        assert!(!filled.contains('<'), "unknown placeholder in `{filled}`");
        filled
    }

    fn run(&mut self, client: &str, at: At, args: &str) -> Outcome {
        let filled: Vec<String> = self.fill(args).split(' ').map(str::to_string).collect();
        let outcome = Running::start(client, &self.endpoints(at), &filled).finish();
        if args.starts_with("member add") {
            self.learn_added_ids();
        }
        outcome
    }

    fn run_patiently(&mut self, client: &str, at: At, args: &str, not_yet: &str) -> Outcome {
        let started = Instant::now();
        loop {
            let outcome = self.run(client, at, args);
            if !outcome.stderr.contains(not_yet) {
                return outcome;
            }
            assert!(started.elapsed() < CLIENT_TIMEOUT, "`{args}` kept failing: {outcome:?}");
        }
    }

    /// Finds the IDs of members added so far by their peer URLs.
    fn learn_added_ids(&mut self) {
        let listed = self.phoenixctl(&self.nodes[0].client, "member list -w json");
        let json: serde_json::Value = serde_json::from_str(&listed.stdout).expect("member list prints json");
        for member in json["members"].as_array().into_iter().flatten() {
            let Some(id) = member["ID"].as_u64() else { continue };
            for (peer, name) in ADDED {
                let url = serde_json::Value::from(self.url(peer));
                let placeholder = format!("<{name}>");
                let listed = member["peerURLs"].as_array().is_some_and(|urls| urls.contains(&url));
                if listed && !self.ids.iter().any(|(known, _)| *known == placeholder) {
                    self.ids.push((placeholder, id));
                }
            }
        }
    }

    fn status_member_id(&self, i: usize) -> u64 {
        let status = self.phoenixctl(&self.nodes[i].client, "endpoint status -w json");
        let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("endpoint status prints json");
        json[0]["Status"]["header"]["member_id"].as_u64().unwrap_or_else(|| panic!("no member ID in {json}"))
    }

    fn must(&self, i: usize, args: &str) {
        let outcome = self.phoenixctl(&self.nodes[i].client, args);
        assert_eq!(outcome.code, Some(0), "`{args}` failed: {outcome:?}");
    }

    fn phoenixctl(&self, endpoints: &str, args: &str) -> Outcome {
        let args: Vec<String> = args.split(' ').map(str::to_string).collect();
        Running::start(PHOENIXCTL, endpoints, &args).finish()
    }

    /// Names for every ID and address, and the cluster ID, read from the first member.
    fn labels(&self) -> Labels {
        let mut labels = Labels::default();
        let listed = self.phoenixctl(&self.nodes[0].client, "member list -w json");
        let json: serde_json::Value = serde_json::from_str(&listed.stdout).expect("member list prints json");
        labels
            .id(json["header"]["cluster_id"].as_u64().unwrap_or_else(|| panic!("no cluster ID in {json}")), "cluster");
        for (name, id) in &self.ids {
            labels.id(*id, name.trim_matches(['<', '>']));
        }
        for (placeholder, url) in &self.urls {
            labels.address(url.trim_start_matches("http://"), placeholder.trim_matches(['<', '>']));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            labels.address(&node.client, &format!("c{}", i + 1));
        }
        labels
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!(
                    "---- last lines of member {} ----\n{}",
                    i + 1,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// Listings ordered by member ID, sorted: `ETCD_INITIAL_CLUSTER` and json `members` arrays.
fn sort_listings(outcome: Outcome) -> Outcome {
    let stdout = outcome.stdout.lines().map(|line| sort_initial_cluster(&sort_json_members(line)) + "\n").collect();
    Outcome { stdout, ..outcome }
}

fn sort_initial_cluster(line: &str) -> String {
    let Some(list) = line.strip_prefix("ETCD_INITIAL_CLUSTER=\"").and_then(|rest| rest.strip_suffix('"')) else {
        return line.to_string();
    };
    let mut members: Vec<&str> = list.split(',').collect();
    members.sort_unstable();
    format!("ETCD_INITIAL_CLUSTER=\"{}\"", members.join(","))
}

/// A member object holds arrays but no objects, so the array's items split at `},{`.
fn sort_json_members(line: &str) -> String {
    let key = "\"members\":[";
    let Some(start) = line.find(key).map(|at| at + key.len()) else {
        return line.to_string();
    };
    let mut depth = 1;
    let end = line[start..].find(|c| {
        depth += match c {
            '[' => 1,
            ']' => -1,
            _ => 0,
        };
        depth == 0
    });
    let Some(end) = end.map(|len| start + len) else {
        return line.to_string();
    };
    let inner = &line[start..end];
    let items = inner.trim_start_matches('{').trim_end_matches('}');
    let mut members: Vec<&str> = items.split("},{").collect();
    members.sort_unstable();
    format!("{}{{{}}}{}", &line[..start], members.join("},{"), &line[end..])
}
