//! Load reports, as the leader keeps them: in memory, with the lease they
//! came with (see `leases.rs`), never in the log.
//!
//! The filter: each report is averaged with the worker's previous figure
//! for the same partition (an exponential moving average with weight ½),
//! which halves noise around a level; a report more than twice or less
//! than half the previous figure is a new level and replaces it (the hot
//! set moved: planning from a half-old figure would move the wrong
//! partitions, and the cooldown would then hold them where they went). A
//! partition the new report leaves out is dropped (the worker no longer
//! holds it, or no longer knows). A capacity replaces the last one. A new
//! leader starts with nothing and hears every worker within one keepalive
//! period; until then its rounds plan from what it has (the planner counts
//! an unreported partition as the mean of the reported ones).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::domain::load::{LoadRun, LoadSnapshot};
use crate::domain::Group;

pub use crate::domain::load::MAX_LOAD;

/// One keepalive's report, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Empty: no new figures (the last ones stand).
    pub loads: Vec<LoadRun>,
    pub capacity: Option<u64>,
}

/// What the leader keeps of one worker's reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Smoothed load per partition.
    loads: BTreeMap<u32, u64>,
    capacity: Option<u64>,
    /// When the last keepalive came (with new figures or none).
    at: Option<Instant>,
}

impl Reported {
    pub fn update(&mut self, report: Report) {
        // Every keepalive carries the worker's figures as they stand
        // (none new: the last ones stand), so each one makes them current.
        self.at = Some(Instant::now());
        if !report.loads.is_empty() {
            let mut next = BTreeMap::new();
            for run in report.loads {
                for p in run.partitions.start..run.partitions.end {
                    let smoothed = match self.loads.get(&p) {
                        Some(&old) if !is_new_level(old, run.load) => half_way(old, run.load),
                        _ => run.load,
                    };
                    next.insert(p, smoothed);
                }
            }
            self.loads = next;
        }
        if report.capacity.is_some() {
            self.capacity = report.capacity;
        }
    }

    /// Whether the worker's figures were current at `t` or later.
    pub fn reported_since(&self, t: Instant) -> bool {
        self.at.is_some_and(|at| at >= t)
    }

    pub fn is_empty(&self) -> bool {
        self.loads.is_empty() && self.capacity.is_none()
    }
}

/// Half-way from `old` to `new`, rounded towards `new` so that a steady
/// figure is reached, not approached forever one unit short.
fn half_way(old: u64, new: u64) -> u64 {
    if new >= old {
        old + (new - old).div_ceil(2)
    } else {
        old - (old - new).div_ceil(2)
    }
}

/// Whether `new` is more than twice or less than half of `old`.
fn is_new_level(old: u64, new: u64) -> bool {
    let (old, new) = (u128::from(old), u128::from(new));
    new > 2 * old || 2 * new < old
}

/// The snapshot a load round of group `g` plans from: each worker's
/// capacity, and per partition the figure of the worker that holds it (or
/// is receiving it) in `g` now. A partition whose holder has not reported
/// it yet (it just moved) keeps the figure its previous holder reported
/// (the load goes with the partition), the larger if several did; only a
/// partition nobody reported has none.
pub fn snapshot_of(g: &Group, reports: &[(String, Reported)]) -> LoadSnapshot {
    let partitions = g.assignment.partitions();
    let holder = |p: u32| {
        let slot = g.assignment.slot(p);
        slot.revoking
            .as_ref()
            .and_then(|r| r.to.as_deref())
            .or(slot.owner.as_deref())
    };
    let mut capacities = BTreeMap::new();
    let mut own: BTreeMap<u32, u64> = BTreeMap::new();
    let mut others: BTreeMap<u32, u64> = BTreeMap::new();
    for (worker, r) in reports {
        if let Some(c) = r.capacity {
            capacities.insert(worker.clone(), c);
        }
        for (&p, &load) in r.loads.iter().filter(|(&p, _)| p < partitions) {
            if holder(p) == Some(worker.as_str()) {
                own.insert(p, load);
            } else {
                let at = others.entry(p).or_insert(load);
                *at = (*at).max(load);
            }
        }
    }
    for (p, load) in others {
        own.entry(p).or_insert(load);
    }
    LoadSnapshot {
        capacities,
        loads: runs(own),
    }
}

/// Loads per partition as runs of consecutive partitions with one load.
fn runs(loads: BTreeMap<u32, u64>) -> Vec<LoadRun> {
    let mut runs: Vec<LoadRun> = Vec::new();
    for (p, load) in loads {
        match runs.last_mut() {
            Some(run) if run.partitions.end == p && run.load == load => run.partitions.end += 1,
            _ => runs.push(LoadRun {
                partitions: crate::domain::PartitionRange::new(p, p + 1),
                load,
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PartitionRange;

    fn run(start: u32, end: u32, load: u64) -> LoadRun {
        LoadRun {
            partitions: PartitionRange::new(start, end),
            load,
        }
    }

    /// A group of `owners.len()` partitions, partition p held by `owners[p]`.
    fn group(owners: &[&str]) -> Group {
        use crate::domain::{Assignment, GroupConfig, Slot};
        let n = owners.len() as u32;
        let mut assignment = Assignment::new(n);
        for (p, owner) in owners.iter().enumerate() {
            let p = p as u32;
            assignment.update(PartitionRange::new(p, p + 1), |_| Slot {
                owner: Some(owner.to_string()),
                ..Slot::default()
            });
        }
        let mut g = Group::new(
            GroupConfig {
                partitions: n,
                ..GroupConfig::default()
            },
            1,
        );
        g.assignment = assignment;
        g
    }

    #[test]
    fn each_report_is_averaged_with_the_last_and_left_out_partitions_drop() {
        let mut r = Reported::default();
        r.update(Report {
            loads: vec![run(0, 2, 100)],
            capacity: Some(1_000),
        });
        r.update(Report {
            loads: vec![run(1, 3, 200)],
            capacity: None,
        });
        let g = group(&["w", "w", "w"]);
        let snap = snapshot_of(&g, &[("w".into(), r.clone())]);
        assert_eq!(snap.loads, vec![run(1, 2, 150), run(2, 3, 200)]);
        assert_eq!(
            snap.capacities["w"], 1_000,
            "a report without capacity keeps it"
        );
        r.update(Report::default());
        assert_eq!(
            snapshot_of(&g, &[("w".into(), r)]),
            snap,
            "a keepalive without loads keeps them"
        );
    }

    #[test]
    fn a_step_of_more_than_twice_or_under_half_replaces_the_figure() {
        let g = group(&["w"]);
        let mut r = Reported::default();
        let mut figure = |load| {
            r.update(Report {
                loads: vec![run(0, 1, load)],
                capacity: None,
            });
            snapshot_of(&g, &[("w".into(), r.clone())]).loads[0].load
        };
        assert_eq!(figure(100), 100);
        assert_eq!(figure(180), 140, "noise around a level is averaged");
        assert_eq!(figure(141), 141, "and a steady figure is reached");
        assert_eq!(figure(140), 140);
        assert_eq!(figure(281), 281, "over twice the figure: a new level");
        assert_eq!(figure(140), 140, "under half: a new level");
        assert_eq!(figure(0), 0);
        assert_eq!(figure(0), 0);
        assert_eq!(figure(1), 1, "from nothing, anything is a new level");
    }

    #[test]
    fn a_snapshot_merges_equal_neighbours_and_keeps_capacities() {
        let mut a = Reported::default();
        a.update(Report {
            loads: vec![run(0, 3, 5)],
            capacity: None,
        });
        let mut b = Reported::default();
        b.update(Report {
            loads: vec![run(2, 4, 9)],
            capacity: Some(10),
        });
        let g = group(&["a", "a", "b", "b"]);
        let snap = snapshot_of(&g, &[("a".into(), a), ("b".into(), b)]);
        assert_eq!(snap.loads, vec![run(0, 2, 5), run(2, 4, 9)]);
        assert_eq!(snap.capacities.len(), 1);
    }

    #[test]
    fn a_partition_counts_with_its_holders_figure_or_else_its_previous_holders() {
        let g = group(&["a", "a", "b"]);
        let mut a = Reported::default();
        a.update(Report {
            loads: vec![run(0, 1, 5), run(2, 3, 50)],
            capacity: None,
        });
        let mut b = Reported::default();
        b.update(Report {
            loads: vec![run(0, 1, 99)],
            capacity: None,
        });
        let snap = snapshot_of(&g, &[("a".into(), a), ("b".into(), b)]);
        // 0: a holds it and reported 5 (b's 99 is not its to give); 1:
        // nobody reported; 2: b holds it but has not reported it yet, so
        // a's figure from before it gave it up stands.
        assert_eq!(snap.loads, vec![run(0, 1, 5), run(2, 3, 50)]);
    }
}
