//! `compaction`, `defrag`, `alarm list|disarm`, `move-leader` and `version`, as etcdctl 3.4 runs
//! them (etcd-io/etcd v3.4 `compaction_command.go`, `defrag_command.go`, `alarm_command.go`,
//! `move_leader_command.go`, `version_command.go`, and clientv3's `AlarmDisarm`).

use super::cli::{AlarmCommand, ClusterArgs, CompactionArgs};
use super::endpoint::target_endpoints;
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use super::goparse::{parse_int, parse_uint};
use super::printer::{write_error, Change};
use super::{Ctx, Io};
use crate::pb;
use crate::pb::alarm_request::AlarmAction;

/// The etcd API version phoenixctl's commands and output follow.
const API_VERSION: &str = "3.4";

pub async fn compaction(ctx: &Ctx, args: CompactionArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let [revision] = args.args.as_slice() else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "compaction command needs 1 argument"));
    };
    let revision = parse_int(revision, 10).map_err(|e| CtlError::new(EXIT_ERROR, e))?;
    ctx.printer()?;
    let request = pb::CompactionRequest { revision, physical: args.physical };
    ctx.client()?.compact(ctx.deadline(), request).await?;
    writeln!(io.out, "compacted revision {revision}").map_err(write_error)
}

/// Defragments each endpoint in turn; failures are reported per endpoint and make the exit 1.
pub async fn defrag(ctx: &Ctx, args: ClusterArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    ctx.printer()?;
    let mut failures = 0;
    for endpoint in target_endpoints(ctx, args.cluster).await? {
        match ctx.client_for(&endpoint)?.defragment(ctx.deadline()).await {
            Ok(()) => writeln!(io.out, "Finished defragmenting etcd member[{endpoint}]").map_err(write_error)?,
            Err(e) => {
                let reason = e.message.unwrap_or_default();
                writeln!(io.err, "Failed to defragment etcd member[{endpoint}] ({reason})").map_err(write_error)?;
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return Err(CtlError::silent(EXIT_ERROR));
    }
    Ok(())
}

pub async fn alarm(ctx: &Ctx, command: AlarmCommand, io: &mut Io<'_>) -> Result<(), CtlError> {
    let (name, args) = match &command {
        AlarmCommand::Disarm { args } => ("disarm", args),
        AlarmCommand::List { args } => ("list", args),
    };
    if !args.is_empty() {
        return Err(CtlError::new(EXIT_BAD_ARGS, format!("alarm {name} command accepts no arguments")));
    }
    let printer = ctx.printer()?;
    let mut client = ctx.client()?;
    let deadline = ctx.deadline();
    let listed = client.alarm(deadline, alarm_request(AlarmAction::Get, &pb::AlarmMember::default())).await?;
    let response = match command {
        AlarmCommand::List { .. } => listed,
        AlarmCommand::Disarm { .. } => {
            // clientv3 disarms every listed alarm one by one and returns only their alarms.
            let mut disarmed = pb::AlarmResponse::default();
            for alarm in &listed.alarms {
                let response = client.alarm(deadline, alarm_request(AlarmAction::Deactivate, alarm)).await?;
                disarmed.alarms.extend(response.alarms);
            }
            disarmed
        }
    };
    printer.print(io.out, &response)
}

fn alarm_request(action: AlarmAction, alarm: &pb::AlarmMember) -> pb::AlarmRequest {
    pb::AlarmRequest { action: action as i32, member_id: alarm.member_id, alarm: alarm.alarm }
}

/// Finds the leader among `--endpoints` (asking each for its status, in order) and asks it to
/// hand leadership to the target; one request deadline covers it all, as in etcdctl.
pub async fn move_leader(ctx: &Ctx, args: &[String], io: &mut Io<'_>) -> Result<(), CtlError> {
    let [target] = args else {
        return Err(CtlError::new(EXIT_BAD_ARGS, "move-leader command needs 1 argument"));
    };
    let target = parse_uint(target, 16).map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
    let printer = ctx.printer()?;
    // Fails as etcdctl's first client does when no endpoint is given.
    ctx.client()?;
    let deadline = ctx.deadline();
    let mut leader = None;
    for endpoint in ctx.endpoints() {
        let mut client = ctx.client_for(endpoint)?;
        let status = client.status(deadline).await?;
        if status.header.is_some_and(|h| h.member_id == status.leader) {
            leader = Some((client, status.leader));
            break;
        }
    }
    let Some((mut client, from)) = leader else {
        let given = ctx.endpoints().join(" ");
        return Err(CtlError::new(EXIT_BAD_ARGS, format!("no leader endpoint given at [{given}]")));
    };
    let response = client.move_leader(deadline, target).await?;
    printer.print_change(io.out, &Change::LeaderMoved { from, to: target, response })
}

/// phoenixctl's own version and the etcdctl API it follows.
pub fn version(io: &mut Io<'_>) -> Result<(), CtlError> {
    writeln!(io.out, "phoenixctl version: {}", env!("CARGO_PKG_VERSION"))
        .and_then(|()| writeln!(io.out, "API version: {API_VERSION}"))
        .map_err(write_error)
}
