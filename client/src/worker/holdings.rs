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

pub struct Holdings {
    worker: String,
    held: BTreeMap<u32, u64>,
    revoking: BTreeSet<u32>,
}

impl Holdings {
    pub fn new(worker: &str) -> Self {
        Self {
            worker: worker.to_string(),
            held: BTreeMap::new(),
            revoking: BTreeSet::new(),
        }
    }

    /// Forgets everything (a new session starts with nothing).
    pub fn clear(&mut self) {
        self.held.clear();
        self.revoking.clear();
    }

    pub fn token(&self, partition: u32) -> Option<u64> {
        self.held.get(&partition).copied()
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
                let reason = match l.reason.as_str() {
                    "left" | "drained" => Ending::Left,
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
mod tests {
    use super::*;
    use crate::partitions::to_proto;

    fn event(revision: u64, e: E) -> pb::WatchEvent {
        pb::WatchEvent {
            revision,
            event: Some(e),
        }
    }

    fn granted(worker: &str, ranges: Partitions, token: u64) -> pb::WatchEvent {
        event(
            token,
            E::Granted(pb::Granted {
                worker: worker.into(),
                ranges: to_proto(&ranges),
                token,
            }),
        )
    }

    fn revoking(revision: u64, from: &str, ranges: Partitions) -> pb::WatchEvent {
        event(
            revision,
            E::Revoking(pb::Revoking {
                from: from.into(),
                to: "w2".into(),
                ranges: to_proto(&ranges),
                since_ms: 0,
            }),
        )
    }

    #[test]
    fn grants_and_revocations_of_this_worker_only() {
        let mut h = Holdings::new("w1");
        assert_eq!(
            h.apply(&granted("w1", vec![0..=9], 5)),
            vec![Change::Assigned {
                partitions: vec![0..=9],
                token: 5
            }]
        );
        assert!(h.apply(&granted("w2", vec![10..=19], 6)).is_empty());
        assert_eq!(h.token(3), Some(5));
        assert_eq!(h.token(10), None);
        assert_eq!(
            h.apply(&revoking(7, "w1", vec![5..=12])),
            vec![Change::Revoked {
                partitions: vec![5..=9],
                revision: 7
            }],
            "only what it holds"
        );
        assert!(
            h.apply(&revoking(8, "w1", vec![5..=9])).is_empty(),
            "a restated handoff is not a second revocation"
        );
        assert_eq!(h.revoking(), vec![5..=9]);
    }

    #[test]
    fn take_groups_by_token_and_refuses_what_is_not_held() {
        let mut h = Holdings::new("w1");
        h.apply(&granted("w1", vec![0..=4], 5));
        h.apply(&granted("w1", vec![5..=9], 8));
        assert_eq!(h.take(&vec![3..=12]), Err(NotHeld { partition: 10 }));
        assert_eq!(h.held(), vec![0..=9], "a refused take changes nothing");
        assert_eq!(
            h.take(&vec![3..=6]),
            Ok(vec![(5, vec![3..=4]), (8, vec![5..=6])])
        );
        assert_eq!(h.held(), vec![0..=2, 7..=9]);
        assert_eq!(h.take(&vec![4..=4]), Err(NotHeld { partition: 4 }));
    }

    #[test]
    fn tombstones_on_its_partitions_and_the_end_of_the_session() {
        let mut h = Holdings::new("w1");
        h.apply(&granted("w1", vec![0..=9], 5));
        let tomb = |owner: &str| {
            event(
                9,
                E::TombstoneAdded(pb::TombstoneAdded {
                    tombstone: Some(pb::TombstoneInfo {
                        key: "acct-1".into(),
                        partition: 4,
                        revision: 9,
                        expires_at_ms: 0,
                    }),
                    owner: owner.into(),
                }),
            )
        };
        assert!(h.apply(&tomb("w2")).is_empty());
        assert_eq!(
            h.apply(&tomb("w1")),
            vec![Change::Tombstone {
                key: "acct-1".into(),
                partition: 4,
                revision: 9
            }]
        );
        let left = |reason: &str| {
            event(
                10,
                E::WorkerLeft(pb::WorkerLeft {
                    worker: "w1".into(),
                    reason: reason.into(),
                }),
            )
        };
        assert_eq!(
            h.apply(&left("expired")),
            vec![Change::Ended {
                reason: Ending::Expired,
                revision: 10
            }]
        );
        assert!(h.held().is_empty());
        assert_eq!(
            h.apply(&left("drained")),
            vec![Change::Ended {
                reason: Ending::Left,
                revision: 10
            }]
        );
    }

    #[test]
    fn a_split_hands_the_children_with_new_tokens() {
        let mut h = Holdings::new("w1");
        h.apply(&granted("w1", vec![2..=3], 5));
        h.apply(&revoking(6, "w1", vec![3..=3]));
        let split = event(
            12,
            E::GroupChanged(pb::GroupChanged {
                change: pb::group_changed::Change::Split as i32,
                config: Some(pb::GroupConfig {
                    partitions: Some(16),
                    ..Default::default()
                }),
            }),
        );
        assert_eq!(
            h.apply(&split),
            vec![
                Change::Resharded {
                    partitions: 16,
                    revision: 12
                },
                Change::Assigned {
                    partitions: vec![4..=7],
                    token: 12
                }
            ]
        );
        assert_eq!(h.revoking(), vec![6..=7]);
    }

    fn listing(
        session: u64,
        grants: Vec<(Partitions, u64)>,
        moving: Partitions,
    ) -> pb::AssignmentResponse {
        pb::AssignmentResponse {
            revision: 50,
            workers: vec![pb::WorkerAssignment {
                id: "w1".into(),
                session,
                grants: grants
                    .into_iter()
                    .map(|(r, token)| pb::Grant {
                        ranges: to_proto(&r),
                        token,
                    })
                    .collect(),
                ..Default::default()
            }],
            moving: vec![pb::Handoff {
                ranges: to_proto(&moving),
                from: "w1".into(),
                to: "w2".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn reconcile_emits_only_the_differences() {
        let mut h = Holdings::new("w1");
        h.apply(&granted("w1", vec![0..=9], 5));
        h.apply(&revoking(6, "w1", vec![0..=1]));
        let changes = h.reconcile(
            &listing(3, vec![(vec![0..=9], 5), (vec![20..=21], 40)], vec![0..=3]),
            3,
        );
        assert_eq!(
            changes,
            vec![
                Change::Assigned {
                    partitions: vec![20..=21],
                    token: 40
                },
                Change::Revoked {
                    partitions: vec![2..=3],
                    revision: 50
                }
            ]
        );
        assert!(
            h.reconcile(
                &listing(3, vec![(vec![0..=9], 5), (vec![20..=21], 40)], vec![0..=3]),
                3
            )
            .is_empty(),
            "nothing new the second time"
        );
    }

    #[test]
    fn reconcile_ends_a_session_that_is_gone_or_lost_partitions() {
        let mut h = Holdings::new("w1");
        h.apply(&granted("w1", vec![0..=9], 5));
        let ended = vec![Change::Ended {
            reason: Ending::Expired,
            revision: 50,
        }];
        assert_eq!(
            h.reconcile(&listing(4, vec![(vec![0..=9], 5)], vec![]), 3),
            ended,
            "another session"
        );
        h.apply(&granted("w1", vec![0..=9], 5));
        assert_eq!(
            h.reconcile(&listing(3, vec![(vec![0..=4], 5)], vec![]), 3),
            ended,
            "taken without a release"
        );
        assert!(h.held().is_empty());
    }
}
