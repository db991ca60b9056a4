//! etcdctl's output formats (`-w simple|json|fields|table|protobuf`), byte for byte.
//!
//! Mirrors etcd-io/etcd v3.4 `etcdctl/ctlv3/command/printer*.go`: RPC responses print as simple,
//! json, fields and protobuf, and the member list also as a table; endpoint listings print as
//! simple, json, fields and table; membership changes and leadership moves print as simple, json
//! and protobuf (`change`). A format a response does not support fails with etcdctl's
//! `<format> not supported as output format` (exit 4) after the request was made, as in etcdctl.
//! The json format is Go's `encoding/json` of etcd 3.4's generated structs, so fields newer than
//! etcd 3.4 are not printed.
//!
//! Watch and lease answers print as clientv3 hands them to etcdctl, not as they travel: a watch
//! response as clientv3's `WatchResponse` struct, a lease answer as clientv3's wrapper, whose
//! embedded header is all `-w protobuf` can marshal (a revoke answer cannot be marshalled at all).

mod change;
mod fields;
mod json;
mod simple;
mod table;

use std::io::Write;

use prost::Message;

use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR};
use super::gofmt::human_bytes;
use crate::pb;
use crate::pb::mvccpb::event::EventType;
use crate::snapshot::BackupStatus;

pub use change::Change;

/// One `-w` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Simple,
    Json,
    Fields,
    Table,
    Protobuf,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Table => "table",
            Format::Protobuf => "protobuf",
        }
    }
}

/// How the simple format prints keys and values.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvStyle {
    /// `--hex`: `\x66\x6f\x6f` instead of `foo`.
    pub hex: bool,
    /// `get --print-value-only`.
    pub value_only: bool,
}

/// Writes responses in the format `-w` chose.
#[derive(Debug, Clone)]
pub struct Printer {
    format: Format,
    style: KvStyle,
}

/// One endpoint's answer to `endpoint health`.
#[derive(Debug, Clone)]
pub struct EpHealth {
    pub endpoint: String,
    pub health: bool,
    /// Go's duration text, e.g. `1.274261ms`.
    pub took: String,
    /// Empty when healthy.
    pub error: String,
}

/// One endpoint's answer to `endpoint status`.
#[derive(Debug, Clone)]
pub struct EpStatus {
    pub endpoint: String,
    pub status: pb::StatusResponse,
}

/// One endpoint's answer to `endpoint hashkv`.
#[derive(Debug, Clone)]
pub struct EpHashKv {
    pub endpoint: String,
    pub hash_kv: pb::HashKvResponse,
}

/// `lease revoke`'s answer, printed with the lease it revoked.
#[derive(Debug, Clone)]
pub struct LeaseRevoked {
    pub id: i64,
    pub response: pb::LeaseRevokeResponse,
}

/// `lease timetolive`'s answer; with `--keys` the simple format lists the keys, even none.
#[derive(Debug, Clone)]
pub struct LeaseTimeToLive {
    pub response: pb::LeaseTimeToLiveResponse,
    pub keys: bool,
}

/// An RPC response that prints in every format; a table only where etcdctl has one.
pub trait Printable {
    fn simple(&self, out: &mut dyn Write, style: KvStyle) -> std::io::Result<()>;
    fn json(&self) -> String;
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()>;
    /// The bytes `-w protobuf` writes, or etcdctl's refusal.
    fn protobuf(&self) -> Result<Vec<u8>, CtlError>;
    fn table(&self) -> Option<table::Table> {
        None
    }
}

impl Printer {
    /// etcdctl fails an unknown `-w` with `unsupported output format` (exit 4).
    pub fn new(write_out: &str, hex: bool) -> Result<Printer, CtlError> {
        let format = match write_out {
            "simple" => Format::Simple,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "table" => Format::Table,
            "protobuf" => Format::Protobuf,
            _ => return Err(CtlError::new(EXIT_BAD_FEATURE, "unsupported output format")),
        };
        Ok(Printer { format, style: KvStyle { hex, value_only: false } })
    }

    /// Whether this is the simple format, after which `lease keep-alive` says the lease ended.
    pub fn is_simple(&self) -> bool {
        self.format == Format::Simple
    }

    /// `get --print-value-only`, which only the simple format knows.
    pub fn set_value_only(&mut self) -> Result<(), CtlError> {
        if self.format != Format::Simple {
            return Err(CtlError::new(EXIT_BAD_ARGS, "print-value-only is only for `--write-out=simple`"));
        }
        self.style.value_only = true;
        Ok(())
    }

    /// Prints one RPC response.
    pub fn print<T: Printable>(&self, out: &mut dyn Write, response: &T) -> Result<(), CtlError> {
        let written = match self.format {
            Format::Simple => response.simple(out, self.style),
            Format::Json => writeln!(out, "{}", response.json()),
            Format::Fields => response.fields(out),
            Format::Protobuf => out.write_all(&response.protobuf()?),
            Format::Table => match response.table() {
                Some(table) => table.render(out),
                None => return Err(self.unsupported()),
            },
        };
        written.map_err(write_error)
    }

    /// Prints a membership change or a leadership move, which etcdctl has no fields or table
    /// form of: those fail after the change was made, as in etcdctl.
    pub fn print_change(&self, out: &mut dyn Write, change: &Change) -> Result<(), CtlError> {
        let written = match self.format {
            Format::Simple => writeln!(out, "{}", change.sentence()),
            Format::Json => writeln!(out, "{}", change.json()),
            Format::Protobuf => out.write_all(&change.protobuf()),
            Format::Fields | Format::Table => return Err(self.unsupported()),
        };
        written.map_err(write_error)
    }

    /// Prints `endpoint health`; the simple format reports on stderr, as etcdctl does.
    pub fn endpoint_health(&self, out: &mut dyn Write, err: &mut dyn Write, list: &[EpHealth]) -> Result<(), CtlError> {
        let written = match self.format {
            Format::Simple => simple::endpoint_health(err, list),
            Format::Json => writeln!(out, "{}", json::endpoint_health(list)),
            Format::Fields => fields::endpoint_health(out, list),
            Format::Table => table::endpoint_health(list).render(out),
            Format::Protobuf => return Err(self.unsupported()),
        };
        written.map_err(write_error)
    }

    /// Prints `endpoint status`.
    pub fn endpoint_status(&self, out: &mut dyn Write, list: &[EpStatus]) -> Result<(), CtlError> {
        let written = match self.format {
            Format::Simple => simple::rows(out, &table::endpoint_status(list)),
            Format::Json => writeln!(out, "{}", json::endpoint_status(list)),
            Format::Fields => fields::endpoint_status(out, list),
            Format::Table => table::endpoint_status(list).render(out),
            Format::Protobuf => return Err(self.unsupported()),
        };
        written.map_err(write_error)
    }

    /// Prints `endpoint hashkv`.
    pub fn endpoint_hash_kv(&self, out: &mut dyn Write, list: &[EpHashKv]) -> Result<(), CtlError> {
        let written = match self.format {
            Format::Simple => simple::rows(out, &table::endpoint_hash_kv(list)),
            Format::Json => writeln!(out, "{}", json::endpoint_hash_kv(list)),
            Format::Fields => fields::endpoint_hash_kv(out, list),
            Format::Table => table::endpoint_hash_kv(list).render(out),
            Format::Protobuf => return Err(self.unsupported()),
        };
        written.map_err(write_error)
    }

    /// Prints `snapshot status`.
    pub fn snapshot_status(&self, out: &mut dyn Write, status: &BackupStatus) -> Result<(), CtlError> {
        let hash = format!("{:x}", status.hash);
        let size = human_bytes(status.total_size);
        let written = match self.format {
            Format::Simple => writeln!(out, "{hash}, {}, {}, {size}", status.revision, status.total_keys),
            Format::Json => writeln!(
                out,
                "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
                status.hash, status.revision, status.total_keys, status.total_size
            ),
            Format::Fields => writeln!(
                out,
                "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}",
                status.hash, status.revision, status.total_keys, status.total_size
            ),
            Format::Table => table::Table {
                header: vec!["hash", "revision", "total keys", "total size"],
                rows: vec![vec![hash, status.revision.to_string(), status.total_keys.to_string(), size]],
            }
            .render(out),
            Format::Protobuf => return Err(self.unsupported()),
        };
        written.map_err(write_error)
    }

    fn unsupported(&self) -> CtlError {
        CtlError::new(EXIT_BAD_FEATURE, format!("{} not supported as output format", self.format.name()))
    }
}

/// Output that cannot be written (a closed pipe) ends the command.
pub fn write_error(error: std::io::Error) -> CtlError {
    CtlError::new(EXIT_ERROR, error.to_string())
}

impl Printable for pb::RangeResponse {
    fn simple(&self, out: &mut dyn Write, style: KvStyle) -> std::io::Result<()> {
        simple::get(out, self, style)
    }
    fn json(&self) -> String {
        json::range(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::get(out, self)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.encode_to_vec())
    }
}

impl Printable for pb::PutResponse {
    fn simple(&self, out: &mut dyn Write, style: KvStyle) -> std::io::Result<()> {
        simple::put(out, self, style)
    }
    fn json(&self) -> String {
        json::put(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::put(out, self)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.encode_to_vec())
    }
}

impl Printable for pb::DeleteRangeResponse {
    fn simple(&self, out: &mut dyn Write, style: KvStyle) -> std::io::Result<()> {
        simple::del(out, self, style)
    }
    fn json(&self) -> String {
        json::del(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::del(out, self)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.encode_to_vec())
    }
}

impl Printable for pb::TxnResponse {
    fn simple(&self, out: &mut dyn Write, style: KvStyle) -> std::io::Result<()> {
        simple::txn(out, self, style)
    }
    fn json(&self) -> String {
        json::txn(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::txn(out, self)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.encode_to_vec())
    }
}

impl Printable for pb::MemberListResponse {
    fn simple(&self, out: &mut dyn Write, _: KvStyle) -> std::io::Result<()> {
        simple::rows(out, &table::member_list(self))
    }
    fn json(&self) -> String {
        json::member_list(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::member_list(out, self)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.encode_to_vec())
    }
    fn table(&self) -> Option<table::Table> {
        Some(table::member_list(self))
    }
}

impl Printable for pb::AlarmResponse {
    fn simple(&self, out: &mut dyn Write, _: KvStyle) -> std::io::Result<()> {
        simple::alarm(out, self)
    }
    fn json(&self) -> String {
        json::alarm(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::alarm(out, self)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.encode_to_vec())
    }
}

impl Printable for pb::WatchResponse {
    fn simple(&self, out: &mut dyn Write, style: KvStyle) -> std::io::Result<()> {
        simple::watch(out, self, style)
    }
    fn json(&self) -> String {
        json::watch(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::watch(out, self)
    }
    /// etcdctl rebuilds the response from clientv3's copy, which keeps neither the watch ID nor
    /// the cancel reason, and always has a header.
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        let rebuilt = pb::WatchResponse {
            header: Some(self.header.unwrap_or_default()),
            events: self.events.clone(),
            compact_revision: self.compact_revision,
            canceled: self.canceled,
            created: self.created,
            ..Default::default()
        };
        Ok(rebuilt.encode_to_vec())
    }
}

impl Printable for pb::LeaseGrantResponse {
    fn simple(&self, out: &mut dyn Write, _: KvStyle) -> std::io::Result<()> {
        writeln!(out, "lease {} granted with TTL({}s)", lease_hex(self.id), self.ttl)
    }
    fn json(&self) -> String {
        json::lease_grant(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::lease(out, self.header, self.id, self.ttl)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.header.unwrap_or_default().encode_to_vec())
    }
}

impl Printable for LeaseRevoked {
    fn simple(&self, out: &mut dyn Write, _: KvStyle) -> std::io::Result<()> {
        writeln!(out, "lease {} revoked", lease_hex(self.id))
    }
    fn json(&self) -> String {
        json::lease_revoke(&self.response)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::header(out, self.response.header)
    }
    /// clientv3's `LeaseRevokeResponse` has no marshaller; etcdctl prints it with Go's `%v`.
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        let value = self.response.header.as_ref().map_or_else(|| "<nil>".to_string(), compact_header);
        let message = format!("marshal unsupported for type clientv3.LeaseRevokeResponse ({{{value}}})");
        Err(CtlError::new(EXIT_BAD_FEATURE, message))
    }
}

impl Printable for pb::LeaseKeepAliveResponse {
    fn simple(&self, out: &mut dyn Write, _: KvStyle) -> std::io::Result<()> {
        writeln!(out, "lease {} keepalived with TTL({})", lease_hex(self.id), self.ttl)
    }
    fn json(&self) -> String {
        json::lease_keep_alive(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::lease(out, self.header, self.id, self.ttl)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.header.unwrap_or_default().encode_to_vec())
    }
}

impl Printable for LeaseTimeToLive {
    fn simple(&self, out: &mut dyn Write, _: KvStyle) -> std::io::Result<()> {
        simple::time_to_live(out, &self.response, self.keys)
    }
    fn json(&self) -> String {
        json::time_to_live(&self.response)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::time_to_live(out, &self.response)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.response.header.unwrap_or_default().encode_to_vec())
    }
}

impl Printable for pb::LeaseLeasesResponse {
    fn simple(&self, out: &mut dyn Write, _: KvStyle) -> std::io::Result<()> {
        writeln!(out, "found {} leases", self.leases.len())?;
        self.leases.iter().try_for_each(|lease| writeln!(out, "{}", lease_hex(lease.id)))
    }
    fn json(&self) -> String {
        json::lease_leases(self)
    }
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()> {
        fields::lease_leases(out, self)
    }
    fn protobuf(&self) -> Result<Vec<u8>, CtlError> {
        Ok(self.header.unwrap_or_default().encode_to_vec())
    }
}

/// A lease ID as Go's `%016x` prints an int64 (a negative one keeps its sign).
pub fn lease_hex(id: i64) -> String {
    if id < 0 {
        format!("-{:015x}", id.unsigned_abs())
    } else {
        format!("{id:016x}")
    }
}

/// A header as gogoproto's compact text: each set field as `name:value `.
fn compact_header(header: &pb::ResponseHeader) -> String {
    let fields: [(&str, i128); 4] = [
        ("cluster_id", header.cluster_id.into()),
        ("member_id", header.member_id.into()),
        ("revision", header.revision.into()),
        ("raft_term", header.raft_term.into()),
    ];
    fields.iter().filter(|(_, value)| *value != 0).map(|(name, value)| format!("{name}:{value} ")).collect()
}

/// An event type's protobuf name (`PUT`, `DELETE`), or its number when unknown.
pub fn event_type_name(event_type: i32) -> String {
    EventType::try_from(event_type).map(|t| t.as_str_name().to_string()).unwrap_or_else(|_| event_type.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_print_as_go_hex() {
        assert_eq!(lease_hex(0x1234), "0000000000001234");
        assert_eq!(lease_hex(0x694d7a8b8c6a0c04), "694d7a8b8c6a0c04");
        assert_eq!(lease_hex(-5), "-000000000000005");
    }

    #[test]
    fn a_revoke_answer_cannot_be_marshalled() {
        let header = pb::ResponseHeader { cluster_id: 7, member_id: 8, revision: 5, raft_term: 0 };
        let revoked = LeaseRevoked { id: 1, response: pb::LeaseRevokeResponse { header: Some(header) } };
        let message = revoked.protobuf().unwrap_err().message.unwrap_or_default();
        assert_eq!(
            message,
            "marshal unsupported for type clientv3.LeaseRevokeResponse ({cluster_id:7 member_id:8 revision:5 })"
        );
    }
}
