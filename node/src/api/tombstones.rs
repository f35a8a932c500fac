//! The `Tombstones` service: deletion markers.
//!
//! The gate (`api::policy`) has checked acknowledgements' worker and
//! forwarded acknowledgements and linearizable reads to the leader before a
//! handler here runs. A put forwards itself: it waits for its barrier here,
//! where the caller is connected.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::tombstones_server::Tombstones;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::{convert, forward};
use crate::clock::now_ms;
use crate::cluster::{Leader, Route, FORWARDED_BY};
use crate::domain::command::{AckTombstones, PutTombstone};
use crate::domain::{quoted, validate, Change, Command, LeaveReason, Locator, Reply, Tombstone};
use crate::store::StateMachineStore;
use crate::watch::Feed;

/// Keys one `Check` may ask about, and tombstones one `List` page may return.
pub const MAX_BATCH: usize = 10_000;
/// A `List` page ends after about this many bytes of tombstones, so that
/// 10,000 keys of up to 1 KiB stay under clients' 4 MiB message limit.
const PAGE_BYTES: usize = 1 << 20;
/// Keys one `List` page looks at, at most: a narrow range of a large group
/// costs a node bounded work per call (and more calls).
const PAGE_SCAN: usize = 100_000;

/// How long a barrier put waits for the owner by default, and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(300);

pub struct TombstonesApi {
    leader: Leader,
    sm: StateMachineStore,
}

impl TombstonesApi {
    pub fn new(leader: Leader) -> Self {
        Self {
            sm: leader.state_machine().clone(),
            leader,
        }
    }

    /// Commits the put on the leader (here or forwarded, without its wait)
    /// and returns the tombstone's revision and partition.
    async fn commit_put(
        &self,
        mut request: Request<pb::PutTombstoneRequest>,
    ) -> Result<(u64, u32), Status> {
        let forwarded = request.metadata().contains_key(FORWARDED_BY);
        if let Route::Forward(channel) = self.leader.route(forwarded)? {
            // The barrier is waited for here, where the caller is connected.
            request.get_mut().set_wait(pb::Wait::Committed);
            let mut client = TombstonesClient::new(channel);
            let put = client.put(forward::forwarded(&self.leader, request));
            let reply = forward::call(&self.leader, put).await?.into_inner();
            return Ok((reply.revision, reply.partition));
        }
        let r = request.into_inner();
        let locator = match r.locator {
            None => Locator::Key,
            Some(pb::put_tombstone_request::Locator::Hash(h)) => Locator::Hash(h),
            Some(pb::put_tombstone_request::Locator::Partition(p)) => Locator::Partition(p),
        };
        let command = Command::PutTombstoneV2(PutTombstone {
            group: r.group,
            key: r.key,
            locator,
            ttl_ms: r.ttl_ms,
        });
        match self.leader.propose(command).await?.reply {
            Reply::Tombstone {
                revision,
                partition,
            } => Ok((revision, partition)),
            other => Err(Status::internal(format!(
                "unexpected reply to a tombstone put: {other:?}"
            ))),
        }
    }

    /// Waits until the owner of `key`'s partition has acknowledged the
    /// tombstone put at `revision`, or has lost its grant.
    async fn barrier(
        &self,
        group: &str,
        key: &str,
        revision: u64,
        wait: Duration,
    ) -> Result<(pb::Barrier, String), Status> {
        let deadline = Instant::now() + wait;
        let late = |owner: &str| {
            Status::deadline_exceeded(format!(
                "tombstone {} is put (revision {revision}), but its partition's owner {owner:?} has not acknowledged it within {} ms; the tombstone stays: put it again to wait again",
                quoted(key),
                wait.as_millis()
            ))
        };
        let hub = self.sm.hub();
        match tokio::time::timeout_at(deadline, hub.wait_for(revision)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(Status::unavailable(
                    "this node is shutting down; put again on another node",
                ))
            }
            Err(_) => return Err(late("(not known yet)")),
        }
        // The owner now (at `from`, which is at or after the put).
        let start = self.sm.read(|s| {
            let Some(g) = s.groups.get(group) else {
                return Err(pb::Barrier::GroupDeleted);
            };
            let Some(t) = g.tombstones.get(key) else {
                // Purged already (its TTL ran out): nobody is to handle it.
                return Err(pb::Barrier::NoOwner);
            };
            let Some(owner) = g.assignment.slot(t.partition).owner.clone() else {
                return Err(pb::Barrier::NoOwner);
            };
            if g.sessions
                .get(&owner)
                .is_some_and(|s| s.acked >= t.revision)
            {
                return Ok(Err((pb::Barrier::Acknowledged, owner)));
            }
            Ok(Ok((s.revision, owner, t.clone())))
        });
        let (from, owner, mut tombstone) = match start {
            Err(barrier) => return Ok((barrier, String::new())),
            Ok(Err(done)) => return Ok(done),
            Ok(Ok(waiting)) => waiting,
        };
        let mut feed = Feed::new(self.sm.clone(), group, from);
        loop {
            let batch = match tokio::time::timeout_at(deadline, feed.next()).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    return Err(Status::unavailable(format!(
                        "lost track of the owner's events ({e}); put again to wait again"
                    )))
                }
                Err(_) => return Err(late(&owner)),
            };
            let left = batch.events.iter().find_map(|e| match &e.change {
                Change::WorkerLeft { worker, reason } if *worker == owner => Some(*reason),
                _ => None,
            });
            let ended = |left: Option<LeaveReason>| match left {
                Some(LeaveReason::Expired | LeaveReason::Evicted) => pb::Barrier::OwnerExpired,
                Some(LeaveReason::Left) => pb::Barrier::OwnerLeft,
                Some(LeaveReason::Drained) | None => pb::Barrier::OwnerReleased,
            };
            for event in &batch.events {
                let outcome = match &event.change {
                    Change::TombstonesAcked { worker, revision }
                        if *worker == owner && *revision >= tombstone.revision =>
                    {
                        Some(pb::Barrier::Acknowledged)
                    }
                    Change::Released { worker, partitions }
                        if *worker == owner
                            && partitions.iter().any(|r| r.contains(tombstone.partition)) =>
                    {
                        Some(ended(left))
                    }
                    Change::WorkerLeft { worker, reason } if *worker == owner => {
                        Some(ended(Some(*reason)))
                    }
                    Change::GroupDeleted => Some(pb::Barrier::GroupDeleted),
                    // The owner keeps both halves of a split partition.
                    Change::GroupSplit { partitions } => {
                        tombstone.partition = tombstone.partition_after_split(*partitions);
                        None
                    }
                    _ => None,
                };
                if let Some(outcome) = outcome {
                    return Ok((outcome, owner));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Tombstones for TombstonesApi {
    async fn put(
        &self,
        request: Request<pb::PutTombstoneRequest>,
    ) -> Result<Response<pb::PutTombstoneResponse>, Status> {
        let r = request.get_ref();
        let wait = match r.wait() {
            pb::Wait::Committed => None,
            pb::Wait::Acknowledged => {
                let wait = r
                    .wait_timeout_ms
                    .map_or(DEFAULT_WAIT, Duration::from_millis);
                if wait.is_zero() || wait > MAX_WAIT {
                    return Err(Status::invalid_argument(format!(
                        "wait_timeout_ms: {} is out of range; 1 to {}",
                        wait.as_millis(),
                        MAX_WAIT.as_millis()
                    )));
                }
                Some(wait)
            }
        };
        let (group, key) = (r.group.clone(), r.key.clone());
        let (revision, partition) = self.commit_put(request).await?;
        let (barrier, owner) = match wait {
            None => (pb::Barrier::None, String::new()),
            Some(wait) => self.barrier(&group, &key, revision, wait).await?,
        };
        Ok(Response::new(pb::PutTombstoneResponse {
            revision,
            partition,
            barrier: barrier as i32,
            owner,
        }))
    }

    async fn ack(
        &self,
        request: Request<pb::AckTombstonesRequest>,
    ) -> Result<Response<pb::AckTombstonesResponse>, Status> {
        // An acknowledgement speaks for a worker's session: the gate has
        // checked the caller may act for it.
        let r = request.into_inner();
        let command = Command::AckTombstones(AckTombstones {
            group: r.group,
            worker: r.worker,
            session: r.session,
            revision: r.revision,
        });
        let committed = self.leader.propose(command).await?;
        Ok(Response::new(pb::AckTombstonesResponse {
            revision: committed.revision,
        }))
    }

    async fn check(
        &self,
        request: Request<pb::CheckTombstonesRequest>,
    ) -> Result<Response<pb::CheckTombstonesResponse>, Status> {
        let keys = request.get_ref().keys.len();
        if keys > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{keys} keys in one check; at most {MAX_BATCH}: split the batch"
            )));
        }
        let r = request.into_inner();
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |revision, g| {
                let now = now_ms();
                let results = r
                    .keys
                    .iter()
                    .map(|key| {
                        let found = g.tombstones.live(key, now);
                        pb::CheckedKey {
                            key: key.clone(),
                            deleted: found.is_some(),
                            tombstone: found.map(|t| convert::tombstone(key, t)),
                        }
                    })
                    .collect();
                pb::CheckTombstonesResponse { revision, results }
            })
            .await?;
        Ok(Response::new(reply))
    }

    async fn list(
        &self,
        request: Request<pb::ListTombstonesRequest>,
    ) -> Result<Response<pb::ListTombstonesResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => MAX_BATCH,
            n => usize::try_from(n).unwrap_or(MAX_BATCH).min(MAX_BATCH),
        };
        let range = match &r.partitions {
            Some(p) if p.first > p.last => {
                return Err(Status::invalid_argument(format!(
                    "partitions: range {}-{} starts after it ends",
                    p.first, p.last
                )))
            }
            Some(p) => p.first..=p.last,
            None => 0..=u32::MAX,
        };
        if r.after_key.len() > validate::MAX_KEY_BYTES {
            return Err(Status::invalid_argument(format!(
                "after_key: {} bytes; keys have at most {}: pass the previous page's next_key",
                r.after_key.len(),
                validate::MAX_KEY_BYTES
            )));
        }
        let reply = self
            .leader
            .read_group(r.serializable, &r.group, |revision, g| {
                let (tombstones, next_key) =
                    page(&g.tombstones, &range, &r.after_key, limit, now_ms());
                pb::ListTombstonesResponse {
                    revision,
                    tombstones,
                    truncated: !next_key.is_empty(),
                    next_key,
                }
            })
            .await?;
        Ok(Response::new(reply))
    }
}

/// The live tombstones on `partitions` after `after` (all when empty), at
/// most `limit`, and the key to continue after (empty at the end).
fn page(
    tombstones: &BTreeMap<String, Tombstone>,
    partitions: &RangeInclusive<u32>,
    after: &str,
    limit: usize,
    now_ms: u64,
) -> (Vec<pb::TombstoneInfo>, String) {
    let start = match after {
        "" => Bound::Unbounded,
        key => Bound::Excluded(key),
    };
    let mut page = Vec::new();
    let mut bytes = 0;
    let mut last = after;
    for (scanned, (key, t)) in tombstones
        .range::<str, _>((start, Bound::Unbounded))
        .enumerate()
    {
        if page.len() >= limit || bytes >= PAGE_BYTES || scanned >= PAGE_SCAN {
            // Another key follows: continue after the last one looked at.
            return (page, last.to_string());
        }
        last = key;
        if partitions.contains(&t.partition) && !t.expired(now_ms) {
            // The key and about 30 bytes of numbers and framing.
            bytes += key.len() + 32;
            page.push(convert::tombstone(key, t));
        }
    }
    (page, String::new())
}
