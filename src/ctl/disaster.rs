//! `disaster plan` and `disaster`, Phoenix's own commands (etcdctl has none) for a lost quorum.
//!
//! `disaster plan` asks every survivor it is given (running ones by `--endpoints`, stopped ones
//! by `--data-dir`), and every other member their reports name, where it stands; prints one line
//! per member and recommends the most advanced by Raft's rule (highest last log term, then
//! index), with the commands to run next. It refuses to recommend anything while a member still
//! has a leader, or runs but answers with an error instead of its report.
//!
//! `disaster --data-dir DIR` resets a stopped survivor offline into a one-member cluster that
//! keeps all of its data ([`crate::recovery`]), after asking the other members of its old
//! configuration: it refuses when one that answers holds a more advanced log, still has a
//! leader, gives no report, or runs at all, and when the data dir was reset already, unless
//! `--force` is given.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::cli::{DisasterArgs, PlanArgs};
use super::client::endpoint_url;
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use super::printer::write_error;
use super::{Ctx, Io};
use crate::cluster::DataDir;
use crate::config::{parse_urls, revision_bump, url_string};
use crate::pb::SurvivorReport;
use crate::recovery::survivor::{ask, ask_member, inspect, log_position, most_advanced, possibly_lost, NoReport};

/// The endpoint phoenixctl talks to when none is given; `disaster plan` skips it when data dirs
/// are given instead.
const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";

/// One member as the plan saw it.
struct Seen {
    source: String,
    report: SurvivorReport,
    running: bool,
}

pub async fn plan(ctx: &Ctx, args: PlanArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let timeout = ctx.flags.dial_timeout.max(Duration::from_secs(1));
    let mut seen: Vec<Seen> = Vec::new();
    let mut silent: Vec<NoReport> = Vec::new();
    for dir in &args.data_dirs {
        match DataDir::open_stopped(dir).and_then(|data| crate::highwater::check(&data).and_then(|()| inspect(&data))) {
            Ok(report) => seen.push(Seen { source: dir.display().to_string(), report, running: false }),
            Err(e) => silent.push(NoReport::Failed(e.to_string())),
        }
    }
    let only_default = ctx.endpoints() == [DEFAULT_ENDPOINT];
    if args.data_dirs.is_empty() || !only_default {
        for endpoint in ctx.endpoints() {
            let url = endpoint_url(endpoint)?;
            match ask(&url, timeout).await {
                Ok(report) => add(&mut seen, Seen { source: url, report, running: true }),
                Err(no_report) => silent.push(no_report),
            }
        }
    }
    ask_named_members(&mut seen, &mut silent, timeout).await;
    print_table(io.out, &seen).map_err(write_error)?;
    for no_report in &silent {
        let said = match no_report {
            NoReport::Unreachable(_) => "no answer",
            NoReport::Failed(_) => "no report",
        };
        writeln!(io.out, "{said}: {no_report}").map_err(write_error)?;
    }
    recommend(io.out, &seen, &silent)
}

/// Adds `new` unless the member was seen already (asked on another URL).
fn add(seen: &mut Vec<Seen>, new: Seen) {
    let same = |s: &Seen| s.report.member_id == new.report.member_id && s.report.cluster_id == new.report.cluster_id;
    if !seen.iter().any(same) {
        seen.push(new);
    }
}

/// Asks, on their peer URLs, the members the reports name that were not asked yet.
async fn ask_named_members(seen: &mut Vec<Seen>, silent: &mut Vec<NoReport>, timeout: Duration) {
    let mut asked: BTreeSet<u64> = seen.iter().map(|s| s.report.member_id).collect();
    let named: Vec<_> = seen.iter().flat_map(|s| s.report.members.clone()).collect();
    for member in named {
        if !asked.insert(member.id) {
            continue;
        }
        let who = format!("member {} ({:x})", member.name, member.id);
        match ask_member(&member, timeout).await {
            Ok((url, report)) => add(seen, Seen { source: url, report, running: true }),
            Err(NoReport::Failed(why)) => silent.push(NoReport::Failed(format!("{who} at {why}"))),
            Err(NoReport::Unreachable(urls)) => silent.push(NoReport::Unreachable(format!("{who} at {urls}"))),
        }
    }
}

fn print_table(out: &mut dyn Write, seen: &[Seen]) -> std::io::Result<()> {
    let header =
        ["NAME", "MEMBER ID", "SOURCE", "LAST LOG TERM/INDEX", "COMMITTED", "LEADER COMMIT", "REVISION", "STATE"];
    let rows: Vec<[String; 8]> = seen
        .iter()
        .map(|s| {
            let r = &s.report;
            [
                r.name.clone(),
                format!("{:x}", r.member_id),
                s.source.clone(),
                format!("{}/{}", r.last_log_term, r.last_log_index),
                r.commit_index.to_string(),
                r.leader_commit_index.to_string(),
                r.revision.to_string(),
                state(s),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|row| row[i].len()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn state(seen: &Seen) -> String {
    let r = &seen.report;
    let mut state = vec![match (seen.running, r.has_leader) {
        (false, _) => "stopped",
        (true, true) => "running, has a leader",
        (true, false) => "running, no leader",
    }];
    if !r.fenced.is_empty() {
        state.push("fenced off");
    }
    if !r.reset.is_empty() {
        state.push("reset before");
    }
    state.join(", ")
}

/// Names the survivor to reset and what to run, or says why there is none.
fn recommend(out: &mut dyn Write, seen: &[Seen], silent: &[NoReport]) -> Result<(), CtlError> {
    // First: a leader in another cluster (a mistyped endpoint) says nothing about this one.
    let clusters: BTreeSet<u64> = seen.iter().map(|s| s.report.cluster_id).collect();
    if clusters.len() > 1 {
        return Err(failed("the survivors belong to different clusters; plan for one cluster at a time"));
    }
    if let Some(led) = seen.iter().find(|s| s.report.has_leader) {
        return Err(failed(format!(
            "quorum is not lost: member {} ({:x}) has a leader; no reset is needed",
            led.report.name, led.report.member_id
        )));
    }
    // The reset itself would refuse, for the same reason.
    if let Some(failure) = silent.iter().find(|s| matches!(s, NoReport::Failed(_))) {
        return Err(failed(format!(
            "{failure}: it may hold a more advanced log or have a leader, so no survivor is recommended; \
             stop it and plan again, giving its data dir with --data-dir"
        )));
    }
    let candidates: Vec<&Seen> = seen.iter().filter(|s| s.report.fenced.is_empty()).collect();
    let reports: Vec<SurvivorReport> = candidates.iter().map(|s| s.report.clone()).collect();
    let Some(best) = most_advanced(&reports).map(|i| candidates[i]) else {
        return Err(failed("no survivor answered that may be reset"));
    };
    let unexamined = silent.iter().filter(|s| matches!(s, NoReport::Unreachable(_))).count();
    write_recommendation(out, best, seen, unexamined).map_err(write_error)
}

fn write_recommendation(out: &mut dyn Write, best: &Seen, seen: &[Seen], unexamined: usize) -> std::io::Result<()> {
    let r = &best.report;
    let (term, index) = log_position(r);
    writeln!(out)?;
    writeln!(
        out,
        "Recommended survivor: {} ({:x}), the most advanced log (term {term}, index {index}).",
        r.name, r.member_id
    )?;
    let equals = seen.iter().filter(|s| s.report.member_id != r.member_id && log_position(&s.report) == (term, index));
    for other in equals {
        writeln!(out, "{} ({:x}) holds the same log; either will do.", other.report.name, other.report.member_id)?;
    }
    match possibly_lost(r) {
        0 => writeln!(
            out,
            "No leader announced a commit past its log: no acknowledged write is known lost (members that \
             never answered may have committed more without it)."
        )?,
        n => writeln!(
            out,
            "A leader announced commits up to index {}, past its log: up to {n} acknowledged entries may be lost.",
            r.leader_commit_index.max(r.commit_index)
        )?,
    }
    if unexamined > 0 {
        writeln!(
            out,
            "{unexamined} member(s) gave no answer (above): this holds only if none of them is more advanced. Plan \
             again with their data dirs (--data-dir, once for each), or compare their LAST LOG TERM/INDEX by hand."
        )?;
    }
    writeln!(out, "Next:")?;
    // Every old member still running must stop: the reset refuses otherwise.
    let running: Vec<&str> = seen.iter().filter(|s| s.running).map(|s| s.report.name.as_str()).collect();
    let stop = match (running.is_empty(), best.running) {
        (true, _) => String::new(),
        (false, true) => {
            format!("stop {} (still running; {}'s data dir is {}), then ", running.join(", "), r.name, r.data_dir)
        }
        (false, false) => format!("stop {} (still running), then ", running.join(", ")),
    };
    if r.reset.is_empty() {
        writeln!(
            out,
            "  1. {stop}run `phoenixctl disaster --data-dir {}` on its host (or start it once with --force-new-cluster);",
            r.data_dir
        )?;
    } else {
        // A reset data dir ignores --force-new-cluster, and `disaster` asks for --force: this
        // is a new quorum loss, after the cluster grew back from the last reset.
        writeln!(
            out,
            "  1. {stop}run `phoenixctl disaster --force --data-dir {}` on its host (it was reset before: --force \
             resets it again, without the members added since);",
            r.data_dir
        )?;
    }
    writeln!(out, "  2. start {} with its usual flags: it serves alone, with all of its data;", r.name)?;
    writeln!(
        out,
        "  3. every other old member is refused from then on: on each host run `phoenixctl clean --data-dir <its data dir>` \
         and add it back (phoenix --join <{}'s client URL>, or etcdctl member add and --initial-cluster-state existing).",
        r.name
    )
}

pub async fn reset(args: DisasterArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let Some(dir) = args.data_dir.as_deref() else {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            "disaster needs --data-dir DIR, the data dir of a stopped survivor (`phoenixctl disaster plan` says which)",
        ));
    };
    let bump = revision_bump(args.bump_revision, args.mark_compacted).map_err(bad_args)?;
    // Held open (sled locks it) from the examination to the reset: no member starts on it between.
    let data = DataDir::open_stopped(dir).map_err(failed)?;
    let examination = crate::recovery::examine_survivor(&data, args.force).await.map_err(failed)?;
    let (report, objection) = (examination.report, examination.objection);
    if !report.reset.is_empty() && !args.force {
        return Err(failed(format!(
            "data dir {} was reset already ({}); start it as it is, or, if its cluster has lost its quorum again \
             since, pass --force to reset it again (members added since would be removed)",
            dir.display(),
            report.reset
        )));
    }
    if let Some(objection) = objection.filter(|_| !args.force) {
        return Err(failed(format!("{objection}; pass --force to reset this one anyway")));
    }
    let peer_urls = peer_urls(&args, &report, dir)?;
    let name = args.name.clone().unwrap_or_else(|| report.name.clone());
    // As etcd's --initial-cluster would read it back: name=url,...
    if name.is_empty() || name.contains(['=', ',']) {
        return Err(bad_args(format!("--name {name:?}: a member name is not empty and has no '=' or ','")));
    }
    let backup = crate::recovery::back_up(&data).map_err(failed)?;
    let basis = crate::recovery::ResetBasis { backup, not_asked: examination.not_asked };
    let loss = crate::recovery::reset(&data, &name, peer_urls.clone(), basis, bump).map_err(failed)?;
    drop(data);
    let out = &mut io.out;
    let done = format!(
        "Reset member {name} ({:x}) of cluster {:x} into a one-member cluster at {}.",
        report.member_id,
        report.cluster_id,
        peer_urls.join(",")
    );
    let urls = peer_urls.join(",");
    let renamed_or_moved = args.name.is_some() || !args.initial_advertise_peer_urls.is_empty();
    let flags = if renamed_or_moved {
        format!(
            "--name {name} --initial-advertise-peer-urls {urls} --listen-peer-urls {urls} --initial-cluster {name}={urls} \
             (and its usual client flags)"
        )
    } else {
        "its usual flags".to_string()
    };
    let next = format!(
        "Next: start it with {flags}; it serves alone, with all of its data. Then on every other old \
         member's host run `phoenixctl clean --data-dir <its data dir>` and add it back (phoenix --join <{name}'s \
         client URL>, or etcdctl member add and --initial-cluster-state existing)."
    );
    writeln!(out, "{done}\n{}", loss.summary()).map_err(write_error)?;
    if !loss.not_asked.is_empty() {
        writeln!(
            out,
            "Not asked: {}. If one of them holds a more advanced log (compare them with `phoenixctl disaster plan \
             --data-dir` on their disks), the writes only it holds are lost: before starting this member, put {} \
             back in place of {} to undo the reset.",
            loss.not_asked.join(", "),
            loss.backup.display(),
            dir.display()
        )
        .map_err(write_error)?;
    }
    writeln!(out, "{next}").map_err(write_error)
}

/// The peer URLs the reset member will have: given, or the ones it had.
fn peer_urls(args: &DisasterArgs, report: &SurvivorReport, dir: &Path) -> Result<Vec<String>, CtlError> {
    if !args.initial_advertise_peer_urls.is_empty() {
        let list = args.initial_advertise_peer_urls.join(",");
        let urls = parse_urls("--initial-advertise-peer-urls", &list).map_err(bad_args)?;
        return Ok(urls.iter().map(url_string).collect());
    }
    match report.members.iter().find(|m| m.id == report.member_id) {
        Some(member) if !member.peer_ur_ls.is_empty() => Ok(member.peer_ur_ls.clone()),
        _ => Err(CtlError::new(
            EXIT_BAD_ARGS,
            format!(
                "data dir {} does not say at which peer URLs its member was; pass --initial-advertise-peer-urls",
                dir.display()
            ),
        )),
    }
}

fn failed(error: impl ToString) -> CtlError {
    CtlError::new(EXIT_ERROR, error.to_string())
}

fn bad_args(error: impl ToString) -> CtlError {
    CtlError::new(EXIT_BAD_ARGS, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(reset: &str) -> Seen {
        let report = SurvivorReport {
            name: "a".into(),
            member_id: 1,
            last_log_term: 2,
            last_log_index: 10,
            data_dir: "/data/a".into(),
            reset: reset.into(),
            ..SurvivorReport::default()
        };
        Seen { source: "/data/a".into(), report, running: false }
    }

    fn recommendation(best: &Seen, unexamined: usize) -> String {
        let mut out = Vec::new();
        write_recommendation(&mut out, best, std::slice::from_ref(best), unexamined).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_survivor_reset_before_is_reset_again_with_force() {
        let first = recommendation(&seen(""), 0);
        assert!(first.contains("run `phoenixctl disaster --data-dir /data/a`"), "{first}");
        let again = recommendation(&seen("kept 10 log entries"), 0);
        assert!(again.contains("run `phoenixctl disaster --force --data-dir /data/a`"), "{again}");
    }

    #[test]
    fn members_that_gave_no_answer_qualify_the_recommendation() {
        assert!(!recommendation(&seen(""), 0).contains("gave no answer"));
        let text = recommendation(&seen(""), 2);
        assert!(text.contains("2 member(s) gave no answer (above): this holds only if none of them is more advanced"));
    }
}
