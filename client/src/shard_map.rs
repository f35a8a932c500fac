//! `ShardMap`: which partition a key falls in and who owns it, for producers
//! that route records to the owning worker. Loaded from a listing, then kept
//! current by a group-wide watch (splits included); it re-lists by itself if
//! the watch history was compacted past it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use pb::watch_event::Event as E;
use tokio::sync::watch;

use crate::admin::AdminClient;
use crate::partitions::{each, from_proto, key_hash, partition_of_hash};
use crate::transport::Transport;
use crate::watch::{compacted_revision, Watch};
use crate::{ClientError, FencingToken};

/// Where a key goes, as of `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub partition: u32,
    /// `None` while the partition is unassigned.
    pub owner: Option<String>,
    pub token: FencingToken,
    /// Set while the partition is being handed off (to `None`: recipient
    /// not chosen yet); the owner still holds it until it releases.
    pub moving: Option<Option<String>>,
    pub revision: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Slot {
    owner: Option<String>,
    token: u64,
    moving: Option<Option<String>>,
}

/// The map's state: pure, fed by listings and events.
#[derive(Debug, Default)]
struct MapState {
    revision: u64,
    slots: Vec<Slot>,
    deleted: bool,
}

impl MapState {
    fn from_listing(listing: &pb::AssignmentResponse) -> Self {
        let mut slots = vec![Slot::default(); listing.partitions as usize];
        for w in &listing.workers {
            for g in &w.grants {
                for p in each(&from_proto(&g.ranges)) {
                    if let Some(s) = slots.get_mut(p as usize) {
                        s.owner = Some(w.id.clone());
                        s.token = g.token;
                    }
                }
            }
        }
        for h in &listing.moving {
            for p in each(&from_proto(&h.ranges)) {
                if let Some(s) = slots.get_mut(p as usize) {
                    s.moving = Some((!h.to.is_empty()).then(|| h.to.clone()));
                }
            }
        }
        Self {
            revision: listing.revision,
            slots,
            deleted: false,
        }
    }

    fn slots_of<'a>(
        &'a mut self,
        ranges: &'a [pb::PartitionRange],
    ) -> impl Iterator<Item = &'a mut Slot> + 'a {
        let len = self.slots.len();
        let mut wanted: Vec<usize> = each(&from_proto(ranges))
            .map(|p| p as usize)
            .filter(|&p| p < len)
            .collect();
        wanted.dedup();
        self.slots
            .iter_mut()
            .enumerate()
            .filter(move |(i, _)| wanted.binary_search(i).is_ok())
            .map(|(_, s)| s)
    }

    fn apply(&mut self, event: &pb::WatchEvent) {
        let revision = event.revision;
        match &event.event {
            Some(E::Granted(g)) => {
                for s in self.slots_of(&g.ranges) {
                    *s = Slot {
                        owner: Some(g.worker.clone()),
                        token: g.token,
                        moving: None,
                    };
                }
            }
            Some(E::Released(r)) => {
                for s in self.slots_of(&r.ranges) {
                    if s.owner.as_deref() == Some(r.worker.as_str()) {
                        *s = Slot::default();
                    }
                }
            }
            Some(E::Revoking(r)) => {
                let to = (!r.to.is_empty()).then(|| r.to.clone());
                for s in self.slots_of(&r.ranges) {
                    if s.owner.as_deref() == Some(r.from.as_str()) {
                        s.moving = Some(to.clone());
                    }
                }
            }
            Some(E::GroupChanged(g)) => {
                use pb::group_changed::Change as C;
                match C::try_from(g.change) {
                    Ok(C::Split) => {
                        // Children of a held partition are granted anew at
                        // the split's revision.
                        self.slots = self
                            .slots
                            .iter()
                            .flat_map(|s| {
                                let child = Slot {
                                    token: if s.owner.is_some() { revision } else { s.token },
                                    ..s.clone()
                                };
                                [child.clone(), child]
                            })
                            .collect();
                    }
                    Ok(C::Deleted) => {
                        self.deleted = true;
                        self.slots.iter_mut().for_each(|s| *s = Slot::default());
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        self.revision = self.revision.max(revision);
    }

    fn route(&self, partition: u32) -> Route {
        let slot = self
            .slots
            .get(partition as usize)
            .cloned()
            .unwrap_or_default();
        Route {
            partition,
            owner: slot.owner,
            token: slot.token,
            moving: slot.moving,
            revision: self.revision,
        }
    }
}

/// A live key → partition → owner map of one group.
pub struct ShardMap {
    state: Arc<RwLock<MapState>>,
    revision: watch::Receiver<u64>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for ShardMap {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl ShardMap {
    /// Loads `group`'s assignment and follows it from then on.
    pub async fn connect(endpoints: &[String], group: &str) -> Result<Self, ClientError> {
        Self::connect_with(endpoints, group, Transport::default()).await
    }

    /// [`ShardMap::connect`] over TLS, with a token, as `transport` says.
    pub async fn connect_with(
        endpoints: &[String],
        group: &str,
        transport: Transport,
    ) -> Result<Self, ClientError> {
        let mut admin =
            AdminClient::new(endpoints, Duration::from_secs(10))?.with_transport(transport);
        let info = admin
            .call(|ch| {
                let request = pb::GetGroupRequest {
                    group: group.to_string(),
                    serializable: false,
                };
                async move { AdminGrpc::new(ch).get_group(request).await }
            })
            .await?;
        let hash = info.group.map(|g| g.key_hash()).unwrap_or_default();
        if hash != pb::KeyHash::Xxh3 {
            return Err(ClientError::Status(tonic::Status::unimplemented(format!(
                "group {group:?} hashes keys with {}; this ShardMap knows xxh3 only",
                hash.as_str_name()
            ))));
        }
        let listing = list(&mut admin, group).await?;
        let state = Arc::new(RwLock::new(MapState::from_listing(&listing)));
        let (tx, revision) = watch::channel(listing.revision);
        let follower = tokio::spawn(follow(
            admin,
            endpoints.to_vec(),
            group.to_string(),
            state.clone(),
            tx,
        ));
        Ok(Self {
            state,
            revision,
            follower,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, MapState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The group's partition count (changes with a split).
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.read().slots.len()).unwrap_or(u32::MAX)
    }

    /// Every event up to this revision is in the map.
    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// Whether the group was deleted.
    pub fn deleted(&self) -> bool {
        self.read().deleted
    }

    /// The partition of `key` (the server's hash and ranges: see
    /// [`crate::partitions`]).
    pub fn partition(&self, key: &[u8]) -> u32 {
        partition_of_hash(key_hash(key), self.partitions())
    }

    /// Partition and owner of `key`.
    pub fn route(&self, key: &[u8]) -> Route {
        self.route_hash(key_hash(key))
    }

    /// Partition and owner of an explicit 64-bit hash key.
    pub fn route_hash(&self, hash: u64) -> Route {
        let state = self.read();
        let partitions = u32::try_from(state.slots.len()).unwrap_or(u32::MAX);
        state.route(partition_of_hash(hash, partitions))
    }

    /// Owner of a partition by number; `None` if the group has no such partition.
    pub fn route_partition(&self, partition: u32) -> Option<Route> {
        let state = self.read();
        ((partition as usize) < state.slots.len()).then(|| state.route(partition))
    }

    /// Waits until the map has applied `revision` (after a write of your own,
    /// say); gives up after `timeout`.
    pub async fn wait_for(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.revision.clone();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn list(admin: &mut AdminClient, group: &str) -> Result<pb::AssignmentResponse, ClientError> {
    admin
        .call(|ch| {
            let request = pb::GetAssignmentRequest {
                group: group.to_string(),
                serializable: false,
            };
            async move { AdminGrpc::new(ch).get_assignment(request).await }
        })
        .await
}

async fn follow(
    mut admin: AdminClient,
    endpoints: Vec<String>,
    group: String,
    state: Arc<RwLock<MapState>>,
    revision: watch::Sender<u64>,
) {
    loop {
        let from = state.read().map(|s| s.revision).unwrap_or_default() + 1;
        let request = pb::WatchRequest {
            group: group.clone(),
            from_revision: from,
            worker: String::new(),
            kinds: Vec::new(),
        };
        let Ok(watch) = Watch::new(&endpoints, request, Duration::from_secs(365 * 86_400)) else {
            return;
        };
        let mut watch = watch.with_transport(admin.transport().clone());
        loop {
            match watch.next().await {
                Ok(message) => {
                    let at = {
                        let mut s = state.write().unwrap_or_else(|p| p.into_inner());
                        message.events.iter().for_each(|e| s.apply(e));
                        s.revision = s.revision.max(message.revision);
                        s.revision
                    };
                    revision.send_replace(at);
                }
                Err(ClientError::Status(s)) if compacted_revision(&s).is_some() => {
                    match list(&mut admin, &group).await {
                        Ok(listing) => {
                            let fresh = MapState::from_listing(&listing);
                            *state.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                            revision.send_replace(listing.revision);
                        }
                        Err(e) => {
                            tracing::warn!("shard map: re-listing {group:?}: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!("shard map: watching {group:?}: {e}");
                    if e.code() == Some(tonic::Code::NotFound) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::to_proto;

    fn ev(revision: u64, e: E) -> pb::WatchEvent {
        pb::WatchEvent {
            revision,
            event: Some(e),
        }
    }

    #[test]
    fn events_move_ownership_and_a_split_doubles_the_map() {
        let listing = pb::AssignmentResponse {
            revision: 10,
            partitions: 4,
            workers: vec![pb::WorkerAssignment {
                id: "w1".into(),
                grants: vec![pb::Grant {
                    ranges: to_proto(&[0..=1]),
                    token: 7,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut m = MapState::from_listing(&listing);
        assert_eq!(m.route(1).owner.as_deref(), Some("w1"));
        assert_eq!(m.route(2).owner, None);
        m.apply(&ev(
            11,
            E::Revoking(pb::Revoking {
                from: "w1".into(),
                to: "w2".into(),
                ranges: to_proto(&[1..=1]),
                since_ms: 0,
            }),
        ));
        assert_eq!(m.route(1).moving, Some(Some("w2".into())));
        assert_eq!(
            m.route(1).owner.as_deref(),
            Some("w1"),
            "held until released"
        );
        m.apply(&ev(
            12,
            E::Released(pb::Released {
                worker: "w1".into(),
                ranges: to_proto(&[1..=1]),
            }),
        ));
        m.apply(&ev(
            12,
            E::Granted(pb::Granted {
                worker: "w2".into(),
                ranges: to_proto(&[1..=1]),
                token: 12,
            }),
        ));
        assert_eq!(
            m.route(1),
            Route {
                partition: 1,
                owner: Some("w2".into()),
                token: 12,
                moving: None,
                revision: 12
            }
        );
        m.apply(&ev(
            13,
            E::GroupChanged(pb::GroupChanged {
                change: pb::group_changed::Change::Split as i32,
                config: None,
            }),
        ));
        assert_eq!(m.slots.len(), 8);
        assert_eq!(m.route(0).owner.as_deref(), Some("w1"));
        assert_eq!(m.route(3).owner.as_deref(), Some("w2"));
        assert_eq!(m.route(3).token, 13, "children are new grants");
        assert_eq!(m.route(5).owner, None);
        assert_eq!(m.route(5).token, 0);
    }
}
