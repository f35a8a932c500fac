//! The application's side: the event stream, and the callback style on it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{Grant, HoldEnd, Shared, Worker, WorkerEvent};
use crate::partitions::Partitions;

/// The worker's events, in order. See [`WorkerEvent`].
pub struct Events {
    rx: mpsc::Receiver<(u64, WorkerEvent)>,
    shared: Arc<Shared>,
    /// Session of the last event delivered.
    epoch: u64,
    /// Last session whose `LeaseLost` was delivered.
    lost_reported: u64,
    /// A tombstone delivered last: acknowledged when the next one is asked.
    unacked: Option<(u64, u64)>,
}

impl Events {
    pub(super) fn new(rx: mpsc::Receiver<(u64, WorkerEvent)>, shared: Arc<Shared>) -> Self {
        Self {
            rx,
            shared,
            epoch: 1,
            lost_reported: 0,
            unacked: None,
        }
    }

    /// The next event; `None` once the worker has left the group (shutdown,
    /// drained by an operator, or group deleted). A lost lease is reported
    /// before anything else the old session had queued, which is dropped.
    pub async fn next(&mut self) -> Option<WorkerEvent> {
        if let Some((epoch, revision)) = self.unacked.take() {
            self.shared.ack(epoch, revision);
        }
        loop {
            if self.lease_lost_unreported() {
                // The hook hears of it first, if no task has told it yet.
                self.shared.lose_lease(self.epoch, HoldEnd::LeaseLost);
                self.lost_reported = self.epoch;
                return Some(WorkerEvent::LeaseLost);
            }
            let epoch = self.epoch;
            // Once this session's loss is reported, only the next session's
            // events matter (waiting on the lost lease would spin).
            let watch_lease = self.lost_reported < epoch;
            let shared = self.shared.clone();
            let received = tokio::select! {
                biased;
                m = self.rx.recv() => m,
                () = shared.lease.lost(epoch), if watch_lease => continue,
            };
            let (epoch, event) = received?;
            if epoch <= self.lost_reported {
                // The lost session's leftovers, its own LeaseLost included.
                continue;
            }
            if epoch == self.epoch && self.lease_lost_unreported() {
                continue;
            }
            self.epoch = epoch;
            match &event {
                WorkerEvent::LeaseLost => self.lost_reported = epoch,
                WorkerEvent::Tombstone { revision, .. } => self.unacked = Some((epoch, *revision)),
                _ => {}
            }
            return Some(event);
        }
    }

    fn lease_lost_unreported(&self) -> bool {
        if self.lost_reported >= self.epoch {
            return false;
        }
        let s = self.shared.lease.state();
        // Ended before the session did (lost, or a forced shutdown): told
        // even after the stream has finished. A lease that merely runs out
        // after a clean leave is not a loss.
        (s.epoch == self.epoch && s.lost_at.is_some())
            || (!*self.shared.finished.borrow() && !self.shared.lease.valid(self.epoch))
    }

    /// Runs `handler` on every event until the worker leaves the group:
    /// after `on_revoked` returns, the partitions are released for it; a
    /// tombstone is acknowledged when `on_tombstone` returns.
    pub async fn run<H: Handler>(mut self, worker: &Worker, mut handler: H) {
        while let Some(event) = self.next().await {
            match event {
                WorkerEvent::Assigned(grant) => handler.on_assigned(&grant).await,
                WorkerEvent::Revoked {
                    partitions,
                    deadline,
                    ..
                } => {
                    handler.on_revoked(&partitions, deadline).await;
                    if let Err(e) = worker.release(&partitions).await {
                        tracing::warn!("releasing {partitions:?}: {e}");
                    }
                }
                WorkerEvent::Tombstone {
                    key,
                    partition,
                    revision,
                } => handler.on_tombstone(&key, partition, revision).await,
                WorkerEvent::Resharded { partitions, .. } => handler.on_resharded(partitions).await,
                WorkerEvent::LeaseLost => handler.on_lease_lost().await,
            }
        }
    }
}

/// The callback style: implement what you need; [`Events::run`] drives it.
pub trait Handler: Send {
    /// Start work on the grant's partitions; check `grant.holds(p)` before
    /// each side effect and pass `grant.fencing_token()` downstream.
    fn on_assigned(&mut self, grant: &Grant) -> impl Future<Output = ()> + Send;
    /// Stop and flush these partitions before `deadline`; they are released
    /// when this returns.
    fn on_revoked(
        &mut self,
        partitions: &Partitions,
        deadline: Instant,
    ) -> impl Future<Output = ()> + Send;
    /// `key` was deleted: drop its work. Acknowledged when this returns.
    fn on_tombstone(
        &mut self,
        _key: &str,
        _partition: u32,
        _revision: u64,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Stop every partition now.
    fn on_lease_lost(&mut self) -> impl Future<Output = ()> + Send;
    /// The group split: what was p is now 2p and 2p+1 (an `on_assigned`
    /// with the new numbering follows).
    fn on_resharded(&mut self, _partitions: u32) -> impl Future<Output = ()> + Send {
        async {}
    }
}
