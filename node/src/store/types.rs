//! baton's openraft type configuration and the aliases built on it.
//!
//! Declared here, at the bottom of the Raft machinery, because the store
//! implements openraft's storage traits over these types and must not import
//! from [`crate::raft`], which sits above it (it drives the store). `raft`
//! re-exports everything here, so `crate::raft::{TypeConfig, BatonRaft, …}`
//! stay the names the layers above use.

use std::io::Cursor;

use openraft::BasicNode;

use crate::domain::{CommandResult, Proposals};

openraft::declare_raft_types!(
    /// baton's openraft type configuration.
    pub TypeConfig:
        D = Proposals,
        // One result per proposal of the entry, in order.
        R = Vec<CommandResult>,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id in the cluster: a positive integer chosen by the operator.
pub type NodeId = u64;
pub type BatonRaft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
