//! Step 2 of a load round: hot partitions isolated, the rest evened out.

use super::balance::Balance;
use crate::domain::load::LoadRules;

impl Balance<'_> {
    /// Step 2: isolates the hot partitions and evens out the rest, within
    /// the rules.
    ///
    /// A hot partition's holder *anchors* it: gives away everything else
    /// and takes nothing (see [`Balance::home_hot`] for when the hot
    /// partition moves instead). The free workers are balanced to the mean
    /// of the load that is not hot: a move goes from an anchor, or else the
    /// most utilised free worker, to the least utilised one, and takes the
    /// partition that fits the recipient below the aim (half-way into the
    /// band, so the next small drift starts no round) and leaves the busier
    /// of the two least utilised. When none fits, a recipient first makes
    /// room by passing small partitions on to workers where they fit: one
    /// filled past the aim would be left holding what just moved, which
    /// the cooldown freezes. No move leaves either worker above the giver's
    /// utilisation before it, so no move raises the maximum.
    pub(super) fn even_out(
        &mut self,
        rules: &LoadRules,
        budget: &mut u64,
        cooling: impl Fn(u32) -> bool,
    ) {
        let mut round = Round {
            max_moves: rules.max_moves,
            moves: 0,
            budget: *budget,
            load_budget: (u128::from(self.total) * u128::from(rules.max_load_milli) / 1000) as u64,
            per_worker: rules.max_moves_per_worker,
        };
        self.home_hot(&mut round, &cooling);
        *budget = round.budget;
        let Some(aim) = Aim::of(self, rules, &round, &cooling) else {
            return;
        };
        let unsettled = |b: &Self, i: usize| {
            if b.hot_n[i] > 0 {
                b.sheddable(i, &round, &cooling) > 0
            } else {
                let r = aim.ratio(b, i, b.load[i]);
                r > 1000 + aim.band || r < 1000u64.saturating_sub(aim.band)
            }
        };
        if !(0..self.load.len()).any(|i| unsettled(self, i)) {
            return;
        }
        let mut done = vec![false; self.load.len()];
        while round.open() {
            let Some(h) = self.next_giver(&aim, &done, &round, &cooling) else {
                break;
            };
            // Recipients: free workers a handoff from h may go to, least
            // utilised first (lowest index on a tie).
            let mut to: Vec<usize> = (0..self.load.len())
                .filter(|&i| i != h && self.hot_n[i] == 0 && round.may_pair(self, h, i))
                .collect();
            to.sort_by(|&a, &b| {
                let (la, lb) = (u128::from(self.load[a]), u128::from(self.load[b]));
                (la * u128::from(self.capacity[b]))
                    .cmp(&(lb * u128::from(self.capacity[a])))
                    .then(a.cmp(&b))
            });
            let moved = to.first().is_some_and(|&d| {
                self.move_best(&mut round, Some(&aim), h, d, &cooling)
                    || to
                        .iter()
                        .take(ROOM_MAKERS)
                        .any(|&d| self.make_room_and_move(&mut round, &aim, h, d, &cooling))
                    || self.move_best(&mut round, None, h, d, &cooling)
            });
            if !moved {
                done[h] = true;
            }
        }
        *budget = round.budget;
    }

    /// The next giver: an anchor with anything it can give away (the most
    /// of it), then
    /// the most utilised free worker while one is above the aim or one is
    /// below it (lowest index on a tie); not one that is `done`.
    fn next_giver(
        &self,
        aim: &Aim,
        done: &[bool],
        round: &Round,
        cooling: &impl Fn(u32) -> bool,
    ) -> Option<usize> {
        let n = self.load.len();
        let anchor = (0..n)
            .filter(|&i| !done[i] && self.hot_n[i] > 0)
            .map(|i| (self.sheddable(i, round, cooling), i))
            .filter(|&(load, _)| load > 0)
            .max_by_key(|&(load, i)| (load, std::cmp::Reverse(i)))
            .map(|(_, i)| i);
        if anchor.is_some() {
            return anchor;
        }
        let free = || (0..n).filter(|&i| self.hot_n[i] == 0);
        let least = free().map(|i| aim.ratio(self, i, self.load[i])).min()?;
        let mut giver: Option<usize> = None;
        for i in free().filter(|&i| !done[i]) {
            match giver {
                Some(g) if !self.below(g, self.load[g], i, self.load[i]) => {}
                _ => giver = Some(i),
            }
        }
        giver.filter(|&g| aim.ratio(self, g, self.load[g]) > aim.high || least < aim.low)
    }

    /// Moves the best of `h`'s partitions for `d`: one that fits it below
    /// `aim`, or without an aim any (the last resort, which still lowers
    /// the maximum).
    fn move_best(
        &mut self,
        round: &mut Round,
        aim: Option<&Aim>,
        h: usize,
        d: usize,
        cooling: &impl Fn(u32) -> bool,
    ) -> bool {
        let fits = |b: &Self, l: u64| aim.is_some_and(|a| a.fits(b, d, l));
        match self.best_partition(round, h, d, cooling, fits) {
            Some((p, fit)) if fit || aim.is_none() => {
                self.shift(round, h, d, p);
                true
            }
            _ => false,
        }
    }

    /// When none of `h`'s partitions fits `d`: `d` passes its lightest
    /// partitions on, each to the worker it fits least utilised (not `h`),
    /// until `h`'s lightest movable partition fits, which then moves. All
    /// or nothing: when the budgets or the handoff limits run out first,
    /// the passes are undone (they would only have churned).
    fn make_room_and_move(
        &mut self,
        round: &mut Round,
        aim: &Aim,
        h: usize,
        d: usize,
        cooling: &impl Fn(u32) -> bool,
    ) -> bool {
        // h's lightest movable partition, if an empty d could take it.
        let load_left = round.load_left(self);
        let lightest = self.held[h]
            .iter()
            .copied()
            .filter(|&p| {
                let l = self.loads[p as usize];
                l > 0 && l < self.hot_floor && l <= load_left && !cooling(p)
            })
            .min_by_key(|&p| (self.loads[p as usize], p));
        let Some(p) = lightest else {
            return false;
        };
        let l = self.loads[p as usize];
        let mut passed: Vec<u32> = self.held[d]
            .iter()
            .copied()
            .filter(|&q| {
                let lq = self.loads[q as usize];
                lq > 0 && lq < self.hot_floor && !cooling(q)
            })
            .collect();
        // Not a start when even passing all of that would not make room.
        let passable: u64 = passed.iter().map(|&q| self.loads[q as usize]).sum();
        if !aim.fits(self, d, l.saturating_sub(passable)) || aim.ratio(self, d, l) > aim.high {
            return false;
        }
        let (before, saved) = (self.clone(), round.clone());
        passed.sort_by_key(|&q| (self.loads[q as usize], q));
        for q in passed {
            if aim.fits(self, d, l) || !round.open() {
                break;
            }
            let lq = self.loads[q as usize];
            if lq > round.load_left(self) {
                break;
            }
            let to = self.least_utilised_with(lq, |i| {
                i != h
                    && i != d
                    && self.hot_n[i] == 0
                    && round.may_pair(self, d, i)
                    && aim.fits(self, i, lq)
                    && self.below(i, self.load[i].saturating_add(lq), h, self.load[h])
            });
            if let Some(e) = to {
                self.shift(round, d, e, q);
            }
        }
        let ok = aim.fits(self, d, l)
            && round.open()
            && l <= round.load_left(self)
            && round.may_pair(self, h, d)
            && self.below(d, self.load[d].saturating_add(l), h, self.load[h]);
        if ok {
            self.shift(round, h, d, p);
        } else {
            *self = before;
            *round = saved;
        }
        ok
    }

    /// Where each hot partition is isolated. It stays with its holder,
    /// which then gives away everything else, unless moving it costs less
    /// load: to the free worker with the least load, when the partition and
    /// that worker's load together are less than what the holder would give
    /// away (a worker that just joined, empty), or when it would be less
    /// utilised there than alone on its holder (a larger worker). A hot
    /// partition sharing its
    /// holder with a heavier one moves in any case. Lightest first (more of
    /// them within the load budget), never raising the maximum.
    fn home_hot(&mut self, round: &mut Round, cooling: &impl Fn(u32) -> bool) {
        let n = self.load.len();
        let mut hot: Vec<(u32, usize)> = (0..n)
            .filter(|&h| self.hot_n[h] > 0)
            .flat_map(|h| {
                self.held[h]
                    .iter()
                    .filter(|&&p| self.loads[p as usize] >= self.hot_floor)
                    .map(move |&p| (p, h))
            })
            .collect();
        hot.sort_by_key(|&(p, _)| (self.loads[p as usize], p));
        for (p, h) in hot {
            let l = self.loads[p as usize];
            if !round.open() || cooling(p) || l > round.load_left(self) {
                continue;
            }
            let shared = self.hot_n[h] > 1 && self.kept_hot(h) != Some(p);
            let cold = self.load[h] - self.hot_load[h];
            let to = (0..n)
                .filter(|&i| i != h && self.hot_n[i] == 0 && round.may_pair(self, h, i))
                .min_by(|&a, &b| {
                    let (la, lb) = (u128::from(self.load[a]), u128::from(self.load[b]));
                    (la * u128::from(self.capacity[b]))
                        .cmp(&(lb * u128::from(self.capacity[a])))
                        .then(a.cmp(&b))
                });
            let Some(e) = to else { continue };
            // Or it would be less utilised there, with what is there, than
            // alone here (a larger worker: never so under equal capacities).
            let worth = shared
                || l.saturating_add(self.load[e]) < cold
                || self.below(e, self.load[e].saturating_add(l), h, l);
            if worth && self.below(e, self.load[e].saturating_add(l), h, self.load[h]) {
                self.shift(round, h, e, p);
            }
        }
    }

    /// The hot partition worker `h` keeps when it has several: the
    /// heaviest it holds (the lowest on a tie), or none of those if one is
    /// on its way to it.
    fn kept_hot(&self, h: usize) -> Option<u32> {
        let held: Vec<u32> = self.held[h]
            .iter()
            .copied()
            .filter(|&p| self.loads[p as usize] >= self.hot_floor)
            .collect();
        if held.len() < self.hot_n[h] as usize {
            return None;
        }
        held.into_iter()
            .max_by_key(|&p| (self.loads[p as usize], std::cmp::Reverse(p)))
    }

    /// The load of what anchor `h` can give away this round: partitions it
    /// holds that are not hot, carry load, are out of their cooldown and
    /// are within the round's load budget.
    fn sheddable(&self, h: usize, round: &Round, cooling: &impl Fn(u32) -> bool) -> u64 {
        self.held[h]
            .iter()
            .filter(|&&p| !cooling(p))
            .map(|&p| self.loads[p as usize])
            .filter(|&l| l > 0 && l < self.hot_floor && l <= round.load_budget)
            .fold(0, u64::saturating_add)
    }

    /// Of `h`'s partitions that are not hot and may move to `d` now (and
    /// whether it `fits`): one that fits if any does, and of those the one
    /// that leaves the busier of the two least utilised, then the lightest,
    /// then the lowest. A move must leave both below `h`'s utilisation now.
    fn best_partition(
        &self,
        round: &Round,
        h: usize,
        d: usize,
        cooling: &impl Fn(u32) -> bool,
        fits: impl Fn(&Self, u64) -> bool,
    ) -> Option<(u32, bool)> {
        let load_left = round.load_left(self);
        // fits, (the busier of the two after the move: worker, its load), load, partition
        let mut best: Option<(bool, (usize, u64), u64, u32)> = None;
        for &p in &self.held[h] {
            let l = self.loads[p as usize];
            if l == 0 || l >= self.hot_floor || l > load_left || cooling(p) {
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
            let fit = fits(self, l);
            let better = match best {
                None => true,
                Some((bf, b, bl, _)) => {
                    (fit && !bf)
                        || (fit == bf
                            && (self.below(busier.0, busier.1, b.0, b.1)
                                || (!self.below(b.0, b.1, busier.0, busier.1) && l < bl)))
                }
            };
            if better {
                best = Some((fit, busier, l, p));
            }
        }
        best.map(|(fit, _, _, p)| (p, fit))
    }
}

/// Recipients a giver tries to make room on, least utilised first.
const ROOM_MAKERS: usize = 4;

/// What is left of a round's budgets.
#[derive(Clone)]
pub(super) struct Round {
    max_moves: u32,
    moves: u32,
    /// Handoffs the group's in-flight limit still allows.
    budget: u64,
    load_budget: u64,
    per_worker: u32,
}

impl Round {
    /// Counts one partition moved.
    pub(super) fn spend(&mut self) {
        self.moves += 1;
        self.budget -= 1;
    }

    fn open(&self) -> bool {
        self.moves < self.max_moves && self.budget > 0
    }

    fn load_left(&self, b: &Balance) -> u64 {
        self.load_budget.saturating_sub(b.moved_load)
    }

    /// Whether a handoff from `h` to `d` may carry one more partition: one
    /// between them is planned already, or both have room for a new one.
    fn may_pair(&self, b: &Balance, h: usize, d: usize) -> bool {
        b.pairs.contains(&(Some(h), d))
            || (b.busy[h] < self.per_worker && b.busy[d] < self.per_worker)
    }
}

/// The free workers' mean (the load that is not hot over their capacity)
/// and the band around it, in thousandths of it.
struct Aim {
    cold: u64,
    capacity: u64,
    band: u64,
    /// Half-way into the band, above and below.
    high: u64,
    low: u64,
}

impl Aim {
    /// The mean counts what free workers hold and what anchors can give
    /// away now: what an anchor cannot (in its cooldown, no load, or more
    /// than a round may move) stays with it, out of the mean.
    fn of(
        b: &Balance,
        rules: &LoadRules,
        round: &Round,
        cooling: &impl Fn(u32) -> bool,
    ) -> Option<Aim> {
        let cold = (0..b.load.len())
            .map(|i| {
                if b.hot_n[i] == 0 {
                    b.load[i]
                } else {
                    b.sheddable(i, round, cooling)
                }
            })
            .fold(0, u64::saturating_add);
        let capacity = (0..b.load.len())
            .filter(|&i| b.hot_n[i] == 0)
            .map(|i| b.capacity[i])
            .fold(0, u64::saturating_add);
        let band = u64::from(rules.threshold_milli.saturating_sub(1000));
        (cold > 0 && capacity > 0).then_some(Aim {
            cold,
            capacity,
            band,
            high: 1000 + band / 2,
            low: 1000u64.saturating_sub(band / 2),
        })
    }

    /// Worker `i`'s utilisation with load `l` ÷ the mean, in thousandths.
    fn ratio(&self, b: &Balance, i: usize, l: u64) -> u64 {
        (u128::from(l) * u128::from(self.capacity) * 1000
            / (u128::from(b.capacity[i]) * u128::from(self.cold)))
        .min(u128::from(u64::MAX)) as u64
    }

    /// Whether `l` more keeps worker `i` at or below the aim.
    fn fits(&self, b: &Balance, i: usize, l: u64) -> bool {
        self.ratio(b, i, b.load[i].saturating_add(l)) <= self.high
    }
}
