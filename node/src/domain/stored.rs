//! The stored forms of proposals and events: what the Raft log, the
//! messages between nodes and the event history hold, byte for byte.
//!
//! Why a separate form: entries already in logs and histories must decode
//! as they were written, and in a mixed-version cluster (a rolling upgrade)
//! a node must write what older nodes read and read what they write. The
//! domain's own types changed shape since these bytes were first written
//! (the proposal's time moved out of the commands into [`Proposal`]; an
//! event's group moved out of its change into [`Event`]), so they are
//! converted to and from these mirrors of the old shape on the way in and
//! out, and the mirrors never change: a new command or event is a new
//! variant appended at the end. `tests/format.rs` pins the bytes.
//!
//! bincode writes an enum variant as its index followed by its fields in
//! order, with no names and no framing: a variant holding a command struct
//! encodes exactly as the struct variant with the same fields did, and
//! `Join { join, now_ms }` as the old `Join { group, …, labels, now_ms }`.

use serde::{Deserialize, Serialize};

use super::command::{
    AckTombstones, Command, Compact, CreateGroup, DeleteGroup, Evict, ExpireSession, Join, Leave,
    MovePartitions, Proposal, Proposals, PurgeTombstones, PutTombstone, Rebalance, RebalanceByLoad,
    Release, SetFrozen, SetLoadRules, SplitGroup, UpdateGroup,
};
use super::load::LoadRules;
use super::{Change, Event, GroupConfig, LeaveReason, PartitionRange, Session, Tombstone};

/// A [`Proposal`] as the log stores it: the time only in the commands that
/// decide by it, in the place each always had it.
#[derive(Serialize, Deserialize)]
pub(crate) enum StoredCommand {
    Barrier,
    CreateGroup(CreateGroup),
    UpdateGroup(UpdateGroup),
    DeleteGroup(DeleteGroup),
    SplitGroup(SplitGroup),
    SetFrozen(SetFrozen),
    Join {
        join: Join,
        now_ms: u64,
    },
    Leave(Leave),
    Evict(Evict),
    ExpireSession {
        expire: ExpireSession,
        now_ms: u64,
    },
    Release(Release),
    Rebalance {
        rebalance: Rebalance,
        now_ms: u64,
    },
    Move {
        to: MovePartitions,
        now_ms: u64,
    },
    PutTombstone {
        put: PutTombstone,
        now_ms: u64,
    },
    // The time sits between the group and the limit here.
    PurgeTombstones {
        group: String,
        now_ms: u64,
        limit: u32,
    },
    AckTombstones(AckTombstones),
    Compact(Compact),
    PutTombstoneV2 {
        put: PutTombstone,
        now_ms: u64,
    },
    /// Several proposals in one Raft entry (see [`Proposals`]); never
    /// nested.
    Batch(Vec<StoredCommand>),
    SetLoadRules(SetLoadRules),
    RebalanceByLoad {
        rebalance: RebalanceByLoad,
        now_ms: u64,
    },
}

/// A stored batch inside a stored batch, or an empty one: no baton writes
/// either.
#[derive(Debug, thiserror::Error)]
#[error("a batch of proposals that is empty or inside a batch (no baton node writes one)")]
pub(crate) struct BadBatch;

impl From<Proposals> for StoredCommand {
    fn from(proposals: Proposals) -> Self {
        match proposals {
            Proposals::One(p) => p.into(),
            Proposals::Many(many) => Self::Batch(many.into_iter().map(Into::into).collect()),
        }
    }
}

impl TryFrom<StoredCommand> for Proposals {
    type Error = BadBatch;

    fn try_from(stored: StoredCommand) -> Result<Self, BadBatch> {
        match stored {
            StoredCommand::Batch(many) if many.is_empty() => Err(BadBatch),
            StoredCommand::Batch(many) => Ok(Self::Many(
                many.into_iter()
                    .map(Proposal::try_from)
                    .collect::<Result<_, _>>()?,
            )),
            one => Ok(Self::One(one.try_into()?)),
        }
    }
}

impl From<Proposal> for StoredCommand {
    fn from(Proposal { at_ms, command }: Proposal) -> Self {
        let now_ms = at_ms;
        match command {
            Command::Barrier => Self::Barrier,
            Command::CreateGroup(c) => Self::CreateGroup(c),
            Command::UpdateGroup(c) => Self::UpdateGroup(c),
            Command::DeleteGroup(c) => Self::DeleteGroup(c),
            Command::SplitGroup(c) => Self::SplitGroup(c),
            Command::SetFrozen(c) => Self::SetFrozen(c),
            Command::Join(join) => Self::Join { join, now_ms },
            Command::Leave(c) => Self::Leave(c),
            Command::Evict(c) => Self::Evict(c),
            Command::ExpireSession(expire) => Self::ExpireSession { expire, now_ms },
            Command::Release(c) => Self::Release(c),
            Command::Rebalance(rebalance) => Self::Rebalance { rebalance, now_ms },
            Command::Move(to) => Self::Move { to, now_ms },
            Command::PutTombstone(put) => Self::PutTombstone { put, now_ms },
            Command::PurgeTombstones(PurgeTombstones { group, limit }) => Self::PurgeTombstones {
                group,
                now_ms,
                limit,
            },
            Command::AckTombstones(c) => Self::AckTombstones(c),
            Command::Compact(c) => Self::Compact(c),
            Command::PutTombstoneV2(put) => Self::PutTombstoneV2 { put, now_ms },
            Command::SetLoadRules(c) => Self::SetLoadRules(c),
            Command::RebalanceByLoad(rebalance) => Self::RebalanceByLoad { rebalance, now_ms },
        }
    }
}

impl TryFrom<StoredCommand> for Proposal {
    type Error = BadBatch;

    fn try_from(stored: StoredCommand) -> Result<Self, BadBatch> {
        // Commands that do not decide by time were stored without it.
        let untimed = |command| Proposal { at_ms: 0, command };
        Ok(match stored {
            StoredCommand::Barrier => untimed(Command::Barrier),
            StoredCommand::CreateGroup(c) => untimed(Command::CreateGroup(c)),
            StoredCommand::UpdateGroup(c) => untimed(Command::UpdateGroup(c)),
            StoredCommand::DeleteGroup(c) => untimed(Command::DeleteGroup(c)),
            StoredCommand::SplitGroup(c) => untimed(Command::SplitGroup(c)),
            StoredCommand::SetFrozen(c) => untimed(Command::SetFrozen(c)),
            StoredCommand::Join { join, now_ms } => Command::Join(join).at(now_ms),
            StoredCommand::Leave(c) => untimed(Command::Leave(c)),
            StoredCommand::Evict(c) => untimed(Command::Evict(c)),
            StoredCommand::ExpireSession { expire, now_ms } => {
                Command::ExpireSession(expire).at(now_ms)
            }
            StoredCommand::Release(c) => untimed(Command::Release(c)),
            StoredCommand::Rebalance { rebalance, now_ms } => {
                Command::Rebalance(rebalance).at(now_ms)
            }
            StoredCommand::Move { to, now_ms } => Command::Move(to).at(now_ms),
            StoredCommand::PutTombstone { put, now_ms } => Command::PutTombstone(put).at(now_ms),
            StoredCommand::PurgeTombstones {
                group,
                now_ms,
                limit,
            } => Command::PurgeTombstones(PurgeTombstones { group, limit }).at(now_ms),
            StoredCommand::AckTombstones(c) => untimed(Command::AckTombstones(c)),
            StoredCommand::Compact(c) => untimed(Command::Compact(c)),
            StoredCommand::PutTombstoneV2 { put, now_ms } => {
                Command::PutTombstoneV2(put).at(now_ms)
            }
            StoredCommand::SetLoadRules(c) => untimed(Command::SetLoadRules(c)),
            StoredCommand::RebalanceByLoad { rebalance, now_ms } => {
                Command::RebalanceByLoad(rebalance).at(now_ms)
            }
            StoredCommand::Batch(_) => return Err(BadBatch),
        })
    }
}

/// An [`Event`] as the history stores it: the group in every variant,
/// first.
#[derive(Serialize, Deserialize)]
pub(crate) enum StoredEvent {
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
    Granted {
        group: String,
        worker: String,
        partitions: Vec<PartitionRange>,
        token: u64,
    },
    Revoking {
        group: String,
        from: String,
        partitions: Vec<PartitionRange>,
        to: Option<String>,
        since_ms: u64,
    },
    Released {
        group: String,
        worker: String,
        partitions: Vec<PartitionRange>,
    },
    Reserved {
        group: String,
        worker: String,
        partitions: Vec<PartitionRange>,
        until_ms: u64,
    },
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
    LoadRulesSet {
        group: String,
        rules: Option<LoadRules>,
    },
}

impl From<Event> for StoredEvent {
    fn from(Event { group, change }: Event) -> Self {
        match change {
            Change::GroupCreated { config } => Self::GroupCreated { group, config },
            Change::GroupUpdated { config } => Self::GroupUpdated { group, config },
            Change::GroupDeleting => Self::GroupDeleting { group },
            Change::GroupDeleted => Self::GroupDeleted { group },
            Change::GroupSplit { partitions } => Self::GroupSplit { group, partitions },
            Change::GroupFrozen { frozen } => Self::GroupFrozen { group, frozen },
            Change::WorkerJoined { worker, session } => Self::WorkerJoined {
                group,
                worker,
                session,
            },
            Change::WorkerDraining { worker } => Self::WorkerDraining { group, worker },
            Change::WorkerEvicting { worker } => Self::WorkerEvicting { group, worker },
            Change::WorkerLeft { worker, reason } => Self::WorkerLeft {
                group,
                worker,
                reason,
            },
            Change::Granted {
                worker,
                partitions,
                token,
            } => Self::Granted {
                group,
                worker,
                partitions,
                token,
            },
            Change::Revoking {
                from,
                partitions,
                to,
                since_ms,
            } => Self::Revoking {
                group,
                from,
                partitions,
                to,
                since_ms,
            },
            Change::Released { worker, partitions } => Self::Released {
                group,
                worker,
                partitions,
            },
            Change::Reserved {
                worker,
                partitions,
                until_ms,
            } => Self::Reserved {
                group,
                worker,
                partitions,
                until_ms,
            },
            Change::TombstoneAdded {
                key,
                tombstone,
                owner,
            } => Self::TombstoneAdded {
                group,
                key,
                tombstone,
                owner,
            },
            Change::TombstonePurged { key } => Self::TombstonePurged { group, key },
            Change::TombstonesAcked { worker, revision } => Self::TombstonesAcked {
                group,
                worker,
                revision,
            },
            Change::LoadRulesSet { rules } => Self::LoadRulesSet { group, rules },
        }
    }
}

impl From<StoredEvent> for Event {
    fn from(stored: StoredEvent) -> Self {
        use StoredEvent as S;
        let (group, change) = match stored {
            S::GroupCreated { group, config } => (group, Change::GroupCreated { config }),
            S::GroupUpdated { group, config } => (group, Change::GroupUpdated { config }),
            S::GroupDeleting { group } => (group, Change::GroupDeleting),
            S::GroupDeleted { group } => (group, Change::GroupDeleted),
            S::GroupSplit { group, partitions } => (group, Change::GroupSplit { partitions }),
            S::GroupFrozen { group, frozen } => (group, Change::GroupFrozen { frozen }),
            S::WorkerJoined {
                group,
                worker,
                session,
            } => (group, Change::WorkerJoined { worker, session }),
            S::WorkerDraining { group, worker } => (group, Change::WorkerDraining { worker }),
            S::WorkerEvicting { group, worker } => (group, Change::WorkerEvicting { worker }),
            S::WorkerLeft {
                group,
                worker,
                reason,
            } => (group, Change::WorkerLeft { worker, reason }),
            S::Granted {
                group,
                worker,
                partitions,
                token,
            } => (
                group,
                Change::Granted {
                    worker,
                    partitions,
                    token,
                },
            ),
            S::Revoking {
                group,
                from,
                partitions,
                to,
                since_ms,
            } => (
                group,
                Change::Revoking {
                    from,
                    partitions,
                    to,
                    since_ms,
                },
            ),
            S::Released {
                group,
                worker,
                partitions,
            } => (group, Change::Released { worker, partitions }),
            S::Reserved {
                group,
                worker,
                partitions,
                until_ms,
            } => (
                group,
                Change::Reserved {
                    worker,
                    partitions,
                    until_ms,
                },
            ),
            S::TombstoneAdded {
                group,
                key,
                tombstone,
                owner,
            } => (
                group,
                Change::TombstoneAdded {
                    key,
                    tombstone,
                    owner,
                },
            ),
            S::TombstonePurged { group, key } => (group, Change::TombstonePurged { key }),
            S::TombstonesAcked {
                group,
                worker,
                revision,
            } => (group, Change::TombstonesAcked { worker, revision }),
            S::LoadRulesSet { group, rules } => (group, Change::LoadRulesSet { rules }),
        };
        Event { group, change }
    }
}
