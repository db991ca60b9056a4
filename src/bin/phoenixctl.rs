//! phoenixctl: etcdctl's commands and output against Phoenix or etcd.

use std::process::ExitCode;

use phoenix::ctl::{self, cli::Cli};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(conflict) = ctl::cli::shadowed_variable(&args) {
        return ctl::refuse(conflict);
    }
    match ctl::cli::parse::<Cli>(args) {
        Ok(cli) => ctl::run(cli),
        Err(error) => ctl::usage_error(&error),
    }
}
