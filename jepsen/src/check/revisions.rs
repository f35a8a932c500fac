//! (2) Revision order: every acknowledged write got its own revision; a
//! write that finished before another started has the lower revision (real
//! time); and every read answered "at revision R" equals a replay of the
//! ground truth up to R (register reads and tombstone checks).

use std::collections::BTreeMap;

use serde_json::json;

use super::truth::GroundTruth;
use super::Outcome;
use crate::history::{pairs, Kind, Op};

pub fn check(ops: &[Op], truth: Option<&GroundTruth>) -> Outcome {
    let mut problems = Vec::new();
    // (revision, invoke time, complete time, what)
    let mut writes: Vec<(u64, u64, u64, String)> = Vec::new();
    for p in pairs(ops, |o| o.f == "put" || o.f == "cas") {
        let Some(done) = p.complete.filter(|c| c.kind == Kind::Ok) else {
            continue;
        };
        if let Some(r) = done.u64("revision") {
            let what = format!(
                "{} {} by {}",
                p.invoke.f,
                p.invoke.key.as_deref().unwrap_or_default(),
                p.invoke.process
            );
            writes.push((r, p.invoke.time, done.time, what));
        }
    }
    let mut by_revision: BTreeMap<u64, &str> = BTreeMap::new();
    for (r, _, _, what) in &writes {
        if let Some(other) = by_revision.insert(*r, what) {
            problems.push(format!(
                "revision {r} acknowledged twice: {other} and {what}"
            ));
        }
    }
    // Real time: sweep by invocation, knowing the highest revision of the
    // writes completed before it.
    let mut by_completion = writes.clone();
    by_completion.sort_by_key(|w| w.2);
    let mut by_invocation = writes.clone();
    by_invocation.sort_by_key(|w| w.1);
    let mut done = 0;
    let mut highest: Option<&(u64, u64, u64, String)> = None;
    for w in &by_invocation {
        while done < by_completion.len() && by_completion[done].2 < w.1 {
            if highest.is_none_or(|h| by_completion[done].0 > h.0) {
                highest = Some(&by_completion[done]);
            }
            done += 1;
        }
        if let Some(h) = highest {
            if h.0 >= w.0 {
                problems.push(format!(
                    "real-time order: {} (revision {}) started after {} (revision {}) finished",
                    w.3, w.0, h.3, h.0
                ));
            }
        }
    }
    let mut reads = 0;
    if let Some(truth) = truth {
        for p in pairs(ops, |o| o.f == "read" || o.f == "check") {
            let Some(done) = p.complete.filter(|c| c.kind == Kind::Ok) else {
                continue;
            };
            let Some(at) = done.u64("revision") else {
                continue;
            };
            let group = p.invoke.value["group"].as_str().or(p.invoke.key.as_deref());
            let Some(group) = group else { continue };
            let Some(stream) = truth.groups.get(group) else {
                continue;
            };
            if at <= stream.from || at > stream.to {
                continue; // outside what the ground truth covers
            }
            reads += 1;
            if p.invoke.f == "read" {
                let expected = truth.register_at(group, at);
                if expected != done.u64("value") {
                    problems.push(format!(
                        "read of {group} at revision {at} returned {:?}, the replay says {expected:?}",
                        done.u64("value")
                    ));
                }
            } else if let Some(results) = done.value["deleted"].as_object() {
                for (key, deleted) in results {
                    let expected = truth.tombstone_at(group, key, at);
                    if expected != deleted.as_bool() {
                        problems.push(format!(
                            "check of {key} in {group} at revision {at} said deleted={deleted}, the replay says {expected:?}"
                        ));
                    }
                }
            }
        }
    }
    Outcome::new(
        "revision-order",
        problems,
        json!({"acknowledged writes": writes.len(), "reads replayed": reads}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use serde_json::json;

    fn write(p: &str, key: &str, t0: u64, t1: u64, revision: u64) -> [Op; 2] {
        [
            Op::new(p, Kind::Invoke, "put")
                .key(key)
                .value(json!({"group": "g"}))
                .at(t0),
            Op::new(p, Kind::Ok, "put")
                .key(key)
                .value(json!({"revision": revision}))
                .at(t1),
        ]
    }

    #[test]
    fn duplicate_and_reordered_revisions_are_invalid() {
        let ok: Vec<Op> = [write("a", "k1", 0, 10, 5), write("b", "k2", 20, 30, 6)].concat();
        assert_eq!(check(&ok, None).verdict, Verdict::Valid);
        // Overlapping writes may be in either order.
        let overlap: Vec<Op> = [write("a", "k1", 0, 10, 7), write("b", "k2", 5, 30, 6)].concat();
        assert_eq!(check(&overlap, None).verdict, Verdict::Valid);
        let dup: Vec<Op> = [write("a", "k1", 0, 10, 5), write("b", "k2", 20, 30, 5)].concat();
        assert_eq!(check(&dup, None).verdict, Verdict::Invalid);
        let back: Vec<Op> = [write("a", "k1", 0, 10, 9), write("b", "k2", 20, 30, 6)].concat();
        assert_eq!(check(&back, None).verdict, Verdict::Invalid);
    }

    fn truth_with(events: Vec<(u64, serde_json::Value)>) -> GroundTruth {
        use crate::check::truth::{Stream, TruthEvent};
        let events = events
            .into_iter()
            .map(|(revision, detail)| TruthEvent {
                revision,
                hash: revision,
                detail,
            })
            .collect();
        GroundTruth {
            groups: BTreeMap::from([(
                "g".to_string(),
                Stream {
                    from: 0,
                    to: 10,
                    events,
                },
            )]),
        }
    }

    #[test]
    fn reads_and_checks_that_differ_from_the_replay_are_invalid() {
        let truth = truth_with(vec![
            (1, json!({"k": "group", "register": 1000})),
            (4, json!({"k": "group", "register": 2000})),
            (6, json!({"k": "tombstone", "key": "k1"})),
        ]);
        let read = |value: u64, at: u64| {
            vec![
                Op::new("cas-1", Kind::Invoke, "read").key("g"),
                Op::new("cas-1", Kind::Ok, "read")
                    .key("g")
                    .value(json!({"value": value, "revision": at})),
            ]
        };
        let check_op = |deleted: bool, at: u64| {
            vec![
                Op::new("tombstones-1", Kind::Invoke, "check").key("g"),
                Op::new("tombstones-1", Kind::Ok, "check")
                    .key("g")
                    .value(json!({"revision": at, "deleted": {"k1": deleted}})),
            ]
        };
        let good = [
            read(1000, 3),
            read(2000, 4),
            check_op(false, 5),
            check_op(true, 6),
        ]
        .concat();
        assert_eq!(check(&good, Some(&truth)).verdict, Verdict::Valid);
        // A read at revision 5 that still returns the value replaced at 4.
        assert_eq!(
            check(&read(1000, 5), Some(&truth)).verdict,
            Verdict::Invalid
        );
        // A check that misses a tombstone present at its revision.
        assert_eq!(
            check(&check_op(false, 7), Some(&truth)).verdict,
            Verdict::Invalid
        );
    }
}
