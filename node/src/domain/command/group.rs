//! Commands on a group as a whole: create, update, delete, split, freeze.

use serde::{Deserialize, Serialize};

use super::{check_revision, names, Decision};
use crate::domain::error::invalid;
use crate::domain::load::LoadRules;
use crate::domain::{validate, Change, DomainError, Event, GroupConfig, Reply, State};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CreateGroup {
    pub group: String,
    pub config: GroupConfig,
}

impl CreateGroup {
    pub fn decide(&self, state: &State, rev: u64) -> Decision {
        let group = &self.group;
        validate::group_name(group)?;
        self.config.validate()?;
        if let Some(g) = state.groups.get(group) {
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
        let events = vec![Event::new(
            group,
            Change::GroupCreated {
                config: self.config.clone(),
            },
        )];
        Ok((
            Reply::Group {
                config_revision: rev,
            },
            events,
        ))
    }
}

/// Compare-and-set: applies only if the group's config revision is `expected_revision`.
/// The partition count changes only through `SplitGroup`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UpdateGroup {
    pub group: String,
    pub config: GroupConfig,
    pub expected_revision: u64,
}

impl UpdateGroup {
    pub fn decide(&self, state: &State, rev: u64) -> Decision {
        let (group, config) = (&self.group, &self.config);
        let g = state.group(group)?;
        check_revision(group, g, self.expected_revision)?;
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
        let events = vec![Event::new(
            group,
            Change::GroupUpdated {
                config: config.clone(),
            },
        )];
        Ok((
            Reply::Group {
                config_revision: rev,
            },
            events,
        ))
    }

    /// An update that sets what is already set is answered with the config
    /// revision it leaves, so other writers' compare-and-set still holds.
    /// Only the leader's check asks this, not apply: entries already in a
    /// log must apply as they did when they were written (see
    /// `Command::PutTombstoneV2`), and a written update that meets an equal
    /// config has lost its compare-and-set to another update anyway.
    pub fn unchanged(&self, state: &State) -> Result<Option<Reply>, DomainError> {
        let g = state.group(&self.group)?;
        Ok((self.config == g.config).then_some(Reply::Group {
            config_revision: g.config_revision,
        }))
    }
}

/// Refused while the group has sessions, unless `force`: then the
/// group stops granting and renewing leases, and is deleted once the
/// last session has left or expired, so no worker of the old group can
/// still hold a partition when a group of the same name is created.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeleteGroup {
    pub group: String,
    pub force: bool,
}

impl DeleteGroup {
    pub fn decide(&self, state: &State) -> Decision {
        let group = &self.group;
        let g = state.group(group)?;
        if g.sessions.is_empty() {
            return Ok((Reply::Done, vec![Event::new(group, Change::GroupDeleted)]));
        }
        if g.deleting {
            return Ok((Reply::Done, Vec::new()));
        }
        if !self.force {
            return Err(DomainError::Precondition(format!(
                "group {group:?} has {} live session(s) ({}); drain them first, or delete with force: the group then stops granting and renewing leases, and goes once the last session has left or expired",
                g.sessions.len(),
                names(g.sessions.keys()),
            )));
        }
        // Handoffs in flight complete to nobody: a release frees.
        let mut events = vec![Event::new(group, Change::GroupDeleting)];
        for worker in g.sessions.keys() {
            events.extend(super::handoff::orphan_handoffs_to(group, g, worker));
        }
        Ok((Reply::Done, events))
    }
}

/// P → 2P: each partition's two children keep its owner, with new tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SplitGroup {
    pub group: String,
    pub expected_revision: u64,
}

impl SplitGroup {
    pub fn decide(&self, state: &State, rev: u64) -> Decision {
        let group = &self.group;
        let g = state.group(group)?;
        check_revision(group, g, self.expected_revision)?;
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
        let events = vec![Event::new(
            group,
            Change::GroupSplit {
                partitions: doubled,
            },
        )];
        Ok((
            Reply::Group {
                config_revision: rev,
            },
            events,
        ))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SetFrozen {
    pub group: String,
    pub frozen: bool,
}

impl SetFrozen {
    pub fn decide(&self, state: &State) -> Decision {
        let g = state.group(&self.group)?;
        let events = if g.frozen == self.frozen {
            Vec::new()
        } else {
            vec![Event::new(
                &self.group,
                Change::GroupFrozen {
                    frozen: self.frozen,
                },
            )]
        };
        Ok((Reply::Done, events))
    }
}

/// Balance `group` by load under `rules`, or (`None`) by count again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SetLoadRules {
    pub group: String,
    pub rules: Option<LoadRules>,
}

impl SetLoadRules {
    pub fn decide(&self, state: &State) -> Decision {
        state.group(&self.group)?;
        if let Some(rules) = &self.rules {
            rules.validate()?;
        }
        let current = state.load.get(&self.group).map(|l| &l.rules);
        let events = if current == self.rules.as_ref() {
            Vec::new()
        } else {
            vec![Event::new(
                &self.group,
                Change::LoadRulesSet {
                    rules: self.rules.clone(),
                },
            )]
        };
        Ok((Reply::Done, events))
    }
}
