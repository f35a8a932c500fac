//! Commands on a worker's session: join, leave (or drain), evict, expire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::handoff::{hand_over, orphan_handoffs_to};
use super::{same_session, Decision};
use crate::domain::{
    validate, Change, DomainError, Event, LeaveReason, Reply, Session, SessionState, State,
};

/// A worker starts a session; its revision is the session's id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Join {
    pub group: String,
    pub worker: String,
    pub ttl_ms: Option<u64>,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
}

impl Join {
    /// `now_ms`: what was kept for the worker is given back if kept past it.
    pub fn decide(&self, state: &State, rev: u64, now_ms: u64) -> Decision {
        let (group, worker) = (&self.group, &self.worker);
        validate::worker_id(worker)?;
        validate::weight(self.weight)?;
        validate::labels(&self.labels)?;
        let g = state.group(group)?;
        if g.deleting {
            return Err(DomainError::Precondition(format!(
                "group {group:?} is being deleted; join a group that is not"
            )));
        }
        let ttl = self.ttl_ms.unwrap_or(g.config.default_ttl_ms);
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
            weight: self.weight,
            labels: self.labels.clone(),
            state: SessionState::Active,
            acked: 0,
        };
        let mut events = vec![Event::new(
            group,
            Change::WorkerJoined {
                worker: worker.clone(),
                session,
            },
        )];
        // Restart grace: what was kept for this worker comes back, with new tokens.
        let kept = g.assignment.find(|s| {
            s.owner.is_none()
                && s.reserved
                    .as_ref()
                    .is_some_and(|r| r.worker == *worker && r.until_ms > now_ms)
        });
        if !kept.is_empty() {
            events.push(Event::new(
                group,
                Change::Granted {
                    worker: worker.clone(),
                    partitions: kept.clone(),
                    token: rev,
                },
            ));
        }
        Ok((
            Reply::Joined {
                session: rev,
                granted: kept,
            },
            events,
        ))
    }
}

/// Ends the worker's session (`drain`: hand everything off first). A
/// worker names its own session, so a stale process cannot end a newer
/// session under the same id; an operator's drain names none.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    pub group: String,
    pub worker: String,
    pub session: Option<u64>,
    pub drain: bool,
}

impl Leave {
    pub fn decide(&self, state: &State, rev: u64) -> Decision {
        let (group, worker) = (&self.group, &self.worker);
        let (g, s) = state.session(group, worker)?;
        if let Some(session) = self.session {
            same_session(group, worker, s, session, "nothing ended")?;
        }
        let mut events = Vec::new();
        let held = g.held_by(worker);
        // In a group being deleted nothing is revoked any more, so a
        // drain would wait out the lease: it leaves at once instead.
        if self.drain && !held.is_empty() && !g.deleting {
            // An evicted worker stays evicting: its lease runs out anyway.
            if s.state == SessionState::Active {
                events.push(Event::new(
                    group,
                    Change::WorkerDraining {
                        worker: worker.clone(),
                    },
                ));
                events.extend(orphan_handoffs_to(group, g, worker));
            }
            return Ok((Reply::Done, events));
        }
        events.extend(hand_over(group, g, worker, rev, None));
        events.extend(orphan_handoffs_to(group, g, worker));
        let reason = if self.drain {
            LeaveReason::Drained
        } else {
            LeaveReason::Left
        };
        events.push(Event::new(
            group,
            Change::WorkerLeft {
                worker: worker.clone(),
                reason,
            },
        ));
        Ok((Reply::Done, events))
    }
}

/// Operator eviction: the session's lease is no longer renewed, so it
/// expires within its TTL, and nothing new is granted to it meanwhile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Evict {
    pub group: String,
    pub worker: String,
}

impl Evict {
    pub fn decide(&self, state: &State) -> Decision {
        let (group, worker) = (&self.group, &self.worker);
        let (g, s) = state.session(group, worker)?;
        if s.state == SessionState::Evicting {
            return Ok((Reply::Done, Vec::new()));
        }
        let mut events = vec![Event::new(
            group,
            Change::WorkerEvicting {
                worker: worker.clone(),
            },
        )];
        events.extend(orphan_handoffs_to(group, g, worker));
        Ok((Reply::Done, events))
    }
}

/// Proposed by the leader once a session's lease has passed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExpireSession {
    pub group: String,
    pub worker: String,
    pub session: u64,
}

impl ExpireSession {
    /// `now_ms`: restart grace keeps the worker's partitions from then on.
    pub fn decide(&self, state: &State, rev: u64, now_ms: u64) -> Decision {
        let (group, worker) = (&self.group, &self.worker);
        let (g, s) = state.session(group, worker)?;
        same_session(group, worker, s, self.session, "nothing expired")?;
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
        events.push(Event::new(
            group,
            Change::WorkerLeft {
                worker: worker.clone(),
                reason,
            },
        ));
        Ok((Reply::Done, events))
    }
}
