//! Writes one apply's changes to the store's tree so that a crash leaves all of them or none,
//! without a sled batch.
//!
//! sled 0.34 makes a batch crash-atomic by writing out its IO buffer before and after the
//! batch's manifest (`PageCache::pin_log`): two writes to the file, each handed to sled's IO
//! threads (waking all seven) and each waiting for the disk (`sync_file_range`), on every member
//! for every apply. Here the changes are written first as one value under a journal key (a
//! single insert is atomic), then one by one, and the journal is removed last; plain inserts
//! only fill sled's buffer, which goes to the disk with the next flush of the Raft log.
//!
//! Unlike a batch, whose inserts readers see all at once, plain inserts are seen one by one: the
//! caller orders the changes so that every state a reader can see in between is one it may
//! (the store's records before the revision that names them). An apply whose journal would be
//! over [`LARGEST_JOURNAL`] is written as a sled batch, as before: sled keeps a value that
//! large in a file of its own, which a power cut could lose while the log kept the changes
//! after it (sled's recovery skips such a value instead of stopping there).
//!
//! Invariants:
//! - The journal exists only while [`write`] runs, or after a crash in it. Nothing else writes
//!   the keys it writes meanwhile: applies run one at a time, snapshot loads wait for them, and
//!   a compaction deferred past a snapshot copy removes only old records, which no apply writes.
//! - sled recovers a prefix of its log (it stops at the first torn message): after a crash, the
//!   changes are either all absent with the journal, or partly present with the journal, or
//!   all present without it. [`finish_interrupted`] at open turns the middle case into the
//!   last, so the store is always at an apply boundary, as Raft's applied log id says.

use std::borrow::Cow;

use serde::{Serialize, Serializer};

use super::keys;
use crate::Result;

const JOURNAL: &str = "journal";

/// Well under the size from which sled keeps a value in a file of its own (a quarter of its
/// 512 KiB segments).
const LARGEST_JOURNAL: usize = 64 * 1024;

/// A key or value as the journal holds it: bincode writes its length and then its bytes in one
/// copy (serde would write a slice byte by byte), and reads it back as a borrowed `&[u8]`.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// One change to the tree: a key and its new value, or None to remove it.
pub(super) type Change<'a> = (Cow<'a, [u8]>, Option<&'a [u8]>);

/// Writes `changes` so that a crash leaves all or none of them, once [`finish_interrupted`] has
/// run at the next open.
pub(super) fn write(tree: &sled::Tree, changes: &[Change<'_>]) -> Result<()> {
    if journal_size(changes) > LARGEST_JOURNAL {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.insert(key.as_ref(), *value),
                None => batch.remove(key.as_ref()),
            }
        }
        return Ok(tree.apply_batch(batch)?);
    }
    tree.insert(keys::meta_key(JOURNAL), encode(changes)?)?;
    apply(tree, changes.iter().map(|(key, value)| (key.as_ref(), *value)))?;
    tree.remove(keys::meta_key(JOURNAL))?;
    Ok(())
}

/// Completes a [`write`] a crash interrupted, if any; whether there was one.
pub(super) fn finish_interrupted(tree: &sled::Tree) -> Result<bool> {
    let Some(journal) = tree.get(keys::meta_key(JOURNAL))? else { return Ok(false) };
    let changes: Vec<(&[u8], Option<&[u8]>)> = bincode::deserialize(&journal)?;
    apply(tree, changes.into_iter())?;
    tree.remove(keys::meta_key(JOURNAL))?;
    Ok(true)
}

/// Whether `key` is the journal's.
pub(super) fn is_journal(key: &[u8]) -> bool {
    keys::is_meta_key(key, JOURNAL)
}

/// The size of [`encode`]'s output, without encoding: bincode writes each key and value as
/// an 8-byte length and its bytes, and the value's Option as one byte.
fn journal_size(changes: &[Change<'_>]) -> usize {
    8 + changes.iter().map(|(key, value)| 8 + key.len() + 1 + value.map_or(0, |value| 8 + value.len())).sum::<usize>()
}

fn encode(changes: &[Change<'_>]) -> Result<Vec<u8>> {
    let framed: Vec<(Bytes<'_>, Option<Bytes<'_>>)> =
        changes.iter().map(|(key, value)| (Bytes(key), value.map(Bytes))).collect();
    Ok(bincode::serialize(&framed)?)
}

fn apply<'a>(tree: &sled::Tree, changes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Result<()> {
    for (key, value) in changes {
        match value {
            Some(value) => tree.insert(key, value)?,
            None => tree.remove(key)?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().expect("a temporary sled database");
        db.open_tree("kv").expect("a tree")
    }

    fn changes() -> Vec<Change<'static>> {
        vec![(Cow::Borrowed(b"a"), Some(b"1")), (Cow::Borrowed(b"gone"), None), (Cow::Owned(b"b".to_vec()), Some(b"2"))]
    }

    #[test]
    fn a_write_leaves_its_changes_and_no_journal() -> Result<()> {
        let tree = tree();
        tree.insert("gone", "old")?;
        write(&tree, &changes())?;
        assert_eq!(tree.get("a")?.as_deref(), Some(&b"1"[..]));
        assert_eq!(tree.get("b")?.as_deref(), Some(&b"2"[..]));
        assert_eq!(tree.get("gone")?, None);
        assert_eq!(tree.get(keys::meta_key(JOURNAL))?, None);
        assert!(!finish_interrupted(&tree)?);
        Ok(())
    }

    /// What a crash part way through a write leaves: the journal and some of its changes.
    #[test]
    fn an_interrupted_write_is_completed_at_the_next_open() -> Result<()> {
        let tree = tree();
        tree.insert("gone", "old")?;
        tree.insert(keys::meta_key(JOURNAL), encode(&changes())?)?;
        tree.insert("a", "1")?;

        assert!(finish_interrupted(&tree)?);
        assert_eq!(tree.get("a")?.as_deref(), Some(&b"1"[..]));
        assert_eq!(tree.get("b")?.as_deref(), Some(&b"2"[..]));
        assert_eq!(tree.get("gone")?, None);
        assert_eq!(tree.get(keys::meta_key(JOURNAL))?, None);
        Ok(())
    }

    /// A crash after the journal and the first change of a put's apply: the store opened again
    /// holds the whole apply, and its key index lists the put.
    #[test]
    fn a_store_opened_after_a_crash_mid_apply_holds_the_whole_apply() -> Result<()> {
        use std::collections::BTreeMap;

        use crate::kv::KvStore;
        use crate::pb::{command::Op, Command, PutRequest, RangeRequest};

        let put = |store: &KvStore, key: &str| -> Result<()> {
            let mut txn = store.write()?;
            let request = PutRequest { key: key.into(), value: b"v".to_vec(), ..Default::default() };
            txn.execute(&Command::from(Op::Put(request)))?;
            txn.commit().map(drop)
        };
        let contents = |tree: &sled::Tree| tree.iter().collect::<sled::Result<BTreeMap<_, _>>>();
        let db = sled::Config::new().temporary(true).open()?;
        let tree = db.open_tree("kv")?;
        let store = KvStore::open(tree.clone())?;
        put(&store, "a")?;
        let before = contents(&tree)?;
        put(&store, "b")?;
        let after = contents(&tree)?;

        let changes: Vec<Change<'_>> = after
            .iter()
            .filter(|(key, value)| before.get(*key) != Some(*value))
            .map(|(key, value)| (Cow::Borrowed(key.as_ref()), Some(value.as_ref())))
            .chain(before.keys().filter(|key| !after.contains_key(*key)).map(|key| (Cow::Borrowed(key.as_ref()), None)))
            .collect();
        let crashed = db.open_tree("crashed")?;
        for (key, value) in &before {
            crashed.insert(key, value)?;
        }
        crashed.insert(keys::meta_key(JOURNAL), encode(&changes)?)?;
        apply(&crashed, changes.iter().take(1).map(|(key, value)| (key.as_ref(), *value)))?;

        let reopened = KvStore::open(crashed.clone())?;
        assert_eq!(contents(&crashed)?, after);
        assert_eq!(reopened.revision()?, store.revision()?);
        let read = reopened.range(&RangeRequest { key: b"b".to_vec(), ..Default::default() })?;
        assert_eq!(read.count, 1);
        Ok(())
    }

    #[test]
    fn the_journal_size_is_what_encoding_writes() -> Result<()> {
        assert_eq!(journal_size(&changes()), encode(&changes())?.len());
        assert_eq!(journal_size(&[]), encode(&[])?.len());
        Ok(())
    }

    #[test]
    fn a_damaged_journal_is_an_error_and_changes_nothing() -> Result<()> {
        let tree = tree();
        tree.insert(keys::meta_key(JOURNAL), &[0xff; 5][..])?;
        assert!(finish_interrupted(&tree).is_err());
        assert_eq!(tree.len(), 1);
        Ok(())
    }
}
