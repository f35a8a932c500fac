//! The load planner: the rebalancer's rules when workers report load.
//!
//! Pure and deterministic like the count rules: the same group, time,
//! [`LoadSnapshot`] and cooldowns give the same moves on every replica.
//! Utilisation is a worker's load ÷ its capacity; the mean is the load
//! ÷ the capacity of the workers it is shared by. A round:
//!
//! 1. places what needs a holder (free partitions, a draining worker's, a
//!    handoff whose recipient left), heaviest first, each on the worker it
//!    leaves least utilised — the count rules' duty, done by load;
//! 2. isolates the hot partitions and evens out the rest (`even_out.rs`):
//!    only when a worker holding a hot partition holds anything else, or
//!    a worker's utilisation is off the mean of the load that is not hot
//!    by more than the threshold (either way: a worker that just joined
//!    starts a round too). Moves go to the least utilised worker and fill
//!    it no further than half-way into the band, so the next small drift
//!    starts no round; no move raises the maximum. Never moved for
//!    balance: a partition in a handoff, one that moved within the
//!    cooldown. Within a budget of partitions and share of the load per
//!    round, and of handoffs per worker at once (a handoff: what goes from
//!    one worker to one other, however many partitions).
//!
//! A *hot* partition carries more than the mean share of what the other
//! workers carry (water-filling from the heaviest: more than an equal
//! share of the total, then of what is left over the workers left, and so
//! on): no placement can balance it, so it is best alone on a worker,
//! which is left out of the mean the others are balanced to. The advice
//! is to split the group.
//!
//! Equal loads carry no information beyond counts: when every partition
//! reports the same load and capacities follow weights, the count rules
//! decide, with their contiguous ranges and fewest moves.

use std::collections::BTreeMap;

mod balance;
mod even_out;

use super::{plan, plan_surveyed, Moved, Plan, Survey};
use crate::domain::load::{LoadRules, LoadSnapshot};
use crate::domain::{Group, State};
use balance::Balance;

/// What the load planner decided for one group, and the figures behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadPlan {
    pub plan: Plan,
    /// Partitions too heavy to share a worker (see the module's notes).
    pub hot: Vec<u32>,
    /// The most utilised worker's utilisation ÷ the mean, in thousandths,
    /// now and once the plan's moves complete (workers that hold a hot
    /// partition alone left out); 0 without reported load.
    pub before_milli: u64,
    pub after_milli: u64,
    /// Partitions given a holder by placement (free ones, a leaver's, a
    /// handoff whose recipient left), not to balance.
    pub placed: u32,
    /// Partitions moved off a hot partition's worker (or a hot partition
    /// off a worker holding a heavier one).
    pub isolated: u32,
    /// Load the plan's balancing moves carry, and the group's total.
    pub moved_load: u64,
    pub total_load: u64,
    /// Each active worker's load (held or on its way) and capacity before
    /// the plan, in id order; empty without reported load.
    pub workers: Vec<WorkerLoad>,
    /// Workers of the mean capacity that the load needs at the target
    /// utilisation (each hot partition needs one of its own); `None` when
    /// no worker reported a capacity.
    pub recommended_workers: Option<u32>,
}

impl LoadPlan {
    /// The partitions the plan moves, by why.
    pub fn moved(&self) -> Moved {
        let total = self.plan.partitions();
        let placed = u64::from(self.placed).min(total);
        let isolated = u64::from(self.isolated).min(total - placed);
        Moved {
            placed,
            isolated,
            balanced: total - placed - isolated,
        }
    }
}

/// One worker's figures in a [`LoadPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerLoad {
    pub worker: String,
    pub load: u64,
    pub capacity: u64,
}

/// Plans by load when `snapshot` has any, by count otherwise. `moved_at`:
/// when each partition last started a handoff (leader time), for the
/// cooldown. Under equal loads the count rules' plan comes back with the
/// figures of the group as it stands (`after_milli` = `before_milli`).
///
/// `place_only`: the figures may be incomplete (a leader that has not yet
/// heard every worker): only what needs a holder is placed (by load, or
/// one partition each without figures), nothing is moved to balance, and
/// the count rules never stand in.
pub fn plan_by_load(
    group: &Group,
    now_ms: u64,
    snapshot: &LoadSnapshot,
    rules: &LoadRules,
    moved_at: &BTreeMap<u32, u64>,
    place_only: bool,
) -> LoadPlan {
    if group.frozen || group.deleting {
        return LoadPlan::default();
    }
    let survey = Survey::of(group, now_ms);
    let by_count = || count_round(group, now_ms);
    let p_count = group.assignment.partitions();
    let loads = match snapshot.per_partition(p_count) {
        Some(loads) => loads,
        None if place_only => vec![1; p_count as usize],
        None => return by_count(),
    };
    if survey.workers.is_empty() {
        return if place_only {
            LoadPlan::default()
        } else {
            by_count()
        };
    }
    let capacity = snapshot.capacities(&survey.workers);
    let mut balance = Balance::new(&survey, &loads, capacity);
    let before_milli = balance.max_over_mean();
    let workers: Vec<WorkerLoad> = survey
        .workers
        .iter()
        .enumerate()
        .map(|(i, (id, _))| WorkerLoad {
            worker: (*id).clone(),
            load: balance.load[i],
            capacity: balance.capacity[i],
        })
        .collect();
    let recommended_workers = snapshot
        .has_capacities()
        .then(|| balance.recommended(rules.target_utilisation_milli));
    let hot = balance.hot();
    if !place_only && uniform(&loads) && follows_weights(&balance.capacity, &survey.workers) {
        let counted = by_count();
        return LoadPlan {
            hot,
            workers,
            before_milli,
            after_milli: before_milli,
            total_load: balance.total,
            recommended_workers,
            ..counted
        };
    }

    let mut budget = u64::from(group.config.max_in_flight).saturating_sub(survey.in_flight);
    balance.place(&survey, &mut budget);
    // One balancing round at a time: the next plans from the figures after
    // the last one's handoffs completed.
    if !place_only && survey.in_flight == 0 {
        balance.even_out(rules, &mut budget, |p| {
            moved_at
                .get(&p)
                .is_some_and(|&at| now_ms < at.saturating_add(rules.cooldown_ms))
        });
    }
    let (after_milli, moved_load, total_load, placed, isolated) = (
        balance.max_over_mean(),
        balance.moved_load,
        balance.total,
        balance.placed,
        balance.isolated,
    );
    LoadPlan {
        placed,
        isolated,
        plan: balance.moves(&survey),
        hot,
        workers,
        before_milli,
        after_milli,
        moved_load,
        total_load,
        recommended_workers,
    }
}

/// The count rules' round for `group`, as a [`LoadPlan`] without figures.
pub fn count_round(group: &Group, now_ms: u64) -> LoadPlan {
    let survey = Survey::of(group, now_ms);
    let needs: Vec<bool> = survey.standing.iter().map(|s| s.needs_holder()).collect();
    let plan = plan_surveyed(group, survey);
    // Placed: what the plan moves that needed a holder.
    let placed = plan
        .ranges()
        .flat_map(|r| r.start..r.end)
        .filter(|&p| needs[p as usize])
        .count() as u32;
    LoadPlan {
        plan,
        placed,
        ..LoadPlan::default()
    }
}

/// The round the leader would carry out for group `name` (`g`) of `state`
/// now, and whether it is the load planner's. A group balanced by count
/// still gets its load figures (under the default rules) for the picture;
/// its plan is the count rules'.
pub fn round_for(
    state: &State,
    name: &str,
    g: &Group,
    now_ms: u64,
    snapshot: &LoadSnapshot,
) -> (LoadPlan, bool) {
    match state.load.get(name) {
        Some(load) => (
            plan_by_load(g, now_ms, snapshot, &load.rules, &load.moved_at, false),
            true,
        ),
        None => {
            let rules = LoadRules::default();
            let figures = plan_by_load(g, now_ms, snapshot, &rules, &BTreeMap::new(), false);
            let plan = LoadPlan {
                plan: plan(g, now_ms),
                ..figures
            };
            (plan, false)
        }
    }
}

fn uniform(loads: &[u64]) -> bool {
    loads.windows(2).all(|w| w[0] == w[1])
}

/// Whether capacity ÷ weight is the same for every worker.
fn follows_weights(capacity: &[u64], workers: &[(&String, u32)]) -> bool {
    let (c0, w0) = (u128::from(capacity[0]), u128::from(workers[0].1));
    capacity
        .iter()
        .zip(workers)
        .all(|(&c, (_, w))| u128::from(c) * w0 == c0 * u128::from(*w))
}
