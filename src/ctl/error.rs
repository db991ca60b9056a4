//! phoenixctl's failures: etcdctl's exit codes and the exact text etcdctl prints for them.
//!
//! etcdctl prints `Error: <message>` on stderr and exits with one of a few codes
//! (etcd-io/etcd v3.4 `etcdctl/ctlv3/command/error.go`). gRPC errors whose description is one of
//! etcd's known server errors print as the bare description; any other status prints as grpc-go's
//! `rpc error: code = <Code> desc = <message>`.

/// A failed command or an unreachable server.
pub const EXIT_ERROR: u8 = 1;
/// No endpoint to connect to, or a lease question that failed.
pub const EXIT_BAD_CONNECTION: u8 = 2;
/// Malformed `txn` or interactive `watch` input.
pub const EXIT_INVALID_INPUT: u8 = 3;
/// A valid flag with an unsupported value, such as an unknown output format.
pub const EXIT_BAD_FEATURE: u8 = 4;
/// The server ended a `watch`, or a `snapshot save` failed.
pub const EXIT_INTERRUPTED: u8 = 5;
/// Wrong arguments for a command.
pub const EXIT_BAD_ARGS: u8 = 128;

/// Why a command stopped: the exit code and, unless the command already reported it, a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlError {
    /// The process exit code.
    pub code: u8,
    /// Printed as `Error: <message>`; `None` when the details were already printed.
    pub message: Option<String>,
}

impl CtlError {
    pub fn new(code: u8, message: impl Into<String>) -> CtlError {
        CtlError { code, message: Some(message.into()) }
    }

    /// Exits with `code` without an `Error:` line, as etcdctl does after per-endpoint reports.
    pub fn silent(code: u8) -> CtlError {
        CtlError { code, message: None }
    }

    /// An RPC failure, worded as etcdctl's client words it.
    pub fn status(status: &tonic::Status) -> CtlError {
        CtlError::new(EXIT_ERROR, status_message(status))
    }

    /// The command deadline (`--command-timeout`) passed.
    pub fn deadline() -> CtlError {
        CtlError::new(EXIT_ERROR, DEADLINE_EXCEEDED)
    }
}

/// Go's `context.DeadlineExceeded` text, which etcdctl prints when a command times out.
pub const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// The descriptions clientv3 recognises as etcd server errors and prints without decoration
/// (etcd-io/etcd v3.4 `etcdserver/api/v3rpc/rpctypes/error.go`, `errStringToError`).
const ETCD_ERRORS: &[&str] = &[
    "etcdserver: key is not provided",
    "etcdserver: key not found",
    "etcdserver: value is provided",
    "etcdserver: lease is provided",
    "etcdserver: too many operations in txn request",
    "etcdserver: duplicate key given in txn request",
    "etcdserver: mvcc: required revision has been compacted",
    "etcdserver: mvcc: required revision is a future revision",
    "etcdserver: mvcc: database space exceeded",
    "etcdserver: requested lease not found",
    "etcdserver: lease already exists",
    "etcdserver: too large lease TTL",
    "etcdserver: member ID already exist",
    "etcdserver: Peer URLs already exists",
    "etcdserver: re-configuration failed due to not enough started members",
    "etcdserver: given member URLs are invalid",
    "etcdserver: member not found",
    "etcdserver: can only promote a learner member",
    "etcdserver: can only promote a learner member which is in sync with leader",
    "etcdserver: too many learner members in cluster",
    "etcdserver: request is too large",
    "etcdserver: too many requests",
    "etcdserver: root user does not exist",
    "etcdserver: root user does not have root role",
    "etcdserver: user name already exists",
    "etcdserver: user name is empty",
    "etcdserver: user name not found",
    "etcdserver: role name already exists",
    "etcdserver: role name not found",
    "etcdserver: role name is empty",
    "etcdserver: authentication failed, invalid user ID or password",
    "etcdserver: permission denied",
    "etcdserver: role is not granted to the user",
    "etcdserver: permission is not granted to the role",
    "etcdserver: authentication is not enabled",
    "etcdserver: invalid auth token",
    "etcdserver: invalid auth management",
    "etcdserver: revision of auth store is old",
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: not capable",
    "etcdserver: server stopped",
    "etcdserver: request timed out",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
    "etcdserver: request timed out, waiting for the applied index took too long",
    "etcdserver: unhealthy cluster",
    "etcdserver: corrupt cluster",
    "etcdserver: rpc not supported for learner",
    "etcdserver: bad leader transferee",
];

/// How etcdctl prints a gRPC status: known etcd errors bare, anything else as grpc-go does.
pub fn status_message(status: &tonic::Status) -> String {
    let message = status.message();
    if ETCD_ERRORS.contains(&message) {
        return message.to_string();
    }
    if status.code() == tonic::Code::DeadlineExceeded {
        return DEADLINE_EXCEEDED.to_string();
    }
    format!("rpc error: code = {} desc = {}", go_code_name(status.code()), message)
}

/// grpc-go's name for a status code (`codes.Code.String()`).
fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_etcd_errors_print_bare() {
        let status = tonic::Status::invalid_argument("etcdserver: key is not provided");
        assert_eq!(status_message(&status), "etcdserver: key is not provided");
    }

    #[test]
    fn other_statuses_print_like_grpc_go() {
        let status = tonic::Status::unimplemented("unknown method Foo");
        assert_eq!(status_message(&status), "rpc error: code = Unimplemented desc = unknown method Foo");
    }
}
