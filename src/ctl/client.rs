//! The gRPC client phoenixctl speaks through: Phoenix's generated tonic clients over one channel,
//! with etcd 3.4 clientv3's connection and retry behaviour.
//!
//! - Endpoints are `host:port` or `http://host:port`; the first that accepts a connection is used,
//!   until it answers a repeatable call `Unavailable`: the retry goes to another.
//! - Calls wait for a connection until the command deadline (`--command-timeout`), then fail with
//!   `context deadline exceeded`, as clientv3's wait-for-ready calls do; `--dial-timeout` bounds
//!   each connection attempt.
//! - Read-only calls are retried while the server answers `Unavailable`; writes, membership
//!   changes and MoveLeader are never retried once sent (clientv3 `retry.go`). Lease calls all
//!   count as repeatable, as in clientv3.
//! - Watch and keep-alive streams are opened with their first request already queued: a gRPC
//!   server need not answer the call before it has a message to send.

use std::future::Future;
use std::time::Duration;

use futures::future::select_ok;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use super::cli::GlobalFlags;
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION};
use crate::pb;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::kv_client::KvClient;
use crate::pb::lease_client::LeaseClient;
use crate::pb::maintenance_client::MaintenanceClient;
use crate::pb::watch_client::WatchClient;

/// clientv3's default limit on a request it sends.
const MAX_SEND_BYTES: usize = 2 * 1024 * 1024;

/// clientv3's default limit on a response it receives.
const MAX_RECEIVE_BYTES: usize = i32::MAX as usize;

/// Pause between rounds of connection attempts while no endpoint answers.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Pause before retrying a read the server answered `Unavailable`.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// clientv3's `defaultUnaryMaxRetries`.
const MAX_RETRIES: u32 = 100;

/// The gRPC metadata key clientv3's `WithRequireLeader` sets to `true`.
const REQUIRE_LEADER_KEY: &str = "hasleader";

/// Requests a stream may queue before the caller waits for the connection to take them.
const STREAM_QUEUE: usize = 16;

/// A bidirectional stream: requests go in through the sender, answers come out of the stream.
pub struct Duplex<Req, Resp> {
    pub requests: mpsc::Sender<Req>,
    pub responses: Streaming<Resp>,
}

/// Whether a call may be repeated after the server answered `Unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Repeatable,
    Once,
}

/// A connection (made on first use) to the first endpoint of a list that answers; clones made
/// once it is connected share it.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<Endpoint>,
    /// The connection, and which of the endpoints it goes to.
    connected: Option<(usize, Channel)>,
    /// The endpoint that last answered `Unavailable`, tried last when connecting again.
    unavailable: Option<usize>,
}

impl Client {
    /// A client for `endpoints`; fails on an endpoint phoenixctl cannot dial.
    pub fn new(endpoints: &[String], flags: &GlobalFlags) -> Result<Client, CtlError> {
        let given = endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty());
        let endpoints: Vec<Endpoint> = given.map(|e| endpoint(e, flags)).collect::<Result<_, _>>()?;
        if endpoints.is_empty() {
            return Err(CtlError::new(EXIT_BAD_CONNECTION, "etcdclient: no available endpoints"));
        }
        Ok(Client { endpoints, connected: None, unavailable: None })
    }

    pub async fn range(&mut self, deadline: Instant, request: pb::RangeRequest) -> Result<pb::RangeResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| {
            let request = request.clone();
            async move { kv(ch).range(request).await }
        })
        .await
    }

    pub async fn put(&mut self, deadline: Instant, request: pb::PutRequest) -> Result<pb::PutResponse, CtlError> {
        self.call(deadline, Retry::Once, |ch| {
            let request = request.clone();
            async move { kv(ch).put(request).await }
        })
        .await
    }

    pub async fn delete_range(
        &mut self,
        deadline: Instant,
        request: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, CtlError> {
        self.call(deadline, Retry::Once, |ch| {
            let request = request.clone();
            async move { kv(ch).delete_range(request).await }
        })
        .await
    }

    pub async fn txn(&mut self, deadline: Instant, request: pb::TxnRequest) -> Result<pb::TxnResponse, CtlError> {
        self.call(deadline, Retry::Once, |ch| {
            let request = request.clone();
            async move { kv(ch).txn(request).await }
        })
        .await
    }

    pub async fn compact(&mut self, deadline: Instant, request: pb::CompactionRequest) -> Result<(), CtlError> {
        self.call(deadline, Retry::Once, |ch| async move { kv(ch).compact(request).await }).await.map(drop)
    }

    pub async fn member_list(&mut self, deadline: Instant) -> Result<pb::MemberListResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| async move {
            cluster(ch).member_list(pb::MemberListRequest::default()).await
        })
        .await
    }

    pub async fn member_add(
        &mut self,
        deadline: Instant,
        request: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, CtlError> {
        self.call(deadline, Retry::Once, |ch| {
            let request = request.clone();
            async move { cluster(ch).member_add(request).await }
        })
        .await
    }

    pub async fn member_remove(&mut self, deadline: Instant, id: u64) -> Result<pb::MemberRemoveResponse, CtlError> {
        self.call(
            deadline,
            Retry::Once,
            |ch| async move { cluster(ch).member_remove(pb::MemberRemoveRequest { id }).await },
        )
        .await
    }

    pub async fn member_update(
        &mut self,
        deadline: Instant,
        request: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, CtlError> {
        self.call(deadline, Retry::Once, |ch| {
            let request = request.clone();
            async move { cluster(ch).member_update(request).await }
        })
        .await
    }

    pub async fn member_promote(&mut self, deadline: Instant, id: u64) -> Result<pb::MemberPromoteResponse, CtlError> {
        self.call(deadline, Retry::Once, |ch| async move {
            cluster(ch).member_promote(pb::MemberPromoteRequest { id }).await
        })
        .await
    }

    pub async fn move_leader(&mut self, deadline: Instant, target_id: u64) -> Result<pb::MoveLeaderResponse, CtlError> {
        self.call(deadline, Retry::Once, |ch| async move {
            maintenance(ch).move_leader(pb::MoveLeaderRequest { target_id }).await
        })
        .await
    }

    pub async fn alarm(&mut self, deadline: Instant, request: pb::AlarmRequest) -> Result<pb::AlarmResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| async move { maintenance(ch).alarm(request).await }).await
    }

    pub async fn status(&mut self, deadline: Instant) -> Result<pb::StatusResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| async move {
            maintenance(ch).status(pb::StatusRequest::default()).await
        })
        .await
    }

    /// Opens the snapshot stream; `deadline` bounds its start only, since a backup takes as long
    /// as the store is big.
    /// Opens the snapshot stream once connected (by `connect_by`), however long the server
    /// takes to answer: it copies the whole store first. The caller bounds the save if asked to.
    pub async fn snapshot(&mut self, connect_by: Instant) -> Result<tonic::Streaming<pb::SnapshotResponse>, CtlError> {
        let channel = self.channel(connect_by).await?;
        let stream = maintenance(channel).snapshot(pb::SnapshotRequest::default()).await;
        stream.map(tonic::Response::into_inner).map_err(|status| CtlError::status(&status))
    }

    pub async fn hash_kv(&mut self, deadline: Instant, revision: i64) -> Result<pb::HashKvResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| async move {
            maintenance(ch).hash_kv(pb::HashKvRequest { revision }).await
        })
        .await
    }

    pub async fn defragment(&mut self, deadline: Instant) -> Result<(), CtlError> {
        self.call(deadline, Retry::Once, |ch| async move {
            maintenance(ch).defragment(pb::DefragmentRequest::default()).await
        })
        .await
        .map(drop)
    }

    pub async fn lease_grant(&mut self, deadline: Instant, ttl: i64) -> Result<pb::LeaseGrantResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| async move {
            lease(ch).lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }).await
        })
        .await
    }

    pub async fn lease_revoke(&mut self, deadline: Instant, id: i64) -> Result<pb::LeaseRevokeResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| async move {
            lease(ch).lease_revoke(pb::LeaseRevokeRequest { id }).await
        })
        .await
    }

    pub async fn lease_time_to_live(
        &mut self,
        deadline: Instant,
        request: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, CtlError> {
        self.call(deadline, Retry::Repeatable, |ch| async move { lease(ch).lease_time_to_live(request).await }).await
    }

    pub async fn lease_leases(&mut self, deadline: Instant) -> Result<pb::LeaseLeasesResponse, CtlError> {
        self.call(
            deadline,
            Retry::Repeatable,
            |ch| async move { lease(ch).lease_leases(pb::LeaseLeasesRequest {}).await },
        )
        .await
    }

    /// Opens a Watch stream that starts with `first`; with `require_leader` the server ends it
    /// when it loses its leader (clientv3's `WithRequireLeader`).
    pub async fn watch(
        &mut self,
        deadline: Instant,
        first: pb::WatchRequest,
        require_leader: bool,
    ) -> Result<Duplex<pb::WatchRequest, pb::WatchResponse>, CtlError> {
        let (requests, queue) = seeded_queue(first);
        let mut request = tonic::Request::new(queue);
        if require_leader {
            request.metadata_mut().insert(REQUIRE_LEADER_KEY, tonic::metadata::MetadataValue::from_static("true"));
        }
        let channel = self.channel(deadline).await?;
        let responses = answered(deadline, watch(channel).watch(request)).await?;
        Ok(Duplex { requests, responses })
    }

    /// Opens a LeaseKeepAlive stream that starts with `first`.
    pub async fn lease_keep_alive(
        &mut self,
        deadline: Instant,
        first: pb::LeaseKeepAliveRequest,
    ) -> Result<Duplex<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse>, CtlError> {
        let (requests, queue) = seeded_queue(first);
        let channel = self.channel(deadline).await?;
        let responses = answered(deadline, lease(channel).lease_keep_alive(queue)).await?;
        Ok(Duplex { requests, responses })
    }

    /// Connects now, so that clones made afterwards share the connection.
    pub async fn connect(&mut self, deadline: Instant) -> Result<(), CtlError> {
        self.channel(deadline).await.map(drop)
    }

    /// Runs `rpc` on the connection, connecting first and retrying as `retry` allows.
    async fn call<T, F, Fut>(&mut self, deadline: Instant, retry: Retry, mut rpc: F) -> Result<T, CtlError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut retries = 0;
        loop {
            let channel = self.channel(deadline).await?;
            let status = match timeout_at(deadline, rpc(channel)).await {
                Err(_) => return Err(CtlError::deadline()),
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
            };
            let retryable = retry == Retry::Repeatable && status.code() == tonic::Code::Unavailable;
            if !retryable || retries == MAX_RETRIES {
                return Err(CtlError::status(&status));
            }
            retries += 1;
            // Retried elsewhere, as clientv3's balancer moves on: a learner, a member that is
            // stopping or one cut off from its leader may not serve the call, and another may.
            if self.endpoints.len() > 1 {
                self.unavailable = self.connected.take().map(|(i, _)| i);
            }
            pause(RETRY_PAUSE, deadline).await?;
        }
    }

    /// The connection, made now if there is none: every endpoint is tried at once (but the one
    /// that last answered `Unavailable`, while there are others), again and again, until one
    /// answers or the deadline passes.
    async fn channel(&mut self, deadline: Instant) -> Result<Channel, CtlError> {
        if let Some((_, channel)) = &self.connected {
            return Ok(channel.clone());
        }
        loop {
            let candidates = self.endpoints.iter().enumerate().filter(|(i, _)| Some(*i) != self.unavailable);
            let attempts = candidates.map(|(i, e)| Box::pin(async move { e.connect().await.map(|ch| (i, ch)) }));
            match timeout_at(deadline, select_ok(attempts)).await {
                Err(_) => return Err(CtlError::deadline()),
                Ok(Ok(((i, channel), _))) => {
                    self.connected = Some((i, channel.clone()));
                    return Ok(channel);
                }
                Ok(Err(_)) => {
                    // None of the others answers: the one left out may again.
                    self.unavailable = None;
                    pause(RECONNECT_PAUSE, deadline).await?
                }
            }
        }
    }
}

/// A request queue that already holds `first`.
fn seeded_queue<T>(first: T) -> (mpsc::Sender<T>, ReceiverStream<T>) {
    let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
    // A fresh channel has room for its first message.
    let _ = sender.try_send(first);
    (sender, ReceiverStream::new(receiver))
}

/// The answer to a stream call (its headers), or why none came before the deadline.
async fn answered<T>(
    deadline: Instant,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CtlError> {
    match timeout_at(deadline, call).await {
        Err(_) => Err(CtlError::deadline()),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CtlError::status(&status)),
    }
}

/// Sleeps for `length`, or fails if the deadline comes first.
async fn pause(length: Duration, deadline: Instant) -> Result<(), CtlError> {
    let wake = Instant::now() + length;
    if wake >= deadline {
        sleep_until(deadline).await;
        return Err(CtlError::deadline());
    }
    sleep_until(wake).await;
    Ok(())
}

/// An endpoint as a URL: `host:port` means plain http, the only scheme phoenixctl speaks.
pub fn endpoint_url(address: &str) -> Result<String, CtlError> {
    match address.split_once("://") {
        None => Ok(format!("http://{address}")),
        Some(("http", _)) => Ok(address.to_string()),
        Some(_) => {
            let message = format!("endpoint {address:?} is not supported: phoenixctl speaks plain http (host:port)");
            Err(CtlError::new(EXIT_BAD_ARGS, message))
        }
    }
}

/// A tonic endpoint for an etcdctl endpoint string.
fn endpoint(address: &str, flags: &GlobalFlags) -> Result<Endpoint, CtlError> {
    let uri = endpoint_url(address)?;
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| CtlError::new(EXIT_BAD_ARGS, format!("invalid endpoint {address:?}: {e}")))?;
    Ok(endpoint
        .connect_timeout(flags.dial_timeout)
        .http2_keep_alive_interval(flags.keepalive_time)
        .keep_alive_timeout(flags.keepalive_timeout))
}

fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_encoding_message_size(MAX_SEND_BYTES).max_decoding_message_size(MAX_RECEIVE_BYTES)
}

fn cluster(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel).max_encoding_message_size(MAX_SEND_BYTES).max_decoding_message_size(MAX_RECEIVE_BYTES)
}

fn lease(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel).max_encoding_message_size(MAX_SEND_BYTES).max_decoding_message_size(MAX_RECEIVE_BYTES)
}

fn watch(channel: Channel) -> WatchClient<Channel> {
    WatchClient::new(channel).max_encoding_message_size(MAX_SEND_BYTES).max_decoding_message_size(MAX_RECEIVE_BYTES)
}

fn maintenance(channel: Channel) -> MaintenanceClient<Channel> {
    MaintenanceClient::new(channel)
        .max_encoding_message_size(MAX_SEND_BYTES)
        .max_decoding_message_size(MAX_RECEIVE_BYTES)
}
