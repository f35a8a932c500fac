//! Load: what workers report about the work behind their partitions, and
//! the rules a group balances it by.
//!
//! A load figure is a plain number in a unit the group chooses (connected
//! users, messages per second, CPU ms per second); baton only compares and
//! adds them. A worker's capacity is in the same unit. The leader keeps the
//! reports in memory (never in the log) and commits a [`LoadSnapshot`] with
//! each round of moves it plans from them, so every replica, and every
//! replay of the log, decides the same moves from the same figures.
//!
//! All arithmetic is on integers: ratios are compared by cross
//! multiplication in `u128`, so no rounding or platform differs between
//! replicas.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::assignment::PartitionRange;
use super::error::{invalid, DomainError};

/// A load figure or capacity at most this large (2^40), so that sums over
/// every partition and products with capacities stay within `u128`.
pub const MAX_LOAD: u64 = 1 << 40;

/// The load figures a round of moves was planned from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadSnapshot {
    /// Each reporting worker's capacity, in the group's load unit.
    pub capacities: BTreeMap<String, u64>,
    /// Reported load per partition, as runs: every partition of a run
    /// carries `load`. Partitions in no run have no report.
    pub loads: Vec<LoadRun>,
}

/// Partitions that each carry the same load.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LoadRun {
    pub partitions: PartitionRange,
    pub load: u64,
}

impl LoadSnapshot {
    /// Refuses figures no leader sends: loads or capacities over
    /// [`MAX_LOAD`], a capacity of 0, runs outside the group's partitions.
    pub fn validate(&self, partitions: u32) -> Result<(), DomainError> {
        if self.loads.len() > partitions as usize {
            return Err(invalid(
                "load snapshot runs",
                self.loads.len(),
                format!("at most the group's {partitions} partitions"),
            ));
        }
        for run in &self.loads {
            let r = run.partitions;
            if r.start >= r.end || r.end > partitions {
                return Err(invalid(
                    "load snapshot partitions",
                    format!("{}..{}", r.start, r.end),
                    format!("a range within the group's {partitions} partitions"),
                ));
            }
            if run.load > MAX_LOAD {
                return Err(invalid("load", run.load, format!("at most {MAX_LOAD}")));
            }
        }
        for (worker, &c) in &self.capacities {
            if c == 0 || c > MAX_LOAD {
                return Err(invalid(
                    "capacity",
                    format!("{c} (worker {worker:?})"),
                    format!("1 to {MAX_LOAD}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether anything was reported at all.
    pub fn is_empty(&self) -> bool {
        self.loads.is_empty()
    }

    /// The load of each of `count` partitions. A partition nobody reported
    /// (free, or held by a worker that sends no figures) counts as the mean
    /// of the reported ones: neither free to pile up nor assumed hot. `None`
    /// when no partition has a report.
    pub fn per_partition(&self, count: u32) -> Option<Vec<u64>> {
        let mut loads: Vec<Option<u64>> = vec![None; count as usize];
        for run in &self.loads {
            let end = run.partitions.end.min(count);
            for p in run.partitions.start.min(end)..end {
                loads[p as usize] = Some(run.load);
            }
        }
        let known: Vec<u64> = loads.iter().flatten().copied().collect();
        if known.is_empty() {
            return None;
        }
        let sum: u128 = known.iter().map(|&l| u128::from(l)).sum();
        let mean = (sum / known.len() as u128) as u64;
        Some(loads.into_iter().map(|l| l.unwrap_or(mean)).collect())
    }

    /// Each worker's capacity, for `workers` (id, weight) in order. A
    /// worker that reported none counts as its weight times the reporting
    /// workers' mean capacity per unit of weight, so a fleet that reports
    /// capacities for some workers only still compares like with like; when
    /// nobody reports one, capacity is the weight. Never 0.
    pub fn capacities(&self, workers: &[(&String, u32)]) -> Vec<u64> {
        let (mut reported, mut weight) = (0u128, 0u128);
        for (id, w) in workers {
            if let Some(&c) = self.capacities.get(*id) {
                reported += u128::from(c);
                weight += u128::from(*w);
            }
        }
        workers
            .iter()
            .map(|(id, w)| match self.capacities.get(*id) {
                Some(&c) => c.clamp(1, MAX_LOAD),
                None if weight > 0 => {
                    ((u128::from(*w) * reported / weight).min(u128::from(MAX_LOAD)) as u64).max(1)
                }
                None => u64::from(*w).max(1),
            })
            .collect()
    }

    /// Whether any worker reported a capacity (a scaling recommendation
    /// needs real capacities, not weights).
    pub fn has_capacities(&self) -> bool {
        !self.capacities.is_empty()
    }
}

/// How a group balances by load: its config, with the defaults in
/// [`LoadRules::default`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LoadRules {
    /// Act only when the most loaded worker's utilisation (load ÷
    /// capacity) exceeds the mean by this factor, in thousandths (1100:
    /// 1.10). A round then aims half-way into the band (1.05), so the next
    /// small drift does not start another.
    pub threshold_milli: u32,
    /// At most this many partitions moved per round (default 4,096: as a
    /// rule the load share below binds first; isolating a hot partition
    /// moves every other partition off its worker. Lower it for workers
    /// whose handoff cost is per partition rather than per unit of load)...
    pub max_moves: u32,
    /// ...carrying at most this share of the group's load, in thousandths
    /// (50: 5%).
    pub max_load_milli: u32,
    /// A partition that moved is not moved for balance again within this.
    pub cooldown_ms: u64,
    /// Handoffs in flight per worker, given or received, at most.
    pub max_moves_per_worker: u32,
    /// The utilisation the scaling recommendation sizes the group for, in
    /// thousandths of capacity (700: 70%).
    pub target_utilisation_milli: u32,
}

impl Default for LoadRules {
    fn default() -> Self {
        Self {
            threshold_milli: 1_100,
            max_moves: 4_096,
            max_load_milli: 50,
            cooldown_ms: 60_000,
            max_moves_per_worker: 4,
            target_utilisation_milli: 700,
        }
    }
}

impl LoadRules {
    pub fn validate(&self) -> Result<(), DomainError> {
        fn within(
            what: &'static str,
            value: u64,
            low: u64,
            high: u64,
            unit: &str,
        ) -> Result<(), DomainError> {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(invalid(what, value, format!("{low} to {high}{unit}")))
            }
        }
        within(
            "load threshold (thousandths of the mean)",
            u64::from(self.threshold_milli),
            1_000,
            10_000,
            "",
        )?;
        within("moves per round", u64::from(self.max_moves), 1, 65_536, "")?;
        within(
            "load moved per round (thousandths of the total)",
            u64::from(self.max_load_milli),
            1,
            1_000,
            "",
        )?;
        within("load cooldown", self.cooldown_ms, 0, 86_400_000, " ms")?;
        within(
            "handoffs in flight per worker",
            u64::from(self.max_moves_per_worker),
            1,
            65_536,
            "",
        )?;
        within(
            "target utilisation (thousandths of capacity)",
            u64::from(self.target_utilisation_milli),
            1,
            1_000,
            "",
        )
    }
}

/// A group that balances by load, in the replicated state: its rules, and
/// when each partition last started a handoff (leader time), for the
/// cooldown. Entries older than the cooldown are dropped as handoffs start.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupLoad {
    pub rules: LoadRules,
    pub moved_at: BTreeMap<u32, u64>,
}

impl GroupLoad {
    pub fn new(rules: LoadRules) -> Self {
        Self {
            rules,
            moved_at: BTreeMap::new(),
        }
    }

    /// Records that `partitions` started a handoff at `since_ms`.
    pub(crate) fn handoff_started(&mut self, partitions: &[PartitionRange], since_ms: u64) {
        let horizon = since_ms.saturating_sub(self.rules.cooldown_ms);
        self.moved_at.retain(|_, at| *at > horizon);
        for range in partitions {
            for p in range.start..range.end {
                let at = self.moved_at.entry(p).or_insert(since_ms);
                *at = (*at).max(since_ms);
            }
        }
    }
}
