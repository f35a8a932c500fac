//! What one worker holds, kept from its watch stream: partition → fencing
//! token, and which of them it has been asked to give back. Pure: events in,
//! changes out, so every case is tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use baton_proto::v1 as pb;
use pb::watch_event::Event as E;

use crate::partitions::{each, from_proto, ranges_of, Partitions};

/// What an event (or a re-list) means for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Assigned {
        partitions: Partitions,
        token: u64,
    },
    Revoked {
        partitions: Partitions,
        revision: u64,
    },
    Tombstone {
        key: String,
        partition: u32,
        revision: u64,
    },
    /// The group's partitions were doubled: what was held as p is now held
    /// as 2p and 2p+1 (followed by `Assigned` with the new tokens).
    Resharded {
        partitions: u32,
        revision: u64,
    },
    /// The server ended the session.
    Ended {
        reason: Ending,
        revision: u64,
    },
    /// The group's handoff timeout changed.
    HandoffTimeout {
        ms: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Drained or left: what `shutdown` (or an operator's drain) asked for.
    Left,
    /// Expired or evicted: the lease is gone.
    Expired,
    GroupDeleted,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("partition {partition} is not held by this worker (never granted, already released, or its session ended)")]
pub struct NotHeld {
    pub partition: u32,
}

#[derive(Clone)]
pub struct Holdings {
    worker: String,
    /// The session these are held in: (epoch, session id). Kept here, under
    /// the same lock, so a release always names the session that held what
    /// it gives back, even while a new session is being joined.
    session: (u64, u64),
    held: BTreeMap<u32, u64>,
    revoking: BTreeSet<u32>,
}

impl Holdings {
    pub fn new(worker: &str) -> Self {
        Self {
            worker: worker.to_string(),
            session: (0, 0),
            held: BTreeMap::new(),
            revoking: BTreeSet::new(),
        }
    }

    /// Starts session `session` (the `epoch`-th join) with nothing held.
    pub fn begin(&mut self, epoch: u64, session: u64) {
        self.session = (epoch, session);
        self.clear();
    }

    /// (epoch, session id) of the session these are held in.
    pub fn session(&self) -> (u64, u64) {
        self.session
    }

    /// Forgets everything (a new session starts with nothing).
    pub fn clear(&mut self) {
        self.held.clear();
        self.revoking.clear();
    }

    pub fn token(&self, partition: u32) -> Option<u64> {
        self.held.get(&partition).copied()
    }

    /// Partition → token of everything held.
    pub fn tokens(&self) -> &BTreeMap<u32, u64> {
        &self.held
    }

    pub fn held(&self) -> Partitions {
        ranges_of(self.held.keys().copied())
    }

    #[cfg(test)]
    pub fn revoking(&self) -> Partitions {
        ranges_of(self.revoking.iter().copied())
    }

    /// Partitions granted with `token` (from the join, or a re-list).
    pub fn grant(&mut self, partitions: &Partitions, token: u64) -> Option<Change> {
        for p in each(partitions) {
            self.held.insert(p, token);
            self.revoking.remove(&p);
        }
        (!partitions.is_empty()).then(|| Change::Assigned {
            partitions: partitions.clone(),
            token,
        })
    }

    /// Takes `partitions` out before they are released, grouped by token (one
    /// Release call per token). From then on they are not held, even if the
    /// call fails: the worker must not touch them again.
    pub fn take(&mut self, partitions: &Partitions) -> Result<Vec<(u64, Partitions)>, NotHeld> {
        if let Some(partition) = each(partitions).find(|p| !self.held.contains_key(p)) {
            return Err(NotHeld { partition });
        }
        let mut by_token: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for p in each(partitions) {
            if let Some(token) = self.held.remove(&p) {
                self.revoking.remove(&p);
                by_token.entry(token).or_default().push(p);
            }
        }
        Ok(by_token
            .into_iter()
            .map(|(token, ps)| (token, ranges_of(ps)))
            .collect())
    }

    /// Applies one event of this worker's watch stream.
    pub fn apply(&mut self, event: &pb::WatchEvent) -> Vec<Change> {
        let revision = event.revision;
        let me = self.worker.as_str();
        match &event.event {
            Some(E::Granted(g)) if g.worker == me => self
                .grant(&from_proto(&g.ranges), g.token)
                .into_iter()
                .collect(),
            Some(E::Revoking(r)) if r.from == me => {
                // Only what is held and not already being handed off: an
                // in-flight handoff whose recipient left is restated.
                let new: Vec<u32> = each(&from_proto(&r.ranges))
                    .filter(|p| self.held.contains_key(p) && !self.revoking.contains(p))
                    .collect();
                self.revoking.extend(new.iter().copied());
                if new.is_empty() {
                    return Vec::new();
                }
                vec![Change::Revoked {
                    partitions: ranges_of(new),
                    revision,
                }]
            }
            Some(E::Released(r)) if r.worker == me => {
                for p in each(&from_proto(&r.ranges)) {
                    self.held.remove(&p);
                    self.revoking.remove(&p);
                }
                Vec::new()
            }
            Some(E::TombstoneAdded(t)) if t.owner == me => t
                .tombstone
                .as_ref()
                .map(|info| Change::Tombstone {
                    key: info.key.clone(),
                    partition: info.partition,
                    revision: info.revision.max(revision),
                })
                .into_iter()
                .collect(),
            Some(E::WorkerLeft(l)) if l.worker == me => {
                self.clear();
                let reason = match l.reason() {
                    pb::LeaveReason::Left | pb::LeaveReason::Drained => Ending::Left,
                    _ => Ending::Expired,
                };
                vec![Change::Ended { reason, revision }]
            }
            Some(E::GroupChanged(g)) => self.group_changed(g, revision),
            _ => Vec::new(),
        }
    }

    fn group_changed(&mut self, g: &pb::GroupChanged, revision: u64) -> Vec<Change> {
        use pb::group_changed::Change as C;
        let mut changes = Vec::new();
        if let Some(ms) = g.config.as_ref().and_then(|c| c.handoff_timeout_ms) {
            changes.push(Change::HandoffTimeout { ms });
        }
        match C::try_from(g.change) {
            Ok(C::Split) => {
                let partitions = g
                    .config
                    .as_ref()
                    .and_then(|c| c.partitions)
                    .unwrap_or_default();
                // Children of a held partition are new grants with new tokens.
                let children: Vec<u32> =
                    self.held.keys().flat_map(|&p| [p * 2, p * 2 + 1]).collect();
                let revoking: BTreeSet<u32> = self
                    .revoking
                    .iter()
                    .flat_map(|&p| [p * 2, p * 2 + 1])
                    .collect();
                self.clear();
                changes.push(Change::Resharded {
                    partitions,
                    revision,
                });
                changes.extend(self.grant(&ranges_of(children), revision));
                self.revoking = revoking;
            }
            Ok(C::Deleted) => {
                self.clear();
                changes.push(Change::Ended {
                    reason: Ending::GroupDeleted,
                    revision,
                });
            }
            _ => {}
        }
        changes
    }

    /// Reconciles with a fresh listing (after the watch history was
    /// compacted past this worker's position), returning only what differs
    /// from what the application was told. A session that is gone, or
    /// partitions taken without a release, end the session.
    pub fn reconcile(&mut self, listing: &pb::AssignmentResponse, session: u64) -> Vec<Change> {
        let revision = listing.revision;
        let Some(mine) = listing
            .workers
            .iter()
            .find(|w| w.id == self.worker && w.session == session)
        else {
            self.clear();
            return vec![Change::Ended {
                reason: Ending::Expired,
                revision,
            }];
        };
        let mut now: BTreeMap<u32, u64> = BTreeMap::new();
        for g in &mine.grants {
            for p in each(&from_proto(&g.ranges)) {
                now.insert(p, g.token);
            }
        }
        if self.held.keys().any(|p| !now.contains_key(p)) {
            self.clear();
            return vec![Change::Ended {
                reason: Ending::Expired,
                revision,
            }];
        }
        let mut new_grants: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for (&p, &token) in &now {
            if self.held.get(&p) != Some(&token) {
                new_grants.entry(token).or_default().push(p);
            }
        }
        let mut changes = Vec::new();
        for (token, ps) in new_grants {
            changes.extend(self.grant(&ranges_of(ps), token));
        }
        let asked: Vec<u32> = listing
            .moving
            .iter()
            .filter(|h| h.from == self.worker)
            .flat_map(|h| each(&from_proto(&h.ranges)).collect::<Vec<_>>())
            .filter(|p| self.held.contains_key(p) && !self.revoking.contains(p))
            .collect();
        if !asked.is_empty() {
            self.revoking.extend(asked.iter().copied());
            changes.push(Change::Revoked {
                partitions: ranges_of(asked),
                revision,
            });
        }
        changes
    }
}

#[cfg(test)]
#[path = "holdings_tests.rs"]
mod tests;
