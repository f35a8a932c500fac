//! `idle`: what it costs to keep many workers alive when nothing changes.
//! baton: sessions of one group, a keepalive stream each; etcd: a lease each,
//! with the worker's registration key attached, kept alive on a stream each
//! (the usual etcd membership pattern). Both send a keepalive every TTL/3 over
//! one connection to the leader. Measured over the window: Raft log entries
//! added, the leader's CPU, and every byte on loopback (clients and peers).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::proto as pb;
use pb::admin_client::AdminClient as AdminGrpc;
use pb::worker_client::WorkerClient;
use serde::Serialize;

use super::probe;
use crate::cluster::{Backend, Cluster};

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub workers: usize,
    pub ttl: Duration,
    pub seconds: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Side {
    pub seconds: f64,
    pub keepalives_per_s: f64,
    pub failed_streams: u64,
    pub log_entries: u64,
    pub log_entries_per_s: f64,
    /// Percent of one core.
    pub leader_cpu_percent: f64,
    pub loopback_bytes_per_s: f64,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub workers: usize,
    pub ttl_s: f64,
    pub seconds: u64,
    pub baton: Side,
    pub etcd: Option<Side>,
}

/// Counters the keepalive loops share.
#[derive(Default)]
struct Keepalives {
    acks: Arc<AtomicU64>,
    failed: AtomicU64,
}

/// What is read at both ends of the window.
struct Mark {
    at: Instant,
    log_index: u64,
    cpu_s: f64,
    lo_bytes: u64,
    acks: u64,
}

impl Mark {
    fn side(&self, end: &Mark, failed: u64) -> Side {
        let s = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let entries = end.log_index.saturating_sub(self.log_index);
        Side {
            seconds: s,
            keepalives_per_s: end.acks.saturating_sub(self.acks) as f64 / s,
            failed_streams: failed,
            log_entries: entries,
            log_entries_per_s: entries as f64 / s,
            leader_cpu_percent: (end.cpu_s - self.cpu_s) / s * 100.0,
            loopback_bytes_per_s: end.lo_bytes.saturating_sub(self.lo_bytes) as f64 / s,
        }
    }
}

/// Lets the first round of keepalives (and baton's first rebalance) settle
/// before the window opens.
const SETTLE: Duration = Duration::from_secs(5);

pub async fn baton(node_binary: &Path, dir: &Path, params: Params) -> anyhow::Result<Side> {
    let cluster = Cluster::start(3, Backend::Direct, node_binary, &dir.join("baton")).await?;
    let leader = cluster.await_leader(Duration::from_secs(30)).await?;
    let (addr, http, pid) = match (
        cluster.endpoint(leader),
        cluster.http(leader),
        cluster.pid(leader),
    ) {
        (Some(a), Some(h), Some(p)) => (a, h, p),
        _ => anyhow::bail!("the leader, node {leader}, is not running"),
    };
    let mut admin = baton_client::AdminClient::new(&cluster.endpoints(), Duration::from_secs(30))?;
    let config = pb::GroupConfig {
        partitions: Some(4096),
        ..Default::default()
    };
    admin.create_group("idle", config).await?;
    // Everybody joins while the group is frozen; unfreezing then grants every
    // (free) partition in one rebalance, so nothing is moving in the window.
    let freeze = |frozen| pb::SetFrozenRequest {
        group: "idle".into(),
        frozen,
    };
    admin
        .call(|ch| {
            let r = freeze(true);
            async move { AdminGrpc::new(ch).set_frozen(r).await }
        })
        .await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let ttl_ms = u64::try_from(params.ttl.as_millis())?;
    let mut sessions = Vec::new();
    for w in 0..params.workers {
        let worker = format!("worker-{w:05}");
        let joined = WorkerClient::new(channel.clone())
            .join(pb::JoinRequest {
                group: "idle".into(),
                worker: worker.clone(),
                ttl_ms: Some(ttl_ms),
                ..Default::default()
            })
            .await?
            .into_inner();
        sessions.push((worker, joined.session));
    }
    admin
        .call(|ch| {
            let r = freeze(false);
            async move { AdminGrpc::new(ch).set_frozen(r).await }
        })
        .await?;
    let counters = Arc::new(Keepalives::default());
    let stop = Instant::now() + SETTLE + Duration::from_secs(params.seconds) + params.ttl;
    for (worker, session) in sessions {
        let (channel, counters) = (channel.clone(), counters.clone());
        let message = pb::KeepAliveRequest {
            group: "idle".into(),
            worker,
            session,
            ..Default::default()
        };
        tokio::spawn(async move {
            let acked = counters.acks.clone();
            if !super::keep_session_alive(channel, message, params.ttl, stop, acked).await {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    println!(
        "  baton: {} sessions joined; settling {SETTLE:?}",
        params.workers
    );
    tokio::time::sleep(SETTLE).await;
    let mark = || async {
        Mark {
            at: Instant::now(),
            log_index: probe::baton_metric(http, "baton_raft_last_log_index")
                .await
                .unwrap_or(0.0) as u64,
            cpu_s: probe::cpu_seconds(pid),
            lo_bytes: probe::loopback_bytes(),
            acks: counters.acks.load(Ordering::Relaxed),
        }
    };
    let start = mark().await;
    tokio::time::sleep(Duration::from_secs(params.seconds)).await;
    let end = mark().await;
    cluster.stop();
    Ok(start.side(&end, counters.failed.load(Ordering::Relaxed)))
}

#[cfg(feature = "etcd")]
pub async fn etcd(dir: &Path, params: Params) -> anyhow::Result<Option<Side>> {
    use etcd_client::PutOptions;
    let cluster = super::etcd::EtcdCluster::start(3, &dir.join("etcd")).await?;
    let leader = cluster.leader().await?;
    let pid = cluster
        .pid(leader)
        .ok_or_else(|| anyhow::anyhow!("the etcd leader is not running"))?;
    let mut client = super::etcd::leader_client(&cluster).await?;
    let ttl_s = i64::try_from(params.ttl.as_secs().max(1))?;
    let counters = Arc::new(Keepalives::default());
    let stop = Instant::now() + SETTLE + Duration::from_secs(params.seconds) + params.ttl;
    for w in 0..params.workers {
        let lease = client.lease_grant(ttl_s, None).await?.id();
        client
            .put(
                format!("idle/workers/worker-{w:05}"),
                "alive",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
        let counters = counters.clone();
        tokio::spawn(async move {
            while Instant::now() < stop {
                tokio::time::sleep(params.ttl / 3).await;
                if keeper.keep_alive().await.is_err() {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                match replies.message().await {
                    Ok(Some(_)) => counters.acks.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
            }
        });
    }
    println!(
        "  etcd:  {} leases granted; settling {SETTLE:?}",
        params.workers
    );
    tokio::time::sleep(SETTLE).await;
    let mark = |mut client: etcd_client::Client| {
        let counters = counters.clone();
        async move {
            let log_index = client.status().await.map_or(0, |s| s.raft_index());
            Mark {
                at: Instant::now(),
                log_index,
                cpu_s: probe::cpu_seconds(pid),
                lo_bytes: probe::loopback_bytes(),
                acks: counters.acks.load(Ordering::Relaxed),
            }
        }
    };
    let start = mark(client.clone()).await;
    tokio::time::sleep(Duration::from_secs(params.seconds)).await;
    let end = mark(client).await;
    drop(cluster);
    Ok(Some(
        start.side(&end, counters.failed.load(Ordering::Relaxed)),
    ))
}

#[cfg(not(feature = "etcd"))]
pub async fn etcd(_: &Path, _: Params) -> anyhow::Result<Option<Side>> {
    Ok(None)
}

pub async fn run(node_binary: &Path, dir: &Path, params: Params) -> anyhow::Result<Report> {
    let baton = baton(node_binary, dir, params).await?;
    print_side("baton", &baton);
    let etcd = etcd(dir, params).await?;
    if let Some(e) = &etcd {
        print_side("etcd", e);
    }
    Ok(Report {
        workers: params.workers,
        ttl_s: params.ttl.as_secs_f64(),
        seconds: params.seconds,
        baton,
        etcd,
    })
}

fn print_side(name: &str, s: &Side) {
    println!(
        "  {name:<5} over {:.0} s: {:.0} keepalives/s ({} failed streams), {} log entries ({:.2}/s), leader CPU {:.2}% of a core, loopback {:.1} KiB/s",
        s.seconds,
        s.keepalives_per_s,
        s.failed_streams,
        s.log_entries,
        s.log_entries_per_s,
        s.leader_cpu_percent,
        s.loopback_bytes_per_s / 1024.0
    );
}

pub fn table(r: &Report) -> String {
    let row = |name: &str, s: &Side| {
        format!(
            "| {name} | {:.0} | {} | {:.2} | {:.2} | {:.1} |\n",
            s.keepalives_per_s,
            s.log_entries,
            s.log_entries_per_s,
            s.leader_cpu_percent,
            s.loopback_bytes_per_s / 1024.0
        )
    };
    let mut t = format!(
        "{} workers, TTL {:.0} s (a keepalive every {:.1} s each), measured over {} s.\n\n| system | keepalives/s | log entries | log entries/s | leader CPU (% of a core) | loopback KiB/s |\n|---|---|---|---|---|---|\n",
        r.workers,
        r.ttl_s,
        r.ttl_s / 3.0,
        r.seconds
    );
    t.push_str(&row("baton", &r.baton));
    match &r.etcd {
        Some(e) => t.push_str(&row("etcd", e)),
        None => t.push_str("| etcd | not measured (no etcd client in this build) | | | | |\n"),
    }
    t
}
