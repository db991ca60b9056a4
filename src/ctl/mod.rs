//! phoenixctl: etcdctl's commands and output against Phoenix or etcd.
//!
//! phoenixctl speaks etcdctl 3.4's command line (`cli`) and prints its output byte for byte in
//! every format (`printer`), so scripts written for etcdctl keep working. Commands: `get`, `put`,
//! `del` (`kv`), `txn` (`txn`), `compaction`, `defrag`, `alarm`, `member list`, `version`
//! (`maintenance`) and `endpoint health|status|hashkv` (`endpoint`). Errors print as
//! `Error: <message>` on stderr with etcdctl's exit codes (`error`).
//!
//! Not implemented: TLS and authentication (`--cacert`, `--user`...), DNS discovery, and the
//! commands beyond the ones above (watch, lease, snapshot, auth, user, role, lock, elect...).

pub mod cli;
mod client;
mod endpoint;
mod error;
mod gofmt;
mod goparse;
mod kv;
mod maintenance;
mod printer;
mod txn;

use std::io::{BufRead, Write};
use std::process::ExitCode;

use tokio::time::Instant;

use cli::{Cli, Command, GlobalFlags};
use client::Client;
use error::{CtlError, EXIT_ERROR};
use printer::Printer;

/// Runs one parsed command line and returns etcdctl's exit code for it.
pub fn run(cli: Cli) -> ExitCode {
    let (stdout, stderr, stdin) = (std::io::stdout(), std::io::stderr(), std::io::stdin());
    let (mut out, mut err, mut input) = (stdout.lock(), stderr.lock(), stdin.lock());
    let mut io = Io { out: &mut out, err: &mut err, input: &mut input };
    let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(execute(cli, &mut io)),
        Err(e) => Err(CtlError::new(EXIT_ERROR, format!("cannot start the runtime: {e}"))),
    };
    let _ = io.out.flush();
    exit(result, io.err)
}

/// Reports a command line that does not parse as etcdctl does; help requests print and succeed.
pub fn usage_error(error: &clap::Error) -> ExitCode {
    match cli::usage_message(error) {
        None => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        Some(failure) => exit(Err(failure), &mut std::io::stderr()),
    }
}

fn exit(result: Result<(), CtlError>, err: &mut dyn Write) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(message) = failure.message {
                let _ = writeln!(err, "Error: {message}");
            }
            ExitCode::from(failure.code)
        }
    }
}

/// The streams a command reads and writes.
pub(crate) struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub input: &'a mut dyn BufRead,
}

/// What every command shares: the global flags.
pub(crate) struct Ctx {
    flags: GlobalFlags,
}

impl Ctx {
    /// The `-w`/`--hex` printer; an unknown format fails before any request, as in etcdctl.
    fn printer(&self) -> Result<Printer, CtlError> {
        Printer::new(&self.flags.write_out, self.flags.hex)
    }

    /// A client for all of `--endpoints`.
    fn client(&self) -> Result<Client, CtlError> {
        Client::new(&self.flags.endpoints, &self.flags)
    }

    /// A client for one endpoint, for the commands that ask each endpoint in turn.
    fn client_for(&self, endpoint: &str) -> Result<Client, CtlError> {
        Client::new(&[endpoint.to_string()], &self.flags)
    }

    fn endpoints(&self) -> &[String] {
        &self.flags.endpoints
    }

    /// When a request started now must have finished (`--command-timeout`).
    fn deadline(&self) -> Instant {
        Instant::now() + self.flags.command_timeout
    }
}

async fn execute(cli: Cli, io: &mut Io<'_>) -> Result<(), CtlError> {
    let ctx = Ctx { flags: cli.global };
    match cli.command {
        Command::Get(args) => kv::get(&ctx, args, io).await,
        Command::Put(args) => kv::put(&ctx, args, io).await,
        Command::Del(args) => kv::del(&ctx, args, io).await,
        Command::Txn(args) => txn::txn(&ctx, args, io).await,
        Command::Compaction(args) => maintenance::compaction(&ctx, args, io).await,
        Command::Alarm(command) => maintenance::alarm(&ctx, command, io).await,
        Command::Defrag(args) => maintenance::defrag(&ctx, args, io).await,
        Command::Endpoint(args) => endpoint::endpoint(&ctx, args, io).await,
        Command::Member(command) => maintenance::member(&ctx, command, io).await,
        Command::Version => maintenance::version(io),
    }
}
