//! The state machine: etcd's MVCC key-value rules over one sled tree, whose records are found
//! through an in-memory index of every key's revisions ([`index`], as etcd's treeIndex).
//!
//! Invariants:
//! - Deterministic: the outcome of a command depends only on the store and the command. No
//!   clock, no randomness, no knowledge of which member runs it.
//! - Synchronous and fed only by committed commands; the Raft layer decides what to apply.
//! - Atomic: one [`WriteTxn`] (a whole Raft batch plus Raft's applied log id) lands whole or not
//!   at all ([`journal`]), so a crash leaves the store at a batch boundary, never inside one.
//! - Records are only ever added at the new revision; old revisions are removed only by
//!   compaction, and only below the compacted revision, so a reader that fixes a revision first
//!   sees a stable view; it holds the key index's lock only while it looks records up.

mod apply;
mod history;
mod index;
mod journal;
mod keys;
mod lease;
mod range;
mod reader;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::pb::{self, KeyValue};
use crate::{Error, Result};
pub use apply::{put_cost, txn_cost, Committed, WriteTxn, LEASE_OVERHEAD_BYTES};
pub use history::lacks_prev_kv;

/// A member's attributes as the state machine keeps them (published through the log).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttributes {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// An active alarm: which member raised it, and which kind (etcd's AlarmType numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Alarm {
    pub member_id: u64,
    pub alarm: i32,
}

const META_REVISION: &str = "revision";

/// The store revision, if `(key, value)` is the store's record of it (as exported).
pub fn exported_revision(key: &[u8], value: &[u8]) -> Option<i64> {
    if key != keys::meta_key(META_REVISION).as_slice() {
        return None;
    }
    value.try_into().ok().map(i64::from_be_bytes)
}
const META_COMPACTED: &str = "compacted";
const META_MEMBERS: &str = "members";
const META_ALARMS: &str = "alarms";
/// Entries per sled batch when an install removes the store's entries, and per handoff from the
/// thread decoding a snapshot to its inserters. sled keeps every version of a node that a batch
/// replaces until the batch ends (the batch pins its epoch): loading in batches of 10,000, a
/// member installing a 100,000-key snapshot peaked at 230 MiB resident, with 1,000 at 115 MiB
/// (benches/cluster, catch-up).
const REPLACE_BATCH: usize = 1_000;
const META_REMOVED_MEMBERS: &str = "removed_members";
/// Threads inserting a snapshot's entries into sled while the caller's thread decodes them.
/// sled's inserts (about 4 µs each) were most of an install: one thread decoding and inserting
/// took 530 ms to load 90,000 records; with two inserters beside the decoder a new member caught
/// up a 100,000-key store in 863 ms instead of 1,083 (benches/cluster catch-up, p50 of 4
/// interleaved rounds, 2 cores; more inserters were not measured).
const LOAD_INSERTERS: usize = 2;
/// Store entries (key, value) on their way from a snapshot's decoder to an inserter.
type EntryBatch = Vec<(Vec<u8>, Vec<u8>)>;

/// Handle to the MVCC store. Cheap to clone; reads take the key index's lock only briefly.
/// Open one per tree and clone it: the clones share the key index, which a second handle on the
/// tree would not see updated.
#[derive(Clone)]
pub struct KvStore {
    tree: sled::Tree,
    index: index::KeyIndex,
    /// Snapshot installs begun plus those ended: odd while one replaces the store, which it
    /// empties before it refills it (or after one failed). Reads check it before and after they
    /// read, the state machine's own included.
    installs: Arc<AtomicU64>,
    /// The store revision as of the last whole write or load (see [`KvStore::last_revision`]).
    last_revision: Arc<AtomicI64>,
    /// Held for writing while an apply writes its changes, which readers see one by one
    /// (`kv::journal`); held for reading by a read of several keys that must see an apply
    /// whole or not at all.
    applying: Arc<RwLock<()>>,
}

impl KvStore {
    /// Opens the store in `tree`: converts records stored as data dirs of format 1 stored them,
    /// then lists every record in the key index.
    pub fn open(tree: sled::Tree) -> Result<KvStore> {
        if journal::finish_interrupted(&tree)? {
            tracing::info!("completed the last apply, which a crash had interrupted");
        }
        let converted = convert_format_1_records(&tree)?;
        if converted > 0 {
            tracing::info!(records = converted, "stored the records by revision (data dir format 1 to 2)");
        }
        let index = index::KeyIndex::default();
        index.rebuild(&tree)?;
        let store =
            KvStore { tree, index, installs: Arc::default(), last_revision: Arc::default(), applying: Arc::default() };
        store.settle_revision()?;
        Ok(store)
    }

    /// A reader of the store, for reads at or below a store revision read before.
    fn reader(&self) -> reader::StoreReader<'_> {
        reader::StoreReader { store: self }
    }

    /// The record of the key with `prefix` at `rev`, under its logical key; None when
    /// compaction removed it.
    fn read_record(&self, prefix: &[u8], rev: i64) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(value) = self.tree.get(keys::stored(prefix, rev))? else { return Ok(None) };
        let mut record = prefix.to_vec();
        record.extend_from_slice(&rev.to_be_bytes());
        Ok(Some((record, value.to_vec())))
    }

    /// The key's value as its record at `rev` holds it: None when there is no such record (a
    /// compaction removed it meanwhile) or it is a deletion.
    fn read_value(&self, prefix: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        let Some(value) = self.tree.get(keys::stored(prefix, rev))? else { return Ok(None) };
        decode_record(keys::user_key(prefix), &value)
    }

    /// The store revision: 1 for an empty store, +1 for each mutating request. Refused while a
    /// snapshot install replaces the store (see [`KvStore::outside_installs`]), where it could
    /// read 1 and a response header's revision would go backwards; the state machine's own
    /// reads of it too, so that after a failed install it applies nothing.
    pub fn revision(&self) -> Result<i64> {
        self.outside_installs(|| Ok(self.meta_i64(META_REVISION)?.unwrap_or(1)))
    }

    /// The store revision as of the last write or snapshot load that completed: what response
    /// headers report. Unlike [`KvStore::revision`] never refused, and never going back while a
    /// snapshot install empties the store (an install only moves it on, to the leader's).
    pub fn last_revision(&self) -> i64 {
        self.last_revision.load(Ordering::SeqCst)
    }

    /// Records the revision the store holds as its last revision; after each whole write or load.
    fn settle_revision(&self) -> Result<()> {
        let revision = self.meta_i64(META_REVISION)?.unwrap_or(1);
        self.last_revision.store(revision, Ordering::SeqCst);
        Ok(())
    }

    /// The revision history was compacted at; reads below it are refused. -1 (as in etcd) when
    /// never compacted, so compacting at 0 is allowed once.
    pub fn compacted_revision(&self) -> Result<i64> {
        Ok(self.meta_i64(META_COMPACTED)?.unwrap_or(-1))
    }

    pub fn meta(&self, name: &str) -> Result<Option<sled::IVec>> {
        Ok(self.tree.get(keys::meta_key(name))?)
    }

    fn meta_i64(&self, name: &str) -> Result<Option<i64>> {
        decode_i64(self.meta(name)?)
    }

    /// The members' published names and client URLs (refused during an install, as `revision`).
    pub fn members(&self) -> Result<BTreeMap<u64, MemberAttributes>> {
        self.outside_installs(|| decode_bincode(self.meta(META_MEMBERS)?))
    }

    /// IDs of members removed from the cluster: never to be used or heard from again (refused
    /// during an install, as `revision`: a half-loaded store would forget some of them).
    pub fn removed_members(&self) -> Result<std::collections::BTreeSet<u64>> {
        self.outside_installs(|| decode_bincode(self.meta(META_REMOVED_MEMBERS)?))
    }

    /// The active alarms (refused during an install, as `revision`).
    pub fn alarms(&self) -> Result<Vec<Alarm>> {
        self.outside_installs(|| decode_bincode(self.meta(META_ALARMS)?))
    }

    /// etcd's Range, served from local state (the caller has done any linearizable round).
    pub fn range(&self, req: &pb::RangeRequest) -> Result<pb::RangeResponse> {
        self.outside_installs(|| {
            self.read_past_compaction(|current, compacted| range::range(&self.reader(), req, current, compacted))
        })
    }

    /// Runs a txn that writes nothing against local state, without Raft.
    pub fn read_only_txn(&self, req: &pb::TxnRequest) -> Result<pb::TxnResponse> {
        self.outside_installs(|| self.read_past_compaction(|_, _| self.write()?.txn(req)))
    }

    /// Runs `read` and answers what it found, unless a snapshot install replaced the store
    /// meanwhile (a seqlock): such a read may have seen the store half emptied or half refilled,
    /// so it fails with [`Error::Installing`] at once. It does not block until the install ends:
    /// reads run on the async runtime's few threads. The API waits the install out and reads
    /// again (`api::Context::wait_out_installs`), as etcd's reads wait.
    fn outside_installs<T>(&self, read: impl FnOnce() -> Result<T>) -> Result<T> {
        let before = self.installs.load(Ordering::SeqCst);
        if before % 2 == 1 {
            return Err(Error::Installing);
        }
        let result = read();
        // What `read` read must not be ordered after the second look at the counter.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.installs.load(Ordering::SeqCst) != before {
            return Err(Error::Installing);
        }
        result
    }

    /// Keeps applies from writing while the guard lives (see [`KvStore::applying`]).
    fn whole_applies(&self) -> RwLockReadGuard<'_, ()> {
        self.applying.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `read` at the current store revision and compaction point, which it is given. A
    /// compaction applied while it went on may have removed records it needed (see [`index`]),
    /// so a read during which the compaction point moved runs again, and its checks then see the
    /// new point: a read at a chosen revision below it fails as it would have a moment later.
    /// Only what the read itself checks counts, so a txn's branch not taken can read anything.
    fn read_past_compaction<T>(&self, read: impl Fn(i64, i64) -> Result<T>) -> Result<T> {
        loop {
            // In this order, the revision is at or above the compaction point.
            let compacted = self.compacted_revision()?;
            let current = self.revision()?;
            let result = read(current, compacted);
            if self.compacted_revision()? == compacted {
                return result;
            }
        }
    }

    /// Starts the write transaction that applies one batch of committed entries.
    pub fn write(&self) -> Result<WriteTxn<'_>> {
        WriteTxn::new(self)
    }

    /// A hash of the logical MVCC history up to `revision` (0 = current): members holding the same
    /// data return the same hash, however far their physical compaction has progressed.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64)> {
        self.outside_installs(|| loop {
            let hashed = self.compute_hash_kv(revision)?;
            // A compaction applied meanwhile may have removed records the hash read at the old
            // compaction point, and skipped: hash again at the new one. Physical compaction only
            // follows the new point being recorded, so an unchanged one means nothing was missed.
            if self.compacted_revision()? == hashed.1 {
                return Ok(hashed);
            }
        })
    }

    fn compute_hash_kv(&self, revision: i64) -> Result<(u32, i64, i64)> {
        let current = self.revision()?;
        let compacted = self.compacted_revision()?;
        // etcd refuses a revision asked for at the compaction point too (not the current one).
        let (revision, refused_up_to) = if revision <= 0 { (current, compacted - 1) } else { (revision, compacted) };
        if revision > current {
            return Err(Error::FutureRevision);
        }
        if revision <= refused_up_to {
            return Err(Error::Compacted);
        }
        let mut hasher = crc32fast::Hasher::new();
        for (prefix, changes) in self.index.all() {
            // The newest record at the compaction point counts if it is a put (as if compaction
            // had run), then every record since, up to `revision`.
            let at_compaction = changes.iter().rev().find(|c| c.revision() <= compacted).filter(|c| !c.is_deletion());
            let since = changes.iter().filter(|c| c.revision() > compacted && c.revision() <= revision);
            for change in at_compaction.into_iter().chain(since) {
                if let Some((record, value)) = self.read_record(&prefix, change.revision())? {
                    hasher.update(&record);
                    hasher.update(&value);
                }
            }
        }
        hasher.update(&compacted.to_be_bytes());
        Ok((hasher.finalize(), compacted, revision))
    }

    /// Removes history below the compacted revision. Logically a no-op: readers below it are
    /// already refused. Runs outside the apply batch because its size is unbounded.
    ///
    /// Per key it keeps the newest record at or below the compacted revision, unless that is a
    /// deletion older than the compacted revision: a deletion exactly at it is kept, so that a
    /// watch starting at the compacted revision still sees it (etcd #18089).
    pub fn compact_physically(&self) -> Result<usize> {
        let doomed = self.index.compactable(self.compacted_revision()?);
        let mut batch = sled::Batch::default();
        doomed.iter().for_each(|(prefix, rev)| batch.remove(keys::stored(prefix, *rev)));
        self.tree.apply_batch(batch)?;
        self.index.forget(&doomed);
        Ok(doomed.len())
    }

    /// Every entry but the records (meta, leases and the keys attached to them), for a snapshot:
    /// these change in place with every apply, so they are copied while apply pauses.
    pub fn export_state(&self) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_ {
        let (records, past_records) = keys::all_stored();
        let state = self.tree.range(..records).chain(self.tree.range(past_records..));
        // A journal left by a failed apply belongs to this store only: its next open redoes it.
        state
            .filter(|item| item.as_ref().map_or(true, |(key, _)| !journal::is_journal(key)))
            .map(|item| item.map_err(Error::from))
    }

    /// The records of revisions up to `revision`, for a snapshot of the store at `revision`,
    /// under their logical keys (snapshot files hold those, whatever the stored layout).
    /// Records are never changed once written, so these can be copied while apply goes on, as
    /// long as no physical compaction removes any meanwhile (the caller holds it off).
    pub fn export_records(&self, revision: i64) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec)>> + '_ {
        let (start, end) = keys::stored_revisions(0, revision);
        self.tree.range(start..end).map(|item| {
            let (stored, value) = item?;
            Ok((sled::IVec::from(keys::logical_key(&stored)?), value))
        })
    }

    /// Replaces the whole store with the entries of a snapshot, in batches of bounded size so
    /// that no snapshot has to fit in memory. Not atomic: the caller guards it (a crash part
    /// way must be followed by loading the snapshot again). Client reads are refused from the
    /// start, and stay refused if it fails: the store is then neither the old one nor the new.
    pub fn replace_all(&self, entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>) -> Result<()> {
        self.installs.fetch_add(1, Ordering::SeqCst);
        self.index.clear();
        match self.remove_everything() {
            Ok(()) => {
                crate::faults::hold_install();
                self.load(entries)?
            }
            // The index must still list what the tree holds.
            Err(e) => return self.index.rebuild(&self.tree).and(Err(e)),
        }
        self.installs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a snapshot install is replacing the store (or one failed part way).
    pub fn installing(&self) -> bool {
        self.installs.load(Ordering::SeqCst) % 2 == 1
    }

    fn remove_everything(&self) -> Result<()> {
        loop {
            let doomed: Vec<sled::IVec> = self.tree.iter().keys().take(REPLACE_BATCH).collect::<sled::Result<_>>()?;
            if doomed.is_empty() {
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            doomed.into_iter().for_each(|key| batch.remove(key));
            self.tree.apply_batch(batch)?;
        }
    }

    /// Adds a snapshot's entries to the store, in batches of bounded size: records (under their
    /// logical keys in the snapshot) where the layout stores them. Into an empty store (as every
    /// caller loads) the key index is built from the entries as they go in, in one pass instead
    /// of two; otherwise it is rebuilt from the tree.
    pub fn load(&self, entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>) -> Result<()> {
        let was_empty = self.tree.is_empty();
        let mut built = index::Builder::default();
        let loaded = self.load_records(entries, &mut built);
        if loaded.is_ok() && was_empty {
            self.index.replace(built);
            return self.settle_revision();
        }
        // Also when loading failed part way: the index lists what the tree holds.
        let listed = self.index.rebuild(&self.tree);
        loaded.and(listed)?;
        self.settle_revision()
    }

    /// Decodes `entries` on this thread (their stored keys, and the key index) and hands them
    /// in batches to [`LOAD_INSERTERS`] threads that insert them. Plain inserts, not sled
    /// batches: a load is not atomic anyway (its caller guards it), and a sled batch excludes
    /// every other write to the tree while it applies, which would leave one inserter working.
    fn load_records(
        &self,
        entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
        index: &mut index::Builder,
    ) -> Result<()> {
        std::thread::scope(|scope| {
            let (handoffs, inserters): (Vec<_>, Vec<_>) = (0..LOAD_INSERTERS)
                .map(|_| {
                    // Two batches queued per inserter keep it busy and memory bounded.
                    let (handoff, batches) = std::sync::mpsc::sync_channel::<EntryBatch>(2);
                    let tree = &self.tree;
                    let inserter = scope.spawn(move || -> Result<()> {
                        for (key, value) in batches.into_iter().flatten() {
                            tree.insert(key, value)?;
                        }
                        Ok(())
                    });
                    (handoff, inserter)
                })
                .unzip();
            let mut handed_off = 0;
            let decoded = decode_records(entries, index, |batch| {
                // Each inserter in turn; one that has gone away failed, and says why below.
                let handoff = &handoffs[handed_off % LOAD_INSERTERS];
                handed_off += 1;
                handoff.send(batch).map_err(|_| Error::Internal("a snapshot inserter stopped".into()))
            });
            drop(handoffs);
            // An inserter's own error explains a decoder that stopped because it went away.
            let inserted = inserters.into_iter().try_for_each(|inserter| {
                inserter.join().unwrap_or_else(|_| Err(Error::Internal("a snapshot load thread panicked".into())))
            });
            inserted.and(decoded)
        })
    }

    /// Removes what the store recorded of the cluster it ran in (its members' attributes, the
    /// members removed from it, the alarms its members raised) and the meta entries named in
    /// `also`: a restored store starts a new cluster, whose members are not those.
    pub fn forget_cluster(&self, also: &[&str]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for name in [META_MEMBERS, META_REMOVED_MEMBERS, META_ALARMS].iter().chain(also) {
            batch.remove(keys::meta_key(name));
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Bytes sled uses on disk for the whole database.
    pub fn size_on_disk(&self, db: &sled::Db) -> Result<u64> {
        Ok(db.size_on_disk()?)
    }

    /// Bytes the store's keys and values take, every kept revision included: about what etcd's
    /// bbolt file shrinks to when defragmented. sled reuses the space compaction frees but never
    /// gives its file back, so only this drops after a compaction. A scan of the whole store.
    pub fn size_in_use(&self) -> Result<u64> {
        self.tree.iter().try_fold(0u64, |total, entry| {
            let (key, value) = entry?;
            Ok(total + (key.len() + value.len()) as u64)
        })
    }
}

/// Moves records from where data dirs of format 1 stored them (under their logical keys) to
/// where they are stored now, in batches that each move some records whole: a crash part way
/// leaves every record in one place or the other, and the next open moves the rest. Returns
/// how many it moved.
fn convert_format_1_records(tree: &sled::Tree) -> Result<usize> {
    let (start, end) = keys::all_records();
    let mut moved = 0;
    loop {
        let records: Vec<(sled::IVec, sled::IVec)> =
            tree.range(start.clone()..end.clone()).take(REPLACE_BATCH).collect::<sled::Result<_>>()?;
        if records.is_empty() {
            return Ok(moved);
        }
        let mut batch = sled::Batch::default();
        for (record, value) in &records {
            batch.insert(keys::stored_key(record)?, value.clone());
            batch.remove(record.clone());
        }
        tree.apply_batch(batch)?;
        moved += records.len();
    }
}

/// Decodes a record value into the KeyValue it stores for `key`, or None for a deletion.
pub(crate) fn decode_record(key: Vec<u8>, value: &[u8]) -> Result<Option<KeyValue>> {
    let (kind, body) = split_record(value)?;
    match kind {
        keys::PUT => {
            let mut kv = KeyValue::decode(body)?;
            kv.key = key;
            Ok(Some(kv))
        }
        keys::TOMBSTONE => Ok(None),
        _ => Err(Error::Corrupt("unknown record kind".into())),
    }
}

/// What a put must know of the value it replaces: etcd's create_revision, version and lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Life {
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
}

impl Life {
    pub(crate) fn of(kv: &KeyValue) -> Life {
        Life { create_revision: kv.create_revision, version: kv.version, lease: kv.lease }
    }
}

/// The fields of a stored KeyValue that make its [`Life`], under KeyValue's field numbers:
/// decoding this skips the key and value without copying them.
#[derive(Clone, PartialEq, Message)]
struct StoredLife {
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(int64, tag = "6")]
    lease: i64,
}

/// The key's life as of a record; None if the record is a deletion.
pub(crate) fn decode_life(value: &[u8]) -> Result<Option<Life>> {
    let (kind, body) = split_record(value)?;
    match kind {
        keys::PUT => {
            let StoredLife { create_revision, version, lease } = StoredLife::decode(body)?;
            Ok(Some(Life { create_revision, version, lease }))
        }
        keys::TOMBSTONE => Ok(None),
        _ => Err(Error::Corrupt("unknown record kind".into())),
    }
}

/// A record's position among the changes of its revision (etcd's sub-revision).
pub(crate) fn record_sub(value: &[u8]) -> Result<u32> {
    let bytes = value.get(1..5).ok_or_else(|| Error::Corrupt("record without sub-revision".into()))?;
    Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| Error::Corrupt("sub-revision".into()))?))
}

/// Splits a record value `kind, sub-revision (4 bytes), body` into its kind and body.
fn split_record(value: &[u8]) -> Result<(u8, &[u8])> {
    match value {
        [kind, _, _, _, _, body @ ..] => Ok((*kind, body)),
        _ => Err(Error::Corrupt("truncated record".into())),
    }
}

pub(crate) fn encode_put(kv: &KeyValue, sub: u32) -> Vec<u8> {
    let stored = KeyValue { key: Vec::new(), ..kv.clone() };
    let mut out = Vec::with_capacity(5 + stored.encoded_len());
    out.push(keys::PUT);
    out.extend_from_slice(&sub.to_be_bytes());
    stored.encode(&mut out).expect("a Vec grows as needed");
    out
}

pub(crate) fn encode_tombstone(sub: u32) -> Vec<u8> {
    let mut out = vec![keys::TOMBSTONE];
    out.extend_from_slice(&sub.to_be_bytes());
    out
}

fn decode_i64(value: Option<sled::IVec>) -> Result<Option<i64>> {
    value
        .map(|v| {
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| Error::Corrupt("bad integer in meta".into()))?;
            Ok(i64::from_be_bytes(bytes))
        })
        .transpose()
}

fn decode_bincode<T: serde::de::DeserializeOwned + Default>(value: Option<sled::IVec>) -> Result<T> {
    match value {
        Some(bytes) => Ok(bincode::deserialize(&bytes)?),
        None => Ok(T::default()),
    }
}

/// Turns a snapshot's entries into what the store keeps (records under their stored keys),
/// indexes the records, and passes them on in batches of [`REPLACE_BATCH`] to `hand_off`.
/// Stops at the first bad entry, or the first batch `hand_off` refuses.
fn decode_records(
    entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    index: &mut index::Builder,
    mut hand_off: impl FnMut(EntryBatch) -> Result<()>,
) -> Result<()> {
    let mut batch = Vec::with_capacity(REPLACE_BATCH);
    for entry in entries {
        let (key, value) = entry?;
        let key = if keys::is_record(&key) {
            let (prefix, rev) = keys::split_record_key(&key)?;
            index.add(prefix.into(), rev, &value)?;
            keys::stored(prefix, rev)
        } else if keys::is_stored(&key) {
            // Snapshots name records by their logical keys; one here would go unindexed.
            return Err(Error::Corrupt("a snapshot entry under a stored record's key".into()));
        } else {
            key
        };
        batch.push((key, value));
        if batch.len() == REPLACE_BATCH {
            hand_off(std::mem::replace(&mut batch, Vec::with_capacity(REPLACE_BATCH)))?;
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    hand_off(batch)
}
