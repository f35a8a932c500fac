//! Who may call each method, and where it runs: one row per gRPC method of
//! every service this node serves, enforced once, before the handler, by
//! [`super::gate`].
//!
//! Some rows need a field of the request: the worker a call acts for, or
//! whether a read may be served from this node's state (`serializable`).
//! The gate decodes the request once for those (the `peek` functions
//! below), so it can refuse or forward before anything else happens; the
//! handler then decodes it again as usual.

use baton_proto::v1 as pb;
use prost::Message;

use super::limits;
use crate::raft::network::MAX_RAFT_MESSAGE_BYTES;

/// Who may call a method.
#[derive(Clone, Copy)]
pub enum Who {
    /// Anyone who can reach the node.
    Anyone,
    /// Operators: with an admin token set, the call must carry it.
    Admin,
    /// A worker named in the request: under mutual TLS the caller's
    /// certificate must be valid for that name (unless it is a member or
    /// carries the admin token). `peek` reads the name from the request.
    Worker(fn(&[u8]) -> Option<String>),
    /// A stream whose every message names a worker: the gate decides whom
    /// the caller may act for and hands that to the handler, which checks
    /// each message against it.
    WorkerPerMessage,
    /// Another member of the cluster (Raft traffic).
    Member,
}

/// Where a method runs.
#[derive(Clone, Copy)]
pub enum Runs {
    /// On any node. (`Backup` and `Watch` ask the leader for a
    /// linearizable point themselves, from wherever they are served.)
    Anywhere,
    /// On the leader: any other node forwards the request there once.
    Leader,
    /// On the leader, but the handler forwards it: it does more around the
    /// call where the caller is connected (a tombstone put waits for its
    /// barrier on the node the client called).
    LeaderViaHandler,
    /// On the leader only: a stream is not forwarded; any other node
    /// refuses it with the leader's address.
    LeaderOnly,
    /// A read: linearizable, on the leader (forwarded there), unless the
    /// request sets `serializable`, then from this node's state. `peek`
    /// reads that flag from the request.
    Read(fn(&[u8]) -> Option<bool>),
}

/// One row of the table.
#[derive(Clone, Copy)]
pub struct Policy {
    /// The method's gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    pub who: Who,
    pub runs: Runs,
    /// The largest request the service decodes (`limits`): the gate does
    /// not buffer or forward a larger one, the service refuses it.
    pub limit: usize,
}

/// Reads the worker a request acts for.
macro_rules! worker {
    ($message:ty) => {
        Who::Worker(|bytes| <$message>::decode(bytes).ok().map(|m| m.worker))
    };
}

/// Reads whether a read request is serializable.
macro_rules! read {
    ($message:ty) => {
        Runs::Read(|bytes| <$message>::decode(bytes).ok().map(|m| m.serializable))
    };
}

macro_rules! table {
    ($($service:literal, $limit:expr => [$($method:literal: $who:expr, $runs:expr;)+])+) => {
        &[$($(Policy {
            path: concat!("/baton.v1.", $service, "/", $method),
            who: $who,
            runs: $runs,
            limit: $limit,
        },)+)+]
    };
}

use Runs::{Anywhere, Leader, LeaderOnly, LeaderViaHandler};
use Who::{Admin, Anyone, Member, WorkerPerMessage};

/// Every method this node serves.
pub static POLICIES: &[Policy] = table! {
    "Admin", limits::ADMIN_REQUEST_BYTES => [
        "ClusterStatus": Anyone, Anywhere;
        "AddNode": Admin, Leader;
        "PromoteNode": Admin, Leader;
        "RemoveNode": Admin, Leader;
        "Barrier": Anyone, Leader;
        "Compact": Admin, Leader;
        "CreateGroup": Admin, Leader;
        "GetGroup": Anyone, read!(pb::GetGroupRequest);
        "ListGroups": Anyone, read!(pb::ListGroupsRequest);
        "UpdateGroup": Admin, Leader;
        "DeleteGroup": Admin, Leader;
        "SplitGroup": Admin, Leader;
        "SetFrozen": Admin, Leader;
        "SetLoadRules": Admin, Leader;
        "GetAssignment": Anyone, read!(pb::GetAssignmentRequest);
        "PlanAssignment": Anyone, read!(pb::GetAssignmentRequest);
        "MovePartitions": Admin, Leader;
        "Route": Anyone, read!(pb::RouteRequest);
        "ListWorkers": Anyone, read!(pb::ListWorkersRequest);
        "DrainWorker": Admin, Leader;
        "EvictWorker": Admin, Leader;
        "Backup": Admin, Anywhere;
    ]
    "Worker", limits::WORKER_REQUEST_BYTES => [
        "Join": worker!(pb::JoinRequest), Leader;
        "KeepAlive": WorkerPerMessage, LeaderOnly;
        "Release": worker!(pb::ReleaseRequest), Leader;
        "Leave": worker!(pb::LeaveRequest), Leader;
    ]
    "Tombstones", limits::TOMBSTONES_REQUEST_BYTES => [
        "Put": Anyone, LeaderViaHandler;
        "Check": Anyone, read!(pb::CheckTombstonesRequest);
        "List": Anyone, read!(pb::ListTombstonesRequest);
        "Ack": worker!(pb::AckTombstonesRequest), Leader;
    ]
    "Watch", limits::WATCH_REQUEST_BYTES => [
        "Watch": Anyone, Anywhere;
    ]
    "Raft", MAX_RAFT_MESSAGE_BYTES => [
        "AppendEntries": Member, Anywhere;
        "Vote": Member, Anywhere;
        "InstallSnapshot": Member, Anywhere;
        "ReadIndex": Member, Anywhere;
        "PreVote": Member, Anywhere;
        "Features": Member, Anywhere;
    ]
};

/// The row of the method at `path`, if this node serves it.
pub fn find(path: &str) -> Option<&'static Policy> {
    POLICIES.iter().find(|p| p.path == path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The methods the protocol defines, read from the .proto files.
    fn served() -> BTreeSet<String> {
        let protos = [
            include_str!("../../../proto/baton/v1/admin.proto"),
            include_str!("../../../proto/baton/v1/worker.proto"),
            include_str!("../../../proto/baton/v1/tombstones.proto"),
            include_str!("../../../proto/baton/v1/watch.proto"),
            include_str!("../../../proto/baton/v1/raft.proto"),
        ];
        let mut paths = BTreeSet::new();
        for proto in protos {
            let mut service = None;
            for line in proto.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap_or_default().trim();
                    let service = service.expect("an rpc inside a service");
                    paths.insert(format!("/baton.v1.{service}/{method}"));
                }
            }
        }
        paths
    }

    #[test]
    fn every_served_method_has_exactly_one_row() {
        let table: Vec<&str> = POLICIES.iter().map(|p| p.path).collect();
        let rows: BTreeSet<String> = table.iter().map(|p| p.to_string()).collect();
        assert_eq!(rows.len(), table.len(), "a method has two rows");
        assert_eq!(rows, served(), "the table and the protocol differ");
    }

    #[test]
    fn peeks_read_the_fields_they_name() {
        let join = pb::JoinRequest {
            group: "g".into(),
            worker: "w-1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let Some(Policy {
            who: Who::Worker(peek),
            ..
        }) = find("/baton.v1.Worker/Join")
        else {
            panic!("Join acts for a worker");
        };
        assert_eq!(peek(&join).as_deref(), Some("w-1"));
        for (path, bytes) in [
            (
                "/baton.v1.Admin/GetGroup",
                pb::GetGroupRequest {
                    group: "g".into(),
                    serializable: true,
                }
                .encode_to_vec(),
            ),
            (
                "/baton.v1.Tombstones/Check",
                pb::CheckTombstonesRequest {
                    group: "g".into(),
                    keys: vec!["k".into()],
                    serializable: true,
                }
                .encode_to_vec(),
            ),
        ] {
            let Some(Policy {
                runs: Runs::Read(peek),
                ..
            }) = find(path)
            else {
                panic!("{path} is a read");
            };
            assert_eq!(peek(&bytes), Some(true), "{path}");
            assert_eq!(peek(&[]), Some(false), "{path}: the default");
        }
        assert!(find("/baton.v1.Admin/Nope").is_none());
    }
}
