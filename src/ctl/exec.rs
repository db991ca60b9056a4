//! Running the command given to `watch ... -- <command>` and `lock <name> <command>`: it inherits
//! phoenixctl's stdin, stdout, stderr and environment plus the variables the caller adds, and a
//! failure is worded as Go's `os/exec` words it (`exit status 3`, `signal: killed`,
//! `exec: "x": executable file not found in $PATH`).

use std::ffi::OsString;
use std::process::{Command, ExitStatus};

/// Runs `argv` to completion off the async runtime, so background tasks (a session's keep-alive)
/// keep running meanwhile.
pub async fn run(argv: Vec<OsString>, env: Vec<(String, String)>) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command to run".to_string());
    };
    let mut command = Command::new(program);
    command.args(args).envs(env);
    let program = program.to_string_lossy().into_owned();
    #[allow(clippy::disallowed_methods)] // waiting for a process: no sled
    let waited = tokio::task::spawn_blocking(move || command.status()).await;
    match waited {
        Err(join) => Err(join.to_string()),
        Ok(Err(error)) => Err(spawn_error(&program, &error)),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(exit_error(status)),
    }
}

/// Go's `%q` of a `[]string`: `["sh" "-c" "exit 2"]`.
pub fn quote_argv(argv: &[OsString]) -> String {
    let quoted: Vec<String> = argv.iter().map(|arg| super::gofmt::quote(arg.as_encoded_bytes())).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's words for a command that could not start: a bare name is looked up in `$PATH`, a path
/// is executed directly.
fn spawn_error(program: &str, error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::NotFound && !program.contains('/') {
        return format!("exec: {}: executable file not found in $PATH", super::gofmt::quote(program.as_bytes()));
    }
    format!("fork/exec {program}: {}", os_error_text(error))
}

/// The C library's text for an OS error, without Rust's ` (os error N)` suffix, in lower case
/// as Go's `syscall.Errno` prints it.
fn os_error_text(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars.next().map(|first| first.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// Go's `*exec.ExitError` text.
fn exit_error(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal: {}", signal_name(signal));
        }
    }
    format!("exit status {}", status.code().unwrap_or(-1))
}

/// Go's `syscall.Signal.String()` for the signals a command usually dies of.
#[cfg(unix)]
fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        6 => "aborted",
        9 => "killed",
        11 => "segmentation fault",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[tokio::test]
    async fn failures_read_like_go() {
        assert_eq!(run(argv(&["sh", "-c", "exit 3"]), vec![]).await, Err("exit status 3".to_string()));
        assert_eq!(run(argv(&["sh", "-c", "kill -9 $$"]), vec![]).await, Err("signal: killed".to_string()));
        assert_eq!(
            run(argv(&["phoenix-no-such-command"]), vec![]).await,
            Err(r#"exec: "phoenix-no-such-command": executable file not found in $PATH"#.to_string())
        );
        assert_eq!(
            run(argv(&["./phoenix-no-such-command"]), vec![]).await,
            Err("fork/exec ./phoenix-no-such-command: no such file or directory".to_string())
        );
        let env = vec![("PHOENIX_TEST_VALUE".to_string(), "1".to_string())];
        assert_eq!(run(argv(&["sh", "-c", r#"test "$PHOENIX_TEST_VALUE" = 1"#]), env).await, Ok(()));
    }

    #[test]
    fn argv_quotes_like_go() {
        assert_eq!(quote_argv(&argv(&["sh", "-c", "echo \"hi\""])), r#"["sh" "-c" "echo \"hi\""]"#);
    }
}
