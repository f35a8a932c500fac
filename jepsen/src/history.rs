//! The history of a test: one JSON object per line, in the order things
//! happened. Clients record `invoke` before a call and `ok`, `fail` or
//! `info` after it; `info` means the outcome is unknown (a timeout, a broken
//! connection): it may or may not have taken effect, and checkers treat it so.
//! Faults are `info` operations of the process `nemesis`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Op {
    /// Nanoseconds since the test started (monotonic clock).
    pub time: u64,
    /// Who did it: `cas-3`, `tombstones-1`, `watch-2`, `worker-w1`, `sink`,
    /// `nemesis`, `final`.
    pub process: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// The operation: `read`, `cas`, `put`, `check`, `list`, `watch`,
    /// `assigned`, `released`, `lease_lost`, `write`, `ground-truth`, or a
    /// fault (`kill`, `pause`, `partition`, `heal`, …).
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    /// The node the call went to, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    pub fn new(process: &str, kind: Kind, f: &str) -> Self {
        Self {
            time: 0,
            process: process.to_string(),
            kind,
            f: f.to_string(),
            key: None,
            value: Value::Null,
            node: None,
            error: None,
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn value(mut self, value: Value) -> Self {
        self.value = value;
        self
    }

    pub fn node(mut self, node: usize) -> Self {
        self.node = Some(node);
        self
    }

    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    pub fn at(mut self, time: u64) -> Self {
        self.time = time;
        self
    }

    /// `value[field]` as a u64.
    pub fn u64(&self, field: &str) -> Option<u64> {
        self.value.get(field).and_then(Value::as_u64)
    }
}

/// Records operations as they happen, stamping them with the test clock and
/// appending each to the history file at once (a crashed run keeps what it
/// recorded).
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    inner: Arc<Mutex<RecorderInner>>,
}

struct RecorderInner {
    ops: Vec<Op>,
    /// The highest revision an operation has reported.
    max_revision: u64,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Recorder {
    pub fn new(file: Option<&Path>) -> std::io::Result<Self> {
        let file = match file {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
            None => None,
        };
        Ok(Self {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(RecorderInner {
                ops: Vec::new(),
                max_revision: 0,
                file,
            })),
        })
    }

    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// An instant on this recorder's timeline (ns since its start).
    pub fn time_of(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records `op` now, stamped with the current time.
    pub fn record(&self, op: Op) -> Op {
        self.record_at(op.at(self.now()))
    }

    /// Records `op` with the time it carries (`Op::at`, from
    /// [`Recorder::time_of`]): for what happened at a known instant before
    /// it could be recorded, such as the end of an SDK worker's hold.
    pub fn record_at(&self, op: Op) -> Op {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &mut inner.file {
            if let Ok(line) = serde_json::to_string(&op) {
                let _ = writeln!(f, "{line}");
            }
        }
        if let Some(r) = op.u64("revision") {
            inner.max_revision = inner.max_revision.max(r);
        }
        inner.ops.push(op.clone());
        op
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ops
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest revision any recorded operation has reported.
    pub fn max_revision(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .max_revision
    }

    pub fn flush(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &mut inner.file {
            let _ = f.flush();
        }
    }

    pub fn ops(&self) -> Vec<Op> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ops
            .clone()
    }
}

/// Reads a history file back.
pub fn load(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut ops = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        ops.push(
            serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(ops)
}

/// An invocation paired with its completion (`None`: never completed).
#[derive(Clone, Debug)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub complete: Option<&'a Op>,
}

impl Pair<'_> {
    pub fn kind(&self) -> Kind {
        self.complete.map_or(Kind::Info, |c| c.kind)
    }
}

/// Pairs each invocation with the next completion of the same process.
pub fn pairs<'a>(ops: &'a [Op], f: impl Fn(&Op) -> bool) -> Vec<Pair<'a>> {
    let mut open: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out: Vec<Pair<'a>> = Vec::new();
    for op in ops.iter().filter(|o| f(o)) {
        match op.kind {
            Kind::Invoke => {
                open.insert(&op.process, out.len());
                out.push(Pair {
                    invoke: op,
                    complete: None,
                });
            }
            _ => {
                if let Some(i) = open.remove(op.process.as_str()) {
                    out[i].complete = Some(op);
                }
            }
        }
    }
    out
}
