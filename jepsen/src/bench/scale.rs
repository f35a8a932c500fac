//! `scale`: a cluster holding many groups, tombstones and sessions. Each
//! system is first measured empty (writes at 100 clients), then loaded —
//! sessions joined and kept alive, tombstones put over every group — and
//! measured again: memory and disk per node, writes at 100 clients, one
//! snapshot, and how long a killed follower takes to be back in step.
//!
//! - baton: `groups` groups, `sessions` sessions spread over them,
//!   `tombstones` tombstone puts spread over them. The snapshot is the last
//!   one the leader built by itself (every 10,000 entries), read from its
//!   `/metrics`.
//! - etcd: a lease with a registration key per session, one key per
//!   tombstone under a prefix per group. The snapshot is a client snapshot
//!   (`etcdctl snapshot save`) streamed from the leader.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::proto as pb;
use pb::worker_client::WorkerClient;
use serde::Serialize;

use super::{probe, write_load, Level, Target};
use crate::cluster::{Backend, Cluster};

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub groups: usize,
    pub tombstones: u64,
    pub sessions: usize,
    /// Concurrent clients that load the tombstones.
    pub loaders: usize,
    pub ttl: Duration,
}

#[derive(Serialize, Clone, Debug)]
pub struct Side {
    /// Tombstone puts a second while loading.
    pub load_per_s: f64,
    pub load_errors: u64,
    pub empty_writes: Level,
    pub loaded_writes: Level,
    /// Resident memory of each node, loaded, in MiB.
    pub rss_mib: Vec<f64>,
    /// Data directory of each node, loaded, in MiB.
    pub disk_mib: Vec<f64>,
    pub snapshot_mib: f64,
    pub snapshot_seconds: f64,
    /// baton: how long applying waited for the snapshot build.
    pub snapshot_blocked_apply_seconds: Option<f64>,
    /// From the restart of a SIGKILLed follower to it having applied
    /// everything the leader had at the kill.
    pub restart_seconds: f64,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub groups: usize,
    pub tombstones: u64,
    pub sessions: usize,
    pub baton: Side,
    pub etcd: Option<Side>,
}

const MIB: f64 = 1024.0 * 1024.0;
const WRITE_CLIENTS: usize = 100;
const WRITE_SECONDS: Duration = Duration::from_secs(5);

fn group_name(g: usize) -> String {
    format!("g{g:03}")
}

/// Puts `total` tombstones, key i in group i mod `groups`, from `loaders`
/// concurrent clients; prints progress every 10 s. Returns puts a second
/// and errors.
async fn load<T: Target>(target: &T, params: Params) -> (f64, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..params.loaders {
        let (target, next, errors) = (target.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= params.tombstones {
                    return;
                }
                let group = group_name(usize::try_from(i).unwrap_or(0) % params.groups);
                if target.put(c, &group, format!("entity-{i}")).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let progress = {
        let next = next.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let done = next.load(Ordering::Relaxed).min(params.tombstones);
                println!(
                    "    {done} of {} tombstones after {:.0} s",
                    params.tombstones,
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    progress.abort();
    (
        params.tombstones as f64 / started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
    )
}

/// Writes at [`WRITE_CLIENTS`] clients for [`WRITE_SECONDS`] on `target`,
/// printed as `system`'s figure when `state` (empty or loaded).
async fn writes_now<T: Target>(system: &str, state: &str, target: &T) -> Level {
    let level = write_load(target, super::GROUP, WRITE_CLIENTS, WRITE_SECONDS).await;
    println!(
        "  {system:<5} {state}, {WRITE_CLIENTS} clients: {:.0} writes/s, p99 {:.1} ms",
        level.ops_per_s, level.p99_ms
    );
    level
}

/// Resident memory and data directory size of each node (its pid, its
/// data directory), in MiB.
fn footprint(
    nodes: impl Iterator<Item = (Option<u32>, std::path::PathBuf)>,
) -> (Vec<f64>, Vec<f64>) {
    nodes
        .map(|(pid, dir)| {
            (
                pid.map_or(0.0, |p| probe::rss_bytes(p) as f64 / MIB),
                probe::dir_bytes(&dir) as f64 / MIB,
            )
        })
        .unzip()
}

/// Waits until `caught_up` says yes, polling; how long it took.
async fn time_until<F, Fut>(limit: Duration, mut caught_up: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !caught_up().await {
        if started.elapsed() > limit {
            anyhow::bail!("the restarted follower did not catch up within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

pub async fn baton(node_binary: &Path, dir: &Path, params: Params) -> anyhow::Result<Side> {
    let cluster = Cluster::start(3, Backend::Direct, node_binary, &dir.join("baton")).await?;
    let leader = cluster.await_leader(Duration::from_secs(30)).await?;
    let mut admin = baton_client::AdminClient::new(&cluster.endpoints(), Duration::from_secs(30))?;
    let target = super::Baton::connect(&cluster).await?;
    admin
        .create_group(super::GROUP, pb::GroupConfig::default())
        .await?;
    let empty_writes = writes_now("baton", "empty", &target).await;

    for g in 0..params.groups {
        admin
            .create_group(&group_name(g), pb::GroupConfig::default())
            .await?;
    }
    let ttl_ms = u64::try_from(params.ttl.as_millis())?;
    let joined_at = Instant::now();
    let mut keepalives = Vec::new();
    for s in 0..params.sessions {
        let group = group_name(s % params.groups);
        let worker = format!("worker-{s:05}");
        let channel = target.channel(s);
        let joined = WorkerClient::new(channel.clone())
            .join(pb::JoinRequest {
                group: group.clone(),
                worker: worker.clone(),
                ttl_ms: Some(ttl_ms),
                ..Default::default()
            })
            .await?
            .into_inner();
        let message = pb::KeepAliveRequest {
            group,
            worker,
            session: joined.session,
            ..Default::default()
        };
        keepalives.push(tokio::spawn(super::keep_session_alive(
            channel,
            message,
            params.ttl,
            Instant::now() + super::FOREVER,
            Arc::default(),
        )));
    }
    println!(
        "  baton: {} groups, {} sessions joined in {:.1} s; loading {} tombstones with {} clients",
        params.groups,
        params.sessions,
        joined_at.elapsed().as_secs_f64(),
        params.tombstones,
        params.loaders
    );
    let (load_per_s, load_errors) = load(&target, params).await;
    println!("  baton: loaded at {load_per_s:.0} tombstones/s ({load_errors} errors)");

    let members = cluster.members();
    let (rss_mib, disk_mib) = footprint(
        members
            .iter()
            .map(|&id| (cluster.pid(id), cluster.data_dir(id))),
    );
    let loaded_writes = writes_now("baton", "loaded", &target).await;

    let http = cluster
        .http(leader)
        .ok_or_else(|| anyhow::anyhow!("no HTTP address for the leader"))?;
    let gauge =
        |name: &'static str| async move { probe::baton_metric(http, name).await.unwrap_or(0.0) };
    let snapshot_mib = gauge("baton_snapshot_bytes").await / MIB;
    let snapshot_seconds = gauge("baton_snapshot_build_seconds").await;
    let snapshot_blocked = gauge("baton_snapshot_blocked_apply_seconds").await;

    let follower = members
        .iter()
        .copied()
        .find(|&id| id != leader)
        .ok_or_else(|| anyhow::anyhow!("no follower to restart"))?;
    let follower_http = cluster
        .http(follower)
        .ok_or_else(|| anyhow::anyhow!("no HTTP address for node {follower}"))?;
    cluster.kill(follower)?;
    let goal = gauge("baton_raft_last_log_index").await;
    cluster.restart(follower)?;
    let restart_seconds = time_until(Duration::from_secs(600), || async move {
        probe::baton_metric(follower_http, "baton_raft_applied_index")
            .await
            .is_some_and(|applied| applied >= goal)
    })
    .await?;
    for k in keepalives {
        k.abort();
    }
    cluster.stop();
    Ok(Side {
        load_per_s,
        load_errors,
        empty_writes,
        loaded_writes,
        rss_mib,
        disk_mib,
        snapshot_mib,
        snapshot_seconds,
        snapshot_blocked_apply_seconds: Some(snapshot_blocked),
        restart_seconds,
    })
}

#[cfg(feature = "etcd")]
pub async fn etcd(dir: &Path, params: Params) -> anyhow::Result<Option<Side>> {
    use etcd_client::PutOptions;
    let mut cluster = super::etcd::EtcdCluster::start(3, &dir.join("etcd")).await?;
    let leader = cluster.leader().await?;
    let target = super::etcd::Etcd::connect(&cluster).await?;
    let empty_writes = writes_now("etcd", "empty", &target).await;

    let mut client = super::etcd::leader_client(&cluster).await?;
    let ttl_s = i64::try_from(params.ttl.as_secs().max(1))?;
    let joined_at = Instant::now();
    let mut keepalives = Vec::new();
    for s in 0..params.sessions {
        let lease = client.lease_grant(ttl_s, None).await?.id();
        client
            .put(
                format!("{}/sessions/worker-{s:05}", group_name(s % params.groups)),
                "alive",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
        let ttl = params.ttl;
        keepalives.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if keeper.keep_alive().await.is_err()
                    || !matches!(replies.message().await, Ok(Some(_)))
                {
                    return;
                }
            }
        }));
    }
    println!(
        "  etcd:  {} sessions (leases) in {:.1} s; loading {} keys with {} clients",
        params.sessions,
        joined_at.elapsed().as_secs_f64(),
        params.tombstones,
        params.loaders
    );
    let (load_per_s, load_errors) = load(&target, params).await;
    println!("  etcd:  loaded at {load_per_s:.0} keys/s ({load_errors} errors)");

    let (rss_mib, disk_mib) = footprint((0..3).map(|i| (cluster.pid(i), cluster.data_dir(i))));
    let loaded_writes = writes_now("etcd", "loaded", &target).await;

    let snapshot_started = Instant::now();
    let mut snapshot = client.snapshot().await?;
    let mut bytes = 0usize;
    while let Some(part) = snapshot.message().await? {
        bytes += part.blob().len();
    }
    let snapshot_seconds = snapshot_started.elapsed().as_secs_f64();

    let follower = (0..3).find(|&i| i != leader).unwrap_or(0);
    cluster.kill(follower)?;
    let goal = client.status().await?.raft_index();
    cluster.restart(follower)?;
    let endpoint = cluster.endpoints[follower].clone();
    let restart_seconds = time_until(Duration::from_secs(600), || {
        let endpoint = endpoint.clone();
        async move {
            let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await else {
                return false;
            };
            c.status()
                .await
                .is_ok_and(|s| s.raft_applied_index() >= goal)
        }
    })
    .await?;
    for k in keepalives {
        k.abort();
    }
    drop(cluster);
    Ok(Some(Side {
        load_per_s,
        load_errors,
        empty_writes,
        loaded_writes,
        rss_mib,
        disk_mib,
        snapshot_mib: bytes as f64 / MIB,
        snapshot_seconds,
        snapshot_blocked_apply_seconds: None,
        restart_seconds,
    }))
}

#[cfg(not(feature = "etcd"))]
pub async fn etcd(_: &Path, _: Params) -> anyhow::Result<Option<Side>> {
    Ok(None)
}

pub async fn run(node_binary: &Path, dir: &Path, params: Params) -> anyhow::Result<Report> {
    anyhow::ensure!(params.groups >= 1, "--groups must be at least 1");
    let baton = baton(node_binary, dir, params).await?;
    let etcd = etcd(dir, params).await?;
    Ok(Report {
        groups: params.groups,
        tombstones: params.tombstones,
        sessions: params.sessions,
        baton,
        etcd,
    })
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

pub fn table(r: &Report) -> String {
    let mut t = format!(
        "{} groups, {} sessions kept alive, {} tombstones (etcd: keys). Writes: {WRITE_CLIENTS} clients for {} s, empty and loaded.\n\n| | baton | etcd |\n|---|---|---|\n",
        r.groups,
        r.sessions,
        r.tombstones,
        WRITE_SECONDS.as_secs()
    );
    let e = r.etcd.as_ref();
    let mut row = |name: &str, b: String, e: Option<String>| {
        t.push_str(&format!(
            "| {name} | {b} | {} |\n",
            e.unwrap_or_else(|| "not measured".into())
        ));
    };
    row(
        "load rate (puts/s)",
        format!("{:.0}", r.baton.load_per_s),
        e.map(|e| format!("{:.0}", e.load_per_s)),
    );
    let writes = |s: &Side| {
        format!(
            "{:.0} → {:.0} ({:.2}×); p99 {:.1} → {:.1} ms",
            s.empty_writes.ops_per_s,
            s.loaded_writes.ops_per_s,
            s.loaded_writes.ops_per_s / s.empty_writes.ops_per_s.max(1e-9),
            s.empty_writes.p99_ms,
            s.loaded_writes.p99_ms
        )
    };
    row("writes/s empty → loaded", writes(&r.baton), e.map(writes));
    row(
        "resident memory per node (MiB)",
        list(&r.baton.rss_mib),
        e.map(|e| list(&e.rss_mib)),
    );
    row(
        "data directory per node (MiB)",
        list(&r.baton.disk_mib),
        e.map(|e| list(&e.disk_mib)),
    );
    let snapshot = |s: &Side| {
        format!(
            "{:.1} MiB in {:.2} s{}",
            s.snapshot_mib,
            s.snapshot_seconds,
            s.snapshot_blocked_apply_seconds
                .map_or(String::new(), |b| format!(" (apply held {b:.2} s)"))
        )
    };
    row("snapshot", snapshot(&r.baton), e.map(snapshot));
    row(
        "killed follower back in step (s)",
        format!("{:.2}", r.baton.restart_seconds),
        e.map(|e| format!("{:.2}", e.restart_seconds)),
    );
    t
}
