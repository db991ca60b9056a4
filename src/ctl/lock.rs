//! `lock` and `elect`, as etcdctl 3.4 runs them (etcd-io/etcd v3.4 `lock_command.go`,
//! `elect_command.go`) over etcd's client-side recipes (`concurrency`).
//!
//! - `lock [--ttl N] <name>` takes the lock under a session of N seconds (10 by default), prints
//!   the lock's key (`<name>/<lease>`) and value, and holds it until SIGINT or SIGTERM, then
//!   releases it and succeeds. With a command after the name, it runs the command while holding
//!   the lock (with `ETCD_LOCK_KEY` and `ETCD_LOCK_REV` set), releases it, and fails if the
//!   command did.
//! - `elect <name> <proposal>` campaigns, prints the leader key and value once elected, and
//!   resigns on SIGINT or SIGTERM; `elect -l <name>` prints every leader and leader value until
//!   interrupted.
//! - Interrupted while still waiting, both give up their key and fail with `context canceled`;
//!   a session whose lease could not be kept alive fails the command.
//!
//! As in etcdctl, the session's lease is not revoked on the way out; it expires.

use std::ffi::OsString;

use super::cli::{ElectArgs, LockArgs};
use super::concurrency::{Conn, Election, Mutex, Session};
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR};
use super::exec;
use super::printer::{write_error, Printer};
use super::{Ctx, Io};
use crate::pb;

/// Go's `context.Canceled` text: what a wait interrupted by a signal fails with.
const CANCELED: &str = "context canceled";

pub async fn lock(ctx: &Ctx, args: LockArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let Some((name, command)) = args.args.split_first() else {
        let message = "lock takes a lock name argument and an optional command to execute";
        return Err(CtlError::new(EXIT_BAD_ARGS, message));
    };
    let printer = ctx.printer()?;
    let conn = ctx.conn().await?;
    let mut session = Session::new(&conn, args.ttl, ctx.first_renewal()).await?;
    let mut signals = Signals::new()?;
    let mut mutex = Mutex::new(name.as_encoded_bytes());
    let locked = tokio::select! {
        locked = mutex.lock(&conn, session.lease()) => locked,
        _ = signals.recv() => Err(CtlError::new(EXIT_ERROR, CANCELED)),
    };
    if let Err(error) = locked {
        // Giving the key up is a courtesy; the error says what went wrong.
        let _ = mutex.unlock(&conn).await;
        return Err(error);
    }
    if !command.is_empty() {
        return run_locked(&conn, &mut mutex, command, io).await;
    }
    let held = conn.client.clone().range(ctx.deadline(), get(mutex.key())).await?;
    if held.kvs.is_empty() {
        return Err(CtlError::new(EXIT_ERROR, "lock lost on init"));
    }
    show(&printer, io, &held)?;
    tokio::select! {
        _ = signals.recv() => mutex.unlock(&conn).await,
        _ = session.done() => Err(CtlError::new(EXIT_ERROR, "session expired")),
    }
}

/// Runs `command` while holding the lock, then releases it.
async fn run_locked(conn: &Conn, mutex: &mut Mutex, command: &[OsString], io: &mut Io<'_>) -> Result<(), CtlError> {
    let env = vec![
        ("ETCD_LOCK_KEY".to_string(), String::from_utf8_lossy(mutex.key()).into_owned()),
        ("ETCD_LOCK_REV".to_string(), mutex.header().map_or(0, |h| h.revision).to_string()),
    ];
    io.out.flush().map_err(write_error)?;
    let ran = exec::run(command.to_vec(), env).await;
    let unlocked = mutex.unlock(conn).await;
    ran.map_err(|why| CtlError::new(EXIT_ERROR, why))?;
    unlocked
}

pub async fn elect(ctx: &Ctx, args: ElectArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let (name, proposal) = match args.args.as_slice() {
        [name] => (name, None),
        [name, proposal] => (name, Some(proposal)),
        _ => {
            let message = "elect takes one election name argument and an optional proposal argument";
            return Err(CtlError::new(EXIT_BAD_ARGS, message));
        }
    };
    let printer = ctx.printer()?;
    let conn = ctx.conn().await?;
    match (proposal, args.listen) {
        (None, false) => Err(CtlError::new(EXIT_BAD_ARGS, "no proposal argument but -l not set")),
        (Some(_), true) => Err(CtlError::new(EXIT_BAD_ARGS, "proposal given but -l is set")),
        (None, true) => observe(ctx, &conn, name, &printer, io).await,
        (Some(proposal), false) => campaign(ctx, &conn, name, proposal, &printer, io).await,
    }
}

/// Prints every leader until interrupted.
async fn observe(ctx: &Ctx, conn: &Conn, name: &OsString, printer: &Printer, io: &mut Io<'_>) -> Result<(), CtlError> {
    let _session = Session::new(conn, 0, ctx.first_renewal()).await?;
    let mut signals = Signals::new()?;
    let election = Election::new(name.as_encoded_bytes());
    tokio::select! {
        observed = election.observe(conn, |leader| show(printer, io, leader)) => {
            observed?;
            Err(CtlError::new(EXIT_ERROR, "elect: observer lost"))
        }
        _ = signals.recv() => Ok(()),
    }
}

/// Campaigns, prints the leader's key once elected, and resigns when interrupted.
async fn campaign(
    ctx: &Ctx,
    conn: &Conn,
    name: &OsString,
    proposal: &OsString,
    printer: &Printer,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let mut session = Session::new(conn, 0, ctx.first_renewal()).await?;
    let mut signals = Signals::new()?;
    let mut election = Election::new(name.as_encoded_bytes());
    let elected = tokio::select! {
        elected = election.campaign(conn, session.lease(), proposal.as_encoded_bytes()) => elected,
        _ = signals.recv() => Err(CtlError::new(EXIT_ERROR, CANCELED)),
    };
    if let Err(error) = elected {
        // Withdrawing is a courtesy; the error says what went wrong.
        let _ = election.resign(conn).await;
        return Err(error);
    }
    let leader = conn.client.clone().range(ctx.deadline(), get(election.key())).await?;
    show(printer, io, &leader)?;
    tokio::select! {
        _ = signals.recv() => election.resign(conn).await,
        _ = session.done() => Err(CtlError::new(EXIT_ERROR, "elect: session expired")),
    }
}

fn get(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest { key: key.to_vec(), ..Default::default() }
}

/// Prints a read as `get` would, at once: someone may be waiting for it.
fn show(printer: &Printer, io: &mut Io<'_>, read: &pb::RangeResponse) -> Result<(), CtlError> {
    printer.print(io.out, read)?;
    io.out.flush().map_err(write_error)
}

/// SIGINT and SIGTERM, which end `lock` and `elect` in good order once they are listened for.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, CtlError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen =
                |kind| signal(kind).map_err(|e| CtlError::new(EXIT_ERROR, format!("cannot listen for signals: {e}")));
            Ok(Signals { interrupt: listen(SignalKind::interrupt())?, terminate: listen(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
