//! (5) Ownership (G1). Judged on the SDK workers' own hold intervals: no
//! two workers hold one partition at the same real instant, even for a
//! nanosecond. Judged on the fenced sink: it refuses no write (a writer
//! checks `grant.holds(p)` before every write, so a refused one came from
//! a worker whose hold had ended: a zombie write), never accepted a lower
//! token after a higher one, nor a token never granted. Judged on the
//! ground truth: a partition is granted only once its holder released it,
//! and its fencing tokens strictly increase.
//!
//! History: worker hold ops (see `holds`); sink `write` ops (value
//! `{"group", "partition", "token", "worker", "accepted"}`); ground truth
//! details `{"k": "granted", "worker", "ranges", "token"}` and `{"k":
//! "released", "worker", "ranges"}`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::holds::{self, ms, partitions};
use super::truth::GroundTruth;
use super::{Outcome, Verdict};
use crate::history::{Kind, Op};

/// (group, partition) -> tokens granted
type Granted = BTreeMap<(String, u32), BTreeSet<u64>>;

pub fn check(ops: &[Op], truth: Option<&GroundTruth>) -> Outcome {
    let mut problems = Vec::new();

    let holds = holds::holds(ops);
    let overlaps = holds::overlaps(&holds);
    let longest = overlaps.iter().map(|o| o.to - o.from).max().unwrap_or(0);
    problems.extend(overlaps.iter().map(holds::Overlap::problem));

    let (grants, granted) =
        truth.map_or_else(|| (0, Granted::new()), |t| ground_truth(t, &mut problems));

    // The sink: it refuses nothing, and per partition the tokens it
    // accepted never go down and were all granted.
    let mut highest: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut accepted = 0;
    let mut refused = 0;
    for op in ops.iter().filter(|o| {
        o.process == "sink" && o.f == "write" && matches!(o.kind, Kind::Ok | Kind::Info)
    }) {
        let (Some(p), Some(token)) = (op.u64("partition"), op.u64("token")) else {
            continue;
        };
        let group = op.value["group"].as_str().unwrap_or_default().to_string();
        let worker = op.value["worker"].as_str().unwrap_or("an unnamed worker");
        let key = (group.clone(), u32::try_from(p).unwrap_or(u32::MAX));
        if op.value["accepted"] != true {
            refused += 1;
            problems.push(format!(
                "zombie write: the sink refused {worker}'s write to {group}/{p} with token {token} at {:.3} ms (it checked its grant just before, so it wrote after its hold ended)",
                ms(op.time)
            ));
            continue;
        }
        accepted += 1;
        if let Some(h) = highest.get(&key).filter(|h| token < **h) {
            problems.push(format!(
                "sink accepted token {token} for {group}/{p} from {worker} at {:.3} ms after token {h}",
                ms(op.time)
            ));
        }
        let top = highest.entry(key.clone()).or_insert(0);
        *top = token.max(*top);
        if truth.is_some() && !granted.get(&key).is_some_and(|t| t.contains(&token)) {
            problems.push(format!(
                "sink accepted token {token} for {group}/{p} from {worker} at {:.3} ms, which was never granted",
                ms(op.time)
            ));
        }
    }

    let mut outcome = Outcome::new(
        "ownership",
        problems,
        json!({
            "grants": grants,
            "hold intervals": holds.len(),
            // The SDK workers' belief that a partition is theirs is now
            // the hold interval itself, so this is the old belief figure,
            // and any of it fails the run.
            "hold overlaps (sdk belief overlaps)": overlaps.len(),
            "longest hold overlap ms": ms(longest),
            "sink accepted": accepted,
            "sink refused (zombie writes)": refused,
        }),
    );
    // Without one hold interval G1 was not exercised: no verdict.
    if holds.is_empty() && outcome.verdict == Verdict::Valid {
        outcome.verdict = Verdict::Unknown;
        if let serde_json::Value::Object(map) = &mut outcome.details {
            map.insert(
                "reason".into(),
                "no SDK worker recorded a hold (assigned), so G1 was not exercised".into(),
            );
        }
    }
    outcome
}

/// Per group and partition, the ground truth grants a partition only once
/// its holder released it, with strictly increasing tokens. Returns the
/// number of partition grants and the tokens granted.
fn ground_truth(truth: &GroundTruth, problems: &mut Vec<String>) -> (usize, Granted) {
    let mut grants = 0;
    let mut granted = Granted::new();
    for (group, stream) in &truth.groups {
        let mut owner: BTreeMap<u32, String> = BTreeMap::new();
        let mut last_token: BTreeMap<u32, u64> = BTreeMap::new();
        for e in &stream.events {
            let worker = e.detail["worker"].as_str().unwrap_or_default().to_string();
            match e.detail["k"].as_str() {
                Some("granted") => {
                    let token = e.detail["token"].as_u64().unwrap_or(e.revision);
                    for p in partitions(&e.detail["ranges"]) {
                        grants += 1;
                        if let Some(holder) = owner.get(&p).filter(|h| **h != worker) {
                            problems.push(format!(
                                "{group}/{p}: granted to {worker} at revision {} while {holder} still held it",
                                e.revision
                            ));
                        }
                        if let Some(last) = last_token.get(&p).filter(|t| **t >= token) {
                            problems.push(format!(
                                "{group}/{p}: token {token} at revision {} does not exceed the previous {last}",
                                e.revision
                            ));
                        }
                        last_token.insert(p, token);
                        owner.insert(p, worker.clone());
                        granted.entry((group.clone(), p)).or_default().insert(token);
                    }
                }
                Some("released") => {
                    for p in partitions(&e.detail["ranges"]) {
                        if owner.get(&p).is_some_and(|h| *h == worker) {
                            owner.remove(&p);
                        }
                    }
                }
                // A split renumbers the partitions: each child is a new
                // grant with a new token, so ownership starts over.
                Some("split") => {
                    owner.clear();
                    last_token.clear();
                }
                _ => {}
            }
        }
    }
    (grants, granted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::{Stream, TruthEvent};
    use serde_json::Value;

    const MS: u64 = 1_000_000;

    fn truth(details: Vec<(u64, Value)>) -> GroundTruth {
        GroundTruth {
            groups: BTreeMap::from([(
                "g".to_string(),
                Stream {
                    from: 0,
                    to: 100,
                    events: details
                        .into_iter()
                        .map(|(revision, detail)| TruthEvent {
                            revision,
                            hash: revision,
                            detail,
                        })
                        .collect(),
                },
            )]),
        }
    }

    fn worker(process: &str, f: &str, value: Value, t: u64) -> Op {
        Op::new(process, Kind::Info, f).key("g").value(value).at(t)
    }

    fn assigned(process: &str, p: u32, token: u64, t: u64) -> Op {
        worker(
            process,
            "assigned",
            json!({"partitions": [[p, p]], "token": token}),
            t,
        )
    }

    fn released(process: &str, p: u32, t: u64) -> Op {
        worker(process, "released", json!({"partitions": [[p, p]]}), t)
    }

    fn write(worker: &str, p: u32, token: u64, accepted: bool, t: u64) -> Op {
        Op::new("sink", Kind::Ok, "write")
            .value(json!({"group": "g", "partition": p, "token": token, "worker": worker, "accepted": accepted}))
            .at(t)
    }

    /// One unrelated hold, so that a test about the ground truth or the
    /// sink gets a verdict (with no hold at all the checker has none).
    fn a_hold() -> Vec<Op> {
        vec![assigned("worker-z", 31, 1, 0), released("worker-z", 31, MS)]
    }

    #[test]
    fn a_one_ms_overlap_of_two_workers_holds_is_invalid() {
        let ops = vec![
            assigned("worker-w1", 3, 5, 10 * MS),
            assigned("worker-w2", 3, 9, 20 * MS),
            released("worker-w1", 3, 21 * MS),
            released("worker-w2", 3, 30 * MS),
        ];
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Invalid);
        let problem = o.details["problems"][0].as_str().unwrap_or_default();
        for part in [
            "g/3",
            "worker-w1",
            "worker-w2",
            "for 1.000 ms",
            "from 20.000 to 21.000 ms",
        ] {
            assert!(problem.contains(part), "{part:?} not in {problem:?}");
        }
        assert_eq!(o.details["hold overlaps (sdk belief overlaps)"], 1);
        assert_eq!(o.details["longest hold overlap ms"], 1.0);
    }

    #[test]
    fn a_hold_that_never_ends_overlaps_a_later_one() {
        let ops = vec![
            assigned("worker-w1", 3, 5, 0),
            assigned("worker-w2", 3, 9, 20 * MS),
            write("w2-0", 3, 9, true, 40 * MS),
        ];
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Invalid);
        let problem = o.details["problems"][0].as_str().unwrap_or_default();
        assert!(
            problem.contains("worker-w1 (token 5) held it from 0.000 ms to the end of the history"),
            "{problem}"
        );
        assert!(problem.contains("for 20.000 ms"), "{problem}");
    }

    #[test]
    fn a_single_refused_sink_write_is_invalid() {
        let mut ops = a_hold();
        ops.push(write("w1-0", 2, 5, true, 10 * MS));
        ops.push(write("w2-0", 2, 9, true, 11 * MS));
        assert_eq!(check(&ops, None).verdict, Verdict::Valid);
        ops.push(write("w1-0", 2, 5, false, 12 * MS));
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Invalid);
        assert_eq!(o.details["sink refused (zombie writes)"], 1);
        let problem = o.details["problems"][0].as_str().unwrap_or_default();
        for part in ["zombie write", "w1-0", "g/2", "token 5", "at 12.000 ms"] {
            assert!(problem.contains(part), "{part:?} not in {problem:?}");
        }
    }

    #[test]
    fn a_clean_handoff_is_valid() {
        let ops = vec![
            assigned("worker-w1", 3, 5, 10 * MS),
            write("w1-0", 3, 5, true, 11 * MS),
            released("worker-w1", 3, 20 * MS),
            assigned("worker-w2", 3, 9, 21 * MS),
            write("w2-0", 3, 9, true, 22 * MS),
            worker("worker-w2", "stopped", json!({"how": "left"}), 30 * MS),
        ];
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        assert_eq!(o.details["hold intervals"], 2);
        assert_eq!(o.details["hold overlaps (sdk belief overlaps)"], 0);
    }

    #[test]
    fn a_lease_lost_recorded_after_later_ops_ends_the_hold_at_its_own_time() {
        // worker-w1's lease ran out at 20 ms. Its event loop, blocked,
        // handled a revocation of partition 3 only at 30 ms, and then heard
        // of the lost lease, which it recorded last, stamped with the lease
        // deadline. In file order w1 held partition 3 until the release at
        // 30 ms, past worker-w2's grant at 21 ms; in time order the lease
        // loss ended it at 20 ms.
        let ops = vec![
            assigned("worker-w1", 3, 5, 10 * MS),
            assigned("worker-w2", 3, 9, 21 * MS),
            released("worker-w1", 3, 30 * MS),
            worker("worker-w1", "lease_lost", Value::Null, 20 * MS),
            released("worker-w2", 3, 40 * MS),
        ];
        let o = check(&ops, None);
        assert_eq!(o.verdict, Verdict::Valid, "{}", o.details);
        // Stamped at 22 ms instead, the lease loss leaves 1 ms of overlap.
        let mut late = ops.clone();
        late[3].time = 22 * MS;
        let o = check(&late, None);
        assert_eq!(o.verdict, Verdict::Invalid);
        let problem = o.details["problems"][0].as_str().unwrap_or_default();
        assert!(problem.contains("from 21.000 to 22.000 ms"), "{problem}");
    }

    #[test]
    fn a_history_without_holds_gets_no_verdict() {
        let o = check(&[], None);
        assert_eq!(o.verdict, Verdict::Unknown);
        assert!(o.details["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no SDK worker recorded a hold")));
    }

    #[test]
    fn a_handoff_with_release_first_is_valid_and_an_overlapping_grant_is_not() {
        let good = truth(vec![
            (
                5,
                json!({"k": "granted", "worker": "w1", "ranges": [[0, 3]], "token": 5}),
            ),
            (
                9,
                json!({"k": "released", "worker": "w1", "ranges": [[2, 3]]}),
            ),
            (
                9,
                json!({"k": "granted", "worker": "w2", "ranges": [[2, 3]], "token": 9}),
            ),
        ]);
        assert_eq!(check(&a_hold(), Some(&good)).verdict, Verdict::Valid);
        let overlapping = truth(vec![
            (
                5,
                json!({"k": "granted", "worker": "w1", "ranges": [[0, 3]], "token": 5}),
            ),
            (
                9,
                json!({"k": "granted", "worker": "w2", "ranges": [[2, 3]], "token": 9}),
            ),
        ]);
        let o = check(&a_hold(), Some(&overlapping));
        assert_eq!(o.verdict, Verdict::Invalid);
        assert!(o.details["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("granted to w2 at revision 9 while w1 still held it")));
        let stale_token = truth(vec![
            (
                5,
                json!({"k": "granted", "worker": "w1", "ranges": [[0, 0]], "token": 5}),
            ),
            (
                6,
                json!({"k": "released", "worker": "w1", "ranges": [[0, 0]]}),
            ),
            (
                7,
                json!({"k": "granted", "worker": "w2", "ranges": [[0, 0]], "token": 4}),
            ),
        ]);
        let o = check(&a_hold(), Some(&stale_token));
        assert_eq!(o.verdict, Verdict::Invalid);
        assert!(o.details["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("token 4 at revision 7 does not exceed the previous 5")));
    }

    #[test]
    fn a_sink_that_accepts_a_lower_token_after_a_higher_one_or_an_ungranted_one_is_invalid() {
        let t = truth(vec![
            (
                5,
                json!({"k": "granted", "worker": "w1", "ranges": [[0, 0]], "token": 5}),
            ),
            (
                6,
                json!({"k": "released", "worker": "w1", "ranges": [[0, 0]]}),
            ),
            (
                7,
                json!({"k": "granted", "worker": "w2", "ranges": [[0, 0]], "token": 7}),
            ),
        ]);
        let with = |writes: Vec<Op>| [a_hold(), writes].concat();
        let good = with(vec![write("w1", 0, 5, true, 0), write("w2", 0, 7, true, 1)]);
        assert_eq!(check(&good, Some(&t)).verdict, Verdict::Valid);
        let lower = check(
            &with(vec![write("w2", 0, 7, true, 0), write("w1", 0, 5, true, 1)]),
            Some(&t),
        );
        assert_eq!(lower.verdict, Verdict::Invalid);
        assert!(lower.details["problems"][0].as_str().is_some_and(|p| p
            .contains("accepted token 5 for g/0 from w1")
            && p.contains("after token 7")));
        let ungranted = check(&with(vec![write("w1", 0, 6, true, 0)]), Some(&t));
        assert_eq!(ungranted.verdict, Verdict::Invalid);
        assert!(ungranted.details["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("token 6 for g/0") && p.contains("never granted")));
    }
}
