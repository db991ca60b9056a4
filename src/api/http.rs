//! etcd's plain HTTP endpoints on the client URLs, beside gRPC: `/health` and `/version`.
//!
//! `/health` answers 200 `{"health":"true","reason":""}`, or 503 with `"false"` and etcd's
//! reason (`RAFT NO LEADER`, `ALARM NOSPACE`). While quorum is lost, Phoenix adds after etcd's
//! reason which voters are missing since when and the commands that recover the cluster.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};

use super::maintenance::alarm_name;
use super::Context;
use crate::recovery::quorum::quorum_loss;

/// The routes to add to the client URLs' router.
pub fn routes(router: axum::Router, ctx: Context) -> axum::Router {
    router.route("/health", health(ctx)).route("/version", get(version))
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
