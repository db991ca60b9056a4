//! etcd's plain HTTP endpoints on the client URLs, beside gRPC: `/health`, `/version` and
//! `/metrics` (Prometheus text; etcd's leader gauges and Phoenix's scheduled-backup ones).
//!
//! `/health` answers 200 `{"health":"true","reason":""}`, or 503 with `"false"` and etcd's
//! reason (`RAFT NO LEADER`, `ALARM NOSPACE`). While quorum is lost, Phoenix adds after etcd's
//! reason which voters are missing since when and the commands that recover the cluster; while
//! the member installs a snapshot from its leader, it says so.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

use super::maintenance::alarm_name;
use super::Context;
use crate::recovery::quorum::quorum_loss;

/// The routes to add to the client URLs' router.
pub fn routes(router: axum::Router, ctx: Context) -> axum::Router {
    router.route("/health", health(ctx.clone())).route("/version", get(version)).route("/metrics", metrics(ctx))
}

fn metrics(ctx: Context) -> MethodRouter {
    get(move || {
        let ctx = ctx.clone();
        async move {
            let node = &ctx.node;
            let mut text = String::new();
            gauge(&mut text, "etcd_server_has_leader", "Whether a leader exists.", u64::from(node.has_leader()));
            let is_leader = node.usable_leader() == Some(node.id);
            gauge(&mut text, "etcd_server_is_leader", "Whether this member is the leader.", u64::from(is_leader));
            let help = "Raft log flushes to disk (each an fsync) since the member started.";
            metric(&mut text, "counter", "phoenix_log_flushes_total", help, crate::raft::log_store::flushes());
            if let Some(backups) = &ctx.backups {
                backup_metrics(&mut text, &backups.report());
            }
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
        }
    })
}

fn backup_metrics(text: &mut String, report: &crate::backup::BackupReport) {
    let last = report.last_saved.as_ref();
    let seconds = last.map_or(0, |saved| saved.at.timestamp().max(0) as u64);
    let help = "Unix time of the last scheduled backup saved (0: none yet).";
    gauge(text, "phoenix_backup_last_success_timestamp_seconds", help, seconds);
    let size = last.map_or(0, |saved| saved.size);
    gauge(text, "phoenix_backup_last_size_bytes", "Size of the last scheduled backup saved.", size);
    let revision = last.map_or(0, |saved| saved.revision.max(0) as u64);
    gauge(text, "phoenix_backup_last_revision", "Store revision of the last scheduled backup saved.", revision);
    let failing = u64::from(report.failing.is_some());
    gauge(text, "phoenix_backup_failing", "Whether the last scheduled backup failed.", failing);
    let help = "Scheduled backups that failed since the member started.";
    metric(text, "counter", "phoenix_backup_failures_total", help, report.failures);
}

fn gauge(text: &mut String, name: &str, help: &str, value: u64) {
    metric(text, "gauge", name, help, value);
}

fn metric(text: &mut String, kind: &str, name: &str, help: &str, value: u64) {
    text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
}

fn health(ctx: Context) -> MethodRouter {
    get(move || {
        let ctx = ctx.clone();
        async move {
            let reason = unhealthy_reason(&ctx);
            let status = if reason.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
            let body = serde_json::json!({
                "health": reason.is_none().to_string(),
                "reason": reason.unwrap_or_default(),
            });
            json(status, body)
        }
    })
}

async fn version() -> impl IntoResponse {
    let body = serde_json::json!({ "etcdserver": crate::ETCD_API_VERSION, "etcdcluster": crate::ETCD_CLUSTER_VERSION });
    json(StatusCode::OK, body)
}

fn json(status: StatusCode, body: serde_json::Value) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

/// Why this member is not healthy, in etcd's words first; None when it is.
fn unhealthy_reason(ctx: &Context) -> Option<String> {
    let node = &ctx.node;
    match node.kv.alarms() {
        Ok(alarms) if !alarms.is_empty() => {
            let names: Vec<&str> = alarms.iter().map(|a| alarm_name(a.alarm)).collect();
            return Some(format!("ALARM {}", names.join(",")));
        }
        Ok(_) => {}
        Err(e @ crate::Error::Installing) => return Some(e.to_string()),
        Err(e) => return Some(format!("STORAGE ERROR: {e}")),
    }
    if node.has_leader() {
        return None;
    }
    Some(match quorum_loss(node) {
        Some(loss) => format!("RAFT NO LEADER: {}", loss.explain(&ctx.data_dir)),
        None => "RAFT NO LEADER".to_string(),
    })
}
