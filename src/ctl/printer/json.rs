//! The `json` format: Go's `encoding/json` of etcd 3.4's generated response structs.
//!
//! Field names and order are the structs' `json` tags; zero values are left out (`omitempty`),
//! integers print in full (even above 2^53), `[]byte` prints as base64, and a oneof prints under
//! its Go field names (`{"Response":{"ResponsePut":{...}}}`).

use super::{EpHashKv, EpHealth, EpStatus};
use crate::ctl::gofmt::{base64, json_string};
use crate::pb;
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

pub fn member_list(response: &pb::MemberListResponse) -> String {
    Object::new()
        .object("header", header(response.header))
        .list("members", response.members.iter().map(member).collect())
        .end()
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
    fn empty_alarm_list_is_an_empty_object() {
        assert_eq!(alarm(&pb::AlarmResponse::default()), "{}");
    }
}
