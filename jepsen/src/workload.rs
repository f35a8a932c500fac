//! The workloads, all running at once against the cluster while the nemesis
//! works: compare-and-set registers, a grow-only tombstone set, watchers,
//! and SDK workers writing to a fenced sink. Every call is recorded as an
//! invocation and its completion; a call whose outcome is unknown (timeout,
//! broken connection, an answer that does not say it failed) is `info`, and
//! the process that made it is retired (its operation may still happen).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_client::partitions::each;
use baton_client::proto as pb;
use baton_client::{HoldChange, HoldEnd, Watch, Worker, WorkerEvent};
use pb::admin_client::AdminClient;
use pb::tombstones_client::TombstonesClient;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::cluster::Cluster;
use crate::history::{Kind, Op, Recorder};

/// How long a client call may take before its outcome is unknown.
pub const CALL: Duration = Duration::from_millis(1500);
/// The register groups (the register is the group's tombstone TTL).
pub const REGISTERS: [&str; 2] = ["reg-0", "reg-1"];
/// The group tombstones are put into.
pub const TOMBSTONES: &str = "ts";
/// The group SDK workers share.
pub const WORK: &str = "work";
pub const WORK_PARTITIONS: u32 = 32;
/// The SDK workers' lease TTL.
pub const WORKER_TTL: Duration = Duration::from_secs(2);
/// The groups' handoff timeout.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(5);
const REGISTER_INIT: u64 = 1000;

/// Set once the workloads must wind down.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// What every workload shares.
#[derive(Clone)]
pub struct Ctx {
    pub cluster: Arc<Cluster>,
    pub history: Recorder,
    pub stop: Stop,
    pub seed: u64,
    /// Register reads with `serializable` (served from the local replica,
    /// possibly stale): a deliberate weakening the checker must catch.
    pub serializable_reads: bool,
}

impl Ctx {
    fn rng(&self, stream: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn invoke(&self, op: Op) -> Op {
        self.history.record(op)
    }
}

fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy())
}

/// How long a client leaves a node that did not answer one of its calls
/// in time, as any real client does (baton's own skip a silent node for 2 s:
/// `baton_client::endpoints`): a frozen node costs a client one call, not
/// every call it happens to send there.
const AVOID_SILENT: Duration = Duration::from_secs(2);

/// A client's channels, one per node it has talked to, and the nodes that
/// left a call of its unanswered lately.
#[derive(Default)]
struct Channels(HashMap<String, Channel>, HashMap<usize, std::time::Instant>);

impl Channels {
    /// A random member's id and channel, one that answered lately if any.
    fn pick(&mut self, ctx: &Ctx, rng: &mut StdRng) -> anyhow::Result<(usize, Channel)> {
        let all = ctx.cluster.members();
        let now = std::time::Instant::now();
        let answering: Vec<usize> = all
            .iter()
            .copied()
            .filter(|id| self.1.get(id).is_none_or(|until| *until <= now))
            .collect();
        let members = if answering.is_empty() { all } else { answering };
        let id = members[rng.random_range(0..members.len())];
        let addr = ctx
            .cluster
            .endpoint(id)
            .ok_or_else(|| anyhow::anyhow!("no node {id}"))?;
        if !self.0.contains_key(&addr) {
            self.0.insert(addr.clone(), channel(&addr)?);
        }
        Ok((id, self.0[&addr].clone()))
    }

    /// Notes how a call to `node` ended: one the harness gave up on makes
    /// this client leave the node for a while.
    fn note<T>(&mut self, node: usize, result: &Result<T, tonic::Status>) {
        if matches!(result, Err(s) if s.message() == TIMED_OUT) {
            self.1
                .insert(node, std::time::Instant::now() + AVOID_SILENT);
        }
    }
}

const TIMED_OUT: &str = "timed out (harness)";

/// How a failed call is recorded: `fail` only when the answer proves
/// nothing happened.
fn outcome_of(status: &tonic::Status) -> Kind {
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound | Code::AlreadyExists => {
            Kind::Fail
        }
        _ => Kind::Info,
    }
}

/// Records a write's completion (`op` is its `ok` form): its revision, or
/// its error as `fail` or `info`. Returns the kind recorded; after `info`
/// the caller retires its process.
fn complete_write(ctx: &Ctx, op: Op, result: Result<u64, tonic::Status>) -> Kind {
    let op = match result {
        Ok(revision) => op.value(json!({"revision": revision})),
        Err(s) => failed(op, &s),
    };
    ctx.invoke(op).kind
}

/// `op` (its `ok` form) as the record of a call that failed: `fail` when
/// the answer proves nothing happened, `info` otherwise (timeouts included).
fn failed(op: Op, status: &tonic::Status) -> Op {
    let mut op = op.error(status.message());
    op.kind = outcome_of(status);
    op
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(CALL, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(TIMED_OUT)),
    }
}

/// Creates the workloads' groups (before any fault).
pub async fn setup(ctx: &Ctx) -> anyhow::Result<()> {
    let mut admin =
        baton_client::AdminClient::new(&ctx.cluster.endpoints(), Duration::from_secs(20))?;
    for (group, partitions, ttl) in [
        (REGISTERS[0], 4, REGISTER_INIT),
        (REGISTERS[1], 4, REGISTER_INIT),
        (TOMBSTONES, 16, 7 * 24 * 3600 * 1000),
        (WORK, WORK_PARTITIONS, 7 * 24 * 3600 * 1000),
    ] {
        let config = pb::GroupConfig {
            partitions: Some(partitions),
            tombstone_ttl_ms: Some(ttl),
            handoff_timeout_ms: Some(u64::try_from(HANDOFF_TIMEOUT.as_millis())?),
            ..Default::default()
        };
        admin.create_group(group, config).await?;
        if REGISTERS.contains(&group) {
            // The register's initial value, as the checker reads it.
            for kind in [Kind::Invoke, Kind::Ok] {
                ctx.history.record(
                    Op::new("cas-init", kind, "init")
                        .key(group)
                        .value(json!({"value": REGISTER_INIT})),
                );
            }
        }
    }
    Ok(())
}

/// One register client: reads, and compare-and-sets from what it read.
pub async fn registers(ctx: Ctx, slot: u64, next_value: Arc<AtomicU64>) {
    let mut rng = ctx.rng(100 + slot);
    let mut incarnation = 0;
    let mut channels = Channels::default();
    while !ctx.stop.is_set() {
        let process = format!("cas-{slot}-{incarnation}");
        let group = REGISTERS[rng.random_range(0..REGISTERS.len())];
        let Ok((node, ch)) = channels.pick(&ctx, &mut rng) else {
            break;
        };
        ctx.invoke(
            Op::new(&process, Kind::Invoke, "read")
                .key(group)
                .node(node),
        );
        let read = timed(AdminClient::new(ch.clone()).get_group(pb::GetGroupRequest {
            group: group.into(),
            serializable: ctx.serializable_reads,
        }))
        .await;
        channels.note(node, &read);
        let (value, config_revision) = match read {
            Ok(r) => {
                let g = r.group.unwrap_or_default();
                let value = g
                    .config
                    .and_then(|c| c.tombstone_ttl_ms)
                    .unwrap_or_default();
                ctx.invoke(
                    Op::new(&process, Kind::Ok, "read")
                        .key(group)
                        .node(node)
                        .value(json!({"value": value, "revision": r.revision})),
                );
                (value, g.config_revision)
            }
            Err(s) => {
                let op = Op::new(&process, Kind::Ok, "read").key(group).node(node);
                if ctx.invoke(failed(op, &s)).kind == Kind::Info {
                    incarnation += 1;
                }
                pause(&ctx, &mut rng).await;
                continue;
            }
        };
        let to = next_value.fetch_add(1, Ordering::Relaxed);
        ctx.invoke(
            Op::new(&process, Kind::Invoke, "cas")
                .key(group)
                .node(node)
                .value(json!({"from": value, "to": to})),
        );
        let cas = timed(AdminClient::new(ch).update_group(pb::UpdateGroupRequest {
            group: group.into(),
            config: Some(pb::GroupConfig {
                tombstone_ttl_ms: Some(to),
                ..Default::default()
            }),
            if_revision: config_revision,
        }))
        .await;
        channels.note(node, &cas);
        let op = Op::new(&process, Kind::Ok, "cas").key(group).node(node);
        if complete_write(&ctx, op, cas.map(|r| r.revision)) == Kind::Info {
            incarnation += 1;
        }
        pause(&ctx, &mut rng).await;
    }
}

async fn pause(ctx: &Ctx, rng: &mut StdRng) {
    let d = Duration::from_millis(rng.random_range(10..60));
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = ctx.stop.wait() => {}
    }
}

/// One tombstone client: puts new keys and checks known ones.
pub async fn tombstones(
    ctx: Ctx,
    slot: u64,
    next_key: Arc<AtomicU64>,
    known: Arc<Mutex<Vec<String>>>,
) {
    let mut rng = ctx.rng(200 + slot);
    let mut incarnation = 0;
    let mut channels = Channels::default();
    while !ctx.stop.is_set() {
        let process = format!("tombstones-{slot}-{incarnation}");
        let Ok((node, ch)) = channels.pick(&ctx, &mut rng) else {
            break;
        };
        let mut client = TombstonesClient::new(ch);
        if rng.random_bool(0.7) {
            let key = format!("k{}", next_key.fetch_add(1, Ordering::Relaxed));
            known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(key.clone());
            ctx.invoke(
                Op::new(&process, Kind::Invoke, "put")
                    .key(&key)
                    .node(node)
                    .value(json!({"group": TOMBSTONES})),
            );
            let put = timed(client.put(pb::PutTombstoneRequest {
                group: TOMBSTONES.into(),
                key: key.clone(),
                ..Default::default()
            }))
            .await;
            channels.note(node, &put);
            let op = Op::new(&process, Kind::Ok, "put").key(&key).node(node);
            if complete_write(&ctx, op, put.map(|r| r.revision)) == Kind::Info {
                incarnation += 1;
            }
        } else {
            let keys: Vec<String> = {
                let known = known.lock().unwrap_or_else(|p| p.into_inner());
                let mut keys: Vec<String> = (0..5)
                    .filter(|_| !known.is_empty())
                    .map(|_| known[rng.random_range(0..known.len())].clone())
                    .collect();
                keys.push(format!("never-{}", rng.random_range(0..1000)));
                keys.sort();
                keys.dedup();
                keys
            };
            ctx.invoke(
                Op::new(&process, Kind::Invoke, "check")
                    .key(TOMBSTONES)
                    .node(node)
                    .value(json!({"keys": keys})),
            );
            let check = timed(client.check(pb::CheckTombstonesRequest {
                group: TOMBSTONES.into(),
                keys,
                serializable: false,
            }))
            .await;
            channels.note(node, &check);
            let op = Op::new(&process, Kind::Ok, "check")
                .key(TOMBSTONES)
                .node(node);
            match check {
                Ok(r) => {
                    let deleted: serde_json::Map<String, Value> = r
                        .results
                        .iter()
                        .map(|k| (k.key.clone(), Value::from(k.deleted)))
                        .collect();
                    ctx.invoke(op.value(json!({"revision": r.revision, "deleted": deleted})))
                }
                Err(s) => {
                    let op = ctx.invoke(failed(op, &s));
                    if op.kind == Kind::Info {
                        incarnation += 1;
                    }
                    op
                }
            };
        }
        pause(&ctx, &mut rng).await;
    }
}

/// The hash streams and the ground truth share for one event.
pub fn event_hash(event: &pb::WatchEvent) -> u64 {
    xxhash_rust::xxh3::xxh3_64(format!("{event:?}").as_bytes())
}

/// Watchers on node `node`: each watches a group from "now" or from a recent
/// revision for a few seconds, recording every message, then the next starts.
pub async fn watchers(ctx: Ctx, node: usize, slot: u64) {
    let mut rng = ctx.rng(300 + slot);
    let mut n = 0;
    let groups = [REGISTERS[0], TOMBSTONES, WORK];
    while !ctx.stop.is_set() {
        let process = format!("watch-{node}-{slot}-{n}");
        n += 1;
        let group = groups[rng.random_range(0..groups.len())];
        let from = match rng.random_range(0..3) {
            0 => 0,
            _ => ctx
                .history
                .max_revision()
                .saturating_sub(rng.random_range(0..50))
                .max(1),
        };
        // This node first; the others for resuming when it fails.
        let mut endpoints: Vec<String> = ctx.cluster.endpoint(node).into_iter().collect();
        for e in ctx.cluster.endpoints() {
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
        ctx.invoke(
            Op::new(&process, Kind::Invoke, "watch")
                .key(group)
                .node(node)
                .value(json!({"from": from})),
        );
        let request = pb::WatchRequest {
            group: group.into(),
            from_revision: from,
            ..Default::default()
        };
        let Ok(mut watch) = Watch::new(&endpoints, request, Duration::from_secs(10)) else {
            break;
        };
        let lasting = Duration::from_millis(rng.random_range(1000..6000));
        let mut start = None;
        let mut messages = Vec::new();
        let mut error = None;
        let deadline = tokio::time::sleep(lasting);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                () = ctx.stop.wait() => break,
                m = watch.next() => match m {
                    Ok(m) => {
                        if start.is_none() {
                            start = Some(m.revision);
                        }
                        let events: Vec<Value> = m.events.iter().map(|e| json!([e.revision, event_hash(e)])).collect();
                        messages.push(json!([m.revision, events]));
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        let kind = if error.is_some() {
            Kind::Fail
        } else {
            Kind::Ok
        };
        let mut op = Op::new(&process, kind, "watch")
            .key(group)
            .node(node)
            .value(json!({"start": start, "messages": messages}));
        op.error = error;
        ctx.invoke(op);
    }
}

/// The fenced store SDK workers write to: it accepts a write for a
/// partition only with the highest token it has seen for it.
#[derive(Default)]
pub struct Sink {
    highest: Mutex<BTreeMap<u32, u64>>,
}

impl Sink {
    fn write(&self, partition: u32, token: u64) -> bool {
        let mut h = self.highest.lock().unwrap_or_else(|p| p.into_inner());
        let top = h.entry(partition).or_insert(0);
        if token < *top {
            return false;
        }
        *top = token;
        true
    }
}

/// One worker slot: a worker joins, writes to the sink for every partition
/// it holds (checking its grant first), releases what is revoked, and after
/// a while leaves gracefully or is killed (its runtime dropped, no leave);
/// then the next worker of the slot joins.
pub fn workers(ctx: Ctx, slot: u64, sink: Arc<Sink>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = ctx.rng(400 + slot);
        let mut incarnation = 0;
        while !ctx.stop.is_set() {
            let id = format!("w{slot}-{incarnation}");
            incarnation += 1;
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let life = Duration::from_millis(rng.random_range(4000..12000));
            let crash = rng.random_bool(0.3);
            let mut endpoints = ctx.cluster.endpoints();
            endpoints.shuffle(&mut rng);
            let process = format!("worker-{id}");
            let stopped_process = process.clone();
            let ctx2 = ctx.clone();
            let sink = sink.clone();
            let killed = runtime.block_on(async move {
                // Slot 1 is a worker behind a sticky connection: it knows
                // only the node that led when it joined, so its keepalives
                // and its watch stay there whatever happens to that node
                // (the case an isolated old leader must not renew).
                if slot == 1 {
                    if let Some(leader) = ctx2.cluster.leader().await {
                        endpoints.retain(|e| ctx2.cluster.endpoint(leader).as_ref() == Some(e));
                    }
                }
                tokio::select! {
                    () = worker_life(&ctx2, &id, &process, endpoints, sink, life, crash) => false,
                    () = tokio::time::sleep(life), if crash => true,
                }
            });
            if killed {
                ctx.history.record(
                    Op::new(&stopped_process, Kind::Info, "stopped")
                        .key(WORK)
                        .value(json!({"how": "killed"})),
                );
            }
            // Dropping the runtime aborts the SDK's tasks: no leave is sent.
            runtime.shutdown_background();
        }
    })
}

fn ranges(p: &baton_client::Partitions) -> Value {
    Value::from(
        p.iter()
            .map(|r| json!([r.start(), r.end()]))
            .collect::<Vec<_>>(),
    )
}

/// `at` on the recorder's timeline (ns since it started). The two clocks
/// are read in the order that errs late for an end and early for a
/// beginning (`late`), so an interval is never made shorter.
/// Records one change of what `process` holds, as the SDK reports it, at
/// the SDK's own instant: `assigned` when `holds()` turned true,
/// `released` when it turned false for some partitions, `lease_lost` when
/// it turned false for all of them (the lease's local deadline, however
/// late the SDK noticed, or a forced shutdown's invalidation).
fn record_hold(history: &Recorder, process: &str, change: HoldChange) {
    let (f, at, value) = match change {
        HoldChange::Began {
            partitions,
            token,
            at,
        } => (
            "assigned",
            at,
            json!({"partitions": ranges(&partitions), "token": token}),
        ),
        HoldChange::Ended {
            cause: HoldEnd::LeaseLost | HoldEnd::ForcedShutdown,
            at,
            ..
        } => ("lease_lost", at, Value::Null),
        HoldChange::Ended { partitions, at, .. } => {
            ("released", at, json!({"partitions": ranges(&partitions)}))
        }
    };
    let op = Op::new(process, Kind::Info, f).key(WORK).value(value);
    history.record_at(op.at(history.time_of(at)));
}

/// How long a worker's shutdown may take before the harness gives up on it.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);

async fn worker_life(
    ctx: &Ctx,
    id: &str,
    process: &str,
    endpoints: Vec<String>,
    sink: Arc<Sink>,
    life: Duration,
    crash: bool,
) {
    let history = ctx.history.clone();
    let holder = process.to_string();
    // From here the worker wants work (the progress checker counts a
    // partition without an owner only while some worker does).
    ctx.history.record(
        Op::new(process, Kind::Invoke, "join")
            .key(WORK)
            .value(json!({"endpoints": endpoints})),
    );
    let joined = Worker::builder(endpoints.clone(), WORK)
        .id(id)
        .ttl(WORKER_TTL)
        .join_patience(Duration::from_secs(20))
        .on_hold_change(move |change| record_hold(&history, &holder, change))
        .join()
        .await;
    let (worker, mut events) = match joined {
        Ok(j) => j,
        Err(e) => {
            ctx.history.record(
                Op::new(process, Kind::Fail, "join")
                    .key(WORK)
                    .error(e.to_string()),
            );
            if !crash {
                tokio::time::sleep(life).await;
            }
            return;
        }
    };
    ctx.history.record(
        Op::new(process, Kind::Ok, "join")
            .key(WORK)
            .value(json!({"endpoints": endpoints})),
    );
    let worker = Arc::new(worker);
    let mut writers: BTreeMap<u32, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let end = tokio::time::sleep(life);
    tokio::pin!(end);
    let mut leaving = false;
    // A shutdown ends within its grace plus the margin and a few calls; one
    // that does not is an SDK bug, said on stderr, and must not hold up the
    // run: the worker is then dropped like a killed one.
    let hung = tokio::time::sleep(Duration::from_secs(24 * 3600));
    tokio::pin!(hung);
    let leave = |hung: std::pin::Pin<&mut tokio::time::Sleep>| {
        // From here it wants no more work.
        ctx.history
            .record(Op::new(process, Kind::Info, "leave").key(WORK));
        hung.reset(tokio::time::Instant::now() + SHUTDOWN_BOUND);
        let w = worker.clone();
        // The event stream delivers the revocations the drain causes.
        tokio::spawn(async move { w.shutdown(Duration::from_secs(5)).await });
    };
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = &mut end, if !leaving && !crash => {
                leaving = true;
                leave(hung.as_mut());
                continue;
            }
            () = ctx.stop.wait(), if !leaving => {
                leaving = true;
                leave(hung.as_mut());
                continue;
            }
            () = &mut hung, if leaving => {
                eprintln!("  warning: worker {id}'s shutdown did not end within {SHUTDOWN_BOUND:?}; dropping it");
                ctx.history.record(
                    Op::new(process, Kind::Info, "stopped")
                        .key(WORK)
                        .value(json!({"how": "shutdown-hung"})),
                );
                return;
            }
        };
        let Some(event) = event else { break };
        match event {
            // What is held when is recorded by the SDK's hook (`record_hold`);
            // the events only start and stop the writers.
            WorkerEvent::Assigned(grant) => {
                for p in each(grant.partitions()) {
                    let grant = grant.clone();
                    let sink = sink.clone();
                    let history = ctx.history.clone();
                    let worker_id = id.to_string();
                    writers.insert(
                        p,
                        tokio::spawn(async move {
                            while grant.holds(p) {
                                let token = grant.fencing_token();
                                let accepted = sink.write(p, token);
                                history.record(Op::new("sink", Kind::Ok, "write").value(json!({
                                    "group": WORK, "partition": p, "token": token,
                                    "worker": worker_id, "accepted": accepted,
                                })));
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }),
                    );
                }
            }
            WorkerEvent::Revoked { partitions, .. } => {
                for p in each(&partitions) {
                    if let Some(w) = writers.remove(&p) {
                        w.abort();
                    }
                }
                let _ = worker.release(&partitions).await;
            }
            WorkerEvent::LeaseLost | WorkerEvent::Resharded { .. } => {
                for (_, w) in std::mem::take(&mut writers) {
                    w.abort();
                }
            }
            WorkerEvent::Tombstone { .. } => {}
        }
    }
    for (_, w) in writers {
        w.abort();
    }
    ctx.history.record(
        Op::new(process, Kind::Info, "stopped")
            .key(WORK)
            .value(json!({"how": "left"})),
    );
}
