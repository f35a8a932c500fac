//! The gRPC services a node serves: `Raft` (internal, between nodes),
//! `Admin` (operators), `Worker`, `Tombstones` and `Watch`.
//!
//! Who may call each method and where it runs is one table
//! ([`policy`]), enforced once, before any handler, by the [`gate`];
//! handlers convert, call the cluster or the state, and convert back.
//! Errors from the cluster, openraft and validation are turned into gRPC
//! statuses here, in one place.

pub mod admin;
mod convert;
#[cfg(test)]
mod decode_tests;
pub mod forward;
pub mod gate;
pub mod limits;
pub mod policy;
pub mod raft;
pub mod tombstones;
pub mod watch;
pub mod worker;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::BasicNode;
use tonic::Status;

use crate::cluster::ClusterError;
use crate::domain::{DomainError, ErrorKind};
use crate::raft::NodeId;

impl From<ClusterError> for Status {
    fn from(e: ClusterError) -> Self {
        cluster_error(e)
    }
}

/// Maps a cluster error (routing, proposing, reading) to a status.
pub fn cluster_error(e: ClusterError) -> Status {
    match e {
        ClusterError::Removed(message) => Status::unavailable(message),
        ClusterError::SteppingDown => Status::unavailable(
            "this node has been removed from the cluster and is stepping down; retry on another node",
        ),
        ClusterError::NotLeader(leader) => not_leader(leader),
        ClusterError::LeaderAddress { id, addr, reason } => Status::internal(format!(
            "leader {id} has an unusable address {addr:?}: {reason}"
        )),
        ClusterError::Domain(e) => domain_error(&e),
        ClusterError::GroupNotFound(name) => group_not_found(&name),
        ClusterError::Write(e) => write_error(e),
        ClusterError::CheckLeader(e) => check_leader_error(e),
        // The leader's own answer, passed on.
        ClusterError::ReadIndex(status) => status,
        ClusterError::Behind { index, timeout } => Status::unavailable(format!(
            "this node has not applied the leader's read index {index} within {timeout:?} (it is behind); use another node or retry"
        )),
        ClusterError::ShuttingDown => {
            Status::unavailable("this node is shutting down; use another node")
        }
        e @ ClusterError::Unanswered => Status::internal(e.to_string()),
        e @ ClusterError::OutcomeUnknown(_) => Status::deadline_exceeded(e.to_string()),
    }
}

/// The answer about a group that does not exist: INVALID_ARGUMENT for a
/// name no group can have (and then the name is quoted only in part).
pub fn group_not_found(name: &str) -> Status {
    if let Err(e) = crate::domain::validate::group_name(name) {
        return domain_error(&e);
    }
    Status::not_found(format!(
        "group {name:?} does not exist (list groups with `batonctl group list`)"
    ))
}

/// Maps a domain error to a status; the domain's message is written for humans
/// and passes through unchanged.
pub fn domain_error(e: &DomainError) -> Status {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::AlreadyExists => Status::already_exists(message),
        ErrorKind::FailedPrecondition => Status::failed_precondition(message),
        ErrorKind::Aborted => Status::aborted(message),
    }
}

/// Metadata of an UNAVAILABLE answer from a node that is not the leader: the
/// leader's address (host:port) and node id, when known.
pub const LEADER_ADDR: &str = "baton-leader";
pub const LEADER_ID: &str = "baton-leader-id";

/// The reply to a request that only the leader can answer, sent by a node that
/// is not the leader and cannot forward it.
pub fn not_leader(leader: Option<(NodeId, String)>) -> Status {
    match leader {
        Some((id, addr)) => {
            let mut status = Status::unavailable(format!(
                "this node is not the leader; the leader is node {id} at {addr}: send the request there or retry"
            ));
            // The same, for a client to act on without parsing the text.
            let metadata = status.metadata_mut();
            if let Ok(value) = addr.parse() {
                metadata.insert(LEADER_ADDR, value);
            }
            if let Ok(value) = id.to_string().parse() {
                metadata.insert(LEADER_ID, value);
            }
            status
        }
        None => Status::unavailable(
            "no leader is known right now (an election may be under way, or a majority of voters is down); retry in a moment",
        ),
    }
}

fn forward_to_leader(f: &ForwardToLeader<NodeId, BasicNode>) -> Status {
    not_leader(
        f.leader_id
            .zip(f.leader_node.as_ref().map(|n| n.addr.clone())),
    )
}

/// Maps a failed Raft write (a proposal or a membership change) to a status.
pub fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward_to_leader(&f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(p) => Status::aborted(format!(
                "another membership change is still being committed ({p}); retry when it is done"
            )),
            ChangeMembershipError::EmptyMembership(_) => Status::failed_precondition(
                "the change would leave the cluster with no voter; add another voter first",
            ),
            ChangeMembershipError::LearnerNotFound(l) => Status::not_found(format!(
                "node {} is not a learner of this cluster; add it first with `batonctl cluster add-node`",
                l.node_id
            )),
        },
        RaftError::Fatal(f) => fatal(&f),
    }
}

/// Maps a failed leadership check (for a linearizable read) to a status.
pub fn check_leader_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => forward_to_leader(&f),
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => Status::unavailable(
            format!("cannot confirm leadership with a majority ({q}); retry"),
        ),
        RaftError::Fatal(f) => fatal(&f),
    }
}

/// A Raft error that means this node can no longer serve.
pub fn fatal(e: &openraft::error::Fatal<NodeId>) -> Status {
    Status::unavailable(format!(
        "this node's Raft has stopped ({e}); use another node"
    ))
}
