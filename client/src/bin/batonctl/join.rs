//! `batonctl worker join`: a real worker on the SDK that prints each event as
//! one JSON line, for demos, scripts and the chaos harness.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_client::{Partitions, Worker, WorkerEvent};
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
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
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
    let mut builder = Worker::builder(args.endpoints, args.group)
        .transport(args.transport)
        .drain_on_signals(args.grace);
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
    let (worker, mut events) = builder.join().await?;
    emit(
        "joined",
        json!({"worker": worker.id(), "group": worker.group(), "session": worker.session()}),
    );
    // Drains in flight: awaited before `exit`, so their lines come first.
    let mut drains = tokio::task::JoinSet::new();
    while let Some(event) = events.next().await {
        match event {
            WorkerEvent::Assigned(grant) => emit(
                "assigned",
                json!({
                    "partitions": ranges(grant.partitions()),
                    "token": grant.fencing_token(),
                    "revision": grant.fencing_token(),
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
                drains.spawn(async move {
                    tokio::time::sleep(drain).await;
                    // The moment this worker stops owning them.
                    let stopped = unix_ms();
                    match worker.release(&partitions).await {
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

/// `KEY=VALUE` for `--label`.
pub fn label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}
