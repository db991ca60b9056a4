//! Membership changes and leadership moves as etcdctl 3.4 prints them: a sentence in the simple
//! format, the response in json and protobuf, and no fields or table form (etcd-io/etcd v3.4
//! `printer_simple.go`, and `printer.go`'s `printerRPC`).
//!
//! etcdctl has no json or protobuf printer for `member promote` and crashes there (a nil pointer
//! dereference, exit 2, after the member was promoted); phoenixctl prints the response instead.

use prost::Message;

use super::json;
use crate::pb;

/// A change etcdctl reports once the server made it.
#[derive(Debug, Clone)]
pub enum Change {
    MemberAdded(pb::MemberAddResponse),
    /// The member asked for, and the answer.
    MemberRemoved(u64, pb::MemberRemoveResponse),
    MemberUpdated(u64, pb::MemberUpdateResponse),
    MemberPromoted(u64, pb::MemberPromoteResponse),
    /// The leader the request went to, the member asked for, and the answer.
    LeaderMoved {
        from: u64,
        to: u64,
        response: pb::MoveLeaderResponse,
    },
}

impl Change {
    /// etcdctl's sentence: IDs as Go's `%16x` (padded with spaces), or `types.ID` (not padded).
    pub fn sentence(&self) -> String {
        let cluster = |header: &Option<pb::ResponseHeader>| header.as_ref().map_or(0, |h| h.cluster_id);
        match self {
            Change::MemberAdded(r) => {
                let id = r.member.as_ref().map_or(0, |m| m.id);
                format!("Member {id:16x} added to cluster {:16x}", cluster(&r.header))
            }
            Change::MemberRemoved(id, r) => format!("Member {id:16x} removed from cluster {:16x}", cluster(&r.header)),
            Change::MemberUpdated(id, r) => format!("Member {id:16x} updated in cluster {:16x}", cluster(&r.header)),
            Change::MemberPromoted(id, r) => format!("Member {id:16x} promoted in cluster {:16x}", cluster(&r.header)),
            Change::LeaderMoved { from, to, .. } => format!("Leadership transferred from {from:x} to {to:x}"),
        }
    }

    pub fn json(&self) -> String {
        match self {
            Change::MemberAdded(r) => json::member_add(r),
            Change::MemberRemoved(_, r) => json::members(r.header, &r.members),
            Change::MemberUpdated(_, r) => json::members(r.header, &r.members),
            Change::MemberPromoted(_, r) => json::members(r.header, &r.members),
            Change::LeaderMoved { response, .. } => json::members(response.header, &[]),
        }
    }

    pub fn protobuf(&self) -> Vec<u8> {
        match self {
            Change::MemberAdded(r) => r.encode_to_vec(),
            Change::MemberRemoved(_, r) => r.encode_to_vec(),
            Change::MemberUpdated(_, r) => r.encode_to_vec(),
            Change::MemberPromoted(_, r) => r.encode_to_vec(),
            Change::LeaderMoved { response, .. } => response.encode_to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader { cluster_id: 0xdfd396ec7b4c7b9e, member_id: 17, revision: 0, raft_term: 2 })
    }

    #[test]
    fn sentences_pad_ids_as_go_does() {
        let member = pb::Member { id: 0x3133ac1b17c286d0, ..Default::default() };
        let added = pb::MemberAddResponse { header: header(), member: Some(member), members: vec![] };
        assert_eq!(Change::MemberAdded(added).sentence(), "Member 3133ac1b17c286d0 added to cluster dfd396ec7b4c7b9e");
        let removed = Change::MemberRemoved(0x12, pb::MemberRemoveResponse { header: header(), members: vec![] });
        assert_eq!(removed.sentence(), "Member               12 removed from cluster dfd396ec7b4c7b9e");
        let moved = Change::LeaderMoved { from: 0xec13, to: 0x0313, response: pb::MoveLeaderResponse::default() };
        assert_eq!(moved.sentence(), "Leadership transferred from ec13 to 313");
    }

    #[test]
    fn json_is_the_response() {
        let member =
            pb::Member { id: 7, peer_ur_ls: vec!["http://a:1".into()], is_learner: true, ..Default::default() };
        let added = pb::MemberAddResponse { header: header(), member: Some(member.clone()), members: vec![member] };
        assert_eq!(
            Change::MemberAdded(added).json(),
            r#"{"header":{"cluster_id":16128400632968936350,"member_id":17,"raft_term":2},"member":{"ID":7,"peerURLs":["http://a:1"],"isLearner":true},"members":[{"ID":7,"peerURLs":["http://a:1"],"isLearner":true}]}"#
        );
        let moved = Change::LeaderMoved { from: 1, to: 2, response: pb::MoveLeaderResponse::default() };
        assert_eq!(moved.json(), "{}");
    }
}
