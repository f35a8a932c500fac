//! The HTTP endpoint: `/healthz`, `/readyz` and `/metrics` (Prometheus text).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, GaugeVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::cluster::leases::Leases;
use crate::cluster::load_reports;
use crate::domain::rebalancer;
use crate::raft::metrics::RaftMetrics;
use crate::raft::removal::Removal;
use crate::raft::BatonRaft;
use crate::store::{LogStore, StateMachineStore};

#[derive(Clone)]
struct Http {
    raft: BatonRaft,
    removal: Arc<Removal>,
    log: LogStore,
    sm: StateMachineStore,
    gauges: Gauges,
    /// The load reports (on the leader).
    leases: Arc<Leases>,
}

/// What `/metrics` shows: each layer's own metrics (registered from there),
/// and the gauges set from this node's state at every scrape.
#[derive(Clone)]
struct Gauges {
    registry: Registry,
    raft: RaftMetrics,
    watchers: IntGauge,
    sessions: IntGaugeVec,
    partitions: IntGaugeVec,
    handoffs: IntGaugeVec,
    unassigned: IntGaugeVec,
    tombstones: IntGaugeVec,
    load_imbalance: GaugeVec,
    recommended_workers: IntGaugeVec,
}

impl Gauges {
    fn new(sm: &StateMachineStore) -> prometheus::Result<Self> {
        let registry = Registry::new();
        sm.metrics().register(&registry)?;
        sm.hub().metrics().register(&registry)?;
        let raft = RaftMetrics::new()?;
        raft.register(&registry)?;
        let by = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Self {
            watchers: gauge("baton_watchers", "Watch streams this node feeds.")?,
            sessions: by(
                "baton_sessions",
                "Live worker sessions, per group.",
                &["group"],
            )?,
            partitions: by(
                "baton_partitions",
                "Partitions each worker holds.",
                &["group", "worker"],
            )?,
            handoffs: by(
                "baton_handoffs_in_flight",
                "Partitions whose owner has been asked to release them, per group.",
                &["group"],
            )?,
            unassigned: by(
                "baton_partitions_unassigned",
                "Partitions nobody holds, per group.",
                &["group"],
            )?,
            tombstones: by(
                "baton_tombstones",
                "Tombstones kept, per group.",
                &["group"],
            )?,
            load_imbalance: {
                let opts = Opts::new(
                    "baton_load_max_over_mean",
                    "The most utilised worker's load/capacity over the group's mean, per group with load reports (leader only; workers alone with a hot partition left out).",
                );
                let g = GaugeVec::new(opts, &["group"])?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            recommended_workers: by(
                "baton_load_recommended_workers",
                "Workers of the mean capacity the reported load needs at the group's target utilisation (leader only; groups with reported capacities).",
                &["group"],
            )?,
            raft,
            registry,
        })
    }
}

fn as_gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn healthz(State(http): State<Http>) -> (StatusCode, String) {
    match &http.raft.metrics().borrow().running_state {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(fatal) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {fatal}\n"),
        ),
    }
}

async fn readyz(State(http): State<Http>) -> (StatusCode, String) {
    if let Some(index) = http.removal.get() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", http.removal.message(index)),
        );
    }
    let metrics = http.raft.metrics().borrow().clone();
    let applied = metrics.last_applied.map_or(0, |l| l.index);
    let committed = http.log.committed_index();
    match metrics.current_leader {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known\n".into(),
        ),
        Some(_) if applied < committed => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: applied {applied} of {committed} committed entries\n"),
        ),
        Some(leader) => (
            StatusCode::OK,
            format!("ready: leader {leader}, applied {applied}\n"),
        ),
    }
}

async fn metrics(State(http): State<Http>) -> (StatusCode, String) {
    let m = http.raft.metrics().borrow().clone();
    let g = &http.gauges;
    g.raft.observe(&m, http.log.committed_index());
    g.watchers
        .set(i64::try_from(http.sm.hub().watchers()).unwrap_or(i64::MAX));
    // This node's applied state: the leader's is the current one.
    for v in [
        &g.sessions,
        &g.partitions,
        &g.handoffs,
        &g.unassigned,
        &g.tombstones,
        &g.recommended_workers,
    ] {
        v.reset();
    }
    g.load_imbalance.reset();
    // Load reports live on the leader, with the leases.
    let reports = http.leases.all_load_reports();
    let now = crate::clock::now_ms();
    http.sm.read(|state| {
        for (name, group) in &state.groups {
            g.sessions
                .with_label_values(&[name.as_str()])
                .set(as_gauge(group.sessions.len() as u64));
            g.tombstones
                .with_label_values(&[name.as_str()])
                .set(as_gauge(group.tombstones.len() as u64));
            let counts = group.partition_counts();
            g.handoffs
                .with_label_values(&[name.as_str()])
                .set(as_gauge(counts.handing_off));
            g.unassigned
                .with_label_values(&[name.as_str()])
                .set(as_gauge(counts.unassigned));
            for (worker, n) in counts.held {
                g.partitions
                    .with_label_values(&[name.as_str(), worker])
                    .set(as_gauge(n));
            }
            if let Some(reports) = reports.get(name) {
                let snapshot = load_reports::snapshot_of(group, reports);
                let (round, _) = rebalancer::round_for(state, name, group, now, &snapshot);
                g.load_imbalance
                    .with_label_values(&[name.as_str()])
                    .set(round.before_milli as f64 / 1000.0);
                if let Some(n) = round.recommended_workers {
                    g.recommended_workers
                        .with_label_values(&[name.as_str()])
                        .set(i64::from(n));
                }
            }
        }
    });
    let mut text = Vec::new();
    match TextEncoder::new().encode(&g.registry.gather(), &mut text) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&text).into_owned()),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

/// Binds the HTTP listener; the caller serves it with [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the HTTP endpoint until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    raft: BatonRaft,
    removal: Arc<Removal>,
    log: LogStore,
    sm: StateMachineStore,
    leases: Arc<Leases>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Http {
        leases,
        raft,
        removal,
        log,
        gauges: Gauges::new(&sm)?,
        sm,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
