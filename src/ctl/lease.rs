//! `lease grant|revoke|timetolive|list|keep-alive`, as etcdctl 3.4 runs them (etcd-io/etcd v3.4
//! `lease_command.go`): lease IDs are hex on the command line and in the simple format, grant and
//! revoke failures are wrapped (`failed to grant lease (...)`, exit 1), and the other questions
//! fail with the bare error and exit 2.
//!
//! Unlike etcdctl, whose `timetolive`, `list` and `keep-alive --once` wait without limit, every
//! request is bounded by `--command-timeout`.

use super::cli::LeaseCommand;
use super::error::{status_message, CtlError, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR};
use super::goparse::parse_int;
use super::keepalive::KeepAlive;
use super::printer::{lease_hex, write_error, LeaseRevoked, LeaseTimeToLive};
use super::{Ctx, Io};
use crate::pb;

/// clientv3's `ErrLeaseNotFound` text.
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

pub async fn lease(ctx: &Ctx, command: LeaseCommand, io: &mut Io<'_>) -> Result<(), CtlError> {
    match command {
        LeaseCommand::Grant { args } => grant(ctx, &args, io).await,
        LeaseCommand::Revoke { args } => revoke(ctx, &args, io).await,
        LeaseCommand::Timetolive { keys, args } => time_to_live(ctx, keys, &args, io).await,
        LeaseCommand::List { .. } => list(ctx, io).await,
        LeaseCommand::KeepAlive { once, args } => keep_alive(ctx, once, &args, io).await,
    }
}

async fn grant(ctx: &Ctx, args: &[String], io: &mut Io<'_>) -> Result<(), CtlError> {
    let [ttl] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "lease grant command needs TTL argument"));
    };
    let ttl = parse_int(ttl, 10).map_err(|e| CtlError::new(EXIT_BAD_ARGS, format!("bad TTL ({e})")))?;
    let printer = ctx.printer()?;
    let response = ctx.client()?.lease_grant(ctx.deadline(), ttl).await.map_err(|e| wrapped("grant", e))?;
    printer.print(io.out, &response)
}

async fn revoke(ctx: &Ctx, args: &[String], io: &mut Io<'_>) -> Result<(), CtlError> {
    let [id] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "lease revoke command needs 1 argument"));
    };
    let id = lease_id(id)?;
    let printer = ctx.printer()?;
    let response = ctx.client()?.lease_revoke(ctx.deadline(), id).await.map_err(|e| wrapped("revoke", e))?;
    printer.print(io.out, &LeaseRevoked { id, response })
}

async fn time_to_live(ctx: &Ctx, keys: bool, args: &[String], io: &mut Io<'_>) -> Result<(), CtlError> {
    let [id] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "lease timetolive command needs lease ID as argument"));
    };
    let request = pb::LeaseTimeToLiveRequest { id: lease_id(id)?, keys };
    let printer = ctx.printer()?;
    let response = ctx.client()?.lease_time_to_live(ctx.deadline(), request).await.map_err(bad_connection)?;
    printer.print(io.out, &LeaseTimeToLive { response, keys })
}

async fn list(ctx: &Ctx, io: &mut Io<'_>) -> Result<(), CtlError> {
    let printer = ctx.printer()?;
    let response = ctx.client()?.lease_leases(ctx.deadline()).await.map_err(bad_connection)?;
    printer.print(io.out, &response)
}

/// Renews the lease once, or for as long as it lives, printing every renewal.
async fn keep_alive(ctx: &Ctx, once: bool, args: &[String], io: &mut Io<'_>) -> Result<(), CtlError> {
    let [id] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "lease keep-alive command needs lease ID as argument"));
    };
    let id = lease_id(id)?;
    let printer = ctx.printer()?;
    if once {
        let response = keep_alive_once(ctx, id).await?;
        return printer.print(io.out, &response);
    }
    let mut renewals = KeepAlive::new(ctx.client()?, id, ctx.first_renewal());
    while let Some(response) = renewals.next().await {
        printer.print(io.out, &response)?;
        io.out.flush().map_err(write_error)?;
    }
    if printer.is_simple() {
        writeln!(io.out, "lease {} expired or revoked.", lease_hex(id)).map_err(write_error)?;
    }
    Ok(())
}

/// clientv3's `KeepAliveOnce`: one request on a stream of its own; TTL 0 means no such lease.
async fn keep_alive_once(ctx: &Ctx, id: i64) -> Result<pb::LeaseKeepAliveResponse, CtlError> {
    let deadline = ctx.deadline();
    let request = pb::LeaseKeepAliveRequest { id };
    let mut stream = ctx.client()?.lease_keep_alive(deadline, request).await.map_err(bad_connection)?;
    let answer = tokio::time::timeout_at(deadline, stream.responses.message()).await;
    match answer {
        Err(_) => Err(bad_connection(CtlError::deadline())),
        Ok(Ok(Some(response))) if response.ttl <= 0 => Err(CtlError::new(EXIT_BAD_CONNECTION, LEASE_NOT_FOUND)),
        Ok(Ok(Some(response))) => Ok(response),
        Ok(Ok(None)) => Err(CtlError::new(EXIT_BAD_CONNECTION, "EOF")),
        Ok(Err(status)) => Err(CtlError::new(EXIT_BAD_CONNECTION, status_message(&status))),
    }
}

/// A lease ID argument: hex, as etcdctl's `leaseFromArgs` reads it.
fn lease_id(arg: &str) -> Result<i64, CtlError> {
    parse_int(arg, 16).map_err(|e| CtlError::new(EXIT_BAD_ARGS, format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

/// `failed to <what> lease (<error>)`, exit 1.
fn wrapped(what: &str, error: CtlError) -> CtlError {
    CtlError::new(EXIT_ERROR, format!("failed to {what} lease ({})", error.message.unwrap_or_default()))
}

/// The same error, exit 2.
fn bad_connection(error: CtlError) -> CtlError {
    CtlError { code: EXIT_BAD_CONNECTION, ..error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_hex() {
        assert_eq!(lease_id("694d7a8b8c6a0c04").unwrap(), 0x694d7a8b8c6a0c04);
        let error = lease_id("zz").unwrap_err();
        assert_eq!(error.code, EXIT_BAD_ARGS);
        assert_eq!(
            error.message.unwrap_or_default(),
            r#"bad lease ID arg (strconv.ParseInt: parsing "zz": invalid syntax), expecting ID in Hex"#
        );
    }
}
