//! The assignment domain: the replicated state and the commands that change it.
//!
//! Pure Rust: no async, no I/O, no clock. Every replica applies the same commands
//! in the same order and must reach the same state, so nothing here depends on
//! anything but its inputs; commands carry the leader's clock where time matters.
//!
//! Event-sourced: a command is validated against the state and turned into
//! [`Event`]s, and [`State::apply_event`] is the *only* code that changes the
//! state. The watch API streams exactly these events, and replaying them over a
//! snapshot reproduces the state at every later revision.

pub mod assignment;
mod error;
pub mod hash;
pub mod rebalancer;
mod tombstones;
pub mod validate;

use std::collections::BTreeMap;

pub use assignment::{Assignment, PartitionRange, Reservation, Revoking, Slot};
pub use error::{quoted, DomainError, ErrorKind};
pub use hash::KeyHash;
pub use rebalancer::{Move, Plan};
use serde::{Deserialize, Serialize};
pub use tombstones::{Tombstones, MAX_PURGE};

use self::error::invalid;

/// A group's settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Partition count P, 1..=65,536.
    pub partitions: u32,
    pub key_hash: KeyHash,
    /// How long an owner has to release a revoked partition before its
    /// session is ended.
    pub handoff_timeout_ms: u64,
    /// Handoffs in flight at once, at most.
    pub max_in_flight: u32,
    /// Lease TTL for workers that do not ask for one.
    pub default_ttl_ms: u64,
    /// How long an expired worker's partitions stay reserved for it.
    pub rejoin_grace_ms: u64,
    /// How long a tombstone is kept when its put names no TTL.
    pub tombstone_ttl_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            key_hash: KeyHash::Xxh3,
            handoff_timeout_ms: 30_000,
            max_in_flight: validate::MAX_PARTITIONS,
            default_ttl_ms: 10_000,
            rejoin_grace_ms: 0,
            tombstone_ttl_ms: 7 * 24 * 3_600_000,
        }
    }
}

impl GroupConfig {
    pub fn validate(&self) -> Result<(), DomainError> {
        validate::partitions(self.partitions)?;
        validate::range_ms(
            "handoff timeout",
            self.handoff_timeout_ms,
            1_000,
            validate::MAX_HANDOFF_TIMEOUT_MS,
        )?;
        if self.max_in_flight == 0 || self.max_in_flight > validate::MAX_PARTITIONS {
            return Err(invalid("max in flight", self.max_in_flight, "1 to 65536"));
        }
        validate::ttl_ms("default lease TTL", self.default_ttl_ms)?;
        validate::range_ms(
            "rejoin grace",
            self.rejoin_grace_ms,
            0,
            validate::MAX_REJOIN_GRACE_MS,
        )?;
        validate::range_ms(
            "tombstone TTL",
            self.tombstone_ttl_ms,
            1_000,
            validate::MAX_TOMBSTONE_TTL_MS,
        )?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Active,
    /// Leaving gracefully: its partitions are handed off, then the session closes.
    Draining,
    /// An operator evicted it: the leader no longer renews its lease, which
    /// runs out within one TTL. A committed fact, so a new leader keeps it.
    Evicting,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The revision of the join: identifies this session of the worker id.
    pub id: u64,
    pub ttl_ms: u64,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub state: SessionState,
    /// The worker has handled every tombstone on its partitions up to this
    /// revision (what tombstone barriers wait for).
    pub acked: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub partition: u32,
    /// The key's hash when the partition came from it (kept so a split can
    /// recompute the partition); `None` for an explicit partition.
    pub hash: Option<u64>,
    pub revision: u64,
    pub expires_at_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub config: GroupConfig,
    /// Revision of the last change to the config (compare-and-set updates).
    pub config_revision: u64,
    pub frozen: bool,
    /// Deleted with live sessions (`DeleteGroup` with force): nothing is
    /// granted, no worker joins, and the group goes with its last session.
    pub deleting: bool,
    pub sessions: BTreeMap<String, Session>,
    pub assignment: Assignment,
    pub tombstones: Tombstones,
}

impl Group {
    fn new(config: GroupConfig, revision: u64) -> Self {
        Self {
            assignment: Assignment::new(config.partitions),
            config,
            config_revision: revision,
            frozen: false,
            deleting: false,
            sessions: BTreeMap::new(),
            tombstones: Tombstones::default(),
        }
    }

    /// Whether a handoff may complete to `worker`: an active session, in a
    /// group that is not being deleted.
    fn may_receive(&self, worker: &str) -> bool {
        !self.deleting
            && self
                .sessions
                .get(worker)
                .is_some_and(|s| s.state == SessionState::Active)
    }

    /// Partitions held by `worker` (owned, moving or not), as ranges.
    pub fn held_by(&self, worker: &str) -> Vec<PartitionRange> {
        self.assignment.find(|s| s.owner.as_deref() == Some(worker))
    }

    /// How the partitions stand, counted in one pass over the assignment.
    pub fn partition_counts(&self) -> PartitionCounts<'_> {
        let mut counts = PartitionCounts {
            held: self.sessions.keys().map(|w| (w.as_str(), 0)).collect(),
            handing_off: 0,
            unassigned: 0,
        };
        for (range, slot) in self.assignment.runs() {
            let n = u64::from(range.len());
            match &slot.owner {
                Some(owner) => *counts.held.entry(owner.as_str()).or_default() += n,
                None => counts.unassigned += n,
            }
            if slot.revoking.is_some() {
                counts.handing_off += n;
            }
        }
        counts
    }

    fn check_partitions(&self, group: &str, ranges: &[PartitionRange]) -> Result<(), DomainError> {
        let partitions = self.config.partitions;
        for r in ranges {
            if r.is_empty() || r.end > partitions {
                return Err(DomainError::PartitionOutOfRange {
                    group: group.to_string(),
                    partition: if r.is_empty() { r.start } else { r.end - 1 },
                    partitions,
                });
            }
        }
        Ok(())
    }
}

/// A group's partitions, counted (see [`Group::partition_counts`]).
#[derive(Debug, PartialEq, Eq)]
pub struct PartitionCounts<'a> {
    /// Per worker with a session (0 when it holds none), moving or not.
    pub held: BTreeMap<&'a str, u64>,
    /// Being handed off: the owner has been asked to release them.
    pub handing_off: u64,
    pub unassigned: u64,
}

/// How a tombstone names its partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Locator {
    /// Hash the key with the group's key hash.
    Key,
    /// An explicit 64-bit hash key.
    Hash(u64),
    /// An explicit partition.
    Partition(u32),
}

/// A change proposed through Raft.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Changes nothing but the revision; proves the cluster commits writes.
    Barrier,
    CreateGroup {
        group: String,
        config: GroupConfig,
    },
    /// Compare-and-set: applies only if the group's config revision is `expected_revision`.
    /// The partition count changes only through `SplitGroup`.
    UpdateGroup {
        group: String,
        config: GroupConfig,
        expected_revision: u64,
    },
    /// Refused while the group has sessions, unless `force`: then the
    /// group stops granting and renewing leases, and is deleted once the
    /// last session has left or expired, so no worker of the old group can
    /// still hold a partition when a group of the same name is created.
    DeleteGroup {
        group: String,
        force: bool,
    },
    /// P → 2P: each partition's two children keep its owner, with new tokens.
    SplitGroup {
        group: String,
        expected_revision: u64,
    },
    SetFrozen {
        group: String,
        frozen: bool,
    },
    Join {
        group: String,
        worker: String,
        ttl_ms: Option<u64>,
        weight: u32,
        labels: BTreeMap<String, String>,
        now_ms: u64,
    },
    /// Ends the worker's session (`drain`: hand everything off first). A
    /// worker names its own session, so a stale process cannot end a newer
    /// session under the same id; an operator's drain names none.
    Leave {
        group: String,
        worker: String,
        session: Option<u64>,
        drain: bool,
    },
    /// Operator eviction: the session's lease is no longer renewed, so it
    /// expires within its TTL, and nothing new is granted to it meanwhile.
    Evict {
        group: String,
        worker: String,
    },
    /// Proposed by the leader once a session's lease has passed.
    ExpireSession {
        group: String,
        worker: String,
        session: u64,
        now_ms: u64,
    },
    /// The owner gives up `partitions`, all held with fencing token `token`
    /// in session `session`.
    Release {
        group: String,
        worker: String,
        session: u64,
        partitions: Vec<PartitionRange>,
        token: u64,
    },
    /// Runs the rebalancer on the group's state and carries out its plan.
    Rebalance {
        group: String,
        now_ms: u64,
    },
    /// Operator move: hand `partitions` to `to` (revoking them where held).
    Move {
        group: String,
        partitions: Vec<PartitionRange>,
        to: String,
        now_ms: u64,
    },
    PutTombstone {
        group: String,
        key: String,
        locator: Locator,
        ttl_ms: Option<u64>,
        now_ms: u64,
    },
    /// Removes up to `limit` (1 to [`MAX_PURGE`]) of the group's tombstones
    /// that have expired at `now_ms`, earliest expiry first. (`limit` was
    /// added before anything proposed this command, so no stored log holds
    /// the earlier form.)
    PurgeTombstones {
        group: String,
        now_ms: u64,
        limit: u32,
    },
    /// The worker has handled every tombstone on its partitions up to `revision`.
    AckTombstones {
        group: String,
        worker: String,
        session: u64,
        revision: u64,
    },
    /// Drops the event history up to and including `revision`, on every
    /// replica at the same point of the log.
    Compact {
        revision: u64,
    },
    /// A put under which an expired tombstone is gone: the put is a new
    /// deletion, with a new revision, delivered to the owner again. What the
    /// API proposes; `PutTombstone` keeps the rule it was written under
    /// (the first put stands, expired or not), because a rolling upgrade
    /// applies entries an older leader wrote with this code on some nodes
    /// and the old code on others: a rule may change only under a new
    /// command, which a leader proposes once it runs the new code, and
    /// leaders are upgraded last. (Appended, so older entries decode as
    /// they were written.)
    PutTombstoneV2 {
        group: String,
        key: String,
        locator: Locator,
        ttl_ms: Option<u64>,
        now_ms: u64,
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

/// One change to the state. Every event carries what is needed to replay it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Event {
    GroupCreated {
        group: String,
        config: GroupConfig,
    },
    GroupUpdated {
        group: String,
        config: GroupConfig,
    },
    GroupDeleting {
        group: String,
    },
    GroupDeleted {
        group: String,
    },
    GroupSplit {
        group: String,
        partitions: u32,
    },
    GroupFrozen {
        group: String,
        frozen: bool,
    },
    WorkerJoined {
        group: String,
        worker: String,
        session: Session,
    },
    WorkerDraining {
        group: String,
        worker: String,
    },
    WorkerEvicting {
        group: String,
        worker: String,
    },
    WorkerLeft {
        group: String,
        worker: String,
        reason: LeaveReason,
    },
    /// `worker` now holds `partitions` with fencing token `token`.
    Granted {
        group: String,
        worker: String,
        partitions: Vec<PartitionRange>,
        token: u64,
    },
    /// `from`, the holder of `partitions`, must drain and release them (to
    /// `to`). A handoff already in flight keeps its start time.
    Revoking {
        group: String,
        from: String,
        partitions: Vec<PartitionRange>,
        to: Option<String>,
        since_ms: u64,
    },
    /// `partitions` are free.
    Released {
        group: String,
        worker: String,
        partitions: Vec<PartitionRange>,
    },
    /// `partitions` are free but kept for `worker` until `until_ms`.
    Reserved {
        group: String,
        worker: String,
        partitions: Vec<PartitionRange>,
        until_ms: u64,
    },
    /// `owner` held the tombstone's partition when it was put: the worker
    /// the tombstone is delivered to.
    TombstoneAdded {
        group: String,
        key: String,
        tombstone: Tombstone,
        owner: Option<String>,
    },
    TombstonePurged {
        group: String,
        key: String,
    },
    TombstonesAcked {
        group: String,
        worker: String,
        revision: u64,
    },
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
    pub fn group(&self) -> &str {
        match self {
            Event::GroupCreated { group, .. }
            | Event::GroupUpdated { group, .. }
            | Event::GroupDeleted { group }
            | Event::GroupDeleting { group }
            | Event::GroupSplit { group, .. }
            | Event::GroupFrozen { group, .. }
            | Event::WorkerJoined { group, .. }
            | Event::WorkerDraining { group, .. }
            | Event::WorkerEvicting { group, .. }
            | Event::WorkerLeft { group, .. }
            | Event::Granted { group, .. }
            | Event::Revoking { group, .. }
            | Event::Released { group, .. }
            | Event::Reserved { group, .. }
            | Event::TombstoneAdded { group, .. }
            | Event::TombstonePurged { group, .. }
            | Event::TombstonesAcked { group, .. } => group,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::GroupCreated { .. }
            | Event::GroupUpdated { .. }
            | Event::GroupDeleted { .. }
            | Event::GroupDeleting { .. }
            | Event::GroupSplit { .. }
            | Event::GroupFrozen { .. } => EventKind::Group,
            Event::WorkerJoined { .. }
            | Event::WorkerDraining { .. }
            | Event::WorkerEvicting { .. }
            | Event::WorkerLeft { .. } => EventKind::Worker,
            Event::Granted { .. } => EventKind::Granted,
            Event::Revoking { .. } => EventKind::Revoking,
            Event::Released { .. } => EventKind::Released,
            Event::Reserved { .. } => EventKind::Reserved,
            Event::TombstoneAdded { .. } => EventKind::Tombstone,
            Event::TombstonePurged { .. } => EventKind::TombstonePurged,
            Event::TombstonesAcked { .. } => EventKind::TombstonesAcked,
        }
    }

    /// Whether a watcher for `worker` gets this event: changes to the group,
    /// to the worker's session, to partitions it holds or is being handed, and
    /// tombstones on partitions it holds.
    pub fn concerns(&self, worker: &str) -> bool {
        match self {
            Event::GroupCreated { .. }
            | Event::GroupUpdated { .. }
            | Event::GroupDeleted { .. }
            | Event::GroupDeleting { .. }
            | Event::GroupSplit { .. }
            | Event::GroupFrozen { .. } => true,
            Event::WorkerJoined { worker: w, .. }
            | Event::WorkerDraining { worker: w, .. }
            | Event::WorkerEvicting { worker: w, .. }
            | Event::WorkerLeft { worker: w, .. }
            | Event::Granted { worker: w, .. }
            | Event::Released { worker: w, .. }
            | Event::Reserved { worker: w, .. }
            | Event::TombstonesAcked { worker: w, .. } => w == worker,
            Event::Revoking { from, to, .. } => from == worker || to.as_deref() == Some(worker),
            Event::TombstoneAdded { owner, .. } => owner.as_deref() == Some(worker),
            Event::TombstonePurged { .. } => false,
        }
    }
}

/// What a command returns to its proposer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// The group's config revision after a create, update or split.
    Group {
        config_revision: u64,
    },
    Joined {
        session: u64,
        granted: Vec<PartitionRange>,
    },
    Tombstone {
        revision: u64,
        partition: u32,
    },
    Purged {
        count: u64,
    },
    Rebalanced {
        moves: u64,
    },
    /// The history is compacted up to and including `revision`.
    Compacted {
        revision: u64,
    },
}

/// What applying one log entry produced, returned to the proposer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    /// The revision at which the entry was applied.
    pub revision: u64,
    /// The command's reply, or why it changed nothing. A refused command is
    /// still a committed log entry; it only bumps the revision.
    pub outcome: Result<Reply, DomainError>,
    /// The events it caused, in order, all at `revision`.
    pub events: Vec<Event>,
}

impl Default for CommandResult {
    fn default() -> Self {
        Self {
            revision: 0,
            outcome: Ok(Reply::Done),
            events: Vec::new(),
        }
    }
}

/// The replicated state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Cluster-wide counter bumped by every applied log entry: the Raft log index
    /// of the last applied entry. Fencing tokens are revisions.
    pub revision: u64,
    /// The event history is kept for revisions after this one only.
    pub compacted: u64,
    pub groups: BTreeMap<String, Group>,
}

impl State {
    /// Sessions and tombstones over every group, plus one per group: how
    /// much a copy of the state costs, roughly.
    pub fn entries(&self) -> u64 {
        self.groups
            .values()
            .map(|g| 1 + g.sessions.len() as u64 + g.tombstones.len() as u64)
            .sum()
    }

    /// Applies the log entry at `revision`. `command` is `None` for entries that
    /// carry no command (Raft's blank and membership entries); they still bump
    /// the revision so that revisions and log indexes stay the same number.
    pub fn apply(&mut self, revision: u64, command: Option<&Command>) -> CommandResult {
        self.revision = revision;
        let (outcome, events) = match command {
            None | Some(Command::Barrier) => (Ok(Reply::Done), Vec::new()),
            // Compaction is about the history, not the groups: no event.
            Some(Command::Compact { revision: up_to }) => {
                if let Err(e) = compactable(*up_to, revision) {
                    (Err(e), Vec::new())
                } else {
                    self.compacted = self.compacted.max(*up_to);
                    let reply = Reply::Compacted {
                        revision: self.compacted,
                    };
                    (Ok(reply), Vec::new())
                }
            }
            Some(command) => match self.decide(revision, command) {
                Ok((reply, mut events)) => {
                    self.close_if_last_left(&mut events);
                    (Ok(reply), events)
                }
                Err(e) => (Err(e), Vec::new()),
            },
        };
        for event in &events {
            self.apply_event(revision, event);
        }
        CommandResult {
            revision,
            outcome,
            events,
        }
    }

    /// What `command` would do if it were proposed now: the error it would
    /// be refused with, `Some(reply)` when it would change nothing (the
    /// caller answers without writing), or `None` when it must be written.
    /// The leader asks before proposing, so a refused or empty request
    /// costs no log entry, no memory and no revision; apply still decides,
    /// as the authority, since the state can change in between.
    pub fn check(&self, command: &Command) -> Result<Option<Reply>, DomainError> {
        match command {
            // Written for their own sake: proving the cluster commits, or
            // dropping history at the same point of the log everywhere.
            Command::Barrier => Ok(None),
            Command::Compact { revision } => {
                compactable(*revision, self.revision + 1)?;
                Ok(None)
            }
            // An update that sets what is already set is answered with the
            // config revision it leaves, so other writers' compare-and-set
            // still holds. Only here, not in apply: entries already in a log
            // must apply as they did when they were written (see
            // `PutTombstoneV2`), and a written update that meets an equal
            // config has lost its compare-and-set to another update anyway.
            Command::UpdateGroup { group, config, .. } => {
                self.decide(self.revision + 1, command)?;
                let g = self.group(group)?;
                Ok((*config == g.config).then_some(Reply::Group {
                    config_revision: g.config_revision,
                }))
            }
            command => {
                let (reply, events) = self.decide(self.revision + 1, command)?;
                Ok(events.is_empty().then_some(reply))
            }
        }
    }

    /// A group being deleted goes with its last session: appends
    /// `GroupDeleted` when `events` end every session left in it.
    fn close_if_last_left(&self, events: &mut Vec<Event>) {
        let Some(Event::WorkerLeft { group, .. }) = events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::WorkerLeft { .. }))
        else {
            return;
        };
        let Some(g) = self.groups.get(group).filter(|g| g.deleting) else {
            return;
        };
        let leaving = events
            .iter()
            .filter(|e| matches!(e, Event::WorkerLeft { group: lg, .. } if lg == group))
            .count();
        if leaving >= g.sessions.len() {
            events.push(Event::GroupDeleted {
                group: group.clone(),
            });
        }
    }

    /// The group named `name`; a name no group can have is refused as
    /// invalid before any lookup.
    pub fn group(&self, name: &str) -> Result<&Group, DomainError> {
        validate::group_name(name)?;
        self.groups
            .get(name)
            .ok_or_else(|| DomainError::GroupNotFound(name.to_string()))
    }

    fn session<'a>(
        &'a self,
        group: &str,
        worker: &str,
    ) -> Result<(&'a Group, &'a Session), DomainError> {
        let g = self.group(group)?;
        validate::worker_id(worker)?;
        let s = g
            .sessions
            .get(worker)
            .ok_or_else(|| DomainError::WorkerNotFound {
                group: group.to_string(),
                worker: worker.to_string(),
            })?;
        Ok((g, s))
    }

    /// Validates `command` against the state and returns the events it causes.
    /// Changes nothing.
    fn decide(&self, rev: u64, command: &Command) -> Result<(Reply, Vec<Event>), DomainError> {
        match command {
            Command::Barrier => Ok((Reply::Done, Vec::new())),
            Command::CreateGroup { group, config } => {
                validate::group_name(group)?;
                config.validate()?;
                if let Some(g) = self.groups.get(group) {
                    if g.deleting {
                        let ttl = g.sessions.values().map(|s| s.ttl_ms).max().unwrap_or(0);
                        return Err(DomainError::Precondition(format!(
                            "group {group:?} is being deleted: {} session(s) of it still hold leases ({}), which are no longer renewed and run out within {ttl} ms; create it again once it is gone",
                            g.sessions.len(),
                            names(g.sessions.keys()),
                        )));
                    }
                    return Err(DomainError::GroupExists(group.clone()));
                }
                let events = vec![Event::GroupCreated {
                    group: group.clone(),
                    config: config.clone(),
                }];
                Ok((
                    Reply::Group {
                        config_revision: rev,
                    },
                    events,
                ))
            }
            Command::UpdateGroup {
                group,
                config,
                expected_revision,
            } => {
                let g = self.group(group)?;
                check_revision(group, g, *expected_revision)?;
                config.validate()?;
                if config.partitions != g.config.partitions {
                    return Err(invalid(
                        "partition count",
                        config.partitions,
                        format!(
                            "stays {} in an update; split the group to double it",
                            g.config.partitions
                        ),
                    ));
                }
                let events = vec![Event::GroupUpdated {
                    group: group.clone(),
                    config: config.clone(),
                }];
                Ok((
                    Reply::Group {
                        config_revision: rev,
                    },
                    events,
                ))
            }
            Command::DeleteGroup { group, force } => {
                let g = self.group(group)?;
                let deleted = Event::GroupDeleted {
                    group: group.clone(),
                };
                if g.sessions.is_empty() {
                    return Ok((Reply::Done, vec![deleted]));
                }
                if g.deleting {
                    return Ok((Reply::Done, Vec::new()));
                }
                if !*force {
                    return Err(DomainError::Precondition(format!(
                        "group {group:?} has {} live session(s) ({}); drain them first, or delete with force: the group then stops granting and renewing leases, and goes once the last session has left or expired",
                        g.sessions.len(),
                        names(g.sessions.keys()),
                    )));
                }
                // Handoffs in flight complete to nobody: a release frees.
                let mut events = vec![Event::GroupDeleting {
                    group: group.clone(),
                }];
                for worker in g.sessions.keys() {
                    events.extend(orphan_handoffs_to(group, g, worker));
                }
                Ok((Reply::Done, events))
            }
            Command::SplitGroup {
                group,
                expected_revision,
            } => {
                let g = self.group(group)?;
                check_revision(group, g, *expected_revision)?;
                if g.deleting {
                    return Err(DomainError::Precondition(format!(
                        "group {group:?} is being deleted; it cannot be split"
                    )));
                }
                let doubled = g.config.partitions * 2;
                validate::partitions(doubled).map_err(|_| {
                    invalid(
                        "partition count",
                        doubled,
                        format!("at most {} after a split", validate::MAX_PARTITIONS),
                    )
                })?;
                let events = vec![Event::GroupSplit {
                    group: group.clone(),
                    partitions: doubled,
                }];
                Ok((
                    Reply::Group {
                        config_revision: rev,
                    },
                    events,
                ))
            }
            Command::SetFrozen { group, frozen } => {
                let g = self.group(group)?;
                let events = if g.frozen == *frozen {
                    Vec::new()
                } else {
                    vec![Event::GroupFrozen {
                        group: group.clone(),
                        frozen: *frozen,
                    }]
                };
                Ok((Reply::Done, events))
            }
            Command::Join {
                group,
                worker,
                ttl_ms,
                weight,
                labels,
                now_ms,
            } => {
                validate::worker_id(worker)?;
                validate::weight(*weight)?;
                validate::labels(labels)?;
                let g = self.group(group)?;
                if g.deleting {
                    return Err(DomainError::Precondition(format!(
                        "group {group:?} is being deleted; join a group that is not"
                    )));
                }
                let ttl = ttl_ms.unwrap_or(g.config.default_ttl_ms);
                validate::ttl_ms("lease TTL", ttl)?;
                if let Some(older) = g.sessions.get(worker) {
                    return Err(DomainError::WorkerExists {
                        group: group.clone(),
                        worker: worker.clone(),
                        session: older.id,
                    });
                }
                let session = Session {
                    id: rev,
                    ttl_ms: ttl,
                    weight: *weight,
                    labels: labels.clone(),
                    state: SessionState::Active,
                    acked: 0,
                };
                let mut events = vec![Event::WorkerJoined {
                    group: group.clone(),
                    worker: worker.clone(),
                    session,
                }];
                // Restart grace: what was kept for this worker comes back, with new tokens.
                let kept = g.assignment.find(|s| {
                    s.owner.is_none()
                        && s.reserved
                            .as_ref()
                            .is_some_and(|r| r.worker == *worker && r.until_ms > *now_ms)
                });
                if !kept.is_empty() {
                    events.push(Event::Granted {
                        group: group.clone(),
                        worker: worker.clone(),
                        partitions: kept.clone(),
                        token: rev,
                    });
                }
                Ok((
                    Reply::Joined {
                        session: rev,
                        granted: kept,
                    },
                    events,
                ))
            }
            Command::Leave {
                group,
                worker,
                session,
                drain,
            } => {
                let (g, s) = self.session(group, worker)?;
                if let Some(session) = session {
                    same_session(group, worker, s, *session, "nothing ended")?;
                }
                let mut events = Vec::new();
                let held = g.held_by(worker);
                // In a group being deleted nothing is revoked any more, so a
                // drain would wait out the lease: it leaves at once instead.
                if *drain && !held.is_empty() && !g.deleting {
                    // An evicted worker stays evicting: its lease runs out anyway.
                    if s.state == SessionState::Active {
                        events.push(Event::WorkerDraining {
                            group: group.clone(),
                            worker: worker.clone(),
                        });
                        events.extend(orphan_handoffs_to(group, g, worker));
                    }
                    return Ok((Reply::Done, events));
                }
                events.extend(hand_over(group, g, worker, rev, None));
                events.extend(orphan_handoffs_to(group, g, worker));
                let reason = if *drain {
                    LeaveReason::Drained
                } else {
                    LeaveReason::Left
                };
                events.push(Event::WorkerLeft {
                    group: group.clone(),
                    worker: worker.clone(),
                    reason,
                });
                Ok((Reply::Done, events))
            }
            Command::Evict { group, worker } => {
                let (g, s) = self.session(group, worker)?;
                if s.state == SessionState::Evicting {
                    return Ok((Reply::Done, Vec::new()));
                }
                let mut events = vec![Event::WorkerEvicting {
                    group: group.clone(),
                    worker: worker.clone(),
                }];
                events.extend(orphan_handoffs_to(group, g, worker));
                Ok((Reply::Done, events))
            }
            Command::ExpireSession {
                group,
                worker,
                session,
                now_ms,
            } => {
                let (g, s) = self.session(group, worker)?;
                same_session(group, worker, s, *session, "nothing expired")?;
                let reason = if s.state == SessionState::Evicting {
                    LeaveReason::Evicted
                } else {
                    LeaveReason::Expired
                };
                // Restart grace keeps partitions for a worker that comes back;
                // an evicted one is not to have them back.
                let grace = (g.config.rejoin_grace_ms > 0 && reason != LeaveReason::Evicted)
                    .then(|| now_ms.saturating_add(g.config.rejoin_grace_ms));
                let mut events = hand_over(group, g, worker, rev, grace);
                events.extend(orphan_handoffs_to(group, g, worker));
                events.push(Event::WorkerLeft {
                    group: group.clone(),
                    worker: worker.clone(),
                    reason,
                });
                Ok((Reply::Done, events))
            }
            Command::Release {
                group,
                worker,
                session,
                partitions,
                token,
            } => {
                let (g, s) = self.session(group, worker)?;
                same_session(group, worker, s, *session, "nothing released")?;
                g.check_partitions(group, partitions)?;
                let wanted = assignment::normalized(partitions.clone());
                let pieces = g.assignment.runs_within(&wanted);
                let mut by_recipient: BTreeMap<String, Vec<PartitionRange>> = BTreeMap::new();
                for (range, slot) in &pieces {
                    if slot.owner.as_deref() != Some(worker.as_str()) || slot.token != *token {
                        let detail = match &slot.owner {
                            Some(o) => format!(" (held by {o:?} with token {})", slot.token),
                            None => " (it is free)".to_string(),
                        };
                        return Err(DomainError::StaleRelease {
                            group: group.clone(),
                            worker: worker.clone(),
                            partition: range.start,
                            token: *token,
                            detail,
                        });
                    }
                    let recipient = slot
                        .revoking
                        .as_ref()
                        .and_then(|rv| rv.to.as_ref())
                        .filter(|to| g.may_receive(to));
                    if let Some(to) = recipient {
                        by_recipient.entry(to.clone()).or_default().push(*range);
                    }
                }
                // A draining worker that has given up everything has left.
                // Everything released was held, so it holds more only if
                // it held more than it released.
                let held: u64 = g.held_by(worker).iter().map(|r| u64::from(r.len())).sum();
                let released: u64 = wanted.iter().map(|r| u64::from(r.len())).sum();
                let mut events = vec![Event::Released {
                    group: group.clone(),
                    worker: worker.clone(),
                    partitions: wanted,
                }];
                for (to, ranges) in by_recipient {
                    events.push(Event::Granted {
                        group: group.clone(),
                        worker: to,
                        partitions: assignment::normalized(ranges),
                        token: rev,
                    });
                }
                if s.state == SessionState::Draining && held == released {
                    events.push(Event::WorkerLeft {
                        group: group.clone(),
                        worker: worker.clone(),
                        reason: LeaveReason::Drained,
                    });
                }
                Ok((Reply::Done, events))
            }
            Command::Rebalance { group, now_ms } => {
                let g = self.group(group)?;
                let plan = rebalancer::plan(g, *now_ms);
                let moves = plan.moves.len() as u64;
                Ok((
                    Reply::Rebalanced { moves },
                    plan_events(group, &plan, rev, *now_ms),
                ))
            }
            Command::Move {
                group,
                partitions,
                to,
                now_ms,
            } => {
                let (g, s) = self.session(group, to)?;
                if g.deleting {
                    return Err(DomainError::Precondition(format!(
                        "group {group:?} is being deleted; nothing is granted in it"
                    )));
                }
                if s.state != SessionState::Active {
                    let state = if s.state == SessionState::Draining {
                        "draining"
                    } else {
                        "being evicted"
                    };
                    return Err(DomainError::Precondition(format!(
                        "worker {to:?} is {state}; move partitions to an active worker"
                    )));
                }
                g.check_partitions(group, partitions)?;
                let wanted = assignment::normalized(partitions.clone());
                let mut grant: Vec<PartitionRange> = Vec::new();
                let mut revoke: BTreeMap<String, Vec<PartitionRange>> = BTreeMap::new();
                for (range, slot) in g.assignment.runs_within(&wanted) {
                    match &slot.owner {
                        None => grant.push(range),
                        Some(o) if o == to && slot.revoking.is_none() => {}
                        Some(o) => revoke.entry(o.clone()).or_default().push(range),
                    }
                }
                let mut moves = Vec::new();
                if !grant.is_empty() {
                    moves.push(Move::Grant {
                        to: to.clone(),
                        partitions: assignment::normalized(grant),
                    });
                }
                for (from, ranges) in revoke {
                    moves.push(Move::Revoke {
                        from,
                        to: Some(to.clone()),
                        partitions: assignment::normalized(ranges),
                    });
                }
                let events = plan_events(group, &Plan { moves }, rev, *now_ms);
                Ok((Reply::Done, events))
            }
            Command::PutTombstone {
                group,
                key,
                locator,
                ttl_ms,
                now_ms,
            } => self.put_tombstone(rev, group, key, locator, *ttl_ms, *now_ms, false),
            Command::PutTombstoneV2 {
                group,
                key,
                locator,
                ttl_ms,
                now_ms,
            } => self.put_tombstone(rev, group, key, locator, *ttl_ms, *now_ms, true),
            Command::PurgeTombstones {
                group,
                now_ms,
                limit,
            } => {
                let g = self.group(group)?;
                if !(1..=MAX_PURGE).contains(limit) {
                    return Err(invalid("purge limit", limit, format!("1 to {MAX_PURGE}")));
                }
                let events: Vec<Event> = g
                    .tombstones
                    .expired(*now_ms)
                    .take(*limit as usize)
                    .map(|key| Event::TombstonePurged {
                        group: group.clone(),
                        key: key.to_string(),
                    })
                    .collect();
                Ok((
                    Reply::Purged {
                        count: events.len() as u64,
                    },
                    events,
                ))
            }
            Command::AckTombstones {
                group,
                worker,
                session,
                revision,
            } => {
                let (_, s) = self.session(group, worker)?;
                same_session(group, worker, s, *session, "nothing acknowledged")?;
                if *revision >= rev {
                    return Err(invalid(
                        "acknowledged revision",
                        revision,
                        format!("below the current revision {rev}"),
                    ));
                }
                let events = if *revision > s.acked {
                    vec![Event::TombstonesAcked {
                        group: group.clone(),
                        worker: worker.clone(),
                        revision: *revision,
                    }]
                } else {
                    Vec::new()
                };
                Ok((Reply::Done, events))
            }
            Command::Compact { .. } => Ok((Reply::Done, Vec::new())),
        }
    }

    /// `PutTombstone` and `PutTombstoneV2`: the latter takes an expired
    /// tombstone for gone.
    #[allow(clippy::too_many_arguments)]
    fn put_tombstone(
        &self,
        rev: u64,
        group: &str,
        key: &str,
        locator: &Locator,
        ttl_ms: Option<u64>,
        now_ms: u64,
        expired_is_gone: bool,
    ) -> Result<(Reply, Vec<Event>), DomainError> {
        validate::key(key)?;
        let g = self.group(group)?;
        let existing = if expired_is_gone {
            g.tombstones.live(key, now_ms)
        } else {
            g.tombstones.get(key)
        };
        if let Some(existing) = existing {
            // Idempotent: the first put stands (until it expires,
            // under `PutTombstoneV2`; a put after that is a new
            // deletion, delivered anew).
            let reply = Reply::Tombstone {
                revision: existing.revision,
                partition: existing.partition,
            };
            return Ok((reply, Vec::new()));
        }
        let ttl = ttl_ms.unwrap_or(g.config.tombstone_ttl_ms);
        validate::range_ms("tombstone TTL", ttl, 1_000, validate::MAX_TOMBSTONE_TTL_MS)?;
        let partitions = g.config.partitions;
        let (partition, hash) = match locator {
            Locator::Key => {
                let h = g.config.key_hash.hash(key.as_bytes());
                (hash::partition_of(h, partitions), Some(h))
            }
            Locator::Hash(h) => (hash::partition_of(*h, partitions), Some(*h)),
            Locator::Partition(p) => {
                g.check_partitions(group, &[PartitionRange::one(*p)])?;
                (*p, None)
            }
        };
        let tombstone = Tombstone {
            partition,
            hash,
            revision: rev,
            expires_at_ms: now_ms.saturating_add(ttl),
        };
        let events = vec![Event::TombstoneAdded {
            group: group.to_string(),
            key: key.to_string(),
            tombstone,
            owner: g.assignment.slot(partition).owner.clone(),
        }];
        Ok((
            Reply::Tombstone {
                revision: rev,
                partition,
            },
            events,
        ))
    }

    /// Applies one event. The only code that changes the state.
    pub fn apply_event(&mut self, revision: u64, event: &Event) {
        self.revision = self.revision.max(revision);
        if let Event::GroupCreated { group, config } = event {
            self.groups
                .insert(group.clone(), Group::new(config.clone(), revision));
            return;
        }
        if let Event::GroupDeleted { group } = event {
            self.groups.remove(group);
            return;
        }
        if let Event::GroupDeleting { group } = event {
            if let Some(g) = self.groups.get_mut(group) {
                g.deleting = true;
            }
            return;
        }
        // Events are produced against the state they apply to, so the group
        // exists; replaying a foreign event stream is the only way to miss.
        let Some(g) = self.groups.get_mut(event.group()) else {
            return;
        };
        match event {
            Event::GroupCreated { .. }
            | Event::GroupDeleted { .. }
            | Event::GroupDeleting { .. } => {}
            Event::GroupUpdated { config, .. } => {
                g.config = config.clone();
                g.config_revision = revision;
            }
            Event::GroupSplit { partitions, .. } => {
                g.config.partitions = *partitions;
                g.config_revision = revision;
                g.assignment.split();
                // Children of an owned partition are new grants: new tokens.
                let owned = g.assignment.find(|s| s.owner.is_some());
                g.assignment.update_ranges(&owned, |s| Slot {
                    token: revision,
                    ..s.clone()
                });
                for t in g.tombstones.values_mut() {
                    t.partition = match t.hash {
                        Some(h) => hash::partition_of(h, *partitions),
                        None => t.partition * 2,
                    };
                }
            }
            Event::GroupFrozen { frozen, .. } => g.frozen = *frozen,
            Event::WorkerJoined {
                worker, session, ..
            } => {
                g.sessions.insert(worker.clone(), session.clone());
            }
            Event::WorkerDraining { worker, .. } => {
                if let Some(s) = g.sessions.get_mut(worker) {
                    s.state = SessionState::Draining;
                }
            }
            Event::WorkerEvicting { worker, .. } => {
                if let Some(s) = g.sessions.get_mut(worker) {
                    s.state = SessionState::Evicting;
                }
            }
            Event::WorkerLeft { worker, .. } => {
                g.sessions.remove(worker);
            }
            Event::Granted {
                worker,
                partitions,
                token,
                ..
            } => {
                g.assignment.update_ranges(partitions, |_| Slot {
                    owner: Some(worker.clone()),
                    token: *token,
                    revoking: None,
                    reserved: None,
                });
            }
            Event::Revoking {
                partitions,
                to,
                since_ms,
                ..
            } => {
                g.assignment.update_ranges(partitions, |s| Slot {
                    revoking: Some(Revoking {
                        to: to.clone(),
                        since_ms: s.revoking.as_ref().map_or(*since_ms, |old| old.since_ms),
                    }),
                    ..s.clone()
                });
            }
            Event::Released { partitions, .. } => {
                g.assignment.update_ranges(partitions, |_| Slot::default());
            }
            Event::Reserved {
                worker,
                partitions,
                until_ms,
                ..
            } => {
                g.assignment.update_ranges(partitions, |_| Slot {
                    reserved: Some(Reservation {
                        worker: worker.clone(),
                        until_ms: *until_ms,
                    }),
                    ..Slot::default()
                });
            }
            Event::TombstoneAdded { key, tombstone, .. } => {
                g.tombstones.insert(key.clone(), tombstone.clone());
            }
            Event::TombstonePurged { key, .. } => {
                g.tombstones.remove(key);
            }
            Event::TombstonesAcked {
                worker, revision, ..
            } => {
                if let Some(s) = g.sessions.get_mut(worker) {
                    s.acked = *revision;
                }
            }
        }
    }
}

/// History can be compacted up to a revision below the one being applied.
fn compactable(up_to: u64, revision: u64) -> Result<(), DomainError> {
    if up_to >= revision {
        return Err(invalid(
            "compaction revision",
            up_to,
            format!("below the current revision {revision}"),
        ));
    }
    Ok(())
}

/// Up to five names, quoted, comma-separated, for messages.
fn names<'a>(names: impl ExactSizeIterator<Item = &'a String>) -> String {
    let total = names.len();
    let mut shown: Vec<String> = names.take(5).map(|n| error::quoted(n)).collect();
    if total > shown.len() {
        shown.push("…".to_string());
    }
    shown.join(", ")
}

/// A call that acts for a session must name the worker's current one: a
/// process that lost its lease while a new one joined under the same worker
/// id must not end, release or acknowledge for the newer session.
pub fn same_session(
    group: &str,
    worker: &str,
    current: &Session,
    named: u64,
    consequence: &str,
) -> Result<(), DomainError> {
    if current.id == named {
        return Ok(());
    }
    if named == 0 {
        return Err(DomainError::Precondition(format!(
            "no session named for worker {worker:?} in group {group:?}; {consequence}: send the session from JoinResponse.session"
        )));
    }
    Err(DomainError::Precondition(format!(
        "worker {worker:?} in group {group:?} is in session {}, not {named}; {consequence} (a stale process, or one whose lease was lost: join again)",
        current.id
    )))
}

fn check_revision(group: &str, g: &Group, expected: u64) -> Result<(), DomainError> {
    if g.config_revision != expected {
        return Err(DomainError::RevisionMismatch {
            group: group.to_string(),
            expected,
            actual: g.config_revision,
        });
    }
    Ok(())
}

/// Everything `worker` holds is let go at once (it left without draining, or
/// its lease passed): handoffs in flight complete to their recipients, the rest
/// is freed, or kept for the worker until `reserve_until`.
fn hand_over(
    group: &str,
    g: &Group,
    worker: &str,
    rev: u64,
    reserve_until: Option<u64>,
) -> Vec<Event> {
    let mut by_recipient: BTreeMap<String, Vec<PartitionRange>> = BTreeMap::new();
    let mut rest: Vec<PartitionRange> = Vec::new();
    for (range, slot) in g.assignment.runs() {
        if slot.owner.as_deref() != Some(worker) {
            continue;
        }
        let recipient = slot
            .revoking
            .as_ref()
            .and_then(|r| r.to.as_ref())
            .filter(|to| *to != worker && g.may_receive(to));
        match recipient {
            Some(to) => by_recipient.entry(to.clone()).or_default().push(range),
            None => rest.push(range),
        }
    }
    let mut events = Vec::new();
    let all: Vec<PartitionRange> = {
        let mut all: Vec<u32> = by_recipient
            .values()
            .flatten()
            .chain(rest.iter())
            .flat_map(|r| r.start..r.end)
            .collect();
        all.sort_unstable();
        assignment::ranges_of(all)
    };
    if all.is_empty() {
        return events;
    }
    events.push(Event::Released {
        group: group.to_string(),
        worker: worker.to_string(),
        partitions: all,
    });
    // Runs that differ only in token or handoff start touch: merged, so an
    // event names each partition once, in as few ranges as it can.
    for (to, partitions) in by_recipient {
        events.push(Event::Granted {
            group: group.to_string(),
            worker: to,
            partitions: assignment::normalized(partitions),
            token: rev,
        });
    }
    if let (Some(until_ms), false) = (reserve_until, rest.is_empty()) {
        events.push(Event::Reserved {
            group: group.to_string(),
            worker: worker.to_string(),
            partitions: assignment::normalized(rest),
            until_ms,
        });
    }
    events
}

/// Handoffs in flight *to* `worker`, who is going away, lose their recipient;
/// the next rebalance picks another.
fn orphan_handoffs_to(group: &str, g: &Group, worker: &str) -> Vec<Event> {
    let mut by_owner: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (range, slot) in g.assignment.runs() {
        let to_worker = slot
            .revoking
            .as_ref()
            .is_some_and(|r| r.to.as_deref() == Some(worker));
        if let (true, Some(owner)) = (to_worker, &slot.owner) {
            by_owner
                .entry(owner)
                .or_default()
                .extend(range.start..range.end);
        }
    }
    by_owner
        .into_iter()
        .map(|(from, partitions)| Event::Revoking {
            group: group.to_string(),
            from: from.to_string(),
            partitions: assignment::ranges_of(partitions),
            to: None,
            // Ignored for handoffs already in flight.
            since_ms: 0,
        })
        .collect()
}

/// The events that carry out `plan`.
fn plan_events(group: &str, plan: &Plan, rev: u64, now_ms: u64) -> Vec<Event> {
    plan.moves
        .iter()
        .map(|m| match m {
            Move::Grant { to, partitions } => Event::Granted {
                group: group.to_string(),
                worker: to.clone(),
                partitions: partitions.clone(),
                token: rev,
            },
            Move::Revoke {
                from,
                to,
                partitions,
            } => Event::Revoking {
                group: group.to_string(),
                from: from.clone(),
                partitions: partitions.clone(),
                to: to.clone(),
                since_ms: now_ms,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests;
