//! Conversions between the protocol's messages and the domain's types.

use std::collections::BTreeMap;

use baton_proto::v1 as pb;
use tonic::Status;

use crate::cluster::load_reports::{self, Report};
use crate::domain::load::{LoadRules, LoadRun};
use crate::domain::rebalancer::LoadPlan;
use crate::domain::{
    assignment, validate, Change, Event, EventKind, Group, GroupConfig, KeyHash, LeaveReason, Move,
    PartitionRange, Plan, SessionState, State, Tombstone,
};

/// `base` with every field that `update` sets replaced.
pub fn config(base: GroupConfig, update: Option<&pb::GroupConfig>) -> GroupConfig {
    let Some(u) = update else { return base };
    GroupConfig {
        partitions: u.partitions.unwrap_or(base.partitions),
        key_hash: base.key_hash,
        handoff_timeout_ms: u.handoff_timeout_ms.unwrap_or(base.handoff_timeout_ms),
        max_in_flight: u.max_in_flight.unwrap_or(base.max_in_flight),
        default_ttl_ms: u.default_ttl_ms.unwrap_or(base.default_ttl_ms),
        rejoin_grace_ms: u.rejoin_grace_ms.unwrap_or(base.rejoin_grace_ms),
        tombstone_ttl_ms: u.tombstone_ttl_ms.unwrap_or(base.tombstone_ttl_ms),
    }
}

fn config_to_proto(c: &GroupConfig) -> pb::GroupConfig {
    pb::GroupConfig {
        partitions: Some(c.partitions),
        handoff_timeout_ms: Some(c.handoff_timeout_ms),
        max_in_flight: Some(c.max_in_flight),
        default_ttl_ms: Some(c.default_ttl_ms),
        rejoin_grace_ms: Some(c.rejoin_grace_ms),
        tombstone_ttl_ms: Some(c.tombstone_ttl_ms),
    }
}

/// The group `name` of `state` (which must hold it).
pub fn group_of(state: &State, name: &str) -> Option<pb::Group> {
    let g = state.groups.get(name)?;
    Some(group(name, g, state.load.get(name).map(|l| &l.rules)))
}

pub fn group(name: &str, g: &Group, load_rules: Option<&LoadRules>) -> pb::Group {
    let draining = g
        .sessions
        .values()
        .filter(|s| s.state == SessionState::Draining)
        .count();
    pb::Group {
        name: name.to_string(),
        config: Some(config_to_proto(&g.config)),
        key_hash: match g.config.key_hash {
            KeyHash::Xxh3 => pb::KeyHash::Xxh3.into(),
        },
        config_revision: g.config_revision,
        frozen: g.frozen,
        workers: u32::try_from(g.sessions.len()).unwrap_or(u32::MAX),
        draining_workers: u32::try_from(draining).unwrap_or(u32::MAX),
        tombstones: g.tombstones.len() as u64,
        load_rules: load_rules.map(load_rules_to_proto),
    }
}

pub fn load_rules_to_proto(r: &LoadRules) -> pb::LoadRules {
    pb::LoadRules {
        threshold_milli: Some(r.threshold_milli),
        max_moves: Some(r.max_moves),
        max_load_milli: Some(r.max_load_milli),
        cooldown_ms: Some(r.cooldown_ms),
        max_moves_per_worker: Some(r.max_moves_per_worker),
        target_utilisation_milli: Some(r.target_utilisation_milli),
    }
}

/// The defaults with every field `r` sets replaced (validated when decided).
pub fn load_rules(r: Option<&pb::LoadRules>) -> LoadRules {
    let d = LoadRules::default();
    let Some(r) = r else { return d };
    LoadRules {
        threshold_milli: r.threshold_milli.unwrap_or(d.threshold_milli),
        max_moves: r.max_moves.unwrap_or(d.max_moves),
        max_load_milli: r.max_load_milli.unwrap_or(d.max_load_milli),
        cooldown_ms: r.cooldown_ms.unwrap_or(d.cooldown_ms),
        max_moves_per_worker: r.max_moves_per_worker.unwrap_or(d.max_moves_per_worker),
        target_utilisation_milli: r
            .target_utilisation_milli
            .unwrap_or(d.target_utilisation_milli),
    }
}

/// Half-open domain ranges → inclusive protocol ranges.
pub fn ranges(ranges: &[PartitionRange]) -> Vec<pb::PartitionRange> {
    ranges
        .iter()
        .map(|r| pb::PartitionRange {
            first: r.start,
            last: r.end.saturating_sub(1),
        })
        .collect()
}

/// Inclusive protocol ranges → half-open domain ranges, sorted and merged
/// (see [`assignment::normalized`]), so the log holds each partition once
/// however often the request named it; refuses `start > end` and more
/// ranges than a group can have partitions. (Ranges past the group's
/// partition count are refused by the domain.)
/// A keepalive's load report, validated: ranges within a group's largest
/// partition count, each load and the capacity at most
/// [`load_reports::MAX_LOAD`], a capacity above 0.
pub fn load_report(m: &pb::KeepAliveRequest) -> Result<Report, Status> {
    let too_large = |what: &str, value: u64| {
        Status::invalid_argument(format!(
            "{what} {value} is larger than {}; report in a coarser unit",
            load_reports::MAX_LOAD
        ))
    };
    if m.loads.len() > validate::MAX_PARTITIONS as usize {
        return Err(Status::invalid_argument(format!(
            "loads: {} ranges; give at most {} (a group has at most that many partitions)",
            m.loads.len(),
            validate::MAX_PARTITIONS
        )));
    }
    let mut loads = Vec::with_capacity(m.loads.len());
    for l in &m.loads {
        let r = l.partitions.as_ref().ok_or_else(|| {
            Status::invalid_argument("loads: each load names its partitions (an inclusive range)")
        })?;
        if r.first > r.last || r.last >= validate::MAX_PARTITIONS {
            return Err(Status::invalid_argument(format!(
                "loads: range {}-{} is not a range of partitions 0 to {}",
                r.first,
                r.last,
                validate::MAX_PARTITIONS - 1
            )));
        }
        if l.load > load_reports::MAX_LOAD {
            return Err(too_large("load", l.load));
        }
        loads.push(LoadRun {
            partitions: PartitionRange::new(r.first, r.last + 1),
            load: l.load,
        });
    }
    // Ranges that overlap would count a partition twice, and could name
    // 2^32 partitions in one message: the leader expands each report.
    loads.sort_by_key(|run| run.partitions.start);
    if let Some(pair) = loads
        .windows(2)
        .find(|w| w[0].partitions.end > w[1].partitions.start)
    {
        return Err(Status::invalid_argument(format!(
            "loads: ranges {}-{} and {}-{} overlap; report each partition once",
            pair[0].partitions.start,
            pair[0].partitions.end - 1,
            pair[1].partitions.start,
            pair[1].partitions.end - 1
        )));
    }
    let capacity = match m.capacity {
        Some(0) => {
            return Err(Status::invalid_argument(
                "capacity 0: a worker that can carry nothing should leave the group",
            ))
        }
        Some(c) if c > load_reports::MAX_LOAD => return Err(too_large("capacity", c)),
        c => c,
    };
    Ok(Report { loads, capacity })
}

pub fn ranges_from(
    field: &str,
    ranges: &[pb::PartitionRange],
) -> Result<Vec<PartitionRange>, Status> {
    if ranges.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field}: give at least one partition range"
        )));
    }
    if ranges.len() > validate::MAX_PARTITIONS as usize {
        return Err(Status::invalid_argument(format!(
            "{field}: {} ranges; give at most {} (a group has at most that many partitions)",
            ranges.len(),
            validate::MAX_PARTITIONS
        )));
    }
    let ranges: Vec<PartitionRange> = ranges
        .iter()
        .map(|r| {
            if r.first > r.last {
                return Err(Status::invalid_argument(format!(
                    "{field}: range {}-{} starts after it ends",
                    r.first, r.last
                )));
            }
            Ok(PartitionRange::new(r.first, r.last.saturating_add(1)))
        })
        .collect::<Result<_, Status>>()?;
    Ok(assignment::normalized(ranges))
}

pub fn assignment(name: &str, revision: u64, g: &Group) -> pb::AssignmentResponse {
    // Runs of one owner and one token, per owner, in partition order.
    let mut grants: BTreeMap<&str, Vec<pb::Grant>> = BTreeMap::new();
    for (range, slot) in g.assignment.runs() {
        let Some(owner) = &slot.owner else { continue };
        let held = grants.entry(owner).or_default();
        match held.iter_mut().find(|grant| grant.token == slot.token) {
            Some(grant) => match grant.ranges.last_mut() {
                Some(last) if last.last + 1 == range.start => last.last = range.end - 1,
                _ => grant.ranges.extend(ranges(&[range])),
            },
            None => held.push(pb::Grant {
                ranges: ranges(&[range]),
                token: slot.token,
            }),
        }
    }
    let workers = g
        .sessions
        .iter()
        .map(|(id, s)| {
            let held = g.held_by(id);
            pb::WorkerAssignment {
                id: id.clone(),
                count: held.iter().map(PartitionRange::len).sum(),
                ranges: ranges(&held),
                weight: s.weight,
                state: session_state(s.state).into(),
                session: s.id,
                grants: grants.remove(id.as_str()).unwrap_or_default(),
            }
        })
        .collect();
    let mut moving: Vec<pb::Handoff> = Vec::new();
    for (range, slot) in g.assignment.runs() {
        let (Some(from), Some(r)) = (&slot.owner, &slot.revoking) else {
            continue;
        };
        let to = r.to.clone().unwrap_or_default();
        match moving.last_mut() {
            Some(last) if last.from == *from && last.to == to => {
                last.ranges.extend(ranges(&[range]));
            }
            _ => moving.push(pb::Handoff {
                ranges: ranges(&[range]),
                from: from.clone(),
                to,
            }),
        }
    }
    pb::AssignmentResponse {
        group: name.to_string(),
        revision,
        partitions: g.config.partitions,
        workers,
        moving,
        unassigned: ranges(&g.assignment.find(|s| s.owner.is_none())),
        frozen: g.frozen,
        load: None,
    }
}

pub fn plan(revision: u64, plan: &Plan) -> pb::PlanResponse {
    let mut grants = Vec::new();
    let mut handoffs = Vec::new();
    for m in &plan.moves {
        match m {
            Move::Grant { to, partitions } => grants.push(pb::Handoff {
                ranges: ranges(partitions),
                from: String::new(),
                to: to.clone(),
            }),
            Move::Revoke {
                from,
                to,
                partitions,
            } => handoffs.push(pb::Handoff {
                ranges: ranges(partitions),
                from: from.clone(),
                to: to.clone().unwrap_or_default(),
            }),
        }
    }
    pb::PlanResponse {
        revision,
        grants,
        handoffs,
        load: None,
    }
}

pub fn tombstone(key: &str, t: &Tombstone) -> pb::TombstoneInfo {
    pb::TombstoneInfo {
        key: key.to_string(),
        partition: t.partition,
        revision: t.revision,
        expires_at_ms: t.expires_at_ms,
    }
}

/// A protocol event kind → the domain's; `None` for unknown values.
pub fn event_kind(kind: i32) -> Option<EventKind> {
    use pb::EventKind as K;
    Some(match K::try_from(kind).ok()? {
        K::Unspecified => return None,
        K::Group => EventKind::Group,
        K::Worker => EventKind::Worker,
        K::Granted => EventKind::Granted,
        K::Revoking => EventKind::Revoking,
        K::Released => EventKind::Released,
        K::Reserved => EventKind::Reserved,
        K::Tombstone => EventKind::Tombstone,
        K::TombstonePurged => EventKind::TombstonePurged,
        K::TombstonesAcked => EventKind::TombstonesAcked,
    })
}

pub fn session_state(state: SessionState) -> pb::WorkerState {
    match state {
        SessionState::Active => pb::WorkerState::Active,
        SessionState::Draining => pb::WorkerState::Draining,
        SessionState::Evicting => pb::WorkerState::Evicting,
    }
}

fn leave_reason(reason: LeaveReason) -> pb::LeaveReason {
    match reason {
        LeaveReason::Left => pb::LeaveReason::Left,
        LeaveReason::Drained => pb::LeaveReason::Drained,
        LeaveReason::Expired => pb::LeaveReason::Expired,
        LeaveReason::Evicted => pb::LeaveReason::Evicted,
    }
}

/// One domain event as the watch stream sends it.
pub fn watch_event(revision: u64, event: &Event) -> pb::WatchEvent {
    use pb::group_changed::Change as GroupChange;
    use pb::watch_event::Event as E;
    let group_changed = |change: GroupChange, config: Option<&GroupConfig>| {
        E::GroupChanged(pb::GroupChanged {
            change: change as i32,
            config: config.map(config_to_proto),
        })
    };
    let event = match &event.change {
        Change::GroupCreated { config, .. } => group_changed(GroupChange::Created, Some(config)),
        Change::GroupUpdated { config, .. } => group_changed(GroupChange::Updated, Some(config)),
        Change::GroupSplit { partitions, .. } => E::GroupChanged(pb::GroupChanged {
            change: GroupChange::Split as i32,
            config: Some(pb::GroupConfig {
                partitions: Some(*partitions),
                ..Default::default()
            }),
        }),
        Change::GroupFrozen { frozen: true, .. } => group_changed(GroupChange::Frozen, None),
        Change::GroupFrozen { frozen: false, .. } => group_changed(GroupChange::Unfrozen, None),
        Change::GroupDeleted => group_changed(GroupChange::Deleted, None),
        Change::LoadRulesSet { .. } => group_changed(GroupChange::LoadRules, None),
        Change::GroupDeleting => group_changed(GroupChange::Deleting, None),
        Change::WorkerJoined {
            worker, session, ..
        } => E::WorkerJoined(pb::WorkerJoined {
            worker: worker.clone(),
            session: session.id,
            ttl_ms: session.ttl_ms,
            weight: session.weight,
            labels: session.labels.clone().into_iter().collect(),
        }),
        Change::WorkerDraining { worker, .. } => E::WorkerDraining(pb::WorkerDraining {
            worker: worker.clone(),
        }),
        Change::WorkerEvicting { worker, .. } => E::WorkerEvicting(pb::WorkerEvicting {
            worker: worker.clone(),
        }),
        Change::WorkerLeft { worker, reason, .. } => E::WorkerLeft(pb::WorkerLeft {
            worker: worker.clone(),
            reason: leave_reason(*reason).into(),
        }),
        Change::Granted {
            worker,
            partitions,
            token,
            ..
        } => E::Granted(pb::Granted {
            worker: worker.clone(),
            ranges: ranges(partitions),
            token: *token,
        }),
        Change::Revoking {
            from,
            partitions,
            to,
            since_ms,
            ..
        } => E::Revoking(pb::Revoking {
            from: from.clone(),
            to: to.clone().unwrap_or_default(),
            ranges: ranges(partitions),
            since_ms: *since_ms,
        }),
        Change::Released {
            worker, partitions, ..
        } => E::Released(pb::Released {
            worker: worker.clone(),
            ranges: ranges(partitions),
        }),
        Change::Reserved {
            worker,
            partitions,
            until_ms,
            ..
        } => E::Reserved(pb::Reserved {
            worker: worker.clone(),
            ranges: ranges(partitions),
            until_ms: *until_ms,
        }),
        Change::TombstoneAdded {
            key,
            tombstone: t,
            owner,
            ..
        } => E::TombstoneAdded(pb::TombstoneAdded {
            tombstone: Some(tombstone(key, t)),
            owner: owner.clone().unwrap_or_default(),
        }),
        Change::TombstonePurged { key, .. } => {
            E::TombstonePurged(pb::TombstonePurged { key: key.clone() })
        }
        Change::TombstonesAcked {
            worker, revision, ..
        } => E::TombstonesAcked(pb::TombstonesAcked {
            worker: worker.clone(),
            revision: *revision,
        }),
    };
    pb::WatchEvent {
        revision,
        event: Some(event),
    }
}

/// What a [`LoadPlan`] says of a group's load: `by_load` whether the group
/// balances by load, `reported` whether this node holds any report for it.
pub fn load_picture(lp: &LoadPlan, by_load: bool, reported: bool) -> pb::LoadPicture {
    pb::LoadPicture {
        balance: if by_load {
            pb::BalanceBy::Load
        } else {
            pb::BalanceBy::Count
        }
        .into(),
        reported,
        workers: lp
            .workers
            .iter()
            .map(|w| pb::WorkerLoad {
                id: w.worker.clone(),
                load: w.load,
                capacity: w.capacity,
            })
            .collect(),
        total_load: lp.total_load,
        max_over_mean_milli: lp.before_milli,
        after_milli: lp.after_milli,
        hot: lp.hot.clone(),
        recommended_workers: lp.recommended_workers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keepalive(loads: &[(u32, u32, u64)], capacity: Option<u64>) -> pb::KeepAliveRequest {
        pb::KeepAliveRequest {
            loads: loads
                .iter()
                .map(|&(first, last, load)| pb::PartitionLoad {
                    partitions: Some(pb::PartitionRange { first, last }),
                    load,
                })
                .collect(),
            capacity,
            ..Default::default()
        }
    }

    #[test]
    fn a_load_report_is_refused_with_what_is_wrong() {
        let refused = |m: pb::KeepAliveRequest| {
            let status = load_report(&m).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status.message().to_string()
        };
        assert!(refused(keepalive(&[(0, 9, 1), (5, 6, 1)], None)).contains("overlap"));
        assert!(refused(keepalive(&[(0, 65_536, 1)], None)).contains("not a range"));
        assert!(
            refused(keepalive(&[(0, 0, load_reports::MAX_LOAD + 1)], None)).contains("coarser")
        );
        assert!(refused(keepalive(&[], Some(0))).contains("capacity 0"));
        let ok = load_report(&keepalive(&[(4, 5, 3), (0, 1, 2)], Some(10))).expect("valid");
        assert_eq!(ok.loads.len(), 2);
        assert_eq!(ok.capacity, Some(10));
    }
}
