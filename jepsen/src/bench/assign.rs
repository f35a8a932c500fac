//! `assign`: the real job. Partitions are spread over workers that scale
//! `from → to → from`; each phase is timed from its first action to a settled
//! assignment (every partition owned by a worker of the new set, each owning
//! ⌊P/W⌋ or ⌈P/W⌉), with the Raft log entries it took and the watch events
//! the workers received.
//!
//! - baton: each worker joins the group, keeps its session alive, watches its
//!   own events and releases what it is asked to release; leaving is a
//!   drained `Leave`. The rebalancer decides.
//! - etcd, the straightforward design: one key per partition holding its
//!   owner, attached to the owner's lease; each worker registers a key with
//!   its lease and watches the whole prefix. A worker with more than its
//!   share ⌈P/W⌉ deletes its surplus keys, and one with less claims free keys
//!   (in random order, so claimers collide less), each in a transaction that
//!   checks the key's owner or absence. Leaving: delete the registration,
//!   then the owned keys. This design balances exactly only when W divides P,
//!   so the scenario requires that.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::proto as pb;
use pb::admin_client::AdminClient as AdminGrpc;
use pb::watch_event::Event;
use pb::worker_client::WorkerClient;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::probe;
use crate::cluster::{Backend, Cluster};

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub partitions: u32,
    pub from: usize,
    pub to: usize,
    pub ttl: Duration,
    /// Longest wait for one phase to settle.
    pub patience: Duration,
}

impl Params {
    pub fn validate(&self) -> anyhow::Result<()> {
        let p = self.partitions as usize;
        anyhow::ensure!(
            self.from >= 1 && self.to > self.from,
            "--to must be larger than --from (the scenario scales up, then back)"
        );
        anyhow::ensure!(
            p.is_multiple_of(self.from) && p.is_multiple_of(self.to),
            "--partitions must be a multiple of --from and of --to (the etcd design only balances exactly then)"
        );
        Ok(())
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Phase {
    pub name: String,
    pub workers: usize,
    pub settled: bool,
    pub seconds: f64,
    pub log_entries: u64,
    pub watch_events: u64,
    /// etcd only: transactions whose comparison failed (lost races).
    pub failed_txns: Option<u64>,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub partitions: u32,
    pub from: usize,
    pub to: usize,
    pub baton: Vec<Phase>,
    pub etcd: Option<Vec<Phase>>,
}

/// Counters every worker of a run shares.
#[derive(Default)]
struct Counters {
    events: AtomicU64,
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    failed_txns: AtomicU64,
}

/// Whether `owners` (partition counts per worker) is a settled assignment
/// of `partitions` over `target`.
fn balanced(partitions: u32, counts: &HashMap<String, u32>, target: &BTreeSet<String>) -> bool {
    let w = u32::try_from(target.len()).unwrap_or(u32::MAX).max(1);
    let (floor, ceil) = (partitions / w, partitions.div_ceil(w));
    let owned_by_target: u32 = target.iter().filter_map(|t| counts.get(t)).sum();
    owned_by_target == partitions
        && target
            .iter()
            .all(|t| (floor..=ceil).contains(&counts.get(t).copied().unwrap_or(0)))
}

fn worker_id(i: usize) -> String {
    format!("w{i:04}")
}

/// Each phase: its name, the workers that join, the workers that leave.
fn phases(p: &Params) -> [(String, std::ops::Range<usize>, std::ops::Range<usize>); 3] {
    let (from, to) = (p.from, p.to);
    [
        (format!("start: 0 → {from}"), 0..from, 0..0),
        (format!("scale up: {from} → {to}"), from..to, 0..0),
        (format!("scale down: {to} → {from}"), 0..0, from..to),
    ]
}

// ---------------------------------------------------------------- baton

async fn baton_worker(
    channel: Channel,
    id: String,
    ttl: Duration,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let joined = WorkerClient::new(channel.clone())
        .join(pb::JoinRequest {
            group: GROUP.into(),
            worker: id.clone(),
            ttl_ms: Some(u64::try_from(ttl.as_millis())?),
            ..Default::default()
        })
        .await?
        .into_inner();
    let keepalive = tokio::spawn(super::keep_session_alive(
        channel.clone(),
        pb::KeepAliveRequest {
            group: GROUP.into(),
            worker: id.clone(),
            session: joined.session,
            ..Default::default()
        },
        ttl,
        Instant::now() + super::FOREVER,
        Arc::default(),
    ));
    let result = async {
        let mut tokens: HashMap<u32, u64> = joined
            .granted
            .iter()
            .flat_map(|r| r.first..=r.last)
            .map(|p| (p, joined.token))
            .collect();
        let mut stream = pb::watch_client::WatchClient::new(channel.clone())
            .watch(pb::WatchRequest {
                group: GROUP.into(),
                from_revision: joined.token + 1,
                worker: id.clone(),
                kinds: Vec::new(),
            })
            .await?
            .into_inner();
        while let Some(message) = stream.message().await? {
            counters
                .events
                .fetch_add(message.events.len() as u64, Ordering::Relaxed);
            for event in message.events {
                match event.event {
                    Some(Event::Granted(g)) if g.worker == id => {
                        tokens.extend(
                            g.ranges
                                .iter()
                                .flat_map(|r| r.first..=r.last)
                                .map(|p| (p, g.token)),
                        );
                    }
                    Some(Event::Revoking(r)) if r.from == id => {
                        // Drain is instant here: give each token's partitions back.
                        let mut by_token: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
                        for p in r.ranges.iter().flat_map(|r| r.first..=r.last) {
                            if let Some(t) = tokens.remove(&p) {
                                by_token.entry(t).or_default().push(p);
                            }
                        }
                        super::release_by_token(&channel, GROUP, &id, joined.session, by_token)
                            .await?;
                    }
                    Some(Event::WorkerLeft(l)) if l.worker == id => return Ok(()),
                    _ => {}
                }
            }
        }
        anyhow::bail!("worker {id}: the watch stream ended")
    }
    .await;
    keepalive.abort();
    result
}

const GROUP: &str = "assign";

async fn baton_settled(
    admin: &mut AdminGrpc<Channel>,
    partitions: u32,
    target: &BTreeSet<String>,
) -> bool {
    let Ok(a) = admin
        .get_assignment(pb::GetAssignmentRequest {
            group: GROUP.into(),
            serializable: false,
        })
        .await
    else {
        return false;
    };
    let a = a.into_inner();
    let counts = a.workers.iter().map(|w| (w.id.clone(), w.count)).collect();
    a.moving.is_empty() && a.unassigned.is_empty() && balanced(partitions, &counts, target)
}

pub async fn baton(node_binary: &Path, dir: &Path, params: Params) -> anyhow::Result<Vec<Phase>> {
    let cluster = Cluster::start(3, Backend::Direct, node_binary, &dir.join("baton")).await?;
    let leader = cluster.await_leader(Duration::from_secs(30)).await?;
    let (addr, http) = match (cluster.endpoint(leader), cluster.http(leader)) {
        (Some(a), Some(h)) => (a, h),
        _ => anyhow::bail!("the leader, node {leader}, is not running"),
    };
    let mut admin = baton_client::AdminClient::new(&cluster.endpoints(), Duration::from_secs(30))?;
    let config = pb::GroupConfig {
        partitions: Some(params.partitions),
        ..Default::default()
    };
    admin.create_group(GROUP, config).await?;
    let connect = || async {
        anyhow::Ok(
            Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        )
    };
    let mut observer = AdminGrpc::new(connect().await?);
    // Each worker on its own connection, as separate processes would be.
    let mut channels = HashMap::new();
    let counters = Arc::new(Counters::default());
    let mut target = BTreeSet::new();
    let mut out = Vec::new();
    let mut tasks = Vec::new();
    for (name, joining, leaving) in phases(&params) {
        let log_before = probe::baton_metric(http, "baton_raft_last_log_index")
            .await
            .unwrap_or(0.0);
        let events_before = counters.events.load(Ordering::Relaxed);
        for i in joining.clone() {
            channels.insert(i, connect().await?);
        }
        let started = Instant::now();
        for i in joining {
            target.insert(worker_id(i));
            let channel = channels[&i].clone();
            tasks.push(tokio::spawn(baton_worker(
                channel,
                worker_id(i),
                params.ttl,
                counters.clone(),
            )));
        }
        for i in leaving {
            target.remove(&worker_id(i));
            // The scaler is not the worker process and has no session id:
            // it drains as an operator does (the same graceful leave).
            AdminGrpc::new(channels[&i].clone())
                .drain_worker(pb::WorkerRef {
                    group: GROUP.into(),
                    worker: worker_id(i),
                })
                .await?;
        }
        let mut settled = false;
        while started.elapsed() < params.patience {
            if baton_settled(&mut observer, params.partitions, &target).await {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        // Late events of the last moves still count to this phase.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log_after = probe::baton_metric(http, "baton_raft_last_log_index")
            .await
            .unwrap_or(0.0);
        let phase = Phase {
            name,
            workers: target.len(),
            settled,
            seconds,
            log_entries: (log_after - log_before).max(0.0) as u64,
            watch_events: counters.events.load(Ordering::Relaxed) - events_before,
            failed_txns: None,
        };
        print_phase("baton", &phase);
        out.push(phase);
    }
    for t in tasks {
        t.abort();
    }
    cluster.stop();
    Ok(out)
}

// ---------------------------------------------------------------- etcd

/// The etcd design's view of its prefix (used by the workers and the
/// observer; plain data, so it is tested without etcd).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
mod view {
    use std::collections::{BTreeSet, HashMap};

    /// A worker's (or the observer's) view of the prefix.
    #[derive(Default)]
    pub struct View {
        pub workers: BTreeSet<String>,
        pub owners: HashMap<u32, String>,
        pub held: HashMap<String, BTreeSet<u32>>,
        pub free: BTreeSet<u32>,
    }

    pub const WORKERS: &str = "assign/workers/";
    pub const OWNERS: &str = "assign/owner/";

    pub fn owner_key(p: u32) -> String {
        format!("{OWNERS}{p:06}")
    }

    impl View {
        pub fn new(partitions: u32) -> Self {
            Self {
                free: (0..partitions).collect(),
                ..Default::default()
            }
        }

        pub fn put(&mut self, key: &str, value: &str) {
            if let Some(w) = key.strip_prefix(WORKERS) {
                self.workers.insert(w.to_string());
            } else if let Some(p) = key.strip_prefix(OWNERS).and_then(|p| p.parse().ok()) {
                self.delete(key);
                self.free.remove(&p);
                self.owners.insert(p, value.to_string());
                self.held.entry(value.to_string()).or_default().insert(p);
            }
        }

        pub fn delete(&mut self, key: &str) {
            if let Some(w) = key.strip_prefix(WORKERS) {
                self.workers.remove(w);
            } else if let Some(p) = key.strip_prefix(OWNERS).and_then(|p| p.parse().ok()) {
                if let Some(o) = self.owners.remove(&p) {
                    if let Some(h) = self.held.get_mut(&o) {
                        h.remove(&p);
                    }
                }
                self.free.insert(p);
            }
        }

        pub fn partitions(&self) -> u32 {
            u32::try_from(self.owners.len() + self.free.len()).unwrap_or(u32::MAX)
        }

        pub fn counts(&self) -> HashMap<String, u32> {
            self.held
                .iter()
                .map(|(w, h)| (w.clone(), u32::try_from(h.len()).unwrap_or(u32::MAX)))
                .collect()
        }
    }
}
#[cfg(any(test, feature = "etcd"))]
use view::*;

#[cfg(feature = "etcd")]
mod etcd_side {
    use super::*;
    use etcd_client::{
        Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
        WatchStream,
    };
    use rand::{Rng, SeedableRng};

    /// Applies a watch response to `view`; returns how many events it held.
    fn apply(view: &mut View, m: &etcd_client::WatchResponse) -> usize {
        for e in m.events() {
            let Some(kv) = e.kv() else { continue };
            let key = kv.key_str().unwrap_or_default();
            match e.event_type() {
                EventType::Put => view.put(key, kv.value_str().unwrap_or_default()),
                EventType::Delete => view.delete(key),
            }
        }
        m.events().len()
    }

    /// Reads the prefix and watches it from right after the read.
    async fn load(client: &mut Client, partitions: u32) -> anyhow::Result<(View, WatchStream)> {
        let snapshot = client
            .get("assign/", Some(GetOptions::new().with_prefix()))
            .await?;
        let mut view = View::new(partitions);
        for kv in snapshot.kvs() {
            view.put(
                kv.key_str().unwrap_or_default(),
                kv.value_str().unwrap_or_default(),
            );
        }
        let revision = snapshot.header().map_or(0, |h| h.revision());
        let stream = client
            .watch(
                "assign/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await?;
        Ok((view, stream))
    }

    pub async fn worker(
        mut client: Client,
        id: String,
        params: Params,
        counters: Arc<Counters>,
        mut leave: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let ttl_s = i64::try_from(params.ttl.as_secs().max(1))?;
        let lease = client.lease_grant(ttl_s, None).await?.id();
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await?;
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(params.ttl / 3).await;
                if keeper.keep_alive().await.is_err()
                    || !matches!(replies.message().await, Ok(Some(_)))
                {
                    return;
                }
            }
        });
        let result = async {
            client
                .put(
                    format!("{WORKERS}{id}"),
                    "",
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await?;
            let (mut view, mut stream) = load(&mut client, params.partitions).await?;
            let mut rng =
                rand::rngs::StdRng::seed_from_u64(xxhash_rust::xxh3::xxh3_64(id.as_bytes()));
            loop {
                rebalance(&mut client, &mut view, &id, lease, &mut rng, &counters).await?;
                tokio::select! {
                    m = stream.message() => {
                        let m = m?.ok_or_else(|| anyhow::anyhow!("worker {id}: the watch ended"))?;
                        counters.events.fetch_add(apply(&mut view, &m) as u64, Ordering::Relaxed);
                    }
                    _ = leave.changed() => break,
                }
                // Catch up with everything already received before acting
                // again: acting on a stale view only loses races.
                while let Ok(m) = tokio::time::timeout(Duration::ZERO, stream.message()).await {
                    let m = m?.ok_or_else(|| anyhow::anyhow!("worker {id}: the watch ended"))?;
                    counters
                        .events
                        .fetch_add(apply(&mut view, &m) as u64, Ordering::Relaxed);
                }
            }
            // Leave: unregister first (the others' shares grow), then hand
            // every owned key back.
            client.delete(format!("{WORKERS}{id}"), None).await?;
            let mine: Vec<u32> = view
                .held
                .get(&id)
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default();
            for p in mine {
                give_back(&mut client, p, &id, &counters).await?;
            }
            client.lease_revoke(lease).await?;
            Ok(())
        }
        .await;
        keepalive.abort();
        result
    }

    async fn give_back(
        client: &mut Client,
        p: u32,
        id: &str,
        counters: &Counters,
    ) -> anyhow::Result<bool> {
        let key = owner_key(p);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, id)])
            .and_then([TxnOp::delete(key, None)]);
        let ok = client.txn(txn).await?.succeeded();
        if !ok {
            counters.failed_txns.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ok)
    }

    /// Gives back the surplus above the share, or claims free keys up to it.
    async fn rebalance(
        client: &mut Client,
        view: &mut View,
        id: &str,
        lease: i64,
        rng: &mut rand::rngs::StdRng,
        counters: &Counters,
    ) -> anyhow::Result<()> {
        if !view.workers.contains(id) {
            return Ok(());
        }
        let w = u32::try_from(view.workers.len()).unwrap_or(u32::MAX).max(1);
        let share = view.partitions().div_ceil(w) as usize;
        let mine: Vec<u32> = view
            .held
            .get(id)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        if mine.len() > share {
            for &p in &mine[share..] {
                if give_back(client, p, id, counters).await? {
                    view.delete(&owner_key(p));
                }
            }
            return Ok(());
        }
        let need = share - mine.len();
        if need == 0 || view.free.is_empty() {
            return Ok(());
        }
        // A few more candidates than needed: some are taken by others first.
        let start = rng.random_range(0..view.partitions());
        let candidates: Vec<u32> = view
            .free
            .range(start..)
            .chain(view.free.range(..start))
            .take(need * 2 + 8)
            .copied()
            .collect();
        let mut claimed = 0;
        for p in candidates {
            if claimed == need {
                break;
            }
            let key = owner_key(p);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    id,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            if client.txn(txn).await?.succeeded() {
                view.put(&key, id);
                claimed += 1;
            } else {
                // Somebody else's now; the watch will say whose.
                view.free.remove(&p);
                counters.failed_txns.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    pub async fn run(dir: &Path, params: Params) -> anyhow::Result<Vec<Phase>> {
        let cluster = crate::bench::etcd::EtcdCluster::start(3, &dir.join("etcd")).await?;
        let leader = cluster.endpoints[cluster.leader().await?].clone();
        let mut status = crate::bench::etcd::client(&leader).await?;
        let (mut view, mut stream) = load(&mut status.clone(), params.partitions).await?;
        // Each worker on its own connection, as separate processes would be.
        let mut clients = HashMap::new();
        let counters = Arc::new(Counters::default());
        let mut target = BTreeSet::new();
        let mut leave = HashMap::new();
        let mut tasks = Vec::new();
        let mut out = Vec::new();
        for (name, joining, leaving) in phases(&params) {
            let log_before = status.status().await?.raft_index();
            let events_before = counters.events.load(Ordering::Relaxed);
            let failed_before = counters.failed_txns.load(Ordering::Relaxed);
            for i in joining.clone() {
                clients.insert(i, crate::bench::etcd::client(&leader).await?);
            }
            let started = Instant::now();
            for i in joining {
                target.insert(worker_id(i));
                let (tx, rx) = tokio::sync::watch::channel(false);
                leave.insert(i, tx);
                let client = clients[&i].clone();
                tasks.push(tokio::spawn(worker(
                    client,
                    worker_id(i),
                    params,
                    counters.clone(),
                    rx,
                )));
            }
            for i in leaving {
                target.remove(&worker_id(i));
                if let Some(tx) = leave.get(&i) {
                    let _ = tx.send(true);
                }
            }
            let mut settled = balanced(params.partitions, &view.counts(), &target);
            while !settled && started.elapsed() < params.patience {
                let wait = params.patience.saturating_sub(started.elapsed());
                match tokio::time::timeout(wait, stream.message()).await {
                    Ok(m) => {
                        let m = m?.ok_or_else(|| anyhow::anyhow!("the observer's watch ended"))?;
                        apply(&mut view, &m);
                        settled = balanced(params.partitions, &view.counts(), &target);
                    }
                    Err(_) => break,
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let log_after = status.status().await?.raft_index();
            let phase = Phase {
                name,
                workers: target.len(),
                settled,
                seconds,
                log_entries: log_after.saturating_sub(log_before),
                watch_events: counters.events.load(Ordering::Relaxed) - events_before,
                failed_txns: Some(counters.failed_txns.load(Ordering::Relaxed) - failed_before),
            };
            print_phase("etcd", &phase);
            out.push(phase);
        }
        for t in tasks {
            t.abort();
        }
        drop(cluster);
        Ok(out)
    }
}

#[cfg(feature = "etcd")]
pub async fn etcd(dir: &Path, params: Params) -> anyhow::Result<Option<Vec<Phase>>> {
    etcd_side::run(dir, params).await.map(Some)
}

#[cfg(not(feature = "etcd"))]
pub async fn etcd(_: &Path, _: Params) -> anyhow::Result<Option<Vec<Phase>>> {
    Ok(None)
}

pub async fn run(node_binary: &Path, dir: &Path, params: Params) -> anyhow::Result<Report> {
    params.validate()?;
    let baton = baton(node_binary, dir, params).await?;
    let etcd = etcd(dir, params).await?;
    Ok(Report {
        partitions: params.partitions,
        from: params.from,
        to: params.to,
        baton,
        etcd,
    })
}

fn print_phase(system: &str, p: &Phase) {
    println!(
        "  {system:<5} {:<22} {} in {:.2} s: {} log entries, {} watch events{}",
        p.name,
        if p.settled { "settled" } else { "NOT settled" },
        p.seconds,
        p.log_entries,
        p.watch_events,
        p.failed_txns
            .map_or(String::new(), |f| format!(", {f} failed transactions"))
    );
}

pub fn table(r: &Report) -> String {
    let mut t = format!(
        "{} partitions; workers {} → {} → {}. Time from the phase's first join or leave to a settled assignment.\n\n| phase | system | settled in (s) | Raft log entries | watch events to workers | failed transactions |\n|---|---|---|---|---|---|\n",
        r.partitions, r.from, r.to, r.from
    );
    let cell = |p: &Phase| {
        if p.settled {
            format!("{:.2}", p.seconds)
        } else {
            format!("not within {:.0}", p.seconds)
        }
    };
    for (i, b) in r.baton.iter().enumerate() {
        t.push_str(&format!(
            "| {} | baton | {} | {} | {} | — |\n",
            b.name,
            cell(b),
            b.log_entries,
            b.watch_events
        ));
        match r.etcd.as_ref().and_then(|e| e.get(i)) {
            Some(e) => t.push_str(&format!(
                "| | etcd | {} | {} | {} | {} |\n",
                cell(e),
                e.log_entries,
                e.watch_events,
                e.failed_txns.unwrap_or(0)
            )),
            None => t.push_str("| | etcd | not measured | | | |\n"),
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_means_every_partition_on_the_target_set_within_one() {
        let target: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let counts = |v: &[(&str, u32)]| v.iter().map(|(w, c)| (w.to_string(), *c)).collect();
        assert!(balanced(
            10,
            &counts(&[("a", 4), ("b", 3), ("c", 3)]),
            &target
        ));
        assert!(
            !balanced(10, &counts(&[("a", 5), ("b", 3), ("c", 2)]), &target),
            "off by two"
        );
        assert!(
            !balanced(
                10,
                &counts(&[("a", 4), ("b", 3), ("c", 2), ("d", 1)]),
                &target
            ),
            "one still on a leaver"
        );
        assert!(
            !balanced(10, &counts(&[("a", 4), ("b", 3), ("c", 2)]), &target),
            "one unowned"
        );
    }

    #[test]
    fn the_view_tracks_owners_and_free_partitions() {
        let mut v = View::new(4);
        v.put(&format!("{WORKERS}a"), "");
        v.put(&owner_key(2), "a");
        assert_eq!(v.free, BTreeSet::from([0, 1, 3]));
        assert_eq!(v.counts().get("a"), Some(&1));
        v.delete(&owner_key(2));
        v.delete(&format!("{WORKERS}a"));
        assert_eq!(v.free.len(), 4);
        assert!(v.workers.is_empty() && v.owners.is_empty());
    }
}
