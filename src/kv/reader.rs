//! Reading MVCC records, either from the store as of a revision the reader has seen (the read
//! path) or through the pending writes of an apply batch (so later commands in a batch see the
//! earlier ones).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{decode_life, decode_record, keys, KvStore, Life};
use crate::pb::KeyValue;
use crate::{Error, Result};

type Entry = (Vec<u8>, Vec<u8>);

pub(crate) trait Reader {
    /// For each key in the logical record range `[start, end)`, its newest record at or below
    /// `revision`, in key order (more of its records, and records of keys deleted by then, may
    /// come too: [`VisibleKeys`] sorts them out).
    fn newest_records<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
        revision: i64,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + 'a>;

    /// The newest record of `key` at or below `revision`; None also when that is a deletion.
    fn newest_record(&self, key: &[u8], revision: i64) -> Result<Option<Entry>>;

    /// The key's value as of `revision`, None if it did not exist then.
    fn get(&self, key: &[u8], revision: i64) -> Result<Option<KeyValue>> {
        match self.newest_record(key, revision)? {
            Some((_, value)) => decode_record(key.to_vec(), &value),
            None => Ok(None),
        }
    }

    /// The life of the key's value as of `revision`, None if it did not exist then: what a put
    /// that replaces the value needs, which readers that know it answer without a read.
    fn life(&self, key: &[u8], revision: i64) -> Result<Option<Life>> {
        Ok(self.get(key, revision)?.as_ref().map(Life::of))
    }

    /// The live keys of an etcd range as of `revision`, in key order.
    fn scan<'a>(
        &'a self,
        key: &[u8],
        range_end: &[u8],
        revision: i64,
    ) -> Box<dyn Iterator<Item = Result<KeyValue>> + 'a> {
        if range_end.is_empty() {
            // One key: a point lookup, where a range would copy the index's listing.
            return Box::new(self.get(key, revision).transpose().into_iter());
        }
        let (start, end) = keys::record_range(key, range_end);
        if start >= end {
            return Box::new(std::iter::empty());
        }
        Box::new(VisibleKeys { records: self.newest_records(&start, &end, revision).peekable(), revision })
    }

    /// etcd's range as of `revision`: how many live keys it holds, and the first `limit` of
    /// them in key order.
    fn scan_counted(&self, key: &[u8], range_end: &[u8], revision: i64, limit: usize) -> Result<(i64, Vec<KeyValue>)> {
        let mut count = 0;
        let mut kvs = Vec::new();
        for kv in self.scan(key, range_end, revision) {
            let kv = kv?;
            count += 1;
            if kvs.len() < limit {
                kvs.push(kv);
            }
        }
        Ok((count, kvs))
    }
}

/// The store as the key index lists it: a reader must have read the store revision before it
/// reads, and read at or below it (see [`super::index`]).
pub(crate) struct StoreReader<'a> {
    pub(crate) store: &'a KvStore,
}

impl Reader for StoreReader<'_> {
    fn newest_records<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
        revision: i64,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + 'a> {
        let (_, live) = self.store.index.live_in(start, end, revision, usize::MAX);
        Box::new(live.into_iter().filter_map(|(prefix, rev)| self.store.read_record(&prefix, rev).transpose()))
    }

    /// The index counts the keys and names the newest record of each, as etcd's range does, so
    /// only the records returned are read (none for a count), each straight into its answer. A
    /// named record the tree lacks is an error, never a count that disagrees with the keys: a
    /// compaction removed it meanwhile ([`super::KvStore::range`] then reads again), or the
    /// store is damaged.
    fn scan_counted(&self, key: &[u8], range_end: &[u8], revision: i64, limit: usize) -> Result<(i64, Vec<KeyValue>)> {
        let (start, end) = keys::record_range(key, range_end);
        let (count, first) = self.store.index.live_in(&start, &end, revision, limit);
        let kvs = first.iter().map(|(prefix, rev)| {
            self.store
                .read_value(prefix, *rev)?
                .ok_or_else(|| Error::Corrupt(format!("the key index names a put at {rev} the store does not hold")))
        });
        Ok((count as i64, kvs.collect::<Result<_>>()?))
    }

    fn newest_record(&self, key: &[u8], revision: i64) -> Result<Option<Entry>> {
        let prefix = keys::key_prefix(key);
        match self.store.index.newest(&prefix, revision) {
            Some(change) if !change.is_deletion() => self.store.read_record(&prefix, change.revision()),
            _ => Ok(None),
        }
    }

    fn life(&self, key: &[u8], revision: i64) -> Result<Option<Life>> {
        match self.store.index.life(&keys::key_prefix(key), revision) {
            Some(life) => Ok(life),
            None => Ok(self.get(key, revision)?.as_ref().map(Life::of)),
        }
    }
}

/// The store plus the records an apply batch has written but not yet committed. Writes during
/// apply only add records at new revisions (they never remove one), so a pending record always
/// shadows the store's.
pub(crate) struct Overlay<'a> {
    pub(crate) store: StoreReader<'a>,
    pub(crate) pending: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Reader for Overlay<'_> {
    fn newest_records<'a>(
        &'a self,
        start: &[u8],
        end: &[u8],
        revision: i64,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + 'a> {
        let pending = self
            .pending
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .filter_map(|(k, v)| v.as_ref().map(|v| Ok((k.clone(), v.clone()))));
        let stored = self.store.newest_records(start, end, revision).peekable();
        Box::new(MergeSorted { left: stored, right: pending.peekable() })
    }

    fn newest_record(&self, key: &[u8], revision: i64) -> Result<Option<Entry>> {
        let start = keys::key_prefix(key);
        let end = keys::record_key(key, revision);
        let mut pending = self.pending.range::<[u8], _>((Bound::Included(&start[..]), Bound::Included(&end[..])));
        match pending.next_back() {
            Some((k, Some(v))) => Ok(Some((k.clone(), v.clone()))),
            _ => self.store.newest_record(key, revision),
        }
    }

    fn life(&self, key: &[u8], revision: i64) -> Result<Option<Life>> {
        let start = keys::key_prefix(key);
        let end = keys::record_key(key, revision);
        let mut pending = self.pending.range::<[u8], _>((Bound::Included(&start[..]), Bound::Included(&end[..])));
        match pending.next_back() {
            Some((_, Some(v))) => decode_life(v),
            _ => self.store.life(key, revision),
        }
    }
}

/// Merges two iterators sorted by key; on equal keys the right one wins.
struct MergeSorted<L: Iterator, R: Iterator> {
    left: std::iter::Peekable<L>,
    right: std::iter::Peekable<R>,
}

impl<L, R> Iterator for MergeSorted<L, R>
where
    L: Iterator<Item = Result<Entry>>,
    R: Iterator<Item = Result<Entry>>,
{
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_left = match (self.left.peek(), self.right.peek()) {
            (Some(Ok((l, _))), Some(Ok((r, _)))) => {
                if l == r {
                    self.left.next();
                    false
                } else {
                    l < r
                }
            }
            (Some(_), None) | (Some(Err(_)), _) => true,
            (None, Some(_)) | (Some(Ok(_)), Some(Err(_))) => false,
            (None, None) => return None,
        };
        if take_left {
            self.left.next()
        } else {
            self.right.next()
        }
    }
}

/// Groups records by key and yields each key's newest version at or below the revision, skipping
/// keys that did not exist then.
struct VisibleKeys<I: Iterator<Item = Result<Entry>>> {
    records: std::iter::Peekable<I>,
    revision: i64,
}

impl<I: Iterator<Item = Result<Entry>>> VisibleKeys<I> {
    fn next_key(&mut self) -> Result<Option<Option<KeyValue>>> {
        let Some(first) = self.records.next() else { return Ok(None) };
        let (record, value) = first?;
        let (prefix, rev) = keys::split_record_key(&record)?;
        let prefix = prefix.to_vec();
        let mut newest = (rev <= self.revision).then_some(value);
        while let Some(Ok((next, _))) = self.records.peek() {
            let (next_prefix, next_rev) = keys::split_record_key(next)?;
            if next_prefix != prefix.as_slice() {
                break;
            }
            let (_, value) = self.records.next().expect("peeked")?;
            if next_rev <= self.revision {
                newest = Some(value);
            }
        }
        match newest {
            Some(value) => Ok(Some(decode_record(keys::user_key(&prefix), &value)?)),
            None => Ok(Some(None)),
        }
    }
}

impl<I: Iterator<Item = Result<Entry>>> Iterator for VisibleKeys<I> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_key() {
                Ok(Some(Some(kv))) => return Some(Ok(kv)),
                Ok(Some(None)) => continue,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
