//! Part of (2) revision order: linearizable tombstone checks are not
//! stale. A check invoked after a put was acknowledged must see that
//! tombstone, and must answer at a revision no lower than that of any
//! write acknowledged before it was invoked: revisions are global, so a
//! lower one means it read a state from before a write it must follow.

use std::collections::BTreeMap;

use super::holds::ms;
use super::revisions::Write;
use super::truth::GroundTruth;
use crate::history::{pairs, Kind, Op, Pair};

/// The acknowledged write with the highest revision among those completed
/// before a given time.
pub(super) struct Highest<'a> {
    /// Completion times, ascending.
    completed: Vec<u64>,
    /// `best[i]`: the highest-revision write among the first `i + 1`
    /// completed.
    best: Vec<&'a Write>,
}

impl<'a> Highest<'a> {
    pub(super) fn new(writes: &'a [Write]) -> Self {
        let mut by_completion: Vec<&Write> = writes.iter().collect();
        by_completion.sort_by_key(|w| w.2);
        let mut best: Vec<&Write> = Vec::with_capacity(by_completion.len());
        for w in &by_completion {
            let top = best.last().copied().filter(|b| b.0 >= w.0).unwrap_or(w);
            best.push(top);
        }
        Self {
            completed: by_completion.iter().map(|w| w.2).collect(),
            best,
        }
    }

    /// Among writes completed strictly before `t`.
    pub(super) fn before(&self, t: u64) -> Option<&'a Write> {
        let n = self.completed.partition_point(|c| *c < t);
        n.checked_sub(1).map(|i| self.best[i])
    }
}

pub(super) struct Stale {
    pub checked: usize,
    pub problems: Vec<String>,
}

/// Linearizable tombstone checks that missed an earlier acknowledged put,
/// or answered at a revision below an earlier acknowledged write.
/// Serializable checks may be served stale from a replica: exempt.
pub(super) fn stale_checks(
    ops: &[Op],
    highest: &Highest<'_>,
    truth: Option<&GroundTruth>,
) -> Stale {
    // (group, key) -> (completion time, revision) of its acknowledged put
    let mut puts: BTreeMap<(&str, &str), (u64, Option<u64>)> = BTreeMap::new();
    for p in pairs(ops, |o| o.f == "put") {
        let (Some(done), Some(group), Some(key)) = (
            p.complete.filter(|c| c.kind == Kind::Ok),
            p.invoke.value["group"].as_str(),
            p.invoke.key.as_deref(),
        ) else {
            continue;
        };
        puts.entry((group, key))
            .and_modify(|e| {
                if done.time < e.0 {
                    *e = (done.time, done.u64("revision"));
                }
            })
            .or_insert((done.time, done.u64("revision")));
    }
    let mut out = Stale {
        checked: 0,
        problems: Vec::new(),
    };
    for p in pairs(ops, |o| o.f == "check") {
        let Some(done) = p.complete.filter(|c| c.kind == Kind::Ok) else {
            continue;
        };
        if serializable(&p) {
            continue;
        }
        let Some(group) = p.invoke.key.as_deref() else {
            continue;
        };
        out.checked += 1;
        let who = format!(
            "linearizable check of {group} by {} (invoked at {:.3} ms)",
            p.invoke.process,
            ms(p.invoke.time)
        );
        let at = done.u64("revision");
        if let (Some(at), Some(h)) = (at, highest.before(p.invoke.time)) {
            if at < h.0 {
                out.problems.push(format!(
                    "stale {who}: answered at revision {at}, but {} was acknowledged at revision {} at {:.3} ms, before the check began",
                    h.3,
                    h.0,
                    ms(h.2)
                ));
            }
        }
        let Some(results) = done.value["deleted"].as_object() else {
            continue;
        };
        for (key, _) in results.iter().filter(|(_, d)| d.as_bool() == Some(false)) {
            let Some((acked, revision)) = puts.get(&(group, key.as_str())) else {
                continue;
            };
            if *acked >= p.invoke.time || purged(truth, group, key, at) {
                continue;
            }
            let revision = revision.map_or_else(String::new, |r| format!(" at revision {r}"));
            out.problems.push(format!(
                "stale {who}: said {key} has no tombstone, but its put was acknowledged{revision} at {:.3} ms, before the check began",
                ms(*acked)
            ));
        }
    }
    out
}

/// Whether the check asked to be served from the local replica.
fn serializable(p: &Pair<'_>) -> bool {
    p.invoke.value["serializable"] == true
}

/// Whether the ground truth shows `key`'s tombstone purged (expired) by
/// revision `at` (by any revision, if the check did not say which), so a
/// check may rightly no longer see it.
fn purged(truth: Option<&GroundTruth>, group: &str, key: &str, at: Option<u64>) -> bool {
    truth.and_then(|t| t.groups.get(group)).is_some_and(|s| {
        s.events.iter().any(|e| {
            e.detail["k"] == "purged"
                && e.detail["key"].as_str() == Some(key)
                && at.is_none_or(|at| e.revision <= at)
        })
    })
}
