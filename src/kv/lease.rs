//! Leases in the state machine: which leases exist, the TTL each was granted, and the keys
//! attached to each. Time is not here: when a lease expires is the leader's business
//! ([`crate::lease`]); the state machine only grants and revokes, as the log tells it to.

use sha1::{Digest, Sha1};

use super::apply::WriteTxn;
use super::reader::Reader;
use super::{keys, KvStore};
use crate::pb;
use crate::{Error, Result};

const META_LEASE_SEQUENCE: &str = "lease_sequence";

impl KvStore {
    /// The granted TTL of lease `id`, if it exists. Only a leader asks, and a leader installs
    /// no snapshot; fenced all the same, as every read a client reaches
    /// ([`KvStore::outside_installs`]): "no such lease" from a half-loaded store would end it.
    pub fn lease(&self, id: i64) -> Result<Option<i64>> {
        self.outside_installs(|| self.tree.get(keys::lease_key(id))?.map(|ttl| decode_ttl(&ttl)).transpose())
    }

    /// Every lease, with its granted TTL, by ID (refused during a snapshot install, as
    /// [`KvStore::revision`]).
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        self.outside_installs(|| {
            self.tree
                .scan_prefix(keys::all_leases())
                .map(|item| {
                    let (key, ttl) = item?;
                    Ok((keys::lease_id(&key)?, decode_ttl(&ttl)?))
                })
                .collect()
        })
    }

    /// Lease `id`'s granted TTL and the keys attached to it, in key order, as one apply left
    /// them (fenced as [`KvStore::lease`]). Applies write their changes one by one, so the lease
    /// and its keys are read while no apply writes ([`KvStore::whole_applies`]): a grant that
    /// attaches keys, or a revoke, is seen whole or not at all.
    pub fn lease_with_keys(&self, id: i64) -> Result<Option<(i64, Vec<Vec<u8>>)>> {
        let prefix = keys::attached_prefix(id);
        self.outside_installs(|| {
            let _no_apply_under_way = self.whole_applies();
            let Some(ttl) = self.tree.get(keys::lease_key(id))? else { return Ok(None) };
            let attached: Result<Vec<Vec<u8>>> =
                self.tree.scan_prefix(&prefix).keys().map(|key| Ok(key?[prefix.len()..].to_vec())).collect();
            Ok(Some((decode_ttl(&ttl)?, attached?)))
        })
    }
}

fn decode_ttl(bytes: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt("lease TTL".into()))?;
    Ok(i64::from_be_bytes(bytes))
}

/// The n-th server-chosen lease ID: spread over the positive int64 range like etcd's IDs, and
/// a function of a sequence the state machine never rewinds, so an ID is never handed out twice.
fn derived_lease_id(sequence: u64) -> i64 {
    let digest = Sha1::digest([b"phoenix lease ".as_slice(), &sequence.to_be_bytes()].concat());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 1) as i64
}

impl WriteTxn<'_> {
    pub(super) fn lease_exists(&self, id: i64) -> Result<bool> {
        Ok(self.staged_get(&keys::lease_key(id))?.is_some())
    }

    pub(super) fn lease_grant(&mut self, req: &pb::LeaseGrantRequest) -> Result<pb::LeaseGrantResponse> {
        let id = if req.id == 0 { self.next_lease_id()? } else { req.id };
        if self.lease_exists(id)? {
            return Err(Error::LeaseExists);
        }
        self.stage(keys::lease_key(id), Some(req.ttl.to_be_bytes().to_vec()));
        Ok(pb::LeaseGrantResponse { header: self.header(), id, ttl: req.ttl, error: String::new() })
    }

    fn next_lease_id(&mut self) -> Result<i64> {
        let sequence_key = keys::meta_key(META_LEASE_SEQUENCE);
        let mut sequence = match self.staged_get(&sequence_key)? {
            Some(bytes) => u64::from_be_bytes(bytes.try_into().map_err(|_| Error::Corrupt("lease sequence".into()))?),
            None => 0,
        };
        loop {
            sequence += 1;
            let id = derived_lease_id(sequence);
            if id != 0 && !self.lease_exists(id)? {
                self.stage(sequence_key, Some(sequence.to_be_bytes().to_vec()));
                return Ok(id);
            }
        }
    }

    /// Revokes a lease: its keys are deleted, in key order, in one revision.
    pub(super) fn lease_revoke(&mut self, req: &pb::LeaseRevokeRequest) -> Result<pb::LeaseRevokeResponse> {
        if !self.lease_exists(req.id)? {
            return Err(Error::LeaseNotFound);
        }
        let prefix = keys::attached_prefix(req.id);
        for attached in self.staged_keys(&prefix)? {
            let key = &attached[prefix.len()..];
            if let Some(kv) = self.reader().get(key, self.read_revision())? {
                self.write_delete(kv);
            }
            self.stage(attached, None);
        }
        self.stage(keys::lease_key(req.id), None);
        Ok(pb::LeaseRevokeResponse { header: self.header() })
    }

    /// Moves `key`'s attachment from the lease of its previous value (0: none) to the lease of
    /// its new value.
    pub(super) fn reattach(&mut self, old: i64, key: &[u8], lease: i64) {
        if old != 0 && old != lease {
            self.stage(keys::attached_key(old, key), None);
        }
        if lease != 0 {
            self.stage(keys::attached_key(lease, key), Some(Vec::new()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::derived_lease_id;

    #[test]
    fn derived_ids_are_positive_and_distinct() {
        let ids: std::collections::BTreeSet<i64> = (1..1000).map(derived_lease_id).collect();
        assert_eq!(ids.len(), 999);
        assert!(ids.iter().all(|id| *id > 0));
    }
}
