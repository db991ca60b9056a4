//! The Lock service (etcd's v3lock): a mutex per name, held by a lease. The lock is the key
//! `name/<lease hex>`; whoever's key was created first holds it, the others wait for the keys
//! ahead of theirs to go.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::recipes::{session_key, CleanupOnDrop, Recipes};
use crate::pb::v3lockpb::{lock_server::Lock, LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::pb::{self, compare, request_op, Compare, RequestOp};
use crate::{Error, Result};

pub struct LockService {
    recipes: Arc<Recipes>,
}

impl LockService {
    pub fn new(recipes: Recipes) -> LockService {
        LockService { recipes: Arc::new(recipes) }
    }

    async fn lock(&self, req: LockRequest) -> Result<LockResponse> {
        let mut prefix = req.name;
        prefix.push(b'/');
        let key = session_key(&prefix, req.lease);
        let (my_revision, owner) = self.enqueue(&prefix, &key, req.lease).await?;
        let cleanup = CleanupOnDrop::new(self.recipes.clone(), key.clone());
        let header = match owner {
            Some(header) => header,
            None => {
                let header = self.recipes.wait_deletes(&prefix, my_revision - 1).await?;
                // The lease may have expired while we waited, taking our key with it.
                let mine = self.recipes.range(pb::RangeRequest { key: key.clone(), ..Default::default() }).await?;
                if mine.kvs.is_empty() {
                    return Err(Error::SessionExpired);
                }
                header
            }
        };
        cleanup.disarm();
        Ok(LockResponse { header: Some(header), key })
    }

    /// Creates our key if it is not there yet. Returns its create revision, and the header when
    /// we already hold the lock.
    async fn enqueue(&self, prefix: &[u8], key: &[u8], lease: i64) -> Result<(i64, Option<pb::ResponseHeader>)> {
        let owner = range_op(prefix);
        let txn = pb::TxnRequest {
            compare: vec![create_revision_is(key, 0)],
            success: vec![put_op(key, b"", lease), owner.clone()],
            failure: vec![get_op(key), owner],
        };
        let response = self.recipes.txn(txn).await?;
        let header = response.header.unwrap_or_default();
        let my_revision = if response.succeeded { header.revision } else { first_kv(&response, 0)?.create_revision };
        let holds = match first_kv(&response, 1) {
            Ok(owner) => owner.create_revision == my_revision,
            Err(_) => true,
        };
        Ok((my_revision, holds.then_some(header)))
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        Ok(Response::new(LockService::lock(self, request.into_inner()).await?))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let deleted = self.recipes.delete(request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header: deleted.header }))
    }
}

pub(super) fn create_revision_is(key: &[u8], revision: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        target: compare::CompareTarget::Create as i32,
        result: compare::CompareResult::Equal as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
        ..Default::default()
    }
}

pub(super) fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    let put = pb::PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestPut(put)) }
}

pub(super) fn get_op(key: &[u8]) -> RequestOp {
    let get = pb::RangeRequest { key: key.to_vec(), ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestRange(get)) }
}

/// The first-created key under `prefix`.
fn range_op(prefix: &[u8]) -> RequestOp {
    let get = pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: super::recipes::prefix_end(prefix),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Ascend as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        ..Default::default()
    };
    RequestOp { request: Some(request_op::Request::RequestRange(get)) }
}

/// The first key of the `index`-th (range) response of a txn.
pub(super) fn first_kv(response: &pb::TxnResponse, index: usize) -> Result<pb::KeyValue> {
    match response.responses.get(index).and_then(|r| r.response.as_ref()) {
        Some(pb::response_op::Response::ResponseRange(range)) => {
            range.kvs.first().cloned().ok_or_else(|| Error::Internal("empty range".into()))
        }
        _ => Err(Error::Internal("txn answered without a range".into())),
    }
}
