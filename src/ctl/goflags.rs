//! Go's command-line rules (the flag package etcd uses, pflag etcdctl uses) on top of clap,
//! shared by phoenix's flags (`crate::config`) and phoenixctl's (`super::cli`): a flag that takes
//! a value takes the next word whatever it starts with, and a boolean takes `=true`/`=false` in
//! `strconv.ParseBool`'s spellings.

use std::collections::BTreeSet;
use std::ffi::OsString;

use clap::ArgAction;

use super::goparse::parse_bool;

/// As pflag does, a flag that takes a value takes the next word whatever it starts with
/// (`--rev -1`, `--order -x`), in `command` and its subcommands.
pub fn pflag_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
            if takes_value && !arg.is_positional() {
                arg.allow_hyphen_values(true)
            } else {
                arg
            }
        })
        .mut_subcommands(pflag_values)
}

/// Rewrites pflag's `--flag=true` to `--flag` and drops `--flag=false` for `command`'s boolean
/// flags, which clap takes only bare.
pub fn normalize_args(command: &clap::Command, args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let bools = bool_flags(command);
    let mut options_ended = false;
    let mut out = Vec::new();
    for arg in args {
        options_ended |= arg == "--";
        let assignment = arg.to_str().and_then(|s| s.strip_prefix("--")).and_then(|s| s.split_once('='));
        match assignment {
            Some((name, value)) if !options_ended && bools.contains(name) => match parse_bool(value) {
                Ok(true) => out.push(OsString::from(format!("--{name}"))),
                Ok(false) => {}
                Err(_) => out.push(arg),
            },
            _ => out.push(arg),
        }
    }
    out
}

/// The long names of every boolean flag in `command` and its subcommands.
fn bool_flags(command: &clap::Command) -> BTreeSet<String> {
    let own = command
        .get_arguments()
        .filter(|arg| matches!(arg.get_action(), ArgAction::SetTrue))
        .filter_map(|arg| arg.get_long().map(str::to_string));
    let nested = command.get_subcommands().flat_map(bool_flags);
    own.chain(nested).collect()
}
