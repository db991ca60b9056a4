//! `snapshot save`, `status` and `restore`, as etcdctl 3.4 runs them (etcd-io/etcd v3.4
//! `etcdctl/ctlv3/command/snapshot_command.go`, `clientv3/snapshot`), with etcd 3.5's
//! --bump-revision and --mark-compacted on restore.
//!
//! `save` asks exactly one endpoint, writes the stream to `FILENAME.part`, syncs it, checks it
//! whole ([`crate::snapshot::status`]) and only then renames it into place, so a failed or
//! damaged save never leaves a file at FILENAME.
//!
//! `restore` takes the member's identity from the same flags phoenix takes (so it validates them
//! the same way) and writes its data dir ([`crate::snapshot::restore`]); it talks to no server.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use clap::{CommandFactory, FromArgMatches};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::cli::{RestoreArgs, SnapshotCommand};
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED};
use super::printer::write_error;
use super::{Ctx, Io};
use crate::cluster::Identity;
use crate::config::{revision_bump, Config, Flags};
use crate::snapshot::RestoreTarget;

pub async fn snapshot(ctx: &Ctx, command: SnapshotCommand, io: &mut Io<'_>) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { args } => save(ctx, one_file(&args, "snapshot save expects one argument")?, io).await,
        SnapshotCommand::Status { args } => {
            status(ctx, one_file(&args, "snapshot status requires exactly one argument")?, io)
        }
        SnapshotCommand::Restore(restore_args) => {
            let file = one_file(&restore_args.args, "snapshot restore requires exactly one argument")?;
            restore(file, &restore_args, io)
        }
    }
}

/// The one file argument, or etcdctl's complaint (each subcommand words it its own way).
fn one_file<'a>(args: &'a [String], complaint: &str) -> Result<&'a str, CtlError> {
    match args {
        [file] => Ok(file),
        _ => Err(CtlError::new(EXIT_BAD_ARGS, complaint)),
    }
}

async fn save(ctx: &Ctx, file: &str, io: &mut Io<'_>) -> Result<(), CtlError> {
    if ctx.endpoints().len() != 1 {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            format!("snapshot must be requested to one selected node, not multiple {:?}", ctx.endpoints()),
        ));
    }
    let part = format!("{file}.part");
    // As etcdctl 3.4: a save of a large store takes as long as it takes, unless
    // --command-timeout is given, which then bounds all of it; every failure exits 5.
    let downloaded = match ctx.flags.command_timeout {
        Some(limit) => {
            tokio::time::timeout(limit, download(ctx, &part)).await.unwrap_or_else(|_| Err(CtlError::deadline()))
        }
        None => download(ctx, &part).await,
    };
    if let Err(e) = downloaded {
        let _ = std::fs::remove_file(&part);
        return Err(CtlError { code: EXIT_INTERRUPTED, ..e });
    }
    crate::snapshot::publish(Path::new(&part), Path::new(file))
        .map_err(|e| CtlError::new(EXIT_INTERRUPTED, e.to_string()))?;
    writeln!(io.out, "Snapshot saved at {file}").map_err(write_error)
}

/// Writes the snapshot stream to `path`, synced, showing progress on a terminal.
async fn download(ctx: &Ctx, path: &str) -> Result<(), CtlError> {
    let mut stream = ctx.client()?.snapshot(ctx.deadline()).await?;
    let mut out = crate::disk::create_private_file(std::path::Path::new(path))
        .map_err(|e| failed(format!("could not create {path}: {e}")))?;
    let progress = progress_bar();
    while let Some(chunk) = stream.message().await.map_err(|status| CtlError::status(&status))? {
        out.write_all(&chunk.blob).map_err(|e| failed(format!("could not write {path}: {e}")))?;
        // Every message says how much is still to come, so the total is known from the first.
        progress.set_length(progress.position() + chunk.blob.len() as u64 + chunk.remaining_bytes);
        progress.inc(chunk.blob.len() as u64);
    }
    progress.finish_and_clear();
    out.sync_all().map_err(|e| failed(format!("could not sync {path}: {e}")))
}

/// Bytes received, the total, and the rate, on stderr when it is a terminal (hidden otherwise,
/// so scripts and pipes see etcdctl's output only).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}");
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar
}

fn status(ctx: &Ctx, file: &str, io: &mut Io<'_>) -> Result<(), CtlError> {
    let printer = ctx.printer()?;
    let status = crate::snapshot::status(std::path::Path::new(file)).map_err(|e| failed(e.to_string()))?;
    printer.snapshot_status(io.out, &status)
}

fn restore(file: &str, args: &RestoreArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let bad_args = |e: crate::Error| CtlError::new(EXIT_BAD_ARGS, e.to_string());
    let config = member_config(args).map_err(bad_args)?;
    let target = RestoreTarget {
        data_dir: config.data_dir.clone(),
        name: config.name.clone(),
        identity: Identity::from_config(&config),
        bump: revision_bump(args.bump_revision, args.mark_compacted).map_err(bad_args)?,
        skip_hash_check: args.skip_hash_check,
    };
    let restored = crate::snapshot::restore(Path::new(file), target).map_err(|e| failed(e.to_string()))?;
    writeln!(
        io.out,
        "Restored {file} into {}: member {:x} ({}) of new cluster {:x}, at revision {}",
        config.data_dir.display(),
        restored.member_id,
        config.name,
        restored.cluster_id,
        restored.revision
    )
    .map_err(write_error)
}

/// The member a restore is for, described by the flags phoenix will start it with (and
/// validated as phoenix validates them). Only the flags given count: the server's `ETCD_*`
/// environment, if any, is not read.
fn member_config(args: &RestoreArgs) -> crate::Result<Config> {
    let mut flags: Vec<OsString> = ["phoenix", "--name", &args.name].map(OsString::from).into();
    flags.extend(["--initial-cluster-token", &args.initial_cluster_token].map(OsString::from));
    flags.extend(["--initial-advertise-peer-urls", &args.initial_advertise_peer_urls].map(OsString::from));
    flags.extend(["--initial-cluster", &args.initial_cluster].map(OsString::from));
    if let Some(dir) = &args.data_dir {
        flags.extend([OsString::from("--data-dir"), dir.clone().into_os_string()]);
    }
    let command = Flags::command().mut_args(|arg| arg.env(None));
    let matches = command.try_get_matches_from(flags).map_err(|e| crate::Error::Config(e.to_string()))?;
    Config::from_flags(Flags::from_arg_matches(&matches).map_err(|e| crate::Error::Config(e.to_string()))?)
}

fn failed(message: String) -> CtlError {
    CtlError::new(EXIT_ERROR, message)
}
