//! The revisions of every key's records, in memory (etcd's treeIndex): the tree stores records
//! by revision ([`super::keys`]), so this is how reads find a key's records. It also keeps each
//! key's [`Life`] as of its newest record, which is all a put needs of the value it replaces,
//! so that a put reads nothing from the tree.
//!
//! Invariants:
//! - It lists every record the tree holds, each key's in revision order. It may list more: the
//!   apply path adds a batch's records here just before it writes them, so that a reader, which
//!   reads the store revision first and then asks only at or below it, never misses a record.
//!   A record it lists above the store's revision is never asked for.
//! - Compaction removes records from the tree first and from the index after: meanwhile a
//!   listed record may be gone, and reading it finds nothing. Compaction only removes records
//!   that no read at or above the compacted revision needs, or a deletion (the key is absent
//!   either way); a read below it that began before the compaction was applied may miss a
//!   record it needs, so readers check the compacted revision once they have read
//!   ([`super::KvStore::range`]).
//! - Built from the tree when the store is opened, and from a snapshot's entries as a load
//!   writes them when a snapshot replaces the store ([`Builder`]).
//!   Every user of a tree shares one index ([`super::KvStore`] clones): a second handle opened
//!   on the same tree builds its own, which sees none of the first handle's later writes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{decode_life, keys, Life};
use crate::Result;

/// Key prefix (see [`keys::key_prefix`]) -> that key's records.
type Changes = BTreeMap<Box<[u8]>, Records>;

/// One record of a key: the key's prefix and the record's revision.
pub(super) type RecordAt = (Box<[u8]>, i64);

#[derive(Default)]
struct Records {
    /// Oldest first.
    changes: Vec<Change>,
    /// The key's life as of its newest record; None if that is a deletion.
    life: Option<Life>,
}

#[derive(Clone, Default)]
pub(super) struct KeyIndex(Arc<RwLock<Changes>>);

/// One record of a key: its revision, negated for a deletion (8 bytes a record, not 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Change(i64);

impl Change {
    pub(super) fn new(revision: i64, deletion: bool) -> Change {
        Change(if deletion { -revision } else { revision })
    }

    pub(super) fn revision(self) -> i64 {
        self.0.abs()
    }

    pub(super) fn is_deletion(self) -> bool {
        self.0 < 0
    }
}

impl KeyIndex {
    fn read(&self) -> RwLockReadGuard<'_, Changes> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Changes> {
        self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lists the records `tree` holds, replacing what the index listed.
    pub(super) fn rebuild(&self, tree: &sled::Tree) -> Result<()> {
        let mut built = Builder::default();
        let (start, end) = keys::all_stored();
        for item in tree.range(start..end) {
            let (stored, value) = item?;
            let (prefix, rev) = keys::split_stored_key(&stored)?;
            built.add(prefix.into_boxed_slice(), rev, &value)?;
        }
        self.replace(built);
        Ok(())
    }

    /// Lists what `built` lists, and nothing else.
    pub(super) fn replace(&self, built: Builder) {
        tracing::debug!(keys = built.0.len(), "built the key index");
        *self.write() = built.0;
    }

    /// Lists nothing: the tree's records are being replaced.
    pub(super) fn clear(&self) {
        self.write().clear();
    }

    /// The key's newest record at or below `revision`.
    pub(super) fn newest(&self, prefix: &[u8], revision: i64) -> Option<Change> {
        self.read().get(prefix).and_then(|records| newest_at(&records.changes, revision))
    }

    /// The key's life as of `revision` (None inside: it did not exist then), when that is the
    /// life of its newest record; None when the key changed after `revision`.
    pub(super) fn life(&self, prefix: &[u8], revision: i64) -> Option<Option<Life>> {
        let index = self.read();
        let Some(records) = index.get(prefix) else { return Some(None) };
        match records.changes.last() {
            Some(newest) if newest.revision() > revision => None,
            _ => Some(records.life),
        }
    }

    /// How many keys with a prefix in `[start, end)` exist at `revision`, and for the first
    /// `limit` of them (in key order) the prefix and the revision of the newest record there (a
    /// put): what etcd's range reads from its index before it reads any value.
    pub(super) fn live_in(&self, start: &[u8], end: &[u8], revision: i64, limit: usize) -> (usize, Vec<RecordAt>) {
        if start >= end {
            return (0, Vec::new());
        }
        let index = self.read();
        let mut live =
            index.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))).filter_map(|(prefix, records)| {
                let newest = newest_at(&records.changes, revision).filter(|change| !change.is_deletion())?;
                Some((prefix, newest.revision()))
            });
        let first: Vec<_> = live.by_ref().take(limit).map(|(prefix, rev)| (prefix.clone(), rev)).collect();
        (first.len() + live.count(), first)
    }

    /// The key's records, oldest first.
    pub(super) fn changes_of(&self, prefix: &[u8]) -> Vec<Change> {
        self.read().get(prefix).map(|records| records.changes.clone()).unwrap_or_default()
    }

    /// Every key's records, in key order (a copy, so the caller holds no lock while it reads).
    pub(super) fn all(&self) -> Vec<(Box<[u8]>, Vec<Change>)> {
        self.read().iter().map(|(prefix, records)| (prefix.clone(), records.changes.clone())).collect()
    }

    /// Adds records about to be written (key prefix, record, the key's life as of it), each
    /// key's in revision order. Revisions only grow, so each goes at the end of its key's list.
    pub(super) fn add(&self, added: impl IntoIterator<Item = (Vec<u8>, Change, Option<Life>)>) {
        let mut index = self.write();
        for (prefix, change, life) in added {
            let records = index.entry(prefix.into_boxed_slice()).or_default();
            debug_assert!(records.changes.last().is_none_or(|last| last.revision() < change.revision()));
            records.changes.push(change);
            records.life = life;
        }
    }

    /// The records compaction at `compacted` removes: per key, those older than its newest
    /// record at or below `compacted`, and that one too when it is a deletion below `compacted`
    /// (a deletion exactly at it stays, so that a watch from the compacted revision sees it).
    pub(super) fn compactable(&self, compacted: i64) -> Vec<RecordAt> {
        let mut doomed = Vec::new();
        for (prefix, Records { changes, .. }) in self.read().iter() {
            let kept = changes.partition_point(|c| c.revision() <= compacted);
            let Some(newest) = kept.checked_sub(1).map(|i| changes[i]) else { continue };
            let dead = newest.is_deletion() && newest.revision() < compacted;
            let upto = if dead { kept } else { kept - 1 };
            doomed.extend(changes[..upto].iter().map(|c| (prefix.clone(), c.revision())));
        }
        doomed
    }

    /// Compaction removed these records (as [`KeyIndex::compactable`] listed them, grouped by
    /// key) from the tree.
    pub(super) fn forget(&self, removed: &[RecordAt]) {
        let mut index = self.write();
        for group in removed.chunk_by(|a, b| a.0 == b.0) {
            let prefix = &group[0].0;
            let Some(records) = index.get_mut(prefix) else { continue };
            let revs: std::collections::HashSet<i64> = group.iter().map(|(_, rev)| *rev).collect();
            // Never the newest record, unless it is a deletion and the key goes: its life stays.
            records.changes.retain(|c| !revs.contains(&c.revision()));
            if records.changes.is_empty() {
                index.remove(prefix);
            }
        }
    }
}

/// An index under construction, from records in any order: from the tree, or from a snapshot as
/// it is loaded (which saves reading the tree back). Both hold each key's records oldest first,
/// so a record almost always goes at the end of its key's list.
#[derive(Default)]
pub(super) struct Builder(Changes);

impl Builder {
    /// Lists the record of the key with `prefix` at `rev`, whose stored value is `value`.
    pub(super) fn add(&mut self, prefix: Box<[u8]>, rev: i64, value: &[u8]) -> Result<()> {
        let life = decode_life(value)?;
        let change = Change::new(rev, life.is_none());
        let records = self.0.entry(prefix).or_default();
        let at = records.changes.partition_point(|c| c.revision() < rev);
        if at == records.changes.len() {
            records.changes.push(change);
            records.life = life;
        } else if records.changes[at].revision() == rev {
            // The same record again: the tree keeps one, the later.
            records.changes[at] = change;
            if at + 1 == records.changes.len() {
                records.life = life;
            }
        } else {
            records.changes.insert(at, change);
        }
        Ok(())
    }
}

fn newest_at(changes: &[Change], revision: i64) -> Option<Change> {
    let visible = changes.partition_point(|c| c.revision() <= revision);
    visible.checked_sub(1).map(|i| changes[i])
}
