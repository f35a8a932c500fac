//! (2) Revision order: every acknowledged write got its own revision; a
//! write that finished before another started has the lower revision (real
//! time); every read answered "at revision R" equals a replay of the
//! ground truth up to R (register reads and tombstone checks); and a
//! linearizable tombstone check is not stale: it sees every tombstone whose
//! put was acknowledged before the check was invoked, and answers at a
//! revision at least as high as any write acknowledged before then.
//!
//! History: `put` (key = the tombstone key, value `{"group"}`; ok value
//! `{"revision"}`); `cas` (ok value `{"revision"}`); `check` (key = group,
//! value `{"keys", "serializable"?}`; ok value `{"revision", "deleted":
//! {key: bool}}`).

use std::collections::BTreeMap;

use serde_json::json;

use super::stale::{stale_checks, Highest};
use super::truth::GroundTruth;
use super::Outcome;
use crate::history::{pairs, Kind, Op};

/// An acknowledged write: (revision, invoke time, complete time, what).
pub(super) type Write = (u64, u64, u64, String);

pub fn check(ops: &[Op], truth: Option<&GroundTruth>) -> Outcome {
    let mut problems = Vec::new();
    let mut writes: Vec<Write> = Vec::new();
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
    // Real time: a write gets a higher revision than every write
    // acknowledged before it was invoked.
    let highest = Highest::new(&writes);
    for w in &writes {
        if let Some(h) = highest.before(w.1) {
            if h.0 >= w.0 {
                problems.push(format!(
                    "real-time order: {} (revision {}) started after {} (revision {}) finished",
                    w.3, w.0, h.3, h.0
                ));
            }
        }
    }
    let stale = stale_checks(ops, &highest, truth);
    let fresh_checks = stale.checked;
    problems.extend(stale.problems);
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
        json!({
            "acknowledged writes": writes.len(),
            "reads replayed": reads,
            "linearizable checks judged for staleness": fresh_checks,
        }),
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

    fn put(p: &str, key: &str, t0: u64, t1: u64, revision: u64) -> [Op; 2] {
        [
            Op::new(p, Kind::Invoke, "put")
                .key(key)
                .value(json!({"group": "ts"}))
                .at(t0),
            Op::new(p, Kind::Ok, "put")
                .key(key)
                .value(json!({"revision": revision}))
                .at(t1),
        ]
    }

    fn ts_check(t0: u64, t1: u64, at: u64, deleted: serde_json::Value) -> [Op; 2] {
        let keys: Vec<String> = deleted
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        [
            Op::new("tombstones-2", Kind::Invoke, "check")
                .key("ts")
                .value(json!({"keys": keys}))
                .at(t0),
            Op::new("tombstones-2", Kind::Ok, "check")
                .key("ts")
                .value(json!({"revision": at, "deleted": deleted}))
                .at(t1),
        ]
    }

    fn problems(o: &Outcome) -> Vec<String> {
        o.details["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect()
    }

    #[test]
    fn a_tombstone_check_that_misses_an_earlier_acknowledged_put_is_invalid() {
        // k1's put was acknowledged at 10 ms; a check invoked at 20 ms
        // answers at a revision past it yet says k1 has no tombstone.
        let ms = 1_000_000;
        let ops = [
            put("tombstones-1", "k1", 0, 10 * ms, 5),
            ts_check(20 * ms, 25 * ms, 5, json!({"k1": false})),
        ]
        .concat();
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Invalid);
        let p = problems(&o);
        assert_eq!(p.len(), 1, "{p:?}");
        for part in [
            "stale linearizable check of ts by tombstones-2 (invoked at 20.000 ms)",
            "said k1 has no tombstone",
            "acknowledged at revision 5 at 10.000 ms",
        ] {
            assert!(p[0].contains(part), "{part:?} not in {:?}", p[0]);
        }
    }

    #[test]
    fn a_tombstone_check_below_the_revision_of_an_earlier_acknowledged_write_is_invalid() {
        // A CAS on a register group was acknowledged at revision 9 before
        // the check began. Revisions are global, so a check answering at 6
        // read a state from before that CAS.
        let ms = 1_000_000;
        let cas = [
            Op::new("cas-1", Kind::Invoke, "cas")
                .key("reg-0")
                .value(json!({"from": 1000, "to": 2000}))
                .at(0),
            Op::new("cas-1", Kind::Ok, "cas")
                .key("reg-0")
                .value(json!({"revision": 9}))
                .at(10 * ms),
        ];
        let ops = [
            cas,
            ts_check(20 * ms, 25 * ms, 6, json!({"never-1": false})),
        ]
        .concat();
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Invalid);
        let p = problems(&o);
        assert_eq!(p.len(), 1, "{p:?}");
        for part in [
            "stale linearizable check of ts by tombstones-2",
            "answered at revision 6",
            "cas reg-0 by cas-1 was acknowledged at revision 9 at 10.000 ms",
        ] {
            assert!(p[0].contains(part), "{part:?} not in {:?}", p[0]);
        }
    }

    #[test]
    fn a_fresh_tombstone_check_is_valid() {
        let ms = 1_000_000;
        let ops = [
            put("tombstones-1", "k1", 0, 10 * ms, 5),
            // Acknowledged only after the check began: either answer goes.
            put("tombstones-3", "k2", 15 * ms, 30 * ms, 7),
            ts_check(
                20 * ms,
                25 * ms,
                6,
                json!({"k1": true, "k2": false, "never-1": false}),
            ),
        ]
        .concat();
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Valid, "{:?}", problems(&o));
        assert_eq!(o.details["linearizable checks judged for staleness"], 1);
    }

    #[test]
    fn a_serializable_tombstone_check_may_be_stale() {
        let ms = 1_000_000;
        let mut ops = [
            put("tombstones-1", "k1", 0, 10 * ms, 5),
            ts_check(20 * ms, 25 * ms, 4, json!({"k1": false})),
        ]
        .concat();
        ops[2].value["serializable"] = json!(true);
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Valid, "{:?}", problems(&o));
        assert_eq!(o.details["linearizable checks judged for staleness"], 0);
    }

    #[test]
    fn a_check_may_miss_a_tombstone_the_ground_truth_shows_purged() {
        let ms = 1_000_000;
        let truth = GroundTruth {
            groups: BTreeMap::from([(
                "ts".to_string(),
                crate::check::truth::Stream {
                    from: 0,
                    to: 10,
                    events: vec![
                        crate::check::truth::TruthEvent {
                            revision: 5,
                            hash: 5,
                            detail: json!({"k": "tombstone", "key": "k1"}),
                        },
                        crate::check::truth::TruthEvent {
                            revision: 6,
                            hash: 6,
                            detail: json!({"k": "purged", "key": "k1"}),
                        },
                    ],
                },
            )]),
        };
        let at = |revision: u64| {
            [
                put("tombstones-1", "k1", 0, 10 * ms, 5),
                ts_check(20 * ms, 25 * ms, revision, json!({"k1": false})),
            ]
            .concat()
        };
        assert_eq!(check(&at(6), Some(&truth)).verdict, Verdict::Valid);
        // At revision 5 the tombstone was still there.
        assert_eq!(check(&at(5), Some(&truth)).verdict, Verdict::Invalid);
    }
}
