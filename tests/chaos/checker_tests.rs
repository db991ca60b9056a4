//! The checker is itself tested: handcrafted histories that are linearizable pass, and ones
//! with a stale read, a lost write, a reused revision, a phantom change or a compare-and-set
//! that ignored its compare are rejected with the rule they break; so are watchers that
//! received an event twice, missed one, or got a wrong prev_kv. Across a disaster reset, a write
//! the survivor never held may be lost, and one it held may not.

use std::collections::HashSet;

use super::checker::{check, check_across_reset, check_watch};
use super::disaster::Reset;
use super::history::{Call, Event, Op, Outcome, Seen, Watched};

fn op(client: usize, call: Call, invoked: u64, completed: Option<u64>, outcome: Outcome) -> Op {
    Op { client, call, invoked, completed, outcome }
}

fn put(key: &str, value: &str) -> Call {
    Call::Put { key: key.into(), value: value.into() }
}

fn get(key: &str) -> Call {
    Call::Get { key: key.into() }
}

fn got(revision: i64, value: Option<(&str, i64)>) -> Outcome {
    Outcome::Got { revision, kv: value.map(|(v, m)| Seen { value: v.into(), mod_revision: m }) }
}

fn event(revision: i64, key: &str, value: Option<&str>) -> Event {
    Event { revision, key: key.into(), value: value.map(String::from) }
}

/// Two puts of x, a delete, a read in between, an unanswered put that took effect and one that
/// did not, and a compare-and-set of each kind.
fn good() -> (Vec<Op>, Vec<Event>) {
    let ops = vec![
        op(0, put("x", "a"), 0, Some(10), Outcome::Put { revision: 2 }),
        op(1, get("x"), 11, Some(20), got(2, Some(("a", 2)))),
        op(2, put("x", "b"), 5, None, Outcome::Unknown),
        op(0, get("x"), 30, Some(40), got(3, Some(("b", 3)))),
        op(1, put("y", "lost in flight"), 30, None, Outcome::Unknown),
        op(2, Call::Cas { key: "x".into(), expect: 3, value: "c".into() }, 41, Some(50), cas(4, true, None)),
        op(0, Call::Cas { key: "x".into(), expect: 3, value: "d".into() }, 51, Some(60), cas(4, false, Some(("c", 4)))),
        op(1, Call::Delete { key: "x".into() }, 61, None, Outcome::Unknown),
        op(0, get("x"), 70, Some(80), got(5, None)),
        op(2, Call::Delete { key: "x".into() }, 81, Some(90), Outcome::Deleted { revision: 5, deleted: 0 }),
    ];
    let history =
        vec![event(2, "x", Some("a")), event(3, "x", Some("b")), event(4, "x", Some("c")), event(5, "x", None)];
    (ops, history)
}

fn cas(revision: i64, succeeded: bool, kv: Option<(&str, i64)>) -> Outcome {
    let kv = kv.map(|(v, m)| Seen { value: v.into(), mod_revision: m });
    Outcome::Cas { revision, succeeded, kv }
}

/// Checks that the history is rejected for breaking the rule `because` names.
fn assert_rejected(ops: &[Op], history: &[Event], because: &str) {
    match check(ops, history) {
        Ok(summary) => panic!("accepted: {summary:?}"),
        Err(violation) => assert!(violation.to_string().contains(because), "{violation}"),
    }
}

#[test]
fn a_linearizable_history_passes() {
    let (ops, history) = good();
    let summary = check(&ops, &history).unwrap();
    assert_eq!((summary.reads, summary.writes), (5, 4));
    assert_eq!((summary.unknown_applied, summary.unknown_dropped), (2, 1));
}

#[test]
fn a_stale_read_is_caught() {
    let (mut ops, history) = good();
    // After the read at revision 3 completed, a read returns the older revision 2.
    ops.push(op(3, get("x"), 45, Some(46), got(2, Some(("a", 2)))));
    assert_rejected(&ops, &history, "real time");
}

#[test]
fn a_lost_write_is_caught() {
    let (ops, mut history) = good();
    history.remove(0);
    assert_rejected(&ops, &history, "lost write");
}

#[test]
fn a_reused_revision_is_caught() {
    let (mut ops, history) = good();
    ops.push(op(3, put("y", "e"), 1, Some(9), Outcome::Put { revision: 2 }));
    assert_rejected(&ops, &history, "written at revision 2, which holds");
}

#[test]
fn a_write_that_landed_before_an_earlier_acknowledged_one_is_caught() {
    let (mut ops, _) = good();
    // Invoked after the put at revision 2 completed, yet written at revision 1.
    ops.push(op(3, put("z", "early"), 15, Some(16), Outcome::Put { revision: 1 }));
    let history = [vec![event(1, "z", Some("early"))], good().1].concat();
    assert_rejected(&ops, &history, "real time");
}

#[test]
fn a_change_nobody_asked_for_is_caught() {
    let (ops, mut history) = good();
    history.push(event(6, "x", Some("from nowhere")));
    assert_rejected(&ops, &history, "come from no request");
}

#[test]
fn a_read_of_a_value_the_history_never_held_is_caught() {
    let (mut ops, history) = good();
    ops[1] = op(1, get("x"), 11, Some(20), got(2, Some(("b", 2))));
    assert_rejected(&ops, &history, "but the key then held");
}

#[test]
fn a_compare_and_set_that_ignored_its_compare_is_caught() {
    let (mut ops, history) = good();
    ops[5] = op(2, Call::Cas { key: "x".into(), expect: 2, value: "c".into() }, 41, Some(50), cas(4, true, None));
    assert_rejected(&ops, &history, "compare-and-set wrote");
}

#[test]
fn a_value_written_twice_is_caught() {
    let (ops, mut history) = good();
    history.push(event(6, "y", Some("a")));
    assert_rejected(&ops, &history, "written twice");
}

/// What a correct watcher of `good()`'s history receives.
fn watched() -> Vec<Watched> {
    let prevs = [None, Some("a"), Some("b"), Some("c")];
    good().1.into_iter().zip(prevs).map(|(event, prev)| Watched { event, prev: prev.map(String::from) }).collect()
}

#[test]
fn a_watcher_that_received_the_history_passes() {
    let history = good().1;
    check_watch("w", &watched(), &history).unwrap();
    // One that stopped early, too: it reached revision 3 only.
    check_watch("w", &watched()[..2], &history).unwrap();
}

#[test]
fn a_duplicated_watch_event_is_caught() {
    let mut seen = watched();
    seen.insert(2, seen[1].clone());
    let why = check_watch("w", &seen, &good().1).unwrap_err().to_string();
    assert!(why.contains("a gap, a duplicate or a reordering"), "{why}");
}

#[test]
fn a_missed_watch_event_is_caught() {
    let mut seen = watched();
    seen.remove(1);
    let why = check_watch("w", &seen, &good().1).unwrap_err().to_string();
    assert!(why.contains("a gap, a duplicate or a reordering"), "{why}");
}

#[test]
fn a_wrong_prev_kv_is_caught() {
    let mut seen = watched();
    seen[2].prev = Some("a".into());
    let why = check_watch("w", &seen, &good().1).unwrap_err().to_string();
    assert!(why.contains("prev_kv"), "{why}");
}

#[test]
fn a_multi_key_txn_lands_whole_or_not_at_all() {
    let (mut ops, mut history) = good();
    let puts = vec![("p".to_string(), "t1/p".to_string()), ("q".to_string(), "t1/q".to_string())];
    ops.push(op(3, Call::MultiPut { puts: puts.clone() }, 91, None, Outcome::Unknown));
    history.extend([event(6, "p", Some("t1/p")), event(6, "q", Some("t1/q"))]);
    let summary = check(&ops, &history).unwrap();
    assert_eq!(summary.unknown_applied, 3);
    // Half of it is a violation.
    history.pop();
    assert_rejected(&ops, &history, "written at revision 6, which holds");
}

/// x=a is acknowledged at revision 2 and x=b at 3; the survivor applied revision 1 and its log
/// holds `held`; the reset comes at 100, and x=c is written after it.
fn across_reset(held: &[&str], history: Vec<Event>) -> (Vec<Op>, Vec<Event>, Reset) {
    let ops = vec![
        op(0, put("x", "a"), 0, Some(10), Outcome::Put { revision: 2 }),
        op(1, put("x", "b"), 20, Some(30), Outcome::Put { revision: 3 }),
        op(2, get("x"), 40, Some(50), got(3, Some(("b", 3)))),
        op(0, put("x", "c"), 200, Some(210), Outcome::Put { revision: history.len() as i64 + 1 }),
    ];
    let held = held.iter().map(|v| v.to_string()).collect::<HashSet<_>>();
    (ops, history, Reset { began: 100, held, applied_revision: 1, what: String::new() })
}

#[test]
fn a_write_the_reset_survivor_never_held_may_be_lost_with_the_reads_of_it() {
    let (ops, history, reset) = across_reset(&["a"], vec![event(2, "x", Some("a")), event(3, "x", Some("c"))]);
    let (_, excused) = check_across_reset(&ops, &history, &reset).unwrap();
    assert_eq!(excused, 2, "the lost put of b and the read of it");
}

#[test]
fn a_write_the_reset_survivor_held_must_survive_it() {
    // etcd's --force-new-cluster: the survivor held b past its commit index, and dropped it.
    let (ops, history, reset) = across_reset(&["a", "b"], vec![event(2, "x", Some("a")), event(3, "x", Some("c"))]);
    let violation = check_across_reset(&ops, &history, &reset).unwrap_err();
    assert!(violation.to_string().contains("which holds"), "{violation}");
}

#[test]
fn an_acknowledged_delete_past_what_the_survivor_applied_may_be_there_after_the_reset() {
    // The survivor's log held the delete of x at revision 4 without having applied it; the
    // reset applied it, so the history after the reset holds it.
    let ops = vec![
        op(0, put("x", "a"), 0, Some(10), Outcome::Put { revision: 2 }),
        op(1, put("y", "b"), 20, Some(30), Outcome::Put { revision: 3 }),
        op(2, Call::Delete { key: "x".into() }, 40, Some(50), Outcome::Deleted { revision: 4, deleted: 1 }),
        op(0, get("x"), 200, Some(210), got(4, None)),
    ];
    let history = vec![event(2, "x", Some("a")), event(3, "y", Some("b")), event(4, "x", None)];
    let held = HashSet::from(["a".to_string(), "b".to_string()]);
    let reset = Reset { began: 100, held, applied_revision: 2, what: String::new() };
    let (_, excused) = check_across_reset(&ops, &history, &reset).unwrap();
    assert_eq!(excused, 1, "the delete, which the checker cannot tell the survivor held");
}
