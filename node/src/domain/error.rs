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
    #[error("{field} {} is invalid: {rule}", quoted(.value))]
    Invalid {
        field: String,
        value: String,
        rule: String,
    },
    #[error("group {} does not exist", quoted(.0))]
    GroupNotFound(String),
    #[error("group {} already exists", quoted(.0))]
    GroupExists(String),
    #[error("worker {} has no session in group {}", quoted(.worker), quoted(.group))]
    WorkerNotFound { group: String, worker: String },
    #[error("worker {} already has session {session} in group {}; it ends when that process leaves or its lease expires: join again then, or join under another worker id", quoted(.worker), quoted(.group))]
    WorkerExists {
        group: String,
        worker: String,
        session: u64,
    },
    #[error("group {} is at revision {actual}, not {expected}: re-read it and retry", quoted(.group))]
    RevisionMismatch {
        group: String,
        expected: u64,
        actual: u64,
    },
    #[error("partition {partition} of group {} is not held by worker {} with fencing token {token}{detail}", quoted(.group), quoted(.worker))]
    StaleRelease {
        group: String,
        worker: String,
        partition: u32,
        token: u64,
        detail: String,
    },
    #[error(
        "partition {partition} is out of range: group {} has partitions 0..{partitions}",
        quoted(.group)
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

/// How messages quote user input: in double quotes, escaped, and at most
/// about [`QUOTED_CHARS`] characters of it once escaped, so an error about a
/// 20,000-character name stays short enough for any client's metadata
/// limit (about 8 KB), even when every character needs an escape.
pub fn quoted(input: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = input.char_indices();
    for (_, c) in chars.by_ref() {
        out.extend(c.escape_debug());
        if out.len() > QUOTED_CHARS {
            break;
        }
    }
    out.push('"');
    if chars.next().is_some() {
        out.push_str(&format!("… ({} bytes)", input.len()));
    }
    out
}

/// The most characters of one user input a message quotes (escaped).
pub const QUOTED_CHARS: usize = 100;

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

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quotes_are_short_whatever_the_input() {
        assert_eq!(quoted("mail-sync"), "\"mail-sync\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        for long in [
            "a".repeat(20_000),
            "\u{7}".repeat(20_000),
            "é".repeat(20_000),
        ] {
            let q = quoted(&long);
            assert!(q.len() < 140 && q.ends_with(" bytes)"), "{q}");
        }
        assert_eq!(quoted(&"a".repeat(100)), format!("\"{}\"", "a".repeat(100)));
    }
}
