//! The results: per workload and system, rounds merged (operations and time summed, latencies
//! pooled, CPU summed per member, peak memory the highest); printed as a table with the ratios
//! Phoenix/etcd, and written as JSON for comparison across commits.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::stats::ProcessStats;
use super::workloads::Sample;
use super::{System, Workload};

/// One run of one workload on one system.
pub struct Measured {
    pub sample: Sample,
    pub members: Vec<ProcessStats>,
    /// The leader's log flushes during the run, where it reports them.
    pub leader_flushes: Option<u64>,
    /// Whether every operation is a client write (so writes per flush means something).
    pub counts_writes: bool,
}

struct Entry {
    workload: Workload,
    system: System,
    measured: Measured,
}

pub struct Report {
    machine: String,
    entries: Vec<Entry>,
}

#[derive(Serialize)]
struct Row {
    workload: String,
    system: String,
    ops: u64,
    errors: u64,
    seconds: f64,
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_seconds: Vec<f64>,
    peak_rss_mib: Vec<f64>,
    leader_flushes_per_second: Option<f64>,
    writes_per_flush: Option<f64>,
}

#[derive(Serialize)]
struct Ratio {
    workload: String,
    /// Phoenix's throughput over etcd's (above 1: Phoenix does more).
    throughput: f64,
    /// Phoenix's p50 latency over etcd's (below 1: Phoenix answers sooner).
    p50: f64,
    /// Phoenix's highest member peak memory over etcd's.
    peak_rss: f64,
}

#[derive(Serialize)]
struct Json<'a> {
    machine: &'a str,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Report {
    pub fn new(machine: String) -> Report {
        Report { machine, entries: Vec::new() }
    }

    /// Adds a run, merged with earlier rounds of the same workload on the same system.
    pub fn add(&mut self, workload: Workload, system: System, measured: Measured) {
        let earlier = self.entries.iter_mut().find(|e| e.workload == workload && e.system == system);
        let Some(earlier) = earlier else {
            self.entries.push(Entry { workload, system, measured });
            return;
        };
        let merged = &mut earlier.measured;
        merged.sample.merge(measured.sample);
        merged.leader_flushes = merged.leader_flushes.zip(measured.leader_flushes).map(|(a, b)| a + b);
        for (i, member) in measured.members.into_iter().enumerate() {
            match merged.members.get_mut(i) {
                Some(m) => {
                    m.cpu += member.cpu;
                    m.peak_rss_bytes = m.peak_rss_bytes.max(member.peak_rss_bytes);
                }
                None => merged.members.push(member),
            }
        }
    }

    fn rows(&self) -> Vec<Row> {
        self.entries.iter().map(row).collect()
    }

    fn ratios(&self, rows: &[Row]) -> Vec<Ratio> {
        let find = |workload: &str, system: System| {
            rows.iter().find(|r| r.workload == workload && r.system == format!("{system:?}").to_lowercase())
        };
        let mut ratios = Vec::new();
        for row in rows.iter().filter(|r| r.system == "phoenix") {
            let Some(etcd) = find(&row.workload, System::Etcd) else { continue };
            let peak = |r: &Row| r.peak_rss_mib.iter().copied().fold(0.0, f64::max);
            ratios.push(Ratio {
                workload: row.workload.clone(),
                throughput: row.throughput / etcd.throughput,
                p50: row.p50_ms / etcd.p50_ms,
                peak_rss: peak(row) / peak(etcd),
            });
        }
        ratios
    }

    pub fn print(&self) {
        let rows = self.rows();
        println!("\nmachine: {}", self.machine);
        println!(
            "{:<22} {:<8} {:>10} {:>8} {:>8} {:>6} {:>20} {:>22} {:>9} {:>12}",
            "workload",
            "system",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "CPU s per member",
            "peak RSS MiB/member",
            "flushes/s",
            "writes/flush"
        );
        for r in &rows {
            let list = |values: &[f64]| values.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" ");
            let optional = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            println!(
                "{:<22} {:<8} {:>10.1} {:>8.2} {:>8.2} {:>6} {:>20} {:>22} {:>9} {:>12}",
                r.workload,
                r.system,
                r.throughput,
                r.p50_ms,
                r.p99_ms,
                r.errors,
                list(&r.cpu_seconds),
                list(&r.peak_rss_mib),
                optional(r.leader_flushes_per_second),
                optional(r.writes_per_flush)
            );
        }
        let ratios = self.ratios(&rows);
        if !ratios.is_empty() {
            println!("\n{:<22} {:>18} {:>14} {:>16}", "Phoenix/etcd", "throughput", "p50 latency", "peak RSS");
            for r in &ratios {
                println!("{:<22} {:>17.2}x {:>13.2}x {:>15.2}x", r.workload, r.throughput, r.p50, r.peak_rss);
            }
        }
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let rows = self.rows();
        let ratios = self.ratios(&rows);
        let json = Json { machine: &self.machine, rows, ratios };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?)
    }
}

fn row(entry: &Entry) -> Row {
    let m = &entry.measured;
    let mut latencies = m.sample.latencies.clone();
    latencies.sort_unstable();
    let seconds = m.sample.elapsed.as_secs_f64();
    let flushes_per_second = m.leader_flushes.map(|f| f as f64 / seconds);
    let writes_per_flush =
        m.leader_flushes.filter(|f| *f > 0 && m.counts_writes).map(|f| m.sample.ops as f64 / f as f64);
    Row {
        workload: entry.workload.name(),
        system: format!("{:?}", entry.system).to_lowercase(),
        ops: m.sample.ops,
        errors: m.sample.errors,
        seconds,
        throughput: m.sample.ops as f64 / seconds,
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        cpu_seconds: m.members.iter().map(|s| s.cpu.as_secs_f64()).collect(),
        peak_rss_mib: m.members.iter().map(|s| mib(s.peak_rss_bytes)).collect(),
        leader_flushes_per_second: flushes_per_second,
        writes_per_flush,
    }
}
