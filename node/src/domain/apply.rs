//! Applying log entries: each command decides its events against the
//! state, and [`State::apply_event`] alone changes the state.

use serde::{Deserialize, Serialize};

use super::command::{Command, Decision, Proposal, PutRule};
use super::rebalancer::Moved;
use super::{
    Change, DomainError, Event, Group, PartitionRange, Reservation, Revoking, SessionState, Slot,
    State,
};

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
    /// What a rebalancing round moved.
    Rebalanced(Moved),
    /// The history is compacted up to and including `revision`.
    Compacted {
        revision: u64,
    },
}

/// What applying one log entry produced, returned to the proposer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    /// The revision at which the command was applied (its own: the
    /// revision counts commands).
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

impl State {
    /// Applies an entry without a command (Raft's blank and membership
    /// entries) at `revision`: it changes nothing else, but takes a
    /// revision, as it always did (see `StateMachineStore::apply_entry`).
    pub fn apply_empty(&mut self, revision: u64) -> CommandResult {
        self.revision = revision;
        CommandResult {
            revision,
            ..CommandResult::default()
        }
    }

    /// Applies `proposal` at `revision`, the next one (the revision counts
    /// applied commands; a Raft entry may carry several, see
    /// [`super::Proposals`]).
    pub fn apply(&mut self, revision: u64, proposal: &Proposal) -> CommandResult {
        self.revision = revision;
        let (outcome, events) = match (proposal, &proposal.command) {
            (_, Command::Barrier) => (Ok(Reply::Done), Vec::new()),
            // Compaction is about the history, not the groups: no event.
            (_, Command::Compact(compact)) => match compact.check(revision) {
                Err(e) => (Err(e), Vec::new()),
                Ok(()) => {
                    self.compacted = self.compacted.max(compact.revision);
                    let reply = Reply::Compacted {
                        revision: self.compacted,
                    };
                    (Ok(reply), Vec::new())
                }
            },
            (proposal, _) => match self.decide(revision, proposal) {
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

    /// What `proposal` would do if it were applied now: the error it would
    /// be refused with, `Some(reply)` when it would change nothing (the
    /// caller answers without writing), or `None` when it must be written.
    /// The leader asks before proposing, so a refused or empty request
    /// costs no log entry, no memory and no revision; apply still decides,
    /// as the authority, since the state can change in between.
    pub fn check(&self, proposal: &Proposal) -> Result<Option<Reply>, DomainError> {
        match &proposal.command {
            // Written for their own sake: proving the cluster commits, or
            // dropping history at the same point of the log everywhere.
            Command::Barrier => Ok(None),
            Command::Compact(compact) => {
                compact.check(self.revision + 1)?;
                Ok(None)
            }
            // Answered unwritten when it changes nothing, though apply
            // writes it (see `UpdateGroup::unchanged`).
            Command::UpdateGroup(update) => {
                self.decide(self.revision + 1, proposal)?;
                update.unchanged(self)
            }
            _ => {
                let (reply, events) = self.decide(self.revision + 1, proposal)?;
                Ok(events.is_empty().then_some(reply))
            }
        }
    }

    /// Validates the proposal's command against the state, at `rev` and at
    /// the proposal's time, and returns the events it causes. Changes
    /// nothing.
    fn decide(&self, rev: u64, proposal: &Proposal) -> Decision {
        let now_ms = proposal.at_ms;
        match &proposal.command {
            Command::Barrier | Command::Compact(_) => Ok((Reply::Done, Vec::new())),
            Command::CreateGroup(c) => c.decide(self, rev),
            Command::UpdateGroup(c) => c.decide(self, rev),
            Command::DeleteGroup(c) => c.decide(self),
            Command::SplitGroup(c) => c.decide(self, rev),
            Command::SetFrozen(c) => c.decide(self),
            Command::Join(c) => c.decide(self, rev, now_ms),
            Command::Leave(c) => c.decide(self, rev),
            Command::Evict(c) => c.decide(self),
            Command::ExpireSession(c) => c.decide(self, rev, now_ms),
            Command::Release(c) => c.decide(self, rev),
            Command::Rebalance(c) => c.decide(self, rev, now_ms),
            Command::Move(c) => c.decide(self, rev, now_ms),
            Command::PutTombstone(c) => c.decide(self, rev, now_ms, PutRule::FirstPutStands),
            Command::PurgeTombstones(c) => c.decide(self, now_ms),
            Command::AckTombstones(c) => c.decide(self, rev),
            Command::PutTombstoneV2(c) => c.decide(self, rev, now_ms, PutRule::ExpiredIsGone),
            Command::SetLoadRules(c) => c.decide(self),
            Command::RebalanceByLoad(c) => c.decide(self, rev, now_ms),
        }
    }

    /// When the handoff that `command` completes began (leader time, ms),
    /// if it releases partitions that were being revoked.
    pub fn handoff_started(&self, command: &Command) -> Option<u64> {
        match command {
            Command::Release(release) => release.handoff_started(self),
            _ => None,
        }
    }

    /// A group being deleted goes with its last session: appends
    /// `GroupDeleted` when `events` end every session left in it.
    fn close_if_last_left(&self, events: &mut Vec<Event>) {
        let left = |e: &&Event| matches!(e.change, Change::WorkerLeft { .. });
        let Some(Event { group, .. }) = events.iter().rev().find(left) else {
            return;
        };
        let Some(g) = self.groups.get(group).filter(|g| g.deleting) else {
            return;
        };
        let leaving = events
            .iter()
            .filter(left)
            .filter(|e| e.group == *group)
            .count();
        if leaving >= g.sessions.len() {
            let deleted = Event::new(group, Change::GroupDeleted);
            events.push(deleted);
        }
    }

    /// Applies one event. The only code that changes the state.
    pub fn apply_event(&mut self, revision: u64, event: &Event) {
        self.revision = self.revision.max(revision);
        let group = &event.group;
        match &event.change {
            Change::GroupCreated { config } => {
                self.groups
                    .insert(group.clone(), Group::new(config.clone(), revision));
                return;
            }
            Change::GroupDeleted => {
                self.groups.remove(group);
                self.load.remove(group);
                return;
            }
            Change::LoadRulesSet { rules } => {
                match rules {
                    Some(rules) => {
                        let load = self.load.entry(group.clone()).or_default();
                        load.rules = rules.clone();
                    }
                    None => {
                        self.load.remove(group);
                    }
                }
                return;
            }
            Change::Revoking {
                partitions,
                since_ms,
                ..
            } => {
                if let Some(load) = self.load.get_mut(group) {
                    load.handoff_started(partitions, *since_ms);
                }
            }
            Change::GroupSplit { .. } => {
                // Partition numbers change: what moved when is forgotten.
                if let Some(load) = self.load.get_mut(group) {
                    load.moved_at.clear();
                }
            }
            _ => {}
        }
        // Events are produced against the state they apply to, so the group
        // exists; replaying a foreign event stream is the only way to miss.
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        match &event.change {
            Change::GroupCreated { .. } | Change::GroupDeleted | Change::LoadRulesSet { .. } => {}
            Change::GroupDeleting => g.deleting = true,
            Change::GroupUpdated { config } => {
                g.config = config.clone();
                g.config_revision = revision;
            }
            Change::GroupSplit { partitions } => {
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
                    t.partition = t.partition_after_split(*partitions);
                }
            }
            Change::GroupFrozen { frozen } => g.frozen = *frozen,
            Change::WorkerJoined { worker, session } => {
                g.sessions.insert(worker.clone(), session.clone());
            }
            Change::WorkerDraining { worker } => {
                if let Some(s) = g.sessions.get_mut(worker) {
                    s.state = SessionState::Draining;
                }
            }
            Change::WorkerEvicting { worker } => {
                if let Some(s) = g.sessions.get_mut(worker) {
                    s.state = SessionState::Evicting;
                }
            }
            Change::WorkerLeft { worker, .. } => {
                g.sessions.remove(worker);
            }
            Change::Granted {
                worker,
                partitions,
                token,
            } => {
                g.assignment.update_ranges(partitions, |_| Slot {
                    owner: Some(worker.clone()),
                    token: *token,
                    revoking: None,
                    reserved: None,
                });
            }
            Change::Revoking {
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
            Change::Released { partitions, .. } => {
                g.assignment.update_ranges(partitions, |_| Slot::default());
            }
            Change::Reserved {
                worker,
                partitions,
                until_ms,
            } => {
                g.assignment.update_ranges(partitions, |_| Slot {
                    reserved: Some(Reservation {
                        worker: worker.clone(),
                        until_ms: *until_ms,
                    }),
                    ..Slot::default()
                });
            }
            Change::TombstoneAdded { key, tombstone, .. } => {
                g.tombstones.insert(key.clone(), tombstone.clone());
            }
            Change::TombstonePurged { key } => {
                g.tombstones.remove(key);
            }
            Change::TombstonesAcked { worker, revision } => {
                if let Some(s) = g.sessions.get_mut(worker) {
                    s.acked = *revision;
                }
            }
        }
    }
}
