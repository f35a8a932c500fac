//! One test run: start the cluster, create the groups, run the workloads
//! and the nemesis for the time limit, heal, take the final reads, check
//! the history, and write the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use baton_client::proto as pb;
use baton_client::{AdminClient, Watch};
use pb::tombstones_client::TombstonesClient;
use serde_json::{json, Value};

use crate::check::{self, Verdict};
use crate::cluster::{Backend, Cluster};
use crate::history::{Kind, Op, Recorder};
use crate::nemesis::{self, Family, Nemesis};
use crate::report;
use crate::workload::{self, Ctx, Stop};

pub struct Options {
    pub nodes: usize,
    pub backend: Backend,
    pub families: Vec<Family>,
    pub time_limit: Duration,
    pub seed: u64,
    /// See [`Ctx::serializable_reads`].
    pub serializable_reads: bool,
    pub store: PathBuf,
    pub node_binary: PathBuf,
    pub command_line: String,
    /// How long the linearizability search may take per register.
    pub budget: Duration,
}

/// Runs a test; returns the run's directory and its overall verdict.
pub async fn test(opts: &Options) -> anyhow::Result<(PathBuf, Verdict)> {
    let name = format!(
        "{}-n{}-{}",
        match opts.backend {
            Backend::Proxy => "proxy",
            Backend::Netns => "netns",
            Backend::Direct => "direct",
        },
        opts.nodes,
        opts.families
            .iter()
            .map(|f| format!("{f:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join("+")
    );
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let dir = opts.store.join(&name).join(stamp.to_string());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let latest = opts.store.join(&name).join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(stamp.to_string(), &latest);
    std::fs::write(
        dir.join("test.json"),
        serde_json::to_string_pretty(&json!({
            "command": opts.command_line,
            "seed": opts.seed,
            "nodes": opts.nodes,
            "backend": opts.backend,
            "nemesis": opts.families.iter().map(|f| format!("{f:?}").to_lowercase()).collect::<Vec<_>>(),
            "time_limit_s": opts.time_limit.as_secs(),
            "git": git_revision(),
        }))?,
    )?;
    println!(
        "baton-jepsen: {name}, seed {}, {:?}; writing {}",
        opts.seed,
        opts.time_limit,
        dir.display()
    );

    let history = Recorder::new(Some(&dir.join("history.jsonl")))?;
    let cluster = Cluster::start(opts.nodes, opts.backend, &opts.node_binary, &dir).await?;
    let (stop_tx, stop) = Stop::new();
    let ctx = Ctx {
        cluster: cluster.clone(),
        history: history.clone(),
        stop: stop.clone(),
        seed: opts.seed,
        serializable_reads: opts.serializable_reads,
    };
    workload::setup(&ctx).await?;
    // Which node is at which address (workers record endpoints), and when
    // the workloads run: the progress checker measures between the two
    // markers.
    let members: serde_json::Map<String, Value> = cluster
        .members()
        .into_iter()
        .filter_map(|id| Some((id.to_string(), Value::from(cluster.endpoint(id)?))))
        .collect();
    history.record(Op::new("run", Kind::Info, "members").value(json!({ "members": members })));
    history.record(Op::new("run", Kind::Info, "workload-start"));
    println!(
        "  cluster up ({} nodes), groups created; workloads and faults for {:?}",
        opts.nodes, opts.time_limit
    );

    let mut tasks = Vec::new();
    let next_value = Arc::new(AtomicU64::new(2000));
    for slot in 0..4 {
        tasks.push(tokio::spawn(workload::registers(
            ctx.clone(),
            slot,
            next_value.clone(),
        )));
    }
    let next_key = Arc::new(AtomicU64::new(0));
    let known = Arc::new(Mutex::new(Vec::new()));
    for slot in 0..2 {
        tasks.push(tokio::spawn(workload::tombstones(
            ctx.clone(),
            slot,
            next_key.clone(),
            known.clone(),
        )));
    }
    for node in cluster.members() {
        tasks.push(tokio::spawn(workload::watchers(
            ctx.clone(),
            node,
            u64::try_from(node)?,
        )));
    }
    let sink = Arc::new(workload::Sink::default());
    let threads: Vec<_> = (0..3)
        .map(|slot| workload::workers(ctx.clone(), slot, sink.clone()))
        .collect();

    let (nemesis_stop_tx, nemesis_stop) = Stop::new();
    let families = nemesis::expand(&opts.families);
    let nemesis = tokio::spawn(
        Nemesis::new(cluster.clone(), history.clone(), families, opts.seed).run(nemesis_stop),
    );
    let started = Instant::now();
    while started.elapsed() < opts.time_limit {
        tokio::time::sleep(Duration::from_secs(10).min(opts.time_limit - started.elapsed())).await;
        println!(
            "  {:>3.0}s: {} operations recorded",
            started.elapsed().as_secs_f64(),
            history.len()
        );
    }

    // Heal everything, then let the workloads finish against a whole cluster.
    let _ = nemesis_stop_tx.send(true);
    let _ = nemesis.await;
    cluster.heal_all()?;
    cluster.await_leader(Duration::from_secs(30)).await?;
    println!("  healed; winding the workloads down");
    history.record(Op::new("run", Kind::Info, "workload-stop"));
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await?;

    final_reads(&cluster, &history).await?;
    history.flush();
    cluster.stop();
    drop(cluster);
    let verdict = check_and_report(&dir, &history.ops(), opts.budget)?;
    Ok((dir, verdict))
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// After every fault healed: the tombstone list and, per group, the ground
/// truth (a watch from the first revision to a barrier's).
async fn final_reads(cluster: &Cluster, history: &Recorder) -> anyhow::Result<()> {
    let endpoints = cluster.endpoints();
    let mut admin = AdminClient::new(&endpoints, Duration::from_secs(30))?;
    let barrier = admin.barrier().await.context("final barrier")?;
    let to = barrier.revision;
    let mut keys = Vec::new();
    let mut complete = true;
    for p in 0..16u32 {
        let request = pb::ListTombstonesRequest {
            group: workload::TOMBSTONES.into(),
            partitions: Some(pb::PartitionRange { first: p, last: p }),
            limit: 10_000,
            serializable: false,
            after_key: String::new(),
        };
        let listing = admin
            .call(|c| {
                let request = request.clone();
                async move { TombstonesClient::new(c).list(request).await }
            })
            .await
            .context("final tombstone list")?;
        complete &= !listing.truncated;
        keys.extend(listing.tombstones.into_iter().map(|t| t.key));
    }
    if complete {
        history.record(
            Op::new("final", Kind::Ok, "list")
                .key(workload::TOMBSTONES)
                .value(json!({"keys": keys})),
        );
    }
    for group in [
        workload::REGISTERS[0],
        workload::REGISTERS[1],
        workload::TOMBSTONES,
        workload::WORK,
    ] {
        let request = pb::WatchRequest {
            group: group.into(),
            from_revision: 1,
            ..Default::default()
        };
        let mut watch = Watch::new(&endpoints, request, Duration::from_secs(30))?;
        let mut events = Vec::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .context("the ground-truth watch stalled")?
                .with_context(|| format!("ground-truth watch of {group}"))?;
            for e in &m.events {
                events.push(json!([e.revision, workload::event_hash(e), detail(e)]));
            }
            if m.revision >= to {
                break;
            }
        }
        history.record(
            Op::new("final", Kind::Ok, "ground-truth")
                .key(group)
                .value(json!({"from": 0, "to": to, "events": events})),
        );
    }
    Ok(())
}

fn ranges(r: &[pb::PartitionRange]) -> Value {
    Value::from(
        r.iter()
            .map(|r| json!([r.first, r.last]))
            .collect::<Vec<_>>(),
    )
}

/// The fields of an event the checkers read.
pub fn detail(e: &pb::WatchEvent) -> Value {
    use pb::group_changed::Change;
    use pb::watch_event::Event as E;
    match &e.event {
        Some(E::GroupChanged(g)) => match g.change() {
            Change::Created | Change::Updated => json!({
                "k": "group",
                "register": g.config.as_ref().and_then(|c| c.tombstone_ttl_ms),
                "partitions": g.config.as_ref().and_then(|c| c.partitions),
            }),
            Change::Split => json!({"k": "split"}),
            _ => Value::Null,
        },
        Some(E::Granted(g)) => json!({
            "k": "granted", "worker": g.worker, "ranges": ranges(&g.ranges), "token": g.token,
        }),
        Some(E::Released(r)) => {
            json!({"k": "released", "worker": r.worker, "ranges": ranges(&r.ranges)})
        }
        Some(E::Reserved(r)) => {
            json!({"k": "released", "worker": r.worker, "ranges": ranges(&r.ranges)})
        }
        Some(E::TombstoneAdded(t)) => {
            json!({"k": "tombstone", "key": t.tombstone.as_ref().map(|t| t.key.clone())})
        }
        Some(E::TombstonePurged(t)) => json!({"k": "purged", "key": t.key}),
        _ => Value::Null,
    }
}

/// Runs the checkers on `ops` and writes `results.json` and the plots into
/// `dir`; prints one line per checker.
pub fn check_and_report(dir: &Path, ops: &[Op], budget: Duration) -> anyhow::Result<Verdict> {
    let outcomes = check::all(ops, budget);
    let verdict = check::overall(&outcomes);
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json!({"valid": verdict, "checkers": outcomes}))?,
    )?;
    for o in &outcomes {
        println!("  {:<14} {:?}  {}", o.checker, o.verdict, o.details);
    }
    // G4 per fault: the worst write gap and the worst span a partition of
    // the workers' group went without a live owner.
    if let Some(p) = outcomes.iter().find(|o| o.checker == "progress") {
        println!("  progress per fault ({:?}):", p.verdict);
        print!("{}", check::progress::table(&p.details));
    }
    if let Err(e) = report::plots(dir, ops) {
        println!("  (plots not written: {e})");
    }
    println!("  => {verdict:?}; report in {}", dir.display());
    Ok(verdict)
}
