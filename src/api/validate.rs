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

/// The keys one branch writes: single keys put, and ranges deleted.
#[derive(Default)]
struct Writes {
    puts: BTreeSet<Vec<u8>>,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writes {
    fn covers(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|(start, end)| in_range(key, start, end))
    }

    /// Adds another branch's writes; a key written by both is a duplicate.
    fn merge(&mut self, other: Writes) -> Result<()> {
        for key in &other.puts {
            if self.puts.contains(key) || self.covers(key) {
                return Err(Error::DuplicateKey);
            }
        }
        for key in &self.puts {
            if other.covers(key) {
                return Err(Error::DuplicateKey);
            }
        }
        self.puts.extend(other.puts);
        self.deletes.extend(other.deletes);
        Ok(())
    }
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

/// etcd refuses a txn that writes a key twice in one branch, counting nested txns.
fn check_no_duplicate_writes(req: &TxnRequest) -> Result<()> {
    branch_writes(&req.success)?;
    branch_writes(&req.failure)?;
    Ok(())
}

fn branch_writes(ops: &[RequestOp]) -> Result<Writes> {
    let mut writes = Writes::default();
    for op in ops {
        let mut op_writes = Writes::default();
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                op_writes.puts.insert(p.key.clone());
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                op_writes.deletes.push((d.key.clone(), d.range_end.clone()));
            }
            Some(request_op::Request::RequestTxn(t)) => {
                // Only one nested branch runs, so each is checked alone against this branch.
                let success = branch_writes(&t.success)?;
                let failure = branch_writes(&t.failure)?;
                let mut either = Writes::default();
                either.puts.extend(success.puts.iter().chain(&failure.puts).cloned());
                either.deletes.extend(success.deletes.into_iter().chain(failure.deletes));
                op_writes = either;
            }
            _ => {}
        }
        writes.merge(op_writes)?;
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
