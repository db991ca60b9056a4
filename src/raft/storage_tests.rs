//! The sled log store and state machine against openraft's storage conformance suite, plus
//! Phoenix's own snapshot checks: a snapshot carries the whole MVCC store to another member,
//! and a damaged one is refused before anything is loaded from it.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, Vote};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::leader_flush::LeaderFlush;
use super::log_store::LogStore;
use super::outcome::{Outcome, Waiter};
use super::state_machine::StateMachine;
use super::{storage_error, LogId, PeerNode, Proposal, StorageError, TypeConfig};
use crate::disk::Db;
use crate::kv::KvStore;
use crate::pb::{self, command};
use crate::watch::WatchHub;

/// One member's storage in a temporary data dir, laid out as the server lays it out.
struct Member {
    _dir: TempDir,
    kv: KvStore,
    sm: StateMachine,
}

fn open(dir: &Path) -> crate::Result<(LogStore, StateMachine, KvStore)> {
    let db = Db::open(&dir.join("db"), 64 << 20)?;
    let kv = KvStore::open(db.open_tree("kv")?)?;
    let log = LogStore::new(db.clone(), db.open_tree("raft")?);
    let sm = StateMachine::new(kv.clone(), db, dir.join("snap"), WatchHub::default(), Default::default());
    Ok((log, sm, kv))
}

fn member() -> Member {
    let dir = TempDir::new().unwrap();
    let (_, sm, kv) = open(dir.path()).unwrap();
    Member { _dir: dir, kv, sm }
}

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let io = |e: &dyn std::fmt::Display| {
            storage_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e.to_string())
        };
        let dir = TempDir::new().map_err(|e| io(&e))?;
        let (log, sm, _) = open(dir.path()).map_err(|e| io(&e))?;
        let log = log.noting_commits_in(dir.path()).map_err(|e| io(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).unwrap();
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn put(key: &str, value: &str) -> pb::Command {
    let req = pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() };
    pb::Command::from(command::Op::Put(req))
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> openraft::Entry<TypeConfig> {
    openraft::Entry { log_id: log_id(index), payload }
}

fn commands(index: u64, commands: Vec<pb::Command>) -> openraft::Entry<TypeConfig> {
    entry(index, EntryPayload::Normal(Proposal(pb::CommandBatch { commands })))
}

/// A membership entry, a few writes with history and a compaction, as a leader might have applied.
async fn leader_with_data() -> Member {
    let mut leader = member();
    let voters: BTreeMap<u64, PeerNode> = [(1, PeerNode::default()), (2, PeerNode::default())].into();
    let compact = pb::Command::from(command::Op::Compaction(pb::CompactionRequest { revision: 3, physical: false }));
    let entries = vec![
        entry(1, EntryPayload::Membership(Membership::new(vec![[1, 2].into()], voters))),
        commands(2, vec![put("a", "1"), put("b\0zero", "2"), put("a", "3")]),
        commands(3, vec![put("c", "4"), compact]),
        entry(4, EntryPayload::Blank),
    ];
    let applied = leader.sm.apply(entries).await.unwrap();
    assert_eq!(applied.len(), 4, "one result per entry");
    assert_eq!(leader.kv.revision().unwrap(), 5);
    leader
}

/// Copies a snapshot into a member's receiving file, as the chunked transfer writes it.
async fn receive(follower: &mut Member, snapshot: &mut Snapshot<TypeConfig>) -> Box<tokio::fs::File> {
    let mut bytes = Vec::new();
    snapshot.snapshot.seek(SeekFrom::Start(0)).await.unwrap();
    snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();
    received(follower, &bytes).await
}

async fn received(follower: &mut Member, bytes: &[u8]) -> Box<tokio::fs::File> {
    let mut file = follower.sm.begin_receiving_snapshot().await.unwrap();
    file.write_all(bytes).await.unwrap();
    file
}

fn everything(kv: &KvStore) -> pb::RangeResponse {
    kv.range(&pb::RangeRequest { key: vec![0], range_end: vec![0], ..Default::default() }).unwrap()
}

/// A receipt given up (a stream a newer one took over, chunks a stream overtook) may still write
/// through its handle: none of it lands in the next receipt's file, nor in the snapshot installed
/// from that.
#[tokio::test]
async fn a_receipt_given_up_writes_nowhere_a_later_one_reads() {
    let mut leader = leader_with_data().await;
    let mut snapshot = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut follower = member();
    let mut given_up = follower.sm.begin_receiving_snapshot().await.unwrap();
    given_up.write_all(b"the start of another snapshot").await.unwrap();

    let file = receive(&mut follower, &mut snapshot).await;
    given_up.write_all(&[0xff; 4096]).await.unwrap();
    given_up.flush().await.unwrap();
    follower.sm.install_snapshot(&snapshot.meta, file).await.unwrap();
    given_up.seek(SeekFrom::Start(0)).await.unwrap();
    given_up.write_all(&[0xff; 4096]).await.unwrap();
    given_up.flush().await.unwrap();

    let mut installed = follower.sm.get_current_snapshot().await.unwrap().expect("the installed snapshot");
    let (mut sent, mut kept) = (Vec::new(), Vec::new());
    snapshot.snapshot.seek(SeekFrom::Start(0)).await.unwrap();
    snapshot.snapshot.read_to_end(&mut sent).await.unwrap();
    installed.snapshot.read_to_end(&mut kept).await.unwrap();
    assert!(kept == sent, "the installed snapshot file changed after the install");
}

#[tokio::test]
async fn a_snapshot_carries_the_whole_store() {
    let mut leader = leader_with_data().await;
    let mut snapshot = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(4)));

    let mut follower = member();
    let file = receive(&mut follower, &mut snapshot).await;
    follower.sm.install_snapshot(&snapshot.meta, file).await.unwrap();

    assert_eq!(follower.kv.hash_kv(0).unwrap(), leader.kv.hash_kv(0).unwrap());
    assert_eq!(follower.kv.compacted_revision().unwrap(), 3);
    assert_eq!(everything(&follower.kv), everything(&leader.kv));
    assert_eq!(everything(&follower.kv).kvs.len(), 3);
    assert_eq!(follower.sm.applied_state().await.unwrap(), leader.sm.applied_state().await.unwrap());
    let current = follower.sm.get_current_snapshot().await.unwrap().expect("the installed snapshot is kept");
    assert_eq!(current.meta, snapshot.meta);
    let snapshot_files: Vec<_> = std::fs::read_dir(follower._dir.path().join("snap")).unwrap().collect();
    assert_eq!(snapshot_files.len(), 1, "the received file became the snapshot, with no copy left behind");

    // Both go on from there alike.
    for m in [&mut leader, &mut follower] {
        m.sm.apply([commands(5, vec![put("d", "5")])]).await.unwrap();
    }
    assert_eq!(follower.kv.hash_kv(0).unwrap(), leader.kv.hash_kv(0).unwrap());
    assert_eq!(follower.kv.revision().unwrap(), 6);
}

/// openraft may hand over a snapshot in a file other than the one the member received it into:
/// that file is copied, and left as it was.
#[tokio::test]
async fn a_snapshot_handed_over_in_another_file_is_copied() {
    let mut leader = leader_with_data().await;
    let snapshot = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let leaders_file = || async {
        let mut current = leader.sm.clone().get_current_snapshot().await.unwrap().expect("a current snapshot");
        let mut bytes = Vec::new();
        current.snapshot.read_to_end(&mut bytes).await.unwrap();
        bytes
    };
    let before = leaders_file().await;

    let mut follower = member();
    follower.sm.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(follower.kv.hash_kv(0).unwrap(), leader.kv.hash_kv(0).unwrap());
    assert!(!before.is_empty());
    assert!(leaders_file().await == before, "the file handed over is left whole");
}

#[tokio::test]
async fn a_copy_in_progress_holds_physical_compaction_off_and_reads_only_up_to_its_revision() {
    let mut leader = leader_with_data().await;
    let records = |kv: &KvStore| kv.export_records(i64::MAX).count();
    let before = records(&leader.kv);
    let copying = leader.sm.fence.begin_copy(leader.kv.clone());
    let compact = pb::Command::from(command::Op::Compaction(pb::CompactionRequest { revision: 5, physical: false }));
    leader.sm.apply([commands(5, vec![put("a", "6"), compact])]).await.unwrap();
    assert_eq!(leader.kv.compacted_revision().unwrap(), 5, "compacted logically at once");
    assert_eq!(records(&leader.kv), before + 1, "but no record removed while a copy reads them");
    assert_eq!(leader.kv.export_records(5).count(), before, "a copy at revision 5 sees none of revision 6");
    drop(copying);
    // a@2 is superseded by a@4 at the compacted revision 5: the last copy to end removes it.
    assert_eq!(records(&leader.kv), before, "the compacted history is removed once the copy ends");
    assert_eq!(everything(&leader.kv).kvs.len(), 3);
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused() {
    let mut leader = leader_with_data().await;
    let mut snapshot = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut bytes = Vec::new();
    snapshot.snapshot.read_to_end(&mut bytes).await.unwrap();

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let truncated = &bytes[..bytes.len() - 10];
    let mut follower = member();
    for damaged in [&flipped[..], truncated, &[]] {
        let file = received(&mut follower, damaged).await;
        let refused = follower.sm.install_snapshot(&snapshot.meta, file).await;
        assert!(refused.is_err(), "a damaged snapshot of {} bytes was installed", damaged.len());
        // Nothing was loaded and nothing is offered as the current snapshot.
        assert_eq!(follower.kv.revision().unwrap(), 1);
        assert_eq!(everything(&follower.kv).count, 0);
        assert_eq!(follower.sm.applied_state().await.unwrap().0, None);
        assert!(follower.sm.get_current_snapshot().await.unwrap().is_none());
    }

    // A snapshot whose contents do not match the meta it is installed under is refused too.
    let mut other_meta = snapshot.meta.clone();
    other_meta.last_log_id = Some(log_id(9));
    other_meta.snapshot_id = "1-1-9".into();
    let file = received(&mut follower, &bytes).await;
    assert!(follower.sm.install_snapshot(&other_meta, file).await.is_err());
    assert_eq!(follower.kv.revision().unwrap(), 1);

    // The intact snapshot still installs afterwards.
    let file = received(&mut follower, &bytes).await;
    follower.sm.install_snapshot(&snapshot.meta, file).await.unwrap();
    assert_eq!(follower.kv.hash_kv(0).unwrap(), leader.kv.hash_kv(0).unwrap());
}

/// The store survives a restart at a batch boundary: reopening the same data dir finds the
/// applied log id, the membership and the data applied with them.
#[tokio::test]
async fn applied_state_survives_reopening() {
    let dir = TempDir::new().unwrap();
    let hash = {
        let (_, mut sm, kv) = open(dir.path()).unwrap();
        sm.apply([commands(1, vec![put("a", "1")]), commands(2, vec![put("a", "2")])]).await.unwrap();
        kv.hash_kv(0).unwrap()
    };
    let (_, mut sm, kv) = open(dir.path()).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2)));
    assert_eq!(kv.hash_kv(0).unwrap(), hash);
    assert_eq!(kv.revision().unwrap(), 3);
}

#[tokio::test]
async fn an_interrupted_snapshot_load_is_finished_before_raft_starts() {
    let mut leader = leader_with_data().await;
    let mut snapshot = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut follower = member();
    let file = receive(&mut follower, &mut snapshot).await;
    follower.sm.install_snapshot(&snapshot.meta, file).await.unwrap();

    // A crash part way through the load: the marker is there and the store holds only a part.
    let snap_dir = follower._dir.path().join("snap");
    std::fs::write(snap_dir.join("LOADING"), format!("{}.snap", snapshot.meta.snapshot_id)).unwrap();
    follower.kv.replace_all(std::iter::empty()).unwrap();
    assert_ne!(follower.kv.hash_kv(0).ok(), leader.kv.hash_kv(0).ok());

    follower.sm.finish_interrupted_install().unwrap();
    assert_eq!(follower.kv.hash_kv(0).unwrap(), leader.kv.hash_kv(0).unwrap());
    assert_eq!(follower.sm.applied_state().await.unwrap(), leader.sm.applied_state().await.unwrap());
    assert!(!snap_dir.join("LOADING").exists());
}

/// A crash after the install was marked but before its file was put in place left the store
/// as it was: the next start forgets the install (the leader sends the snapshot again).
#[tokio::test]
async fn an_install_interrupted_before_its_file_was_in_place_is_forgotten() {
    let follower = member();
    follower.kv.write().unwrap().commit().unwrap();
    let before = follower.kv.hash_kv(0).unwrap();
    let snap_dir = follower._dir.path().join("snap");
    std::fs::create_dir_all(&snap_dir).unwrap();
    std::fs::write(snap_dir.join("LOADING"), "1-1-42.snap").unwrap();
    follower.sm.finish_interrupted_install().unwrap();
    assert!(!snap_dir.join("LOADING").exists());
    assert_eq!(follower.kv.hash_kv(0).unwrap(), before);
}

/// A stopped survivor asks the members of the newest configuration its log holds, which its
/// state machine may not have reached.
#[test]
fn the_newest_configuration_after_the_applied_entry_is_found_in_the_log() -> crate::Result<()> {
    let dir = TempDir::new()?;
    let (log, _, _) = open(dir.path())?;
    let node = |port: u16| PeerNode { name: String::new(), peer_urls: vec![format!("http://n:{port}")], voter: true };
    let one = Membership::new(vec![[1].into()], BTreeMap::from([(1, node(1))]));
    let two = Membership::new(vec![[1, 2].into()], BTreeMap::from([(1, node(1)), (2, node(2))]));
    let entries = [
        entry(1, EntryPayload::Membership(one)),
        commands(2, vec![put("k", "v")]),
        entry(3, EntryPayload::Membership(two.clone())),
        commands(4, vec![put("k", "w")]),
    ];
    let storage = |e: StorageError| crate::Error::Storage(e.to_string());
    log.append_reset(&entries, &openraft::Vote::new_committed(1, 1)).map_err(storage)?;
    assert_eq!(log.membership_after(Some(log_id(1))).map_err(storage)?, Some(two.clone()));
    assert_eq!(log.membership_after(None).map_err(storage)?, Some(two));
    assert_eq!(log.membership_after(Some(log_id(3))).map_err(storage)?, None, "applied already");
    Ok(())
}

/// openraft 0.9 purges the log behind a snapshot as soon as it hands the install over: the
/// purge is put off until the state machine holds the entries, and dropped if the install fails
/// (a member killed in between used to find its log purged past its newest snapshot).
#[tokio::test]
async fn a_purge_waits_for_the_state_machine_to_hold_its_entries() {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use std::time::Duration;

    let dir = TempDir::new().unwrap();
    let (log, _, _) = open(dir.path()).unwrap();
    let applied = super::log_store::AppliedIndex::default();
    let mut log = log.purging_behind(applied.clone());
    log.blocking_append((1..=10).map(|i| commands(i, vec![put("k", "v")]))).await.unwrap();
    applied.advance(5);
    log.purge(log_id(4)).await.unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(4)));

    log.purge(log_id(8)).await.unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(4)), "purged past the store");
    applied.advance(8);
    let purged = tokio::time::timeout(Duration::from_secs(10), async {
        while log.clone().get_log_state().await.unwrap().last_purged_log_id != Some(log_id(8)) {
            tokio::task::yield_now().await;
        }
    });
    purged.await.expect("the purge put off until the install ended never came");

    log.purge(log_id(10)).await.unwrap();
    applied.install_failed();
    // Nothing is purged; the log still holds what follows the last purge.
    assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(8)));
    assert_eq!(log.try_get_log_entries(9..=10).await.unwrap().len(), 2);
}

/// A kill -9 between a commit and sled's next flush leaves sled's copy of the commit index
/// behind; the note written beside it at every commit still has it, if the log holds its entry.
#[tokio::test]
async fn a_restart_finds_the_commit_index_in_its_note_when_sleds_copy_fell_behind() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};

    let dir = TempDir::new().unwrap();
    let (log, _, _) = open(dir.path()).unwrap();
    let mut without_note = log.clone();
    let mut noting = log.noting_commits_in(dir.path()).unwrap();
    noting.blocking_append((1..=5).map(|i| commands(i, vec![put("k", "v")]))).await.unwrap();
    noting.save_committed(Some(log_id(4))).await.unwrap();
    without_note.save_committed(Some(log_id(2))).await.unwrap();
    assert_eq!(without_note.read_committed().await.unwrap(), Some(log_id(2)));
    assert_eq!(noting.read_committed().await.unwrap(), Some(log_id(4)));

    // A note naming an entry this log does not hold (another term, or past its end) is ignored.
    let other_term = LogId::new(CommittedLeaderId::new(7, 1), 5);
    noting.save_committed(Some(other_term)).await.unwrap();
    without_note.save_committed(Some(log_id(2))).await.unwrap();
    assert_eq!(noting.read_committed().await.unwrap(), Some(log_id(2)));
    noting.save_committed(Some(log_id(9))).await.unwrap();
    without_note.save_committed(Some(log_id(3))).await.unwrap();
    assert_eq!(noting.read_committed().await.unwrap(), Some(log_id(3)));
}

/// Only the appends a member makes as leader (its own vote, committed, saved last), after the
/// first of its leadership, are reported before their flush; a commit of them waits for it, and a
/// restart gives such a leadership up (see `raft::leader_flush`).
#[tokio::test]
async fn only_a_leaders_own_appends_are_flushed_after_they_are_reported() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};

    let dir = TempDir::new().unwrap();
    let db = Db::open(&dir.path().join("db"), 1 << 20).unwrap();
    let flush = LeaderFlush::new(db.clone());
    // A flush that never ends: nothing this test registers is ever flushed in the background.
    flush.stall(100);
    let mut log =
        LogStore::new(db.clone(), db.open_tree("raft").unwrap()).flushing_leader_appends_with(1, flush.clone());
    let quickly = Duration::from_secs(5);
    let briefly = Duration::from_millis(200);

    log.save_vote(&Vote::new_committed(1, 2)).await.unwrap();
    log.blocking_append([commands(1, vec![put("k", "v")])]).await.unwrap();
    let commit = tokio::time::timeout(quickly, log.save_committed(Some(log_id(1)))).await;
    commit.expect("a follower's append is flushed").unwrap();

    log.save_vote(&Vote::new(2, 1)).await.unwrap();
    log.blocking_append([commands(2, vec![put("k", "v")])]).await.unwrap();
    tokio::time::timeout(quickly, flush.durable_through(2)).await.expect("a candidate's append is flushed").unwrap();

    log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
    assert!(!log.resign_leadership_reported_early(1).unwrap(), "a leadership that appended nothing leads on");
    log.blocking_append([commands(3, vec![put("k", "v")])]).await.unwrap();
    let commit = tokio::time::timeout(quickly, log.save_committed(Some(log_id(3)))).await;
    commit.expect("a leadership's first append is flushed").unwrap();

    log.blocking_append([commands(4, vec![put("k", "v")])]).await.unwrap();
    let commit = tokio::time::timeout(briefly, log.save_committed(Some(log_id(4)))).await;
    assert!(commit.is_err(), "a commit of the leader's later append waits for its flush");
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3)));

    // Restarting, the member gives up the leadership that reported an append early.
    assert!(log.resign_leadership_reported_early(1).unwrap());
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert!(!log.resign_leadership_reported_early(1).unwrap(), "resigned once");
}

/// A command a follower forwarded is applied only in an entry of the term it was forwarded for,
/// and its result reaches the follower's waiter (see `raft::outcome`).
#[tokio::test]
async fn a_forwarded_command_is_applied_only_in_its_terms_entries_and_its_result_awaited() {
    let mut follower = member();
    let outcomes = follower.sm.outcomes();
    let (mut stale, mut current) = (outcomes.register(7, 2), outcomes.register(7, 1));
    let forwarded = |key: &str, waiter: &Waiter| pb::Command { origin: Some(waiter.origin()), ..put(key, "v") };
    // log_id(1) is an entry of term 1.
    let batch = vec![forwarded("stale", &stale), forwarded("current", &current)];
    let applied = follower.sm.apply([commands(1, batch)]).await.unwrap();

    let refusal = pb::CommandResult {
        result: Some(pb::command_result::Result::Error(crate::Error::NotLeader.to_command_error())),
    };
    assert_eq!(applied[0].0.results[0], refusal);
    assert!(matches!(stale.outcome(), Some(Outcome::Applied(result)) if result == refusal));
    let put_result = applied[0].0.results[1].clone();
    assert!(matches!(put_result.result, Some(pb::command_result::Result::Put(_))));
    assert!(matches!(current.outcome(), Some(Outcome::Applied(result)) if result == put_result));
    let keys: Vec<_> = everything(&follower.kv).kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(keys, [b"current".to_vec()], "the refused command changed nothing");
    assert_eq!(follower.kv.revision().unwrap(), 2);
}
