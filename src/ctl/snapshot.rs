//! `snapshot save FILENAME` and `snapshot status FILENAME`, as etcdctl 3.4 runs them
//! (etcd-io/etcd v3.4 `etcdctl/ctlv3/command/snapshot_command.go`, `clientv3/snapshot`).
//!
//! `save` asks exactly one endpoint, writes the stream to `FILENAME.part`, syncs it, checks it
//! whole ([`crate::snapshot::status`]) and only then renames it into place, so a failed or
//! damaged save never leaves a file at FILENAME. Restoring is not written yet.

use std::io::Write;

use super::cli::SnapshotCommand;
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use super::printer::write_error;
use super::{Ctx, Io};

pub async fn snapshot(ctx: &Ctx, command: SnapshotCommand, io: &mut Io<'_>) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { args } => save(ctx, &one_file(&args, "save")?, io).await,
        SnapshotCommand::Status { args } => status(ctx, &one_file(&args, "status")?, io),
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

/// Writes the snapshot stream to `path`, synced.
async fn download(ctx: &Ctx, path: &str) -> Result<(), CtlError> {
    let mut stream = ctx.client()?.snapshot(ctx.deadline()).await?;
    let mut out = std::fs::File::create(path).map_err(|e| failed(format!("could not create {path}: {e}")))?;
    while let Some(chunk) = stream.message().await.map_err(|status| CtlError::status(&status))? {
        out.write_all(&chunk.blob).map_err(|e| failed(format!("could not write {path}: {e}")))?;
    }
    out.sync_all().map_err(|e| failed(format!("could not sync {path}: {e}")))
}

fn status(ctx: &Ctx, file: &str, io: &mut Io<'_>) -> Result<(), CtlError> {
    let printer = ctx.printer()?;
    let status = crate::snapshot::status(std::path::Path::new(file)).map_err(|e| failed(e.to_string()))?;
    printer.snapshot_status(io.out, &status)
}

fn failed(message: String) -> CtlError {
    CtlError::new(EXIT_ERROR, message)
}
