//! The real-process cluster harness shared by the integration tests.
//!
//! Each member is the built `phoenix` binary started as a child process with etcd's flags, in
//! its own temporary data dir, on free loopback ports. Readiness is awaited by polling the
//! member's Status, never by sleeping. Children are killed when the cluster is dropped, and a
//! failing test prints the tail of every member's log.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod network;
mod ports;

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use network::Network;
pub use ports::free_ports;
use tempfile::TempDir;

/// The server under test.
const PHOENIX: &str = env!("CARGO_BIN_EXE_phoenix");

/// How long a cluster may take to become ready or to elect a new leader.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// etcd's default timings. openraft 0.9 times every AppendEntries out after one heartbeat
/// interval, so on a loaded 2-core machine it must cover a follower's fsync: shorter is flaky.
pub const TEST_TIMINGS: &[&str] = &["--heartbeat-interval", "100", "--election-timeout", "1000"];

pub struct Member {
    pub name: String,
    /// The server binary: phoenix, or etcd for the benchmark's comparison.
    program: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Its name, data dir and URLs: what stays when it starts afresh.
    own_args: Vec<String>,
    /// Every other flag it starts with.
    flags: Vec<String>,
    /// Environment variables the process starts with, beside the test's own.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// The process ID while the member runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().expect("wait for member") {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log).expect("open member log");
        let child = Command::new(&self.program)
            .args(self.own_args.iter().chain(&self.flags))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program));
        self.child = Some(child);
    }

    /// Adds a flag for the next start.
    pub fn add_flag(&mut self, flag: &str) {
        self.flags.push(flag.to_string());
    }

    /// Sets an environment variable for the next start.
    pub fn add_env(&mut self, name: &str, value: &str) {
        self.env.push((name.to_string(), value.to_string()));
    }

    /// Starts afresh as a new member on the same host: kills the process, cleans the data dir
    /// (`phoenixctl clean --purge`) and starts with `flags`, such as `--join`.
    pub fn start_afresh(&mut self, flags: &[&str]) {
        self.kill();
        let cleaned = Command::new(env!("CARGO_BIN_EXE_phoenixctl"))
            .args(["clean", "--purge", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .expect("run phoenixctl clean");
        assert!(cleaned.status.success(), "clean {}: {}", self.name, String::from_utf8_lossy(&cleaned.stderr));
        self.flags = flags.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// Starts the process again with the same flags, without waiting for it.
    pub fn spawn_again(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGTERM, and waits for the member to stop by itself (as an operator's restart does).
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.as_ref()?.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "could not signal {}", self.name);
        self.wait_exit(READY_TIMEOUT)
    }

    /// SIGSTOP: the kernel still takes connections on the member's ports, but it answers
    /// nothing, as a hung process would.
    pub fn freeze(&mut self) {
        let pid = self.child.as_ref().expect("the member runs").id().to_string();
        let sent = Command::new("kill").args(["-STOP", &pid]).status().expect("run kill");
        assert!(sent.success(), "could not stop {}", self.name);
    }

    /// kill -9: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    /// The server binary its members run.
    program: String,
    dir: TempDir,
    /// Environment variables every member starts with.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `n` members with `extra` flags each and waits until they serve with a leader.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_env(n, extra, &[]).await
    }

    /// Like `start`, with environment variables for every member (test-only fault switches).
    pub async fn start_with_env(n: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let cluster = Cluster::spawn_with_env(PHOENIX, n, "test-cluster", extra, env);
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster.wait_names_published().await;
        cluster
    }

    /// Starts `members` members, each with the flags `extra` and `env`, whose peer traffic goes
    /// through the proxies of the `Network` returned, so that a test can cut links; waits until
    /// they serve.
    pub async fn start_behind_proxies(members: usize, extra: &[&str], env: &[(&str, &str)]) -> (Cluster, Network) {
        let ports = free_ports(2 * members);
        let peer_ports: Vec<u16> = (0..members).map(|i| ports[2 * i + 1]).collect();
        let network = Network::new(&peer_ports).await;
        let names: Vec<String> = (1..=members).map(|i| format!("m{i}")).collect();
        let initial: Vec<String> =
            names.iter().zip(&peer_ports).map(|(name, port)| format!("{name}=http://127.0.0.1:{port}")).collect();
        let initial = initial.join(",");
        let mut flags = vec!["--initial-cluster", initial.as_str(), "--initial-cluster-token", "proxied"];
        flags.extend(extra);
        let mut cluster = Cluster::empty();
        for (i, name) in names.into_iter().enumerate() {
            let mut member_env: Vec<(String, String)> =
                env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            member_env.push(network.routes(i));
            cluster.spawn_member_with_env(name, ports[2 * i], peer_ports[i], &flags, member_env);
        }
        for i in 0..members {
            cluster.wait_ready(i).await;
        }
        (cluster, network)
    }

    /// Waits until every member lists every member's name. A member serves before its name is
    /// published (that goes through Raft, once there is a leader), and tests read member lists.
    pub async fn wait_names_published(&self) {
        let n = self.members.len();
        poll_until(READY_TIMEOUT, "every member's name published", || async {
            for member in &self.members {
                let mut client = Client::connect([member.endpoint()], None).await.ok()?;
                let list = client.member_list().await.ok()?;
                if list.members().iter().filter(|m| !m.name().is_empty()).count() != n {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    /// Like `start`, with another server binary that takes etcd's flags (etcd itself).
    pub async fn start_program(program: &str, n: usize, extra: &[&str]) -> Cluster {
        let cluster = Cluster::spawn_with_env(program, n, "test-cluster", extra, &[]);
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    /// A cluster with no member yet, in its own temporary dir (members come from spawn_member,
    /// for instance on data dirs restored into `data_dir_of`).
    pub fn empty() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        Cluster { members: Vec::new(), program: PHOENIX.to_string(), dir, env: Vec::new() }
    }

    /// Where spawn_member keeps the data of the member called `name`.
    pub fn data_dir_of(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.phoenix"))
    }

    /// Starts the processes without waiting for them.
    pub fn spawn(n: usize, token: &str, extra: &[&str]) -> Cluster {
        Cluster::spawn_with_env(PHOENIX, n, token, extra, &[])
    }

    fn spawn_with_env(program: &str, n: usize, token: &str, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(2 * n);
        let names: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}=http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut cluster = Cluster { members: Vec::new(), program: program.to_string(), dir, env };
        for (i, name) in names.into_iter().enumerate() {
            let mut flags: Vec<&str> = vec!["--initial-cluster", &initial_cluster, "--initial-cluster-token", token];
            flags.extend(extra);
            cluster.spawn_member(name, ports[2 * i], ports[2 * i + 1], &flags);
        }
        cluster
    }

    /// Starts one more member process with etcd's per-member flags plus `flags`; returns its index.
    pub fn spawn_member(&mut self, name: String, client_port: u16, peer_port: u16, flags: &[&str]) -> usize {
        let env = self.env.clone();
        self.spawn_member_with_env(name, client_port, peer_port, flags, env)
    }

    /// Like `spawn_member`, with this member's own environment (instead of the cluster's).
    pub fn spawn_member_with_env(
        &mut self,
        name: String,
        client_port: u16,
        peer_port: u16,
        flags: &[&str],
        env: Vec<(String, String)>,
    ) -> usize {
        let data_dir = self.data_dir_of(&name);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let own_args: Vec<String> = ["--name", &name, "--data-dir", &data_dir.to_string_lossy()]
            .into_iter()
            .chain(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .chain(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .map(str::to_string)
            .collect();
        let flags = flags.iter().map(|s| s.to_string()).collect();
        let log = self.dir.path().join(format!("{name}.log"));
        let mut member = Member {
            name,
            program: self.program.clone(),
            client_port,
            peer_port,
            data_dir,
            log,
            own_args,
            flags,
            env,
            child: None,
        };
        member.spawn();
        self.members.push(member);
        self.members.len() - 1
    }

    /// The `name=peer-url` list of the members at `indexes`, for --initial-cluster.
    pub fn initial_cluster(&self, indexes: &[usize]) -> String {
        indexes
            .iter()
            .map(|&i| format!("{}={}", self.members[i].name, self.members[i].peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// A client talking to member `i` only.
    pub async fn client(&self, i: usize) -> Client {
        Client::connect([self.members[i].endpoint()], None).await.expect("connect client")
    }

    /// Waits until member `i` answers Status and knows a leader.
    pub async fn wait_ready(&self, i: usize) {
        let endpoint = self.members[i].endpoint();
        poll_until(READY_TIMEOUT, &format!("{} ready", self.members[i].name), || async {
            let mut client = Client::connect([endpoint.clone()], None).await.ok()?;
            let status = client.status().await.ok()?;
            (status.leader() != 0).then_some(())
        })
        .await;
    }

    /// The index of the member every running member agrees is the leader.
    pub async fn leader(&self) -> usize {
        poll_until(READY_TIMEOUT, "an agreed leader", || async {
            let mut leaders = Vec::new();
            for member in self.members.iter().filter(|m| m.is_running()) {
                let mut client = Client::connect([member.endpoint()], None).await.ok()?;
                leaders.push(client.status().await.ok()?.leader());
            }
            let first = *leaders.first()?;
            if first == 0 || leaders.iter().any(|l| *l != first) {
                return None;
            }
            for (i, member) in self.members.iter().enumerate().filter(|(_, m)| m.is_running()) {
                let mut client = Client::connect([member.endpoint()], None).await.ok()?;
                if client.status().await.ok()?.header()?.member_id() == first {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Stops member `i` with SIGTERM (it hands leadership over if it leads) and starts it again.
    pub async fn restart_gracefully(&mut self, i: usize) {
        assert_eq!(self.members[i].terminate(), Some(0), "{} did not stop cleanly", self.members[i].name);
        self.restart(i).await;
    }

    /// Starts member `i` again with the same flags and data dir, and waits until it serves.
    pub async fn restart(&mut self, i: usize) {
        self.members[i].spawn();
        self.wait_ready(i).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
        if std::thread::panicking() {
            for member in &self.members {
                let log = member.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- last lines of {} ----", member.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Polls `check` until it yields a value, panicking with `what` after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    loop {
        interval.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
    }
}

/// Runs `phoenix` with `args` to completion, for flag and data dir checks.
pub fn run_phoenix(args: &[&str], cwd: &Path) -> std::process::Output {
    run_phoenix_with_env(args, cwd, &[])
}

/// Like `run_phoenix`, with environment variables (test-only fault switches).
pub fn run_phoenix_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start phoenix");
    // A misconfigured server exits at once; one that starts would run forever, so bound it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait phoenix").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    child.wait_with_output().expect("phoenix output")
}

/// A plain HTTP/1.1 GET of `path` on a member's client URL (etcd's `/health`, `/version`):
/// the status code and the body.
pub async fn http_get(endpoint: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let bad = || std::io::Error::other(format!("not an HTTP response: {response:?}"));
    let code = response.split(' ').nth(1).and_then(|code| code.parse().ok()).ok_or_else(bad)?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).ok_or_else(bad)?;
    Ok((code, body))
}

/// xorshift64*: small, seedable, good enough to vary a schedule; the randomized tests print
/// their seed so a schedule can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
