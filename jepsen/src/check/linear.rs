//! (1) Linearizability of the compare-and-set registers (one per group: a
//! field of the group's config), by the Wing–Gong search as refined by Lowe:
//! try to linearize, in real-time order, each operation whose call comes
//! before every pending return; backtrack when a return is reached with its
//! operation not yet linearized; memoise (linearized set, state) so no
//! configuration is explored twice. An `info` operation may take effect at
//! any point after its call, or never.
//!
//! History shape: process `cas-*`, `key` = the register; `read` (ok value
//! `{"value": v}`), `cas` (value `{"from": a, "to": b}`), `write` (value
//! `{"value": v}`); the initial value is an ok `init` (value `{"value": v}`).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Outcome, Verdict};
use crate::history::{pairs, Kind, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    Read(u64),
    Write(u64),
    Cas(u64, u64),
}

impl RegOp {
    /// The state after the operation, if it can happen in `state`.
    fn step(self, state: u64) -> Option<u64> {
        match self {
            RegOp::Read(v) => (v == state).then_some(state),
            RegOp::Write(v) => Some(v),
            RegOp::Cas(from, to) => (from == state).then_some(to),
        }
    }
}

/// One operation for the search: when it was called, when it returned
/// (`None`: unknown outcome), what it did.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    pub call: u64,
    pub ret: Option<u64>,
    pub op: RegOp,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Search {
    Linearizable,
    /// No order works; the longest prefix found linearized this many.
    NotLinearizable {
        linearized: usize,
    },
    OutOfTime,
}

/// Searches for a linearization of `ops` starting from `init`.
pub fn search(init: u64, ops: &[Timed], deadline: Instant) -> Search {
    // Events: calls and returns, in time order (a call before a return at
    // the same instant: they overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call, false, i));
        if let Some(r) = o.ret {
            events.push((r, true, i));
        }
    }
    events.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    let n = events.len();
    // A doubly linked list over the events; index n is the head sentinel.
    const END: usize = usize::MAX;
    let head = n;
    let mut next = vec![END; n + 1];
    let mut prev = vec![head; n + 1];
    next[head] = if n > 0 { 0 } else { END };
    for i in 0..n {
        next[i] = if i + 1 < n { i + 1 } else { END };
        prev[i] = if i == 0 { head } else { i - 1 };
    }
    let mut return_of = vec![usize::MAX; ops.len()];
    for (e, &(_, is_ret, i)) in events.iter().enumerate() {
        if is_ret {
            return_of[i] = e;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = x;
        if x != END {
            prev[x] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, x) = (prev[e], next[e]);
        next[p] = e;
        if x != END {
            prev[x] = e;
        }
    };

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = init;
    let mut remaining = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut best = 0;
    let mut entry = next[head];
    let mut steps = 0u64;
    while remaining > 0 {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return Search::OutOfTime;
        }
        let at_return = entry == END || events[entry].1;
        if !at_return {
            let i = events[entry].2;
            if let Some(after) = ops[i].op.step(state) {
                let mut bits = linearized.clone();
                bits[i / 64] |= 1 << (i % 64);
                if cache.insert((bits.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    linearized = bits;
                    if ops[i].ret.is_some() {
                        remaining -= 1;
                    }
                    best = best.max(stack.len());
                    unlink(&mut next, &mut prev, entry);
                    if return_of[i] != usize::MAX {
                        unlink(&mut next, &mut prev, return_of[i]);
                    }
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
            continue;
        }
        // A return whose operation is not linearized yet: undo the last choice.
        let Some((call, before)) = stack.pop() else {
            return Search::NotLinearizable { linearized: best };
        };
        let i = events[call].2;
        state = before;
        linearized[i / 64] &= !(1 << (i % 64));
        if ops[i].ret.is_some() {
            remaining += 1;
        }
        if return_of[i] != usize::MAX {
            relink(&mut next, &mut prev, return_of[i]);
        }
        relink(&mut next, &mut prev, call);
        entry = next[call];
    }
    Search::Linearizable
}

/// The register operations of one key from the history.
fn register_ops(ops: &[Op], key: &str) -> (Option<u64>, Vec<Timed>) {
    let mut init = None;
    let mut timed = Vec::new();
    for p in pairs(ops, |o| {
        o.key.as_deref() == Some(key) && o.process.starts_with("cas")
    }) {
        let kind = p.kind();
        if kind == Kind::Fail {
            continue; // definitely did not happen
        }
        let ret = p.complete.filter(|c| c.kind == Kind::Ok).map(|c| c.time);
        let op = match p.invoke.f.as_str() {
            "init" => {
                if let Some(v) = p.complete.and_then(|c| c.u64("value")) {
                    init = Some(v);
                }
                continue;
            }
            "read" => match p
                .complete
                .filter(|c| c.kind == Kind::Ok)
                .and_then(|c| c.u64("value"))
            {
                Some(v) => RegOp::Read(v),
                None => continue, // a read with no answer tells nothing
            },
            "write" => match p.invoke.u64("value") {
                Some(v) => RegOp::Write(v),
                None => continue,
            },
            "cas" => match (p.invoke.u64("from"), p.invoke.u64("to")) {
                (Some(a), Some(b)) => RegOp::Cas(a, b),
                _ => continue,
            },
            _ => continue,
        };
        timed.push(Timed {
            call: p.invoke.time,
            ret,
            op,
        });
    }
    (init, timed)
}

pub fn check(ops: &[Op], budget: Duration) -> Outcome {
    let keys: BTreeMap<&str, ()> = ops
        .iter()
        .filter(|o| o.process.starts_with("cas"))
        .filter_map(|o| o.key.as_deref().map(|k| (k, ())))
        .collect();
    let deadline = Instant::now() + budget;
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    let mut counted = 0;
    for key in keys.keys() {
        let (init, timed) = register_ops(ops, key);
        counted += timed.len();
        let Some(init) = init else {
            unknown.push(format!("{key}: no initial value recorded"));
            continue;
        };
        match search(init, &timed, deadline) {
            Search::Linearizable => {}
            Search::NotLinearizable { linearized } => problems.push(format!(
                "register {key}: no linearization of its {} operations (at most {linearized} could be ordered)",
                timed.len()
            )),
            Search::OutOfTime => unknown.push(format!("{key}: time budget of {budget:?} ran out")),
        }
    }
    let mut outcome = Outcome::new(
        "linearizable-registers",
        problems,
        json!({"registers": keys.len(), "operations": counted, "undecided": unknown}),
    );
    if outcome.verdict == Verdict::Valid && !unknown.is_empty() {
        outcome.verdict = Verdict::Unknown;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(call: u64, ret: Option<u64>, op: RegOp) -> Timed {
        Timed { call, ret, op }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn sequential_and_overlapping_histories_that_are_linearizable() {
        use RegOp::*;
        let h = [
            t(0, Some(1), Cas(0, 1)),
            t(2, Some(3), Read(1)),
            t(4, Some(5), Cas(1, 2)),
        ];
        assert_eq!(search(0, &h, far()), Search::Linearizable);
        // The read sees the cas that overlaps it.
        let h = [t(0, Some(10), Cas(0, 1)), t(1, Some(2), Read(1))];
        assert_eq!(search(0, &h, far()), Search::Linearizable);
        // ... or not, since they overlap.
        let h = [t(0, Some(10), Cas(0, 1)), t(1, Some(2), Read(0))];
        assert_eq!(search(0, &h, far()), Search::Linearizable);
        // An unknown-outcome cas explains a later read...
        let h = [t(0, None, Cas(0, 7)), t(5, Some(6), Read(7))];
        assert_eq!(search(0, &h, far()), Search::Linearizable);
        // ... or never happened.
        let h = [t(0, None, Cas(0, 7)), t(5, Some(6), Read(0))];
        assert_eq!(search(0, &h, far()), Search::Linearizable);
    }

    #[test]
    fn non_linearizable_histories_are_caught() {
        use RegOp::*;
        // A stale read after a completed cas.
        let h = [t(0, Some(1), Cas(0, 1)), t(2, Some(3), Read(0))];
        assert!(matches!(
            search(0, &h, far()),
            Search::NotLinearizable { .. }
        ));
        // Two cas from the same value both succeed, one after the other.
        let h = [t(0, Some(1), Cas(0, 1)), t(2, Some(3), Cas(0, 2))];
        assert!(matches!(
            search(0, &h, far()),
            Search::NotLinearizable { .. }
        ));
        // A value nobody wrote.
        let h = [t(0, Some(1), Read(9))];
        assert!(matches!(
            search(0, &h, far()),
            Search::NotLinearizable { .. }
        ));
        // Reads that go back in time: 1 then 0 after a cas 0->1 completed.
        let h = [
            t(0, Some(10), Cas(0, 1)),
            t(1, Some(2), Read(1)),
            t(3, Some(4), Read(0)),
        ];
        assert!(matches!(
            search(0, &h, far()),
            Search::NotLinearizable { .. }
        ));
    }

    #[test]
    fn many_concurrent_operations_finish_quickly_thanks_to_the_cache() {
        use RegOp::*;
        // 12 concurrent writers of distinct values, then a read of one of them.
        let mut h: Vec<Timed> = (1..=12).map(|v| t(0, Some(100), Write(v))).collect();
        h.push(t(200, Some(201), Read(7)));
        assert_eq!(search(0, &h, far()), Search::Linearizable);
        h.push(t(300, Some(301), Read(99)));
        assert!(matches!(
            search(0, &h, far()),
            Search::NotLinearizable { .. }
        ));
    }

    #[test]
    fn the_checker_reads_the_history_format() {
        let op = |p: &str, kind, f: &str, v: serde_json::Value, time| {
            Op::new(p, kind, f).key("g1").value(v).at(time)
        };
        let good = vec![
            op("cas-0", Kind::Invoke, "init", json!({}), 0),
            op("cas-0", Kind::Ok, "init", json!({"value": 5}), 1),
            op("cas-1", Kind::Invoke, "cas", json!({"from": 5, "to": 6}), 2),
            op("cas-1", Kind::Ok, "cas", json!({"from": 5, "to": 6}), 3),
            op("cas-2", Kind::Invoke, "read", json!({}), 4),
            op("cas-2", Kind::Ok, "read", json!({"value": 6}), 5),
        ];
        assert_eq!(check(&good, Duration::from_secs(5)).verdict, Verdict::Valid);
        let mut bad = good.clone();
        bad[5] = op("cas-2", Kind::Ok, "read", json!({"value": 5}), 5);
        assert_eq!(
            check(&bad, Duration::from_secs(5)).verdict,
            Verdict::Invalid
        );
    }
}
