//! The ground truth: for each group, a full watch from its oldest revision
//! to the end, taken after every fault healed (`final`/`ground-truth` ops:
//! key = group, value `{"from", "to", "events": [[revision, hash, detail]]}`).
//! Streams are compared to it, replays are computed from it, and (6)
//! durability checks every acknowledged write against it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Outcome, Verdict};
use crate::history::{pairs, Kind, Op};

#[derive(Clone, Debug, PartialEq)]
pub struct TruthEvent {
    pub revision: u64,
    /// Identifies the event's whole content (streams carry the same hash).
    pub hash: u64,
    /// The fields checkers read (`k` is the kind); `null` for the others.
    pub detail: Value,
}

#[derive(Clone, Debug, Default)]
pub struct Stream {
    /// Events after `from` up to `to` are all here.
    pub from: u64,
    pub to: u64,
    pub events: Vec<TruthEvent>,
}

pub struct GroundTruth {
    pub groups: BTreeMap<String, Stream>,
}

/// Parses `[[revision, hash, detail], ...]`.
pub fn parse_events(v: &Value) -> Vec<TruthEvent> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(TruthEvent {
                revision: e.get(0)?.as_u64()?,
                hash: e.get(1)?.as_u64()?,
                detail: e.get(2).cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

impl GroundTruth {
    pub fn from_history(ops: &[Op]) -> Option<Self> {
        let mut groups = BTreeMap::new();
        for op in ops
            .iter()
            .filter(|o| o.f == "ground-truth" && o.kind == Kind::Ok)
        {
            let group = op.key.clone()?;
            groups.insert(
                group,
                Stream {
                    from: op.u64("from").unwrap_or_default(),
                    to: op.u64("to").unwrap_or_default(),
                    events: parse_events(&op.value["events"]),
                },
            );
        }
        (!groups.is_empty()).then_some(Self { groups })
    }

    /// The register (the group's tombstone TTL) after applying every event
    /// up to `revision`; `None` before the group's first config event.
    pub fn register_at(&self, group: &str, revision: u64) -> Option<u64> {
        let stream = self.groups.get(group)?;
        stream
            .events
            .iter()
            .take_while(|e| e.revision <= revision)
            .filter(|e| e.detail["k"] == "group")
            .filter_map(|e| e.detail["register"].as_u64())
            .last()
    }

    /// Whether `key` had a tombstone at `revision`.
    pub fn tombstone_at(&self, group: &str, key: &str, revision: u64) -> Option<bool> {
        let stream = self.groups.get(group)?;
        let mut present = false;
        for e in stream.events.iter().take_while(|e| e.revision <= revision) {
            if e.detail["key"].as_str() == Some(key) {
                match e.detail["k"].as_str() {
                    Some("tombstone") => present = true,
                    Some("purged") => present = false,
                    _ => {}
                }
            }
        }
        Some(present)
    }

    /// The event of kind `k` at `revision` whose `field` is `value`.
    pub fn has(&self, group: &str, revision: u64, k: &str, field: &str, value: &Value) -> bool {
        self.groups.get(group).is_some_and(|s| {
            s.events
                .iter()
                .any(|e| e.revision == revision && e.detail["k"] == k && &e.detail[field] == value)
        })
    }
}

/// (6) Every acknowledged write is in the ground truth, at its revision.
pub fn durability(ops: &[Op], truth: Option<&GroundTruth>) -> Outcome {
    let Some(truth) = truth else {
        return unknown("durability");
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for p in pairs(ops, |o| o.f == "put" || o.f == "cas") {
        let Some(done) = p.complete.filter(|c| c.kind == Kind::Ok) else {
            continue;
        };
        let (Some(group), Some(revision)) = (
            p.invoke.value["group"].as_str().or(p.invoke.key.as_deref()),
            done.u64("revision"),
        ) else {
            continue;
        };
        checked += 1;
        let found = match p.invoke.f.as_str() {
            "put" => truth.has(
                group,
                revision,
                "tombstone",
                "key",
                &Value::from(p.invoke.key.clone().unwrap_or_default()),
            ),
            _ => truth.has(group, revision, "group", "register", &p.invoke.value["to"]),
        };
        if !found {
            problems.push(format!(
                "acknowledged {} {:?} at revision {revision} is not in the final history of {group}",
                p.invoke.f,
                p.invoke.key.as_deref().unwrap_or_default()
            ));
        }
    }
    Outcome::new(
        "durability",
        problems,
        json!({"acknowledged writes": checked}),
    )
}

pub fn unknown(checker: &'static str) -> Outcome {
    let mut o = Outcome::new(
        checker,
        Vec::new(),
        json!({"reason": "the history has no ground-truth watch (the run ended before its final reads)"}),
    );
    o.verdict = Verdict::Unknown;
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledged_write_missing_from_the_final_history_is_invalid() {
        let truth = GroundTruth {
            groups: BTreeMap::from([(
                "ts".to_string(),
                Stream {
                    from: 0,
                    to: 9,
                    events: vec![TruthEvent {
                        revision: 7,
                        hash: 1,
                        detail: json!({"k": "tombstone", "key": "k1"}),
                    }],
                },
            )]),
        };
        let put = |key: &str, revision: u64| {
            vec![
                Op::new("tombstones-1", Kind::Invoke, "put")
                    .key(key)
                    .value(json!({"group": "ts"})),
                Op::new("tombstones-1", Kind::Ok, "put")
                    .key(key)
                    .value(json!({"revision": revision})),
            ]
        };
        assert_eq!(
            durability(&put("k1", 7), Some(&truth)).verdict,
            Verdict::Valid
        );
        // Acknowledged at 8, but the history has nothing there: lost.
        assert_eq!(
            durability(&put("k2", 8), Some(&truth)).verdict,
            Verdict::Invalid
        );
        // Without a ground truth the checker cannot decide.
        assert_eq!(durability(&put("k1", 7), None).verdict, Verdict::Unknown);
    }
}
