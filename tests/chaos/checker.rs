//! The linearizability checker for the chaos runs' KV histories.
//!
//! etcd's revisions make the search of Wing & Gong (or porcupine) unnecessary: every write
//! reports the revision it created and every read the revision it read at, and the history read
//! back at the end orders all writes. Those revisions give each operation its point in a single
//! candidate order, so checking linearizability is checking that this one witness is valid:
//!
//! 1. the history is well formed: one change per revision, increasing, every put's value
//!    written once;
//! 2. every acknowledged write is in the history at the revision it was told, every change in
//!    the history comes from a request that was sent (an unanswered request may have taken
//!    effect or not: the history says which), and a compare-and-set's compare held where it is;
//! 3. every read returned the key's state at the revision it reports;
//! 4. the points respect real time: an operation that started after another completed has a
//!    later point (not earlier, for a read): no read sees a revision older than one a completed
//!    operation already saw, and no write lands before one that completed before it started.
//!
//! The witness is forced: revisions are part of what clients were told, so any order that
//! explains their answers is this one. The check is O(n log n), and a violation is explained by
//! the one or two operations that break a rule.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::disaster::Reset;
use super::history::{Call, Event, Op, Outcome, Seen, Watched};

/// A broken rule, with the operations that break it.
#[derive(Debug)]
pub struct Violation {
    pub rule: String,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.rule)?;
        for op in &self.ops {
            writeln!(f, "  {op:?}")?;
        }
        Ok(())
    }
}

/// What a passing history held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub reads: usize,
    pub writes: usize,
    /// Unanswered writes the history shows took effect, and ones it shows did not.
    pub unknown_applied: usize,
    pub unknown_dropped: usize,
}

fn violation(rule: String, ops: &[&Op]) -> Violation {
    Violation { rule, ops: ops.iter().map(|op| (*op).clone()).collect() }
}

/// The store's history by key: each key's changes in revision order.
struct Timeline {
    by_key: HashMap<String, Vec<(i64, Option<String>)>>,
}

impl Timeline {
    /// The key's value and mod revision at `revision`.
    fn at(&self, key: &str, revision: i64) -> Option<Seen> {
        let changes = self.by_key.get(key)?;
        let last = changes.partition_point(|(rev, _)| *rev <= revision).checked_sub(1)?;
        let (rev, value) = &changes[last];
        value.as_ref().map(|value| Seen { value: value.clone(), mod_revision: *rev })
    }

    fn mod_revision(&self, key: &str, revision: i64) -> i64 {
        self.at(key, revision).map_or(0, |seen| seen.mod_revision)
    }
}

/// An operation's place in the witness order.
#[derive(Clone, Copy)]
struct Point {
    op: usize,
    revision: i64,
    write: bool,
}

pub fn check(ops: &[Op], history: &[Event]) -> Result<Summary, Violation> {
    let timeline = well_formed(history)?;
    let mut event_at: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
    for event in history {
        event_at.entry(event.revision).or_default().push(event);
    }
    let written_at: HashMap<&str, i64> =
        history.iter().filter_map(|e| Some((e.value.as_deref()?, e.revision))).collect();
    // Which op made the change at each revision.
    let mut explained: HashMap<i64, usize> = HashMap::new();
    let mut points = Vec::new();
    let mut summary = Summary::default();
    let mut unknown_deletes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let point = |revision, write| Some(Point { op: i, revision, write });
        let key = op.call.key();
        let found = match (&op.call, &op.outcome) {
            (_, Outcome::Unknown) => {
                if matches!(op.call, Call::Delete { .. }) {
                    unknown_deletes.entry(key).or_default().push(i);
                    None
                } else {
                    match op.call.value().and_then(|v| written_at.get(v)) {
                        Some(&revision) => {
                            // All of it, at one revision: a txn never lands in part.
                            written_as_told(&event_at, op, revision)?;
                            summary.unknown_applied += 1;
                            point(revision, true)
                        }
                        None => {
                            summary.unknown_dropped += usize::from(op.call.value().is_some());
                            None
                        }
                    }
                }
            }
            (Call::Get { .. }, Outcome::Got { revision, kv }) => {
                read_matches(&timeline, op, *revision, kv)?;
                point(*revision, false)
            }
            (Call::Put { .. } | Call::MultiPut { .. }, Outcome::Put { revision }) => {
                written_as_told(&event_at, op, *revision)?;
                point(*revision, true)
            }
            (Call::Delete { .. }, Outcome::Deleted { revision, deleted: 0 }) => {
                read_matches(&timeline, op, *revision, &None)?;
                point(*revision, false)
            }
            (Call::Delete { .. }, Outcome::Deleted { revision, deleted: 1 }) => {
                written_as_told(&event_at, op, *revision)?;
                point(*revision, true)
            }
            (Call::Cas { .. }, Outcome::Cas { revision, succeeded: true, .. }) => {
                written_as_told(&event_at, op, *revision)?;
                point(*revision, true)
            }
            (Call::Cas { expect, .. }, Outcome::Cas { revision, succeeded: false, kv }) => {
                read_matches(&timeline, op, *revision, kv)?;
                if timeline.mod_revision(key, *revision) == *expect {
                    let rule = format!("a compare-and-set failed at revision {revision} though its compare held there");
                    return Err(violation(rule, &[op]));
                }
                point(*revision, false)
            }
            _ => return Err(violation("an answer that does not fit its request".into(), &[op])),
        };
        if let Some(p) = found {
            if p.write {
                summary.writes += 1;
                if let Some(other) = explained.insert(p.revision, i) {
                    let rule = format!("two requests claim the change at revision {}", p.revision);
                    return Err(violation(rule, &[&ops[other], op]));
                }
                compare_held(&timeline, op, p.revision)?;
            } else {
                summary.reads += 1;
            }
            points.push(p);
        }
    }
    explain_the_rest(history, ops, &mut explained, &mut unknown_deletes, &mut points, &mut summary)?;
    real_time_order(ops, &points)?;
    Ok(summary)
}

/// The rule across a disaster reset, weaker than linearizability but exact: every write
/// acknowledged before the reset that the chosen survivor held is there after it.
///
/// The survivor held the committed history up to the revision it had applied, and up to the
/// last acknowledged write its log holds (logs that share an entry share everything before it).
/// Before the reset, what lies past that revision may be lost: acknowledged writes the survivor
/// never received, and reads of them. Those are excused (and counted): such a write counts as
/// unanswered, so the history may hold it or not, and such a read is dropped; everything else,
/// before and after the reset, must be linearizable against the history after it. An
/// acknowledged delete past that revision is excused even if the survivor held it, since a
/// delete carries no value to find it by.
pub fn check_across_reset(ops: &[Op], history: &[Event], reset: &Reset) -> Result<(Summary, usize), Violation> {
    let before = |op: &Op| op.invoked < reset.began;
    let held_up_to = ops
        .iter()
        .filter(|op| before(op))
        .filter_map(|op| Some((op.acknowledged_write()?, op.outcome.revision()?)))
        .filter(|(value, _)| reset.held.contains(*value))
        .fold(reset.applied_revision, |up_to, (_, revision)| up_to.max(revision));
    let excused = |op: &Op| before(op) && op.outcome.revision().is_some_and(|revision| revision > held_up_to);
    let mut kept = Vec::new();
    let mut excused_count = 0;
    for op in ops {
        if !excused(op) {
            kept.push(op.clone());
            continue;
        }
        excused_count += 1;
        if op.writes() {
            kept.push(Op { completed: None, outcome: Outcome::Unknown, ..op.clone() });
        }
    }
    let summary = check(&kept, history)?;
    Ok((summary, excused_count))
}

/// One change per revision, revisions increasing, every put's value written once.
fn well_formed(history: &[Event]) -> Result<Timeline, Violation> {
    let mut by_key: HashMap<String, Vec<(i64, Option<String>)>> = HashMap::new();
    let mut values = HashSet::new();
    let mut changed = HashSet::new();
    for pair in history.windows(2) {
        if pair[1].revision < pair[0].revision {
            return Err(violation(format!("the history reorders {:?}", pair[1]), &[]));
        }
    }
    for event in history {
        if !changed.insert((event.revision, event.key.as_str())) {
            return Err(violation(format!("the history changes a key twice at once: {event:?}"), &[]));
        }
    }
    for event in history {
        if let Some(value) = &event.value {
            if !values.insert(value.as_str()) {
                return Err(violation(
                    format!("value {value} was written twice (again at revision {})", event.revision),
                    &[],
                ));
            }
        }
        by_key.entry(event.key.clone()).or_default().push((event.revision, event.value.clone()));
    }
    Ok(Timeline { by_key })
}

/// The history holds, at `revision`, exactly this op's changes (its puts' values, or a deletion).
fn written_as_told(event_at: &BTreeMap<i64, Vec<&Event>>, op: &Op, revision: i64) -> Result<(), Violation> {
    let mut expected: Vec<Event> = op
        .call
        .changes()
        .into_iter()
        .map(|(key, value)| Event { revision, key: key.to_string(), value: value.map(String::from) })
        .collect();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    let mut held: Vec<&Event> = event_at.get(&revision).map(|events| events.to_vec()).unwrap_or_default();
    held.sort_by(|a, b| a.key.cmp(&b.key));
    match event_at.get(&revision) {
        Some(_) if held.iter().copied().eq(expected.iter()) => Ok(()),
        Some(events) => {
            Err(violation(format!("written at revision {revision}, which holds {events:?} instead"), &[op]))
        }
        None => {
            Err(violation(format!("acknowledged at revision {revision}, which the history lacks: a lost write"), &[op]))
        }
    }
}

fn read_matches(timeline: &Timeline, op: &Op, revision: i64, seen: &Option<Seen>) -> Result<(), Violation> {
    let truth = timeline.at(op.call.key(), revision);
    if truth != *seen {
        let rule = format!("read {seen:?} at revision {revision}, but the key then held {truth:?}");
        return Err(violation(rule, &[op]));
    }
    Ok(())
}

/// A compare-and-set that wrote did so where its compare held.
fn compare_held(timeline: &Timeline, op: &Op, revision: i64) -> Result<(), Violation> {
    if let Call::Cas { key, expect, .. } = &op.call {
        let before = timeline.mod_revision(key, revision - 1);
        if before != *expect {
            let rule = format!("a compare-and-set wrote at revision {revision} though the key's mod revision was {before}, not {expect}");
            return Err(violation(rule, &[op]));
        }
    }
    Ok(())
}

/// Every change no answered request claims must come from an unanswered one: a put by its
/// value, a deletion from an unanswered delete of that key (the earliest sent first, which
/// constrains it least).
fn explain_the_rest(
    history: &[Event],
    ops: &[Op],
    explained: &mut HashMap<i64, usize>,
    unknown_deletes: &mut BTreeMap<&str, Vec<usize>>,
    points: &mut Vec<Point>,
    summary: &mut Summary,
) -> Result<(), Violation> {
    for candidates in unknown_deletes.values_mut() {
        candidates.sort_by_key(|&i| std::cmp::Reverse(ops[i].invoked));
    }
    let mut unexplained: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
    for event in history.iter().filter(|e| !explained.contains_key(&e.revision)) {
        unexplained.entry(event.revision).or_default().push(event);
    }
    for events in unexplained.into_values() {
        let event = events[0];
        let culprit = match (events.len(), &event.value) {
            (1, None) => unknown_deletes.get_mut(event.key.as_str()).and_then(Vec::pop),
            _ => None,
        };
        let Some(op) = culprit else {
            return Err(violation(format!("{events:?} come from no request a client sent"), &[]));
        };
        summary.unknown_applied += 1;
        summary.writes += 1;
        explained.insert(event.revision, op);
        points.push(Point { op, revision: event.revision, write: true });
    }
    Ok(())
}

/// An operation invoked after another completed has a later point (the same one, for a read).
fn real_time_order(ops: &[Op], points: &[Point]) -> Result<(), Violation> {
    let mut by_invocation: Vec<&Point> = points.iter().collect();
    by_invocation.sort_by_key(|p| ops[p.op].invoked);
    let mut by_completion: Vec<(u64, &Point)> = points.iter().filter_map(|p| Some((ops[p.op].completed?, p))).collect();
    by_completion.sort_by_key(|(completed, _)| *completed);
    let mut done = by_completion.iter().peekable();
    let mut latest: Option<&Point> = None;
    for p in by_invocation {
        while let Some((_, q)) = done.next_if(|(completed, _)| *completed < ops[p.op].invoked) {
            if latest.is_none_or(|l| q.revision > l.revision) {
                latest = Some(q);
            }
        }
        let Some(before) = latest else { continue };
        let too_early = if p.write { p.revision <= before.revision } else { p.revision < before.revision };
        if too_early {
            let rule = format!(
                "real time: an operation at revision {} started after one at revision {} completed",
                p.revision, before.revision
            );
            return Err(violation(rule, &[&ops[before.op], &ops[p.op]]));
        }
    }
    Ok(())
}

/// What a watcher from revision 1 received is exactly the history: every change once, in
/// order, none missing up to the last revision it reached, each with the right prev_kv.
pub fn check_watch(watcher: &str, seen: &[Watched], history: &[Event]) -> Result<(), Violation> {
    let timeline = well_formed(history)?;
    let rule = |why: String| Err(violation(format!("watcher {watcher}: {why}"), &[]));
    let reached = seen.last().map_or(0, |w| w.event.revision);
    let expected = history.iter().take_while(|e| e.revision <= reached);
    let mut received = seen.iter();
    for event in expected {
        let Some(watched) = received.next() else { return rule(format!("missed {event:?}")) };
        if watched.event != *event {
            return rule(format!("expected {event:?}, received {watched:?} (a gap, a duplicate or a reordering)"));
        }
        let before = timeline.at(&event.key, event.revision - 1).map(|seen| seen.value);
        if watched.prev != before {
            return rule(format!("prev_kv of {watched:?} should hold {before:?}"));
        }
    }
    match received.next() {
        Some(extra) => rule(format!("received {extra:?}, which is not in the history here")),
        None => Ok(()),
    }
}
