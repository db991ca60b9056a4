//! openraft glue: the type configuration, and the pieces that connect openraft to sled, to the
//! network and to the etcd API.
//!
//! - [`log_store`]: the Raft log and vote in sled, flushed before openraft hears they are durable
//!   (a leader's own appends: before anyone hears they are committed, see [`leader_flush`]).
//! - [`state_machine`]: applies committed entries to [`crate::kv`], builds and installs snapshots.
//! - [`network`] / [`peer_service`]: both ends of the peer protocol, with cluster-ID checks.
//! - [`node`]: one member's Raft handle, proposal batching, forwarding and linearizable reads.
//! - [`outcome`]: what became of a forwarded write whose answer was lost.

// openraft's traits return its StorageError, which is large; boxing it here would buy nothing.
#![allow(clippy::result_large_err)]

pub mod elections;
pub mod leader_flush;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod outcome;
pub mod peer_service;
pub mod state_machine;
#[cfg(test)]
mod storage_tests;
pub mod transfer;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pb;

pub type NodeId = u64;

/// What openraft knows about a member: enough to reach it, and what it is meant to be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Added as a voter (etcd's `member add` without --learner): it joins as a Raft learner and
    /// the leader promotes it once it has caught up, so an empty member never counts toward
    /// the quorum before it holds the log.
    pub voter: bool,
}

impl PeerNode {
    /// Whether a member is a learner by the operator's choice: not voting, and not an added voter
    /// still catching up (etcd lists that one as a voter, and so does Phoenix).
    pub fn is_learner(&self, votes: bool) -> bool {
        !votes && !self.voter
    }
}

/// A Raft entry's payload: a batch of client commands sharing one entry (and one fsync).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposal(#[serde(with = "protobuf")] pub pb::CommandBatch);

impl From<pb::command::Op> for pb::Command {
    /// A command proposed on the member that was asked for it: no [`pb::Origin`].
    fn from(op: pb::command::Op) -> pb::Command {
        pb::Command { op: Some(op), origin: None }
    }
}

/// The results of applying one entry, one per command, in the batch's order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied(#[serde(with = "protobuf")] pub pb::CommandResults);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch of {} commands", self.0.commands.len())
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, PeerNode>;

/// Every member, with whether it votes.
pub type Members = std::collections::BTreeMap<NodeId, (PeerNode, bool)>;

/// Every member of `membership`, with whether it votes.
pub fn membership_with_votes(membership: &Membership) -> Members {
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    membership.nodes().map(|(id, node)| (*id, (node.clone(), voters.contains(id)))).collect()
}
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;

/// Serde for protobuf messages: they travel inside openraft's serde types as their wire bytes.
mod protobuf {
    use std::fmt;
    use std::marker::PhantomData;

    use prost::Message;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<M: Message, S: Serializer>(msg: &M, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&msg.encode_to_vec())
    }

    /// Asks for borrowed bytes rather than a `Vec<u8>`: serde reads a `Vec<u8>` one element at a
    /// time, which made decoding entries a top cost of a new member catching up
    /// (benches/cluster), and bincode lends bytes from its input without a copy. The encoding is
    /// the same (bincode writes both as a length and the bytes).
    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(d: D) -> Result<M, D::Error> {
        d.deserialize_bytes(Decode(PhantomData))
    }

    struct Decode<M>(PhantomData<M>);

    impl<'de, M: Message + Default> Visitor<'de> for Decode<M> {
        type Value = M;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("protobuf bytes")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<M, E> {
            M::decode(bytes).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<M, A::Error> {
            // The hint comes from the input: trust it only so far.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            self.visit_bytes(&bytes)
        }
    }
}

/// Wraps a storage failure the way openraft expects it.
pub(crate) fn storage_error(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    err: impl fmt::Display,
) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(err.to_string()))
}

#[cfg(test)]
mod protobuf_tests {
    use super::{pb, Proposal};

    fn proposal() -> Proposal {
        let put = pb::PutRequest { key: b"k\0\xff".to_vec(), value: vec![7; 300], ..Default::default() };
        let command = pb::Command::from(pb::command::Op::Put(put));
        Proposal(pb::CommandBatch { commands: vec![command; 3] })
    }

    #[test]
    fn a_proposal_survives_bincode_as_bytes() {
        let encoded = bincode::serialize(&proposal()).unwrap();
        assert_eq!(bincode::deserialize::<Proposal>(&encoded).unwrap(), proposal());
    }

    #[test]
    fn a_proposal_survives_a_format_that_writes_bytes_as_a_sequence() {
        let encoded = serde_json::to_string(&proposal()).unwrap();
        assert!(encoded.starts_with('['), "JSON writes bytes as an array: {encoded}");
        assert_eq!(serde_json::from_str::<Proposal>(&encoded).unwrap(), proposal());
    }

    #[test]
    fn bytes_that_are_not_protobuf_are_an_error() {
        // bincode's byte string: a little-endian u64 length, then the bytes (an unfinished varint).
        let mut encoded = 3u64.to_le_bytes().to_vec();
        encoded.extend([0xff; 3]);
        assert!(bincode::deserialize::<Proposal>(&encoded).is_err());
    }
}
