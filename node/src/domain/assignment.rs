//! A group's assignment, stored as ranges: consecutive partitions in the same
//! state (same owner, token, handoff, reservation) form one range, so a group of
//! 65,536 partitions over 1,000 workers is about a thousand entries, not 65,536.

use serde::{Deserialize, Serialize};

/// Who may work on a partition and how it is moving.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// The worker holding the grant, if any.
    pub owner: Option<String>,
    /// Fencing token: the revision at which the owner was granted the partition.
    pub token: u64,
    /// Set while the owner is asked to give the partition up.
    pub revoking: Option<Revoking>,
    /// Set while an unowned partition is kept for a worker expected back
    /// (restart grace).
    pub reserved: Option<Reservation>,
}

/// A handoff in progress: the owner was told to drain and release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Revoking {
    /// Who gets the partition once released (`None`: whoever the next rebalance picks).
    pub to: Option<String>,
    /// Leader time (ms since the Unix epoch) at which the handoff started.
    pub since_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub worker: String,
    /// Leader time after which the reservation lapses.
    pub until_ms: u64,
}

impl Slot {
    pub fn is_free(&self) -> bool {
        self.owner.is_none()
    }

    /// Free and not kept for anybody at `now_ms`.
    pub fn is_grantable(&self, now_ms: u64) -> bool {
        self.owner.is_none() && self.reserved.as_ref().is_none_or(|r| r.until_ms <= now_ms)
    }
}

/// Half-open partition range `[start, end)`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionRange {
    pub start: u32,
    pub end: u32,
}

impl PartitionRange {
    pub fn new(start: u32, end: u32) -> Self {
        Self { start, end }
    }

    pub fn one(p: u32) -> Self {
        Self {
            start: p,
            end: p + 1,
        }
    }

    pub fn contains(&self, p: u32) -> bool {
        self.start <= p && p < self.end
    }

    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

impl std::fmt::Display for PartitionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.len() == 1 {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end.saturating_sub(1))
        }
    }
}

/// Merges sorted partition numbers into ranges.
pub fn ranges_of(partitions: impl IntoIterator<Item = u32>) -> Vec<PartitionRange> {
    let mut out: Vec<PartitionRange> = Vec::new();
    for p in partitions {
        match out.last_mut() {
            Some(last) if last.end == p => last.end = p + 1,
            _ => out.push(PartitionRange::one(p)),
        }
    }
    out
}

/// `ranges` sorted and merged: disjoint, in order, none empty, overlapping
/// and touching ones joined. A request may name the same partitions many
/// times over; after this, work done per range is bounded by the partition
/// count, not by the request.
pub fn normalized(mut ranges: Vec<PartitionRange>) -> Vec<PartitionRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_unstable();
    let mut out: Vec<PartitionRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The slots of partitions `0..partitions`, as runs of equal slots.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    partitions: u32,
    /// `(start, slot)`, sorted by start; the first starts at 0 and each run ends
    /// where the next starts (the last at `partitions`). Neighbours differ.
    runs: Vec<(u32, Slot)>,
}

impl Assignment {
    /// Every partition free.
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions,
            runs: vec![(0, Slot::default())],
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Number of runs (what a snapshot stores).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    fn run_end(&self, i: usize) -> u32 {
        self.runs.get(i + 1).map_or(self.partitions, |(s, _)| *s)
    }

    /// The slot of partition `p` (`p < partitions`).
    pub fn slot(&self, p: u32) -> &Slot {
        let i = self
            .runs
            .partition_point(|(start, _)| *start <= p)
            .saturating_sub(1);
        &self.runs[i].1
    }

    /// Every run as `(range, slot)`.
    pub fn runs(&self) -> impl Iterator<Item = (PartitionRange, &Slot)> + '_ {
        (0..self.runs.len()).map(|i| {
            (
                PartitionRange::new(self.runs[i].0, self.run_end(i)),
                &self.runs[i].1,
            )
        })
    }

    /// The runs that `ranges` (normalized) cover, cut to them, in order:
    /// one pass over both, so O(ranges + runs) whatever the ranges are.
    pub fn runs_within(&self, ranges: &[PartitionRange]) -> Vec<(PartitionRange, &Slot)> {
        let mut out = Vec::new();
        let mut runs = self.runs().peekable();
        for r in ranges {
            while let Some((run, slot)) = runs.peek() {
                if run.end <= r.start {
                    runs.next();
                    continue;
                }
                if run.start >= r.end {
                    break;
                }
                let cut = PartitionRange::new(run.start.max(r.start), run.end.min(r.end));
                out.push((cut, *slot));
                if run.end > r.end {
                    break;
                }
                runs.next();
            }
        }
        out
    }

    /// Replaces the slot of every partition in `range` with `f(old slot)`.
    pub fn update(&mut self, range: PartitionRange, f: impl FnMut(&Slot) -> Slot) {
        self.update_ranges(&[range], f);
    }

    /// Replaces the slot of every partition in `ranges` with `f(old slot)`,
    /// in one pass over the runs: an event naming thousands of ranges costs
    /// O(ranges + runs), not O(ranges × runs), on every replica.
    pub fn update_ranges(&mut self, ranges: &[PartitionRange], mut f: impl FnMut(&Slot) -> Slot) {
        let clamped = ranges
            .iter()
            .map(|r| PartitionRange::new(r.start.min(self.partitions), r.end.min(self.partitions)));
        let ranges = normalized(clamped.collect());
        if ranges.is_empty() {
            return;
        }
        let mut out: Vec<(u32, Slot)> = Vec::with_capacity(self.runs.len() + 2 * ranges.len());
        let mut next = 0;
        for i in 0..self.runs.len() {
            let (mut start, end) = (self.runs[i].0, self.run_end(i));
            let slot = &self.runs[i].1;
            while start < end {
                while ranges.get(next).is_some_and(|r| r.end <= start) {
                    next += 1;
                }
                match ranges.get(next) {
                    Some(r) if r.start < end => {
                        if start < r.start {
                            push_run(&mut out, start, slot.clone());
                            start = r.start;
                        }
                        push_run(&mut out, start, f(slot));
                        start = r.end.min(end);
                    }
                    _ => {
                        push_run(&mut out, start, slot.clone());
                        start = end;
                    }
                }
            }
        }
        self.runs = out;
    }

    /// Doubles the partition count: run `[a, b)` becomes `[2a, 2b)` with the
    /// same slot, so each partition's two children keep its state.
    pub fn split(&mut self) {
        self.partitions *= 2;
        for (start, _) in &mut self.runs {
            *start *= 2;
        }
    }

    /// Partitions whose slot satisfies `pred`, as ranges.
    pub fn find(&self, mut pred: impl FnMut(&Slot) -> bool) -> Vec<PartitionRange> {
        let mut out: Vec<PartitionRange> = Vec::new();
        for (range, slot) in self.runs() {
            if pred(slot) {
                match out.last_mut() {
                    Some(last) if last.end == range.start => last.end = range.end,
                    _ => out.push(range),
                }
            }
        }
        out
    }
}

fn push_run(out: &mut Vec<(u32, Slot)>, start: u32, slot: Slot) {
    if out.last().is_some_and(|(_, last)| *last == slot) {
        return;
    }
    out.push((start, slot));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(w: &str, token: u64) -> Slot {
        Slot {
            owner: Some(w.into()),
            token,
            ..Slot::default()
        }
    }

    #[test]
    fn updates_split_and_merge_runs() {
        let mut a = Assignment::new(10);
        a.update(PartitionRange::new(2, 5), |_| owned("w1", 3));
        assert_eq!(a.run_count(), 3);
        assert_eq!(a.slot(1), &Slot::default());
        assert_eq!(a.slot(2), &owned("w1", 3));
        assert_eq!(a.slot(4), &owned("w1", 3));
        assert_eq!(a.slot(5), &Slot::default());
        a.update(PartitionRange::new(5, 10), |_| owned("w1", 3));
        assert_eq!(a.run_count(), 2, "equal neighbours merge");
        a.update(PartitionRange::new(0, 10), |_| Slot::default());
        assert_eq!(a, Assignment::new(10));
    }

    #[test]
    fn many_ranges_update_in_one_pass_as_one_at_a_time_would() {
        let ranges: Vec<PartitionRange> = (0..50)
            .map(|i| PartitionRange::new(i * 2, i * 2 + 1))
            .collect();
        let mut at_once = Assignment::new(100);
        at_once.update(PartitionRange::new(10, 60), |_| owned("a", 1));
        let mut one_by_one = at_once.clone();
        at_once.update_ranges(&ranges, |s| Slot {
            token: s.token + 5,
            ..s.clone()
        });
        for r in &ranges {
            one_by_one.update(*r, |s| Slot {
                token: s.token + 5,
                ..s.clone()
            });
        }
        assert_eq!(at_once, one_by_one);
        assert_eq!(at_once.slot(10).token, 6);
        assert_eq!(at_once.slot(11).token, 1);
        assert_eq!(at_once.slot(0).token, 5);
    }

    #[test]
    fn ranges_normalize_and_runs_within_cut_runs_to_them() {
        let r = PartitionRange::new;
        let ranges = normalized(vec![r(5, 9), r(0, 2), r(1, 3), r(9, 10), r(0, 10), r(4, 4)]);
        assert_eq!(ranges, vec![r(0, 10)]);
        assert_eq!(
            normalized(vec![r(6, 8), r(0, 2), r(1, 3)]),
            vec![r(0, 3), r(6, 8)]
        );
        let mut a = Assignment::new(10);
        a.update(r(2, 6), |_| owned("w", 1));
        let within: Vec<(PartitionRange, Option<&str>)> = a
            .runs_within(&[r(1, 3), r(5, 8)])
            .into_iter()
            .map(|(range, s)| (range, s.owner.as_deref()))
            .collect();
        assert_eq!(
            within,
            vec![
                (r(1, 2), None),
                (r(2, 3), Some("w")),
                (r(5, 6), Some("w")),
                (r(6, 8), None)
            ]
        );
    }

    #[test]
    fn split_keeps_each_partitions_state_in_both_children() {
        let mut a = Assignment::new(4);
        a.update(PartitionRange::new(1, 3), |_| owned("w", 7));
        a.split();
        assert_eq!(a.partitions(), 8);
        let owners: Vec<Option<String>> = (0..8).map(|p| a.slot(p).owner.clone()).collect();
        let w = Some("w".to_string());
        assert_eq!(
            owners,
            vec![None, None, w.clone(), w.clone(), w.clone(), w, None, None]
        );
    }

    #[test]
    fn ranges_display_inclusive() {
        assert_eq!(
            ranges_of([0, 1, 2, 5, 7, 8]),
            vec![
                PartitionRange::new(0, 3),
                PartitionRange::new(5, 6),
                PartitionRange::new(7, 9)
            ]
        );
        assert_eq!(PartitionRange::new(0, 120).to_string(), "0-119");
        assert_eq!(PartitionRange::one(4).to_string(), "4");
    }
}
