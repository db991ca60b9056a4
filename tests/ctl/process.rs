//! Client processes for the etcdctl comparison: output collected while they run, every wait
//! bounded, killed when dropped.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any one wait on a client may take before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a running client's output is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What one command printed and how it ended (`None`: killed by a signal).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

/// Outcomes under the names of what produced them, in order: each session's, or each step's of
/// a scenario.
pub type Transcript = Vec<(&'static str, Outcome)>;

/// A pipe's bytes so far, filled by a reader thread.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Collected {
    fn read_from(&self, mut pipe: impl Read + Send + 'static) -> JoinHandle<()> {
        let collected = self.clone();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                collected.0.lock().expect("output lock").extend_from_slice(&buffer[..n]);
            }
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("output lock")).into_owned()
    }
}

/// A client process: its stdin stays open until closed or the process is finished.
pub struct Running {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Collected,
    stderr: Collected,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts `client` with a clean environment against `endpoint`.
    pub fn start(client: &str, endpoint: &str, args: &[String]) -> Running {
        let mut child = Command::new(client)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .args(["--endpoints", endpoint])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {client}: {e}"));
        let (stdout, stderr) = (Collected::default(), Collected::default());
        let readers = vec![
            stdout.read_from(child.stdout.take().expect("piped stdout")),
            stderr.read_from(child.stderr.take().expect("piped stderr")),
        ];
        let what = format!("`{} {}`", client.rsplit('/').next().unwrap_or(client), args.join(" "));
        Running { what, stdin: child.stdin.take(), child, stdout, stderr, readers }
    }

    /// Writes to the client's stdin; a client that already exited shows that in its outcome.
    pub fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{}: stdin is closed", self.what));
        let written = stdin.write_all(text.as_bytes()).and_then(|()| stdin.flush());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{}: cannot write its stdin: {e}", self.what);
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Polls stdout until `done` holds; fails the test after [`CLIENT_TIMEOUT`].
    pub fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let started = Instant::now();
        while !done(&self.stdout()) {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The last output may still be in the pipe.
                self.join_readers();
                if done(&self.stdout()) {
                    return;
                }
                panic!("{} exited ({status}) before {what}:\n{}", self.what, self.report());
            }
            assert!(started.elapsed() < CLIENT_TIMEOUT, "{}: no {what}:\n{}", self.what, self.report());
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `signal` (`INT`, `TERM`) to the client.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "{}: cannot send SIG{signal}", self.what);
    }

    /// Closes stdin and waits for the client to exit, failing the test after [`CLIENT_TIMEOUT`].
    pub fn finish(mut self) -> Outcome {
        self.close_stdin();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the client") {
                break status;
            }
            assert!(started.elapsed() < CLIENT_TIMEOUT, "{} did not exit:\n{}", self.what, self.report());
            std::thread::sleep(POLL_INTERVAL);
        };
        self.join_readers();
        Outcome { stdout: self.stdout.text(), stderr: self.stderr.text(), code: status.code() }
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    fn report(&self) -> String {
        format!("stdout: {:?}\nstderr: {:?}", self.stdout.text(), self.stderr.text())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
