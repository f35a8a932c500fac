//! The worker SDK: join a group, learn what this worker owns from its event
//! stream, drain and release what it is asked to give back, and stop the
//! moment its lease cannot be trusted.
//!
//! ```no_run
//! use baton_client::{Worker, WorkerEvent};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), baton_client::WorkerError> {
//! let (worker, mut events) = Worker::builder(["127.0.0.1:7400"], "mail-sync")
//!     .drain_on_signals(Duration::from_secs(25))
//!     .join()
//!     .await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         WorkerEvent::Assigned(grant) => { /* start consuming grant.partitions() */ }
//!         WorkerEvent::Revoked { partitions, .. } => {
//!             // stop and commit, then hand them over:
//!             worker.release(&partitions).await?;
//!         }
//!         WorkerEvent::Tombstone { key, .. } => { /* drop work for `key`; acked on next() */ }
//!         WorkerEvent::LeaseLost => { /* stop everything now */ }
//!         WorkerEvent::Resharded { .. } => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod builder;
mod clock;
mod events;
mod holdings;
mod keepalive;
mod lease;
mod observe;
mod session;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::admin::AdminClient;
use crate::partitions::{each, Partitions};
use crate::transport::Transport;
use crate::ClientError;
pub use builder::WorkerBuilder;
pub use events::{Events, Handler};
use holdings::Holdings;
pub use holdings::NotHeld;
use lease::{Lease, LeaseRules};
use observe::Observer;
pub use observe::{HoldChange, HoldEnd};

/// The revision at which a partition was granted. Strictly increases per
/// partition: a downstream store that remembers the highest token it has seen
/// for a partition and refuses lower ones cannot be written by a zombie.
pub type FencingToken = u64;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    NotHeld(#[from] NotHeld),
    #[error("worker id: {0}; pass one explicitly (Worker::builder(..).id(..), or --id)")]
    NoWorkerId(String),
    #[error("the previous session of worker {worker:?} in group {group:?} is still alive after {waited:?}; is another process running with the same id?")]
    IdInUse {
        worker: String,
        group: String,
        waited: Duration,
    },
    #[error("load report: {0}")]
    InvalidLoad(String),
}

/// A load figure or capacity at most this large (the server's limit).
pub const MAX_LOAD: u64 = 1 << 40;
/// The highest partition number a group can have.
const MAX_PARTITION: u32 = 65_535;

/// What the application is told, in order.
#[derive(Clone, Debug)]
pub enum WorkerEvent {
    /// These partitions are now this worker's, with one fencing token.
    Assigned(Grant),
    /// Give these back: stop, flush, then call [`Worker::release`] (the
    /// handoff stays in flight until then). Past `deadline` the server ends
    /// the session instead.
    Revoked {
        partitions: Partitions,
        deadline: Instant,
        revision: u64,
    },
    /// `key` was deleted. Drop in-flight and queued work for it and never
    /// retry it. Acknowledged (for tombstone barriers) when the application
    /// asks for the next event.
    Tombstone {
        key: String,
        partition: u32,
        revision: u64,
    },
    /// The group's partitions were doubled: every p is now 2p and 2p+1.
    /// Grants of the old numbering are over; an `Assigned` with the new
    /// numbering follows.
    Resharded { partitions: u32, revision: u64 },
    /// The lease can no longer be trusted: stop touching every partition
    /// now. Every grant is invalid. The SDK joins again by itself (no
    /// sooner than the lease margin after the loss), and `Assigned` events
    /// of the new session follow. Also the last event of a forced
    /// [`Worker::shutdown`]: its grants were invalidated before the session
    /// was closed.
    LeaseLost,
}

/// Partitions held with one fencing token.
#[derive(Clone)]
pub struct Grant {
    partitions: Partitions,
    token: FencingToken,
    epoch: u64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("partitions", &self.partitions)
            .field("token", &self.token)
            .finish()
    }
}

impl Grant {
    pub fn partitions(&self) -> &Partitions {
        &self.partitions
    }

    pub fn fencing_token(&self) -> FencingToken {
        self.token
    }

    /// Whether this worker may still act on `partition` under this grant:
    /// the lease holds (checked against the clock, now) and the partition has
    /// not been released.
    pub fn holds(&self, partition: u32) -> bool {
        self.shared.lease.valid(self.epoch)
            && self.shared.holdings().token(partition) == Some(self.token)
    }

    /// Whether any partition of the grant is still held (see [`Grant::holds`]).
    pub fn is_valid(&self) -> bool {
        self.shared.lease.valid(self.epoch) && {
            let h = self.shared.holdings();
            each(&self.partitions).any(|p| h.token(p) == Some(self.token))
        }
    }
}

/// How a [`Worker::shutdown`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Every partition was released and the session closed.
    Drained,
    /// The grace period ran out: every grant was invalidated (the
    /// application was told, `LeaseLost`), then the session was closed
    /// without waiting for these partitions.
    Forced { unreleased: Partitions },
    /// The lease was lost before everything was released: these were held
    /// until its deadline, and the session ended as after any lost lease.
    LeaseLost { unreleased: Partitions },
}

/// Loads per partition (any order; the first of duplicates counts) as
/// ranges of consecutive partitions with one load: what a keepalive carries.
pub(crate) fn load_runs(
    loads: impl IntoIterator<Item = (u32, u64)>,
) -> Vec<baton_proto::v1::PartitionLoad> {
    let mut loads: Vec<(u32, u64)> = loads.into_iter().collect();
    loads.sort_by_key(|(p, _)| *p);
    loads.dedup_by_key(|(p, _)| *p);
    let mut runs: Vec<baton_proto::v1::PartitionLoad> = Vec::new();
    for (p, load) in loads {
        let extends = runs.last().is_some_and(|run| {
            run.load == load
                && run
                    .partitions
                    .is_some_and(|r| r.last.checked_add(1) == Some(p))
        });
        match runs.last_mut().and_then(|run| run.partitions.as_mut()) {
            Some(r) if extends => r.last = p,
            _ => runs.push(baton_proto::v1::PartitionLoad {
                partitions: Some(baton_proto::v1::PartitionRange { first: p, last: p }),
                load,
            }),
        }
    }
    runs
}

pub(crate) struct Shared {
    group: String,
    id: String,
    endpoints: Vec<String>,
    transport: Transport,
    lease: Lease,
    rules: Mutex<LeaseRules>,
    /// What is held, and in which session (the two change together).
    holdings: Mutex<Holdings>,
    observer: Observer,
    handoff_timeout_ms: AtomicU64,
    shutting_down: AtomicBool,
    /// What was still held when the lease was lost during a shutdown.
    lost_in_shutdown: Mutex<Option<Partitions>>,
    finished: watch::Sender<bool>,
    acks: watch::Sender<(u64, u64)>,
    admin: tokio::sync::Mutex<AdminClient>,
    /// The last load report (`Worker::report_load`), sent with every
    /// keepalive for the partitions still held.
    loads: Mutex<Vec<(u32, u64)>>,
    /// What this worker can carry, in the group's load unit.
    capacity: Option<u64>,
}

impl Shared {
    /// `keepalive` with this worker's capacity and its load report, of the
    /// partitions it still holds: a figure for one it gave up since the
    /// report is not its to give.
    pub(crate) fn with_load(
        &self,
        keepalive: &baton_proto::v1::KeepAliveRequest,
    ) -> baton_proto::v1::KeepAliveRequest {
        let reported = self.loads.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let held = self.holdings().tokens().clone();
        let loads = load_runs(reported.into_iter().filter(|(p, _)| held.contains_key(p)));
        baton_proto::v1::KeepAliveRequest {
            loads,
            capacity: self.capacity,
            ..keepalive.clone()
        }
    }

    /// Ends session `session` of this worker (`drain`: hand everything off
    /// first). A session that is already gone counts as left.
    pub(crate) async fn leave(&self, session: u64, drain: bool) -> Result<(), ClientError> {
        let request = baton_proto::v1::LeaveRequest {
            group: self.group.clone(),
            worker: self.id.clone(),
            drain,
            session,
        };
        let result = self
            .admin
            .lock()
            .await
            .call(|ch| {
                let request = request.clone();
                async move {
                    baton_proto::v1::worker_client::WorkerClient::new(ch)
                        .leave(request)
                        .await
                }
            })
            .await;
        match result {
            // NOT_FOUND: the worker has no session (or the group is gone).
            // FAILED_PRECONDITION is the server's one refusal of a Leave: it
            // names a session that is not the worker's current one, so the
            // session named has already ended (expired or evicted, maybe
            // with a newer process joined under the id since). Either way
            // what leaving wanted is done, and the newer session, if any, is
            // left alone.
            Err(e)
                if matches!(
                    e.code(),
                    Some(tonic::Code::NotFound | tonic::Code::FailedPrecondition)
                ) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Closes session `session` (of `epoch`) after its lease was lost or
    /// invalidated: not before the margin has passed since the application
    /// was told to stop (the lease's end), so that nobody is granted its
    /// partitions within that margin; at once if the server already ended
    /// it (`gone`). Then `Leave(drain=false)` frees them without waiting
    /// for the server's own expiry.
    pub(crate) async fn end_lost_session(&self, epoch: u64, session: u64, gone: bool) {
        if !gone {
            let end = self
                .lease
                .ended(epoch)
                .map_or_else(clock::BootInstant::now, |e| e.boot);
            clock::sleep_until(end.saturating_add(self.rules().margin)).await;
        }
        if let Err(e) = self.leave(session, false).await {
            // The server ends it by itself when its lease expires.
            tracing::warn!("ending lost session {session}: {e}");
        }
    }

    fn holdings(&self) -> std::sync::MutexGuard<'_, Holdings> {
        self.holdings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rules(&self) -> LeaseRules {
        *self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current session: (epoch, session id).
    fn session(&self) -> (u64, u64) {
        self.holdings().session()
    }

    /// Acknowledges tombstones up to `revision` for the session of `epoch`.
    fn ack(&self, epoch: u64, revision: u64) {
        let (current, session) = self.session();
        if current == epoch {
            self.acks.send_if_modified(|a| {
                let newer = a.0 != session || a.1 < revision;
                if newer {
                    *a = (session, revision);
                }
                newer
            });
        }
    }
}

/// A joined worker. Cheap to clone; every clone is the same worker.
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// A worker for `group`, reaching the cluster through any of `endpoints`
    /// (`HOST:PORT`).
    pub fn builder<E: Into<String>>(
        endpoints: impl IntoIterator<Item = E>,
        group: impl Into<String>,
    ) -> WorkerBuilder {
        WorkerBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            transport: Transport::default(),
            group: group.into(),
            id: None,
            weight: None,
            labels: Default::default(),
            ttl: None,
            max_drift: 0.01,
            margin: None,
            join_patience: Duration::from_secs(60),
            signals: None,
            hold_hook: None,
            capacity: None,
        }
    }

    /// Reports the load of the partitions this worker holds, in the group's
    /// unit (connected users, msgs/s, CPU ms/s), for a group balanced by load
    /// (`batonctl group balance GROUP --by load`). Replaces the last report;
    /// partitions left out carry no figure. Sent with every keepalive from
    /// the next on; the leader averages each figure with the previous one
    /// unless it is more than twice or under half of it (a new level).
    /// Each load at most 2^40.
    ///
    /// A load over 2^40 is refused (report in a coarser unit); so is a
    /// partition number above 65,535.
    pub fn report_load(
        &self,
        loads: impl IntoIterator<Item = (u32, u64)>,
    ) -> Result<(), WorkerError> {
        let loads: Vec<(u32, u64)> = loads.into_iter().collect();
        if let Some((p, l)) = loads
            .iter()
            .find(|(p, l)| *l > MAX_LOAD || *p > MAX_PARTITION)
        {
            return Err(WorkerError::InvalidLoad(format!(
                "partition {p} with load {l}: partitions are 0 to {MAX_PARTITION}, loads at most {MAX_LOAD}"
            )));
        }
        *self.shared.loads.lock().unwrap_or_else(|p| p.into_inner()) = loads;
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// The current session id.
    pub fn session(&self) -> u64 {
        self.shared.session().1
    }

    /// The fencing token `partition` is held with, if the lease holds and
    /// it is held. Check it right before a side effect, and pass the token on.
    pub fn token(&self, partition: u32) -> Option<FencingToken> {
        let (epoch, _) = self.shared.session();
        if !self.shared.lease.valid(epoch) {
            return None;
        }
        self.shared.holdings().token(partition)
    }

    /// What this worker holds now (empty once the lease is lost).
    pub fn held(&self) -> Partitions {
        let (epoch, _) = self.shared.session();
        if !self.shared.lease.valid(epoch) {
            return Vec::new();
        }
        self.shared.holdings().held()
    }

    /// Gives `partitions` back (after draining them). They stop being held
    /// before the call is sent, so nothing can act on them while the server
    /// hands them over. The call names the session that held them: one
    /// that has ended since is refused (FAILED_PRECONDITION) and changes
    /// nothing. Returns the revision of the release.
    pub async fn release(&self, partitions: &Partitions) -> Result<u64, WorkerError> {
        let (session, by_token) = self.shared.change_holdings(
            |_| HoldEnd::Released,
            |h| h.take(partitions).map(|t| (h.session().1, t)),
        )?;
        let mut revision = 0;
        for (token, ranges) in by_token {
            let request = baton_proto::v1::ReleaseRequest {
                group: self.shared.group.clone(),
                worker: self.shared.id.clone(),
                partitions: crate::partitions::to_proto(&ranges),
                token,
                session,
            };
            let reply = self
                .shared
                .admin
                .lock()
                .await
                .call(|ch| {
                    let request = request.clone();
                    async move {
                        baton_proto::v1::worker_client::WorkerClient::new(ch)
                            .release(request)
                            .await
                    }
                })
                .await?;
            revision = revision.max(reply.revision);
        }
        Ok(revision)
    }

    /// Leaves the group gracefully: every partition is revoked (the event
    /// stream yields `Revoked`; keep handling it and release), and once all
    /// are released the session closes and the event stream ends.
    ///
    /// If that takes longer than `grace`, the shutdown is forced: first
    /// every grant turns invalid (`holds` is false for every partition) and
    /// the loss is reported (`LeaseLost` is the next event, and the hold
    /// hook hears [`HoldEnd::ForcedShutdown`]); then, once the lease margin
    /// has passed, the session is closed with `Leave(drain=false)`, which
    /// hands the partitions to their next owners at once. So a forced
    /// shutdown returns up to the margin (plus a round trip) after `grace`.
    pub async fn shutdown(&self, grace: Duration) -> Result<Shutdown, WorkerError> {
        let started = Instant::now();
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let mut finished = self.shared.finished.subscribe();
        let done = *finished.borrow();
        if !done {
            let (_, session) = self.shared.session();
            // A drain that cannot even be asked for within the grace (no
            // leader reachable, a node that cannot commit) is forced like
            // one that does not finish: a shutdown always ends with the
            // application stopped, never with an error and grants still
            // valid.
            match tokio::time::timeout(grace, self.shared.leave(session, true)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!("leaving with a drain failed ({e}); forcing the shutdown");
                    return Ok(self.force().await);
                }
                Err(_) => {
                    tracing::warn!(
                        "leaving with a drain took longer than {grace:?}; forcing the shutdown"
                    );
                    return Ok(self.force().await);
                }
            }
            let rest = grace.saturating_sub(started.elapsed());
            let drained = tokio::time::timeout(rest, finished.wait_for(|f| *f))
                .await
                .is_ok();
            if !drained {
                return Ok(self.force().await);
            }
        }
        let lost = self
            .shared
            .lost_in_shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        Ok(match lost {
            Some(unreleased) => Shutdown::LeaseLost { unreleased },
            None => Shutdown::Drained,
        })
    }

    /// The end of a shutdown whose grace ran out.
    async fn force(&self) -> Shutdown {
        let (epoch, _) = self.shared.session();
        let unreleased = self.shared.holdings().held();
        // Stop the application before anything else: from here no grant
        // holds. The session task sees the lease end and closes the session
        // after the margin (`Shared::end_lost_session`), then the stream.
        self.shared.lose_lease(epoch, HoldEnd::ForcedShutdown);
        let mut finished = self.shared.finished.subscribe();
        let patience = self.shared.rules().margin + Duration::from_secs(5);
        let _ = tokio::time::timeout(patience, finished.wait_for(|f| *f)).await;
        // The session task saw this end as a lost lease; it was not one.
        self.shared
            .lost_in_shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        Shutdown::Forced { unreleased }
    }
}
