//! How the state machine lays out its one sled tree.
//!
//! Entries are told apart by their first byte:
//! - records, stored as `'R' + revision (8 bytes, big endian) + escaped(user key) + 0x00 0x00`
//!   -> a put (`PUT`, the change's position within its revision (4 bytes), the KeyValue without
//!   its key) or a deletion (`TOMBSTONE`, the position). Every change of a key at a revision is
//!   one record, so history is kept until compaction removes it. Keyed by revision first, as
//!   etcd's bbolt keys them, so that every write appends to the end of the tree instead of
//!   touching a leaf somewhere in it; the key index ([`super::index`]) finds a key's records.
//! - meta: `'m' + name` -> a small value (current revision, compacted revision, Raft's applied id).
//! - leases: `'L' + ID` -> granted TTL, and `'A' + lease ID + user key` for each attached key.
//!
//! Everything above the tree names a record by its logical key instead, `'r' + escaped(user
//! key) + 0x00 0x00 + revision`, which sorts by user key, then revision: the apply batch, the
//! readers, and snapshot files (so their format did not change with the stored layout). Data
//! dirs of format 1 stored the logical keys; opening one converts them ([`stored_key`]).
//!
//! The escaping (0x00 -> 0x00 0xff, then a 0x00 0x00 terminator) keeps encoded keys in the same
//! order as user keys and makes no encoded key a prefix of another, so a user key range maps to
//! one contiguous range of logical keys, each key's records sorted by revision.

use crate::{Error, Result};

const RECORD: u8 = b'r';
const STORED: u8 = b'R';
const META: u8 = b'm';
const LEASE: u8 = b'L';
const ATTACHED: u8 = b'A';
pub(crate) const PUT: u8 = 1;
pub(crate) const TOMBSTONE: u8 = 0;

/// Everything before the revision: all records of one user key share it.
pub(crate) fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 11);
    out.push(RECORD);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

pub(crate) fn record_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&revision.to_be_bytes());
    out
}

pub(crate) fn meta_key(name: &str) -> Vec<u8> {
    let mut out = vec![META];
    out.extend_from_slice(name.as_bytes());
    out
}

/// Whether `key` is the meta entry `name`'s (see [`meta_key`]), without building that key.
pub(crate) fn is_meta_key(key: &[u8], name: &str) -> bool {
    key.split_first().is_some_and(|(&first, rest)| first == META && rest == name.as_bytes())
}

/// A lease: `'L' + ID (big endian)` -> its granted TTL in seconds (big endian).
pub(crate) fn lease_key(id: i64) -> Vec<u8> {
    let mut out = vec![LEASE];
    out.extend_from_slice(&id.to_be_bytes());
    out
}

pub(crate) fn all_leases() -> Vec<u8> {
    vec![LEASE]
}

/// The lease ID of a lease key.
pub(crate) fn lease_id(lease_key: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] =
        lease_key.get(1..9).and_then(|b| b.try_into().ok()).ok_or_else(|| Error::Corrupt("lease key".into()))?;
    Ok(i64::from_be_bytes(bytes))
}

/// A key attached to a lease: `'A' + lease ID + user key` -> nothing.
pub(crate) fn attached_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut out = attached_prefix(lease);
    out.extend_from_slice(key);
    out
}

pub(crate) fn attached_prefix(lease: i64) -> Vec<u8> {
    let mut out = vec![ATTACHED];
    out.extend_from_slice(&lease.to_be_bytes());
    out
}

pub(crate) fn is_record(key: &[u8]) -> bool {
    key.first() == Some(&RECORD)
}

/// Whether `key` is a stored record's key (see [`stored_key`]).
pub(crate) fn is_stored(key: &[u8]) -> bool {
    key.first() == Some(&STORED)
}

/// Splits a record key into its key prefix (see [`key_prefix`]) and revision.
pub(crate) fn split_record_key(record: &[u8]) -> Result<(&[u8], i64)> {
    if record.len() < 11 || record[0] != RECORD {
        return Err(Error::Corrupt(format!("malformed record key {record:?}")));
    }
    let (prefix, rev) = record.split_at(record.len() - 8);
    let rev = i64::from_be_bytes(rev.try_into().map_err(|_| Error::Corrupt("revision".into()))?);
    Ok((prefix, rev))
}

/// The user key of a key prefix.
pub(crate) fn user_key(prefix: &[u8]) -> Vec<u8> {
    let escaped = &prefix[1..prefix.len() - 2];
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&b) = bytes.next() {
        out.push(b);
        if b == 0 {
            bytes.next(); // the 0xff that escapes a zero byte
        }
    }
    out
}

/// The encoded record range `[start, end)` for etcd's `key`/`range_end` conventions: an empty
/// `range_end` is the single key, `"\0"` means every key from `key` on, otherwise `[key, range_end)`.
pub(crate) fn record_range(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = key_prefix(key);
    let end = match range_end {
        [] => {
            let mut end = start.clone();
            end.push(0xff); // past every revision suffix of this one key
            end
        }
        [0] => vec![RECORD + 1],
        end => key_prefix(end),
    };
    (start, end)
}

/// All logical record keys (the range format 1 stored them in).
pub(crate) fn all_records() -> (Vec<u8>, Vec<u8>) {
    (vec![RECORD], vec![RECORD + 1])
}

/// Where the record of logical key `record` is stored.
pub(crate) fn stored_key(record: &[u8]) -> Result<Vec<u8>> {
    let (prefix, rev) = split_record_key(record)?;
    Ok(stored(prefix, rev))
}

/// The stored key of the record of the key with `prefix` (see [`key_prefix`]) at `rev`.
pub(crate) fn stored(prefix: &[u8], rev: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 8);
    out.push(STORED);
    out.extend_from_slice(&rev.to_be_bytes());
    out.extend_from_slice(&prefix[1..]);
    out
}

/// The logical key of a stored record, as (key prefix, revision).
pub(crate) fn split_stored_key(stored: &[u8]) -> Result<(Vec<u8>, i64)> {
    if stored.len() < 11 || stored[0] != STORED {
        return Err(Error::Corrupt(format!("malformed stored record key {stored:?}")));
    }
    let rev = i64::from_be_bytes(stored[1..9].try_into().map_err(|_| Error::Corrupt("revision".into()))?);
    let mut prefix = Vec::with_capacity(stored.len() - 8);
    prefix.push(RECORD);
    prefix.extend_from_slice(&stored[9..]);
    Ok((prefix, rev))
}

/// The logical key of a stored record.
pub(crate) fn logical_key(stored: &[u8]) -> Result<Vec<u8>> {
    let (mut record, rev) = split_stored_key(stored)?;
    record.extend_from_slice(&rev.to_be_bytes());
    Ok(record)
}

/// The stored records of revisions `[from, to]`, in revision order.
pub(crate) fn stored_revisions(from: i64, to: i64) -> (Vec<u8>, Vec<u8>) {
    let bound = |rev: i64| {
        let mut out = vec![STORED];
        out.extend_from_slice(&rev.max(0).to_be_bytes());
        out
    };
    (bound(from), bound(to.saturating_add(1)))
}

/// Every stored record.
pub(crate) fn all_stored() -> (Vec<u8>, Vec<u8>) {
    (vec![STORED], vec![STORED + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_user_key_order() {
        let keys: &[&[u8]] = &[b"", b"\0", b"\0\0", b"\0a", b"a", b"a\0", b"a\0b", b"ab", b"b"];
        for pair in keys.windows(2) {
            assert!(record_key(pair[0], i64::MAX) < record_key(pair[1], 0), "{pair:?}");
        }
    }

    #[test]
    fn record_keys_round_trip() {
        for key in [&b"plain"[..], b"with\0zero", b"\0\0"] {
            let record = record_key(key, 42);
            let (prefix, rev) = split_record_key(&record).unwrap();
            assert_eq!((user_key(prefix).as_slice(), rev), (key, 42));
        }
    }

    #[test]
    fn stored_keys_round_trip_and_sort_by_revision() {
        for key in [&b"plain"[..], b"with\0zero", b"\0\0", b""] {
            let record = record_key(key, 42);
            let stored = stored_key(&record).unwrap();
            assert_eq!(logical_key(&stored).unwrap(), record);
            let (start, end) = stored_revisions(42, 42);
            assert!(start <= stored && stored < end, "{key:?}");
        }
        assert!(stored_key(&record_key(b"z", 7)).unwrap() < stored_key(&record_key(b"a", 8)).unwrap());
    }

    #[test]
    fn single_key_range_excludes_longer_keys() {
        let (start, end) = record_range(b"a", b"");
        let inside = record_key(b"a", 7);
        let outside = record_key(b"a\0", 1);
        assert!(start <= inside && inside < end);
        assert!(!(start <= outside && outside < end));
    }
}
