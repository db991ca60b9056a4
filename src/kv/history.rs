//! Reading the event history back out of the MVCC records, for watchers that start in the past
//! or fell behind: the same events, in the same order, as they were delivered live, but without
//! previous values (live puts carry none either): [`KvStore::fill_prev_kvs`] reads those for the
//! watchers that ask.

use super::{decode_record, keys, record_sub, KvStore};
use crate::pb::mvccpb::{event::EventType, Event};
use crate::pb::{KeyValue, RangeRequest};
use crate::{Error, Result};

impl KvStore {
    /// The events of keys in `[key, range_end)` (etcd's range conventions) with revisions in
    /// `[from, to]`, without previous values, ordered by revision and position within the
    /// revision (the tree stores those revisions' records together). Refused when `from` is
    /// below the compacted revision: that history is gone.
    pub fn history(&self, key: &[u8], range_end: &[u8], from: i64, to: i64) -> Result<Vec<Event>> {
        self.outside_installs(|| self.read_history(key, range_end, from, to))
    }

    fn read_history(&self, key: &[u8], range_end: &[u8], from: i64, to: i64) -> Result<Vec<Event>> {
        if from < self.compacted_revision()? {
            return Err(Error::Compacted);
        }
        let mut events: Vec<(i64, u32, Event)> = Vec::new();
        for (prefix, rev, value) in self.records_between(key, range_end, from, to)? {
            let user_key = keys::user_key(&prefix);
            let kv = decode_record(user_key.clone(), &value)?;
            events.push((rev, record_sub(&value)?, event(user_key, rev, kv)));
        }
        // A compaction that finished while we read may have removed records we needed.
        if from < self.compacted_revision()? {
            return Err(Error::Compacted);
        }
        events.sort_by_key(|(rev, sub, _)| (*rev, *sub));
        Ok(events.into_iter().map(|(_, _, event)| event).collect())
    }
}

impl KvStore {
    /// The records (key prefix, revision, value) of keys in `[key, range_end)` with revisions in
    /// `[from, to]`: one key's through the index, a range's by reading those revisions whole.
    fn records_between(&self, key: &[u8], range_end: &[u8], from: i64, to: i64) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        if range_end.is_empty() {
            let prefix = keys::key_prefix(key);
            let wanted = self.index.changes_of(&prefix).into_iter().map(|change| change.revision());
            for rev in wanted.filter(|rev| (from..=to).contains(rev)) {
                // None: compaction removed it meanwhile, which the caller finds out.
                if let Some((_, value)) = self.read_record(&prefix, rev)? {
                    records.push((prefix.clone(), rev, value));
                }
            }
            return Ok(records);
        }
        let (start, end) = keys::record_range(key, range_end);
        let (first, last) = keys::stored_revisions(from, to);
        for item in self.tree.range(first..last) {
            let (stored, value) = item?;
            let (prefix, rev) = keys::split_stored_key(&stored)?;
            if prefix >= start && prefix < end {
                records.push((prefix, rev, value.to_vec()));
            }
        }
        Ok(records)
    }
}

/// A record as [`KvStore::records_between`] finds it: key prefix, revision, value.
type Record = (Vec<u8>, i64, Vec<u8>);

/// Whether `event` changed a key that existed before it (a deletion, or a put that replaced a
/// value) and lacks that earlier value.
pub fn lacks_prev_kv(event: &Event) -> bool {
    let replaced = event.r#type == EventType::Delete as i32 || event.kv.as_ref().is_some_and(|kv| kv.version > 1);
    replaced && event.prev_kv.is_none()
}

impl KvStore {
    /// Gives each event in `events` that replaced or deleted a value, and does not carry it, that
    /// value: the key as of the revision before the event. As in etcd's watch streams, which read
    /// it the same way for watchers that ask, a value compaction has removed since is left out. Any other
    /// failure (the store being replaced by a snapshot, say) is the caller's to handle: the
    /// events must not go out without the values the watcher asked for.
    pub fn fill_prev_kvs(&self, events: &mut [Event]) -> Result<()> {
        for event in events.iter_mut().filter(|event| lacks_prev_kv(event)) {
            let Some(kv) = &event.kv else { continue };
            let before = RangeRequest { key: kv.key.clone(), revision: kv.mod_revision - 1, ..Default::default() };
            match self.range(&before) {
                Ok(found) => event.prev_kv = found.kvs.into_iter().next(),
                Err(Error::Compacted) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn event(key: Vec<u8>, revision: i64, kv: Option<KeyValue>) -> Event {
    match kv {
        Some(kv) => Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None },
        None => Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue { key, mod_revision: revision, ..Default::default() }),
            prev_kv: None,
        },
    }
}
