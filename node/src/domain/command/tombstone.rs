//! Commands on a group's tombstones: put, purge, acknowledge.

use serde::{Deserialize, Serialize};

use super::{same_session, Decision};
use crate::domain::error::invalid;
use crate::domain::{validate, Change, Event, Reply, State, Tombstone, MAX_PURGE};

/// How a tombstone names its partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Locator {
    /// Hash the key with the group's key hash.
    Key,
    /// An explicit 64-bit hash key.
    Hash(u64),
    /// An explicit partition.
    Partition(u32),
}

/// Puts a tombstone for `key`: `Command::PutTombstone` and
/// `Command::PutTombstoneV2` carry the same fields and differ only in
/// their rule for an expired tombstone under the key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PutTombstone {
    pub group: String,
    pub key: String,
    pub locator: Locator,
    pub ttl_ms: Option<u64>,
}

/// What a put meets under its key (see `Command::PutTombstoneV2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutRule {
    /// `PutTombstone`: the first put stands, expired or not.
    FirstPutStands,
    /// `PutTombstoneV2`: an expired tombstone is gone, and the put is a new
    /// deletion.
    ExpiredIsGone,
}

impl PutTombstone {
    /// `now_ms`: the tombstone expires its TTL after it, and under
    /// [`PutRule::ExpiredIsGone`] one expired by then is gone.
    pub fn decide(&self, state: &State, rev: u64, now_ms: u64, rule: PutRule) -> Decision {
        let (group, key) = (&self.group, &self.key);
        validate::key(key)?;
        let g = state.group(group)?;
        let existing = match rule {
            PutRule::ExpiredIsGone => g.tombstones.live(key, now_ms),
            PutRule::FirstPutStands => g.tombstones.get(key),
        };
        if let Some(existing) = existing {
            // Idempotent: the first put stands (until it expires,
            // under `PutTombstoneV2`; a put after that is a new
            // deletion, delivered anew).
            let reply = Reply::Tombstone {
                revision: existing.revision,
                partition: existing.partition,
            };
            return Ok((reply, Vec::new()));
        }
        let ttl = self.ttl_ms.unwrap_or(g.config.tombstone_ttl_ms);
        validate::range_ms("tombstone TTL", ttl, 1_000, validate::MAX_TOMBSTONE_TTL_MS)?;
        let (partition, hash) = g.locate(group, key, &self.locator)?;
        let tombstone = Tombstone {
            partition,
            hash,
            revision: rev,
            expires_at_ms: now_ms.saturating_add(ttl),
        };
        let events = vec![Event::new(
            group,
            Change::TombstoneAdded {
                key: key.clone(),
                tombstone,
                owner: g.assignment.slot(partition).owner.clone(),
            },
        )];
        Ok((
            Reply::Tombstone {
                revision: rev,
                partition,
            },
            events,
        ))
    }
}

/// Removes up to `limit` (1 to [`MAX_PURGE`]) of the group's tombstones
/// that have expired at the proposal's time, earliest expiry first.
/// (`limit` was added before anything proposed this command, so no stored
/// log holds the earlier form.)
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PurgeTombstones {
    pub group: String,
    pub limit: u32,
}

impl PurgeTombstones {
    pub fn decide(&self, state: &State, now_ms: u64) -> Decision {
        let g = state.group(&self.group)?;
        let limit = self.limit;
        if !(1..=MAX_PURGE).contains(&limit) {
            return Err(invalid("purge limit", limit, format!("1 to {MAX_PURGE}")));
        }
        let events: Vec<Event> = g
            .tombstones
            .expired(now_ms)
            .take(limit as usize)
            .map(|key| {
                Event::new(
                    &self.group,
                    Change::TombstonePurged {
                        key: key.to_string(),
                    },
                )
            })
            .collect();
        Ok((
            Reply::Purged {
                count: events.len() as u64,
            },
            events,
        ))
    }
}

/// The worker has handled every tombstone on its partitions up to `revision`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AckTombstones {
    pub group: String,
    pub worker: String,
    pub session: u64,
    pub revision: u64,
}

impl AckTombstones {
    pub fn decide(&self, state: &State, rev: u64) -> Decision {
        let (group, worker, revision) = (&self.group, &self.worker, self.revision);
        let (_, s) = state.session(group, worker)?;
        same_session(group, worker, s, self.session, "nothing acknowledged")?;
        if revision >= rev {
            return Err(invalid(
                "acknowledged revision",
                revision,
                format!("below the current revision {rev}"),
            ));
        }
        let events = if revision > s.acked {
            vec![Event::new(
                group,
                Change::TombstonesAcked {
                    worker: worker.clone(),
                    revision,
                },
            )]
        } else {
            Vec::new()
        };
        Ok((Reply::Done, events))
    }
}
