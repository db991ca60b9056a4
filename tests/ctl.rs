//! phoenixctl against etcdctl: the same command lines, run by etcdctl against one real etcd and by
//! phoenixctl against a second real etcd and against Phoenix, must print the same stdout, stderr
//! and exit codes once the values that legitimately differ between servers are masked (cluster
//! and member IDs, lease IDs, raft terms and indexes, versions, db sizes, hashes, times, a
//! lease's remaining TTL). One-shot commands run as a scenario; commands that run until
//! something else happens (watch -i, lease keep-alive, lock, elect) run as sessions (`sessions`);
//! membership changes and move-leader run on small clusters of their own (`membership`).
//! Phoenix's own `clean` is checked against its expected messages on a real data dir (`clean`).
//!
//! The test needs Debian's etcd and etcdctl 3.4 (/usr/bin/etcd, /usr/bin/etcdctl) and skips,
//! saying so, when they are missing. Servers and clients are real processes on free ports,
//! awaited by polling within time limits, and killed when dropped.

#[path = "ctl/clean.rs"]
mod clean;
#[path = "ctl/mask.rs"]
mod mask;
#[path = "ctl/membership.rs"]
mod membership;
#[path = "support/ports.rs"]
mod ports;
#[path = "ctl/process.rs"]
mod process;
#[path = "ctl/sessions.rs"]
mod sessions;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use mask::{mask_remaining_ttl, Ids, Leases};
use membership::run_membership;
use process::{Outcome, Running, Transcript};
use sessions::run_sessions;

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";
const PHOENIXCTL: &str = env!("CARGO_BIN_EXE_phoenixctl");
const PHOENIX: &str = env!("CARGO_BIN_EXE_phoenix");

/// How long a server may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One command line of the scenario and what it reads from stdin.
struct Step {
    args: &'static str,
    stdin: &'static str,
}

const fn step(args: &'static str) -> Step {
    Step { args, stdin: "" }
}

const fn piped(args: &'static str, stdin: &'static str) -> Step {
    Step { args, stdin }
}

/// Every command phoenixctl implements, in each output format, on success and on failure.
/// Arguments are split at spaces; `_` stands for an empty argument and `<lease>` for the lease
/// the last `lease grant` granted.
const SCENARIO: &[Step] = &[
    step("put foo bar"),
    step("put foo bar2 --prev-kv"),
    step("put foo bar3 --prev-kv -w json"),
    step("put foo bar4 --prev-kv -w fields"),
    step("put k1 v1"),
    step("put k2 v2 -w json"),
    step("put k3 v3"),
    piped("put from-stdin", "a value\nwith two lines\n"),
    step("get foo"),
    step("get foo -w json"),
    step("get foo -w fields"),
    step("get foo --hex"),
    step("get k --prefix"),
    step("get k --prefix -w json"),
    step("get k1 k3 -w json"),
    step("get --from-key k2 --keys-only"),
    step("get k --prefix --limit 2 -w json"),
    step("get k --prefix --limit 2 -w fields"),
    // A flag takes the next word as its value, as pflag's do; a limit below 0 is none.
    step("get k --prefix --limit -1"),
    step("get foo --rev -1 -w json"),
    step("get k --prefix --sort-by VALUE --order DESCEND"),
    step("get _ --prefix --sort-by MODIFY --keys-only -w json"),
    step("get foo --rev 3 -w json"),
    step("get foo --print-value-only"),
    step("get foo --consistency s -w json"),
    step("get missing -w json"),
    step("del k3 --prev-kv -w json"),
    step("del k --prefix"),
    step("del missing -w json"),
    step("put k1 v1 -w json"),
    piped("txn", "value(\"foo\") = \"bar4\"\n\nput foo txn1\nget foo\ndel k1\n\nget k1\n\n"),
    piped("txn -w json", "mod(\"foo\") > \"0\"\nver(\"foo\") != \"0\"\n\nget foo --prefix\n\nput x y\n\n"),
    piped("txn -i -w json", "value(\"foo\") = \"nope\"\n\nput x y\n\nget foo\nput z w --prev-kv\n\n"),
    piped("txn -w fields", "create(\"foo\") < \"100\"\n\nput foo txn2 --prev-kv\n\n\n"),
    piped("txn -i", "\n\n\n"),
    step("member list"),
    step("member list -w json"),
    step("member list -w fields"),
    step("member list -w table"),
    step("endpoint status"),
    step("endpoint status -w json"),
    step("endpoint status -w fields"),
    step("endpoint hashkv -w json"),
    step("endpoint hashkv -w fields"),
    step("endpoint health -w json"),
    step("endpoint health -w fields"),
    step("alarm list"),
    step("alarm list -w json"),
    step("alarm disarm -w json"),
    step("defrag"),
    step("compaction 5 --physical"),
    // Failures: etcd's errors, etcdctl's argument checks, and malformed txn input.
    step("get foo --rev 2 -w json"),
    step("get foo --rev 1000"),
    step("compaction 4"),
    step("put _ value"),
    step("put k --ignore-value"),
    step("put k v --lease 1234"),
    step("put k v --lease zz"),
    step("get"),
    step("get a b --prefix"),
    step("get foo --order UP"),
    step("get foo --order -x"),
    step("get foo --consistency x"),
    step("get foo -w table"),
    step("get foo -w yaml"),
    step("get foo --print-value-only -w json"),
    step("del"),
    step("compaction x"),
    step("alarm list extra"),
    piped("txn", "value(\"a\") = 1\n\n\n"),
    piped("txn", "vx(\"a\") = \"1\"\n\n\n"),
    piped("txn", "\nput\n\n"),
    piped("txn", "\nput k1 a\nput k1 b\n\n"),
    piped("txn", "\n\n"),
    // Watch: history replayed from revision 6 (after the compaction at 5), printed before the
    // command run for the first event fails and ends the watch; then compacted revisions.
    step("put w/a 1"),
    step("put w/b 1"),
    step("put w/a 2"),
    step("del w/b"),
    piped("txn", "\nput w/c 1\nput w/d 1\n\n"),
    step("del w/ --prefix"),
    step("put w/a 3"),
    step("watch w/ --prefix --rev 6 --prev-kv -- false"),
    step("watch w/ --prefix --rev 6 --prev-kv -w json -- false"),
    step("watch w/ --prefix --rev 6 -w fields -- false"),
    step("watch w/b w/d --rev 6 --hex -- false"),
    step("watch foo --rev 2"),
    step("watch foo --rev 2 -w json"),
    step("watch foo --rev 2 -w fields"),
    step("watch foo --rev -1"),
    step("watch"),
    step("watch a b --prefix"),
    step("watch a --"),
    step("watch w/a --rev 6 -w table"),
    // Lease.
    step("lease grant 60"),
    step("put lk v --lease <lease>"),
    step("lease timetolive <lease>"),
    step("lease timetolive <lease> --keys"),
    step("lease timetolive <lease> --keys -w json"),
    step("lease timetolive <lease> --keys -w fields"),
    step("lease list"),
    step("lease list -w json"),
    step("lease list -w fields"),
    step("lease keep-alive --once <lease>"),
    step("lease keep-alive --once <lease> -w json"),
    step("lease keep-alive --once <lease> -w fields"),
    step("get lk -w json"),
    step("lease revoke <lease>"),
    step("get lk"),
    step("lease timetolive <lease>"),
    step("lease grant 60 -w json"),
    step("lease revoke <lease> -w json"),
    step("lease grant 60 -w fields"),
    step("lease revoke <lease> -w fields"),
    step("lease grant 60"),
    step("lease revoke <lease> -w protobuf"),
    step("lease grant 0"),
    step("lease grant"),
    step("lease grant x"),
    step("lease grant 9000000001"),
    step("lease revoke"),
    step("lease revoke zz"),
    step("lease revoke 1234"),
    step("lease timetolive"),
    step("lease timetolive 1234"),
    step("lease timetolive 1234 -w json"),
    step("lease keep-alive"),
    step("lease keep-alive --once 1234"),
    step("lease keep-alive 1234"),
    step("lease grant 60 -w table"),
];

#[test]
fn phoenixctl_prints_what_etcdctl_prints() {
    let Some(oracle) = Server::etcd() else { return };
    let etcd = Server::etcd().expect("etcd is installed");
    let expected = oracle.run_scenario(ETCDCTL);
    let actual = etcd.run_scenario(PHOENIXCTL);
    assert_same(SCENARIO, &expected, &actual, "phoenixctl against etcd");
    let expected = oracle.run_sessions(ETCDCTL);
    let actual = etcd.run_sessions(PHOENIXCTL);
    assert_same_sessions(&expected, &actual, "phoenixctl against etcd");
}

/// Steps (scenario command lines or session names) where Phoenix answers differently from etcd
/// 3.4 on purpose or by a known server difference.
const PHOENIX_DIFFERENCES: &[(&str, &str)] = &[
    ("alarm list -w json", "Phoenix fills the Alarm header as etcd 3.5 does; etcd 3.4 sends none"),
    (
        "member update <x> --peer-urls=<px2> -w json",
        "etcd 3.4 lists a learner whose peer URLs were updated as a voter (its MemberUpdate replaces the member's \
         raft attributes, isLearner included); Phoenix keeps listing it as the learner it is",
    ),
    ("move-leader <m1> -w json", "Phoenix's MoveLeader answer has a response header; etcd 3.4's has none (`{}`)"),
];

#[test]
fn phoenixctl_against_phoenix_prints_what_etcdctl_prints_against_etcd() {
    let Some(oracle) = Server::etcd() else { return };
    let phoenix = Server::phoenix();
    let mut expected = oracle.run_scenario(ETCDCTL);
    let mut actual = phoenix.run_scenario(PHOENIXCTL);
    for (i, step) in SCENARIO.iter().enumerate() {
        if let Some(why) = phoenix_difference(step.args) {
            eprintln!("not compared against phoenix: `{}`: {why}", step.args);
            (expected[i], actual[i]) = (Outcome::default(), Outcome::default());
        }
    }
    assert_same(SCENARIO, &expected, &actual, "phoenixctl against phoenix");
    let mut expected = oracle.run_sessions(ETCDCTL);
    let mut actual = phoenix.run_sessions(PHOENIXCTL);
    for ((name, expected), (_, actual)) in expected.iter_mut().zip(actual.iter_mut()) {
        if let Some(why) = phoenix_difference(name) {
            eprintln!("not compared against phoenix: {name}: {why}");
            (*expected, *actual) = (Outcome::default(), Outcome::default());
        }
    }
    assert_same_sessions(&expected, &actual, "phoenixctl against phoenix");
}

/// Commands for which etcdctl 3.4 dials each endpoint on its own and sends its whole URL as the
/// requests' authority, which h2 refuses unless Phoenix mends it (src/api/authority.rs).
const DIALED_BY_URL: &[Step] =
    &[step("endpoint status"), step("endpoint status -w json"), step("endpoint hashkv -w json"), step("defrag")];

#[test]
fn etcdctl_reaches_phoenix_by_url_as_it_reaches_etcd() {
    let Some(oracle) = Server::etcd() else { return };
    let phoenix = Server::phoenix();
    let by_url = |server: &Server| server.run_steps(ETCDCTL, DIALED_BY_URL, &format!("http://{}", server.endpoint));
    let (expected, actual) = (by_url(&oracle), by_url(&phoenix));
    assert!(expected.iter().all(|outcome| outcome.code == Some(0)), "etcdctl against etcd: {expected:?}");
    assert_same(DIALED_BY_URL, &expected, &actual, "etcdctl against phoenix, by URL");
}

#[test]
fn member_changes_and_move_leader_print_what_etcdctl_prints() {
    if !etcd_installed() {
        return;
    }
    let (expected, actual) = std::thread::scope(|threads| {
        let oracle = threads.spawn(|| run_membership(ETCD, ETCDCTL));
        let actual = run_membership(ETCD, PHOENIXCTL);
        (oracle.join().expect("the etcdctl run"), actual)
    });
    assert_same_sessions(&expected, &actual, "phoenixctl against etcd");
}

/// Against Phoenix, phoenixctl and etcdctl itself both print what etcdctl prints against etcd.
#[test]
fn member_changes_and_move_leader_on_phoenix_print_what_etcdctl_prints_on_etcd() {
    if !etcd_installed() {
        return;
    }
    let (expected, phoenixctl, etcdctl) = std::thread::scope(|threads| {
        let oracle = threads.spawn(|| run_membership(ETCD, ETCDCTL));
        let etcdctl = threads.spawn(|| run_membership(PHOENIX, ETCDCTL));
        let phoenixctl = run_membership(PHOENIX, PHOENIXCTL);
        (oracle.join().expect("the etcdctl run"), phoenixctl, etcdctl.join().expect("etcdctl against phoenix"))
    });
    let expected = without_differences(&expected);
    assert_same_sessions(&expected, &without_differences(&phoenixctl), "phoenixctl against phoenix");
    assert_same_sessions(&expected, &without_differences(&etcdctl), "etcdctl against phoenix");
}

/// `outcomes` with the steps where Phoenix answers otherwise than etcd (on purpose) blanked.
fn without_differences(outcomes: &Transcript) -> Transcript {
    let blank_if_different = |(args, outcome): &(&'static str, Outcome)| match phoenix_difference(args) {
        Some(_) => (*args, Outcome::default()),
        None => (*args, outcome.clone()),
    };
    outcomes.iter().map(blank_if_different).collect()
}

fn phoenix_difference(step: &str) -> Option<&'static str> {
    PHOENIX_DIFFERENCES.iter().find(|(args, _)| *args == step).map(|(_, why)| *why)
}

#[test]
fn endpoints_come_from_the_environment() {
    let Some(etcd) = Server::etcd() else { return };
    let run = |bin: &str| {
        let mut command = Command::new(bin);
        command.env_clear().env("ETCDCTL_ENDPOINTS", &etcd.endpoint).env("ETCDCTL_WRITE_OUT", "json");
        command.args(["member", "list"]).output().expect("run the client")
    };
    let (expected, actual) = (run(ETCDCTL), run(PHOENIXCTL));
    assert!(expected.status.success(), "etcdctl failed: {}", String::from_utf8_lossy(&expected.stderr));
    assert_eq!(String::from_utf8_lossy(&actual.stdout), String::from_utf8_lossy(&expected.stdout));
}

#[test]
fn a_flag_its_variable_gives_too_is_refused() {
    let Some(etcd) = Server::etcd() else { return };
    let run = |bin: &str| {
        let mut command = Command::new(bin);
        command.env_clear().env("ETCDCTL_HEX", "true");
        command.args(["--endpoints", &etcd.endpoint, "get", "foo", "--hex=false"]).output().expect("run the client")
    };
    let (expected, actual) = (run(ETCDCTL), run(PHOENIXCTL));
    let said = "conflicting environment variable \"ETCDCTL_HEX\" is shadowed by corresponding command-line flag \
                (either unset environment variable or disable flag)";
    for (client, output) in [("etcdctl", &expected), ("phoenixctl", &actual)] {
        assert_eq!(output.status.code(), Some(1), "{client}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(said), "{client}: {output:?}");
    }
}

fn assert_same_sessions(expected: &Transcript, actual: &Transcript, what: &str) {
    let mut differences = Vec::new();
    for ((name, expected), (_, actual)) in expected.iter().zip(actual) {
        if expected != actual {
            differences.push(format!("{name}:\n  etcdctl against etcd: {expected:?}\n  {what}: {actual:?}"));
        }
    }
    assert!(differences.is_empty(), "{what} differs from etcdctl:\n{}", differences.join("\n"));
}

fn assert_same(steps: &[Step], expected: &[Outcome], actual: &[Outcome], what: &str) {
    let mut differences = Vec::new();
    for ((step, expected), actual) in steps.iter().zip(expected).zip(actual) {
        if expected != actual {
            differences.push(format!("`{}`:\n  etcdctl against etcd: {expected:?}\n  {what}: {actual:?}", step.args));
        }
    }
    assert!(differences.is_empty(), "{what} differs from etcdctl against etcd:\n{}", differences.join("\n"));
}

/// A server process on free loopback ports, killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
    log: PathBuf,
    /// Holds the data dir (`data`) and the log.
    dir: TempDir,
}

impl Server {
    /// A fresh one-member etcd, or `None` (after saying so) when etcd is not installed.
    fn etcd() -> Option<Server> {
        etcd_installed().then(|| Server::start(ETCD))
    }

    fn phoenix() -> Server {
        Server::start(PHOENIX)
    }

    fn start(program: &str) -> Server {
        let dir = TempDir::new().expect("create a temp dir");
        let [client, peer] = free_ports();
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let child = Command::new(program)
            .env_clear()
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::from(log_file.try_clone().expect("clone the log handle")))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let mut server = Server { child, endpoint: format!("127.0.0.1:{client}"), log, dir };
        server.wait_until_ready();
        server
    }

    /// Polls a linearizable read (each probe waits up to 500 ms) until the server answers it.
    fn wait_until_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before serving; its log:\n{}", self.endpoint, self.log_text());
            }
            let probe = self.run(PHOENIXCTL, "endpoint health --command-timeout 500ms --dial-timeout 200ms", "");
            if probe.code == Some(0) {
                return;
            }
        }
        panic!("{} did not become ready within {READY_TIMEOUT:?}; its log:\n{}", self.endpoint, self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9, and waits until the process is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn run_scenario(&self, client: &str) -> Vec<Outcome> {
        self.run_steps(client, SCENARIO, &self.endpoint)
    }

    /// Runs `steps` one after the other, each reaching the server at `endpoint`.
    fn run_steps(&self, client: &str, steps: &[Step], endpoint: &str) -> Vec<Outcome> {
        let ids = self.ids();
        let mut leases = Leases::default();
        let mut granted = String::new();
        let mut outcomes = Vec::new();
        for step in steps {
            let outcome = self.run_at(client, endpoint, &step.args.replace("<lease>", &granted), step.stdin);
            if step.args.starts_with("lease grant") {
                granted = granted_lease(&outcome.stdout).unwrap_or_default();
            }
            let mut outcome = leases.mask(ids.mask(outcome));
            if step.args.contains("timetolive") {
                outcome.stdout = mask_remaining_ttl(&outcome.stdout);
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    fn run_sessions(&self, client: &str) -> Transcript {
        let ids = self.ids();
        let mut leases = Leases::default();
        let transcript = run_sessions(self, client);
        transcript.into_iter().map(|(name, outcome)| (name, leases.mask(ids.mask(outcome)))).collect()
    }

    /// Runs a client to its end; arguments are split at spaces, `_` is an empty one.
    fn run(&self, client: &str, args: &str, stdin: &str) -> Outcome {
        self.run_at(client, &self.endpoint, args, stdin)
    }

    fn run_at(&self, client: &str, endpoint: &str, args: &str, stdin: &str) -> Outcome {
        let args: Vec<String> = args.split(' ').map(|a| if a == "_" { "" } else { a }.to_string()).collect();
        let mut running = Running::start(client, endpoint, &args);
        if !stdin.is_empty() {
            running.write(stdin);
        }
        running.finish()
    }

    /// The server's cluster and member IDs, read from its member list.
    fn ids(&self) -> Ids {
        let listed = self.run(PHOENIXCTL, "member list -w json", "");
        let json: serde_json::Value = serde_json::from_str(&listed.stdout).expect("member list prints json");
        let id = |field: &str| json["header"][field].as_u64().unwrap_or_else(|| panic!("no {field} in {json}"));
        let peer = json["members"][0]["peerURLs"][0].as_str().unwrap_or_else(|| panic!("no peer URL in {json}"));
        Ids {
            cluster: id("cluster_id"),
            member: id("member_id"),
            client: self.endpoint.clone(),
            peer: peer.trim_start_matches("http://").to_string(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether etcd and etcdctl are there to be the oracle; says so when they are not.
fn etcd_installed() -> bool {
    let installed = Path::new(ETCD).exists() && Path::new(ETCDCTL).exists();
    if !installed {
        eprintln!("skipping: {ETCD} and {ETCDCTL} (Debian's etcd 3.4) are needed as the oracle");
    }
    installed
}

/// `N` distinct loopback ports no other test here gets.
fn free_ports<const N: usize>() -> [u16; N] {
    let ports = ports::free_ports(N);
    std::array::from_fn(|i| ports[i])
}

/// The lease a `lease grant` printed (simple, json or fields), in hex as etcdctl takes it.
fn granted_lease(stdout: &str) -> Option<String> {
    let simple = stdout.strip_prefix("lease ").and_then(|rest| rest.split(' ').next()).map(str::to_string);
    let decimal = ["\"ID\":", "\"ID\" : "].iter().find_map(|key| {
        let at = stdout.find(key)? + key.len();
        let digits: String = stdout[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok()
    });
    simple.or_else(|| decimal.map(|id| format!("{id:x}")))
}
