//! The load planner's working figures, and the moves it records in them.

use std::collections::{BTreeMap, BTreeSet};

use super::even_out::Round;
use crate::domain::rebalancer::{ranges_of, Move, Plan, Standing, Survey, NONE};

/// The planner's working figures, per active worker (by survey index).
#[derive(Clone)]
pub(super) struct Balance<'s> {
    /// Active workers' ids, by survey index.
    pub(super) names: Vec<&'s str>,
    pub(super) loads: &'s [u64],
    pub(super) capacity: Vec<u64>,
    /// Load held or on its way, per worker.
    pub(super) load: Vec<u64>,
    /// Partitions held and not moving, per worker, ascending.
    pub(super) held: Vec<Vec<u32>>,
    /// Partitions held or on their way, per worker.
    pub(super) count: Vec<u32>,
    /// Handoffs in flight, given or received, per worker: one per worker
    /// on the other side, however many partitions go between the two.
    pub(super) busy: Vec<u32>,
    /// The (giver, recipient) pairs those handoffs are between; a giver
    /// that is not active (draining) is `None`.
    pub(super) pairs: BTreeSet<(Option<usize>, usize)>,
    pub(super) total: u64,
    pub(super) grants: Vec<Vec<u32>>,
    /// (giver's name, recipient) → partitions.
    pub(super) revokes: BTreeMap<(&'s str, Option<usize>), Vec<u32>>,
    pub(super) moved_load: u64,
    /// Partitions placed in step 1.
    pub(super) placed: u32,
    /// Partitions moved in step 2 off a worker holding a hot partition.
    pub(super) isolated: u32,
    /// See [`Balance::hot_floor`].
    pub(super) hot_floor: u64,
    /// Hot partitions held or on their way, and their load, per worker.
    pub(super) hot_n: Vec<u32>,
    pub(super) hot_load: Vec<u64>,
}

impl<'s> Balance<'s> {
    pub(super) fn new(survey: &Survey<'s>, loads: &'s [u64], capacity: Vec<u64>) -> Self {
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
            isolated: 0,
            hot_floor: Self::hot_floor(loads, n),
            hot_n: vec![0; n],
            hot_load: vec![0; n],
        };
        for (p, &d) in survey.dest.iter().enumerate() {
            if d == NONE {
                continue;
            }
            let d = d as usize;
            b.take(d, p as u32);
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
    pub(super) fn giver_of(&self, survey: &Survey<'s>, p: u32) -> Option<usize> {
        let name = *survey
            .owner_names
            .get(survey.owner_of[p as usize] as usize)?;
        self.names.binary_search(&name).ok()
    }

    /// Counts a handoff between `giver` and `recipient`, unless one between
    /// them is counted already.
    pub(super) fn pair(&mut self, giver: Option<usize>, recipient: usize) {
        if self.pairs.insert((giver, recipient)) {
            self.busy[recipient] += 1;
            if let Some(g) = giver {
                self.busy[g] += 1;
            }
        }
    }

    /// Whether worker `a`'s utilisation with load `la` is below `b`'s with `lb`.
    pub(super) fn below(&self, a: usize, la: u64, b: usize, lb: u64) -> bool {
        u128::from(la) * u128::from(self.capacity[b])
            < u128::from(lb) * u128::from(self.capacity[a])
    }

    /// The partitions carrying more than an equal share of the load.
    pub(super) fn hot(&self) -> Vec<u32> {
        (0..self.loads.len() as u32)
            .filter(|&p| self.loads[p as usize] >= self.hot_floor)
            .collect()
    }

    /// The smallest load of a hot partition (`u64::MAX` when none is):
    /// water-filling from the heaviest down, a partition is hot while it
    /// carries more than the mean of what is left over the workers left.
    /// Such a partition overloads any worker it shares, so it is best
    /// alone; the next one is then measured against the others only.
    pub(super) fn hot_floor(loads: &[u64], workers: usize) -> u64 {
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

    /// Workers holding (or receiving) one hot partition and nothing else
    /// that carries load: as balanced as they can be, and left out of the
    /// mean.
    pub(super) fn isolated(&self) -> Vec<bool> {
        (0..self.load.len())
            .map(|i| self.hot_n[i] == 1 && self.load[i] == self.hot_load[i])
            .collect()
    }

    /// The most utilised worker's utilisation ÷ the mean of the others
    /// than the isolated ones, in thousandths.
    pub(super) fn max_over_mean(&self) -> u64 {
        self.spread().0
    }

    /// The most and the least utilised worker's utilisation ÷ the mean,
    /// the isolated ones left out, in thousandths ((0, 1000) without load).
    pub(super) fn spread(&self) -> (u64, u64) {
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
    pub(super) fn recommended(&self, target_milli: u32) -> u32 {
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
    pub(super) fn least_utilised_with(
        &self,
        extra: u64,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
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
    pub(super) fn place(&mut self, survey: &Survey<'s>, budget: &mut u64) {
        let mut pool: Vec<u32> = (0..survey.standing.len() as u32)
            .filter(|&p| survey.standing[p as usize].needs_holder())
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
            // A worker holding a hot partition takes nothing while another can.
            let giver = self.giver_of(survey, p);
            let Some(d) = self
                .least_utilised_with(l, |i| giver != Some(i) && self.hot_n[i] == 0)
                .or_else(|| self.least_utilised_with(l, |i| giver != Some(i)))
            else {
                continue;
            };
            if standing == Standing::MustMove {
                // A new handoff: within the group's limit of handoffs in flight.
                if *budget == 0 {
                    continue;
                }
                *budget -= 1;
            }
            self.take(d, p);
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

    /// The plan: grants, then handoffs by giver and recipient.
    pub(super) fn moves(self, survey: &Survey<'s>) -> Plan {
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

    /// Moves held partition `p` from `h` to `d` in the plan.
    pub(super) fn shift(&mut self, round: &mut Round, h: usize, d: usize, p: u32) {
        if self.hot_n[h] > 0 {
            self.isolated += 1;
        }
        self.held[h].retain(|&q| q != p);
        self.untake(h, p);
        self.take(d, p);
        self.pair(Some(h), d);
        self.moved_load += self.loads[p as usize];
        round.spend();
        self.revokes
            .entry((self.names[h], Some(d)))
            .or_default()
            .push(p);
    }

    /// Counts partition `p` as held by, or on its way to, worker `i`.
    pub(super) fn take(&mut self, i: usize, p: u32) {
        let l = self.loads[p as usize];
        self.load[i] = self.load[i].saturating_add(l);
        self.count[i] += 1;
        if l >= self.hot_floor {
            self.hot_n[i] += 1;
            self.hot_load[i] = self.hot_load[i].saturating_add(l);
        }
    }

    /// Stops counting partition `p` on worker `i`.
    pub(super) fn untake(&mut self, i: usize, p: u32) {
        let l = self.loads[p as usize];
        self.load[i] = self.load[i].saturating_sub(l);
        self.count[i] -= 1;
        if l >= self.hot_floor {
            self.hot_n[i] -= 1;
            self.hot_load[i] = self.hot_load[i].saturating_sub(l);
        }
    }
}
