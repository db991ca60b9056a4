//! The Phoenix server: `phoenix` takes etcd's flags.

use std::process::ExitCode;

use phoenix::config::{Config, LogLevel};

/// mimalloc, not glibc's malloc: a request makes many small allocations (keys, records,
/// messages), and mimalloc serves them faster; Cargo.toml says by how much.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    phoenix::config::unset_empty_variables();
    let args: Vec<_> = std::env::args_os().collect();
    if let Err(e) = phoenix::config::refuse_tls(args.get(1..).unwrap_or_default()) {
        eprintln!("phoenix: {e}");
        return ExitCode::FAILURE;
    }
    let (flags, matches) = match phoenix::config::parse_flags(args) {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            eprintln!("phoenix: {first} (see phoenix --help)");
            // As etcd (Go's flag package) exits on a flag it cannot parse; its other checks exit 1.
            return ExitCode::from(2);
        }
    };
    if flags.version {
        println!("phoenix Version: {}", env!("CARGO_PKG_VERSION"));
        println!("etcd API Version: {}", phoenix::ETCD_API_VERSION);
        return ExitCode::SUCCESS;
    }
    let config =
        match Config::from_flags(flags).and_then(|config| phoenix::config::check_sources(&matches).map(|()| config)) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("phoenix: {e}");
                return ExitCode::FAILURE;
            }
        };
    init_logging(config.log_level);
    for name in phoenix::config::ignored_variables() {
        tracing::warn!(variable = %name, "unrecognized environment variable: Phoenix takes no such flag, and ignores it");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("phoenix: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(phoenix::server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phoenix: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: LogLevel) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => "error",
    };
    // openraft is chatty at info; its warnings and errors still show.
    let default = format!("{level},openraft=warn,h2=warn,tower=warn,hyper=warn");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
