//! The Watch API on real one- and three-member clusters, through the etcd-client crate: where a
//! watch starts, which keys and events it sees, prev_kv, txn atomicity, watch IDs, cancel,
//! compaction, progress (requested and periodic), fragments, followers, and `hasleader`.
//!
//! Every check waits for what it expects with a timeout; "nothing else arrived" is shown by a
//! later write the watch must see next, never by waiting for silence.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, DeleteOptions, Event, EventType, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};
use support::{poll_until, Cluster, READY_TIMEOUT, TEST_TIMINGS};
use tonic::Code;

/// How long one expected watch response may take.
const WAIT: Duration = Duration::from_secs(10);

/// The next response on `stream`; panics on a timeout, an error or the end of the stream.
async fn next(stream: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(resp))) => resp,
        Ok(Ok(None)) => panic!("the watch stream ended"),
        Ok(Err(e)) => panic!("the watch stream failed: {e}"),
        Err(_) => panic!("no watch response within {WAIT:?}"),
    }
}

/// Opens a stream with one watch and returns it with the watch's ID and created revision.
async fn open(client: &mut Client, key: &str, options: WatchOptions) -> (WatchStream, i64, i64) {
    let mut stream = client.watch(key, Some(options)).await.expect("open a watch stream");
    let (id, revision) = created(&mut stream).await;
    (stream, id, revision)
}

/// Expects the next response to confirm a new watch; returns its ID and header revision.
async fn created(stream: &mut WatchStream) -> (i64, i64) {
    let resp = next(stream).await;
    assert!(resp.created() && !resp.canceled(), "expected a created response, got {resp:?}");
    assert!(resp.events().is_empty());
    (resp.watch_id(), revision(&resp))
}

fn revision(resp: &WatchResponse) -> i64 {
    resp.header().expect("a header").revision()
}

/// An event as one line: `PUT key=value @mod (create/version)` or `DELETE key @mod`, with
/// `prev=value@mod` when it carries a previous value.
fn line(event: &Event) -> String {
    let kv = event.kv().expect("an event carries its key");
    let key = String::from_utf8_lossy(kv.key());
    let mut out = match event.event_type() {
        EventType::Put => format!(
            "PUT {key}={} @{} ({}/{})",
            String::from_utf8_lossy(kv.value()),
            kv.mod_revision(),
            kv.create_revision(),
            kv.version()
        ),
        EventType::Delete => format!("DELETE {key} @{}", kv.mod_revision()),
    };
    if let Some(prev) = event.prev_kv() {
        out.push_str(&format!(" prev={}@{}", String::from_utf8_lossy(prev.value()), prev.mod_revision()));
    }
    out
}

/// Event responses for watch `id` until one holds an event for `last_key`; every response on
/// the way must be an event response of that watch.
async fn responses_until(stream: &mut WatchStream, id: i64, last_key: &str) -> Vec<WatchResponse> {
    let mut out = Vec::new();
    loop {
        let resp = next(stream).await;
        assert_eq!(resp.watch_id(), id, "unexpected response {resp:?}");
        assert!(!resp.created() && !resp.canceled() && !resp.events().is_empty(), "not an event response: {resp:?}");
        let done = resp.events().iter().any(|e| e.kv().is_some_and(|kv| kv.key() == last_key.as_bytes()));
        out.push(resp);
        if done {
            return out;
        }
    }
}

/// The events of watch `id`, as lines, up to and including the first on `last_key`.
async fn lines_until(stream: &mut WatchStream, id: i64, last_key: &str) -> Vec<String> {
    let responses = responses_until(stream, id, last_key).await;
    responses.iter().flat_map(|r| r.events().iter().map(line)).collect()
}

fn status_of(err: etcd_client::Error) -> (Code, String) {
    match err {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn single(extra: &[&str]) -> (Cluster, Client) {
    let mut flags = TEST_TIMINGS.to_vec();
    flags.extend_from_slice(extra);
    let cluster = Cluster::start(1, &flags).await;
    let client = cluster.client(0).await;
    (cluster, client)
}

#[tokio::test]
async fn start_revision_zero_delivers_from_the_next_revision() {
    let (_cluster, mut c) = single(&[]).await;
    c.put("k", "before", None).await.unwrap(); // revision 2
    let (mut stream, _id, at) = open(&mut c, "k", WatchOptions::new()).await;
    assert_eq!(at, 2, "created carries the current revision");
    c.put("k", "after", None).await.unwrap();
    let resp = next(&mut stream).await;
    assert_eq!(revision(&resp), 3);
    assert_eq!(resp.events().iter().map(line).collect::<Vec<_>>(), ["PUT k=after @3 (2/2)"]);
}

#[tokio::test]
async fn an_old_start_revision_replays_history_then_continues_live_without_gap_or_duplicate() {
    let (_cluster, c) = single(&[]).await;
    const WRITES: i64 = 300;
    // A writer runs while the watch is created in the middle of its run, so the replay from the
    // store hands over to live events while new revisions keep arriving.
    let written = Arc::new(AtomicI64::new(0));
    let writer = {
        let (mut c, written) = (c.clone(), written.clone());
        tokio::spawn(async move {
            for i in 0..WRITES {
                c.put(format!("h/{i:03}"), format!("v{i}"), None).await.unwrap();
                written.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    poll_until(READY_TIMEOUT, "a third of the writes", || {
        let n = written.load(Ordering::SeqCst);
        async move { (n >= WRITES / 3).then_some(()) }
    })
    .await;
    let mut c2 = c.clone();
    let (mut stream, id, _) = open(&mut c2, "h/", WatchOptions::new().with_prefix().with_start_revision(2)).await;
    let events = lines_until(&mut stream, id, &format!("h/{:03}", WRITES - 1)).await;
    writer.await.unwrap();
    let expected: Vec<String> = (0..WRITES).map(|i| format!("PUT h/{i:03}=v{i} @{} ({0}/1)", i + 2)).collect();
    assert_eq!(events, expected);

    // Live events keep coming after the handover.
    c2.put("h/live", "x", None).await.unwrap();
    assert_eq!(lines_until(&mut stream, id, "h/live").await, [format!("PUT h/live=x @{} ({0}/1)", WRITES + 2)]);
}

#[tokio::test]
async fn a_future_start_revision_waits_and_holds_back_progress() {
    let (_cluster, mut c) = single(&[]).await;
    let now = c.put("f", "0", None).await.unwrap().header().unwrap().revision();
    let (mut stream, id, _) = open(&mut c, "f", WatchOptions::new().with_start_revision(now + 3)).await;
    // Progress may not be reported while a watch waits for a future revision (etcd #20221).
    stream.request_progress().await.unwrap();
    for i in 1..=4 {
        c.put("f", format!("{i}"), None).await.unwrap();
    }
    let first = next(&mut stream).await;
    assert_eq!(first.watch_id(), id, "nothing may come before the start revision: {first:?}");
    let mut lines: Vec<String> = first.events().iter().map(line).collect();
    // Then the progress answer, vouching for at least the start revision, and the last event.
    let mut progress = None;
    while progress.is_none() || lines.len() < 2 {
        let resp = next(&mut stream).await;
        match resp.watch_id() {
            -1 => progress = Some(revision(&resp)),
            other => {
                assert_eq!(other, id);
                lines.extend(resp.events().iter().map(line));
            }
        }
    }
    assert!(progress.unwrap() >= now + 3, "progress at {progress:?}, before the watch's start {}", now + 3);
    assert_eq!(lines, [format!("PUT f=3 @{} ({now}/4)", now + 3), format!("PUT f=4 @{} ({now}/5)", now + 4)]);
}

#[tokio::test]
async fn prefix_range_from_key_and_single_key_watches_see_exactly_their_keys() {
    let (_cluster, mut c) = single(&[]).await;
    let mut stream = c.watch("b", Some(WatchOptions::new().with_prefix().with_watch_id(1))).await.unwrap();
    stream.watch("b", Some(WatchOptions::new().with_range("b/2").with_watch_id(2))).await.unwrap();
    stream.watch("c", Some(WatchOptions::new().with_from_key().with_watch_id(3))).await.unwrap();
    stream.watch("b", Some(WatchOptions::new().with_watch_id(4))).await.unwrap();
    stream.watch("", Some(WatchOptions::new().with_all_keys().with_watch_id(5))).await.unwrap();
    for want in 1..=5 {
        assert_eq!(created(&mut stream).await.0, want);
    }
    for key in ["a", "b", "b/1", "b/2", "ba", "c", "d"] {
        c.put(key, "v", None).await.unwrap();
    }
    // The last write touches every watch's range once more, as its end marker.
    let end = Txn::new().and_then([TxnOp::put("b", "end", None), TxnOp::put("zz", "end", None)]);
    c.txn(end).await.unwrap();

    let mut seen: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
    let mut finished = std::collections::BTreeSet::new();
    while finished.len() < 5 {
        let resp = next(&mut stream).await;
        for e in resp.events() {
            let kv = e.kv().unwrap();
            seen.entry(resp.watch_id()).or_default().push(String::from_utf8_lossy(kv.key()).into_owned());
            if kv.value() == b"end" {
                finished.insert(resp.watch_id());
            }
        }
    }
    let expect = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(seen[&1], expect(&["b", "b/1", "b/2", "ba", "b"]), "prefix b");
    assert_eq!(seen[&2], expect(&["b", "b/1", "b"]), "range [b, b/2)");
    assert_eq!(seen[&3], expect(&["c", "d", "zz"]), "from key c");
    assert_eq!(seen[&4], expect(&["b", "b"]), "single key b");
    assert_eq!(seen[&5], expect(&["a", "b", "b/1", "b/2", "ba", "c", "d", "b", "zz"]), "all keys");
}

#[tokio::test]
async fn noput_and_nodelete_filters_drop_their_events() {
    let (_cluster, mut c) = single(&[]).await;
    let mut stream = c
        .watch("x", Some(WatchOptions::new().with_prefix().with_watch_id(1).with_filters([WatchFilterType::NoPut])))
        .await
        .unwrap();
    let no_delete = WatchOptions::new().with_prefix().with_watch_id(2).with_filters([WatchFilterType::NoDelete]);
    stream.watch("x", Some(no_delete)).await.unwrap();
    created(&mut stream).await;
    created(&mut stream).await;
    c.put("x1", "a", None).await.unwrap();
    c.put("x2", "b", None).await.unwrap();
    c.delete("x1", None).await.unwrap();
    c.put("x1", "c", None).await.unwrap();
    c.delete("x", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    c.put("x-end", "", None).await.unwrap();
    c.delete("x-end", None).await.unwrap();

    let (mut deletes, mut puts) = (Vec::new(), Vec::new());
    while !(deletes.last().is_some_and(|l: &String| l.starts_with("DELETE x-end"))
        && puts.last().is_some_and(|l: &String| l.starts_with("PUT x-end")))
    {
        let resp = next(&mut stream).await;
        let lines = resp.events().iter().map(line);
        match resp.watch_id() {
            1 => deletes.extend(lines),
            2 => puts.extend(lines),
            other => panic!("response for unknown watch {other}"),
        }
    }
    assert_eq!(deletes, ["DELETE x1 @4", "DELETE x1 @6", "DELETE x2 @6", "DELETE x-end @8"]);
    assert_eq!(puts, ["PUT x1=a @2 (2/1)", "PUT x2=b @3 (3/1)", "PUT x1=c @5 (5/1)", "PUT x-end= @7 (7/1)"]);
}

#[tokio::test]
async fn prev_kv_is_the_previous_value_live_and_in_replay() {
    let (_cluster, mut c) = single(&[]).await;
    let (mut stream, id, start) = open(&mut c, "p", WatchOptions::new().with_prefix().with_prev_key()).await;
    c.put("p1", "one", None).await.unwrap();
    c.put("p1", "two", None).await.unwrap();
    c.put("p2", "x", None).await.unwrap();
    c.delete("p1", None).await.unwrap();
    c.put("p1", "three", Some(PutOptions::new().with_prev_key())).await.unwrap();
    c.delete("p", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    c.put("p-end", "", None).await.unwrap();
    let expected = [
        "PUT p1=one @2 (2/1)",
        "PUT p1=two @3 (2/2) prev=one@2",
        "PUT p2=x @4 (4/1)",
        "DELETE p1 @5 prev=two@3",
        "PUT p1=three @6 (6/1)",
        "DELETE p1 @7 prev=three@6",
        "DELETE p2 @7 prev=x@4",
        "PUT p-end= @8 (8/1)",
    ];
    assert_eq!(lines_until(&mut stream, id, "p-end").await, expected, "live");

    // The same events read back from history, and without prev_kv when not asked for.
    let replay = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(start + 1);
    let (mut replayed, id, _) = open(&mut c, "p", replay).await;
    assert_eq!(lines_until(&mut replayed, id, "p-end").await, expected, "replayed");
    let (mut bare, id, _) = open(&mut c, "p", WatchOptions::new().with_prefix().with_start_revision(start + 1)).await;
    let bare_lines = lines_until(&mut bare, id, "p-end").await;
    assert!(bare_lines.iter().all(|l| !l.contains("prev=")), "prev_kv without asking: {bare_lines:?}");
    assert_eq!(bare_lines.len(), expected.len());
}

#[tokio::test]
async fn all_events_of_a_txn_arrive_in_one_response_at_one_revision() {
    let (_cluster, mut c) = single(&[]).await;
    for k in ["t/a", "t/b", "t/c"] {
        c.put(k, "old", None).await.unwrap(); // revisions 2, 3, 4
    }
    let (mut stream, id, start) = open(&mut c, "t/", WatchOptions::new().with_prefix().with_prev_key()).await;
    let txn = Txn::new().and_then([
        TxnOp::put("t/x", "1", None),
        TxnOp::delete("t/a", None),
        TxnOp::put("t/b", "new", None),
        TxnOp::put("t/y", "2", None),
        TxnOp::delete("t/c", None),
    ]);
    let rev = c.txn(txn).await.unwrap().header().unwrap().revision();
    assert_eq!(rev, start + 1);
    let expected = [
        format!("PUT t/x=1 @{rev} ({rev}/1)"),
        format!("DELETE t/a @{rev} prev=old@2"),
        format!("PUT t/b=new @{rev} (3/2) prev=old@3"),
        format!("PUT t/y=2 @{rev} ({rev}/1)"),
        format!("DELETE t/c @{rev} prev=old@4"),
    ];
    let live = next(&mut stream).await;
    assert_eq!((live.watch_id(), revision(&live)), (id, rev));
    assert_eq!(live.events().iter().map(line).collect::<Vec<_>>(), expected, "one live response, in txn order");

    // Replayed from the store, the txn is still one response, in the same order.
    let (mut replay, id, _) =
        open(&mut c, "t/", WatchOptions::new().with_prefix().with_prev_key().with_start_revision(rev)).await;
    let replayed = next(&mut replay).await;
    assert_eq!(replayed.watch_id(), id);
    assert_eq!(replayed.events().iter().map(line).collect::<Vec<_>>(), expected, "replayed");
}

#[tokio::test]
async fn client_chosen_watch_ids_are_kept_and_duplicates_refused() {
    let (_cluster, mut c) = single(&[]).await;
    let (mut stream, id, _) = open(&mut c, "a", WatchOptions::new().with_watch_id(1)).await;
    assert_eq!(id, 1);
    // Automatic IDs start at 0 and skip IDs in use.
    stream.watch("a", None).await.unwrap();
    assert_eq!(created(&mut stream).await.0, 0);
    stream.watch("a", None).await.unwrap();
    assert_eq!(created(&mut stream).await.0, 2);
    stream.watch("a", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
    assert_eq!(created(&mut stream).await.0, 7);

    stream.watch("b", Some(WatchOptions::new().with_watch_id(7))).await.unwrap();
    let refused = next(&mut stream).await;
    assert!(refused.created() && refused.canceled(), "{refused:?}");
    assert_eq!(refused.watch_id(), -1);
    assert_eq!(refused.cancel_reason(), "mvcc: duplicate watch ID provided on the WatchStream");

    // The refusal changed nothing: watch 7 still watches "a", and nothing watches "b".
    c.put("b", "x", None).await.unwrap();
    c.put("a", "x", None).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let resp = next(&mut stream).await;
        assert_eq!(resp.events().iter().map(line).collect::<Vec<_>>(), ["PUT a=x @3 (3/1)"]);
        ids.push(resp.watch_id());
    }
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2, 7]);
}

#[tokio::test]
async fn cancel_stops_a_watch_and_unknown_ids_get_no_reply() {
    let (_cluster, mut c) = single(&[]).await;
    let (mut stream, first, _) = open(&mut c, "c", WatchOptions::new()).await;
    stream.watch("c", None).await.unwrap();
    let (second, _) = created(&mut stream).await;
    c.put("c", "1", None).await.unwrap();
    let mut got = [next(&mut stream).await.watch_id(), next(&mut stream).await.watch_id()];
    got.sort_unstable();
    assert_eq!(got, [first, second]);

    stream.cancel(first).await.unwrap();
    let canceled = next(&mut stream).await;
    assert!(canceled.canceled() && !canceled.created(), "{canceled:?}");
    assert_eq!((canceled.watch_id(), canceled.cancel_reason(), revision(&canceled)), (first, "", 2));
    // Canceling it again, or an ID never used, says nothing: the next message is the answer to
    // a progress request sent after them.
    stream.cancel(first).await.unwrap();
    stream.cancel(1234).await.unwrap();
    stream.request_progress().await.unwrap();
    let progress = next(&mut stream).await;
    assert_eq!((progress.watch_id(), progress.canceled()), (-1, false), "{progress:?}");

    c.put("c", "2", None).await.unwrap();
    let resp = next(&mut stream).await;
    assert_eq!(resp.watch_id(), second, "only the remaining watch gets the event");
    assert_eq!(resp.events().iter().map(line).collect::<Vec<_>>(), ["PUT c=2 @3 (2/2)"]);
}

#[tokio::test]
async fn a_watch_below_the_compaction_is_created_then_canceled() {
    let (_cluster, mut c) = single(&[]).await;
    for i in 0..5 {
        c.put("k", format!("{i}"), None).await.unwrap(); // revisions 2..=6
    }
    c.compact(5, None).await.unwrap();
    let (mut stream, id, at) = open(&mut c, "k", WatchOptions::new().with_start_revision(4)).await;
    assert_eq!(at, 6);
    let canceled = next(&mut stream).await;
    assert!(canceled.canceled() && !canceled.created(), "{canceled:?}");
    assert_eq!(canceled.watch_id(), id);
    assert_eq!(canceled.compact_revision(), 5);
    // As etcd: no reason (clients read compact_revision as ErrCompacted).
    assert_eq!(canceled.cancel_reason(), "");

    // At the compaction revision itself, history is still there.
    let at_compaction = WatchOptions::new().with_start_revision(5).with_prev_key();
    let (mut stream, id, _) = open(&mut c, "k", at_compaction).await;
    let resp = next(&mut stream).await;
    assert_eq!(resp.watch_id(), id);
    // The previous value of revision 5 is below the compaction, so etcd leaves it out.
    assert_eq!(resp.events().iter().map(line).collect::<Vec<_>>(), ["PUT k=3 @5 (2/4)", "PUT k=4 @6 (2/5) prev=3@5"]);

    // A negative start revision is below any compaction too (etcd does not refuse it).
    let (mut stream, id, _) = open(&mut c, "k", WatchOptions::new().with_start_revision(-3)).await;
    let canceled = next(&mut stream).await;
    assert_eq!((canceled.watch_id(), canceled.canceled(), canceled.compact_revision()), (id, true, 5));
}

/// etcd #18089: a delete at exactly the compaction revision must still reach a watch that
/// starts there.
#[tokio::test]
async fn a_delete_at_the_compaction_revision_reaches_a_watch_from_it() {
    let (_cluster, mut c) = single(&[]).await;
    c.put("k", "v2", None).await.unwrap(); // 2
    c.put("k", "v3", None).await.unwrap(); // 3
    c.delete("k", None).await.unwrap(); // 4
    c.put("k", "v5", None).await.unwrap(); // 5
    c.compact(4, None).await.unwrap();
    let (mut stream, id, _) = open(&mut c, "k", WatchOptions::new().with_start_revision(4)).await;
    let resp = next(&mut stream).await;
    assert_eq!(resp.watch_id(), id);
    assert_eq!(resp.events().iter().map(line).collect::<Vec<_>>(), ["DELETE k @4", "PUT k=v5 @5 (5/1)"]);
}

#[tokio::test]
async fn a_progress_request_is_answered_with_the_current_revision() {
    let (_cluster, mut c) = single(&[]).await;
    let (mut stream, id, _) = open(&mut c, "q", WatchOptions::new()).await;
    c.put("other", "1", None).await.unwrap();
    let now = c.put("q", "1", None).await.unwrap().header().unwrap().revision();
    assert_eq!(next(&mut stream).await.watch_id(), id);
    let now = now.max(c.put("other", "2", None).await.unwrap().header().unwrap().revision());
    stream.request_progress().await.unwrap();
    let progress = next(&mut stream).await;
    assert_eq!(progress.watch_id(), -1);
    assert!(!progress.created() && !progress.canceled() && progress.events().is_empty());
    assert_eq!(progress.compact_revision(), 0);
    assert_eq!(revision(&progress), now, "progress vouches for every revision so far");
}

#[tokio::test]
async fn progress_notify_reports_the_revision_of_an_idle_watch() {
    let (_cluster, mut c) = single(&["--experimental-watch-progress-notify-interval", "200ms"]).await;
    let (mut stream, notified, _) = open(&mut c, "n", WatchOptions::new().with_progress_notify()).await;
    stream.watch("n", Some(WatchOptions::new().with_watch_id(9))).await.unwrap();
    created(&mut stream).await;
    let now = c.put("elsewhere", "1", None).await.unwrap().header().unwrap().revision();

    // Notifications keep coming while the watch is idle, each vouching for the revision of the
    // store; one soon vouches for the write above.
    let mut progress_revisions = Vec::new();
    while progress_revisions.last() != Some(&now) {
        let resp = next(&mut stream).await;
        assert_eq!(resp.watch_id(), notified, "only the watch that asked is notified: {resp:?}");
        assert!(resp.events().is_empty() && !resp.created() && !resp.canceled(), "{resp:?}");
        progress_revisions.push(revision(&resp));
        assert!(progress_revisions.len() < 50, "no notification at {now}: {progress_revisions:?}");
    }
    assert!(progress_revisions.windows(2).all(|w| w[0] <= w[1]), "progress went back: {progress_revisions:?}");

    // After an event, the next notification vouches for it; the watch without progress_notify
    // only ever gets the event.
    let rev = c.put("n", "1", None).await.unwrap().header().unwrap().revision();
    let mut got_event = Vec::new();
    loop {
        let resp = next(&mut stream).await;
        if !resp.events().is_empty() {
            got_event.push(resp.watch_id());
            continue;
        }
        assert_eq!(resp.watch_id(), notified, "only the watch that asked is notified: {resp:?}");
        if revision(&resp) == rev {
            break;
        }
        assert!(revision(&resp) < rev, "{resp:?}");
    }
    got_event.sort_unstable();
    let mut want = vec![notified, 9];
    want.sort_unstable();
    assert_eq!(got_event, want, "the event reached both watches before the notification vouching for it");
}

#[tokio::test]
async fn fragments_split_a_large_revision_under_max_request_bytes() {
    use phoenix::pb::{watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
    // As etcd's, a watch response may take 512 KiB more than --max-request-bytes.
    const MAX_REQUEST_BYTES: usize = 100_000;
    const LIMIT: usize = MAX_REQUEST_BYTES + 512 * 1024;
    let (cluster, mut c) = single(&["--max-request-bytes", &MAX_REQUEST_BYTES.to_string()]).await;
    let value = "v".repeat(90_000);
    for i in 0..10 {
        c.put(format!("big/{i}"), value.as_str(), None).await.unwrap();
    }
    let create = |watch_id: i64, fragment: bool| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            prev_kv: true,
            fragment,
            watch_id,
            ..Default::default()
        })),
    };
    let mut raw = WatchClient::connect(cluster.members[0].endpoint()).await.unwrap();
    // The client closes its side after the two creates; as in etcd, the watches go on.
    let requests = tokio_stream::iter([create(1, true), create(2, false)]);
    let mut responses = raw.watch(requests).await.unwrap().into_inner();
    async fn receive(responses: &mut tonic::Streaming<phoenix::pb::WatchResponse>) -> phoenix::pb::WatchResponse {
        tokio::time::timeout(WAIT, responses.message()).await.expect("a response in time").unwrap().unwrap()
    }
    assert!(receive(&mut responses).await.created);
    assert!(receive(&mut responses).await.created);
    let deleted = c.delete("big/", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    let rev = deleted.header().unwrap().revision();

    let (mut fragments, mut whole) = (Vec::new(), Vec::new());
    while fragments.last().is_none_or(|r: &phoenix::pb::WatchResponse| r.fragment) || whole.is_empty() {
        let resp = receive(&mut responses).await;
        match resp.watch_id {
            1 => fragments.push(resp),
            2 => whole.push(resp),
            other => panic!("response for unknown watch {other}"),
        }
    }
    assert!(fragments.len() > 1, "10 deletes with 90 KB previous values fit in one response");
    for part in &fragments {
        assert!(part.events.len() == 1 || prost::Message::encoded_len(part) < LIMIT, "a fragment over the limit");
        assert!(prost::Message::encoded_len(part) > MAX_REQUEST_BYTES, "fragments split below etcd's limit");
        assert_eq!(part.header.as_ref().unwrap().revision, rev);
    }
    let joined: Vec<_> = fragments.iter().flat_map(|r| r.events.clone()).collect();
    assert_eq!(whole.len(), 1, "without fragment=true the revision comes whole");
    assert_eq!(joined, whole[0].events, "the fragments join into the whole revision");
    assert_eq!(joined.len(), 10);
    assert!(joined.iter().all(|e| e.kv.as_ref().unwrap().mod_revision == rev && e.prev_kv.is_some()));
}

#[tokio::test]
async fn watches_on_followers_see_the_same_events_as_on_the_leader() {
    let cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let mut streams = Vec::new();
    for i in 0..3 {
        let mut client = cluster.client(i).await;
        let (stream, id, _) = open(&mut client, "s/", WatchOptions::new().with_prefix().with_prev_key()).await;
        streams.push((stream, id));
    }
    // Writes through every member, followers forward them.
    let mut writers = Vec::new();
    for i in 0..3 {
        writers.push(cluster.client((leader + i) % 3).await);
    }
    for round in 0..10 {
        let w = &mut writers[round % 3];
        w.put(format!("s/{}", round % 4), format!("r{round}"), None).await.unwrap();
        if round % 3 == 2 {
            w.delete(format!("s/{}", (round + 1) % 4), None).await.unwrap();
        }
        if round % 4 == 1 {
            let txn = Txn::new().and_then([
                TxnOp::put(format!("s/t{round}"), "a", None),
                TxnOp::put(format!("s/u{round}"), "b", None),
                TxnOp::delete("s/0", None),
            ]);
            w.txn(txn).await.unwrap();
        }
    }
    writers[1].put("s/end", "", None).await.unwrap();

    let mut sequences = Vec::new();
    for (stream, id) in &mut streams {
        // Responses per revision, so a follower that groups revisions differently still matches,
        // but a txn split over responses does not.
        let responses = responses_until(stream, *id, "s/end").await;
        let mut by_revision: Vec<Vec<String>> = Vec::new();
        for resp in &responses {
            let mut revs: Vec<i64> = resp.events().iter().map(|e| e.kv().unwrap().mod_revision()).collect();
            revs.dedup();
            for rev in revs {
                let events = resp.events().iter().filter(|e| e.kv().unwrap().mod_revision() == rev).map(line).collect();
                by_revision.push(events);
            }
        }
        sequences.push(by_revision);
    }
    assert!(sequences[0].len() > 10, "too few revisions: {:?}", sequences[0]);
    assert_eq!(sequences[0], sequences[1], "member 0 and member 1 differ");
    assert_eq!(sequences[0], sequences[2], "member 0 and member 2 differ");
}

/// Opens a watch that requires a leader on member `i`.
async fn require_leader_watch(cluster: &Cluster, i: usize) -> WatchStream {
    let options = ConnectOptions::new().with_require_leader(true);
    let mut client = Client::connect([cluster.members[i].endpoint()], Some(options)).await.unwrap();
    let (stream, _, _) = open(&mut client, "l", WatchOptions::new()).await;
    stream
}

/// Waits until `stream` ends with etcd's "no leader" error.
async fn ends_with_no_leader(stream: &mut WatchStream) {
    let end = tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(e) => return status_of(e),
            }
        }
    })
    .await
    .expect("the watch outlived the leader");
    assert_eq!(end, (Code::Unavailable, "etcdserver: no leader".to_string()));
}

/// Expects a new watch that requires a leader on member `i` to be refused with "no leader".
async fn refused_for_no_leader(cluster: &Cluster, i: usize) {
    let options = ConnectOptions::new().with_require_leader(true);
    let mut client = Client::connect([cluster.members[i].endpoint()], Some(options)).await.unwrap();
    let refused = async {
        let mut stream = client.watch("l", None).await?;
        stream.message().await
    };
    let err = tokio::time::timeout(WAIT, refused).await.unwrap().expect_err("a watch without a leader");
    assert_eq!(status_of(err), (Code::Unavailable, "etcdserver: no leader".to_string()));
}

#[tokio::test]
async fn a_watch_that_requires_a_leader_ends_when_a_majority_is_lost() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut on_follower = require_leader_watch(&cluster, follower).await;
    let mut relaxed = cluster.client(follower).await;
    let (mut plain, _, _) = open(&mut relaxed, "l", WatchOptions::new()).await;

    cluster.kill(leader);
    cluster.kill((leader + 2) % 3);
    ends_with_no_leader(&mut on_follower).await;
    refused_for_no_leader(&cluster, follower).await;

    // A watch that did not ask for a leader keeps its stream.
    plain.request_progress().await.unwrap();
    assert_eq!(next(&mut plain).await.watch_id(), -1);
}

/// openraft 0.9 keeps a leader leading without its quorum; etcd's leader steps down, and its
/// `hasleader` watches end. So must ours.
#[tokio::test]
async fn a_watch_on_a_leader_cut_off_from_its_quorum_ends_too() {
    let mut cluster = Cluster::start(3, TEST_TIMINGS).await;
    let leader = cluster.leader().await;
    let mut on_leader = require_leader_watch(&cluster, leader).await;
    cluster.kill((leader + 1) % 3);
    cluster.kill((leader + 2) % 3);
    ends_with_no_leader(&mut on_leader).await;
    refused_for_no_leader(&cluster, leader).await;
}

#[tokio::test]
async fn a_watch_that_requires_a_leader_lives_on_while_there_is_one() {
    // One member (its own quorum) and the leader of three: neither may mistake itself for
    // leaderless while no writes come. For longer than the no-leader verdict takes (4 election
    // timeouts of 1 s) the streams only answer progress requests, then carry an event.
    let single = Cluster::start(1, TEST_TIMINGS).await;
    let three = Cluster::start(3, TEST_TIMINGS).await;
    let leader = three.leader().await;
    let mut watches = [require_leader_watch(&single, 0).await, require_leader_watch(&three, leader).await];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        for watch in &mut watches {
            watch.request_progress().await.unwrap();
            assert_eq!(next(watch).await.watch_id(), -1);
        }
    }
    let mut writers = [single.client(0).await, three.client(leader).await];
    for (watch, writer) in watches.iter_mut().zip(&mut writers) {
        writer.put("l", "after", None).await.unwrap();
        assert_eq!(next(watch).await.events()[0].kv().unwrap().value(), b"after");
    }
}

/// A connection to the first member with HTTP/2's smallest windows: a watch stream on it whose
/// client reads nothing backs up through the transport within a few hundred responses.
async fn narrow_channel(cluster: &Cluster) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(cluster.members[0].endpoint())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_watch_that_stops_reading_falls_behind_and_catches_up_without_loss() {
    use phoenix::pb::{watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
    let (cluster, mut c) = single(&[]).await;
    const WRITES: i64 = 2500;
    // The watch's client reads nothing while the writes go on. With a small HTTP/2 window its
    // stream backs up through the transport and the stream's queue until it falls behind the
    // hub's buffer of applied batches, and must catch up from the store.
    let channel = narrow_channel(&cluster).await;
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"lag/".to_vec(),
            range_end: b"lag0".to_vec(),
            ..Default::default()
        })),
    };
    let mut responses = WatchClient::new(channel).watch(tokio_stream::iter([create])).await.unwrap().into_inner();
    let mut receive = async || tokio::time::timeout(WAIT, responses.message()).await.unwrap().unwrap().unwrap();
    assert!(receive().await.created);
    let value = "x".repeat(200);
    for i in 0..WRITES {
        c.put(format!("lag/{}", i % 7), value.as_str(), None).await.unwrap();
    }
    c.put("lag/end", "", None).await.unwrap();
    let mut revisions = Vec::new();
    while revisions.last() != Some(&(WRITES + 2)) {
        let resp = receive().await;
        assert!(!resp.canceled && !resp.events.is_empty(), "{resp:?}");
        revisions.extend(resp.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert_eq!(revisions, (2..=WRITES + 2).collect::<Vec<_>>(), "every revision once, in order");
    assert!(
        cluster.members[0].log_text().contains("fell behind the applied events"),
        "the stream never fell behind; the test no longer covers catching up"
    );
}

#[tokio::test]
async fn a_watch_without_a_start_revision_starts_after_the_stores_revision_not_its_streams() {
    use phoenix::pb::{watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest};
    let (cluster, mut c) = single(&[]).await;
    // As in the test above, a client that reads nothing backs its stream up, so that the
    // stream's queue of applied batches grows (but stays within the hub's buffer). A watch
    // created then arrives while the batch of a put its client already saw acknowledged still
    // waits in that queue: the watch must start after the store's revision, as in etcd, and
    // never deliver that put.
    let channel = narrow_channel(&cluster).await;
    let create = |key: &str, watch_id: i64| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec(),
            range_end: if key == "busy/" { b"busy0".to_vec() } else { Vec::new() },
            watch_id,
            ..Default::default()
        })),
    };
    let (requests, queued) = tokio::sync::mpsc::channel(4);
    requests.send(create("busy/", 1)).await.unwrap();
    let mut responses = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await
        .unwrap()
        .into_inner();
    let mut receive = async || tokio::time::timeout(WAIT, responses.message()).await.unwrap().unwrap().unwrap();
    assert!(receive().await.created);
    let value = "x".repeat(200);
    for i in 0..700 {
        c.put(format!("busy/{}", i % 7), value.as_str(), None).await.unwrap();
    }
    let acknowledged = c.put("k", "before", None).await.unwrap().header().unwrap().revision();
    requests.send(create("k", 2)).await.unwrap();
    let created = loop {
        let resp = receive().await;
        if resp.watch_id == 2 {
            break resp;
        }
        assert_eq!(resp.watch_id, 1, "{resp:?}");
    };
    assert!(created.created && !created.canceled, "{created:?}");
    let at = created.header.unwrap().revision;
    assert!(at >= acknowledged, "created at {at}, before the acknowledged put at {acknowledged}");
    c.put("k", "after", None).await.unwrap();
    let delivered = loop {
        let resp = receive().await;
        if resp.watch_id == 2 {
            break resp;
        }
    };
    let values: Vec<_> = delivered.events.iter().map(|e| e.kv.as_ref().unwrap().value.clone()).collect();
    assert_eq!(values, [b"after".to_vec()], "the watch's first events");
    assert!(
        !cluster.members[0].log_text().contains("fell behind the applied events"),
        "the stream fell behind the hub and caught up from the store: the test no longer makes it lag"
    );
}
