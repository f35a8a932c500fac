//! `watch`: commit → delivery latency to many watchers while one writer puts
//! at a steady rate. baton: watchers of a group spread over the 3 nodes;
//! etcd: watchers of a key prefix spread over the 3 members. Each watcher
//! has its own connection, as separate worker processes would.
//!
//! Latency runs from the moment the writer has its acknowledgement (the
//! write is committed and applied) to the moment a watcher has the event; a
//! delivery that beats the acknowledgement counts as 0.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::proto as pb;
use pb::tombstones_client::TombstonesClient;
use pb::watch_client::WatchClient;
use serde::Serialize;
use tokio::sync::Mutex;

use super::probe::{Latencies, Summary};
use crate::cluster::{Backend, Cluster};

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub watchers: usize,
    pub rate: u32,
    pub seconds: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct Side {
    pub writes: u64,
    pub writes_per_s: f64,
    /// Deliveries expected (writes × watchers) that never came.
    pub missing: u64,
    pub latency: Summary,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub watchers: usize,
    pub rate: u32,
    pub seconds: u64,
    pub baton: Side,
    pub etcd: Option<Side>,
}

/// When each watcher had each revision: (revision, instant) per watcher.
type Received = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Matches deliveries to acknowledgements.
fn side(
    params: Params,
    acked: &HashMap<u64, Instant>,
    received: &[(u64, Instant)],
    elapsed: Duration,
) -> Side {
    let mut latencies = Latencies::default();
    let mut matched = 0u64;
    for (revision, at) in received {
        if let Some(acked_at) = acked.get(revision) {
            latencies.record(at.saturating_duration_since(*acked_at));
            matched += 1;
        }
    }
    let writes = acked.len() as u64;
    Side {
        writes,
        writes_per_s: writes as f64 / elapsed.as_secs_f64().max(1e-9),
        missing: (writes * params.watchers as u64).saturating_sub(matched),
        latency: latencies.summary(),
    }
}

/// Paces `params.rate` writes a second for `params.seconds`; `put` returns
/// the revision the write got.
async fn steady_writes<F, Fut>(
    params: Params,
    mut put: F,
) -> anyhow::Result<(HashMap<u64, Instant>, Duration)>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let total = u64::from(params.rate) * params.seconds;
    let mut acked = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / params.rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let revision = put(i).await?;
        acked.insert(revision, Instant::now());
    }
    Ok((acked, started.elapsed()))
}

/// Waits for every watcher task (at most `grace` after the last write) and
/// gathers what they received.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    received: &Received,
    grace: Duration,
) -> Vec<(u64, Instant)> {
    let deadline = tokio::time::Instant::now() + grace;
    for t in tasks {
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            break;
        }
    }
    std::mem::take(&mut *received.lock().await)
}

pub async fn baton(node_binary: &Path, dir: &Path, params: Params) -> anyhow::Result<Side> {
    let cluster = Cluster::start(3, Backend::Direct, node_binary, &dir.join("baton")).await?;
    let endpoints = cluster.endpoints();
    let mut admin = baton_client::AdminClient::new(&endpoints, Duration::from_secs(30))?;
    let config = pb::GroupConfig {
        partitions: Some(1024),
        ..Default::default()
    };
    admin.create_group("fanout", config).await?;

    let expected = u64::from(params.rate) * params.seconds;
    let received: Received = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..params.watchers {
        let addr = &endpoints[i % endpoints.len()];
        let mut client = WatchClient::connect(format!("http://{addr}")).await?;
        let request = pb::WatchRequest {
            group: "fanout".into(),
            ..Default::default()
        };
        let mut stream = client.watch(request).await?.into_inner();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
            while (mine.len() as u64) < expected {
                match stream.message().await {
                    Ok(Some(m)) => {
                        let now = Instant::now();
                        mine.extend(m.events.iter().map(|e| (e.revision, now)));
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            received.lock().await.extend(mine);
        }));
    }
    println!(
        "  baton: {} watchers connected over 3 nodes",
        params.watchers
    );
    // The writer talks to the leader, as etcd's does.
    let writer = super::Baton::connect(&cluster).await?.channel(0);
    let (acked, elapsed) = steady_writes(params, |i| {
        let request = pb::PutTombstoneRequest {
            group: "fanout".into(),
            key: format!("entity-{i}"),
            ..Default::default()
        };
        let mut client = TombstonesClient::new(writer.clone());
        async move { Ok(client.put(request).await?.into_inner().revision) }
    })
    .await?;
    let received = gather(tasks, &received, Duration::from_secs(30)).await;
    cluster.stop();
    Ok(side(params, &acked, &received, elapsed))
}

#[cfg(feature = "etcd")]
pub async fn etcd(dir: &Path, params: Params) -> anyhow::Result<Option<Side>> {
    use etcd_client::WatchOptions;
    let cluster = super::etcd::EtcdCluster::start(3, &dir.join("etcd")).await?;
    let expected = u64::from(params.rate) * params.seconds;
    let received: Received = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..params.watchers {
        let endpoint = &cluster.endpoints[i % cluster.endpoints.len()];
        let mut client = super::etcd::client(endpoint).await?;
        let mut stream = client
            .watch("fanout/", Some(WatchOptions::new().with_prefix()))
            .await?;
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut mine = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
            while (mine.len() as u64) < expected {
                match stream.message().await {
                    Ok(Some(m)) => {
                        let now = Instant::now();
                        mine.extend(
                            m.events()
                                .iter()
                                .filter_map(|e| e.kv())
                                .map(|kv| (u64::try_from(kv.mod_revision()).unwrap_or(0), now)),
                        );
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            received.lock().await.extend(mine);
        }));
    }
    println!(
        "  etcd:  {} watchers connected over 3 members",
        params.watchers
    );
    let writer = super::etcd::leader_client(&cluster).await?;
    let (acked, elapsed) = steady_writes(params, |i| {
        let mut writer = writer.clone();
        async move {
            let r = writer.put(format!("fanout/entity-{i}"), "x", None).await?;
            let revision = r.header().map_or(0, |h| h.revision());
            Ok(u64::try_from(revision).unwrap_or(0))
        }
    })
    .await?;
    let received = gather(tasks, &received, Duration::from_secs(30)).await;
    drop(cluster);
    Ok(Some(side(params, &acked, &received, elapsed)))
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
        watchers: params.watchers,
        rate: params.rate,
        seconds: params.seconds,
        baton,
        etcd,
    })
}

fn print_side(name: &str, s: &Side) {
    println!(
        "  {name:<5} {} writes ({:.0}/s): commit → delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} deliveries, {} missing)",
        s.writes, s.writes_per_s, s.latency.p50_ms, s.latency.p99_ms, s.latency.max_ms, s.latency.count, s.missing
    );
}

pub fn table(r: &Report) -> String {
    let row = |name: &str, s: &Side| {
        format!(
            "| {name} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |\n",
            s.writes,
            s.writes_per_s,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.max_ms,
            s.missing
        )
    };
    let mut t = format!(
        "{} watchers, one writer at {} writes/s for {} s.\n\n| system | writes | writes/s | p50 (ms) | p99 (ms) | max (ms) | missing deliveries |\n|---|---|---|---|---|---|---|\n",
        r.watchers, r.rate, r.seconds
    );
    t.push_str(&row("baton", &r.baton));
    match &r.etcd {
        Some(e) => {
            t.push_str(&row("etcd", e));
            if e.latency.p99_ms > 0.0 {
                t.push_str(&format!(
                    "\np99 baton ÷ etcd: {:.2}×\n",
                    r.baton.latency.p99_ms / e.latency.p99_ms
                ));
            }
        }
        None => t.push_str("| etcd | not measured (no etcd client in this build) | | | | | |\n"),
    }
    t
}
