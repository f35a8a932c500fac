//! Benchmarks side by side with etcd: the same load generator against a
//! 3-node baton cluster and a 3-node etcd 3.4 cluster, in turn, in the same
//! run, both on loopback with fsync on. Every figure is printed next to
//! etcd's and the ratio.

pub mod assign;
pub mod balance;
pub mod chart;
pub mod docs;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod idle;
pub mod probe;
pub mod scale;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::proto as pb;
use pb::tombstones_client::TombstonesClient;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::{Backend, Cluster};
use probe::Latencies;

/// One system under load: something that makes a durable single-key write
/// (`group`: a baton group, an etcd key prefix).
pub trait Target: Clone + Send + Sync + 'static {
    fn put(
        &self,
        client: usize,
        group: &str,
        key: String,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Figures of one load level on one system.
#[derive(Serialize, Clone, Debug)]
pub struct Level {
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU time (user + system) the system's server processes spent during
    /// the level, per completed write: what a write costs the servers, on a
    /// machine whose cores the load generator shares. `None` where the
    /// servers' processes were not given.
    pub server_cpu_us_per_write: Option<f64>,
    /// baton: the mean number of entries per append to the leader's log
    /// during the level (each append is one flush), from its
    /// `baton_log_append_entries` histogram.
    pub leader_entries_per_append: Option<f64>,
    /// baton: the mean number of commands per entry the leader applied
    /// during the level (its proposer's batches), from its
    /// `baton_entry_commands` histogram.
    pub leader_commands_per_entry: Option<f64>,
}

/// Drives `clients` concurrent writers for `duration`; each writes unique
/// keys back to back and records each write's latency.
pub async fn write_load<T: Target>(
    target: &T,
    group: &str,
    clients: usize,
    duration: Duration,
) -> Level {
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let target = target.clone();
        let errors = errors.clone();
        let group = group.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match target.put(c, &group, format!("bench/{c}/{n}")).await {
                    Ok(()) => latencies.record(t.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            latencies
        }));
    }
    let mut all = Latencies::default();
    for t in tasks {
        if let Ok(l) = t.await {
            all.add(&l);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let summary = all.summary();
    Level {
        clients,
        ops: summary.count,
        errors: errors.load(Ordering::Relaxed),
        ops_per_s: summary.count as f64 / elapsed,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        max_ms: summary.max_ms,
        server_cpu_us_per_write: None,
        leader_entries_per_append: None,
        leader_commands_per_entry: None,
    }
}

/// Runs each load level in turn on `target`, printing each as it ends;
/// `servers` are the system's server processes, whose CPU time is read
/// before and after each level, and `leader_http` a baton leader's HTTP
/// address, whose log appends are counted.
pub async fn write_levels<T: Target>(
    name: &str,
    target: &T,
    servers: &[u32],
    leader_http: Option<SocketAddr>,
    levels: &[usize],
    duration: Duration,
) -> Vec<Level> {
    let cpu_s = || {
        servers
            .iter()
            .map(|&pid| probe::cpu_seconds(pid))
            .sum::<f64>()
    };
    // A histogram's sum and count on the leader.
    let histogram = |name: &'static str| async move {
        let http = leader_http?;
        let sum = probe::baton_metric(http, &format!("{name}_sum")).await?;
        let count = probe::baton_metric(http, &format!("{name}_count")).await?;
        Some((sum, count))
    };
    // The mean of what was observed between two readings.
    let mean = |before: Option<(f64, f64)>, after: Option<(f64, f64)>| match (before, after) {
        (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => Some((s1 - s0) / (c1 - c0)),
        _ => None,
    };
    const APPENDS: &str = "baton_log_append_entries";
    const COMMANDS: &str = "baton_entry_commands";
    let mut out = Vec::new();
    for &clients in levels {
        let before = cpu_s();
        let (appended, applied) = (histogram(APPENDS).await, histogram(COMMANDS).await);
        let mut level = write_load(target, GROUP, clients, duration).await;
        level.server_cpu_us_per_write =
            (level.ops > 0).then(|| (cpu_s() - before) * 1e6 / level.ops as f64);
        level.leader_entries_per_append = mean(appended, histogram(APPENDS).await);
        level.leader_commands_per_entry = mean(applied, histogram(COMMANDS).await);
        println!(
            "  {name:<5} {clients:>5} clients: {:>8.0} writes/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  server CPU {:>6.0} µs/write{}{}  ({} errors)",
            level.ops_per_s,
            level.p50_ms,
            level.p99_ms,
            level.max_ms,
            level.server_cpu_us_per_write.unwrap_or(0.0),
            level
                .leader_entries_per_append
                .map_or(String::new(), |n| format!("  {n:.1} entries per leader append")),
            level
                .leader_commands_per_entry
                .map_or(String::new(), |n| format!("  {n:.1} commands per entry")),
            level.errors
        );
        out.push(level);
    }
    out
}

/// baton's durable write: a tombstone put (committed on a majority, flushed,
/// applied) sent straight to the leader, over a few shared connections.
#[derive(Clone)]
pub struct Baton {
    channels: Arc<Vec<Channel>>,
}

impl Baton {
    pub async fn connect(cluster: &Cluster) -> anyhow::Result<Self> {
        let leader = cluster.await_leader(Duration::from_secs(30)).await?;
        let addr = cluster
            .endpoint(leader)
            .ok_or_else(|| anyhow::anyhow!("no address for the leader"))?;
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            channels.push(
                Endpoint::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await?,
            );
        }
        Ok(Self {
            channels: Arc::new(channels),
        })
    }

    /// One of the connections to the leader.
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }
}

/// Keeps a baton session alive as a worker does: a keepalive every `ttl / 3`
/// on one stream, until the stream ends or `until`. Counts the
/// acknowledgements in `acked`; false if the stream failed.
pub async fn keep_session_alive(
    channel: Channel,
    message: pb::KeepAliveRequest,
    ttl: Duration,
    until: Instant,
    acked: Arc<AtomicU64>,
) -> bool {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if tx.send(message.clone()).await.is_err() {
        return false;
    }
    let Ok(replies) = pb::worker_client::WorkerClient::new(channel)
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return false;
    };
    let mut replies = replies.into_inner();
    while Instant::now() < until {
        if !matches!(replies.message().await, Ok(Some(_))) {
            return false;
        }
        acked.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(ttl / 3).await;
        if tx.send(message.clone()).await.is_err() {
            return false;
        }
    }
    true
}

/// A simulated worker's instant drain: releases revoked partitions, one
/// call per fencing token they were granted with.
pub async fn release_by_token(
    channel: &Channel,
    group: &str,
    worker: &str,
    session: u64,
    by_token: std::collections::BTreeMap<u64, Vec<u32>>,
) -> anyhow::Result<()> {
    for (token, ps) in by_token {
        let partitions = baton_client::partitions::ranges_of(ps)
            .into_iter()
            .map(|r| pb::PartitionRange {
                first: *r.start(),
                last: *r.end(),
            })
            .collect();
        pb::worker_client::WorkerClient::new(channel.clone())
            .release(pb::ReleaseRequest {
                group: group.into(),
                worker: worker.into(),
                session,
                partitions,
                token,
            })
            .await?;
    }
    Ok(())
}

/// Longer than any run, for sessions kept alive until their task is aborted.
pub const FOREVER: Duration = Duration::from_secs(24 * 3600);

/// Connections each load generator spreads its clients over.
pub const CONNECTIONS: usize = 8;
/// The group (etcd: the prefix) of the write benchmarks.
pub const GROUP: &str = "bench";

impl Target for Baton {
    async fn put(&self, client: usize, group: &str, key: String) -> anyhow::Result<()> {
        TombstonesClient::new(self.channel(client))
            .put(pb::PutTombstoneRequest {
                group: group.into(),
                key,
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}

#[derive(Serialize)]
pub struct Row {
    pub clients: usize,
    pub baton: Level,
    pub etcd: Option<Level>,
    /// baton's throughput over etcd's.
    pub throughput_ratio: Option<f64>,
}

/// `writes`: durable single-key writes at each concurrency level, baton
/// then etcd.
pub async fn writes(
    node_binary: &Path,
    dir: &Path,
    levels: &[usize],
    duration: Duration,
) -> anyhow::Result<Vec<Row>> {
    let baton_levels;
    {
        let cluster = Cluster::start(3, Backend::Direct, node_binary, &dir.join("baton")).await?;
        let target = Baton::connect(&cluster).await?;
        let mut admin =
            baton_client::AdminClient::new(&cluster.endpoints(), Duration::from_secs(20))?;
        let config = pb::GroupConfig {
            partitions: Some(256),
            ..Default::default()
        };
        admin.create_group(GROUP, config).await?;
        let servers: Vec<u32> = (1..=3).filter_map(|id| cluster.pid(id)).collect();
        let leader = cluster.await_leader(Duration::from_secs(30)).await?;
        baton_levels = write_levels(
            "baton",
            &target,
            &servers,
            cluster.http(leader),
            levels,
            duration,
        )
        .await;
        cluster.stop();
    }
    let etcd_levels = etcd_writes(dir, levels, duration).await?;
    Ok(baton_levels
        .into_iter()
        .enumerate()
        .map(|(i, baton)| {
            let etcd = etcd_levels.as_ref().and_then(|e| e.get(i).cloned());
            let throughput_ratio = etcd
                .as_ref()
                .filter(|e| e.ops_per_s > 0.0)
                .map(|e| baton.ops_per_s / e.ops_per_s);
            Row {
                clients: baton.clients,
                baton,
                etcd,
                throughput_ratio,
            }
        })
        .collect())
}

#[cfg(feature = "etcd")]
async fn etcd_writes(
    dir: &Path,
    levels: &[usize],
    duration: Duration,
) -> anyhow::Result<Option<Vec<Level>>> {
    let cluster = etcd::EtcdCluster::start(3, &dir.join("etcd")).await?;
    let target = etcd::Etcd::connect(&cluster).await?;
    let servers: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
    let out = write_levels("etcd", &target, &servers, None, levels, duration).await;
    drop(cluster);
    Ok(Some(out))
}

#[cfg(not(feature = "etcd"))]
async fn etcd_writes(_: &Path, _: &[usize], _: Duration) -> anyhow::Result<Option<Vec<Level>>> {
    println!("  etcd: not measured: this build has no etcd client (scripts/bench builds with --features etcd)");
    Ok(None)
}

/// The table `writes` prints and docs/benchmarks.md holds.
pub fn writes_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| clients | baton writes/s | baton p50 / p99 / max (ms) | etcd writes/s | etcd p50 / p99 / max (ms) | throughput baton ÷ etcd | server CPU µs per write, baton / etcd | baton commands per entry, entries per leader append |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let etcd = r.etcd.as_ref();
        t.push_str(&format!(
            "| {} | {:.0} | {:.2} / {:.2} / {:.1} | {} | {} | {} | {} / {} | {} / {} |\n",
            r.clients,
            r.baton.ops_per_s,
            r.baton.p50_ms,
            r.baton.p99_ms,
            r.baton.max_ms,
            etcd.map_or("—".into(), |e| format!("{:.0}", e.ops_per_s)),
            etcd.map_or("—".into(), |e| format!(
                "{:.2} / {:.2} / {:.1}",
                e.p50_ms, e.p99_ms, e.max_ms
            )),
            r.throughput_ratio
                .map_or("—".into(), |x| format!("{x:.2}×")),
            cpu_per_write(Some(&r.baton)),
            cpu_per_write(etcd),
            one_decimal(r.baton.leader_commands_per_entry),
            one_decimal(r.baton.leader_entries_per_append),
        ));
    }
    t
}

/// A mean as the table shows it.
fn one_decimal(mean: Option<f64>) -> String {
    mean.map_or("—".into(), |n| format!("{n:.1}"))
}

/// A level's server CPU per write, as the table shows it.
fn cpu_per_write(level: Option<&Level>) -> String {
    level
        .and_then(|l| l.server_cpu_us_per_write)
        .map_or("—".into(), |us| format!("{us:.0}"))
}
