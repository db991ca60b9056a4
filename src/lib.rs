//! Phoenix: an etcd-compatible consensus store that survives the loss of a majority of its members.
//!
//! # Layout
//! Dependencies point one way: `api` -> `raft` -> `kv`.
//! - [`config`]: etcd's command line flags, validated into one [`config::Config`].
//! - [`cluster`]: identity (cluster and member IDs) and the data dir's metadata.
//! - [`disk`]: the data dir's sled database, with flushes that survive a power cut.
//! - [`highwater`]: how far the data dir's database reached, to refuse one that went back.
//! - [`server`]: binds listeners and owns the lifetime of every task.
//! - [`api`]: the etcd v3 gRPC services; they validate, propose or read, and map results.
//! - [`raft`]: openraft glue: log store, state machine adapter, network, proposals, reads.
//! - [`kv`]: the deterministic etcd MVCC state machine over sled.
//! - [`lease`]: lease expiry, decided by the leader's clock and applied through Raft.
//! - [`watch`]: the in-memory hub that fans applied events out to watch streams.
//! - [`recovery`]: the quorum-loss reset of a survivor into a one-member cluster.
//! - [`ctl`]: `phoenixctl`, the etcdctl look-alike.
//! - [`error`]: the one error type and its mapping to etcd's gRPC statuses.

pub mod api;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod disk;
pub mod error;
pub mod faults;
pub mod highwater;
pub mod kv;
pub mod lease;
pub mod raft;
pub mod recovery;
pub mod server;
pub mod snapshot;
pub mod watch;

pub use error::{Error, Result};

/// Generated protobuf code: etcd's API (wire-compatible) and Phoenix's peer protocol.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod phoenixpb {
        tonic::include_proto!("phoenixpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
    pub use etcdserverpb::*;
    pub use mvccpb::KeyValue;
    pub use phoenixpb::*;
}

/// The etcd API version Phoenix reports in Status: clients such as Kubernetes gate features on it.
pub const ETCD_API_VERSION: &str = "3.5.17";
/// The cluster version `/version` reports, as etcd reports its major.minor.0.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";
