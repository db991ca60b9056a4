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

use std::io::Write;
use std::path::Path;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::cli::{RestoreArgs, SnapshotCommand};
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use super::printer::write_error;
use super::{Ctx, Io};
use crate::cluster::Identity;
use crate::config::{revision_bump, Config, Flags};
use crate::snapshot::RestoreTarget;

pub async fn snapshot(ctx: &Ctx, command: SnapshotCommand, io: &mut Io<'_>) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { args } => save(ctx, &one_file(&args, "save")?, io).await,
        SnapshotCommand::Status { args } => status(ctx, &one_file(&args, "status")?, io),
        SnapshotCommand::Restore(args) => restore(&one_file(&args.args, "restore")?, &args, io),
    }
}

fn one_file(args: &[String], command: &str) -> Result<String, CtlError> {
    match args {
        [file] => Ok(file.clone()),
        _ => Err(CtlError::new(EXIT_BAD_ARGS, format!("snapshot {command} expects one argument"))),
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
    let saved = download(ctx, &part).await.and_then(|()| {
        crate::snapshot::status(std::path::Path::new(&part)).map_err(|e| CtlError::new(EXIT_ERROR, e.to_string()))
    });
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, file).map_err(|e| failed(format!("could not rename {part} to {file}: {e}")))?;
    writeln!(io.out, "Snapshot saved at {file}").map_err(write_error)
}

/// Writes the snapshot stream to `path`, synced, showing progress on a terminal.
async fn download(ctx: &Ctx, path: &str) -> Result<(), CtlError> {
    let mut stream = ctx.client()?.snapshot(ctx.deadline()).await?;
    let mut out = std::fs::File::create(path).map_err(|e| failed(format!("could not create {path}: {e}")))?;
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

/// The member a restore is for, described by the flags phoenix will start it with.
fn member_config(args: &RestoreArgs) -> crate::Result<Config> {
    let mut flags = vec![
        "phoenix".to_string(),
        format!("--name={}", args.name),
        format!("--initial-cluster-token={}", args.initial_cluster_token),
        format!("--initial-advertise-peer-urls={}", args.initial_advertise_peer_urls),
        format!("--initial-cluster={}", args.initial_cluster),
    ];
    flags.extend(args.data_dir.iter().map(|dir| format!("--data-dir={}", dir.display())));
    let flags = Flags::try_parse_from(flags).map_err(|e| crate::Error::Config(e.to_string()))?;
    Config::from_flags(flags)
}

fn failed(message: String) -> CtlError {
    CtlError::new(EXIT_ERROR, message)
}
