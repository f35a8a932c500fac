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

mod holdings;
mod lease;
mod session;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::admin::AdminClient;
use crate::partitions::{each, Partitions};
use crate::transport::Transport;
use crate::ClientError;
use holdings::Holdings;
pub use holdings::NotHeld;
use lease::{Lease, LeaseRules};

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
}

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
    /// now. Every grant is invalid. The SDK joins again by itself, and
    /// `Assigned` events of the new session follow.
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
    /// The grace period ran out: the session was closed without waiting
    /// for these partitions (the application must have stopped them).
    Forced { unreleased: Partitions },
}

pub(crate) struct Shared {
    group: String,
    id: String,
    endpoints: Vec<String>,
    transport: Transport,
    lease: Lease,
    rules: Mutex<LeaseRules>,
    holdings: Mutex<Holdings>,
    /// The current session: (epoch, session id).
    session: Mutex<(u64, u64)>,
    handoff_timeout_ms: AtomicU64,
    shutting_down: AtomicBool,
    finished: watch::Sender<bool>,
    acks: watch::Sender<(u64, u64)>,
    admin: tokio::sync::Mutex<AdminClient>,
}

impl Shared {
    /// Ends this worker's session (`drain`: hand everything off first). A
    /// session that is already gone counts as left.
    pub(crate) async fn leave(&self, drain: bool) -> Result<(), ClientError> {
        let request = baton_proto::v1::LeaveRequest {
            group: self.group.clone(),
            worker: self.id.clone(),
            drain,
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
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn holdings(&self) -> std::sync::MutexGuard<'_, Holdings> {
        self.holdings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rules(&self) -> LeaseRules {
        *self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn session(&self) -> (u64, u64) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner())
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

/// Configures and joins a worker. See [`Worker::builder`].
pub struct WorkerBuilder {
    endpoints: Vec<String>,
    transport: Transport,
    group: String,
    id: Option<String>,
    weight: Option<u32>,
    labels: BTreeMap<String, String>,
    ttl: Option<Duration>,
    max_drift: f64,
    margin: Option<Duration>,
    join_patience: Duration,
    signals: Option<Duration>,
}

impl WorkerBuilder {
    /// TLS (a client certificate valid for the worker id, where the cluster
    /// requires mutual TLS); default: plaintext.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The worker id; default: this host's name.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Share of the group's partitions relative to the other workers (default 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Lease TTL (1 s to 5 min); default: the group's. A dead worker's
    /// partitions move after about this long.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Largest clock-rate drift between this host and the leader (default
    /// 0.01 = 1 %); the local lease is shortened by that share.
    pub fn max_drift(mut self, drift: f64) -> Self {
        self.max_drift = drift;
        self
    }

    /// Taken off the local lease on top of the drift, so the application has
    /// time to stop before the server could move its partitions (default:
    /// a tenth of the TTL).
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// How long `join` keeps trying while no node answers, or while a
    /// previous session of the same id has not expired yet (default 60 s).
    pub fn join_patience(mut self, patience: Duration) -> Self {
        self.join_patience = patience;
        self
    }

    /// On SIGTERM or SIGINT, shut down with this grace period (as
    /// [`Worker::shutdown`]): the event stream then yields the revocations to
    /// drain, and ends once everything is released. Pick it a few seconds
    /// below Kubernetes' `terminationGracePeriodSeconds`.
    pub fn drain_on_signals(mut self, grace: Duration) -> Self {
        self.signals = Some(grace);
        self
    }

    /// Joins the group. Returns once the session exists; partitions arrive
    /// as `Assigned` events.
    pub async fn join(self) -> Result<(Worker, Events), WorkerError> {
        let id = match self.id {
            Some(id) => id,
            None => hostname()?,
        };
        let admin = AdminClient::new(&self.endpoints, Duration::from_secs(5))?
            .with_transport(self.transport.clone());
        let rules = LeaseRules {
            ttl: self.ttl.unwrap_or(Duration::from_secs(10)),
            max_drift: self.max_drift,
            margin: self.margin.unwrap_or_default(),
        };
        let shared = Arc::new(Shared {
            group: self.group,
            id,
            endpoints: self.endpoints,
            transport: self.transport,
            lease: Lease::new(0, Instant::now()),
            rules: Mutex::new(rules),
            holdings: Mutex::new(Holdings::new("")),
            session: Mutex::new((0, 0)),
            handoff_timeout_ms: AtomicU64::new(30_000),
            shutting_down: AtomicBool::new(false),
            finished: watch::channel(false).0,
            acks: watch::channel((0, 0)).0,
            admin: tokio::sync::Mutex::new(admin),
        });
        *shared.holdings() = Holdings::new(&shared.id);
        let settings = session::JoinSettings {
            ttl: self.ttl,
            explicit_margin: self.margin,
            weight: self.weight,
            labels: self.labels,
            patience: self.join_patience,
        };
        let joined = session::join(&shared, &settings, 1).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(session::run(shared.clone(), settings, joined, tx));
        tokio::spawn(session::acknowledge(shared.clone()));
        let worker = Worker { shared };
        if let Some(grace) = self.signals {
            tokio::spawn(shutdown_on_signals(worker.clone(), grace));
        }
        let events = Events {
            rx,
            shared: worker.shared.clone(),
            epoch: 1,
            lost_reported: 0,
            unacked: None,
        };
        Ok((worker, events))
    }
}

fn hostname() -> Result<String, WorkerError> {
    let name = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty());
    name.ok_or_else(|| WorkerError::NoWorkerId("this host's name could not be read".into()))
}

async fn shutdown_on_signals(worker: Worker, grace: Duration) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for SIGTERM/SIGINT; shut down with Worker::shutdown");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    if let Err(e) = worker.shutdown(grace).await {
        tracing::warn!("shutdown on signal: {e}");
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
            labels: BTreeMap::new(),
            ttl: None,
            max_drift: 0.01,
            margin: None,
            join_patience: Duration::from_secs(60),
            signals: None,
        }
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
    /// hands them over. Returns the revision of the release.
    pub async fn release(&self, partitions: &Partitions) -> Result<u64, WorkerError> {
        let by_token = self.shared.holdings().take(partitions)?;
        let mut revision = 0;
        for (token, ranges) in by_token {
            let request = baton_proto::v1::ReleaseRequest {
                group: self.shared.group.clone(),
                worker: self.shared.id.clone(),
                partitions: crate::partitions::to_proto(&ranges),
                token,
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
    /// are released the session closes and the event stream ends. If that
    /// takes longer than `grace`, the session is closed anyway.
    pub async fn shutdown(&self, grace: Duration) -> Result<Shutdown, WorkerError> {
        let started = Instant::now();
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let mut finished = self.shared.finished.subscribe();
        if *finished.borrow() {
            return Ok(Shutdown::Drained);
        }
        self.shared.leave(true).await?;
        let rest = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(rest, finished.wait_for(|f| *f))
            .await
            .is_ok()
        {
            return Ok(Shutdown::Drained);
        }
        let unreleased = self.shared.holdings().held();
        self.shared.leave(false).await?;
        // The session task sees the session end and closes the stream.
        let _ = tokio::time::timeout(Duration::from_secs(5), finished.wait_for(|f| *f)).await;
        Ok(Shutdown::Forced { unreleased })
    }
}

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
    /// The next event; `None` once the worker has left the group (shutdown,
    /// drained by an operator, or group deleted). A lost lease is reported
    /// before anything else the old session had queued, which is dropped.
    pub async fn next(&mut self) -> Option<WorkerEvent> {
        if let Some((epoch, revision)) = self.unacked.take() {
            self.shared.ack(epoch, revision);
        }
        loop {
            if self.lease_lost_unreported() {
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
        self.lost_reported < self.epoch
            && !*self.shared.finished.borrow()
            && !self.shared.lease.valid(self.epoch)
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
