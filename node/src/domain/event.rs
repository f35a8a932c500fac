//! Events: the changes commands decide, the only input of
//! [`State::apply_event`](super::State::apply_event), and what the watch
//! API streams.

use serde::{Deserialize, Serialize};

use super::load::LoadRules;
use super::stored::StoredEvent;
use super::{GroupConfig, PartitionRange, Session, Tombstone};

/// One change to a group. Every event carries what is needed to replay it.
/// Stored in the history in the form it always had (see [`super::stored`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "StoredEvent", into = "StoredEvent")]
pub struct Event {
    pub group: String,
    pub change: Change,
}

/// What changed in the event's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    GroupCreated {
        config: GroupConfig,
    },
    GroupUpdated {
        config: GroupConfig,
    },
    GroupDeleting,
    GroupDeleted,
    GroupSplit {
        partitions: u32,
    },
    GroupFrozen {
        frozen: bool,
    },
    /// The group balances by load under `rules` from now on, or (`None`)
    /// by count again.
    LoadRulesSet {
        rules: Option<LoadRules>,
    },
    WorkerJoined {
        worker: String,
        session: Session,
    },
    WorkerDraining {
        worker: String,
    },
    WorkerEvicting {
        worker: String,
    },
    WorkerLeft {
        worker: String,
        reason: LeaveReason,
    },
    /// `worker` now holds `partitions` with fencing token `token`.
    Granted {
        worker: String,
        partitions: Vec<PartitionRange>,
        token: u64,
    },
    /// `from`, the holder of `partitions`, must drain and release them (to
    /// `to`). A handoff already in flight keeps its start time.
    Revoking {
        from: String,
        partitions: Vec<PartitionRange>,
        to: Option<String>,
        since_ms: u64,
    },
    /// `partitions` are free.
    Released {
        worker: String,
        partitions: Vec<PartitionRange>,
    },
    /// `partitions` are free but kept for `worker` until `until_ms`.
    Reserved {
        worker: String,
        partitions: Vec<PartitionRange>,
        until_ms: u64,
    },
    /// `owner` held the tombstone's partition when it was put: the worker
    /// the tombstone is delivered to.
    TombstoneAdded {
        key: String,
        tombstone: Tombstone,
        owner: Option<String>,
    },
    TombstonePurged {
        key: String,
    },
    TombstonesAcked {
        worker: String,
        revision: u64,
    },
}

/// Why a worker's session ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    Left,
    Drained,
    Expired,
    /// Its lease ran out after an operator evicted it.
    Evicted,
}

/// What an event is about, for watchers that want some kinds only.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// The group was created, updated, split, frozen, unfrozen or deleted.
    Group,
    /// A worker joined, started draining or left.
    Worker,
    Granted,
    Revoking,
    Released,
    Reserved,
    Tombstone,
    TombstonePurged,
    TombstonesAcked,
}

impl Event {
    pub fn new(group: impl Into<String>, change: Change) -> Self {
        Self {
            group: group.into(),
            change,
        }
    }

    pub fn kind(&self) -> EventKind {
        match &self.change {
            Change::GroupCreated { .. }
            | Change::GroupUpdated { .. }
            | Change::GroupDeleted
            | Change::GroupDeleting
            | Change::GroupSplit { .. }
            | Change::GroupFrozen { .. }
            | Change::LoadRulesSet { .. } => EventKind::Group,
            Change::WorkerJoined { .. }
            | Change::WorkerDraining { .. }
            | Change::WorkerEvicting { .. }
            | Change::WorkerLeft { .. } => EventKind::Worker,
            Change::Granted { .. } => EventKind::Granted,
            Change::Revoking { .. } => EventKind::Revoking,
            Change::Released { .. } => EventKind::Released,
            Change::Reserved { .. } => EventKind::Reserved,
            Change::TombstoneAdded { .. } => EventKind::Tombstone,
            Change::TombstonePurged { .. } => EventKind::TombstonePurged,
            Change::TombstonesAcked { .. } => EventKind::TombstonesAcked,
        }
    }

    /// Whether a watcher for `worker` gets this event: changes to the group,
    /// to the worker's session, to partitions it holds or is being handed, and
    /// tombstones on partitions it holds.
    pub fn concerns(&self, worker: &str) -> bool {
        match &self.change {
            Change::GroupCreated { .. }
            | Change::GroupUpdated { .. }
            | Change::GroupDeleted
            | Change::GroupDeleting
            | Change::GroupSplit { .. }
            | Change::GroupFrozen { .. }
            | Change::LoadRulesSet { .. } => true,
            Change::WorkerJoined { worker: w, .. }
            | Change::WorkerDraining { worker: w }
            | Change::WorkerEvicting { worker: w }
            | Change::WorkerLeft { worker: w, .. }
            | Change::Granted { worker: w, .. }
            | Change::Released { worker: w, .. }
            | Change::Reserved { worker: w, .. }
            | Change::TombstonesAcked { worker: w, .. } => w == worker,
            Change::Revoking { from, to, .. } => from == worker || to.as_deref() == Some(worker),
            Change::TombstoneAdded { owner, .. } => owner.as_deref() == Some(worker),
            Change::TombstonePurged { .. } => false,
        }
    }
}
