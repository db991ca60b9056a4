//! phoenixctl's command line: etcdctl 3.4's commands, flags, defaults and `ETCDCTL_*` variables,
//! and the translation of clap's parse errors into etcdctl's (pflag's) wording.
//!
//! Flags may come before or after the command, `-w json` and `--write-out=json` are the same, a
//! command may be shortened to any unambiguous prefix (`memb list`), and a boolean flag takes an
//! optional `=true`/`=false` as pflag's do (see [`normalize_args`]).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

use super::error::{CtlError, EXIT_ERROR};
use super::goflags::{normalize_args, pflag_values};
use super::gofmt::quote;
use super::goparse::{parse_bool, parse_duration, parse_int};

/// phoenixctl: etcdctl's commands and output, against Phoenix or etcd.
#[derive(Parser, Debug)]
#[command(name = "phoenixctl", infer_subcommands = true, arg_required_else_help = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes; each can also come from its `ETCDCTL_*` variable.
#[derive(Args, Debug, Clone)]
pub struct GlobalFlags {
    /// gRPC endpoints (host:port or http://host:port), comma-separated
    #[arg(long, global = true, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// dial timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// timeout for short running command (excluding dial timeout) [default: 5s; snapshot save: none]
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", value_parser = parse_duration)]
    pub command_timeout: Option<Duration>,
    /// keepalive time for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIME", default_value = "2s", value_parser = parse_duration)]
    pub keepalive_time: Duration,
    /// keepalive timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIMEOUT", default_value = "6s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// set the output format (fields, json, protobuf, simple, table)
    #[arg(short = 'w', long, global = true, env = "ETCDCTL_WRITE_OUT", default_value = "simple")]
    pub write_out: String,
    /// print byte strings as hex encoded strings
    #[arg(long, global = true, env = "ETCDCTL_HEX", action = ArgAction::SetTrue, value_parser = parse_bool)]
    pub hex: bool,
}

/// etcdctl's `--command-timeout` when it is not given.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

impl GlobalFlags {
    /// How long a command may take (`--command-timeout`, 5 s unless given).
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Gets the key or a range of keys
    Get(GetArgs),
    /// Puts the given key into the store (the value is read from stdin when not given)
    Put(PutArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(DelArgs),
    /// Txn processes all the requests in one transaction (read from stdin)
    Txn(TxnArgs),
    /// Compacts the event history in etcd
    Compaction(CompactionArgs),
    /// Alarm related commands
    #[command(subcommand, arg_required_else_help = true)]
    Alarm(AlarmCommand),
    /// Defragments the storage of the etcd members with given endpoints
    Defrag(ClusterArgs),
    /// Endpoint related commands
    #[command(arg_required_else_help = true)]
    Endpoint(EndpointArgs),
    /// Membership related commands
    #[command(subcommand, arg_required_else_help = true)]
    Member(MemberCommand),
    /// Watches events stream on keys or prefixes
    Watch(WatchArgs),
    /// Lease related commands
    #[command(subcommand, arg_required_else_help = true)]
    Lease(LeaseCommand),
    /// Acquires a named lock
    Lock(LockArgs),
    /// Observes and participates in leader election
    Elect(ElectArgs),
    /// Transfers leadership to another etcd cluster member.
    #[command(name = "move-leader")]
    MoveLeader {
        /// <transferee-member-id>
        #[arg(value_name = "MEMBER_ID")]
        args: Vec<String>,
    },
    /// Manages etcd node snapshots
    #[command(subcommand, arg_required_else_help = true)]
    Snapshot(SnapshotCommand),
    /// Moves a stopped member's data dir aside (or deletes it) so the host can join again (Phoenix)
    Clean(CleanArgs),
    /// Resets a stopped survivor of a lost quorum into a one-member cluster that keeps all of its
    /// data; `disaster plan` says which survivor (Phoenix)
    #[command(args_conflicts_with_subcommands = true)]
    Disaster(DisasterArgs),
    /// Prints the version of phoenixctl
    Version,
}

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long)]
    pub order: Option<String>,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long)]
    pub sort_by: Option<String>,
    /// Maximum number of results
    #[arg(long, default_value = "0", value_parser = go_int)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value = "0", value_parser = go_int)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long)]
    pub keys_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    pub print_value_only: bool,
    /// Only keys modified at or after this revision (Phoenix extension)
    #[arg(long, default_value = "0", value_parser = go_int)]
    pub min_mod_revision: i64,
    /// Only keys modified at or before this revision (Phoenix extension)
    #[arg(long, default_value = "0", value_parser = go_int)]
    pub max_mod_revision: i64,
    /// Only keys created at or after this revision (Phoenix extension)
    #[arg(long, default_value = "0", value_parser = go_int)]
    pub min_create_revision: i64,
    /// Only keys created at or before this revision (Phoenix extension)
    #[arg(long, default_value = "0", value_parser = go_int)]
    pub max_create_revision: i64,
    /// <key> [range_end]
    #[arg(value_name = "ARGS")]
    pub args: Vec<OsString>,
}

#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long)]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long)]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    pub ignore_lease: bool,
    /// <key> [value]
    #[arg(value_name = "ARGS")]
    pub args: Vec<OsString>,
}

#[derive(Args, Debug, Clone)]
pub struct DelArgs {
    /// delete keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// <key> [range_end]
    #[arg(value_name = "ARGS")]
    pub args: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short, long)]
    pub interactive: bool,
    /// Refused with etcdctl's message: txn takes its input from stdin
    #[arg(hide = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CompactionArgs {
    /// 'true' to wait for compaction to physically remove all old revisions
    #[arg(long)]
    pub physical: bool,
    /// <revision>
    #[arg(value_name = "REVISION")]
    pub args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AlarmCommand {
    /// Disarms all alarms
    Disarm {
        /// Refused with etcdctl's message
        #[arg(hide = true)]
        args: Vec<String>,
    },
    /// Lists all alarms
    List {
        /// Refused with etcdctl's message
        #[arg(hide = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, global = true)]
    pub cluster: bool,
}

#[derive(Args, Debug)]
pub struct EndpointArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: EndpointCommand,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health,
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status,
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value = "0", value_parser = go_int)]
        rev: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Adds a member into the cluster
    Add {
        /// comma separated peer URLs for the new member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        /// indicates if the new member is raft learner
        #[arg(long)]
        learner: bool,
        /// <memberName>
        #[arg(value_name = "MEMBER_NAME")]
        args: Vec<String>,
    },
    /// Removes a member from the cluster
    Remove {
        /// <memberID>
        #[arg(value_name = "MEMBER_ID")]
        args: Vec<String>,
    },
    /// Updates a member in the cluster
    Update {
        /// comma separated peer URLs for the updated member.
        #[arg(long, default_value = "")]
        peer_urls: String,
        /// <memberID>
        #[arg(value_name = "MEMBER_ID")]
        args: Vec<String>,
    },
    /// Lists all members in the cluster
    List,
    /// Promotes a non-voting member in the cluster
    Promote {
        /// <memberID>
        #[arg(value_name = "MEMBER_ID")]
        args: Vec<String>,
    },
}

/// `clean --data-dir DIR [--purge]`: Phoenix's own command, run on the member's host.
#[derive(Args, Debug)]
pub struct CleanArgs {
    /// the data dir of a stopped member
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// delete the data dir instead of moving it aside
    #[arg(long)]
    pub purge: bool,
}

/// `disaster --data-dir DIR [...]`, or `disaster plan [...]`.
#[derive(Args, Debug, Clone)]
pub struct DisasterArgs {
    #[command(subcommand)]
    pub plan: Option<DisasterCommand>,
    /// the data dir of the stopped survivor to reset
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// the member's name after the reset (default: its name before)
    #[arg(long)]
    pub name: Option<String>,
    /// the member's peer URLs after the reset (default: the ones it had)
    #[arg(long, value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// reset even though a member that answers holds more or still has a leader, or the data dir
    /// was reset before
    #[arg(long)]
    pub force: bool,
    /// move the revision this far ahead, so the old cluster's revisions are never reused
    #[arg(long, default_value = "0", value_parser = clap::value_parser!(u64))]
    pub bump_revision: u64,
    /// with --bump-revision: compact at the new revision, so old watchers relist
    #[arg(long)]
    pub mark_compacted: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum DisasterCommand {
    /// Asks the survivors (--endpoints of running ones, --data-dir of stopped ones) where they
    /// stand and recommends the one to reset
    Plan(PlanArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// the data dir of a stopped survivor (repeat for each); --endpoints is then asked only when given
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dirs: Vec<PathBuf>,
}

/// `watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]`; the same flags
/// are read from each `watch` line in interactive mode.
#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// Interactive mode
    #[arg(short, long)]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value = "0", value_parser = go_int, allow_hyphen_values = true)]
    pub rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    pub prev_kv: bool,
    /// [key or prefix] [range_end]
    #[arg(value_name = "ARGS")]
    pub args: Vec<OsString>,
    /// The command to run for each event, after `--`
    #[arg(last = true, value_name = "EXEC")]
    pub exec: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file
    Save {
        /// <filename>
        #[arg(value_name = "FILENAME")]
        args: Vec<String>,
    },
    /// Gets backend snapshot status of a given file
    Status {
        /// <filename>
        #[arg(value_name = "FILENAME")]
        args: Vec<String>,
    },
    /// Restores an etcd member snapshot to an etcd directory
    Restore(RestoreArgs),
}

/// `snapshot restore FILENAME`, with etcdctl's flags and etcd's --bump-revision/--mark-compacted.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// <filename>
    #[arg(value_name = "FILENAME")]
    pub args: Vec<String>,
    /// Path to the data directory (default: ${name}.phoenix, as phoenix's own default)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Human-readable name for this member
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Initial cluster configuration for restore bootstrap
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// Initial cluster token for the etcd cluster during restore bootstrap
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Ignore snapshot integrity hash value (required if copied from data directory)
    #[arg(long)]
    pub skip_hash_check: bool,
    /// How much to increase the latest revision after restore
    #[arg(long, default_value = "0", value_parser = clap::value_parser!(u64))]
    pub bump_revision: u64,
    /// Mark the latest revision after restore as the point of scheduled compaction (requires
    /// --bump-revision > 0)
    #[arg(long)]
    pub mark_compacted: bool,
}

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Creates leases
    Grant {
        /// <ttl>
        #[arg(value_name = "TTL")]
        args: Vec<String>,
    },
    /// Revokes leases
    Revoke {
        /// <leaseID>
        #[arg(value_name = "LEASE_ID")]
        args: Vec<String>,
    },
    /// Get lease information
    Timetolive {
        /// Get keys attached to this lease
        #[arg(long)]
        keys: bool,
        /// <leaseID>
        #[arg(value_name = "LEASE_ID")]
        args: Vec<String>,
    },
    /// List all active leases
    List {
        /// Ignored, as etcdctl ignores them
        #[arg(hide = true)]
        args: Vec<String>,
    },
    /// Keeps leases alive (renew)
    #[command(name = "keep-alive")]
    KeepAlive {
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long)]
        once: bool,
        /// <leaseID>
        #[arg(value_name = "LEASE_ID")]
        args: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// timeout for session
    #[arg(long, default_value = "10", value_parser = go_int, allow_hyphen_values = true)]
    pub ttl: i64,
    /// <lockname> [exec-command arg1 arg2 ...]
    #[arg(value_name = "ARGS")]
    pub args: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct ElectArgs {
    /// observation mode
    #[arg(short, long)]
    pub listen: bool,
    /// <election-name> [proposal]
    #[arg(value_name = "ARGS")]
    pub args: Vec<OsString>,
}

/// pflag's integer syntax: `strconv.ParseInt(s, 0, 64)`.
fn go_int(s: &str) -> Result<i64, String> {
    parse_int(s, 0)
}

/// etcdctl refuses a command line that gives a flag its `ETCDCTL_*` variable gives too (the
/// variable would be ignored); `None` if `args` gives none of those.
pub fn shadowed_variable(args: &[OsString]) -> Option<CtlError> {
    let command = Cli::command();
    let given = |arg: &clap::Arg| {
        let long = arg.get_long().map(|long| format!("--{long}"));
        let short = arg.get_short().map(|short| format!("-{short}"));
        args.iter().skip(1).take_while(|a| *a != "--").filter_map(|a| a.to_str()).any(|a| {
            long.as_deref().is_some_and(|long| a == long || a.starts_with(&format!("{long}=")))
                || short.as_deref().is_some_and(|short| a.starts_with(short) && !a.starts_with("--"))
        })
    };
    let variable = command
        .get_arguments()
        .filter_map(|arg| Some((arg.get_env()?.to_str()?, arg)))
        .find(|(name, arg)| std::env::var_os(name).is_some_and(|value| !value.is_empty()) && given(arg))?;
    Some(CtlError::new(
        EXIT_ERROR,
        format!(
            "conflicting environment variable {} is shadowed by corresponding command-line flag (either unset \
             environment variable or disable flag)",
            quote(variable.0.as_bytes())
        ),
    ))
}

/// Parses `args` as pflag would: see [`normalize_args`] and [`pflag_values`].
pub fn parse<P: Parser>(args: impl IntoIterator<Item = OsString>) -> Result<P, clap::Error> {
    let mut command = pflag_values(P::command());
    let matches = command.try_get_matches_from_mut(normalize_args(&command, args))?;
    P::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

/// etcdctl's wording for a command line that does not parse; `None` for a help request.
pub fn usage_message(error: &clap::Error) -> Option<CtlError> {
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let flag = || context(ContextKind::InvalidArg).split([' ', '=']).next().unwrap_or_default().to_string();
    let message = match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::DisplayVersion => {
            return None;
        }
        ErrorKind::UnknownArgument => unknown_flag(&flag()),
        ErrorKind::InvalidSubcommand => {
            format!("unknown command {} for \"phoenixctl\"", quote(context(ContextKind::InvalidSubcommand).as_bytes()))
        }
        ErrorKind::ValueValidation => {
            let cause = std::error::Error::source(error).map(ToString::to_string).unwrap_or_default();
            let value = context(ContextKind::InvalidValue);
            format!("invalid argument {} for {} flag: {cause}", quote(value.as_bytes()), quote(flag().as_bytes()))
        }
        ErrorKind::InvalidValue if context(ContextKind::InvalidValue).is_empty() => {
            format!("flag needs an argument: {}", flag())
        }
        _ => first_line(error),
    };
    Some(CtlError::new(EXIT_ERROR, message))
}

/// pflag's message for a flag nobody defined, or clap's for an unexpected argument.
fn unknown_flag(arg: &str) -> String {
    match arg.strip_prefix('-') {
        Some(long) if long.starts_with('-') => format!("unknown flag: {arg}"),
        Some(short) => format!("unknown shorthand flag: '{}' in {arg}", short.chars().next().unwrap_or('-')),
        None => format!("unexpected argument {}", quote(arg.as_bytes())),
    }
}

fn first_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        super::parse(args.iter().map(OsString::from))
    }

    fn error(args: &[&str]) -> String {
        let error = parse(args).expect_err("the command line is wrong");
        usage_message(&error).and_then(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn the_cli_is_well_formed() {
        pflag_values(Cli::command()).debug_assert();
    }

    #[test]
    fn a_flag_takes_the_next_word_whatever_it_starts_with() {
        let cli =
            parse(&["phoenixctl", "get", "a", "--rev", "-1", "--limit", "-1", "--order", "-x", "-w", "-y"]).unwrap();
        let Command::Get(get) = cli.command else { panic!("not a get") };
        assert_eq!((get.rev, get.limit, get.order.as_deref()), (-1, -1, Some("-x")));
        assert_eq!(cli.global.write_out, "-y");
        assert!(error(&["phoenixctl", "get", "a", "-x"]).contains("unknown shorthand flag: 'x' in -x"));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&["phoenixctl", "get", "foo", "-w", "json", "--endpoints=a:1,b:2", "--hex"]).unwrap();
        assert_eq!(cli.global.write_out, "json");
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert!(cli.global.hex);
        assert_eq!(cli.global.command_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn bool_flags_take_pflag_values() {
        let Command::Get(get) =
            parse(&["phoenixctl", "get", "a", "--prefix=false", "--keys-only=true"]).unwrap().command
        else {
            panic!("not a get");
        };
        assert!(!get.prefix);
        assert!(get.keys_only);
    }

    #[test]
    fn commands_take_unambiguous_prefixes() {
        assert!(matches!(parse(&["phoenixctl", "memb", "list"]).unwrap().command, Command::Member(_)));
    }

    #[test]
    fn member_commands_take_etcdctls_flags() {
        let command = parse(&["phoenixctl", "member", "add", "m4", "--peer-urls=http://a:1", "--learner"]).unwrap();
        let Command::Member(MemberCommand::Add { peer_urls, learner, args }) = command.command else {
            panic!("not a member add");
        };
        assert_eq!((peer_urls.as_str(), learner, args), ("http://a:1", true, vec!["m4".to_string()]));
        assert!(matches!(parse(&["phoenixctl", "mo", "12"]).unwrap().command, Command::MoveLeader { .. }));
        assert_eq!(error(&["phoenixctl", "member", "remove", "-1"]), "unknown shorthand flag: '1' in -1");
    }

    #[test]
    fn watch_takes_an_exec_command_after_the_separator() {
        let watch = |args: &[&str]| match parse(args).unwrap().command {
            Command::Watch(watch) => watch,
            _ => panic!("not a watch"),
        };
        let plain = watch(&["phoenixctl", "watch", "foo", "--rev", "3", "bar"]);
        assert_eq!((plain.args.len(), plain.rev, plain.exec.len()), (2, 3, 0));
        let exec = watch(&["phoenixctl", "watch", "foo", "--", "echo", "-n", "hi"]);
        assert_eq!(exec.args, ["foo"]);
        assert_eq!(exec.exec, ["echo", "-n", "hi"]);
    }

    #[test]
    fn lock_passes_everything_after_the_separator_to_its_command() {
        let Command::Lock(lock) =
            parse(&["phoenixctl", "lock", "l", "--ttl", "5", "--", "sh", "-c", "x"]).unwrap().command
        else {
            panic!("not a lock");
        };
        assert_eq!((lock.ttl, lock.args), (5, vec![OsString::from("l"), "sh".into(), "-c".into(), "x".into()]));
    }

    #[test]
    fn parse_errors_read_like_pflag() {
        assert_eq!(error(&["phoenixctl", "get", "a", "--bogus"]), "unknown flag: --bogus");
        assert_eq!(error(&["phoenixctl", "get", "a", "-x"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(error(&["phoenixctl", "bogus"]), r#"unknown command "bogus" for "phoenixctl""#);
        assert_eq!(
            error(&["phoenixctl", "get", "a", "--rev", "x"]),
            r#"invalid argument "x" for "--rev" flag: strconv.ParseInt: parsing "x": invalid syntax"#
        );
        assert_eq!(
            error(&["phoenixctl", "get", "a", "--dial-timeout=5"]),
            r#"invalid argument "5" for "--dial-timeout" flag: time: missing unit in duration "5""#
        );
    }
}
