//! The load planner: the rebalancer's rules when workers report load.
//!
//! Pure and deterministic like the count rules: the same group, time,
//! [`LoadSnapshot`] and cooldowns give the same moves on every replica.
//! Utilisation is a worker's load ÷ its capacity; the mean is the group's
//! total load ÷ total capacity. A round:
//!
//! 1. places what needs a holder (free partitions, a draining worker's, a
//!    handoff whose recipient left), heaviest first, each on the worker it
//!    leaves least utilised — the count rules' duty, done by load;
//! 2. if the most utilised worker exceeds the mean by more than the
//!    threshold (or the least utilised falls as far below it: a worker
//!    that just joined), moves load off the most utilised worker, one
//!    partition at a time, to the least utilised one, until both are
//!    half-way into the band (so the next small drift does not start
//!    another round) or a budget runs out. Each move must leave both workers below the giver's
//!    utilisation before it, so no move raises the maximum; of the
//!    partitions that qualify it takes the one that brings the giver
//!    closest to the mean (few moves), then the lightest (small moves).
//!    Never moved for balance: a partition in a handoff, one that moved
//!    within the cooldown. A worker takes part in at most its quota of
//!    handoffs at once (a handoff: what goes from one worker to one other,
//!    however many partitions).
//!
//! A *hot* partition carries more than the mean share of what the other
//! workers carry (water-filling from the heaviest: more than an equal
//! share of the total, then of what is left over the workers left, and so
//! on): no placement can balance it. The load budget
//! of a round keeps it where it is (it alone is more than a round may
//! move, as a rule), so the balancing moves take its holder's other
//! partitions away; the worker that holds it alone is left out of the mean
//! the others are balanced to. The advice is to split the group.
//!
//! Equal loads carry no information beyond counts: when every partition
//! reports the same load and capacities follow weights, the count rules
//! decide, with their contiguous ranges and fewest moves.

use std::collections::{BTreeMap, BTreeSet};

use super::{plan, ranges_of, Move, Plan, Standing, Survey, NONE};
use crate::domain::load::{LoadRules, LoadSnapshot};
use crate::domain::{Group, State};

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
    let by_count = || LoadPlan {
        plan: plan(group, now_ms),
        placed: survey
            .standing
            .iter()
            .filter(|s| matches!(s, Standing::Free | Standing::MustMove | Standing::Adrift))
            .count() as u32,
        ..LoadPlan::default()
    };
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
    let (after_milli, moved_load, total_load, placed) = (
        balance.max_over_mean(),
        balance.moved_load,
        balance.total,
        balance.placed,
    );
    LoadPlan {
        placed,
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

/// The planner's working figures, per active worker (by survey index).
struct Balance<'s> {
    /// Active workers' ids, by survey index.
    names: Vec<&'s str>,
    loads: &'s [u64],
    capacity: Vec<u64>,
    /// Load held or on its way, per worker.
    load: Vec<u64>,
    /// Partitions held and not moving, per worker, ascending.
    held: Vec<Vec<u32>>,
    /// Partitions held or on their way, per worker.
    count: Vec<u32>,
    /// Handoffs in flight, given or received, per worker: one per worker
    /// on the other side, however many partitions go between the two.
    busy: Vec<u32>,
    /// The (giver, recipient) pairs those handoffs are between; a giver
    /// that is not active (draining) is `None`.
    pairs: BTreeSet<(Option<usize>, usize)>,
    total: u64,
    grants: Vec<Vec<u32>>,
    /// (giver's name, recipient) → partitions.
    revokes: BTreeMap<(&'s str, Option<usize>), Vec<u32>>,
    moved_load: u64,
    /// Partitions placed in step 1.
    placed: u32,
    /// See [`Balance::hot_floor`].
    hot_floor: u64,
}

impl<'s> Balance<'s> {
    fn new(survey: &Survey<'s>, loads: &'s [u64], capacity: Vec<u64>) -> Self {
        let n = survey.workers.len();
        let mut b = Balance {
            names: survey.workers.iter().map(|(w, _)| w.as_str()).collect(),
            loads,
            capacity,
            load: vec![0; n],
            held: vec![Vec::new(); n],
            count: vec![0; n],
            busy: vec![0; n],
            pairs: BTreeSet::new(),
            total: 0,
            grants: vec![Vec::new(); n],
            revokes: BTreeMap::new(),
            moved_load: 0,
            placed: 0,
            hot_floor: Self::hot_floor(loads, n),
        };
        for (p, &d) in survey.dest.iter().enumerate() {
            if d == NONE {
                continue;
            }
            let d = d as usize;
            b.load[d] = b.load[d].saturating_add(loads[p]);
            b.count[d] += 1;
            if survey.standing[p] == Standing::Held {
                b.held[d].push(p as u32);
            } else {
                let giver = b.giver_of(survey, p as u32);
                b.pair(giver, d);
            }
        }
        b.total = loads.iter().fold(0u64, |t, &l| t.saturating_add(l));
        b
    }

    /// The active worker (by index) that holds partition `p`, if any.
    fn giver_of(&self, survey: &Survey<'s>, p: u32) -> Option<usize> {
        let name = *survey
            .owner_names
            .get(survey.owner_of[p as usize] as usize)?;
        self.names.binary_search(&name).ok()
    }

    /// Counts a handoff between `giver` and `recipient`, unless one between
    /// them is counted already.
    fn pair(&mut self, giver: Option<usize>, recipient: usize) {
        if self.pairs.insert((giver, recipient)) {
            self.busy[recipient] += 1;
            if let Some(g) = giver {
                self.busy[g] += 1;
            }
        }
    }

    /// Whether worker `a`'s utilisation with load `la` is below `b`'s with `lb`.
    fn below(&self, a: usize, la: u64, b: usize, lb: u64) -> bool {
        u128::from(la) * u128::from(self.capacity[b])
            < u128::from(lb) * u128::from(self.capacity[a])
    }

    /// The partitions carrying more than an equal share of the load.
    fn hot(&self) -> Vec<u32> {
        (0..self.loads.len() as u32)
            .filter(|&p| self.loads[p as usize] >= self.hot_floor)
            .collect()
    }

    /// The smallest load of a hot partition (`u64::MAX` when none is):
    /// water-filling from the heaviest down, a partition is hot while it
    /// carries more than the mean of what is left over the workers left.
    /// Such a partition overloads any worker it shares, so it is best
    /// alone; the next one is then measured against the others only.
    fn hot_floor(loads: &[u64], workers: usize) -> u64 {
        let mut sorted: Vec<u64> = loads.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let mut rest: u128 = sorted.iter().map(|&l| u128::from(l)).sum();
        let mut floor = u64::MAX;
        for (k, &l) in sorted.iter().enumerate() {
            let left = workers.saturating_sub(k) as u128;
            if left <= 1 || u128::from(l) * left <= rest {
                break;
            }
            floor = l;
            rest -= u128::from(l);
        }
        floor
    }

    /// Workers holding (or receiving) one hot partition and nothing else:
    /// as balanced as they can be, and left out of the mean.
    fn isolated(&self) -> Vec<bool> {
        (0..self.load.len())
            .map(|i| self.count[i] == 1 && self.load[i] >= self.hot_floor)
            .collect()
    }

    /// The most utilised worker's utilisation ÷ the mean of the others
    /// than the isolated ones, in thousandths.
    fn max_over_mean(&self) -> u64 {
        self.spread().0
    }

    /// The most and the least utilised worker's utilisation ÷ the mean,
    /// the isolated ones left out, in thousandths ((0, 1000) without load).
    fn spread(&self) -> (u64, u64) {
        let isolated = self.isolated();
        let (mut load, mut capacity) = (0u128, 0u128);
        for i in (0..self.load.len()).filter(|&i| !isolated[i]) {
            load += u128::from(self.load[i]);
            capacity += u128::from(self.capacity[i]);
        }
        if load == 0 {
            return (0, 1000);
        }
        let ratios = (0..self.load.len()).filter(|&i| !isolated[i]).map(|i| {
            let ratio =
                u128::from(self.load[i]) * capacity * 1000 / (u128::from(self.capacity[i]) * load);
            ratio.min(u128::from(u64::MAX)) as u64
        });
        ratios.fold((0, u64::MAX), |(max, min), r| (max.max(r), min.min(r)))
    }

    /// Workers of the mean capacity the load needs at `target_milli`
    /// utilisation, a hot partition needing one of its own.
    fn recommended(&self, target_milli: u32) -> u32 {
        let n = self.load.len() as u128;
        let mean_capacity = self.capacity.iter().map(|&c| u128::from(c)).sum::<u128>() / n;
        let per_worker = (mean_capacity * u128::from(target_milli.max(1)) / 1000).max(1);
        let hot = self.hot();
        let hot_load: u128 = hot
            .iter()
            .map(|&p| u128::from(self.loads[p as usize]))
            .sum();
        let rest = u128::from(self.total).saturating_sub(hot_load);
        let needed = hot.len() as u128 + rest.div_ceil(per_worker);
        needed.clamp(1, u128::from(u32::MAX)) as u32
    }

    /// The worker that `extra` load leaves least utilised (lowest index on a tie).
    fn least_utilised_with(&self, extra: u64, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<usize> = None;
        for i in (0..self.load.len()).filter(|&i| allowed(i)) {
            let with = self.load[i].saturating_add(extra);
            match best {
                Some(b) if !self.below(i, with, b, self.load[b].saturating_add(extra)) => {}
                _ => best = Some(i),
            }
        }
        best
    }

    /// Step 1: gives every partition that needs a holder one, heaviest first.
    fn place(&mut self, survey: &Survey<'s>, budget: &mut u64) {
        let mut pool: Vec<u32> = (0..survey.standing.len() as u32)
            .filter(|&p| {
                matches!(
                    survey.standing[p as usize],
                    Standing::Free | Standing::MustMove | Standing::Adrift
                )
            })
            .collect();
        pool.sort_by(|&a, &b| {
            self.loads[b as usize]
                .cmp(&self.loads[a as usize])
                .then(a.cmp(&b))
        });
        for p in pool {
            let l = self.loads[p as usize];
            let standing = survey.standing[p as usize];
            // Never back to its own holder (an adrift handoff's owner may
            // be active): that would be a handoff from a worker to itself.
            let giver = self.giver_of(survey, p);
            let Some(d) = self.least_utilised_with(l, |i| giver != Some(i)) else {
                continue;
            };
            if standing == Standing::MustMove {
                // A new handoff: within the group's limit of handoffs in flight.
                if *budget == 0 {
                    continue;
                }
                *budget -= 1;
            }
            self.load[d] = self.load[d].saturating_add(l);
            self.count[d] += 1;
            self.placed += 1;
            if standing == Standing::Free {
                self.grants[d].push(p);
            } else {
                self.pair(giver, d);
                let name = survey.owner_names[survey.owner_of[p as usize] as usize];
                self.revokes.entry((name, Some(d))).or_default().push(p);
            }
        }
    }

    /// Step 2: moves load off the most utilised workers, within the rules.
    fn even_out(&mut self, rules: &LoadRules, budget: &mut u64, cooling: impl Fn(u32) -> bool) {
        // The band is symmetric: a worker far below the mean (one that just
        // joined, with nothing) starts a round as one far above does.
        let band = u64::from(rules.threshold_milli.saturating_sub(1000));
        let (max, min) = self.spread();
        if max <= 1000 + band && min >= 1000u64.saturating_sub(band) {
            return;
        }
        let (aim, aim_low) = (1000 + band / 2, 1000u64.saturating_sub(band / 2));
        let load_budget = (u128::from(self.total) * u128::from(rules.max_load_milli) / 1000) as u64;
        let mut done = self.isolated();
        let mut moves = 0u32;
        while moves < rules.max_moves && *budget > 0 {
            let (max, min) = self.spread();
            if max <= aim && min >= aim_low {
                break;
            }
            // The most utilised worker not yet done (lowest index on a tie).
            let mut giver: Option<usize> = None;
            for i in (0..self.load.len()).filter(|&i| !done[i]) {
                match giver {
                    Some(g) if !self.below(g, self.load[g], i, self.load[i]) => {}
                    _ => giver = Some(i),
                }
            }
            let Some(h) = giver else { break };
            // A handoff already planned between the two takes more
            // partitions freely; a new one needs room on both sides.
            let isolated = self.isolated();
            let limit = rules.max_moves_per_worker;
            let Some(d) = self.least_utilised_with(0, |i| {
                i != h
                    && !isolated[i]
                    && (self.pairs.contains(&(Some(h), i))
                        || (self.busy[h] < limit && self.busy[i] < limit))
            }) else {
                done[h] = true;
                continue;
            };
            let Some(p) = self.best_partition(h, d, load_budget - self.moved_load, &cooling) else {
                done[h] = true;
                continue;
            };
            let l = self.loads[p as usize];
            self.held[h].retain(|&q| q != p);
            self.load[h] = self.load[h].saturating_sub(l);
            self.count[h] -= 1;
            self.load[d] = self.load[d].saturating_add(l);
            self.count[d] += 1;
            self.pair(Some(h), d);
            self.moved_load += l;
            moves += 1;
            *budget -= 1;
            self.revokes
                .entry((self.names[h], Some(d)))
                .or_default()
                .push(p);
        }
    }

    /// Of `h`'s partitions that may move to `d` within `load_left`, the one
    /// that leaves the busier of the two least utilised, then the lightest,
    /// then the lowest. A move must leave both below `h`'s utilisation now.
    fn best_partition(
        &self,
        h: usize,
        d: usize,
        load_left: u64,
        cooling: &impl Fn(u32) -> bool,
    ) -> Option<u32> {
        // (the busier of the two after the move: worker, its load), load, partition
        let mut best: Option<((usize, u64), u64, u32)> = None;
        for &p in &self.held[h] {
            let l = self.loads[p as usize];
            if l == 0 || l > load_left || cooling(p) {
                continue;
            }
            let (lh, ld) = (
                self.load[h].saturating_sub(l),
                self.load[d].saturating_add(l),
            );
            let busier = if self.below(h, lh, d, ld) {
                (d, ld)
            } else {
                (h, lh)
            };
            if !self.below(busier.0, busier.1, h, self.load[h]) {
                continue;
            }
            let better = match best {
                None => true,
                Some((b, bl, _)) => {
                    self.below(busier.0, busier.1, b.0, b.1)
                        || (!self.below(b.0, b.1, busier.0, busier.1) && l < bl)
                }
            };
            if better {
                best = Some((busier, l, p));
            }
        }
        best.map(|(_, _, p)| p)
    }

    /// The plan: grants, then handoffs by giver and recipient.
    fn moves(self, survey: &Survey<'s>) -> Plan {
        let mut moves = Vec::new();
        for (i, partitions) in self.grants.into_iter().enumerate() {
            if !partitions.is_empty() {
                moves.push(Move::Grant {
                    to: survey.workers[i].0.clone(),
                    partitions: ranges_of(partitions),
                });
            }
        }
        for ((from, to), mut partitions) in self.revokes {
            partitions.sort_unstable();
            moves.push(Move::Revoke {
                from: from.to_string(),
                to: to.map(|i| survey.workers[i].0.clone()),
                partitions: ranges_of(partitions),
            });
        }
        Plan { moves }
    }
}
