//! The revision of every key's newest record, in memory (etcd's treeIndex, reduced to the one
//! question the hot paths ask): finding a key's current value is then one point read of sled
//! instead of a range scan, which in sled 0.34 copies a whole leaf node per step.
//!
//! Invariants:
//! - Once built, the index holds, as of `revision`, the newest record revision of every key
//!   that has records in the tree. It may still name a key whose newest record (a deletion)
//!   physical compaction removed since: a point read then finds nothing, which is the right
//!   answer (the key does not exist), so the index is never wrong, only sometimes useless.
//! - It lags the tree between a batch's sled write and its index update, so an answer is only
//!   given for a read whose store revision (read from the tree first) the index has reached;
//!   otherwise the caller scans the tree.
//! - Built by the apply path, at the first commit after the store is opened or its records are
//!   replaced wholesale (snapshot install, restore), which drop it: apply runs one batch at a
//!   time, so the scan sees exactly the store at the revision just committed. Readers never
//!   wait for it: while the index is locked (being built or updated) or not built, they scan.
//! - Shared by every handle on the tree ([`super::KvStore`] clones). A second handle opened on
//!   the same tree has its own, which only its own commits move on: it is never wrong, because
//!   it answers no reader whose revision it has not reached, but it soon answers none.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use super::keys;
use crate::Result;

#[derive(Clone, Default)]
pub(super) struct KeyIndex(Arc<Mutex<Option<Built>>>);

struct Built {
    /// The store revision the index has reached: every batch committed up to it is in `newest`.
    revision: i64,
    /// Key prefix (see [`keys::key_prefix`]) -> revision of that key's newest record.
    newest: HashMap<Box<[u8]>, i64>,
}

/// What the index knows of a key's newest record at or below a revision.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Newest {
    /// The key has no record at or below the revision.
    Absent,
    /// Its newest record there is at this revision.
    At(i64),
    /// The index cannot tell: the tree must be scanned.
    Unknown,
}

impl KeyIndex {
    fn lock(&self) -> MutexGuard<'_, Option<Built>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest record of the key with `prefix` at or below `revision`, for a reader that
    /// read the store revision `as_of` before asking (the apply path also asks above `as_of`,
    /// where only its own pending writes are).
    pub(super) fn newest(&self, prefix: &[u8], revision: i64, as_of: i64) -> Newest {
        let guard = match self.0.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Newest::Unknown,
        };
        let Some(built) = guard.as_ref().filter(|built| built.revision >= as_of) else { return Newest::Unknown };
        match built.newest.get(prefix) {
            None => Newest::Absent,
            Some(&newest) if newest <= revision => Newest::At(newest),
            // Changed since `revision`: an older record may be the one visible there.
            Some(_) => Newest::Unknown,
        }
    }

    /// Takes in a batch just committed to `tree` by the apply path: `records` are the record
    /// keys it wrote, and the store is now at `revision`. Builds the index first if there is
    /// none; a failed build leaves none (readers scan) and is tried again at the next commit.
    pub(super) fn committed<'a>(&self, tree: &sled::Tree, records: impl Iterator<Item = &'a [u8]>, revision: i64) {
        let mut guard = self.lock();
        let Some(built) = guard.as_mut() else {
            *guard = build(tree, revision)
                .map_err(|e| tracing::warn!(error = %e, "could not build the key index; reads scan the store"))
                .ok();
            return;
        };
        for record in records {
            let Ok((prefix, rev)) = keys::split_record_key(record) else {
                // Not a record after all: start again from the tree rather than guess.
                *guard = None;
                return;
            };
            match built.newest.get_mut(prefix) {
                Some(newest) => *newest = (*newest).max(rev),
                None => {
                    built.newest.insert(prefix.into(), rev);
                }
            }
        }
        built.revision = built.revision.max(revision);
    }

    /// Compaction removed the key's newest record, a deletion at `revision`.
    pub(super) fn forget(&self, prefix: &[u8], revision: i64) {
        if let Some(built) = self.lock().as_mut() {
            if built.newest.get(prefix) == Some(&revision) {
                built.newest.remove(prefix);
            }
        }
    }

    /// The tree's records are being replaced: build again from them at the next commit.
    pub(super) fn invalidate(&self) {
        *self.lock() = None;
    }
}

fn build(tree: &sled::Tree, revision: i64) -> Result<Built> {
    let mut newest: HashMap<Box<[u8]>, i64> = HashMap::new();
    let (start, end) = keys::all_records();
    for record in tree.range(start..end).keys() {
        let record = record?;
        let (prefix, rev) = keys::split_record_key(&record)?;
        // Records come in key order, each key's by revision: the last one seen is the newest.
        match newest.get_mut(prefix) {
            Some(newest) => *newest = rev,
            None => {
                newest.insert(prefix.into(), rev);
            }
        }
    }
    tracing::debug!(keys = newest.len(), revision, "built the key index");
    Ok(Built { revision, newest })
}
