//! The `simple` format (etcdctl's default): `OK`, keys and values on their own lines, and
//! comma-separated rows for listings (etcd-io/etcd v3.4 `printer_simple.go`).

use std::io::{Result, Write};

use super::table::Table;
use super::{event_type_name, lease_hex, EpHealth, KvStyle};
use crate::pb;
use crate::pb::response_op::Response;

pub fn get(out: &mut dyn Write, response: &pb::RangeResponse, style: KvStyle) -> Result<()> {
    response.kvs.iter().try_for_each(|kv| key_value(out, kv, style))
}

pub fn put(out: &mut dyn Write, response: &pb::PutResponse, style: KvStyle) -> Result<()> {
    writeln!(out, "OK")?;
    response.prev_kv.iter().try_for_each(|kv| key_value(out, kv, style))
}

pub fn del(out: &mut dyn Write, response: &pb::DeleteRangeResponse, style: KvStyle) -> Result<()> {
    writeln!(out, "{}", response.deleted)?;
    response.prev_kvs.iter().try_for_each(|kv| key_value(out, kv, style))
}

pub fn txn(out: &mut dyn Write, response: &pb::TxnResponse, style: KvStyle) -> Result<()> {
    writeln!(out, "{}", if response.succeeded { "SUCCESS" } else { "FAILURE" })?;
    for op in &response.responses {
        writeln!(out)?;
        match &op.response {
            Some(Response::ResponseRange(range)) => get(out, range, style)?,
            Some(Response::ResponsePut(put_response)) => put(out, put_response, style)?,
            Some(Response::ResponseDeleteRange(delete)) => del(out, delete, style)?,
            other => writeln!(out, "unexpected response {other:?}")?,
        }
    }
    Ok(())
}

/// Each event's type, then the previous key and value (if asked for), then the key and value.
pub fn watch(out: &mut dyn Write, response: &pb::WatchResponse, style: KvStyle) -> Result<()> {
    for event in &response.events {
        writeln!(out, "{}", event_type_name(event.r#type))?;
        if let Some(prev) = &event.prev_kv {
            key_value(out, prev, style)?;
        }
        key_value(out, &event.kv.clone().unwrap_or_default(), style)?;
    }
    Ok(())
}

/// An unknown or expired lease reads as expired; `--keys` lists the keys as Go's `%v` does.
pub fn time_to_live(out: &mut dyn Write, response: &pb::LeaseTimeToLiveResponse, keys: bool) -> Result<()> {
    let id = lease_hex(response.id);
    if response.granted_ttl == 0 && response.ttl == -1 {
        return writeln!(out, "lease {id} already expired");
    }
    write!(out, "lease {id} granted with TTL({}s), remaining({}s)", response.granted_ttl, response.ttl)?;
    if keys {
        write!(out, ", attached keys([")?;
        for (i, key) in response.keys.iter().enumerate() {
            if i > 0 {
                write!(out, " ")?;
            }
            out.write_all(key)?;
        }
        write!(out, "])")?;
    }
    writeln!(out)
}

/// Each alarm as Go's `%+v` prints it: the protobuf compact text form, e.g.
/// `memberID:17010963214147749224 alarm:NOSPACE ` (with its trailing space).
pub fn alarm(out: &mut dyn Write, response: &pb::AlarmResponse) -> Result<()> {
    for alarm in &response.alarms {
        let mut text = String::new();
        if alarm.member_id != 0 {
            text.push_str(&format!("memberID:{} ", alarm.member_id));
        }
        if alarm.alarm != 0 {
            text.push_str(&format!("alarm:{} ", alarm_name(alarm.alarm)));
        }
        writeln!(out, "{text}")?;
    }
    Ok(())
}

/// An alarm type's protobuf name, or its number when unknown (as Go's generated code prints it).
pub fn alarm_name(alarm: i32) -> String {
    pb::AlarmType::try_from(alarm).map(|t| t.as_str_name().to_string()).unwrap_or_else(|_| alarm.to_string())
}

pub fn endpoint_health(err: &mut dyn Write, list: &[EpHealth]) -> Result<()> {
    for health in list {
        if health.error.is_empty() {
            writeln!(err, "{} is healthy: successfully committed proposal: took = {}", health.endpoint, health.took)?;
        } else {
            writeln!(err, "{} is unhealthy: failed to commit proposal: {}", health.endpoint, health.error)?;
        }
    }
    Ok(())
}

/// A listing's table rows, each joined with `, `.
pub fn rows(out: &mut dyn Write, table: &Table) -> Result<()> {
    table.rows.iter().try_for_each(|row| writeln!(out, "{}", row.join(", ")))
}

/// etcdctl's `printKV`: the key (unless `--print-value-only`), then the value, each on a line.
fn key_value(out: &mut dyn Write, kv: &pb::KeyValue, style: KvStyle) -> Result<()> {
    if !style.value_only {
        write_bytes(out, &kv.key, style.hex)?;
    }
    write_bytes(out, &kv.value, style.hex)
}

fn write_bytes(out: &mut dyn Write, bytes: &[u8], hex: bool) -> Result<()> {
    if hex {
        let text: String = bytes.iter().map(|b| format!("\\x{b:02x}")).collect();
        writeln!(out, "{text}")
    } else {
        out.write_all(bytes)?;
        writeln!(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> pb::KeyValue {
        pb::KeyValue { key: key.into(), value: value.into(), ..Default::default() }
    }

    fn text(print: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> String {
        let mut out = Vec::new();
        print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn get_prints_keys_and_values() {
        let response = pb::RangeResponse { kvs: vec![kv("a", "1"), kv("b", "2")], ..Default::default() };
        assert_eq!(text(|out| get(out, &response, KvStyle::default())), "a\n1\nb\n2\n");
        let value_only = KvStyle { value_only: true, hex: false };
        assert_eq!(text(|out| get(out, &response, value_only)), "1\n2\n");
        let hex = KvStyle { hex: true, value_only: false };
        assert_eq!(text(|out| get(out, &response, hex)), "\\x61\n\\x31\n\\x62\n\\x32\n");
    }

    #[test]
    fn txn_separates_responses_with_blank_lines() {
        let put_op = pb::ResponseOp { response: Some(Response::ResponsePut(pb::PutResponse::default())) };
        let response = pb::TxnResponse { succeeded: false, responses: vec![put_op], ..Default::default() };
        assert_eq!(text(|out| txn(out, &response, KvStyle::default())), "FAILURE\n\nOK\n");
    }

    #[test]
    fn watch_events_print_the_previous_value_first() {
        let event = pb::mvccpb::Event {
            r#type: pb::mvccpb::event::EventType::Delete as i32,
            kv: Some(kv("a", "")),
            prev_kv: Some(kv("a", "1")),
        };
        let response = pb::WatchResponse { events: vec![event], ..Default::default() };
        assert_eq!(text(|out| watch(out, &response, KvStyle::default())), "DELETE\na\n1\na\n\n");
    }

    #[test]
    fn time_to_live_reads_like_etcdctl() {
        let mut response =
            pb::LeaseTimeToLiveResponse { id: 0x1234, ttl: 57, granted_ttl: 60, keys: vec![], header: None };
        assert_eq!(
            text(|out| time_to_live(out, &response, true)),
            "lease 0000000000001234 granted with TTL(60s), remaining(57s), attached keys([])\n"
        );
        response.keys = vec![b"k1".to_vec(), b"k2".to_vec()];
        assert!(text(|out| time_to_live(out, &response, true)).ends_with("attached keys([k1 k2])\n"));
        let expired = pb::LeaseTimeToLiveResponse { id: 0x1234, ttl: -1, ..Default::default() };
        assert_eq!(text(|out| time_to_live(out, &expired, false)), "lease 0000000000001234 already expired\n");
    }

    #[test]
    fn alarms_print_as_compact_text() {
        let member = pb::AlarmMember { member_id: 17, alarm: pb::AlarmType::Nospace as i32 };
        let response = pb::AlarmResponse { alarms: vec![member], ..Default::default() };
        assert_eq!(text(|out| alarm(out, &response)), "memberID:17 alarm:NOSPACE \n");
    }
}
