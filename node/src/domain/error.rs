//! Typed errors of the domain. Each says what was wrong and what is allowed, so
//! the API can pass the message to a human unchanged; [`DomainError::kind`]
//! tells the API which gRPC code to use.

use thiserror::Error;

/// The class of an error, which the API maps to a gRPC status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    /// A compare-and-set lost: the caller read an older revision.
    Aborted,
}

#[derive(Clone, Debug, Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DomainError {
    #[error("{field} {value:?} is invalid: {rule}")]
    Invalid {
        field: String,
        value: String,
        rule: String,
    },
    #[error("group {0:?} does not exist")]
    GroupNotFound(String),
    #[error("group {0:?} already exists")]
    GroupExists(String),
    #[error("worker {worker:?} has no session in group {group:?}")]
    WorkerNotFound { group: String, worker: String },
    #[error("worker {worker:?} already has session {session} in group {group:?}; it ends when that process leaves or its lease expires: join again then, or join under another worker id")]
    WorkerExists {
        group: String,
        worker: String,
        session: u64,
    },
    #[error("group {group:?} is at revision {actual}, not {expected}: re-read it and retry")]
    RevisionMismatch {
        group: String,
        expected: u64,
        actual: u64,
    },
    #[error("partition {partition} of group {group:?} is not held by worker {worker:?} with fencing token {token}{detail}")]
    StaleRelease {
        group: String,
        worker: String,
        partition: u32,
        token: u64,
        detail: String,
    },
    #[error(
        "partition {partition} is out of range: group {group:?} has partitions 0..{partitions}"
    )]
    PartitionOutOfRange {
        group: String,
        partition: u32,
        partitions: u32,
    },
    #[error("{0}")]
    Precondition(String),
}

impl DomainError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DomainError::Invalid { .. } | DomainError::PartitionOutOfRange { .. } => {
                ErrorKind::InvalidArgument
            }
            DomainError::GroupNotFound(_) | DomainError::WorkerNotFound { .. } => {
                ErrorKind::NotFound
            }
            DomainError::GroupExists(_) | DomainError::WorkerExists { .. } => {
                ErrorKind::AlreadyExists
            }
            DomainError::RevisionMismatch { .. } => ErrorKind::Aborted,
            DomainError::StaleRelease { .. } | DomainError::Precondition(_) => {
                ErrorKind::FailedPrecondition
            }
        }
    }
}

pub(crate) fn invalid(
    field: &'static str,
    value: impl ToString,
    rule: impl ToString,
) -> DomainError {
    DomainError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        rule: rule.to_string(),
    }
}
