//! Commands that run until something else happens, compared with etcdctl's: an interactive watch
//! with progress notifications, live events and a command per event; `lease keep-alive` until
//! its lease is revoked; `lock` and `elect` with contention, SIGINT and SIGTERM. Each step waits
//! by polling a client's output or the store, never by sleeping for a fixed time.

use std::time::Instant;

use super::process::{Outcome, Running, Transcript, CLIENT_TIMEOUT};
use super::Server;

/// Runs every session against `server` with `client` (etcdctl or phoenixctl).
pub fn run_sessions(server: &Server, client: &str) -> Transcript {
    let mut transcript = Transcript::new();
    interactive_watch(server, client, &mut transcript);
    keep_alive(server, client, &mut transcript);
    lock(server, client, &mut transcript);
    elect(server, client, &mut transcript);
    transcript
}

fn interactive_watch(server: &Server, client: &str, transcript: &mut Transcript) {
    let mut watch = server.spawn(client, &["watch", "-i"]);
    watch.write("watch s/ --prefix --prev-kv\nprogress\n");
    watch.wait_for("a progress notification", |out| progress_notifications(out) == 1);
    for args in [&["put", "s/a", "1"][..], &["put", "s/a", "2"], &["del", "s/a"], &["put", "s/end", "x"]] {
        server.must(client, args);
    }
    watch.wait_for("the last event", |out| out.ends_with("s/end\nx\n"));
    let command = r#"watch t/exec -- sh -c "echo exec $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE""#;
    watch.write(&format!("{command}\nbogus\nprogress\n"));
    watch.wait_for("a notification for each watch", |out| progress_notifications(out) == 3);
    server.must(client, &["put", "t/exec", "v"]);
    watch.wait_for("the command's output", |out| out.ends_with("exec \"PUT\" \"t/exec\" \"v\"\n"));
    transcript.push(("watch -i, ended by the end of stdin", watch.finish()));
}

fn progress_notifications(out: &str) -> usize {
    out.lines().filter(|line| line.starts_with("progress notify: ")).count()
}

fn keep_alive(server: &Server, client: &str, transcript: &mut Transcript) {
    let granted = server.must(client, &["lease", "grant", "3"]);
    let id = granted.split(' ').nth(1).unwrap_or_else(|| panic!("no lease in {granted:?}")).to_string();
    let mut keeper = server.spawn(client, &["lease", "keep-alive", &id]);
    keeper.wait_for("a renewal", |out| out.contains(" keepalived with TTL(3)\n"));
    server.must(client, &["lease", "revoke", &id]);
    // How many renewals come before the revoke is a matter of timing.
    let outcome = keeper.finish();
    let stdout = squeeze_repeated_lines(&outcome.stdout);
    transcript.push(("lease keep-alive, until revoked", Outcome { stdout, ..outcome }));
}

fn squeeze_repeated_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.dedup();
    lines.iter().map(|line| format!("{line}\n")).collect()
}

fn lock(server: &Server, client: &str, transcript: &mut Transcript) {
    let held = |out: &str| out.starts_with("l1/") && out.ends_with("\n\n");
    let mut holder = server.spawn(client, &["lock", "l1"]);
    holder.wait_for("the lock", held);
    let mut waiter = server.spawn(client, &["lock", "l1", "--ttl", "5"]);
    wait_for_keys(server, client, "l1/", 2);
    let quitter = server.spawn(client, &["lock", "l1"]);
    wait_for_keys(server, client, "l1/", 3);
    quitter.signal("INT");
    transcript.push(("lock, interrupted while waiting", quitter.finish()));
    assert_eq!(waiter.stdout(), "", "a second lock holder while the first holds it");
    holder.signal("INT");
    transcript.push(("lock, released on SIGINT", holder.finish()));
    waiter.wait_for("the lock its holder released", held);
    waiter.signal("TERM");
    transcript.push(("lock, taken after its holder left, released on SIGTERM", waiter.finish()));
    transcript.push(("the lock's keys afterwards", server.run(client, "get l1/ --prefix", "")));
    let script = "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV; exit 3";
    let failing = server.spawn(client, &["lock", "l1", "--", "sh", "-c", script]);
    transcript.push(("lock running a command that fails", failing.finish()));
}

fn elect(server: &Server, client: &str, transcript: &mut Transcript) {
    let mut observer = server.spawn(client, &["elect", "-l", "e1"]);
    let mut first = server.spawn(client, &["elect", "e1", "p1"]);
    first.wait_for("leadership", |out| out.ends_with("p1\n"));
    observer.wait_for("the first leader", |out| out.ends_with("p1\n"));
    let mut second = server.spawn(client, &["elect", "e1", "p2"]);
    wait_for_keys(server, client, "e1/", 2);
    assert_eq!(second.stdout(), "", "a second leader while the first leads");
    first.signal("TERM");
    transcript.push(("elect, resigned on SIGTERM", first.finish()));
    second.wait_for("leadership after the first resigned", |out| out.ends_with("p2\n"));
    observer.wait_for("the second leader", |out| out.ends_with("p2\n"));
    second.signal("INT");
    transcript.push(("elect, resigned on SIGINT", second.finish()));
    observer.signal("INT");
    transcript.push(("elect -l, stopped by SIGINT", observer.finish()));
    transcript.push(("the election's keys afterwards", server.run(client, "get e1/ --prefix", "")));
}

/// Polls the store until `count` keys start with `prefix`.
fn wait_for_keys(server: &Server, client: &str, prefix: &str, count: usize) {
    let started = Instant::now();
    loop {
        let listed = server.must(client, &["get", prefix, "--prefix", "--keys-only"]);
        if listed.lines().filter(|line| line.starts_with(prefix)).count() == count {
            return;
        }
        assert!(started.elapsed() < CLIENT_TIMEOUT, "never {count} keys under {prefix}: {listed:?}");
    }
}

impl Server {
    /// Starts a client that keeps running; arguments are passed as they are.
    pub fn spawn(&self, client: &str, args: &[&str]) -> Running {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        Running::start(client, &self.endpoint, &args)
    }

    /// Runs a client that must succeed, and returns its stdout.
    pub fn must(&self, client: &str, args: &[&str]) -> String {
        let outcome = self.spawn(client, args).finish();
        assert_eq!(outcome.code, Some(0), "`{}` failed: {outcome:?}", args.join(" "));
        outcome.stdout
    }
}
