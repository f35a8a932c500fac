//! Commands that move partitions between workers: the owner's release, the
//! rebalancer's plan, an operator's move; and how a leaving worker's
//! partitions are handed over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{same_session, Decision};
use crate::domain::assignment::{self, PartitionRange};
use crate::domain::load::LoadSnapshot;
use crate::domain::rebalancer::{self, Move, Plan};
use crate::domain::{Change, DomainError, Event, Group, LeaveReason, Reply, SessionState, State};

/// The owner gives up `partitions`, all held with fencing token `token`
/// in session `session`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub group: String,
    pub worker: String,
    pub session: u64,
    pub partitions: Vec<PartitionRange>,
    pub token: u64,
}

impl Release {
    pub fn decide(&self, state: &State, rev: u64) -> Decision {
        let (group, worker) = (&self.group, &self.worker);
        let (g, s) = state.session(group, worker)?;
        same_session(group, worker, s, self.session, "nothing released")?;
        g.check_partitions(group, &self.partitions)?;
        let wanted = assignment::normalized(self.partitions.clone());
        let pieces = g.assignment.runs_within(&wanted);
        let mut by_recipient: BTreeMap<String, Vec<PartitionRange>> = BTreeMap::new();
        for (range, slot) in &pieces {
            if slot.owner.as_deref() != Some(worker.as_str()) || slot.token != self.token {
                let detail = match &slot.owner {
                    Some(o) => format!(" (held by {o:?} with token {})", slot.token),
                    None => " (it is free)".to_string(),
                };
                return Err(DomainError::StaleRelease {
                    group: group.clone(),
                    worker: worker.clone(),
                    partition: range.start,
                    token: self.token,
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
        let mut events = vec![Event::new(
            group,
            Change::Released {
                worker: worker.clone(),
                partitions: wanted,
            },
        )];
        for (to, ranges) in by_recipient {
            events.push(Event::new(
                group,
                Change::Granted {
                    worker: to,
                    partitions: assignment::normalized(ranges),
                    token: rev,
                },
            ));
        }
        if s.state == SessionState::Draining && held == released {
            events.push(Event::new(
                group,
                Change::WorkerLeft {
                    worker: worker.clone(),
                    reason: LeaveReason::Drained,
                },
            ));
        }
        Ok((Reply::Done, events))
    }

    /// When the handoff this release completes began (leader time, ms), if
    /// it gives up partitions that were being revoked: the earliest start
    /// among them.
    pub fn handoff_started(&self, state: &State) -> Option<u64> {
        let assignment = &state.groups.get(&self.group)?.assignment;
        self.partitions
            .iter()
            .filter(|r| r.start < assignment.partitions())
            .filter_map(|r| {
                assignment
                    .slot(r.start)
                    .revoking
                    .as_ref()
                    .map(|v| v.since_ms)
            })
            .min()
    }
}

/// Runs the rebalancer on the group's state and carries out its plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Rebalance {
    pub group: String,
}

impl Rebalance {
    /// `now_ms`: reservations that lapsed by then are free, and handoffs
    /// the plan starts start then.
    pub fn decide(&self, state: &State, rev: u64, now_ms: u64) -> Decision {
        let g = state.group(&self.group)?;
        let round = rebalancer::count_round(g, now_ms);
        Ok((
            Reply::Rebalanced(round.moved()),
            plan_events(&self.group, &round.plan, rev, now_ms),
        ))
    }
}

/// A round of the load planner over `snapshot`, the figures the leader
/// held when it proposed the round: committed with it, so every replica
/// and every replay plans the same moves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RebalanceByLoad {
    pub group: String,
    pub snapshot: LoadSnapshot,
    /// The leader may not have heard every worker yet (it took office
    /// less than a lease TTL ago): place what needs a holder, move
    /// nothing to balance.
    pub place_only: bool,
}

impl RebalanceByLoad {
    /// A group without load rules (cleared since the round was proposed) is
    /// planned by count, as `Rebalance` would.
    pub fn decide(&self, state: &State, rev: u64, now_ms: u64) -> Decision {
        let g = state.group(&self.group)?;
        self.snapshot.validate(g.assignment.partitions())?;
        let round = match state.load.get(&self.group) {
            Some(load) => rebalancer::plan_by_load(
                g,
                now_ms,
                &self.snapshot,
                &load.rules,
                &load.moved_at,
                self.place_only,
            ),
            None => rebalancer::count_round(g, now_ms),
        };
        Ok((
            Reply::Rebalanced(round.moved()),
            plan_events(&self.group, &round.plan, rev, now_ms),
        ))
    }
}

/// Operator move: hand `partitions` to `to` (revoking them where held).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MovePartitions {
    pub group: String,
    pub partitions: Vec<PartitionRange>,
    pub to: String,
}

impl MovePartitions {
    /// `now_ms`: the handoffs it starts start then.
    pub fn decide(&self, state: &State, rev: u64, now_ms: u64) -> Decision {
        let (group, to) = (&self.group, &self.to);
        let (g, s) = state.session(group, to)?;
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
        g.check_partitions(group, &self.partitions)?;
        let wanted = assignment::normalized(self.partitions.clone());
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
        let events = plan_events(group, &Plan { moves }, rev, now_ms);
        Ok((Reply::Done, events))
    }
}

/// Everything `worker` holds is let go at once (it left without draining, or
/// its lease passed): handoffs in flight complete to their recipients, the rest
/// is freed, or kept for the worker until `reserve_until`.
pub(super) fn hand_over(
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
    events.push(Event::new(
        group,
        Change::Released {
            worker: worker.to_string(),
            partitions: all,
        },
    ));
    // Runs that differ only in token or handoff start touch: merged, so an
    // event names each partition once, in as few ranges as it can.
    for (to, partitions) in by_recipient {
        events.push(Event::new(
            group,
            Change::Granted {
                worker: to,
                partitions: assignment::normalized(partitions),
                token: rev,
            },
        ));
    }
    if let (Some(until_ms), false) = (reserve_until, rest.is_empty()) {
        events.push(Event::new(
            group,
            Change::Reserved {
                worker: worker.to_string(),
                partitions: assignment::normalized(rest),
                until_ms,
            },
        ));
    }
    events
}

/// Handoffs in flight *to* `worker`, who is going away, lose their recipient;
/// the next rebalance picks another.
pub(super) fn orphan_handoffs_to(group: &str, g: &Group, worker: &str) -> Vec<Event> {
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
        .map(|(from, partitions)| {
            Event::new(
                group,
                Change::Revoking {
                    from: from.to_string(),
                    partitions: assignment::ranges_of(partitions),
                    to: None,
                    // Ignored for handoffs already in flight.
                    since_ms: 0,
                },
            )
        })
        .collect()
}

/// The events that carry out `plan`.
fn plan_events(group: &str, plan: &Plan, rev: u64, now_ms: u64) -> Vec<Event> {
    plan.moves
        .iter()
        .map(|m| match m {
            Move::Grant { to, partitions } => Event::new(
                group,
                Change::Granted {
                    worker: to.clone(),
                    partitions: partitions.clone(),
                    token: rev,
                },
            ),
            Move::Revoke {
                from,
                to,
                partitions,
            } => Event::new(
                group,
                Change::Revoking {
                    from: from.clone(),
                    partitions: partitions.clone(),
                    to: to.clone(),
                    since_ms: now_ms,
                },
            ),
        })
        .collect()
}
