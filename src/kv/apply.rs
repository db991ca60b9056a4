//! Applying committed commands: etcd's Put, DeleteRange, Txn and Compact rules, alarms and
//! member attributes. One [`WriteTxn`] collects a whole batch and commits it atomically.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::index::Change;
use super::reader::{Overlay, Reader};
use super::{decode_life, encode_put, encode_tombstone, journal, keys, range, Alarm, KvStore, Life, MemberAttributes};
use super::{META_ALARMS, META_COMPACTED, META_MEMBERS, META_REMOVED_MEMBERS, META_REVISION};
use crate::pb::mvccpb::{event::EventType, Event};
use crate::pb::{self, command, command_result, compare, request_op, response_op, KeyValue};
use crate::pb::{CommandResult, Compare, ResponseHeader, ResponseOp};
use crate::{Error, Result};

/// etcd's AlarmType::NOSPACE.
pub const ALARM_NOSPACE: i32 = pb::AlarmType::Nospace as i32;
/// etcd's AlarmType::CORRUPT.
const ALARM_CORRUPT: i32 = pb::AlarmType::Corrupt as i32;

/// A staged key and what staging it replaced (None: it was not staged before).
type Replaced = (Vec<u8>, Option<Option<Vec<u8>>>);

/// What a committed batch changed.
#[derive(Debug, Default)]
pub struct Committed {
    /// The store revision after the batch.
    pub revision: i64,
    /// Every change, in the order it happened (revision, then position within the revision).
    pub events: Vec<Event>,
    /// A compaction was applied: the caller removes the compacted history.
    pub compacted: bool,
}

pub struct WriteTxn<'a> {
    store: &'a KvStore,
    /// Records and meta entries written by this batch, not yet in the tree.
    /// None stages a removal (leases and their key lists; records are never removed here).
    pub(super) pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What each staged write of the current request replaced, so a failed txn can be undone.
    undo: Vec<Replaced>,
    /// The changes of the batch, for watchers, in the order they happened.
    events: Vec<Event>,
    /// How many of `events` came before the current request.
    events_before_request: usize,
    revision: i64,
    compacted: i64,
    /// Whether the current request has changed anything (then it owns `revision + 1`).
    request_changed: bool,
    members: Option<BTreeMap<u64, MemberAttributes>>,
    alarms: Option<Vec<Alarm>>,
    compaction_requested: bool,
}

/// etcd's estimate of what a key's metadata takes in its backend (its quota's `kvOverhead`).
const KV_OVERHEAD_BYTES: u64 = 256;
/// etcd's estimate of what a lease takes in its backend (`leaseOverhead`).
pub const LEASE_OVERHEAD_BYTES: u64 = 64;

/// What a put costs against the quota, as etcd's `costPut` estimates it.
pub fn put_cost(put: &pb::PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + put.key.len() as u64 + put.value.len() as u64
}

/// What a txn costs against the quota, as etcd's `costTxn`: its costlier branch's own puts.
/// Deletes and nested txns cost nothing, so a client can still free space with a txn of
/// deletes, under NOSPACE too (etcd's capped applier refuses only txns that cost something).
pub fn txn_cost(txn: &pb::TxnRequest) -> u64 {
    let branch = |ops: &[pb::RequestOp]| -> u64 {
        ops.iter()
            .filter_map(|op| match &op.request {
                Some(request_op::Request::RequestPut(put)) => Some(put_cost(put)),
                _ => None,
            })
            .sum()
    };
    branch(&txn.success).max(branch(&txn.failure))
}

/// Where a change goes in the order an apply writes its changes, which readers see one by one
/// (`kv::journal`): records, then leases, their keys and other meta, then the store revision,
/// then the compaction point. A reader reads the compaction point, then the revision, then
/// records up to that revision: it must find every one of them, and never a compaction point
/// above the revision (a batch may put a key and compact at its revision). A lease and its keys
/// are read while no apply writes ([`KvStore::lease_with_keys`]), so their order is free.
pub(super) fn write_rank(key: &[u8]) -> u8 {
    if keys::is_stored(key) {
        0
    } else if keys::is_meta_key(key, META_REVISION) {
        2
    } else if keys::is_meta_key(key, META_COMPACTED) {
        3
    } else {
        1
    }
}

impl<'a> WriteTxn<'a> {
    pub(super) fn new(store: &'a KvStore) -> Result<WriteTxn<'a>> {
        let revision = store.revision()?;
        Ok(WriteTxn {
            store,
            pending: BTreeMap::new(),
            undo: Vec::new(),
            events: Vec::new(),
            events_before_request: 0,
            revision,
            compacted: store.compacted_revision()?,
            request_changed: false,
            members: None,
            alarms: None,
            compaction_requested: false,
        })
    }

    /// Applies one command. A deterministic refusal (a compacted revision, a missing key for
    /// ignore_value) is a result, not an error; an error here means storage failed.
    pub fn execute(&mut self, command: &pb::Command) -> Result<CommandResult> {
        self.request_changed = false;
        self.undo.clear();
        self.events_before_request = self.events.len();
        let result = self.dispatch(command);
        let result = match result {
            Ok(result) => result,
            Err(err @ (Error::Storage(_) | Error::Corrupt(_))) => return Err(err),
            Err(err) => {
                self.undo_request();
                command_result::Result::Error(err.to_command_error())
            }
        };
        if self.request_changed {
            self.revision += 1;
        }
        Ok(CommandResult { result: Some(result) })
    }

    fn dispatch(&mut self, command: &pb::Command) -> Result<command_result::Result> {
        use command::Op;
        use command_result::Result as R;
        let Some(op) = &command.op else { return Err(Error::Corrupt("empty command".into())) };
        let changes_data = matches!(
            op,
            Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_) | Op::Compaction(_) | Op::LeaseGrant(_) | Op::LeaseRevoke(_)
        );
        if changes_data {
            self.refuse_when_corrupt()?;
        }
        Ok(match op {
            Op::Put(req) => {
                self.refuse_when_out_of_space()?;
                R::Put(self.put(req)?)
            }
            Op::DeleteRange(req) => R::DeleteRange(self.delete_range(req)?),
            Op::Txn(req) => {
                if txn_cost(req) > 0 {
                    self.refuse_when_out_of_space()?;
                }
                R::Txn(self.txn(req)?)
            }
            Op::Compaction(req) => R::Compaction(self.compact(req)?),
            Op::Alarm(req) => R::Alarm(self.alarm(req)?),
            Op::MemberAttributes(attrs) => R::MemberAttributes(self.set_member_attributes(attrs)?),
            Op::LeaseGrant(req) => {
                // etcd's capped applier refuses grants too while the NOSPACE alarm is raised.
                self.refuse_when_out_of_space()?;
                R::LeaseGrant(self.lease_grant(req)?)
            }
            Op::LeaseRevoke(req) => R::LeaseRevoke(self.lease_revoke(req)?),
            Op::RevisionBump(bump) => R::RevisionBump(self.bump_revision(bump)?),
        })
    }

    /// Stores a meta entry (e.g. Raft's applied log id) in the same atomic batch.
    pub fn put_meta(&mut self, name: &str, value: Vec<u8>) {
        self.pending.insert(keys::meta_key(name), Some(value));
    }

    /// Writes the batch, and says what it changed.
    pub fn commit(mut self) -> Result<Committed> {
        self.put_meta(META_REVISION, self.revision.to_be_bytes().to_vec());
        self.put_meta(META_COMPACTED, self.compacted.to_be_bytes().to_vec());
        if let Some(members) = self.members.take() {
            self.put_meta(META_MEMBERS, bincode::serialize(&members)?);
        }
        if let Some(alarms) = self.alarms.take() {
            self.put_meta(META_ALARMS, bincode::serialize(&alarms)?);
        }
        let mut changes: Vec<journal::Change<'_>> = Vec::with_capacity(self.pending.len());
        let mut records = Vec::new();
        for (key, value) in &self.pending {
            match value {
                Some(value) if keys::is_record(key) => {
                    let (prefix, rev) = keys::split_record_key(key)?;
                    changes.push((Cow::Owned(keys::stored(prefix, rev)), Some(value.as_slice())));
                    let life = decode_life(value)?;
                    records.push((prefix.to_vec(), Change::new(rev, life.is_none()), life));
                }
                value => changes.push((Cow::Borrowed(key), value.as_deref())),
            }
        }
        changes.sort_by_key(|(key, _)| write_rank(key));
        // Listed before they are written, so a reader that sees the new revision finds them. Should
        // the write fail, the index lists records the tree lacks; apply stops the member then.
        self.store.index.add(records);
        {
            let _readers_of_several_keys_wait = self.store.applying.write().unwrap_or_else(|p| p.into_inner());
            journal::write(&self.store.tree, &changes)?;
        }
        self.store.last_revision.store(self.revision, std::sync::atomic::Ordering::SeqCst);
        Ok(Committed { revision: self.revision, events: self.events, compacted: self.compaction_requested })
    }

    pub(super) fn reader(&self) -> Overlay<'_> {
        Overlay { store: self.store.reader(), pending: &self.pending }
    }

    /// The revision reads inside the current request see: its own writes included.
    pub(super) fn read_revision(&self) -> i64 {
        self.revision + i64::from(self.request_changed)
    }

    fn write_revision(&self) -> i64 {
        self.revision + 1
    }

    pub(super) fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision: self.read_revision(), ..Default::default() })
    }

    /// Records a change of `key` at the current request's revision, and its event.
    fn write_record(&mut self, key: &[u8], value: Vec<u8>, event: Event) {
        self.stage(keys::record_key(key, self.write_revision()), Some(value));
        self.events.push(event);
        self.request_changed = true;
    }

    /// The position of the next change within the current request's revision.
    fn next_sub(&self) -> u32 {
        (self.events.len() - self.events_before_request) as u32
    }

    /// Records a put. Its event carries no previous value: a watcher that asks for it reads it.
    fn write_put(&mut self, kv: KeyValue) {
        let value = encode_put(&kv, self.next_sub());
        let key = kv.key.clone();
        self.write_record(&key, value, Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None });
    }

    pub(super) fn write_delete(&mut self, prev: KeyValue) {
        self.reattach(prev.lease, &prev.key, 0);
        let value = encode_tombstone(self.next_sub());
        let deleted = KeyValue { key: prev.key.clone(), mod_revision: self.write_revision(), ..Default::default() };
        let key = prev.key.clone();
        self.write_record(
            &key,
            value,
            Event { r#type: EventType::Delete as i32, kv: Some(deleted), prev_kv: Some(prev) },
        );
    }

    /// Stages a write (None: a removal) that the current request can still undo.
    pub(super) fn stage(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let replaced = self.pending.insert(key.clone(), value);
        self.undo.push((key, replaced));
    }

    /// A key's value as this batch has left it so far.
    pub(super) fn staged_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.store.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    /// The keys under `prefix` as this batch has left them so far.
    pub(super) fn staged_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut found = std::collections::BTreeSet::new();
        for key in self.store.tree.scan_prefix(prefix).keys() {
            found.insert(key?.to_vec());
        }
        for (key, value) in self.pending.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)) {
            match value {
                Some(_) => found.insert(key.clone()),
                None => found.remove(key),
            };
        }
        Ok(found.into_iter().collect())
    }

    fn undo_request(&mut self) {
        while let Some((key, replaced)) = self.undo.pop() {
            match replaced {
                Some(value) => self.pending.insert(key, value),
                None => self.pending.remove(&key),
            };
        }
        self.events.truncate(self.events_before_request);
        self.request_changed = false;
    }

    /// While a CORRUPT alarm is active, etcd's corrupt applier refuses every write, lease grants
    /// and revocations, and compactions (reads, which it does not apply, still work).
    fn refuse_when_corrupt(&mut self) -> Result<()> {
        if self.alarms()?.iter().any(|a| a.alarm == ALARM_CORRUPT) {
            return Err(Error::CorruptCluster);
        }
        Ok(())
    }

    /// While a NOSPACE alarm is active, etcd refuses puts (deletes still free space).
    fn refuse_when_out_of_space(&mut self) -> Result<()> {
        if self.alarms()?.iter().any(|a| a.alarm == ALARM_NOSPACE) {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

    /// Whether the current request has written `key` already. The store keeps one record per
    /// key and revision, so a txn may change a key only once: etcd's checks let a few through
    /// that change it twice (a put and a delete from a key onwards covering it, in either
    /// order, or a nested txn's delete of a key an earlier nested txn put), which are refused
    /// here, on the path the txn runs, with etcd's error for a key written twice. A request
    /// that has written nothing yet (every plain put and delete) skips the lookup.
    fn written_in_request(&self, key: &[u8]) -> bool {
        self.request_changed && self.pending.contains_key(&keys::record_key(key, self.write_revision()))
    }

    fn put(&mut self, req: &pb::PutRequest) -> Result<pb::PutResponse> {
        if req.lease != 0 && !self.lease_exists(req.lease)? {
            return Err(Error::LeaseNotFound);
        }
        if self.written_in_request(&req.key) {
            return Err(Error::DuplicateKey);
        }
        // Only these flags need the previous value itself; otherwise its life is enough, which
        // the key index answers without reading the store. Watchers that want a put's previous
        // value read it when they send the event, as etcd's do.
        let prev = if req.prev_kv || req.ignore_value || req.ignore_lease {
            self.reader().get(&req.key, self.read_revision())?
        } else {
            None
        };
        let life = match &prev {
            Some(prev) => Some(Life::of(prev)),
            None if req.ignore_value || req.ignore_lease => return Err(Error::KeyNotFound),
            None if req.prev_kv => None,
            None => self.reader().life(&req.key, self.read_revision())?,
        };
        let revision = self.write_revision();
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: life.map_or(revision, |l| l.create_revision),
            mod_revision: revision,
            version: life.map_or(1, |l| l.version + 1),
            value: match (&prev, req.ignore_value) {
                (Some(p), true) => p.value.clone(),
                _ => req.value.clone(),
            },
            lease: match (life, req.ignore_lease) {
                (Some(l), true) => l.lease,
                _ => req.lease,
            },
        };
        let prev_kv = prev.filter(|_| req.prev_kv);
        self.reattach(life.map_or(0, |l| l.lease), &req.key, kv.lease);
        self.write_put(kv);
        Ok(pb::PutResponse { header: self.header(), prev_kv })
    }

    fn delete_range(&mut self, req: &pb::DeleteRangeRequest) -> Result<pb::DeleteRangeResponse> {
        let doomed: Vec<KeyValue> =
            self.reader().scan(&req.key, &req.range_end, self.read_revision()).collect::<Result<_>>()?;
        if doomed.iter().any(|kv| self.written_in_request(&kv.key)) {
            return Err(Error::DuplicateKey);
        }
        for kv in &doomed {
            self.write_delete(kv.clone());
        }
        Ok(pb::DeleteRangeResponse {
            header: self.header(),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// etcd's Txn: the branch of every txn, nested ones included, is decided and the ops on that
    /// path are checked against the state before the txn; then the ops run in order, each
    /// seeing the writes of the ones before it.
    pub(super) fn txn(&mut self, req: &pb::TxnRequest) -> Result<pb::TxnResponse> {
        let path = self.choose_branches(req)?;
        // etcd checks every put on the path before any range (its checkRequests runs twice).
        visit_path(req, &path, &mut |op| self.check_put(op))?;
        visit_path(req, &path, &mut |op| self.check_range(op))?;
        let mut response = self.run_txn(req, &path)?;
        response.header = self.header();
        Ok(response)
    }

    fn choose_branches(&self, req: &pb::TxnRequest) -> Result<Path> {
        let mut succeeded = true;
        for cmp in &req.compare {
            if !self.compare_holds(cmp)? {
                succeeded = false;
                break;
            }
        }
        let mut nested = Vec::new();
        for op in branch(req, succeeded) {
            if let Some(request_op::Request::RequestTxn(inner)) = &op.request {
                nested.push(self.choose_branches(inner)?);
            }
        }
        Ok(Path { succeeded, nested })
    }

    /// etcd's checkPut: ignore_value/ignore_lease need the key, and the lease must exist.
    fn check_put(&self, op: &pb::RequestOp) -> Result<()> {
        match &op.request {
            Some(request_op::Request::RequestPut(req)) => {
                if (req.ignore_value || req.ignore_lease)
                    && self.reader().get(&req.key, self.read_revision())?.is_none()
                {
                    return Err(Error::KeyNotFound);
                }
                if req.lease != 0 && !self.lease_exists(req.lease)? {
                    return Err(Error::LeaseNotFound);
                }
                Ok(())
            }
            // etcd's request validation answers an empty op this way; it must never stop a node.
            None => Err(Error::KeyNotFound),
            Some(_) => Ok(()),
        }
    }

    /// etcd's checkRange: 0 is current; otherwise neither future nor compacted.
    fn check_range(&self, op: &pb::RequestOp) -> Result<()> {
        let Some(request_op::Request::RequestRange(req)) = &op.request else { return Ok(()) };
        if req.revision == 0 {
            Ok(())
        } else if req.revision > self.read_revision() {
            Err(Error::FutureRevision)
        } else if req.revision < self.compacted {
            Err(Error::Compacted)
        } else {
            Ok(())
        }
    }

    fn run_txn(&mut self, req: &pb::TxnRequest, path: &Path) -> Result<pb::TxnResponse> {
        let mut nested = path.nested.iter();
        let ops = branch(req, path.succeeded);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.txn_op(op, &mut nested)?);
        }
        Ok(pb::TxnResponse { header: None, succeeded: path.succeeded, responses })
    }

    fn txn_op(&mut self, op: &pb::RequestOp, nested: &mut std::slice::Iter<'_, Path>) -> Result<ResponseOp> {
        use request_op::Request;
        use response_op::Response;
        let response = match &op.request {
            Some(Request::RequestRange(req)) => {
                Response::ResponseRange(range::range(&self.reader(), req, self.read_revision(), self.compacted)?)
            }
            Some(Request::RequestPut(req)) => Response::ResponsePut(self.put(req)?),
            Some(Request::RequestDeleteRange(req)) => Response::ResponseDeleteRange(self.delete_range(req)?),
            Some(Request::RequestTxn(req)) => {
                let path = nested.next().ok_or_else(|| Error::Internal("txn path does not match the txn".into()))?;
                // etcd fills in only the outermost txn's header revision.
                let inner = self.run_txn(req, path)?;
                Response::ResponseTxn(pb::TxnResponse { header: Some(ResponseHeader::default()), ..inner })
            }
            None => return Err(Error::KeyNotFound),
        };
        Ok(ResponseOp { response: Some(response) })
    }

    /// A compare with a range_end must hold for every key in the range. A missing key, or an
    /// empty range, compares as a key with zero values (etcd's applyCompare).
    fn compare_holds(&self, cmp: &Compare) -> Result<bool> {
        let reader = self.reader();
        if cmp.range_end.is_empty() {
            let kv = reader.get(&cmp.key, self.read_revision())?;
            return Ok(compare_key(cmp, kv.as_ref()));
        }
        let mut any = false;
        for kv in reader.scan(&cmp.key, &cmp.range_end, self.read_revision()) {
            any = true;
            if !compare_key(cmp, Some(&kv?)) {
                return Ok(false);
            }
        }
        Ok(any || compare_key(cmp, None))
    }

    fn compact(&mut self, req: &pb::CompactionRequest) -> Result<pb::CompactionResponse> {
        if req.revision <= self.compacted {
            return Err(Error::Compacted);
        }
        if req.revision > self.revision {
            return Err(Error::FutureRevision);
        }
        self.compacted = req.revision;
        self.compaction_requested = true;
        Ok(pb::CompactionResponse { header: self.header() })
    }

    /// Moves the revision ahead without a change, as etcd's restore does with --bump-revision;
    /// with `mark_compacted`, compacts at the new revision.
    fn bump_revision(&mut self, bump: &pb::RevisionBump) -> Result<ResponseHeader> {
        if bump.by < 0 {
            return Err(Error::Internal(format!("revision bump by {} is negative", bump.by)));
        }
        self.revision = self.revision.checked_add(bump.by).ok_or_else(|| {
            Error::Internal(format!("revision bump by {} overflows revision {}", bump.by, self.revision))
        })?;
        if bump.mark_compacted && self.revision > self.compacted {
            self.compacted = self.revision;
            self.compaction_requested = true;
        }
        Ok(ResponseHeader { revision: self.revision, ..Default::default() })
    }

    fn alarms(&mut self) -> Result<&mut Vec<Alarm>> {
        if self.alarms.is_none() {
            self.alarms = Some(self.store.alarms()?);
        }
        Ok(self.alarms.get_or_insert_with(Vec::new))
    }

    fn alarm(&mut self, req: &pb::AlarmRequest) -> Result<pb::AlarmResponse> {
        use pb::alarm_request::AlarmAction;
        let alarm = Alarm { member_id: req.member_id, alarm: req.alarm };
        let header = self.header();
        let alarms = self.alarms()?;
        let none = pb::AlarmType::None as i32;
        // As etcd's applier: activating NONE does nothing, GET lists one type (all for NONE).
        let affected = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                alarms.iter().filter(|a| req.alarm == none || a.alarm == req.alarm).copied().collect()
            }
            Ok(AlarmAction::Activate) if req.alarm == none => Vec::new(),
            Ok(AlarmAction::Activate) => {
                if !alarms.contains(&alarm) {
                    alarms.push(alarm);
                    alarms.sort();
                }
                vec![alarm]
            }
            Ok(AlarmAction::Deactivate) => {
                let before = alarms.len();
                alarms.retain(|a| *a != alarm);
                if alarms.len() < before {
                    vec![alarm]
                } else {
                    Vec::new()
                }
            }
            Err(_) => Vec::new(),
        };
        let alarms = affected.into_iter().map(|a| pb::AlarmMember { member_id: a.member_id, alarm: a.alarm }).collect();
        Ok(pb::AlarmResponse { header, alarms })
    }

    /// Records that members left the cluster: their IDs may never be used again, and their
    /// published attributes go.
    pub fn tombstone_members(&mut self, removed: &[u64]) -> Result<()> {
        if removed.is_empty() {
            return Ok(());
        }
        let key = keys::meta_key(META_REMOVED_MEMBERS);
        let mut tombstones: BTreeSet<u64> = match self.staged_get(&key)? {
            Some(bytes) => bincode::deserialize(&bytes)?,
            None => BTreeSet::new(),
        };
        tombstones.extend(removed);
        self.stage(key, Some(bincode::serialize(&tombstones)?));
        if self.members.is_none() {
            self.members = Some(self.store.members()?);
        }
        let members = self.members.get_or_insert_with(BTreeMap::new);
        for id in removed {
            members.remove(id);
        }
        Ok(())
    }

    fn set_member_attributes(&mut self, attrs: &pb::MemberAttributes) -> Result<ResponseHeader> {
        if self.members.is_none() {
            self.members = Some(self.store.members()?);
        }
        let members = self.members.get_or_insert_with(BTreeMap::new);
        members.insert(attrs.id, MemberAttributes { name: attrs.name.clone(), client_urls: attrs.client_urls.clone() });
        Ok(ResponseHeader { revision: self.revision, ..Default::default() })
    }
}

/// Which branch a txn takes, and the paths of the txns nested in that branch, in op order.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn branch(req: &pb::TxnRequest, succeeded: bool) -> &[pb::RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// Calls `f` on every op on the chosen path, nested txns' ops included.
fn visit_path(req: &pb::TxnRequest, path: &Path, f: &mut dyn FnMut(&pb::RequestOp) -> Result<()>) -> Result<()> {
    let mut nested = path.nested.iter();
    for op in branch(req, path.succeeded) {
        f(op)?;
        if let Some(request_op::Request::RequestTxn(inner)) = &op.request {
            let inner_path = nested.next().ok_or_else(|| Error::Internal("txn path does not match the txn".into()))?;
            visit_path(inner, inner_path, f)?;
        }
    }
    Ok(())
}

/// etcd's compare: a missing key compares as zero values, except VALUE, which always fails. A
/// target_union of another kind reads as the zero value, as Go's getters do; an unknown target
/// compares as equal and an unknown result holds, as in etcd's compareKV.
fn compare_key(cmp: &Compare, kv: Option<&KeyValue>) -> bool {
    use compare::{CompareTarget, TargetUnion};
    use std::cmp::Ordering;
    let union = cmp.target_union.as_ref();
    let wanted_int = |pick: fn(&TargetUnion) -> Option<i64>| union.and_then(pick).unwrap_or(0);
    let Ok(target) = CompareTarget::try_from(cmp.target) else { return compare_result(cmp, Ordering::Equal) };
    let ordering = match target {
        CompareTarget::Value => {
            let Some(kv) = kv else { return false };
            let wanted = match union {
                Some(TargetUnion::Value(v)) => v.as_slice(),
                _ => &[],
            };
            kv.value.as_slice().cmp(wanted)
        }
        CompareTarget::Version => kv.map_or(0, |kv| kv.version).cmp(&wanted_int(|u| match u {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Create => kv.map_or(0, |kv| kv.create_revision).cmp(&wanted_int(|u| match u {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Mod => kv.map_or(0, |kv| kv.mod_revision).cmp(&wanted_int(|u| match u {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Lease => kv.map_or(0, |kv| kv.lease).cmp(&wanted_int(|u| match u {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
    };
    compare_result(cmp, ordering)
}

fn compare_result(cmp: &Compare, ordering: std::cmp::Ordering) -> bool {
    use compare::CompareResult;
    use std::cmp::Ordering;
    match CompareResult::try_from(cmp.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Err(_) => true,
    }
}
