//! The Phoenix server: `phoenix` takes etcd's flags.

use std::process::ExitCode;

use phoenix::config::{Config, LogLevel};

/// mimalloc, not glibc's malloc: a request makes many small allocations (keys, records,
/// messages), and mimalloc serves them faster; Cargo.toml says by how much.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_page_reclaim_on_free` in the mimalloc.h of libmimalloc-sys 0.1.49, which
/// Cargo.toml pins for this number; the Rust bindings do not name it.
const MI_OPTION_PAGE_RECLAIM_ON_FREE: libmimalloc_sys::mi_option_t = 35;

/// mimalloc sets a thread's full pages aside in a pool every thread allocates fresh pages from.
/// By default (0), when the thread that filled such a page frees a block on it, it takes the page
/// back into its own heap, where no other thread can allocate from it: a thread that then stops
/// allocating (one of those loading a snapshot, an idle blocking thread) keeps its partly free
/// pages while the others take fresh ones. -1 leaves the page in the pool. In `catch-up` each
/// member peaked at 112-116 MiB instead of 119-125, throughput within the noise (README,
/// Performance). Set first thing in `main`: every free reads it.
fn tune_allocator() {
    // SAFETY: mi_option_set stores a number in mimalloc's option table; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PAGE_RECLAIM_ON_FREE, -1) };
}

fn main() -> ExitCode {
    tune_allocator();
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

#[cfg(test)]
mod tests {
    use std::ffi::{c_char, c_void, CStr};

    extern "C" {
        /// Exported by mimalloc (options.c) but not bound by libmimalloc-sys 0.1.49.
        fn mi_options_print_out(out: libmimalloc_sys::mi_output_fun, arg: *mut c_void);
    }

    unsafe extern "C" fn append_to_string(message: *const c_char, text: *mut c_void) {
        // SAFETY: mimalloc passes a NUL-terminated message and the `arg` given below, a String.
        let (message, text) = unsafe { (CStr::from_ptr(message), &mut *(text as *mut String)) };
        text.push_str(&message.to_string_lossy());
    }

    /// The option's number is right for the linked mimalloc: mimalloc, which prints each
    /// option by name, shows the value set under that number.
    #[test]
    fn the_allocator_option_set_is_page_reclaim_on_free() {
        super::tune_allocator();
        let mut text = String::new();
        // SAFETY: the callback only appends to `text`, which outlives the call.
        unsafe { mi_options_print_out(Some(append_to_string), &mut text as *mut String as *mut c_void) };
        assert!(text.contains("option 'page_reclaim_on_free': -1"), "mimalloc's options: {text}");
    }
}
