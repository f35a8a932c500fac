//! The `Watch` service: one group's events, in revision order, from any node.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_proto::v1 as pb;
use baton_proto::v1::watch_server::Watch;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{convert, domain_error, group_not_found};
use crate::cluster::Leader;
use crate::domain::{validate, Event, EventKind};
use crate::store::StateMachineStore;
use crate::watch::{Feed, FeedError};

/// Metadata of OUT_OF_RANGE: the compacted revision; re-list at or after it.
pub const COMPACTED_REVISION: &str = "baton-compacted-revision";
/// Metadata of RESOURCE_EXHAUSTED: the revision to watch from again.
pub const RESUME_REVISION: &str = "baton-resume-revision";

/// An idle stream gets a progress notification after this long without a
/// message (so at most every 1.5 s: it is checked every half of it).
const PROGRESS_AFTER: Duration = Duration::from_secs(1);
/// Messages queued for the gRPC stream of one watcher; beyond this the
/// watcher's own feed buffer fills up, and then it is cut off.
const STREAM_BUFFER: usize = 16;
/// How long a resume past this node's applied revision waits for this node
/// to catch up before it asks the leader whether the revision exists.
const CATCH_UP: Duration = Duration::from_secs(2);

pub struct WatchApi {
    leader: Leader,
    sm: StateMachineStore,
    stopping: watch::Receiver<bool>,
}

impl WatchApi {
    pub fn new(leader: Leader, stopping: watch::Receiver<bool>) -> Self {
        Self {
            sm: leader.state_machine().clone(),
            leader,
            stopping,
        }
    }

    /// Where a watch starts: the revision after which events are delivered.
    async fn start_position(&self, from_revision: u64) -> Result<u64, Status> {
        // A removed node's history stops where it was removed.
        self.leader.check_not_removed()?;
        if from_revision == 0 {
            return Ok(self.leader.linearizable_point().await?);
        }
        let position = from_revision - 1;
        let hub = self.sm.hub();
        if position > hub.published() {
            // Ahead of this node, as when a watch resumes here after another
            // node failed: usually this node catches up at once (without
            // needing a leader, which may be what failed).
            let caught_up = tokio::time::timeout(CATCH_UP, hub.wait_for(position)).await;
            if matches!(caught_up, Ok(Ok(()))) {
                return Ok(position);
            }
            // Fine if the cluster has it (this node will catch up), not if
            // it lies in the future.
            let latest = self.leader.linearizable_point().await?;
            if position > latest {
                return Err(Status::out_of_range(format!(
                    "from_revision {from_revision} is in the future: the cluster is at revision {latest}"
                )));
            }
        }
        Ok(position)
    }
}

/// The status for a start (or a resume) below the compacted revision.
pub fn compacted(from: u64, compacted: u64) -> Status {
    let mut status = Status::out_of_range(format!(
        "revision {from} is compacted (history is kept after revision {compacted} only): re-list the group (GetAssignment, Tombstones.List) and watch from the revision they answer at + 1"
    ));
    status
        .metadata_mut()
        .insert(COMPACTED_REVISION, compacted.into());
    status
}

fn feed_status(e: FeedError) -> Status {
    match e {
        FeedError::Compacted { from, compacted: c } => compacted(from, c),
        FeedError::Overflow { position } => {
            let mut status = Status::resource_exhausted(format!(
                "this watcher fell too far behind and was cut off after revision {position}; watch again from revision {}",
                position + 1
            ));
            status
                .metadata_mut()
                .insert(RESUME_REVISION, (position + 1).into());
            status
        }
        FeedError::Storage(e) => Status::internal(e),
        FeedError::Stopped => {
            Status::unavailable("this node is shutting down; resume the watch on another node")
        }
    }
}

/// Which events of the group a watcher gets.
struct Filter {
    worker: Option<String>,
    /// Empty: all.
    kinds: BTreeSet<EventKind>,
}

impl Filter {
    fn wants(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind()))
            && self.worker.as_deref().is_none_or(|w| event.concerns(w))
    }
}

fn progress(revision: u64) -> pb::WatchResponse {
    pb::WatchResponse {
        revision,
        events: Vec::new(),
    }
}

#[tonic::async_trait]
impl Watch for WatchApi {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        validate::group_name(&r.group).map_err(|e| domain_error(&e))?;
        let worker = match r.worker.as_str() {
            "" => None,
            w => {
                validate::worker_id(w).map_err(|e| domain_error(&e))?;
                Some(w.to_string())
            }
        };
        let kinds = r
            .kinds
            .iter()
            .map(|&k| {
                convert::event_kind(k).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "kinds: {k} is not an event kind (1 group, 2 worker, 3 granted, 4 revoking, 5 released, 6 reserved, 7 tombstone, 8 tombstone purged, 9 tombstones acked)"
                    ))
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let filter = Filter { worker, kinds };

        let position = self.start_position(r.from_revision).await?;
        // Once this node has applied the start, the group must exist.
        let hub = self.sm.hub().clone();
        if tokio::time::timeout(Duration::from_secs(5), hub.wait_for(position))
            .await
            .is_err()
        {
            return Err(Status::unavailable(format!(
                "this node has not applied revision {position} yet (it is behind); use another node or retry"
            )));
        }
        let (exists, compacted_at) = self
            .sm
            .read(|s| (s.groups.contains_key(&r.group), s.compacted));
        if position < compacted_at {
            return Err(compacted(position + 1, compacted_at));
        }
        if !exists {
            return Err(group_not_found(&r.group));
        }

        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let feed = Feed::new(self.sm.clone(), &r.group, position);
        tokio::spawn(serve(feed, filter, tx, self.stopping.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends the feed's events to one watcher until it goes away, falls behind,
/// or the node stops.
async fn serve(
    mut feed: Feed,
    filter: Filter,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    mut stopping: watch::Receiver<bool>,
) {
    if tx.send(Ok(progress(feed.position()))).await.is_err() {
        return;
    }
    let mut last_sent = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_AFTER / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            next = feed.next() => match next {
                Ok(batch) => {
                    let events: Vec<pb::WatchEvent> = batch
                        .events
                        .iter()
                        .filter(|e| filter.wants(e))
                        .map(|e| convert::watch_event(batch.revision, e))
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    Ok(pb::WatchResponse { revision: batch.revision, events })
                }
                Err(e) => Err(feed_status(e)),
            },
            _ = tick.tick() => {
                if last_sent.elapsed() < PROGRESS_AFTER {
                    continue;
                }
                Ok(progress(feed.progress()))
            }
            _ = stopping.wait_for(|s| *s) => Err(feed_status(FeedError::Stopped)),
            () = tx.closed() => return,
        };
        let end = message.is_err();
        if tx.send(message).await.is_err() || end {
            return;
        }
        last_sent = Instant::now();
    }
}
