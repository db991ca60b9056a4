//! What a workload cost the members, read from /proc: CPU seconds (user + system) and peak
//! resident memory, whose high-water mark is reset before each workload (`clear_refs` 5); and
//! the leader's disk flushes, from its Prometheus metrics.

use std::time::Duration;

use super::support::http_get;

/// One member's CPU time so far and peak resident memory since the last reset.
#[derive(Clone, Copy, Default)]
pub struct ProcessStats {
    pub cpu: Duration,
    pub peak_rss_bytes: u64,
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = std::process::Command::new("getconf").arg("CLK_TCK").output();
        let text = output.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        text.parse().unwrap_or(100)
    })
}

pub fn read(pid: u32) -> ProcessStats {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start with the state; user and
    // system time are the 12th and 13th of them.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
    let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 1000 / ticks_per_second());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    ProcessStats { cpu, peak_rss_bytes: peak_kb * 1024 }
}

/// Starts a new peak resident memory measurement for `pid`.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// How many times the member at `endpoint` has flushed its Raft log to disk: etcd's WAL fsync
/// count, or Phoenix's log flush count.
pub async fn log_flushes(endpoint: &str) -> Option<u64> {
    let (_, body) = http_get(endpoint, "/metrics").await.ok()?;
    let names = ["etcd_disk_wal_fsync_duration_seconds_count", "phoenix_log_flushes_total"];
    body.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        names.contains(&name).then(|| value.trim().parse::<f64>().ok().map(|v| v as u64))?
    })
}
