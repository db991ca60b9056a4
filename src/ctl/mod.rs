//! phoenixctl: etcdctl's commands and output against Phoenix or etcd.
//!
//! phoenixctl speaks etcdctl 3.4's command line (`cli`) and prints its output byte for byte in
//! every format (`printer`), so scripts written for etcdctl keep working. Commands: `get`, `put`,
//! `del` (`kv`), `txn` (`txn`), `compaction`, `defrag`, `alarm`, `move-leader`, `version`
//! (`maintenance`), `member list|add|remove|update|promote` (`member`, with clientv3's peer URL
//! checks in `gourl`), `endpoint health|status|hashkv` (`endpoint`), `watch` (`watch`, over
//! clientv3's watcher in `watcher`), `lease grant|revoke|timetolive|list|keep-alive` (`lease`,
//! `keepalive`) and `lock` and `elect` (`lock`, over etcd's client-side recipes in
//! `concurrency`), `snapshot save|status|restore` (`snapshot`). Errors print as `Error: <message>`
//! on stderr with etcdctl's exit codes (`error`). Phoenix's own: `clean` moves a stopped member's data dir aside (`clean`), and
//! `disaster plan` and `disaster` choose and reset the survivor of a lost quorum (`disaster`).
//!
//! Not implemented: TLS and authentication (`--cacert`, `--user`...), DNS discovery, and the
//! commands beyond the ones above (auth, user, role, make-mirror...).

mod clean;
pub mod cli;
mod client;
mod concurrency;
mod disaster;
mod endpoint;
mod error;
mod exec;
pub(crate) mod goflags;
mod gofmt;
pub(crate) mod goparse;
pub(crate) mod gourl;
mod keepalive;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod member;
mod printer;
mod snapshot;
mod txn;
mod watch;
mod watcher;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use cli::{Cli, Command, GlobalFlags};
use client::Client;
use error::{CtlError, EXIT_ERROR};
use printer::Printer;

/// Runs one parsed command line and returns etcdctl's exit code for it.
pub fn run(cli: Cli) -> ExitCode {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let input = Box::new(std::io::BufReader::new(std::io::stdin()));
    let mut io = Io { out: &mut out, err: &mut err, input };
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
        Some(failure) => refuse(failure),
    }
}

/// Reports a failure found before any command ran.
pub fn refuse(failure: CtlError) -> ExitCode {
    exit(Err(failure), &mut std::io::stderr())
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

/// The streams a command reads and writes; stdin is owned so a command may read it on a thread.
pub(crate) struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub input: Box<dyn BufRead + Send>,
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

    /// The connection etcd's concurrency recipes share, made now; each of their requests is
    /// bounded by `--command-timeout`.
    async fn conn(&self) -> Result<concurrency::Conn, CtlError> {
        let mut client = self.client()?;
        client.connect(self.deadline()).await?;
        Ok(concurrency::Conn { client, timeout: self.flags.command_timeout() })
    }

    /// How long a new keep-alive waits for its first renewal: clientv3 allows `--dial-timeout`
    /// plus a second, or five seconds when that is just the second.
    fn first_renewal(&self) -> Duration {
        match self.flags.dial_timeout + Duration::from_secs(1) {
            one if one == Duration::from_secs(1) => Duration::from_secs(5),
            timeout => timeout,
        }
    }

    fn endpoints(&self) -> &[String] {
        &self.flags.endpoints
    }

    /// When a request started now must have finished (`--command-timeout`).
    fn deadline(&self) -> Instant {
        Instant::now() + self.flags.command_timeout()
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
        Command::Member(command) => member::member(&ctx, command, io).await,
        Command::Watch(args) => watch::watch(&ctx, args, io).await,
        Command::Lease(command) => lease::lease(&ctx, command, io).await,
        Command::Lock(args) => lock::lock(&ctx, args, io).await,
        Command::Elect(args) => lock::elect(&ctx, args, io).await,
        Command::MoveLeader { args } => maintenance::move_leader(&ctx, &args, io).await,
        Command::Snapshot(command) => snapshot::snapshot(&ctx, command, io).await,
        Command::Clean(args) => clean::clean(args, io),
        Command::Disaster(args) => match args.plan.clone() {
            Some(cli::DisasterCommand::Plan(plan)) => disaster::plan(&ctx, plan, io).await,
            None => disaster::reset(args, io).await,
        },
        Command::Version => maintenance::version(io),
    }
}
