//! The SDK workers' hold intervals, and where two of them overlap: G1 says
//! at most one worker holds a partition at any real time, so any overlap of
//! two workers' intervals for one partition is a violation.
//!
//! History: for each process `worker-<id>` (key = group), `assigned` (value
//! `{"partitions": [[a, b], ...], "token"}`, inclusive ranges) when the
//! partitions became held; `released` (`{"partitions"}`) when they stopped
//! being held; `lease_lost` and `stopped` end every hold of the process.
//! Kind `info` or `ok`, both accepted.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::history::{Kind, Op};

/// One worker holding one partition, over `[from, to)` (ns).
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub process: String,
    pub group: String,
    pub partition: u32,
    pub token: Option<u64>,
    pub from: u64,
    pub to: u64,
    /// Nothing ended it: it runs to the end of the history.
    pub unended: bool,
}

/// Two different workers' holds of one partition, overlapping over
/// `[from, to)`.
#[derive(Debug)]
pub struct Overlap<'a> {
    pub a: &'a Hold,
    pub b: &'a Hold,
    pub from: u64,
    pub to: u64,
}

/// A group has at most this many partitions (as the node enforces).
const MAX_PARTITIONS: u32 = 65_536;

/// Inclusive ranges `[[a, b], ...]` as partitions. The history is untrusted
/// input: malformed ranges are skipped, and so are ranges past any group's
/// partitions, which could otherwise expand to billions of entries.
pub fn partitions(v: &Value) -> Vec<u32> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let a = u32::try_from(r.get(0)?.as_u64()?).ok()?;
            let b = u32::try_from(r.get(1)?.as_u64()?).ok()?;
            (b < MAX_PARTITIONS).then_some(a..=b)
        })
        .flatten()
        .collect()
}

/// Every hold interval in the history.
pub fn holds(ops: &[Op]) -> Vec<Hold> {
    // A hold that nothing ended lasted as long as the run did.
    let end = ops.iter().map(|o| o.time).max().unwrap_or(0);
    let mut by_process: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|o| {
        o.process.starts_with("worker-")
            && matches!(o.kind, Kind::Info | Kind::Ok)
            && matches!(
                o.f.as_str(),
                "assigned" | "released" | "lease_lost" | "stopped"
            )
    }) {
        by_process.entry(&op.process).or_default().push(op);
    }
    let mut out = Vec::new();
    for (process, mut list) in by_process {
        // A `lease_lost` or `released` is stamped with the instant the hold
        // really ended, which may precede ops recorded before it: replay by
        // time, not file order (stable, so ties keep the recorded order).
        list.sort_by_key(|o| o.time);
        // (group, partition) -> (from, token)
        let mut open: BTreeMap<(String, u32), (u64, Option<u64>)> = BTreeMap::new();
        let mut close = |(group, partition): (String, u32), (from, token), to, unended| {
            out.push(Hold {
                process: process.to_string(),
                group,
                partition,
                token,
                from,
                to,
                unended,
            });
        };
        for op in list {
            let group = op.key.clone().unwrap_or_default();
            match op.f.as_str() {
                "assigned" => {
                    for p in partitions(&op.value["partitions"]) {
                        // Assigned again while held: the hold goes on from
                        // its first start.
                        open.entry((group.clone(), p))
                            .or_insert((op.time, op.u64("token")));
                    }
                }
                "released" => {
                    for p in partitions(&op.value["partitions"]) {
                        if let Some(held) = open.remove(&(group.clone(), p)) {
                            close((group.clone(), p), held, op.time, false);
                        }
                    }
                }
                _ => {
                    for (k, held) in std::mem::take(&mut open) {
                        close(k, held, op.time, false);
                    }
                }
            }
        }
        for (k, held) in open {
            close(k, held, end, true);
        }
    }
    out
}

/// Every pair of different workers' holds of one partition that share some
/// instant: `[s1, e1)` and `[s2, e2)` overlap iff `max(s) < min(e)` (for
/// non-empty intervals the same as `s1 < e2 && s2 < e1`; a hold that ended
/// the instant it began held nothing).
pub fn overlaps(holds: &[Hold]) -> Vec<Overlap<'_>> {
    let mut by_partition: BTreeMap<(&str, u32), Vec<&Hold>> = BTreeMap::new();
    for h in holds {
        by_partition
            .entry((&h.group, h.partition))
            .or_default()
            .push(h);
    }
    let mut out = Vec::new();
    for list in by_partition.values_mut() {
        list.sort_by_key(|h| h.from);
        for (i, a) in list.iter().enumerate() {
            // Sorted by start: once one starts at or after `a` ends, so do
            // all the rest.
            for b in list[i + 1..].iter().take_while(|b| b.from < a.to) {
                let to = a.to.min(b.to);
                if a.process != b.process && b.from < to {
                    out.push(Overlap {
                        a,
                        b,
                        from: b.from,
                        to,
                    });
                }
            }
        }
    }
    out
}

/// Nanoseconds as milliseconds, for messages.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Overlap<'_> {
    pub fn problem(&self) -> String {
        let held = |h: &Hold| {
            let token = h
                .token
                .map_or_else(|| "no token".into(), |t| format!("token {t}"));
            let to = if h.unended {
                "the end of the history".to_string()
            } else {
                format!("{:.3} ms", ms(h.to))
            };
            format!(
                "{} ({token}) held it from {:.3} ms to {to}",
                h.process,
                ms(h.from)
            )
        };
        format!(
            "double ownership of {}/{}: {} and {}: both held it for {:.3} ms, from {:.3} to {:.3} ms",
            self.a.group,
            self.a.partition,
            held(self.a),
            held(self.b),
            ms(self.to - self.from),
            ms(self.from),
            ms(self.to)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MS: u64 = 1_000_000;

    fn op(process: &str, f: &str, value: Value, t: u64) -> Op {
        Op::new(process, Kind::Info, f)
            .key("work")
            .value(value)
            .at(t)
    }

    #[test]
    fn holds_end_at_release_lease_loss_stop_or_the_end_of_the_history() {
        let ops = vec![
            op(
                "worker-a",
                "assigned",
                json!({"partitions": [[0, 2]], "token": 5}),
                0,
            ),
            op(
                "worker-a",
                "released",
                json!({"partitions": [[1, 1]]}),
                10 * MS,
            ),
            op("worker-a", "lease_lost", Value::Null, 20 * MS),
            op(
                "worker-b",
                "assigned",
                json!({"partitions": [[3, 3]], "token": 9}),
                30 * MS,
            ),
            op(
                "worker-c",
                "assigned",
                json!({"partitions": [[4, 4]]}),
                31 * MS,
            ),
            op("worker-c", "stopped", json!({"how": "killed"}), 35 * MS),
            op("nemesis", "heal", Value::Null, 40 * MS),
        ];
        let mut spans: Vec<_> = holds(&ops)
            .into_iter()
            .map(|h| (h.process, h.partition, h.from / MS, h.to / MS, h.unended))
            .collect();
        spans.sort();
        assert_eq!(
            spans,
            vec![
                ("worker-a".into(), 0, 0, 20, false),
                ("worker-a".into(), 1, 0, 10, false),
                ("worker-a".into(), 2, 0, 20, false),
                ("worker-b".into(), 3, 30, 40, true),
                ("worker-c".into(), 4, 31, 35, false),
            ]
        );
    }

    #[test]
    fn one_process_holding_twice_and_touching_intervals_are_not_overlaps() {
        let h = |process: &str, from: u64, to: u64| Hold {
            process: process.into(),
            group: "work".into(),
            partition: 0,
            token: None,
            from,
            to,
            unended: false,
        };
        let list = vec![
            h("worker-a", 0, 10),
            h("worker-a", 5, 15),
            h("worker-b", 15, 20),
        ];
        assert!(overlaps(&list).is_empty());
        // An empty hold inside another's held nothing.
        assert!(overlaps(&[h("worker-a", 0, 10), h("worker-b", 5, 5)]).is_empty());
        let crossing = [h("worker-a", 0, 10), h("worker-b", 9, 20)];
        let found = overlaps(&crossing);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].from, found[0].to), (9, 10));
    }
}
