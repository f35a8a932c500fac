//! (4) Watch streams: each is ordered, has no duplicate, never splits a
//! revision across messages, its progress never goes backwards, it starts
//! where it was asked to, and over its range it equals the ground truth
//! exactly (a gap, a duplicate, a reordering or a changed event all show).
//!
//! History: `watch` ops (key = group, invoke value `{"from": F}`; the
//! completion's value `{"start": S, "messages": [[revision, [[event
//! revision, hash], ...]], ...]}`), whatever way the stream ended.

use serde_json::{json, Value};

use super::truth::GroundTruth;
use super::Outcome;
use crate::history::{pairs, Op};

/// (message revision, [(event revision, hash)])
pub type Message = (u64, Vec<(u64, u64)>);

pub fn parse_messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let revision = m.get(0)?.as_u64()?;
            let events = m
                .get(1)?
                .as_array()?
                .iter()
                .filter_map(|e| Some((e.get(0)?.as_u64()?, e.get(1)?.as_u64()?)))
                .collect();
            Some((revision, events))
        })
        .collect()
}

/// Problems of one stream on its own (no ground truth needed).
pub fn stream_problems(name: &str, from: u64, start: u64, messages: &[Message]) -> Vec<String> {
    let mut problems = Vec::new();
    if from > 0 && start != from - 1 {
        problems.push(format!(
            "{name}: asked to start at {from} but started after {start}"
        ));
    }
    let mut progress = start;
    let mut last_event_revision = start;
    for (revision, events) in messages {
        if *revision < progress {
            problems.push(format!(
                "{name}: went back from revision {progress} to {revision}"
            ));
        }
        progress = progress.max(*revision);
        if events.is_empty() {
            continue;
        }
        if *revision <= last_event_revision {
            problems.push(format!(
                "{name}: events of revision {revision} after revision {last_event_revision} (duplicate or out of order)"
            ));
        }
        if let Some((r, _)) = events.iter().find(|(r, _)| r != revision) {
            problems.push(format!(
                "{name}: a message of revision {revision} holds an event of revision {r}"
            ));
        }
        last_event_revision = last_event_revision.max(*revision);
    }
    problems
}

pub fn check(ops: &[Op], truth: Option<&GroundTruth>) -> Outcome {
    let mut problems = Vec::new();
    let mut streams = 0;
    let mut compared = 0;
    let mut events = 0;
    for p in pairs(ops, |o| o.f == "watch") {
        let Some(done) = p.complete else { continue };
        let Some(group) = p.invoke.key.as_deref() else {
            continue;
        };
        let name = format!("{} on node {:?}", p.invoke.process, p.invoke.node);
        let from = p.invoke.u64("from").unwrap_or_default();
        let Some(start) = done.u64("start") else {
            continue; // never got its first message
        };
        let messages = parse_messages(&done.value["messages"]);
        streams += 1;
        events += messages.iter().map(|m| m.1.len()).sum::<usize>();
        problems.extend(stream_problems(&name, from, start, &messages));
        let Some(stream) = truth.and_then(|t| t.groups.get(group)) else {
            continue;
        };
        let end = messages.iter().map(|m| m.0).max().unwrap_or(start);
        if start < stream.from || end > stream.to {
            continue; // the ground truth does not cover this range
        }
        compared += 1;
        let expected: Vec<(u64, u64)> = stream
            .events
            .iter()
            .filter(|e| e.revision > start && e.revision <= end)
            .map(|e| (e.revision, e.hash))
            .collect();
        let got: Vec<(u64, u64)> = messages.iter().flat_map(|m| m.1.iter().copied()).collect();
        if got != expected {
            let first = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            problems.push(format!(
                "{name}: over ({start}, {end}] it delivered {} events, the ground truth has {}; first difference at position {first}: got {:?}, expected {:?}",
                got.len(),
                expected.len(),
                got.get(first),
                expected.get(first)
            ));
        }
    }
    Outcome::new(
        "watch-streams",
        problems,
        json!({"streams": streams, "compared with the ground truth": compared, "events": events}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::{Stream, TruthEvent};
    use crate::check::Verdict;
    use crate::history::Kind;
    use std::collections::BTreeMap;

    fn truth() -> GroundTruth {
        let events = (1..=6)
            .map(|r| TruthEvent {
                revision: r,
                hash: 100 + r,
                detail: Value::Null,
            })
            .collect();
        GroundTruth {
            groups: BTreeMap::from([(
                "g".to_string(),
                Stream {
                    from: 0,
                    to: 6,
                    events,
                },
            )]),
        }
    }

    fn stream(from: u64, start: u64, messages: Value) -> Vec<Op> {
        vec![
            Op::new("watch-1", Kind::Invoke, "watch")
                .key("g")
                .value(json!({"from": from})),
            Op::new("watch-1", Kind::Info, "watch")
                .key("g")
                .value(json!({"start": start, "messages": messages})),
        ]
    }

    #[test]
    fn a_faithful_stream_is_valid() {
        let ops = stream(
            3,
            2,
            json!([
                [2, []],
                [3, [[3, 103]]],
                [4, [[4, 104]]],
                [4, []],
                [5, [[5, 105]]]
            ]),
        );
        assert_eq!(check(&ops, Some(&truth())).verdict, Verdict::Valid);
    }

    #[test]
    fn reordered_missing_split_or_backwards_streams_are_invalid() {
        let t = truth();
        let reordered = stream(3, 2, json!([[4, [[4, 104]]], [3, [[3, 103]]]]));
        assert_eq!(check(&reordered, Some(&t)).verdict, Verdict::Invalid);
        let gap = stream(3, 2, json!([[3, [[3, 103]]], [5, [[5, 105]]]]));
        assert_eq!(check(&gap, Some(&t)).verdict, Verdict::Invalid);
        let split = stream(3, 2, json!([[3, [[3, 103]]], [3, [[3, 103]]]]));
        assert_eq!(check(&split, Some(&t)).verdict, Verdict::Invalid);
        let changed = stream(3, 2, json!([[3, [[3, 999]]]]));
        assert_eq!(check(&changed, Some(&t)).verdict, Verdict::Invalid);
        let backwards = stream(3, 2, json!([[4, []], [3, []]]));
        assert_eq!(check(&backwards, Some(&t)).verdict, Verdict::Invalid);
        let wrong_start = stream(3, 1, json!([]));
        assert_eq!(check(&wrong_start, Some(&t)).verdict, Verdict::Invalid);
    }
}
