//! etcd's request checks, done before anything is proposed so bad input never reaches the log.
//! The rules and messages follow etcd's v3rpc `check*Request` functions.

use std::collections::BTreeSet;

use prost::Message;

use crate::pb::{self, range_request, request_op, RangeRequest, RequestOp, TxnRequest};
use crate::{Error, Result};

pub struct Limits {
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
}

pub fn range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if range_request::SortOrder::try_from(req.sort_order).is_err()
        || range_request::SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

pub fn put(req: &pb::PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn delete_range(req: &pb::DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn txn(req: &TxnRequest, limits: &Limits) -> Result<()> {
    check_txn_shape(req, limits.max_txn_ops)?;
    check_no_duplicate_writes(req)
}

/// Requests bigger than --max-request-bytes are refused, as etcd refuses such proposals.
pub fn size(req: &impl Message, limits: &Limits) -> Result<()> {
    if req.encoded_len() > limits.max_request_bytes {
        return Err(Error::RequestTooLarge);
    }
    Ok(())
}

fn check_txn_shape(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = req.compare.len().max(req.success.len()).max(req.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => range(r)?,
            Some(request_op::Request::RequestPut(p)) => put(p)?,
            Some(request_op::Request::RequestDeleteRange(d)) => delete_range(d)?,
            // As etcd counts them: a nested txn gets only the operations this one left.
            Some(request_op::Request::RequestTxn(t)) => check_txn_shape(t, max_ops - ops)?,
            // etcd refuses an empty operation this way before proposing it.
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// The keys one branch writes: the keys it puts, and the ranges it deletes as `[start, end)`, a
/// single key's as `[key, key + "\0")`. As in etcd 3.4 (its interval tree), the ends are
/// compared as the bytes they are, so a delete from a key onwards (end `"\0"`) overlaps nothing.
#[derive(Default)]
struct Writes {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writes {
    fn deletes(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|(start, end)| start.as_slice() <= key && key < end.as_slice())
    }

    /// Adds a put of `key`, which this branch must not write already.
    fn put(&mut self, key: &[u8]) -> Result<()> {
        if self.puts.contains(key) || self.deletes(key) {
            return Err(Error::DuplicateKey);
        }
        self.puts.insert(key.to_vec());
        Ok(())
    }
}

/// etcd refuses a txn that writes a key twice in one branch, counting nested txns.
fn check_no_duplicate_writes(req: &TxnRequest) -> Result<()> {
    branch_writes(&req.success)?;
    branch_writes(&req.failure)?;
    Ok(())
}

/// One branch's writes, checked in etcd's order (v3rpc's `checkIntervals`), which decides what
/// counts as written twice: the branch's own deletes first; then each nested txn's puts,
/// against those deletes, the deletes of the nested txns before it, and their puts (a key
/// put by both branches of one nested txn is fine: only one runs); then the branch's own puts,
/// against all of that.
fn branch_writes(ops: &[RequestOp]) -> Result<Writes> {
    let mut writes = Writes::default();
    for op in ops {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() { [d.key.as_slice(), &[0]].concat() } else { d.range_end.clone() };
            writes.deletes.push((d.key.clone(), end));
        }
    }
    for op in ops {
        let Some(request_op::Request::RequestTxn(nested)) = &op.request else { continue };
        let then = branch_writes(&nested.success)?;
        let otherwise = branch_writes(&nested.failure)?;
        for key in &then.puts {
            writes.put(key)?;
        }
        for key in &otherwise.puts {
            let put_before = writes.puts.contains(key) && !then.puts.contains(key);
            if put_before || writes.deletes(key) {
                return Err(Error::DuplicateKey);
            }
            writes.puts.insert(key.clone());
        }
        writes.deletes.extend(then.deletes.into_iter().chain(otherwise.deletes));
    }
    for op in ops {
        if let Some(request_op::Request::RequestPut(p)) = &op.request {
            writes.put(&p.key)?;
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(key: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest { key: key.into(), ..Default::default() })),
        }
    }

    fn delete_op(key: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn limits() -> Limits {
        Limits { max_txn_ops: 3, max_request_bytes: 1024 }
    }

    #[test]
    fn duplicate_writes_in_one_branch_are_refused() {
        let txn = |ops: Vec<RequestOp>| TxnRequest { success: ops, ..Default::default() };
        assert_eq!(super::txn(&txn(vec![put_op("a"), put_op("a")]), &limits()), Err(Error::DuplicateKey));
        assert_eq!(super::txn(&txn(vec![put_op("b"), delete_op("a", "c")]), &limits()), Err(Error::DuplicateKey));
        assert_eq!(super::txn(&txn(vec![put_op("a"), put_op("b")]), &limits()), Ok(()));
        assert_eq!(super::txn(&txn(vec![delete_op("a", "c"), delete_op("b", "d")]), &limits()), Ok(()));
    }

    #[test]
    fn a_delete_from_a_key_onwards_overlaps_nothing_as_in_etcd() {
        let txn = TxnRequest { success: vec![put_op("b"), delete_op("a", "\0")], ..Default::default() };
        assert_eq!(super::txn(&txn, &limits()), Ok(()));
    }

    #[test]
    fn nested_writes_are_checked_in_etcds_order() {
        let nested = |op: RequestOp| RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest { success: vec![op], ..Default::default() })),
        };
        let txn = |ops: Vec<RequestOp>| TxnRequest { success: ops, ..Default::default() };
        // The branch's own deletes are known before any nested put.
        let deleted_after = txn(vec![nested(put_op("b")), delete_op("a", "c")]);
        assert_eq!(super::txn(&deleted_after, &limits()), Err(Error::DuplicateKey));
        // A nested delete is known only to the nested txns after it and the branch's own puts.
        let deleted_later = txn(vec![nested(put_op("b")), nested(delete_op("b", ""))]);
        assert_eq!(super::txn(&deleted_later, &limits()), Ok(()));
        let deleted_first = txn(vec![nested(delete_op("b", "")), nested(put_op("b"))]);
        assert_eq!(super::txn(&deleted_first, &limits()), Err(Error::DuplicateKey));
        let put_after = txn(vec![put_op("b"), nested(delete_op("b", ""))]);
        assert_eq!(super::txn(&put_after, &limits()), Err(Error::DuplicateKey));
    }

    #[test]
    fn the_same_key_in_both_branches_is_fine() {
        let txn = TxnRequest { success: vec![put_op("a")], failure: vec![put_op("a")], ..Default::default() };
        assert_eq!(super::txn(&txn, &limits()), Ok(()));
    }

    #[test]
    fn a_nested_txn_gets_only_the_operations_its_parent_left() {
        let nested = |keys: &[&str]| RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                success: keys.iter().map(|k| put_op(k)).collect(),
                ..Default::default()
            })),
        };
        let fits = TxnRequest { success: vec![put_op("a"), nested(&["b"])], ..Default::default() };
        assert_eq!(super::txn(&fits, &limits()), Ok(()));
        let too_many = TxnRequest { success: vec![put_op("a"), nested(&["b", "c"])], ..Default::default() };
        assert_eq!(super::txn(&too_many, &limits()), Err(Error::TooManyOps));
    }

    #[test]
    fn too_many_ops_counts_the_longest_list() {
        let txn = TxnRequest { success: (0..4).map(|i| put_op(&i.to_string())).collect(), ..Default::default() };
        assert_eq!(super::txn(&txn, &limits()), Err(Error::TooManyOps));
    }
}
