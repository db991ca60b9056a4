//! `endpoint health`, `endpoint status` and `endpoint hashkv`: each endpoint of `--endpoints`
//! (or, with `--cluster`, each client URL in the member list) asked on its own connection, as
//! etcdctl 3.4 does (etcd-io/etcd v3.4 `ep_command.go`).

use std::io::Write;

use tokio::time::Instant;

use super::cli::{EndpointArgs, EndpointCommand};
use super::error::{CtlError, EXIT_ERROR};
use super::gofmt::duration;
use super::printer::{write_error, EpHashKv, EpHealth, EpStatus};
use super::{Ctx, Io};
use crate::pb;

/// etcd's answer to a Range its permissions refuse, which still proves the member serves.
const PERMISSION_DENIED: &str = "etcdserver: permission denied";

pub async fn endpoint(ctx: &Ctx, args: EndpointArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    match args.command {
        EndpointCommand::Health => health(ctx, args.cluster.cluster, io).await,
        EndpointCommand::Status => status(ctx, args.cluster.cluster, io).await,
        EndpointCommand::Hashkv { rev } => hash_kv(ctx, args.cluster.cluster, rev, io).await,
    }
}

/// `--endpoints`, or with `--cluster` every client URL of every member.
pub async fn target_endpoints(ctx: &Ctx, cluster: bool) -> Result<Vec<String>, CtlError> {
    if !cluster {
        return Ok(ctx.endpoints().to_vec());
    }
    let members = ctx.client()?.member_list(ctx.deadline()).await.map_err(|e| {
        let reason = e.message.unwrap_or_default();
        CtlError::new(EXIT_ERROR, format!("failed to fetch endpoints from etcd cluster member list: {reason}"))
    })?;
    Ok(members.members.into_iter().flat_map(|m| m.client_ur_ls).collect())
}

/// Reads the key `health` linearizably from every endpoint at once.
async fn health(ctx: &Ctx, cluster: bool, io: &mut Io<'_>) -> Result<(), CtlError> {
    let printer = ctx.printer()?;
    let endpoints = target_endpoints(ctx, cluster).await?;
    let checks = endpoints.iter().map(|endpoint| check_health(ctx, endpoint));
    let list = futures::future::join_all(checks).await;
    printer.endpoint_health(io.out, io.err, &list)?;
    if list.iter().any(|h| !h.error.is_empty()) {
        return Err(CtlError::new(EXIT_ERROR, "unhealthy cluster"));
    }
    Ok(())
}

async fn check_health(ctx: &Ctx, endpoint: &str) -> EpHealth {
    let start = Instant::now();
    let request = pb::RangeRequest { key: b"health".to_vec(), ..Default::default() };
    let result = match ctx.client_for(endpoint) {
        Ok(mut client) => client.range(ctx.deadline(), request).await.map(drop),
        Err(e) => Err(e),
    };
    let error = match result {
        Ok(()) => String::new(),
        Err(e) => e.message.filter(|m| m != PERMISSION_DENIED).unwrap_or_default(),
    };
    EpHealth { endpoint: endpoint.to_string(), health: error.is_empty(), took: duration(start.elapsed()), error }
}

/// Asks each endpoint in turn; one that fails is reported and makes the exit 1.
async fn status(ctx: &Ctx, cluster: bool, io: &mut Io<'_>) -> Result<(), CtlError> {
    let printer = ctx.printer()?;
    let mut list = Vec::new();
    let mut failed = false;
    for endpoint in target_endpoints(ctx, cluster).await? {
        match ctx.client_for(&endpoint)?.status(ctx.deadline()).await {
            Ok(status) => list.push(EpStatus { endpoint, status }),
            Err(e) => {
                failed = true;
                report(io.err, "status", &endpoint, e)?;
            }
        }
    }
    printer.endpoint_status(io.out, &list)?;
    if failed {
        return Err(CtlError::silent(EXIT_ERROR));
    }
    Ok(())
}

/// Like `status`, but the last failure is also printed as the `Error:` line.
async fn hash_kv(ctx: &Ctx, cluster: bool, revision: i64, io: &mut Io<'_>) -> Result<(), CtlError> {
    let printer = ctx.printer()?;
    let mut list = Vec::new();
    let mut last_error = None;
    for endpoint in target_endpoints(ctx, cluster).await? {
        match ctx.client_for(&endpoint)?.hash_kv(ctx.deadline(), revision).await {
            Ok(hash_kv) => list.push(EpHashKv { endpoint, hash_kv }),
            Err(e) => {
                report(io.err, "hash", &endpoint, e.clone())?;
                last_error = Some(e);
            }
        }
    }
    printer.endpoint_hash_kv(io.out, &list)?;
    last_error.map_or(Ok(()), Err)
}

fn report(err: &mut dyn Write, what: &str, endpoint: &str, error: CtlError) -> Result<(), CtlError> {
    let reason = error.message.unwrap_or_default();
    writeln!(err, "Failed to get the {what} of endpoint {endpoint} ({reason})").map_err(write_error)
}
