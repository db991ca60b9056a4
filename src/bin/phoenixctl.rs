//! phoenixctl: etcdctl's commands and output against Phoenix or etcd.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use phoenix::ctl::{self, cli::Cli};

fn main() -> ExitCode {
    let args = ctl::cli::normalize_args(&Cli::command(), std::env::args_os());
    match Cli::try_parse_from(args) {
        Ok(cli) => ctl::run(cli),
        Err(error) => ctl::usage_error(&error),
    }
}
