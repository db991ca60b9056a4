//! The one error type, and the single mapping between it and etcd's gRPC statuses.
//!
//! etcd clients decide what an error means by its exact text (Go's clientv3 looks the message up
//! in a table), so every variant that reaches a client carries etcd's code and message byte for
//! byte. [`Error::from_status`] is the inverse mapping, used when a status crosses the peer
//! protocol (a forwarded request, a refusal decided while applying).

use tonic::{Code, Status};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // Request validation, answered before anything is proposed.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,

    // MVCC and state machine outcomes.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// While a CORRUPT alarm is raised, etcd refuses every write.
    #[error("etcdserver: corrupt cluster")]
    CorruptCluster,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,

    // Cluster availability: all Unavailable, so clients retry.
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// This member is not the leader and did nothing: safe to retry elsewhere.
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// A read overlapped a snapshot install on this member. The store says so at once; the API
    /// answers it only once the install outlasts the request timeout (etcd's reads wait; the
    /// text is Phoenix's own).
    #[error("etcdserver: member is installing a snapshot from the leader")]
    Installing,

    // Membership changes.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// etcd 3.4.23 answers it with code Unknown, so clients do not retry the transfer.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,

    // The lock and election recipes' own errors, which etcd returns with code Unknown.
    #[error("election: no leader")]
    ElectionNoLeader,
    #[error("election: not leader")]
    ElectionNotLeader,
    #[error("mutex: session is expired")]
    SessionExpired,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,

    /// A feature a later release will serve; the API answers Unimplemented.
    #[error("{0} is not implemented yet in Phoenix")]
    Unimplemented(&'static str),

    /// A status received from a peer that matches no variant above.
    #[error("{message}")]
    Remote { code: i32, message: String },

    /// Bad flags, a malformed URL, a data dir that does not fit: the operator must act.
    #[error("{0}")]
    Config(String),
    /// Data on disk that cannot be decoded: never guessed around.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Disk or storage engine failure. A node that hits one while applying stops.
    #[error("storage: {0}")]
    Storage(String),
    /// A peer or transport failure that is not one of etcd's answers.
    #[error("{0}")]
    Internal(String),
}

/// Variants whose status is fixed, in one list so the inverse mapping cannot miss one.
const FIXED_STATUSES: &[Error] = &[
    Error::EmptyKey,
    Error::KeyNotFound,
    Error::ValueProvided,
    Error::LeaseProvided,
    Error::TooManyOps,
    Error::DuplicateKey,
    Error::InvalidSortOption,
    Error::RequestTooLarge,
    Error::Compacted,
    Error::FutureRevision,
    Error::NoSpace,
    Error::CorruptCluster,
    Error::LeaseNotFound,
    Error::LeaseExists,
    Error::LeaseTtlTooLarge,
    Error::NoLeader,
    Error::LeaderChanged,
    Error::NotLeader,
    Error::Timeout,
    Error::Stopped,
    Error::TooManyRequests,
    Error::Installing,
    Error::MemberNotFound,
    Error::MemberExists,
    Error::PeerUrlExists,
    Error::MemberBadUrls,
    Error::MemberNotLearner,
    Error::LearnerNotReady,
    Error::TooManyLearners,
    Error::NotEnoughStartedMembers,
    Error::Unhealthy,
    Error::NotSupportedForLearner,
    Error::BadLeaderTransferee,
    Error::LeaderTransferTimeout,
    Error::ElectionNoLeader,
    Error::ElectionNotLeader,
    Error::SessionExpired,
    Error::MissingLeaderKey,
];

impl Error {
    /// The gRPC code etcd uses for this error.
    pub fn code(&self) -> Code {
        use Error::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey | InvalidSortOption
            | RequestTooLarge | MemberBadUrls => Code::InvalidArgument,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            MemberExists
            | PeerUrlExists
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | NotEnoughStartedMembers
            | BadLeaderTransferee => Code::FailedPrecondition,
            NotLeader | LeaseExists => Code::FailedPrecondition,
            // A learner's refusal sends the client on to another member, as in etcd 3.4.
            NoLeader | LeaderChanged | Timeout | Stopped | Installing | NotSupportedForLearner | Unhealthy => {
                Code::Unavailable
            }
            Unimplemented(_) => Code::Unimplemented,
            Remote { code, .. } => Code::from_i32(*code),
            Config(_) => Code::InvalidArgument,
            Corrupt(_) | CorruptCluster => Code::DataLoss,
            ElectionNoLeader | ElectionNotLeader | SessionExpired | MissingLeaderKey => Code::Unknown,
            LeaderTransferTimeout => Code::Unknown,
            Storage(_) | Internal(_) => Code::Unknown,
        }
    }

    /// The inverse of `Status::from(Error)`, for statuses that crossed the peer protocol.
    pub fn from_status(code: i32, message: &str) -> Error {
        FIXED_STATUSES
            .iter()
            .find(|e| e.code() as i32 == code && e.to_string() == message)
            .cloned()
            .unwrap_or_else(|| Error::Remote { code, message: message.to_string() })
    }

    /// The error as carried inside a command result through the peer protocol.
    pub fn to_command_error(&self) -> crate::pb::CommandError {
        crate::pb::CommandError { code: self.code() as i32, message: self.to_string() }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        Status::new(err.code(), err.to_string())
    }
}

/// What tonic says when the connection under a call fails.
const TONIC_TRANSPORT_ERROR: &str = "transport error";

/// Whether tonic made `status` from a connection that failed under the call, rather than the
/// peer sending it: tonic reports some of those as Unknown, "transport error" or an h2 error,
/// and keeps the failure as the status's source, which a status the peer sent never has.
pub fn broke_mid_call(status: &Status) -> bool {
    status.code() == Code::Unknown
        && (status.message() == TONIC_TRANSPORT_ERROR || std::error::Error::source(status).is_some())
}

/// Whether a call to a peer failed before anything was sent: its connection could not be made
/// (the peer is down). Such a call may be retried elsewhere without doing anything twice.
pub fn never_sent(status: &Status) -> bool {
    status.code() == Code::Unavailable && status.message().contains("tcp connect error")
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        match status.code() {
            // A peer that cannot be reached is, to a client, a cluster without a usable leader.
            Code::Unavailable if status.message().starts_with("etcdserver:") => {
                Error::from_status(status.code() as i32, status.message())
            }
            // A connection to the peer that broke mid-call (it died or is stopping) leaves the
            // outcome unknown.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Error::Timeout,
            _ if broke_mid_call(&status) => Error::Timeout,
            code => Error::from_status(code as i32, status.message()),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Error {
        match crate::disk::damage(&err) {
            Some(damage) => Error::Corrupt(damage),
            None => Error::Storage(err.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        Error::Storage(err.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(err: prost::DecodeError) -> Error {
        Error::Corrupt(err.to_string())
    }
}

impl From<bincode::Error> for Error {
    fn from(err: bincode::Error) -> Error {
        Error::Corrupt(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_status_maps_back_to_itself() {
        for err in FIXED_STATUSES {
            let status = Status::from(err.clone());
            assert_eq!(&Error::from_status(status.code() as i32, status.message()), err);
        }
    }

    #[test]
    fn unknown_status_is_kept_verbatim() {
        let err = Error::from_status(Code::Internal as i32, "something else");
        assert_eq!(Status::from(err).message(), "something else");
    }

    #[test]
    fn a_broken_call_to_a_peer_is_a_retryable_timeout() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled, Code::Unknown] {
            assert_eq!(Error::from(Status::new(code, "transport error")), Error::Timeout, "{code:?}");
        }
        let no_leader = Status::from(Error::NoLeader);
        assert_eq!(Error::from(no_leader), Error::NoLeader);
    }

    #[test]
    fn a_connection_that_broke_under_a_call_is_a_retryable_timeout_whatever_tonic_calls_it() {
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "h2 protocol error: connection reset");
        assert_eq!(Error::from(Status::from_error(Box::new(broken))), Error::Timeout);
        // An Unknown the peer itself answered is its own error, not a broken connection.
        let answered = Status::new(Code::Unknown, "etcdserver: storage failed");
        assert!(matches!(Error::from(answered), Error::Remote { .. }));
    }
}
