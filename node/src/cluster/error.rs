//! Why the cluster could not serve a request. The API turns each into a
//! gRPC status (`api::cluster_error`); nothing here knows about statuses
//! except the one the leader itself answered a read index with.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::BasicNode;

use crate::domain::DomainError;
use crate::raft::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node was removed from the cluster (the message names the removal).
    #[error("{0}")]
    Removed(String),
    /// This node leads but has committed its own removal: it must not
    /// propose in the moment before it steps down.
    #[error("this node has been removed from the cluster and is stepping down")]
    SteppingDown,
    /// Only the leader serves this, and this node cannot forward it: the
    /// leader it knows, if any.
    #[error("this node is not the leader")]
    NotLeader(Option<(NodeId, String)>),
    /// The leader's address in the membership cannot be dialled.
    #[error("leader {id} has an unusable address {addr:?}: {reason}")]
    LeaderAddress {
        id: NodeId,
        addr: String,
        reason: String,
    },
    /// The command was checked or applied and refused.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No group of this name (reads of one group).
    #[error("group {0:?} does not exist")]
    GroupNotFound(String),
    /// The command was not committed.
    #[error(transparent)]
    Write(#[from] RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>),
    /// Leadership could not be confirmed for a linearizable read.
    #[error(transparent)]
    CheckLeader(#[from] RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>),
    /// The leader refused this node's read-index request; its answer is
    /// passed on as it is.
    #[error("the leader refused the read index: {}", .0.message())]
    ReadIndex(tonic::Status),
    /// This node did not apply the leader's read index in time.
    #[error("this node has not applied the leader's read index {index} within {timeout:?}")]
    Behind { index: u64, timeout: Duration },
    /// This node is shutting down.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// The command's entry was committed and applied, but no result came
    /// back for it (a bug: the state machine returns one per command).
    #[error("the command was committed, but this node returned no result for it; its outcome is unknown: read the state to learn it")]
    Unanswered,
    /// The command's entry was proposed but not applied here in time: it
    /// may or may not commit.
    #[error("the command was proposed but not applied within {0:?}; it may still commit: read the state to learn whether it did, or retry it if it is idempotent")]
    OutcomeUnknown(Duration),
}
