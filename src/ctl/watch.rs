//! `watch`: prints a watch's events until the server ends it, as etcdctl 3.4 does (etcd-io/etcd
//! v3.4 `watch_command.go`).
//!
//! - `watch [--prefix] [--rev N] [--prev-kv] <key> [range_end] [-- <command>...]` runs
//!   `<command>` after each event is printed, with `ETCD_WATCH_REVISION`, `ETCD_WATCH_EVENT_TYPE`,
//!   `ETCD_WATCH_KEY` and `ETCD_WATCH_VALUE` (Go-quoted) in its environment.
//! - `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END` give the key and range end instead.
//! - A canceled watch prints `watch was canceled (<why>)` on stderr; when the server ends the
//!   watch, phoenixctl fails with `watch is canceled by the server` (exit 5).
//! - `watch -i` reads `watch ...` and `progress` lines from stdin; each `watch` line starts one
//!   more watch on the same stream, `progress` asks for a progress notification
//!   (`progress notify: <revision>`). Malformed lines are reported and skipped, bad flags end the
//!   command (exit 128), and so does the end of stdin (exit 3).
//!
//! Where etcdctl runs an interactive watch's command concurrently with reading stdin,
//! phoenixctl reads the next line only once the command has finished.

use std::ffi::OsString;
use std::io::{BufRead, Write};

use clap::Parser;
use tokio::sync::mpsc;

use super::cli::{parse, usage_message, WatchArgs};
use super::error::{CtlError, EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_INVALID_INPUT};
use super::exec;
use super::gofmt::quote;
use super::kv::prefix_end;
use super::printer::{event_type_name, write_error, Printer};
use super::txn::{argify, os_string};
use super::watcher::{is_progress_notify, Update, WatchKey, Watcher};
use super::{Ctx, Io};
use crate::pb;

const BAD_ARGS_NUM: &str = "bad number of arguments";
const CONFLICTING_ENV: &str = "bad number of arguments (found conflicting environment key)";
const SEPARATOR_WITHOUT_COMMAND: &str = "bad number of arguments (found separator --, but no commands)";

/// `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END`; empty when unset.
struct EnvRange {
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl EnvRange {
    fn read() -> Result<EnvRange, CtlError> {
        let var = |name| std::env::var_os(name).map(|v| v.as_encoded_bytes().to_vec()).unwrap_or_default();
        let range = EnvRange { key: var("ETCDCTL_WATCH_KEY"), range_end: var("ETCDCTL_WATCH_RANGE_END") };
        if range.key.is_empty() && !range.range_end.is_empty() {
            let message =
                format!("ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}", quote(&range.range_end));
            return Err(CtlError::new(EXIT_BAD_ARGS, message));
        }
        Ok(range)
    }
}

/// One watch to start: its key arguments, its flags and the command it runs per event.
struct Target {
    keys: Vec<Vec<u8>>,
    exec: Vec<OsString>,
    prefix: bool,
    rev: i64,
    prev_kv: bool,
}

impl Target {
    /// etcdctl's `parseWatchArgs` over the parsed flags and the raw arguments after the `watch`
    /// word (which alone show a `--` with nothing after it): the separator needs a command after
    /// it, and the environment's key cannot be combined with key arguments.
    fn new(args: WatchArgs, raw: &[OsString], env: &EnvRange, interactive: bool) -> Result<Target, CtlError> {
        let bad_args = |message| Err(CtlError::new(EXIT_BAD_ARGS, message));
        let separator = raw.iter().position(|arg| arg == "--");
        let keys_given = !args.args.is_empty();
        match separator {
            Some(at) if at + 1 == raw.len() => return bad_args(SEPARATOR_WITHOUT_COMMAND),
            None if !keys_given && env.key.is_empty() => return bad_args(BAD_ARGS_NUM),
            None if keys_given && !env.key.is_empty() => return bad_args(CONFLICTING_ENV),
            Some(_) if !interactive && keys_given && !env.key.is_empty() => return bad_args(CONFLICTING_ENV),
            _ => {}
        }
        let from_env = [env.key.clone(), env.range_end.clone()].into_iter().filter(|k| !k.is_empty());
        let given = args.args.iter().map(|a| a.as_encoded_bytes().to_vec());
        Ok(Target {
            keys: from_env.chain(given).collect(),
            exec: args.exec,
            prefix: args.prefix,
            rev: args.rev,
            prev_kv: args.prev_kv,
        })
    }

    /// etcdctl's `getWatchChan`: a range end only when exactly two keys are given, and not with
    /// `--prefix`.
    fn request(&self) -> Result<pb::WatchCreateRequest, &'static str> {
        let Some(key) = self.keys.first() else { return Err(BAD_ARGS_NUM) };
        let mut range_end = match self.keys.as_slice() {
            [_, _] if self.prefix => return Err("`range_end` and `--prefix` are mutually exclusive"),
            [_, end] => end.clone(),
            _ => Vec::new(),
        };
        let mut key = key.clone();
        if self.prefix {
            (key, range_end) = if key.is_empty() { (vec![0], vec![0]) } else { (key.clone(), prefix_end(&key)) };
        }
        Ok(pb::WatchCreateRequest {
            key,
            range_end,
            start_revision: self.rev,
            prev_kv: self.prev_kv,
            ..Default::default()
        })
    }
}

pub async fn watch(ctx: &Ctx, args: WatchArgs, io: &mut Io<'_>) -> Result<(), CtlError> {
    let env = EnvRange::read()?;
    if args.interactive {
        return interactive(ctx, &env, io).await;
    }
    let raw: Vec<OsString> = std::env::args_os().skip_while(|arg| arg != "watch").skip(1).collect();
    let target = Target::new(args, &raw, &env, false)?;
    let printer = ctx.printer()?;
    let request = target.request().map_err(|e| CtlError::new(EXIT_BAD_ARGS, e))?;
    let mut watcher = Watcher::new(ctx.client()?, true);
    watcher.watch(ctx.deadline(), request).await?;
    while let Update::Response { response, error, .. } = watcher.next().await {
        show(&printer, io, &response, error.as_deref(), &target.exec).await?;
    }
    Err(CtlError::new(EXIT_INTERRUPTED, "watch is canceled by the server"))
}

/// Reads `watch` and `progress` lines until stdin ends, printing every watch's answers meanwhile.
async fn interactive(ctx: &Ctx, env: &EnvRange, io: &mut Io<'_>) -> Result<(), CtlError> {
    let printer = ctx.printer()?;
    let mut watcher = Watcher::new(ctx.client()?, true);
    let mut commands: Vec<(WatchKey, Vec<OsString>)> = Vec::new();
    let mut lines = read_lines(std::mem::replace(&mut io.input, Box::new(std::io::empty())));
    loop {
        tokio::select! {
            line = lines.recv() => {
                let line = line.unwrap_or_else(|| Err("EOF".to_string())).map_err(|e| {
                    CtlError::new(EXIT_INVALID_INPUT, format!("Error reading watch request line: {e}"))
                })?;
                if let Some((key, exec)) = request_line(ctx, env, &mut watcher, &line, io.err).await? {
                    commands.push((key, exec));
                }
            }
            update = watcher.next() => match update {
                Update::Response { key, response, error } => {
                    let exec = commands.iter().find(|(k, _)| *k == key).map_or(&[][..], |(_, exec)| exec);
                    show(&printer, io, &response, error.as_deref(), exec).await?;
                }
                Update::Closed { key } => commands.retain(|(k, _)| *k != key),
            },
        }
    }
}

/// Acts on one interactive line; a started watch is returned with its command.
async fn request_line(
    ctx: &Ctx,
    env: &EnvRange,
    watcher: &mut Watcher,
    line: &[u8],
    err: &mut dyn Write,
) -> Result<Option<(WatchKey, Vec<OsString>)>, CtlError> {
    let text = String::from_utf8_lossy(line);
    let args = argify(line)?;
    let complaint = match args.first().map(Vec::as_slice) {
        None => format!("Invalid command: {text} (watch and progress supported)"),
        Some(b"watch") if args.len() < 2 && env.key.is_empty() => {
            format!("Invalid command {text} (command type or key is not provided)")
        }
        Some(b"watch") => {
            let raw: Vec<OsString> = args[1..].iter().cloned().map(os_string).collect();
            let target = Target::new(parse_line(&raw)?, &raw, env, true)?;
            match target.request() {
                Ok(request) => return Ok(Some((watcher.watch(ctx.deadline(), request).await?, target.exec))),
                Err(why) => format!("Invalid command {text} ({why})"),
            }
        }
        Some(b"progress") => {
            watcher.request_progress(ctx.deadline()).await?;
            return Ok(None);
        }
        Some(_) => format!("Invalid command {text} (only support watch)"),
    };
    writeln!(err, "{complaint}").map_err(write_error)?;
    Ok(None)
}

/// A `watch` line's flags and arguments, parsed as the command line's are.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct WatchLine {
    #[command(flatten)]
    args: WatchArgs,
}

fn parse_line(args: &[OsString]) -> Result<WatchArgs, CtlError> {
    let line = parse::<WatchLine>(args.iter().cloned()).map_err(|error| {
        let message = usage_message(&error).and_then(|e| e.message).unwrap_or_default();
        CtlError::new(EXIT_BAD_ARGS, message)
    })?;
    Ok(line.args)
}

/// stdin's lines (without their `\n`) from a thread, ending with an error: `EOF` when stdin ends,
/// even in the middle of a line, as Go's `ReadString` does.
fn read_lines(mut input: Box<dyn BufRead + Send>) -> mpsc::UnboundedReceiver<Result<Vec<u8>, String>> {
    let (lines, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || loop {
        let mut line = Vec::new();
        let read = match input.read_until(b'\n', &mut line) {
            Err(e) => Err(e.to_string()),
            Ok(_) if line.pop() != Some(b'\n') => Err("EOF".to_string()),
            Ok(_) => Ok(line),
        };
        let ended = read.is_err();
        if lines.send(read).is_err() || ended {
            return;
        }
    });
    receiver
}

/// Prints one answer as etcdctl's `printWatchCh` does, then runs the command for each event.
async fn show(
    printer: &Printer,
    io: &mut Io<'_>,
    response: &pb::WatchResponse,
    error: Option<&str>,
    exec: &[OsString],
) -> Result<(), CtlError> {
    if response.canceled {
        writeln!(io.err, "watch was canceled ({})", error.unwrap_or("<nil>")).map_err(write_error)?;
    }
    if is_progress_notify(response) {
        let revision = response.header.map_or(0, |h| h.revision);
        writeln!(io.out, "progress notify: {revision}").map_err(write_error)?;
    }
    printer.print(io.out, response)?;
    io.out.flush().map_err(write_error)?;
    if exec.is_empty() {
        return Ok(());
    }
    for event in &response.events {
        let kv = event.kv.clone().unwrap_or_default();
        let env = vec![
            ("ETCD_WATCH_REVISION".to_string(), response.header.map_or(0, |h| h.revision).to_string()),
            ("ETCD_WATCH_EVENT_TYPE".to_string(), quote(event_type_name(event.r#type).as_bytes())),
            ("ETCD_WATCH_KEY".to_string(), quote(&kv.key)),
            ("ETCD_WATCH_VALUE".to_string(), quote(&kv.value)),
        ];
        if let Err(why) = exec::run(exec.to_vec(), env).await {
            writeln!(io.err, "command {} error ({why})", exec::quote_argv(exec)).map_err(write_error)?;
            return Err(CtlError::silent(EXIT_ERROR));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> EnvRange {
        EnvRange { key: vec![], range_end: vec![] }
    }

    fn line(text: &str) -> Result<Target, CtlError> {
        let raw: Vec<OsString> = text.split(' ').map(OsString::from).collect();
        Target::new(parse_line(&raw)?, &raw, &no_env(), true)
    }

    fn message<T>(result: Result<T, CtlError>) -> String {
        result.err().and_then(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn requests_follow_clientv3_options() {
        let request = line("foo --prefix --rev 7 --prev-kv").unwrap().request().unwrap();
        assert_eq!((request.key, request.range_end), (b"foo".to_vec(), b"fop".to_vec()));
        assert_eq!((request.start_revision, request.prev_kv), (7, true));
        let all = Target { keys: vec![vec![]], exec: vec![], prefix: true, rev: 0, prev_kv: false };
        let everything = all.request().unwrap();
        assert_eq!((everything.key, everything.range_end), (vec![0], vec![0]));
        let range = line("a c").unwrap().request().unwrap();
        assert_eq!((range.key, range.range_end), (b"a".to_vec(), b"c".to_vec()));
        assert_eq!(line("a b c").unwrap().request().unwrap().range_end, b"");
        assert_eq!(line("a b --prefix").unwrap().request(), Err("`range_end` and `--prefix` are mutually exclusive"));
    }

    #[test]
    fn arguments_are_checked_like_etcdctl() {
        assert_eq!(message(line("--rev 3")), BAD_ARGS_NUM);
        assert_eq!(message(line("foo --")), SEPARATOR_WITHOUT_COMMAND);
        assert_eq!(line("foo -- echo hi").unwrap().exec, ["echo", "hi"]);
        assert_eq!(message(line("foo --bogus")), "unknown flag: --bogus");
        let env = EnvRange { key: b"k".to_vec(), range_end: vec![] };
        let command_line = |raw: &[&str]| {
            let raw: Vec<OsString> = raw.iter().map(OsString::from).collect();
            let (args, exec) = match raw.iter().position(|a| a == "--") {
                Some(at) => (raw[..at].to_vec(), raw[at + 1..].to_vec()),
                None => (raw.clone(), vec![]),
            };
            Target::new(WatchArgs { args, exec, ..Default::default() }, &raw, &env, false)
        };
        assert_eq!(message(command_line(&["foo"])), CONFLICTING_ENV);
        assert_eq!(message(command_line(&["foo", "--", "echo"])), CONFLICTING_ENV);
        assert_eq!(command_line(&["--", "echo"]).unwrap().keys, [b"k".to_vec()]);
    }

    #[test]
    fn stdin_ends_with_eof_even_mid_line() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut lines = read_lines(Box::new(&b"watch a\nprogress"[..]));
        runtime.block_on(async {
            assert_eq!(lines.recv().await, Some(Ok(b"watch a".to_vec())));
            assert_eq!(lines.recv().await, Some(Err("EOF".to_string())));
            assert_eq!(lines.recv().await, None);
        });
    }
}
