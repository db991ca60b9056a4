//! The `fields` format: one `"Name" : value` line per field, strings quoted as Go's `%q`
//! (etcd-io/etcd v3.4 `printer_fields.go`). A missing header prints as zeros.

use std::io::{Result, Write};

use super::simple::alarm_name;
use super::{event_type_name, EpHashKv, EpHealth, EpStatus};
use crate::ctl::gofmt::quote;
use crate::pb;
use crate::pb::response_op::Response;

pub fn header(out: &mut dyn Write, header: Option<pb::ResponseHeader>) -> Result<()> {
    let h = header.unwrap_or_default();
    writeln!(out, "\"ClusterID\" : {}", h.cluster_id)?;
    writeln!(out, "\"MemberID\" : {}", h.member_id)?;
    writeln!(out, "\"Revision\" : {}", h.revision)?;
    writeln!(out, "\"RaftTerm\" : {}", h.raft_term)
}

fn key_value(out: &mut dyn Write, prefix: &str, kv: &pb::KeyValue) -> Result<()> {
    writeln!(out, "\"{prefix}Key\" : {}", quote(&kv.key))?;
    writeln!(out, "\"{prefix}CreateRevision\" : {}", kv.create_revision)?;
    writeln!(out, "\"{prefix}ModRevision\" : {}", kv.mod_revision)?;
    writeln!(out, "\"{prefix}Version\" : {}", kv.version)?;
    writeln!(out, "\"{prefix}Value\" : {}", quote(&kv.value))?;
    writeln!(out, "\"{prefix}Lease\" : {}", kv.lease)
}

pub fn get(out: &mut dyn Write, response: &pb::RangeResponse) -> Result<()> {
    header(out, response.header)?;
    response.kvs.iter().try_for_each(|kv| key_value(out, "", kv))?;
    writeln!(out, "\"More\" : {}", response.more)?;
    writeln!(out, "\"Count\" : {}", response.count)
}

pub fn put(out: &mut dyn Write, response: &pb::PutResponse) -> Result<()> {
    header(out, response.header)?;
    response.prev_kv.iter().try_for_each(|kv| key_value(out, "Prev", kv))
}

pub fn del(out: &mut dyn Write, response: &pb::DeleteRangeResponse) -> Result<()> {
    header(out, response.header)?;
    writeln!(out, "\"Deleted\" : {}", response.deleted)?;
    response.prev_kvs.iter().try_for_each(|kv| key_value(out, "Prev", kv))
}

pub fn txn(out: &mut dyn Write, response: &pb::TxnResponse) -> Result<()> {
    header(out, response.header)?;
    writeln!(out, "\"Succeeded\" : {}", response.succeeded)?;
    for op in &response.responses {
        match &op.response {
            Some(Response::ResponseRange(range)) => get(out, range)?,
            Some(Response::ResponsePut(put_response)) => put(out, put_response)?,
            Some(Response::ResponseDeleteRange(delete)) => del(out, delete)?,
            other => writeln!(out, "\"Unknown\" : {}", quote(format!("{other:?}").as_bytes()))?,
        }
    }
    Ok(())
}

pub fn watch(out: &mut dyn Write, response: &pb::WatchResponse) -> Result<()> {
    header(out, response.header)?;
    for event in &response.events {
        writeln!(out, "\"Type\" : {}", event_type_name(event.r#type))?;
        if let Some(prev) = &event.prev_kv {
            key_value(out, "Prev", prev)?;
        }
        key_value(out, "", &event.kv.clone().unwrap_or_default())?;
    }
    Ok(())
}

/// A lease grant or keep-alive answer.
pub fn lease(out: &mut dyn Write, response_header: Option<pb::ResponseHeader>, id: i64, ttl: i64) -> Result<()> {
    header(out, response_header)?;
    writeln!(out, "\"ID\" : {id}")?;
    writeln!(out, "\"TTL\" : {ttl}")
}

pub fn time_to_live(out: &mut dyn Write, response: &pb::LeaseTimeToLiveResponse) -> Result<()> {
    lease(out, response.header, response.id, response.ttl)?;
    writeln!(out, "\"GrantedTTL\" : {}", response.granted_ttl)?;
    response.keys.iter().try_for_each(|key| writeln!(out, "\"Key\" : {}", quote(key)))
}

pub fn lease_leases(out: &mut dyn Write, response: &pb::LeaseLeasesResponse) -> Result<()> {
    header(out, response.header)?;
    response.leases.iter().try_for_each(|lease| writeln!(out, "\"ID\" : {}", lease.id))
}

pub fn member_list(out: &mut dyn Write, response: &pb::MemberListResponse) -> Result<()> {
    header(out, response.header)?;
    for member in &response.members {
        writeln!(out, "\"ID\" : {}", member.id)?;
        writeln!(out, "\"Name\" : {}", quote(member.name.as_bytes()))?;
        for url in &member.peer_ur_ls {
            writeln!(out, "\"PeerURL\" : {}", quote(url.as_bytes()))?;
        }
        for url in &member.client_ur_ls {
            writeln!(out, "\"ClientURL\" : {}", quote(url.as_bytes()))?;
        }
        writeln!(out, "\"IsLearner\" : {}", member.is_learner)?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn alarm(out: &mut dyn Write, response: &pb::AlarmResponse) -> Result<()> {
    header(out, response.header)?;
    for alarm in &response.alarms {
        writeln!(out, "\"MemberID\" : {}", alarm.member_id)?;
        writeln!(out, "\"AlarmType\" : {}", alarm_name(alarm.alarm))?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn endpoint_health(out: &mut dyn Write, list: &[EpHealth]) -> Result<()> {
    for health in list {
        writeln!(out, "\"Endpoint\" : {}", quote(health.endpoint.as_bytes()))?;
        writeln!(out, "\"Health\" : {}", health.health)?;
        writeln!(out, "\"Took\" : {}", health.took)?;
        writeln!(out, "\"Error\" : {}", health.error)?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn endpoint_status(out: &mut dyn Write, list: &[EpStatus]) -> Result<()> {
    for EpStatus { endpoint, status } in list {
        header(out, status.header)?;
        writeln!(out, "\"Version\" : {}", quote(status.version.as_bytes()))?;
        writeln!(out, "\"DBSize\" : {}", status.db_size)?;
        writeln!(out, "\"Leader\" : {}", status.leader)?;
        writeln!(out, "\"IsLearner\" : {}", status.is_learner)?;
        writeln!(out, "\"RaftIndex\" : {}", status.raft_index)?;
        writeln!(out, "\"RaftTerm\" : {}", status.raft_term)?;
        writeln!(out, "\"RaftAppliedIndex\" : {}", status.raft_applied_index)?;
        writeln!(out, "\"Errors\" : [{}]", status.errors.join(" "))?;
        writeln!(out, "\"Endpoint\" : {}", quote(endpoint.as_bytes()))?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn endpoint_hash_kv(out: &mut dyn Write, list: &[EpHashKv]) -> Result<()> {
    for EpHashKv { endpoint, hash_kv } in list {
        header(out, hash_kv.header)?;
        writeln!(out, "\"Endpoint\" : {}", quote(endpoint.as_bytes()))?;
        writeln!(out, "\"Hash\" : {}", hash_kv.hash)?;
        writeln!(out)?;
    }
    Ok(())
}
