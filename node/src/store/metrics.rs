//! What the store observes, for `/metrics`: the size of log appends,
//! applying, handoffs completed by an apply, lease expiries, and the cost of
//! the last snapshot built here, and what the rebalancer moved and why.
//! Each store owns its own (a test can run several nodes in one process);
//! the HTTP endpoint adds them to its registry with [`StoreMetrics::register`].

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone)]
pub struct StoreMetrics {
    /// Entries per append to the Raft log, each append one flush: on the
    /// leader the client writes that arrived together, on a follower the
    /// entries of one replication message.
    pub log_append_entries: Histogram,
    /// Commands per applied entry that carries commands: more than one when
    /// the leader's proposer batched them (`cluster::batcher`).
    pub entry_commands: Histogram,
    /// Time to apply one batch of entries (written, not flushed: see
    /// `StateMachineStore::apply_entries`).
    pub apply_seconds: Histogram,
    /// Graceful handoffs: from the owner being asked to release partitions
    /// to its release being applied (this node's clock against the leader's).
    pub handoff_seconds: Histogram,
    /// Sessions ended because their lease ran out.
    pub lease_expiries: IntCounter,
    /// Partitions the rebalancer's rounds granted or started handing off,
    /// per group and reason (`place`, `isolate`, `balance`).
    pub moves: IntCounterVec,
    /// Size of the last snapshot this node built.
    pub snapshot_bytes: IntGauge,
    /// From the start of the last build to the snapshot being on disk.
    pub snapshot_build_seconds: Gauge,
    /// How long applying waited for the last build (the state lock's hold).
    pub snapshot_blocked_apply_seconds: Gauge,
}

impl StoreMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        };
        Ok(Self {
            log_append_entries: histogram(
                "baton_log_append_entries",
                "Entries per append to this node's Raft log (each append is one flush): on the leader, the client writes that arrived together.",
                prometheus::exponential_buckets(1.0, 2.0, 11)?,
            )?,
            entry_commands: histogram(
                "baton_entry_commands",
                "Commands per applied Raft entry that carries commands: more than one when the leader batched commands queued together.",
                prometheus::exponential_buckets(1.0, 2.0, 11)?,
            )?,
            apply_seconds: histogram(
                "baton_apply_seconds",
                "Time to apply one batch of committed entries (written to disk, flushed with the next log append).",
                prometheus::exponential_buckets(0.0001, 4.0, 9)?,
            )?,
            handoff_seconds: histogram(
                "baton_handoff_seconds",
                "Graceful handoffs: from the owner being asked to release partitions to the release being applied.",
                vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
            )?,
            lease_expiries: IntCounter::new(
                "baton_lease_expiries_total",
                "Worker sessions ended because their lease ran out.",
            )?,
            moves: IntCounterVec::new(
                Opts::new(
                    "baton_moves_total",
                    "Partitions the rebalancer granted or started handing off, per group and reason: place (they needed a holder), isolate (off a hot partition's worker), balance (to even out load or counts).",
                ),
                &["group", "reason"],
            )?,
            snapshot_bytes: IntGauge::new(
                "baton_snapshot_bytes",
                "Size of the last snapshot this node built.",
            )?,
            snapshot_build_seconds: Gauge::new(
                "baton_snapshot_build_seconds",
                "Time the last snapshot this node built took, until it was on disk.",
            )?,
            snapshot_blocked_apply_seconds: Gauge::new(
                "baton_snapshot_blocked_apply_seconds",
                "How long applying entries waited for the last snapshot build.",
            )?,
        })
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.log_append_entries.clone()))?;
        registry.register(Box::new(self.entry_commands.clone()))?;
        registry.register(Box::new(self.apply_seconds.clone()))?;
        registry.register(Box::new(self.handoff_seconds.clone()))?;
        registry.register(Box::new(self.lease_expiries.clone()))?;
        registry.register(Box::new(self.moves.clone()))?;
        registry.register(Box::new(self.snapshot_bytes.clone()))?;
        registry.register(Box::new(self.snapshot_build_seconds.clone()))?;
        registry.register(Box::new(self.snapshot_blocked_apply_seconds.clone()))?;
        Ok(())
    }
}
