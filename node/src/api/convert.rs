//! Conversions between the protocol's messages and the domain's types.

use baton_proto::v1 as pb;
use tonic::Status;

use crate::domain::{
    Group, GroupConfig, KeyHash, Move, PartitionRange, Plan, SessionState, Tombstone,
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

pub fn group(name: &str, g: &Group) -> pb::Group {
    let draining = g
        .sessions
        .values()
        .filter(|s| s.state == SessionState::Draining)
        .count();
    pb::Group {
        name: name.to_string(),
        config: Some(config_to_proto(&g.config)),
        key_hash: match g.config.key_hash {
            KeyHash::Xxh3 => "xxh3".to_string(),
        },
        config_revision: g.config_revision,
        frozen: g.frozen,
        workers: u32::try_from(g.sessions.len()).unwrap_or(u32::MAX),
        draining_workers: u32::try_from(draining).unwrap_or(u32::MAX),
        tombstones: g.tombstones.len() as u64,
    }
}

/// Half-open domain ranges → inclusive protocol ranges.
pub fn ranges(ranges: &[PartitionRange]) -> Vec<pb::PartitionRange> {
    ranges
        .iter()
        .map(|r| pb::PartitionRange {
            start: r.start,
            end: r.end.saturating_sub(1),
        })
        .collect()
}

/// Inclusive protocol ranges → half-open domain ranges; refuses `start > end`.
/// (Ranges past the group's partition count are refused by the domain.)
pub fn ranges_from(
    field: &str,
    ranges: &[pb::PartitionRange],
) -> Result<Vec<PartitionRange>, Status> {
    if ranges.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field}: give at least one partition range"
        )));
    }
    ranges
        .iter()
        .map(|r| {
            if r.start > r.end {
                return Err(Status::invalid_argument(format!(
                    "{field}: range {}-{} starts after it ends",
                    r.start, r.end
                )));
            }
            Ok(PartitionRange::new(r.start, r.end.saturating_add(1)))
        })
        .collect()
}

pub fn assignment(name: &str, revision: u64, g: &Group) -> pb::AssignmentResponse {
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
                state: match s.state {
                    SessionState::Active => "active".into(),
                    SessionState::Draining => "draining".into(),
                },
                session: s.id,
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
