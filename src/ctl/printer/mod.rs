//! etcdctl's output formats (`-w simple|json|fields|table|protobuf`), byte for byte.
//!
//! Mirrors etcd-io/etcd v3.4 `etcdctl/ctlv3/command/printer*.go`: RPC responses print as simple,
//! json, fields and protobuf, and the member list also as a table; endpoint listings print as
//! simple, json, fields and table. A format a response does not support fails with etcdctl's
//! `<format> not supported as output format` (exit 4) after the request was made, as in etcdctl.
//! The json format is Go's `encoding/json` of etcd 3.4's generated structs, so fields newer than
//! etcd 3.4 are not printed.

mod fields;
mod json;
mod simple;
mod table;

use std::io::Write;

use prost::Message;

use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR};
use crate::pb;

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

/// An RPC response that prints in every format; a table only where etcdctl has one.
pub trait Printable: Message {
    fn simple(&self, out: &mut dyn Write, style: KvStyle) -> std::io::Result<()>;
    fn json(&self) -> String;
    fn fields(&self, out: &mut dyn Write) -> std::io::Result<()>;
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
            Format::Protobuf => out.write_all(&response.encode_to_vec()),
            Format::Table => match response.table() {
                Some(table) => table.render(out),
                None => return Err(self.unsupported()),
            },
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
}
