//! The commands that change the state, one struct each, by family; each
//! decides, against the state, what it does (its [`Reply`] and the
//! [`Event`]s that carry it out) and changes nothing itself.
//!
//! A command is proposed as a [`Proposal`]: stamped once with the
//! proposer's clock, so the commands that need the time (`Join`,
//! `ExpireSession`, `Rebalance`, `RebalanceByLoad`, `Move`, the tombstone
//! puts and the purge)
//! take it as an argument of `decide` instead of each carrying it. How a
//! proposal is stored in the log is in [`super::stored`].
//!
//! The rule for every command: never change what an existing command
//! decides (see [`Command::PutTombstoneV2`]); a new rule is a new command.

mod group;
mod handoff;
mod session;
mod tombstone;

use serde::{Deserialize, Serialize};

pub use group::{CreateGroup, DeleteGroup, SetFrozen, SetLoadRules, SplitGroup, UpdateGroup};
pub use handoff::{MovePartitions, Rebalance, RebalanceByLoad, Release};
pub use session::{Evict, ExpireSession, Join, Leave};
pub use tombstone::{AckTombstones, Locator, PurgeTombstones, PutRule, PutTombstone};

use super::error::{self, invalid, DomainError};
use super::stored::StoredCommand;
use super::{Event, Group, Reply, Session};

/// What a command decided: its reply and the events that carry it out, or
/// why it changes nothing.
pub type Decision = Result<(Reply, Vec<Event>), DomainError>;

/// A change proposed through Raft.
///
/// Each command's fields are stored in the order they are declared, in the
/// log and between nodes (see [`super::stored`]): never reorder, insert or
/// remove one; variants are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Changes nothing but the revision; proves the cluster commits writes.
    Barrier,
    CreateGroup(CreateGroup),
    UpdateGroup(UpdateGroup),
    DeleteGroup(DeleteGroup),
    SplitGroup(SplitGroup),
    SetFrozen(SetFrozen),
    Join(Join),
    Leave(Leave),
    Evict(Evict),
    ExpireSession(ExpireSession),
    Release(Release),
    Rebalance(Rebalance),
    Move(MovePartitions),
    /// The first put of a key stands, expired or not.
    PutTombstone(PutTombstone),
    PurgeTombstones(PurgeTombstones),
    AckTombstones(AckTombstones),
    Compact(Compact),
    /// A put under which an expired tombstone is gone: the put is a new
    /// deletion, with a new revision, delivered to the owner again. What the
    /// API proposes; `PutTombstone` keeps the rule it was written under
    /// (the first put stands, expired or not), because a rolling upgrade
    /// applies entries an older leader wrote with this code on some nodes
    /// and the old code on others: a rule may change only under a new
    /// command, which a leader proposes once it runs the new code, and
    /// leaders are upgraded last. (Appended, so older entries decode as
    /// they were written.)
    PutTombstoneV2(PutTombstone),
    /// Balance a group by load under these rules, or by count again.
    SetLoadRules(SetLoadRules),
    /// A round of the load planner, with the load figures it plans from
    /// (the leader's, committed so every replica plans the same). Its
    /// planner was reworked once before any release (issue 23: hot
    /// partitions isolated where they are, moves that fit); from the first
    /// release on, the rule above holds for it too.
    RebalanceByLoad(RebalanceByLoad),
}

impl Command {
    /// This command, proposed at `at_ms` (the proposer's clock).
    pub fn at(self, at_ms: u64) -> Proposal {
        Proposal {
            at_ms,
            command: self,
        }
    }
}

/// A command as it is proposed, committed and applied: the Raft log's
/// entries. Stored in the form the log has always had (see
/// [`super::stored`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "StoredCommand", into = "StoredCommand")]
pub struct Proposal {
    /// The proposer's clock (ms since the Unix epoch) when it proposed the
    /// command: the one time every replica decides it at. Only commands
    /// that decide by time keep it in the log, so a stored command of
    /// another kind reads back with 0, which nothing it decides uses.
    pub at_ms: u64,
    pub command: Command,
}

/// What one Raft entry carries: one proposal, or a batch of them that the
/// leader's proposer gathered while earlier entries were in flight (one log
/// append, one replication round and one apply for the lot). Each proposal
/// of a batch is applied in order at its own revision, with its own reply,
/// exactly as if it had its own entry. `One` is stored as a proposal always
/// was, so logs written before batches decode unchanged; a leader writes
/// `Many` only once every member understands it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "StoredCommand", into = "StoredCommand")]
pub enum Proposals {
    One(Proposal),
    Many(Vec<Proposal>),
}

impl Proposals {
    /// The proposals in the order they apply.
    pub fn as_slice(&self) -> &[Proposal] {
        match self {
            Self::One(p) => std::slice::from_ref(p),
            Self::Many(many) => many,
        }
    }
}

/// Drops the event history up to and including `revision`, on every
/// replica at the same point of the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Compact {
    pub revision: u64,
}

impl Compact {
    /// History can be compacted up to a revision below the one being applied.
    pub fn check(&self, applying: u64) -> Result<(), DomainError> {
        if self.revision >= applying {
            return Err(invalid(
                "compaction revision",
                self.revision,
                format!("below the current revision {applying}"),
            ));
        }
        Ok(())
    }
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

/// Compare-and-set on the group's config revision.
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
