//! A group's tombstones and the one rule for when one has expired.
//!
//! Kept by key and indexed by expiry: the leader learns whether anything has
//! expired without a scan (it looks every tick, with up to a million
//! tombstones per cluster), and a purge costs what it removes, not what is
//! kept. The index is derived: snapshots hold the map alone, in the format
//! they always had, and loading one rebuilds the index.

use std::collections::{btree_map, BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Tombstone;

/// Tombstones one `PurgeTombstones` may remove: bounds the work every
/// replica does for one log entry.
pub const MAX_PURGE: u32 = 10_000;

impl Tombstone {
    /// Whether the tombstone's TTL has run out at `now_ms`. An expired
    /// tombstone is absent to every reader and to a new put from then on,
    /// whether or not a purge has removed it yet.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }
}

/// Tombstones by key; reads go through `Deref` to the map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tombstones {
    by_key: BTreeMap<String, Tombstone>,
    /// (expires_at_ms, key) of every entry of `by_key`.
    by_expiry: BTreeSet<(u64, String)>,
}

impl Deref for Tombstones {
    type Target = BTreeMap<String, Tombstone>;

    fn deref(&self) -> &Self::Target {
        &self.by_key
    }
}

impl From<BTreeMap<String, Tombstone>> for Tombstones {
    fn from(by_key: BTreeMap<String, Tombstone>) -> Self {
        let by_expiry = by_key
            .iter()
            .map(|(key, t)| (t.expires_at_ms, key.clone()))
            .collect();
        Self { by_key, by_expiry }
    }
}

impl Serialize for Tombstones {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_key.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tombstones {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Self::from)
    }
}

impl Tombstones {
    /// Puts `tombstone` under `key`, replacing any earlier one.
    pub fn insert(&mut self, key: String, tombstone: Tombstone) {
        if let Some(old) = self.by_key.get(&key) {
            self.by_expiry.remove(&(old.expires_at_ms, key.clone()));
        }
        self.by_expiry
            .insert((tombstone.expires_at_ms, key.clone()));
        self.by_key.insert(key, tombstone);
    }

    pub fn remove(&mut self, key: &str) -> Option<Tombstone> {
        let old = self.by_key.remove(key)?;
        self.by_expiry.remove(&(old.expires_at_ms, key.to_string()));
        Some(old)
    }

    /// The tombstone of `key`, unless there is none or it has expired.
    pub fn live(&self, key: &str, now_ms: u64) -> Option<&Tombstone> {
        self.by_key.get(key).filter(|t| !t.expired(now_ms))
    }

    /// Whether any tombstone has expired at `now_ms`.
    pub fn any_expired(&self, now_ms: u64) -> bool {
        self.by_expiry
            .first()
            .is_some_and(|(expires_at_ms, _)| *expires_at_ms <= now_ms)
    }

    /// Keys of the tombstones expired at `now_ms`, earliest expiry first
    /// (then by key): the same order on every replica.
    pub fn expired(&self, now_ms: u64) -> impl Iterator<Item = &str> {
        self.by_expiry
            .iter()
            .take_while(move |(expires_at_ms, _)| *expires_at_ms <= now_ms)
            .map(|(_, key)| key.as_str())
    }

    /// For changes of partition (a split). The expiry must not change
    /// through this: the index would no longer match.
    pub fn values_mut(&mut self) -> btree_map::ValuesMut<'_, String, Tombstone> {
        self.by_key.values_mut()
    }
}
