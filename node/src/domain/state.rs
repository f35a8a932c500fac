//! The replicated state: groups, their sessions, assignment and tombstones.
//! Stored in snapshots as it is declared here: a field is never reordered,
//! inserted or removed (the golden test in `tests/format.rs` pins the bytes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{invalid, DomainError};
use super::load::GroupLoad;
use super::{hash, validate, Assignment, KeyHash, Locator, PartitionRange, Tombstones};

/// A group's settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Partition count P, 1..=65,536.
    pub partitions: u32,
    pub key_hash: KeyHash,
    /// How long an owner has to release a revoked partition before its
    /// session is ended.
    pub handoff_timeout_ms: u64,
    /// Handoffs in flight at once, at most.
    pub max_in_flight: u32,
    /// Lease TTL for workers that do not ask for one.
    pub default_ttl_ms: u64,
    /// How long an expired worker's partitions stay reserved for it.
    pub rejoin_grace_ms: u64,
    /// How long a tombstone is kept when its put names no TTL.
    pub tombstone_ttl_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            key_hash: KeyHash::Xxh3,
            handoff_timeout_ms: 30_000,
            max_in_flight: validate::MAX_PARTITIONS,
            default_ttl_ms: 10_000,
            rejoin_grace_ms: 0,
            tombstone_ttl_ms: 7 * 24 * 3_600_000,
        }
    }
}

impl GroupConfig {
    pub fn validate(&self) -> Result<(), DomainError> {
        validate::partitions(self.partitions)?;
        validate::range_ms(
            "handoff timeout",
            self.handoff_timeout_ms,
            1_000,
            validate::MAX_HANDOFF_TIMEOUT_MS,
        )?;
        if self.max_in_flight == 0 || self.max_in_flight > validate::MAX_PARTITIONS {
            return Err(invalid("max in flight", self.max_in_flight, "1 to 65536"));
        }
        validate::ttl_ms("default lease TTL", self.default_ttl_ms)?;
        validate::range_ms(
            "rejoin grace",
            self.rejoin_grace_ms,
            0,
            validate::MAX_REJOIN_GRACE_MS,
        )?;
        validate::range_ms(
            "tombstone TTL",
            self.tombstone_ttl_ms,
            1_000,
            validate::MAX_TOMBSTONE_TTL_MS,
        )?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Active,
    /// Leaving gracefully: its partitions are handed off, then the session closes.
    Draining,
    /// An operator evicted it: the leader no longer renews its lease, which
    /// runs out within one TTL. A committed fact, so a new leader keeps it.
    Evicting,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The revision of the join: identifies this session of the worker id.
    pub id: u64,
    pub ttl_ms: u64,
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub state: SessionState,
    /// The worker has handled every tombstone on its partitions up to this
    /// revision (what tombstone barriers wait for).
    pub acked: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub partition: u32,
    /// The key's hash when the partition came from it (kept so a split can
    /// recompute the partition); `None` for an explicit partition.
    pub hash: Option<u64>,
    pub revision: u64,
    pub expires_at_ms: u64,
}

impl Tombstone {
    /// The tombstone's partition once its group has split into
    /// `partitions`: recomputed from the key's hash, or the first child of
    /// an explicit partition.
    pub fn partition_after_split(&self, partitions: u32) -> u32 {
        match self.hash {
            Some(h) => hash::partition_of(h, partitions),
            None => self.partition * 2,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub config: GroupConfig,
    /// Revision of the last change to the config (compare-and-set updates).
    pub config_revision: u64,
    pub frozen: bool,
    /// Deleted with live sessions (`DeleteGroup` with force): nothing is
    /// granted, no worker joins, and the group goes with its last session.
    pub deleting: bool,
    pub sessions: BTreeMap<String, Session>,
    pub assignment: Assignment,
    pub tombstones: Tombstones,
}

impl Group {
    pub(crate) fn new(config: GroupConfig, revision: u64) -> Self {
        Self {
            assignment: Assignment::new(config.partitions),
            config,
            config_revision: revision,
            frozen: false,
            deleting: false,
            sessions: BTreeMap::new(),
            tombstones: Tombstones::default(),
        }
    }

    /// Whether a handoff may complete to `worker`: an active session, in a
    /// group that is not being deleted.
    pub(crate) fn may_receive(&self, worker: &str) -> bool {
        !self.deleting
            && self
                .sessions
                .get(worker)
                .is_some_and(|s| s.state == SessionState::Active)
    }

    /// Partitions held by `worker` (owned, moving or not), as ranges.
    pub fn held_by(&self, worker: &str) -> Vec<PartitionRange> {
        self.assignment.find(|s| s.owner.as_deref() == Some(worker))
    }

    /// How the partitions stand, counted in one pass over the assignment.
    pub fn partition_counts(&self) -> PartitionCounts<'_> {
        let mut counts = PartitionCounts {
            held: self.sessions.keys().map(|w| (w.as_str(), 0)).collect(),
            handing_off: 0,
            unassigned: 0,
        };
        for (range, slot) in self.assignment.runs() {
            let n = u64::from(range.len());
            match &slot.owner {
                Some(owner) => *counts.held.entry(owner.as_str()).or_default() += n,
                None => counts.unassigned += n,
            }
            if slot.revoking.is_some() {
                counts.handing_off += n;
            }
        }
        counts
    }

    pub(crate) fn check_partitions(
        &self,
        group: &str,
        ranges: &[PartitionRange],
    ) -> Result<(), DomainError> {
        let partitions = self.config.partitions;
        for r in ranges {
            if r.is_empty() || r.end > partitions {
                return Err(DomainError::PartitionOutOfRange {
                    group: group.to_string(),
                    partition: if r.is_empty() { r.start } else { r.end - 1 },
                    partitions,
                });
            }
        }
        Ok(())
    }
    /// The partition `locator` names for `key` in this group (named
    /// `group`), with the key's hash when the partition came from one (a
    /// split recomputes it from the hash): how tombstones and routing find
    /// a key's partition.
    pub fn locate(
        &self,
        group: &str,
        key: &str,
        locator: &Locator,
    ) -> Result<(u32, Option<u64>), DomainError> {
        let partitions = self.config.partitions;
        match locator {
            Locator::Key => {
                let h = self.config.key_hash.hash(key.as_bytes());
                Ok((hash::partition_of(h, partitions), Some(h)))
            }
            Locator::Hash(h) => Ok((hash::partition_of(*h, partitions), Some(*h))),
            Locator::Partition(p) if *p >= partitions => Err(DomainError::PartitionOutOfRange {
                group: group.to_string(),
                partition: *p,
                partitions,
            }),
            Locator::Partition(p) => Ok((*p, None)),
        }
    }
}

/// A group's partitions, counted (see [`Group::partition_counts`]).
#[derive(Debug, PartialEq, Eq)]
pub struct PartitionCounts<'a> {
    /// Per worker with a session (0 when it holds none), moving or not.
    pub held: BTreeMap<&'a str, u64>,
    /// Being handed off: the owner has been asked to release them.
    pub handing_off: u64,
    pub unassigned: u64,
}

/// The replicated state.
///
/// Stored as the tuple (revision, compacted, groups), as it always was,
/// while no group balances by load; with one that does, as
/// ([`EXTENDED`], revision, compacted, groups, load). A revision is never
/// `u64::MAX`, so the first value tells the two apart, and a state without
/// load rules stays readable by nodes that predate them (a leader sets
/// load rules only once every member reads them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Cluster-wide counter bumped once per applied command (a Raft entry
    /// may carry a batch of them) and per blank or membership entry.
    /// Fencing tokens are revisions.
    pub revision: u64,
    /// The event history is kept for revisions after this one only.
    pub compacted: u64,
    pub groups: BTreeMap<String, Group>,
    /// The groups that balance by load, and their rules.
    pub load: BTreeMap<String, GroupLoad>,
}

/// The first value of a stored state that carries load rules.
const EXTENDED: u64 = u64::MAX;

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        if self.load.is_empty() {
            let mut t = s.serialize_tuple(3)?;
            t.serialize_element(&self.revision)?;
            t.serialize_element(&self.compacted)?;
            t.serialize_element(&self.groups)?;
            return t.end();
        }
        let mut t = s.serialize_tuple(5)?;
        t.serialize_element(&EXTENDED)?;
        t.serialize_element(&self.revision)?;
        t.serialize_element(&self.compacted)?;
        t.serialize_element(&self.groups)?;
        t.serialize_element(&self.load)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct Stored;
        impl<'de> Visitor<'de> for Stored {
            type Value = State;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a stored state")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<State, A::Error> {
                fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
                    seq: &mut A,
                    index: usize,
                ) -> Result<T, A::Error> {
                    seq.next_element()?
                        .ok_or_else(|| A::Error::invalid_length(index, &"a stored state"))
                }
                let first: u64 = next(&mut seq, 0)?;
                let extended = first == EXTENDED;
                let revision = if extended { next(&mut seq, 1)? } else { first };
                let at = usize::from(extended);
                let compacted = next(&mut seq, at + 1)?;
                let groups = next(&mut seq, at + 2)?;
                let load = if extended {
                    next(&mut seq, 4)?
                } else {
                    BTreeMap::new()
                };
                Ok(State {
                    revision,
                    compacted,
                    groups,
                    load,
                })
            }
        }
        // Bincode reads a tuple's elements one by one as they are asked
        // for: the first tells how many follow.
        d.deserialize_tuple(5, Stored)
    }
}

impl State {
    /// Sessions and tombstones over every group, plus one per group: how
    /// much a copy of the state costs, roughly.
    pub fn entries(&self) -> u64 {
        self.groups
            .values()
            .map(|g| 1 + g.sessions.len() as u64 + g.tombstones.len() as u64)
            .sum()
    }

    /// The group named `name`; a name no group can have is refused as
    /// invalid before any lookup.
    pub fn group(&self, name: &str) -> Result<&Group, DomainError> {
        validate::group_name(name)?;
        self.groups
            .get(name)
            .ok_or_else(|| DomainError::GroupNotFound(name.to_string()))
    }

    /// `worker`'s session in `group`, with the group.
    pub fn session<'a>(
        &'a self,
        group: &str,
        worker: &str,
    ) -> Result<(&'a Group, &'a Session), DomainError> {
        let g = self.group(group)?;
        validate::worker_id(worker)?;
        let s = g
            .sessions
            .get(worker)
            .ok_or_else(|| DomainError::WorkerNotFound {
                group: group.to_string(),
                worker: worker.to_string(),
            })?;
        Ok((g, s))
    }
}
