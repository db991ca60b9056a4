//! The `json` format: Go's `encoding/json` of etcd 3.4's generated response structs.
//!
//! Field names and order are the structs' `json` tags; zero values are left out (`omitempty`),
//! integers print in full (even above 2^53), `[]byte` prints as base64, and a oneof prints under
//! its Go field names (`{"Response":{"ResponsePut":{...}}}`). clientv3's own structs (watch and
//! lease answers) have untagged fields that always print, and their embedded header's fields
//! print at the top level.

use super::{EpHashKv, EpHealth, EpStatus};
use crate::ctl::gofmt::{base64, json_string};
use crate::pb;
use crate::pb::mvccpb::Event;
use crate::pb::response_op::Response;

/// One JSON object, written field by field.
struct Object {
    text: String,
}

impl Object {
    fn new() -> Object {
        Object { text: String::from("{") }
    }

    /// A field that is always written.
    fn raw(mut self, name: &str, value: &str) -> Object {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        self.text.push_str(&json_string(name));
        self.text.push(':');
        self.text.push_str(value);
        self
    }

    fn int(self, name: &str, value: impl Into<i128>) -> Object {
        match value.into() {
            0 => self,
            value => self.raw(name, &value.to_string()),
        }
    }

    fn flag(self, name: &str, value: bool) -> Object {
        if value {
            self.raw(name, "true")
        } else {
            self
        }
    }

    fn string(self, name: &str, value: &str) -> Object {
        if value.is_empty() {
            self
        } else {
            self.raw(name, &json_string(value))
        }
    }

    fn bytes(self, name: &str, value: &[u8]) -> Object {
        if value.is_empty() {
            self
        } else {
            self.raw(name, &json_string(&base64(value)))
        }
    }

    fn object(self, name: &str, value: Option<String>) -> Object {
        match value {
            Some(value) => self.raw(name, &value),
            None => self,
        }
    }

    fn list(self, name: &str, items: Vec<String>) -> Object {
        if items.is_empty() {
            self
        } else {
            self.raw(name, &array(items))
        }
    }

    fn end(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

fn array(items: Vec<String>) -> String {
    format!("[{}]", items.join(","))
}

fn header(header: Option<pb::ResponseHeader>) -> Option<String> {
    header.map(|h| {
        Object::new()
            .int("cluster_id", h.cluster_id)
            .int("member_id", h.member_id)
            .int("revision", h.revision)
            .int("raft_term", h.raft_term)
            .end()
    })
}

fn key_value(kv: &pb::KeyValue) -> String {
    Object::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .end()
}

pub fn range(response: &pb::RangeResponse) -> String {
    Object::new()
        .object("header", header(response.header))
        .list("kvs", response.kvs.iter().map(key_value).collect())
        .flag("more", response.more)
        .int("count", response.count)
        .end()
}

pub fn put(response: &pb::PutResponse) -> String {
    Object::new()
        .object("header", header(response.header))
        .object("prev_kv", response.prev_kv.as_ref().map(key_value))
        .end()
}

pub fn del(response: &pb::DeleteRangeResponse) -> String {
    Object::new()
        .object("header", header(response.header))
        .int("deleted", response.deleted)
        .list("prev_kvs", response.prev_kvs.iter().map(key_value).collect())
        .end()
}

pub fn txn(response: &pb::TxnResponse) -> String {
    Object::new()
        .object("header", header(response.header))
        .flag("succeeded", response.succeeded)
        .list("responses", response.responses.iter().map(response_op).collect())
        .end()
}

fn response_op(op: &pb::ResponseOp) -> String {
    let inner = match &op.response {
        Some(Response::ResponseRange(r)) => Object::new().raw("ResponseRange", &range(r)).end(),
        Some(Response::ResponsePut(r)) => Object::new().raw("ResponsePut", &put(r)).end(),
        Some(Response::ResponseDeleteRange(r)) => Object::new().raw("ResponseDeleteRange", &del(r)).end(),
        Some(Response::ResponseTxn(r)) => Object::new().raw("ResponseTxn", &txn(r)).end(),
        None => "null".to_string(),
    };
    Object::new().raw("Response", &inner).end()
}

/// clientv3's `WatchResponse`: the header is a struct, not a pointer, so it always prints; the
/// events are `[]` for a server's answer and `null` for clientv3's own cancellation notice,
/// which has no header.
pub fn watch(response: &pb::WatchResponse) -> String {
    let events = match (&response.header, response.events.is_empty()) {
        (None, true) => "null".to_string(),
        _ => array(response.events.iter().map(event).collect()),
    };
    Object::new()
        .raw("Header", &header(response.header).unwrap_or_else(|| "{}".to_string()))
        .raw("Events", &events)
        .raw("CompactRevision", &response.compact_revision.to_string())
        .raw("Canceled", &response.canceled.to_string())
        .raw("Created", &response.created.to_string())
        .end()
}

fn event(event: &Event) -> String {
    Object::new()
        .int("type", event.r#type)
        .object("kv", event.kv.as_ref().map(key_value))
        .object("prev_kv", event.prev_kv.as_ref().map(key_value))
        .end()
}

/// A clientv3 lease answer starts with its embedded header's fields.
fn promoted_header(header: Option<pb::ResponseHeader>) -> Object {
    let h = header.unwrap_or_default();
    Object::new()
        .int("cluster_id", h.cluster_id)
        .int("member_id", h.member_id)
        .int("revision", h.revision)
        .int("raft_term", h.raft_term)
}

pub fn lease_grant(response: &pb::LeaseGrantResponse) -> String {
    promoted_header(response.header)
        .raw("ID", &response.id.to_string())
        .raw("TTL", &response.ttl.to_string())
        .raw("Error", &json_string(&response.error))
        .end()
}

pub fn lease_revoke(response: &pb::LeaseRevokeResponse) -> String {
    Object::new().object("header", header(response.header)).end()
}

pub fn lease_keep_alive(response: &pb::LeaseKeepAliveResponse) -> String {
    promoted_header(response.header).raw("ID", &response.id.to_string()).raw("TTL", &response.ttl.to_string()).end()
}

pub fn time_to_live(response: &pb::LeaseTimeToLiveResponse) -> String {
    let keys = match response.keys.is_empty() {
        true => "null".to_string(),
        false => array(response.keys.iter().map(|k| json_string(&base64(k))).collect()),
    };
    promoted_header(response.header)
        .raw("id", &response.id.to_string())
        .raw("ttl", &response.ttl.to_string())
        .raw("granted-ttl", &response.granted_ttl.to_string())
        .raw("keys", &keys)
        .end()
}

pub fn lease_leases(response: &pb::LeaseLeasesResponse) -> String {
    let leases = response.leases.iter().map(|l| Object::new().raw("id", &l.id.to_string()).end());
    promoted_header(response.header).raw("leases", &array(leases.collect())).end()
}

pub fn member_list(response: &pb::MemberListResponse) -> String {
    Object::new()
        .object("header", header(response.header))
        .list("members", response.members.iter().map(member).collect())
        .end()
}

pub fn member_add(response: &pb::MemberAddResponse) -> String {
    Object::new()
        .object("header", header(response.header))
        .object("member", response.member.as_ref().map(member))
        .list("members", response.members.iter().map(member).collect())
        .end()
}

/// The answer to MemberRemove, MemberUpdate, MemberPromote or (without members) MoveLeader.
pub fn members(response_header: Option<pb::ResponseHeader>, members: &[pb::Member]) -> String {
    Object::new().object("header", header(response_header)).list("members", members.iter().map(member).collect()).end()
}

fn member(member: &pb::Member) -> String {
    Object::new()
        .int("ID", member.id)
        .string("name", &member.name)
        .list("peerURLs", member.peer_ur_ls.iter().map(|u| json_string(u)).collect())
        .list("clientURLs", member.client_ur_ls.iter().map(|u| json_string(u)).collect())
        .flag("isLearner", member.is_learner)
        .end()
}

pub fn alarm(response: &pb::AlarmResponse) -> String {
    let alarms = response.alarms.iter().map(|a| Object::new().int("memberID", a.member_id).int("alarm", a.alarm).end());
    Object::new().object("header", header(response.header)).list("alarms", alarms.collect()).end()
}

pub fn endpoint_health(list: &[EpHealth]) -> String {
    let items = list.iter().map(|h| {
        Object::new()
            .raw("endpoint", &json_string(&h.endpoint))
            .raw("health", if h.health { "true" } else { "false" })
            .raw("took", &json_string(&h.took))
            .string("error", &h.error)
            .end()
    });
    array(items.collect())
}

pub fn endpoint_status(list: &[EpStatus]) -> String {
    let items = list
        .iter()
        .map(|s| Object::new().raw("Endpoint", &json_string(&s.endpoint)).raw("Status", &status(&s.status)).end());
    array(items.collect())
}

fn status(status: &pb::StatusResponse) -> String {
    Object::new()
        .object("header", header(status.header))
        .string("version", &status.version)
        .int("dbSize", status.db_size)
        .int("leader", status.leader)
        .int("raftIndex", status.raft_index)
        .int("raftTerm", status.raft_term)
        .int("raftAppliedIndex", status.raft_applied_index)
        .list("errors", status.errors.iter().map(|e| json_string(e)).collect())
        .int("dbSizeInUse", status.db_size_in_use)
        .flag("isLearner", status.is_learner)
        .end()
}

pub fn endpoint_hash_kv(list: &[EpHashKv]) -> String {
    let items = list.iter().map(|h| {
        let hash_kv = Object::new()
            .object("header", header(h.hash_kv.header))
            .int("hash", h.hash_kv.hash)
            .int("compact_revision", h.hash_kv.compact_revision)
            .end();
        Object::new().raw("Endpoint", &json_string(&h.endpoint)).raw("HashKV", &hash_kv).end()
    });
    array(items.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_matches_etcdctl() {
        let response = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 324952591200643719,
                member_id: 3319814642761637952,
                revision: 3,
                raft_term: 2,
            }),
            kvs: vec![pb::KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: b"bar".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            range(&response),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":3,"raft_term":2},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFy"}],"count":1}"#
        );
    }

    #[test]
    fn txn_responses_print_under_go_field_names() {
        let put_op = pb::ResponseOp {
            response: Some(Response::ResponsePut(pb::PutResponse {
                header: Some(pb::ResponseHeader { revision: 7, ..Default::default() }),
                prev_kv: None,
            })),
        };
        let response = pb::TxnResponse { header: None, succeeded: true, responses: vec![put_op] };
        assert_eq!(
            txn(&response),
            r#"{"succeeded":true,"responses":[{"Response":{"ResponsePut":{"header":{"revision":7}}}}]}"#
        );
    }

    #[test]
    fn watch_responses_print_as_clientv3_structs() {
        let event = Event {
            r#type: 1,
            kv: Some(pb::KeyValue { key: b"w1".to_vec(), mod_revision: 8, ..Default::default() }),
            prev_kv: None,
        };
        let header = Some(pb::ResponseHeader { revision: 9, ..Default::default() });
        let response = pb::WatchResponse { header, events: vec![event], ..Default::default() };
        assert_eq!(
            watch(&response),
            r#"{"Header":{"revision":9},"Events":[{"type":1,"kv":{"key":"dzE=","mod_revision":8}}],"CompactRevision":0,"Canceled":false,"Created":false}"#
        );
        let notice = pb::WatchResponse { canceled: true, ..Default::default() };
        assert_eq!(
            watch(&notice),
            r#"{"Header":{},"Events":null,"CompactRevision":0,"Canceled":true,"Created":false}"#
        );
    }

    #[test]
    fn lease_answers_promote_their_header() {
        let header = Some(pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 });
        let grant = pb::LeaseGrantResponse { header, id: 10, ttl: 60, error: String::new() };
        assert_eq!(
            lease_grant(&grant),
            r#"{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4,"ID":10,"TTL":60,"Error":""}"#
        );
        let ttl = pb::LeaseTimeToLiveResponse { header: None, id: 4660, ttl: -1, granted_ttl: 0, keys: vec![] };
        assert_eq!(time_to_live(&ttl), r#"{"id":4660,"ttl":-1,"granted-ttl":0,"keys":null}"#);
        assert_eq!(lease_leases(&pb::LeaseLeasesResponse::default()), r#"{"leases":[]}"#);
    }

    #[test]
    fn empty_alarm_list_is_an_empty_object() {
        assert_eq!(alarm(&pb::AlarmResponse::default()), "{}");
    }
}
