//! Configuring and joining a worker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::clock::Stamp;
use super::holdings::Holdings;
use super::lease::{Lease, LeaseRules};
use super::observe::{Hook, Observer};
use super::{session, Events, HoldChange, Shared, Worker, WorkerError};
use crate::admin::AdminClient;
use crate::transport::Transport;

/// Configures and joins a worker. See [`Worker::builder`].
pub struct WorkerBuilder {
    pub(super) endpoints: Vec<String>,
    pub(super) transport: Transport,
    pub(super) group: String,
    pub(super) id: Option<String>,
    pub(super) weight: Option<u32>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) ttl: Option<Duration>,
    pub(super) max_drift: f64,
    pub(super) margin: Option<Duration>,
    pub(super) join_patience: Duration,
    pub(super) signals: Option<Duration>,
    pub(super) hold_hook: Option<Hook>,
    pub(super) capacity: Option<u64>,
}

impl WorkerBuilder {
    /// TLS (a client certificate valid for the worker id, where the cluster
    /// requires mutual TLS); default: plaintext.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// What this worker can carry, in the unit its load reports use
    /// ([`Worker::report_load`]); 1 to 2^40 (clamped into that range).
    /// Default: none (it counts as its weight times the other workers'
    /// capacity per unit of weight).
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity.clamp(1, super::MAX_LOAD));
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
    /// 0.01 = 1 %); the local lease is shortened by that share. Exclusive
    /// ownership holds only while the real drift stays below it.
    pub fn max_drift(mut self, drift: f64) -> Self {
        self.max_drift = drift;
        self
    }

    /// Time for the application to stop, taken off the local lease on top
    /// of the drift (default: a tenth of the TTL).
    ///
    /// The SDK keeps the whole margin for the application: when its local
    /// lease runs out (every grant turns invalid and `LeaseLost` is next),
    /// it does not end the session until the margin has passed after that
    /// deadline, and only then sends `Leave` to free the partitions at once
    /// (the server would otherwise wait for its own, later expiry). A forced
    /// [`Worker::shutdown`] does the same from the moment it invalidates the
    /// grants. So no other worker can be granted those partitions within
    /// the margin of this one being told to stop.
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
    /// drain, and ends once everything is released. A shutdown that runs
    /// past the grace takes the lease margin more; pick the grace a few
    /// seconds plus the margin below Kubernetes'
    /// `terminationGracePeriodSeconds`.
    pub fn drain_on_signals(mut self, grace: Duration) -> Self {
        self.signals = Some(grace);
        self
    }

    /// Tells `hook` every time what this worker holds changes, at the
    /// instant it changed: which partitions began being held (and with
    /// which token) and which stopped, and why. For keeping an exact
    /// record of ownership (audits, the chaos harness's checker).
    ///
    /// The instants are safe bounds: a [`HoldChange::Began`]'s `at` is read
    /// before `holds(p)` can return true, and the hook is called before
    /// then too; an [`HoldChange::Ended`]'s `at` is no earlier than the
    /// last moment `holds(p)` returned true. A release ends at the instant
    /// the partitions were taken out (before the `Release` call is sent); a
    /// lost lease at its local deadline, even if the SDK notices later; a
    /// forced shutdown at the instant it invalidated the grants. Calls come
    /// in order, one at a time, from the SDK's tasks: keep the hook short,
    /// and do not block in it.
    pub fn on_hold_change(mut self, hook: impl Fn(HoldChange) + Send + Sync + 'static) -> Self {
        self.hold_hook = Some(Arc::new(hook));
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
            holdings: Mutex::new(Holdings::new(&id)),
            group: self.group,
            id,
            endpoints: self.endpoints,
            transport: self.transport,
            lease: Lease::new(0, Stamp::now()),
            rules: Mutex::new(rules),
            observer: Observer::new(self.hold_hook),
            handoff_timeout_ms: AtomicU64::new(30_000),
            shutting_down: AtomicBool::new(false),
            lost_in_shutdown: Mutex::new(None),
            finished: watch::channel(false).0,
            acks: watch::channel((0, 0)).0,
            admin: tokio::sync::Mutex::new(admin),
            loads: Mutex::new(Vec::new()),
            capacity: self.capacity,
        });
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
        let events = Events::new(rx, worker.shared.clone());
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
