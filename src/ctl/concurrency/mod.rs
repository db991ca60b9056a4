//! etcd's client-side concurrency recipes, as etcdctl 3.4's `lock` and `elect` use them
//! (etcd-io/etcd v3.4 `clientv3/concurrency`): a [`Session`] is a lease kept alive in the
//! background, a [`Mutex`] and an [`Election`] are keys under a prefix owned by a session's
//! lease, and whoever's key was created first holds the lock or leads. They use only KV, Lease
//! and Watch, never the server's Lock and Election services.
//!
//! Unlike clientv3, whose requests here wait without limit, each request is bounded by
//! `--command-timeout`; waiting for other holders to go (a watch) is not.

mod election;
mod mutex;
mod session;

pub use election::Election;
pub use mutex::Mutex;
pub use session::Session;

use std::time::Duration;

use tokio::time::Instant;

use super::client::Client;
use super::error::{CtlError, EXIT_ERROR};
use super::kv::prefix_end;
use super::watcher::{Update, Watcher};
use crate::pb;
use crate::pb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::mvccpb::event::EventType;
use crate::pb::range_request::{SortOrder, SortTarget};
use crate::pb::request_op::Request;
use crate::pb::response_op::Response;

/// The connection the recipes share and the time each of their requests may take.
#[derive(Clone)]
pub struct Conn {
    pub client: Client,
    pub timeout: Duration,
}

impl Conn {
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }
}

/// The key a session's lease owns under `prefix`: the lease ID in hex, as Go's `%x` writes it.
fn owned_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 { format!("-{:x}", lease.unsigned_abs()) } else { format!("{lease:x}") };
    [prefix, hex.as_bytes()].concat()
}

/// `create_revision(key) == revision`.
fn created_at(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
    }
}

fn put(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    let put = pb::PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() };
    pb::RequestOp { request: Some(Request::RequestPut(put)) }
}

fn get(range: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp { request: Some(Request::RequestRange(range)) }
}

fn get_key(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest { key: key.to_vec(), ..Default::default() }
}

/// The key under `prefix` created first (clientv3's `WithFirstCreate`).
fn first_created(prefix: &[u8]) -> pb::RangeRequest {
    top(prefix, SortOrder::Ascend)
}

/// clientv3's `withTop`: the prefix, sorted by create revision, one key.
fn top(prefix: &[u8], order: SortOrder) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The keys a txn's `index`th operation read; a txn answer of another shape is an error.
fn read_kvs(response: &pb::TxnResponse, index: usize) -> Result<&[pb::KeyValue], CtlError> {
    match response.responses.get(index).and_then(|op| op.response.as_ref()) {
        Some(Response::ResponseRange(range)) => Ok(&range.kvs),
        _ => Err(CtlError::new(EXIT_ERROR, "unexpected txn response")),
    }
}

/// Waits until every key under `prefix` created at or before `max_create_revision` is deleted,
/// newest first (clientv3's `waitDeletes`); returns the header of the read that found none.
async fn wait_deletes(
    conn: &Conn,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<Option<pb::ResponseHeader>, CtlError> {
    let mut client = conn.client.clone();
    loop {
        let last_created = pb::RangeRequest { max_create_revision, ..top(prefix, SortOrder::Descend) };
        let response = client.range(conn.deadline(), last_created).await?;
        let Some(last) = response.kvs.first() else {
            return Ok(response.header);
        };
        wait_delete(conn, &last.key, response.header.map_or(0, |h| h.revision)).await?;
    }
}

/// Waits until `key` is deleted, watching from `revision` (clientv3's `waitDelete`).
async fn wait_delete(conn: &Conn, key: &[u8], revision: i64) -> Result<(), CtlError> {
    let mut watcher = Watcher::new(conn.client.clone(), false);
    let request = pb::WatchCreateRequest { key: key.to_vec(), start_revision: revision, ..Default::default() };
    watcher.watch(conn.deadline(), request).await?;
    loop {
        match watcher.next().await {
            Update::Response { response, error, .. } => {
                if response.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                    return Ok(());
                }
                if let Some(error) = error {
                    return Err(CtlError::new(EXIT_ERROR, error));
                }
            }
            Update::Closed { .. } => return Err(CtlError::new(EXIT_ERROR, "lost watcher waiting for delete")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_keys_end_in_the_lease_as_go_hex() {
        assert_eq!(owned_key(b"mylock/", 0x694d7a8b8c6a0c04), b"mylock/694d7a8b8c6a0c04");
        assert_eq!(owned_key(b"e/", 0x1f), b"e/1f");
        assert_eq!(owned_key(b"e/", -31), b"e/-1f");
    }

    #[test]
    fn the_first_created_key_is_one_key_of_the_prefix() {
        let range = first_created(b"mylock/");
        assert_eq!((range.key.as_slice(), range.range_end.as_slice()), (&b"mylock/"[..], &b"mylock0"[..]));
        assert_eq!((range.limit, range.sort_order), (1, SortOrder::Ascend as i32));
        assert_eq!(range.sort_target, SortTarget::Create as i32);
    }
}
