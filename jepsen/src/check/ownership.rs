//! (5) Ownership (G1): per partition, the ground truth's grants never
//! overlap (a partition is granted only once its holder released it), and
//! its fencing tokens strictly increase; the fenced sink never accepted a
//! lower token after a higher one, nor a token never granted. How often
//! two SDK workers *believed* they owned a partition at the same moment is
//! reported as a figure: the lease rules make it harmless, the sink shows it.
//!
//! History: ground truth details `{"k": "granted", "worker", "ranges",
//! "token"}` and `{"k": "released", "worker", "ranges"}`; sink `write` ops
//! (value `{"partition", "token", "worker", "accepted"}`); worker processes'
//! `assigned` / `released` / `lease_lost` / `stopped` ops.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::truth::GroundTruth;
use super::Outcome;
use crate::history::{Kind, Op};

fn partitions(v: &Value) -> Vec<u32> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let a = u32::try_from(r.get(0)?.as_u64()?).ok()?;
            let b = u32::try_from(r.get(1)?.as_u64()?).ok()?;
            Some(a..=b)
        })
        .flatten()
        .collect()
}

pub fn check(ops: &[Op], truth: Option<&GroundTruth>) -> Outcome {
    let mut problems = Vec::new();
    let mut grants = 0;
    // (group, partition) -> tokens granted
    let mut granted_tokens: BTreeMap<(String, u32), BTreeSet<u64>> = BTreeMap::new();
    if let Some(truth) = truth {
        for (group, stream) in &truth.groups {
            let mut owner: BTreeMap<u32, (String, u64)> = BTreeMap::new();
            let mut last_token: BTreeMap<u32, u64> = BTreeMap::new();
            for e in &stream.events {
                let worker = e.detail["worker"].as_str().unwrap_or_default().to_string();
                match e.detail["k"].as_str() {
                    Some("granted") => {
                        let token = e.detail["token"].as_u64().unwrap_or(e.revision);
                        for p in partitions(&e.detail["ranges"]) {
                            grants += 1;
                            if let Some((holder, _)) = owner.get(&p) {
                                if *holder != worker {
                                    problems.push(format!(
                                        "{group}/{p}: granted to {worker} at revision {} while {holder} still held it",
                                        e.revision
                                    ));
                                }
                            }
                            if last_token.get(&p).is_some_and(|t| *t >= token) {
                                problems.push(format!(
                                    "{group}/{p}: token {token} at revision {} does not exceed the previous {}",
                                    e.revision, last_token[&p]
                                ));
                            }
                            last_token.insert(p, token);
                            owner.insert(p, (worker.clone(), token));
                            granted_tokens
                                .entry((group.clone(), p))
                                .or_default()
                                .insert(token);
                        }
                    }
                    Some("released") => {
                        for p in partitions(&e.detail["ranges"]) {
                            if owner.get(&p).is_some_and(|(h, _)| *h == worker) {
                                owner.remove(&p);
                            }
                        }
                    }
                    Some("split") => {
                        owner.clear();
                        last_token.clear();
                    }
                    _ => {}
                }
            }
        }
    }

    // The sink: per partition, accepted tokens never go down.
    let mut highest: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut accepted = 0;
    let mut refused = 0;
    for op in ops
        .iter()
        .filter(|o| o.process == "sink" && o.f == "write" && o.kind == Kind::Ok)
    {
        let (Some(p), Some(token)) = (op.u64("partition"), op.u64("token")) else {
            continue;
        };
        let group = op.value["group"].as_str().unwrap_or_default().to_string();
        let key = (group.clone(), u32::try_from(p).unwrap_or(u32::MAX));
        if op.value["accepted"] != true {
            refused += 1;
            continue;
        }
        accepted += 1;
        if highest.get(&key).is_some_and(|h| token < *h) {
            problems.push(format!(
                "sink accepted token {token} for {group}/{p} after token {}",
                highest[&key]
            ));
        }
        highest.insert(
            key.clone(),
            token.max(highest.get(&key).copied().unwrap_or(0)),
        );
        if truth.is_some() && !granted_tokens.get(&key).is_some_and(|t| t.contains(&token)) {
            problems.push(format!(
                "sink accepted token {token} for {group}/{p}, which was never granted"
            ));
        }
    }

    Outcome::new(
        "ownership",
        problems,
        json!({
            "grants": grants,
            "sink accepted": accepted,
            "sink refused (stale token)": refused,
            "sdk belief overlaps": belief_overlaps(ops),
        }),
    )
}

/// Who believed they owned a partition, from when to when (ns).
type Spans = BTreeMap<(String, u32), Vec<(u64, u64, String)>>;

/// Pairs of SDK workers that believed, at the same real time, that they
/// owned the same partition.
pub fn belief_overlaps(ops: &[Op]) -> usize {
    // (group, partition) -> [(from, to, worker)]
    let mut spans: Spans = BTreeMap::new();
    let mut open: BTreeMap<(String, String, u32), u64> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.process.starts_with("worker-")) {
        let group = op.key.clone().unwrap_or_default();
        let w = op.process.clone();
        let mut close = |g: &str, p: u32, from: u64| {
            spans
                .entry((g.to_string(), p))
                .or_default()
                .push((from, op.time, w.clone()));
        };
        match op.f.as_str() {
            "assigned" => {
                for p in partitions(&op.value["partitions"]) {
                    open.insert((w.clone(), group.clone(), p), op.time);
                }
            }
            "released" => {
                for p in partitions(&op.value["partitions"]) {
                    if let Some(from) = open.remove(&(w.clone(), group.clone(), p)) {
                        close(&group, p, from);
                    }
                }
            }
            "lease_lost" | "stopped" => {
                let mine: Vec<_> = open
                    .keys()
                    .filter(|(ow, og, _)| *ow == w && *og == group)
                    .cloned()
                    .collect();
                for k in mine {
                    if let Some(from) = open.remove(&k) {
                        close(&k.1, k.2, from);
                    }
                }
            }
            _ => {}
        }
    }
    for ((w, g, p), from) in open {
        spans.entry((g, p)).or_default().push((from, u64::MAX, w));
    }
    let mut overlaps = 0;
    for list in spans.values_mut() {
        list.sort();
        for (i, a) in list.iter().enumerate() {
            overlaps += list[i + 1..]
                .iter()
                .take_while(|b| b.0 < a.1)
                .filter(|b| b.2 != a.2)
                .count();
        }
    }
    overlaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::{Stream, TruthEvent};
    use crate::check::Verdict;

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
        assert_eq!(check(&[], Some(&good)).verdict, Verdict::Valid);
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
        assert_eq!(check(&[], Some(&overlapping)).verdict, Verdict::Invalid);
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
        assert_eq!(check(&[], Some(&stale_token)).verdict, Verdict::Invalid);
    }

    #[test]
    fn a_sink_that_accepts_a_lower_token_after_a_higher_one_is_invalid() {
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
        let write = |token: u64, accepted: bool| {
            Op::new("sink", Kind::Ok, "write")
                .value(json!({"group": "g", "partition": 0, "token": token, "accepted": accepted}))
        };
        assert_eq!(
            check(&[write(5, true), write(7, true), write(5, false)], Some(&t)).verdict,
            Verdict::Valid
        );
        assert_eq!(
            check(&[write(7, true), write(5, true)], Some(&t)).verdict,
            Verdict::Invalid
        );
        assert_eq!(
            check(&[write(6, true)], Some(&t)).verdict,
            Verdict::Invalid,
            "never granted"
        );
    }

    #[test]
    fn belief_overlaps_are_counted() {
        let op =
            |w: &str, f: &str, v: Value, t: u64| Op::new(w, Kind::Ok, f).key("g").value(v).at(t);
        let ops = vec![
            op("worker-1", "assigned", json!({"partitions": [[0, 1]]}), 0),
            op("worker-2", "assigned", json!({"partitions": [[1, 1]]}), 5),
            op("worker-1", "released", json!({"partitions": [[0, 1]]}), 10),
        ];
        assert_eq!(belief_overlaps(&ops), 1);
    }
}
