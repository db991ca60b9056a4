//! The building blocks of etcd's lock and election recipes (clientv3/concurrency), run inside
//! the server for the Lock and Election services: a key per lease under a prefix, ordered by
//! create revision, and waiting for the keys ahead of ours to be deleted.
//!
//! Everything goes through the same paths as a client's requests: writes through Raft,
//! reads after a read index (and after a snapshot install on this member, up to the request
//! timeout), waits on the watch hub (so they end when the member stops).

use std::future::ready;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use super::Context;
use crate::pb::mvccpb::event::EventType;
use crate::pb::range_request::{SortOrder, SortTarget};
use crate::pb::{self, command, command_result, KeyValue};
use crate::watch::WatchHub;
use crate::{Error, Result};

#[derive(Clone)]
pub struct Recipes {
    pub ctx: Context,
    pub hub: WatchHub,
}

/// The key a session (lease) holds under `prefix`: `prefix` + the lease ID in hex, as etcd names it.
pub fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `prefix` + 1 on its last byte: the end of etcd's prefix range.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Recipes {
    pub async fn txn(&self, txn: pb::TxnRequest) -> Result<pb::TxnResponse> {
        match self.ctx.propose(command::Op::Txn(txn)).await? {
            command_result::Result::Txn(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(response)
            }
            _ => Err(Error::Internal("unexpected result for txn".into())),
        }
    }

    pub async fn delete(&self, key: Vec<u8>) -> Result<pb::DeleteRangeResponse> {
        let req = pb::DeleteRangeRequest { key, ..Default::default() };
        match self.ctx.propose(command::Op::DeleteRange(req)).await? {
            command_result::Result::DeleteRange(mut response) => {
                response.header = self.ctx.header(response.header);
                Ok(response)
            }
            _ => Err(Error::Internal("unexpected result for delete".into())),
        }
    }

    /// A linearizable Range.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        self.ctx.node.linearize().await?;
        let mut response = self.ctx.wait_out_installs(|| ready(self.ctx.node.kv.range(&req))).await?;
        response.header = self.ctx.header(response.header);
        Ok(response)
    }

    /// The key under `prefix` created first (the owner, the leader), if any.
    pub async fn first_created(&self, prefix: &[u8]) -> Result<(pb::RangeResponse, Option<KeyValue>)> {
        let req = by_create(prefix, SortOrder::Ascend, 0);
        let mut response = self.range(req).await?;
        let first = response.kvs.drain(..).next();
        Ok((response, first))
    }

    /// Waits until every key under `prefix` created at or before `max_create_revision` is gone
    /// (etcd's waitDeletes): the keys ahead of ours in the queue.
    pub async fn wait_deletes(&self, prefix: &[u8], max_create_revision: i64) -> Result<pb::ResponseHeader> {
        loop {
            let mut response = self.range(by_create(prefix, SortOrder::Descend, max_create_revision)).await?;
            let Some(ahead) = response.kvs.pop() else {
                return Ok(response.header.unwrap_or_default());
            };
            self.wait_deleted(&ahead).await?;
        }
    }

    /// Waits until `kv`'s key is deleted (or re-created: then this incarnation is gone too).
    pub async fn wait_deleted(&self, kv: &KeyValue) -> Result<()> {
        loop {
            let mut applied = self.hub.subscribe();
            if !self.still_there(kv).await? {
                return Ok(());
            }
            loop {
                match applied.recv().await {
                    Ok(batch) => {
                        let deleted = batch.events.iter().any(|e| {
                            e.r#type == EventType::Delete as i32 && e.kv.as_ref().is_some_and(|d| d.key == kv.key)
                        });
                        if deleted {
                            return Ok(());
                        }
                        if batch.reset {
                            break;
                        }
                    }
                    // Missed some batches: look at the store again.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Err(Error::Stopped),
                }
            }
        }
    }

    async fn still_there(&self, kv: &KeyValue) -> Result<bool> {
        let response = self.range(pb::RangeRequest { key: kv.key.clone(), ..Default::default() }).await?;
        Ok(response.kvs.first().is_some_and(|now| now.create_revision == kv.create_revision))
    }
}

/// A one-key Range over `prefix` sorted by create revision, optionally capped.
fn by_create(prefix: &[u8], order: SortOrder, max_create_revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

/// Runs `cleanup` if dropped while armed: a lock or campaign whose client went away while it
/// waited removes its key, as etcd does when the request's context is canceled.
pub struct CleanupOnDrop {
    recipes: Option<Arc<Recipes>>,
    key: Vec<u8>,
}

impl CleanupOnDrop {
    pub fn new(recipes: Arc<Recipes>, key: Vec<u8>) -> CleanupOnDrop {
        CleanupOnDrop { recipes: Some(recipes), key }
    }

    pub fn disarm(mut self) {
        self.recipes = None;
    }
}

impl Drop for CleanupOnDrop {
    fn drop(&mut self) {
        if let Some(recipes) = self.recipes.take() {
            let key = std::mem::take(&mut self.key);
            tokio::spawn(async move {
                if let Err(e) = recipes.delete(key).await {
                    tracing::warn!(error = %e, "could not remove the key of an abandoned lock or campaign");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(session_key(b"lock/", 0x694d), b"lock/694d");
    }
}
