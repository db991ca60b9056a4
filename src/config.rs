//! etcd's command line, with etcd's names, defaults and meaning, validated into one [`Config`]
//! before anything is written or bound.
//!
//! Go's flag package accepts `-name` as well as `--name`, `-flag=false` for a boolean, a value
//! that starts with a hyphen, and a flag given twice (the last wins); [`parse_flags`] does too.
//! Every flag can also come from etcd's `ETCD_*` environment variable.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use url::Url;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Panic,
    Fatal,
}

/// The flags, as etcd names them.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "phoenix",
    version,
    about = "Phoenix: an etcd-compatible consensus store",
    disable_version_flag = true
)]
pub struct Flags {
    /// Print the version and exit.
    #[arg(long)]
    pub version: bool,
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: ${name}.phoenix).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub listen_client_urls: String,
    /// This member's client URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", default_value = "http://localhost:2379")]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping, as name=peer-url pairs.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state: 'new' or 'existing'.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", value_enum, default_value = "new")]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token, part of the cluster and member IDs.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed entries that trigger a snapshot (and purge the log behind it).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = DEFAULT_SNAPSHOT_COUNT)]
    pub snapshot_count: u64,
    /// Raise an alarm when the backend size exceeds this quota (0 defaults to 2 GiB, a negative
    /// value disables it).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0, allow_negative_numbers = true)]
    pub quota_backend_bytes: i64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u32,
    /// Join a running cluster through these client endpoints (Phoenix's own): add this member,
    /// catch up, and be promoted to voter automatically. Implies --initial-cluster-state existing.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// Turn this member, a survivor of a lost quorum, into a one-member cluster that keeps all
    /// of its data (done once; later starts with the flag still set ignore it).
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", action = ArgAction::SetTrue, value_parser = crate::ctl::goparse::parse_bool)]
    pub force_new_cluster: bool,
    /// With --force-new-cluster: move the revision this far ahead, as etcd's restore does, so
    /// the revisions the old cluster handed out are never reused (Phoenix's own).
    #[arg(long, default_value_t = 0)]
    pub bump_revision: u64,
    /// With --bump-revision: compact at the new revision, so watchers of the old cluster are
    /// told to relist (Phoenix's own).
    #[arg(long)]
    pub mark_compacted: bool,
    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Duration of periodic watch progress notifications, as a Go duration ("10m", "500ms").
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m0s",
        value_parser = parse_go_duration
    )]
    pub experimental_watch_progress_notify_interval: Duration,
    /// Save verified backups into this directory on a schedule (Phoenix's own).
    #[arg(long, env = "PHOENIX_BACKUP_DIR", value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Time between scheduled backups, as a Go duration ("30m", "1h").
    #[arg(long, env = "PHOENIX_BACKUP_INTERVAL", default_value = "30m", value_parser = parse_go_duration)]
    pub backup_interval: Duration,
    /// How long scheduled backups are kept; the newest one is always kept.
    #[arg(long, env = "PHOENIX_BACKUP_RETENTION", default_value = "24h", value_parser = parse_go_duration)]
    pub backup_retention: Duration,
    /// Which members save scheduled backups: the leader only, or every member.
    #[arg(long, env = "PHOENIX_BACKUP_FROM", value_enum, default_value = "leader")]
    pub backup_from: BackupFrom,
    /// Skip a scheduled backup (and report it) unless this much space would stay free on the
    /// backup dir's filesystem after it.
    #[arg(long, env = "PHOENIX_BACKUP_MIN_FREE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub backup_min_free_bytes: u64,
}

/// Which members save scheduled backups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackupFrom {
    Leader,
    All,
}

/// When and where scheduled backups are saved (`--backup-*`).
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    pub dir: PathBuf,
    pub interval: Duration,
    pub retention: Duration,
    pub from: BackupFrom,
    pub min_free_bytes: u64,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    pub listen_peer_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    /// Member name -> its peer URLs.
    pub initial_cluster: BTreeMap<String, Vec<Url>>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub quota_backend_bytes: u64,
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    pub log_level: LogLevel,
    pub force_new_cluster: bool,
    /// How the reset moves the revision on (--bump-revision, --mark-compacted).
    pub revision_bump: crate::pb::RevisionBump,
    /// Client endpoints of a running cluster to join (`--join`); empty when not joining that way.
    pub join: Vec<String>,
    /// How often watchers that asked for progress notifications get one when idle.
    pub watch_progress_notify_interval: Duration,
    /// Scheduled backups, when --backup-dir is given.
    pub backup: Option<BackupSchedule>,
}

const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// [`Config::quota_backend_bytes`] when a negative flag disabled the quota, as etcd's does.
pub const NO_QUOTA: u64 = u64::MAX;
const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;

/// etcd's bound on the election timeout (`maxElectionMs`).
const MAX_ELECTION_TIMEOUT: Duration = Duration::from_millis(50_000);

/// Unsets the flags' environment variables that are set but empty: etcd takes them for unset.
/// Call it before any thread starts (the environment is process-wide).
pub fn unset_empty_variables() {
    let command = Flags::command();
    let empty = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .filter(|name| std::env::var_os(name).is_some_and(|value| value.is_empty()));
    for name in empty {
        std::env::remove_var(name);
    }
}

/// etcd's TLS flags. Phoenix serves http:// only, so a member asked for TLS refuses to start
/// rather than serve in the clear what its operator meant to protect.
const TLS_FLAGS: &[&str] = &[
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "client-crl-file",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-client-cert-auth",
    "peer-trusted-ca-file",
    "peer-crl-file",
    "peer-auto-tls",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "cipher-suites",
];

/// Refuses etcd's TLS flags and their `ETCD_*` variables, by name (see [`TLS_FLAGS`]); `args`
/// holds the command line without the program's name.
pub fn refuse_tls(args: &[OsString]) -> Result<()> {
    let unsupported = |what: String| {
        Err(Error::Config(format!("{what}: TLS is not supported yet; Phoenix serves http:// URLs only")))
    };
    for arg in args.iter().filter_map(|arg| arg.to_str()) {
        let name = arg.trim_start_matches('-').split('=').next().unwrap_or_default();
        if arg.starts_with('-') && TLS_FLAGS.contains(&name) {
            return unsupported(format!("--{name}"));
        }
    }
    for flag in TLS_FLAGS {
        let variable = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
        if std::env::var_os(&variable).is_some() {
            return unsupported(variable);
        }
    }
    Ok(())
}

/// The `ETCD_*` variables set that name no flag Phoenix takes, which it ignores (etcd warns of
/// those it does not know; Phoenix also lacks some of etcd's, such as its logging flags).
pub fn ignored_variables() -> Vec<String> {
    let command = Flags::command();
    let known: Vec<&std::ffi::OsStr> = command.get_arguments().filter_map(|arg| arg.get_env()).collect();
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("ETCD_") && !known.contains(&std::ffi::OsStr::new(name)))
        .collect()
}

/// What etcd checks of where the flags came from: a flag also set by its environment variable
/// is refused, and client URLs listened on explicitly must be advertised explicitly.
pub fn check_sources(matches: &ArgMatches) -> Result<()> {
    let command = Flags::command();
    for arg in command.get_arguments() {
        let (Some(variable), Some(ValueSource::CommandLine)) =
            (arg.get_env(), matches.value_source(arg.get_id().as_str()))
        else {
            continue;
        };
        if std::env::var_os(variable).is_some() {
            return Err(Error::Config(format!(
                "conflicting environment variable {variable:?} is shadowed by corresponding command-line flag (either \
                 unset environment variable or disable flag)"
            )));
        }
    }
    let explicit = |id: &str| matches.value_source(id).is_some_and(|source| source != ValueSource::DefaultValue);
    if explicit("listen_client_urls") && !explicit("advertise_client_urls") {
        return Err(Error::Config(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly".into(),
        ));
    }
    Ok(())
}

/// Parses the command line `args` (the program's name first) as Go's flag package, which etcd
/// uses, reads it: see [`normalize_args`]. The matches say where each value came from.
pub fn parse_flags(args: impl IntoIterator<Item = OsString>) -> std::result::Result<(Flags, ArgMatches), clap::Error> {
    // A flag given twice takes its last value, as in Go.
    let mut command = crate::ctl::goflags::pflag_values(Flags::command()).args_override_self(true);
    let args = normalize_args(&command, args);
    let matches = command.try_get_matches_from_mut(args)?;
    let flags = Flags::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    Ok((flags, matches))
}

/// Rewrites Go-style `-flag` into `--flag`, leaving the value after a flag that takes one as it
/// is (`--initial-cluster-token -tok`), and a boolean's `=true`/`=false` as clap takes it (see
/// [`crate::ctl::goflags::normalize_args`], shared with phoenixctl).
fn normalize_args(command: &clap::Command, args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let takes_value = |name: &str| {
        command
            .get_arguments()
            .any(|arg| arg.get_long() == Some(name) && matches!(arg.get_action(), ArgAction::Set | ArgAction::Append))
    };
    let mut out = Vec::new();
    let mut is_value = true; // the program's name
    for arg in args {
        let text = arg.to_str().unwrap_or_default();
        let single_dash = !is_value && text.starts_with('-') && !text.starts_with("--") && text.len() > 2;
        let flag = if single_dash { format!("-{text}") } else { text.to_string() };
        is_value = !is_value && flag.strip_prefix("--").is_some_and(|name| !name.contains('=') && takes_value(name));
        out.push(if single_dash { OsString::from(flag) } else { arg });
    }
    crate::ctl::goflags::normalize_args(command, out)
}

impl Config {
    pub fn from_flags(flags: Flags) -> Result<Config> {
        let initial_advertise_peer_urls =
            parse_urls("--initial-advertise-peer-urls", &flags.initial_advertise_peer_urls)?;
        let initial_cluster = match &flags.initial_cluster {
            Some(spec) => parse_initial_cluster(spec)?,
            // etcd's default: this member alone, at its advertised peer URLs.
            None => BTreeMap::from([(flags.name.clone(), initial_advertise_peer_urls.clone())]),
        };
        let config = Config {
            data_dir: flags.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.phoenix", flags.name))),
            listen_client_urls: parse_listen_urls("--listen-client-urls", &flags.listen_client_urls)?,
            advertise_client_urls: parse_urls("--advertise-client-urls", &flags.advertise_client_urls)?,
            listen_peer_urls: parse_listen_urls("--listen-peer-urls", &flags.listen_peer_urls)?,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: if flags.join.is_empty() {
                flags.initial_cluster_state
            } else {
                ClusterState::Existing
            },
            initial_cluster_token: flags.initial_cluster_token,
            heartbeat_interval: Duration::from_millis(flags.heartbeat_interval),
            election_timeout: Duration::from_millis(flags.election_timeout),
            // etcd reads 0 as its default too ("set snapshot count to default 100000").
            snapshot_count: if flags.snapshot_count == 0 { DEFAULT_SNAPSHOT_COUNT } else { flags.snapshot_count },
            quota_backend_bytes: match flags.quota_backend_bytes {
                0 => DEFAULT_QUOTA_BYTES,
                bytes => u64::try_from(bytes).unwrap_or(NO_QUOTA),
            },
            max_txn_ops: flags.max_txn_ops as usize,
            max_request_bytes: flags.max_request_bytes as usize,
            log_level: flags.log_level,
            join: flags.join.clone(),
            force_new_cluster: flags.force_new_cluster,
            revision_bump: revision_bump(flags.bump_revision, flags.mark_compacted)?,
            watch_progress_notify_interval: flags.experimental_watch_progress_notify_interval,
            backup: flags.backup_dir.map(|dir| BackupSchedule {
                dir,
                interval: flags.backup_interval,
                retention: flags.backup_retention,
                from: flags.backup_from,
                min_free_bytes: flags.backup_min_free_bytes,
            }),
            name: flags.name,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let mine = self.initial_cluster.get(&self.name).ok_or_else(|| {
            Error::Config(format!(
                "couldn't find local name {:?} in the initial cluster configuration (--initial-cluster)",
                self.name
            ))
        })?;
        let mut mine: Vec<&str> = mine.iter().map(Url::as_str).collect();
        let mut advertised: Vec<&str> = self.initial_advertise_peer_urls.iter().map(Url::as_str).collect();
        mine.sort_unstable();
        advertised.sort_unstable();
        if mine != advertised {
            return Err(Error::Config(format!(
                "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
                self.name,
                mine.join(","),
                advertised.join(",")
            )));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(Error::Config("--heartbeat-interval must be greater than 0".into()));
        }
        if self.election_timeout >= MAX_ELECTION_TIMEOUT {
            return Err(Error::Config(format!(
                "--election-timeout[{}ms] is too long, and should be set less than {}ms",
                self.election_timeout.as_millis(),
                MAX_ELECTION_TIMEOUT.as_millis()
            )));
        }
        if self.election_timeout < self.heartbeat_interval * 5 {
            return Err(Error::Config(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout.as_millis(),
                self.heartbeat_interval.as_millis()
            )));
        }
        if self.watch_progress_notify_interval.is_zero() {
            return Err(Error::Config("--experimental-watch-progress-notify-interval must be greater than 0".into()));
        }
        if self.revision_bump.by > 0 && !self.force_new_cluster {
            return Err(Error::Config("--bump-revision and --mark-compacted go with --force-new-cluster".into()));
        }
        if self.backup.as_ref().is_some_and(|b| b.interval.is_zero()) {
            return Err(Error::Config("--backup-interval must be greater than 0".into()));
        }
        Ok(())
    }

    /// The timeout of one client request, as etcd computes it: 5 s plus two election timeouts.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + 2 * self.election_timeout
    }

    pub fn peer_urls_of(&self, name: &str) -> Vec<String> {
        self.initial_cluster.get(name).map(|urls| urls.iter().map(url_string).collect()).unwrap_or_default()
    }
}

/// A URL as etcd prints it: without the trailing slash `url` adds to an empty path.
pub fn url_string(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

pub fn parse_urls(flag: &str, list: &str) -> Result<Vec<Url>> {
    let urls: Vec<Url> =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| parse_url(flag, s)).collect::<Result<_>>()?;
    if urls.is_empty() {
        return Err(Error::Config(format!("{flag} must list at least one URL")));
    }
    Ok(urls)
}

fn parse_url(flag: &str, s: &str) -> Result<Url> {
    let url = Url::parse(s).map_err(|e| Error::Config(format!("{flag}: invalid URL {s:?}: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" | "unixs" => return Err(Error::Config(format!("{flag}: {s:?}: TLS is not supported by Phoenix yet"))),
        other => return Err(Error::Config(format!("{flag}: URL scheme must be http, not {other:?} in {s:?}"))),
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err(Error::Config(format!("{flag}: URL {s:?} must have a host and a port")));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(Error::Config(format!("{flag}: URL {s:?} must not have a path")));
    }
    Ok(url)
}

/// Listen URLs must name an IP address (or localhost), as etcd requires for binding.
fn parse_listen_urls(flag: &str, list: &str) -> Result<Vec<Url>> {
    let urls = parse_urls(flag, list)?;
    for url in &urls {
        let host = url.host_str().unwrap_or_default();
        let is_ip = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok();
        if !is_ip && host != "localhost" {
            return Err(Error::Config(format!("{flag}: expected IP in URL for binding ({url})")));
        }
    }
    Ok(urls)
}

/// Parses a duration as Go's time.ParseDuration does: a sequence of decimal numbers, each with an
/// optional fraction and a unit (ns, us, µs, ms, s, m, h), such as "300ms" or "1h2m3.5s"; "0"
/// alone is zero. Negative durations are refused: no flag here means anything by them.
pub fn parse_go_duration(text: &str) -> std::result::Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (use a Go duration such as 500ms, 10s or 10m)");
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(invalid());
    }
    let mut total = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        total += number.parse::<f64>().map_err(|_| invalid())? * nanos_per_unit;
        rest = tail;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

fn parse_initial_cluster(spec: &str) -> Result<BTreeMap<String, Vec<Url>>> {
    let mut members: BTreeMap<String, Vec<Url>> = BTreeMap::new();
    for pair in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = pair
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--initial-cluster: {pair:?} is not of the form name=url")))?;
        members.entry(name.to_string()).or_default().push(parse_url("--initial-cluster", url)?);
    }
    if members.is_empty() {
        return Err(Error::Config("--initial-cluster must list at least one member".into()));
    }
    let mut urls: Vec<&str> = members.values().flatten().map(Url::as_str).collect();
    urls.sort_unstable();
    if urls.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(Error::Config(format!("initial cluster {spec} has duplicate url")));
    }
    Ok(members)
}

/// The revision bump of a reset or restore, as etcd's restore takes it: --mark-compacted only
/// makes sense with a bump, since compacting at the old revision would hide nothing.
pub fn revision_bump(by: u64, mark_compacted: bool) -> Result<crate::pb::RevisionBump> {
    if mark_compacted && by == 0 {
        return Err(Error::Config("--mark-compacted needs --bump-revision greater than 0".into()));
    }
    if by > MAX_REVISION_BUMP {
        return Err(Error::Config(format!("--bump-revision {by} is too large: at most {MAX_REVISION_BUMP}")));
    }
    Ok(crate::pb::RevisionBump { by: by as i64, mark_compacted })
}

/// The largest revision bump: half of a revision's range, leaving the other half to the store
/// (a revision past i64's range could not be applied, and the bump is written to the log).
const MAX_REVISION_BUMP: u64 = 1 << 62;

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config> {
        let args = std::iter::once("phoenix").chain(args.iter().copied()).map(OsString::from);
        Config::from_flags(parse_flags(args).map_err(|e| Error::Config(e.to_string()))?.0)
    }

    #[test]
    fn a_revision_bump_past_half_a_revisions_range_is_refused() {
        assert_eq!(revision_bump(1 << 62, true).map(|b| b.by).ok(), Some(1 << 62));
        let err = revision_bump((1 << 62) + 1, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("--bump-revision 4611686018427387905 is too large"), "{err}");
        assert!(revision_bump(u64::MAX, false).is_err());
    }

    #[test]
    fn defaults_are_etcds() {
        let c = config(&[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.phoenix"));
        assert_eq!(c.peer_urls_of("default"), vec!["http://localhost:2380"]);
        assert_eq!(c.request_timeout(), Duration::from_secs(7));
    }

    #[test]
    fn single_dash_flags_work_like_go() {
        let c = config(&["-name", "n1", "-initial-advertise-peer-urls", "http://127.0.0.1:12380"]).unwrap();
        assert_eq!(c.name, "n1");
        assert_eq!(c.peer_urls_of("n1"), vec!["http://127.0.0.1:12380"]);
    }

    #[test]
    fn flags_parse_as_gos_flag_package_parses_them() {
        // A value that starts with a hyphen is a value, single dash or not.
        let c =
            config(&["--initial-cluster-token", "-tok", "-name", "n1", "-initial-cluster", "n1=http://localhost:2380"]);
        assert_eq!(c.unwrap().initial_cluster_token, "-tok");
        // A boolean takes =true or =false; a flag given twice keeps its last value.
        assert!(!config(&["--force-new-cluster=false"]).unwrap().force_new_cluster);
        assert!(config(&["-force-new-cluster=true"]).unwrap().force_new_cluster);
        assert_eq!(config(&["--name", "a", "--name", "default"]).unwrap().name, "default");
        let negative = config(&["--heartbeat-interval", "-50"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(negative.contains("-50") && !negative.contains("--50"), "{negative}");
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        let ok: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("10m0s", Duration::from_secs(600)),
            ("500ms", Duration::from_millis(500)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("+7ns", Duration::from_nanos(7)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_go_duration(text).as_ref(), Ok(want), "{text}");
        }
        for bad in ["", "10", "5x", "-1s", "1..5s", "s", "1s2"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            config(&["--experimental-watch-progress-notify-interval", "200ms"]).unwrap().watch_progress_notify_interval,
            Duration::from_millis(200)
        );
        assert_eq!(config(&[]).unwrap().watch_progress_notify_interval, Duration::from_secs(600));
    }

    #[test]
    fn bad_input_is_refused_with_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen-client-urls", "not a url"], "invalid URL"),
            (&["--listen-client-urls", "http://example.com:2379"], "expected IP"),
            (&["--initial-cluster", "other=http://localhost:2380"], "couldn't find local name"),
            (&["--initial-cluster", "default=http://localhost:9999"], "--initial-advertise-peer-urls"),
            (&["--election-timeout", "200"], "5 times"),
            (&["--experimental-watch-progress-notify-interval", "0s"], "greater than 0"),
            (&["--bump-revision", "10"], "go with --force-new-cluster"),
            (&["--backup-dir", "b", "--backup-interval", "0s"], "--backup-interval must be greater than 0"),
            (&["--force-new-cluster", "--mark-compacted"], "needs --bump-revision"),
        ];
        for (args, expected) in cases {
            let err = config(args).unwrap_err().to_string();
            assert!(err.contains(expected), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{args:?}: {err}");
        }
    }
}
