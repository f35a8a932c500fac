//! `batonctl worker join`: a real worker on the SDK that prints each event as
//! one JSON line, for demos, scripts and the chaos harness.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_client::{
    AdminClient, Consistency, HoldChange, HoldEnd, Partitions, Worker, WorkerEvent,
};

use crate::load_spec::LoadSpec;
use serde_json::{json, Value};

pub struct JoinArgs {
    pub endpoints: Vec<String>,
    pub transport: baton_client::Transport,
    pub group: String,
    pub id: Option<String>,
    pub drain: Duration,
    pub weight: Option<u32>,
    pub ttl: Option<Duration>,
    pub grace: Duration,
    pub labels: Vec<(String, String)>,
    pub load: Option<LoadSpec>,
    pub capacity: Option<u64>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// `at` in ms since the Unix epoch: rounded down for the start of a hold,
/// up for its end, so a printed interval is never shorter than the real one.
fn unix_ms_at(at: Instant, end: bool) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    let at = SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
    if end && !at.subsec_nanos().is_multiple_of(1_000_000) {
        ms.saturating_add(1)
    } else {
        ms
    }
}

/// When holds began (by token) and were released (by partitions), as the
/// SDK's hold hook reports them: the stamps of the `assigned` and
/// `released` lines.
#[derive(Clone, Default)]
struct Stamps(Arc<Mutex<Stamped>>);

#[derive(Default)]
struct Stamped {
    began: HashMap<u64, u64>,
    released: HashMap<Partitions, u64>,
}

impl Stamps {
    fn record(&self, change: HoldChange) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match change {
            HoldChange::Began { token, at, .. } => {
                s.began.insert(token, unix_ms_at(at, false));
            }
            HoldChange::Ended {
                partitions,
                at,
                cause: HoldEnd::Released,
            } => {
                s.released.insert(partitions, unix_ms_at(at, true));
            }
            HoldChange::Ended { .. } => {}
        }
    }

    fn began(&self, token: u64) -> Option<u64> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.began.remove(&token)
    }

    fn released(&self, partitions: &Partitions) -> Option<u64> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.released.remove(partitions)
    }
}

fn ranges(partitions: &Partitions) -> Value {
    partitions
        .iter()
        .map(|r| json!([r.start(), r.end()]))
        .collect()
}

/// Prints one event line and flushes it, so a reader sees it at once.
fn emit(event: &str, mut fields: Value) {
    if let Value::Object(map) = &mut fields {
        map.insert("event".into(), json!(event));
        map.entry("unix_ms").or_insert(json!(unix_ms()));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{fields}");
    let _ = out.flush();
}

pub async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let stamps = Stamps::default();
    let hook = stamps.clone();
    let mut builder = Worker::builder(args.endpoints.clone(), args.group.clone())
        .transport(args.transport.clone())
        .drain_on_signals(args.grace)
        .on_hold_change(move |change| hook.record(change));
    if let Some(id) = args.id {
        builder = builder.id(id);
    }
    if let Some(w) = args.weight {
        builder = builder.weight(w);
    }
    if let Some(ttl) = args.ttl {
        builder = builder.ttl(ttl);
    }
    for (k, v) in args.labels {
        builder = builder.label(k, v);
    }
    if let Some(c) = args.capacity {
        builder = builder.capacity(c);
    }
    let admin = match &args.load {
        Some(_) => Some(
            AdminClient::new(&args.endpoints, Duration::from_secs(5))?
                .with_transport(args.transport.clone()),
        ),
        None => None,
    };
    let group = args.group.clone();
    let (worker, mut events) = builder.join().await?;
    if let (Some(spec), Some(admin)) = (args.load, admin) {
        tokio::spawn(report_load(worker.clone(), admin, group, spec));
    }
    emit(
        "joined",
        json!({"worker": worker.id(), "group": worker.group(), "session": worker.session()}),
    );
    // Drains in flight: awaited before `exit`, so their lines come first.
    let mut drains = tokio::task::JoinSet::new();
    while let Some(event) = events.next().await {
        match event {
            // Stamped when the partitions began being held, a moment
            // before the event reached this loop.
            WorkerEvent::Assigned(grant) => emit(
                "assigned",
                json!({
                    "partitions": ranges(grant.partitions()),
                    "token": grant.fencing_token(),
                    "revision": grant.fencing_token(),
                    "unix_ms": stamps.began(grant.fencing_token()).unwrap_or_else(unix_ms),
                }),
            ),
            WorkerEvent::Revoked {
                partitions,
                revision,
                ..
            } => {
                emit(
                    "revoked",
                    json!({"partitions": ranges(&partitions), "revision": revision}),
                );
                // Drain in the background: other events keep flowing.
                let worker = worker.clone();
                let drain = args.drain;
                let stamps = stamps.clone();
                drains.spawn(async move {
                    tokio::time::sleep(drain).await;
                    let result = worker.release(&partitions).await;
                    // The moment this worker stopped owning them, before the
                    // release call went out.
                    let stopped = stamps.released(&partitions).unwrap_or_else(unix_ms);
                    match result {
                        Ok(revision) => emit(
                            "released",
                            json!({"partitions": ranges(&partitions), "revision": revision, "unix_ms": stopped}),
                        ),
                        Err(e) => emit(
                            "release_failed",
                            json!({"partitions": ranges(&partitions), "error": e.to_string(), "unix_ms": stopped}),
                        ),
                    }
                });
            }
            WorkerEvent::Tombstone {
                key,
                partition,
                revision,
            } => emit(
                "tombstone",
                json!({"key": key, "partition": partition, "revision": revision}),
            ),
            WorkerEvent::Resharded {
                partitions,
                revision,
            } => emit(
                "resharded",
                json!({"partitions": partitions, "revision": revision}),
            ),
            WorkerEvent::LeaseLost => emit("lease_lost", json!({})),
        }
    }
    while drains.join_next().await.is_some() {}
    emit("exit", json!({"worker": worker.id()}));
    Ok(())
}

/// Reports `spec`'s load for what `worker` holds every second; reads the
/// group's partition count every ten (a split changes it), and a load file
/// before every report.
async fn report_load(worker: Worker, mut admin: AdminClient, group: String, mut spec: LoadSpec) {
    let mut loads: Vec<u64> = Vec::new();
    let mut unreadable = false;
    for tick in 0u64.. {
        if tick % 10 == 0 {
            if let Ok(r) = admin.get_group(&group, Consistency::Serializable).await {
                let partitions = r.group.and_then(|g| g.config).and_then(|c| c.partitions);
                if let Some(p) = partitions.filter(|&p| p as usize != loads.len()) {
                    loads = spec.loads(p);
                }
            }
        }
        match spec.reread() {
            Ok(changed) => {
                if changed {
                    loads = spec.loads(loads.len() as u32);
                }
                unreadable = false;
            }
            Err(e) if !unreadable => {
                eprintln!("batonctl: --load: {e:#}; the last figures stand");
                unreadable = true;
            }
            Err(_) => {}
        }
        let held = baton_client::partitions::each(&worker.held())
            .map(|p| (p, loads.get(p as usize).copied().unwrap_or(0)))
            .collect::<Vec<_>>();
        if let Err(e) = worker.report_load(held) {
            eprintln!("batonctl: {e}; no more load reports");
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `KEY=VALUE` for `--label`.
pub fn label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_stamps_round_outwards() {
        let at = Instant::now();
        let (start, end) = (unix_ms_at(at, false), unix_ms_at(at, true));
        assert!(start <= end && end <= start + 1, "{start} .. {end}");
        assert!(start <= unix_ms(), "a start is never later than now");
        let earlier = unix_ms_at(at - Duration::from_millis(50), false);
        assert!((49..=51).contains(&(start - earlier)));
    }
}
