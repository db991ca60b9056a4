//! phoenixctl against etcdctl: the same command lines, run by etcdctl against one real etcd and by
//! phoenixctl against a second real etcd and against Phoenix, must print the same stdout, stderr
//! and exit codes once the values that legitimately differ between servers are masked (cluster
//! and member IDs, raft terms and indexes, versions, db sizes, hashes, times).
//!
//! The test needs Debian's etcd and etcdctl 3.4 (/usr/bin/etcd, /usr/bin/etcdctl) and skips,
//! saying so, when they are missing. Servers are real processes on free ports, awaited by polling,
//! and killed when dropped.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

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
/// Arguments are split at spaces; `_` stands for an empty argument.
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
];

#[test]
fn phoenixctl_prints_what_etcdctl_prints() {
    let Some(oracle) = Server::etcd() else { return };
    let etcd = Server::etcd().expect("etcd is installed");
    let expected = oracle.run_scenario(ETCDCTL);
    let actual = etcd.run_scenario(PHOENIXCTL);
    assert_same(&expected, &actual, "phoenixctl against etcd");
}

/// Steps where Phoenix answers differently from etcd 3.4 on purpose or by a known server bug.
const PHOENIX_DIFFERENCES: &[(&str, &str)] =
    &[("alarm list -w json", "Phoenix fills the Alarm header as etcd 3.5 does; etcd 3.4 sends none")];

#[test]
fn phoenixctl_against_phoenix_prints_what_etcdctl_prints_against_etcd() {
    let Some(oracle) = Server::etcd() else { return };
    let phoenix = Server::phoenix();
    let mut expected = oracle.run_scenario(ETCDCTL);
    let mut actual = phoenix.run_scenario(PHOENIXCTL);
    for (i, step) in SCENARIO.iter().enumerate() {
        if let Some((_, why)) = PHOENIX_DIFFERENCES.iter().find(|(args, _)| *args == step.args) {
            eprintln!("not compared against phoenix: `{}`: {why}", step.args);
            (expected[i], actual[i]) = (Outcome::default(), Outcome::default());
        }
    }
    assert_same(&expected, &actual, "phoenixctl against phoenix");
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

/// What one command printed.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn assert_same(expected: &[Outcome], actual: &[Outcome], what: &str) {
    let mut differences = Vec::new();
    for ((step, expected), actual) in SCENARIO.iter().zip(expected).zip(actual) {
        if expected != actual {
            differences.push(format!("`{}`:\n  etcdctl:    {expected:?}\n  phoenixctl: {actual:?}", step.args));
        }
    }
    assert!(differences.is_empty(), "{what} differs from etcdctl:\n{}", differences.join("\n"));
}

/// A server process on free loopback ports, killed when dropped.
struct Server {
    child: Child,
    endpoint: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// A fresh one-member etcd, or `None` (after saying so) when etcd is not installed.
    fn etcd() -> Option<Server> {
        if !Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists() {
            eprintln!("skipping: {ETCD} and {ETCDCTL} (Debian's etcd 3.4) are needed as the oracle");
            return None;
        }
        Some(Server::start(ETCD))
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
        let mut server = Server { child, endpoint: format!("127.0.0.1:{client}"), log, _dir: dir };
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

    fn run_scenario(&self, client: &str) -> Vec<Outcome> {
        let ids = self.ids();
        SCENARIO.iter().map(|step| ids.mask(self.run(client, step.args, step.stdin))).collect()
    }

    fn run(&self, client: &str, args: &str, stdin: &str) -> Outcome {
        let args = args.split(' ').map(|a| if a == "_" { "" } else { a });
        let mut child = Command::new(client)
            .env_clear()
            .args(["--endpoints", &self.endpoint])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {client}: {e}"));
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(stdin.as_bytes()).expect("write the client's stdin");
        drop(input);
        let output = child.wait_with_output().expect("wait for the client");
        Outcome {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            code: output.status.code(),
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct free loopback ports (both held until both are known).
fn free_ports() -> [u16; 2] {
    let listeners = [0, 1].map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"));
    listeners.map(|l| l.local_addr().expect("local address").port())
}

/// Masks what legitimately differs between two servers.
struct Ids {
    cluster: u64,
    member: u64,
    client: String,
    peer: String,
}

/// JSON fields whose numbers depend on the server, not on the commands.
const SERVER_NUMBERS: &[&str] =
    &["raft_term", "raftTerm", "raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse", "hash"];

/// JSON fields whose strings depend on the server or the clock.
const SERVER_STRINGS: &[&str] = &["version", "took"];

/// `fields` lines whose values depend on the server or the clock.
const SERVER_FIELDS: &[&str] = &["RaftTerm", "RaftIndex", "RaftAppliedIndex", "DBSize", "Version", "Hash", "Took"];

impl Ids {
    fn mask(&self, outcome: Outcome) -> Outcome {
        let stderr = mask_stderr(&outcome.stderr).replace(&self.client, "<client>");
        Outcome { stdout: self.mask_text(&outcome.stdout), stderr, ..outcome }
    }

    fn mask_text(&self, text: &str) -> String {
        let mut text = text.replace(&self.client, "<client>").replace(&self.peer, "<peer>");
        for (id, name) in [(self.cluster, "<cluster>"), (self.member, "<member>")] {
            text = text.replace(&id.to_string(), name).replace(&format!("{id:x}"), name);
        }
        text.lines().map(mask_line).map(|line| line + "\n").collect()
    }
}

fn mask_line(line: &str) -> String {
    let mut line = line.to_string();
    for key in SERVER_NUMBERS {
        line = mask_json_value(&line, &format!("\"{key}\":"), |c| c.is_ascii_digit());
    }
    for key in SERVER_STRINGS {
        line = mask_json_value(&line, &format!("\"{key}\":\""), |c| c != '"');
    }
    if line.starts_with(['+', '|']) {
        return squeeze_table_line(&line);
    }
    if SERVER_FIELDS.iter().any(|field| line.starts_with(&format!("\"{field}\" :"))) {
        return line.split(" :").next().unwrap_or_default().to_string() + " : <server>";
    }
    mask_simple_listing(&line)
}

/// Replaces the characters matching `part` after each `key` with `<server>`.
fn mask_json_value(line: &str, key: &str, part: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(key) {
        let value_start = at + key.len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        let value_len = rest.find(|c| !part(c)).unwrap_or(rest.len());
        out.push_str("<server>");
        rest = &rest[value_len..];
    }
    out + rest
}

/// A table line with runs of spaces and dashes squeezed, since masked IDs change column widths.
fn squeeze_table_line(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if !(matches!(c, ' ' | '-') && out.ends_with(c)) {
            out.push(c);
        }
    }
    out
}

/// `endpoint status` rows: version, db size, raft term, raft index and raft applied index.
fn mask_simple_listing(line: &str) -> String {
    let cells: Vec<&str> = line.split(", ").collect();
    if cells.len() != 10 || cells[0] != "<client>" {
        return line.to_string();
    }
    let masked = cells.iter().enumerate().map(|(i, c)| if [2, 3, 6, 7, 8].contains(&i) { "<server>" } else { c });
    masked.collect::<Vec<_>>().join(", ")
}

/// stderr without etcdctl's client log lines and with health-check times masked.
fn mask_stderr(stderr: &str) -> String {
    let lines = stderr.lines().filter(|line| !line.starts_with("{\"level\""));
    lines.map(|line| line.split(": took = ").next().unwrap_or_default().to_string() + "\n").collect()
}
