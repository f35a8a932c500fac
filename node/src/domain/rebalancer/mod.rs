//! The rebalancer: a pure, deterministic function from a group's state (and the
//! leader's clock, stamped on the proposal) to the moves that bring it towards
//! balance. No randomness, no hashing order: the same input gives the same plan,
//! so every replica applying `Rebalance` computes the same moves, and `plan`
//! previews exactly what would happen.
//!
//! Rules, in priority order:
//! 1. never grant a partition that is still held: a held partition is *revoked*
//!    (handed off), and only granted once released;
//! 2. every active worker ends with ⌊P·w/W⌋ or ⌈P·w/W⌉ partitions (the extra
//!    ones go to workers already above their floor, so fewer move);
//! 3. move the fewest partitions: only surplus workers give up partitions, and
//!    only draining workers' and free partitions are handed out besides;
//! 4. keep ranges contiguous: a surplus worker gives up the tail of what it
//!    holds, and a worker short of partitions takes a run from the pool;
//! 5. at most `max_in_flight` handoffs at once (grants of free partitions are
//!    immediate and not limited).

mod by_load;

use serde::{Deserialize, Serialize};

use super::assignment::{ranges_of, PartitionRange};
use super::{Change, Event, Group, SessionState};

pub use by_load::{count_round, plan_by_load, round_for, LoadPlan, WorkerLoad};

/// What the rebalancer decided for one group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub moves: Vec<Move>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Move {
    /// Free partitions granted at once.
    Grant {
        to: String,
        partitions: Vec<PartitionRange>,
    },
    /// Held partitions the owner is asked to release to `to` (a new handoff, or
    /// a handoff in flight given a new recipient); `None`: released to nobody,
    /// because a draining owner has no one to hand over to.
    Revoke {
        from: String,
        to: Option<String>,
        partitions: Vec<PartitionRange>,
    },
}

/// Partitions a round granted or started handing off, by why.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// They needed a holder: free, their holder drains or left, or the
    /// recipient of their handoff left.
    pub placed: u64,
    /// Off the worker of a hot partition, so it can hold it alone (or a
    /// hot partition off a worker that holds a heavier one).
    pub isolated: u64,
    /// To even out load (or, by count, partitions).
    pub balanced: u64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// The ranges the plan grants or hands off.
    pub fn ranges(&self) -> impl Iterator<Item = &PartitionRange> {
        self.moves.iter().flat_map(|m| match m {
            Move::Grant { partitions, .. } | Move::Revoke { partitions, .. } => partitions,
        })
    }

    /// Partitions the plan grants or hands off.
    pub fn partitions(&self) -> u64 {
        self.ranges().map(|r| u64::from(r.len())).sum()
    }

    /// The moves `events` carried out: their grants and handoffs, in order
    /// (what a committed `Move` answers with).
    pub fn carried_out(events: &[Event]) -> Plan {
        let moves = events
            .iter()
            .filter_map(|e| match &e.change {
                Change::Granted {
                    worker, partitions, ..
                } => Some(Move::Grant {
                    to: worker.clone(),
                    partitions: partitions.clone(),
                }),
                Change::Revoking {
                    from,
                    partitions,
                    to,
                    ..
                } => Some(Move::Revoke {
                    from: from.clone(),
                    to: to.clone(),
                    partitions: partitions.clone(),
                }),
                _ => None,
            })
            .collect();
        Plan { moves }
    }

    /// Partitions the plan moves away from a holder (not counting free grants).
    pub fn handoffs(&self) -> u32 {
        self.moves
            .iter()
            .map(|m| match m {
                Move::Revoke { partitions, .. } => partitions.iter().map(PartitionRange::len).sum(),
                Move::Grant { .. } => 0,
            })
            .sum()
    }
}

pub(super) const NONE: u32 = u32::MAX;

/// How a partition stands for the plan.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// Held by active worker `dest`, not moving.
    Held,
    /// Moving to active worker `dest`.
    Inbound,
    /// Free and grantable now.
    Free,
    /// Held by someone who must give it up (draining) and not yet moving.
    MustMove,
    /// Moving to nobody in particular (its recipient left): needs a recipient.
    Adrift,
    /// Reserved for a worker expected back; untouchable for now.
    Kept,
}

impl Standing {
    /// Whether the partition needs a (new) holder: free, its holder drains,
    /// or its handoff's recipient left.
    pub(super) fn needs_holder(self) -> bool {
        matches!(self, Standing::Free | Standing::MustMove | Standing::Adrift)
    }
}

/// How every partition of a group stands for a plan: who may take
/// partitions, and what each partition is doing now.
pub(super) struct Survey<'a> {
    /// Active workers in id order, with their weights; their index is their
    /// number below.
    pub workers: Vec<(&'a String, u32)>,
    pub standing: Vec<Standing>,
    /// The active worker a partition is held by or moving to, or `NONE`.
    pub dest: Vec<u32>,
    /// The partition's holder, as an index into `owner_names`, or `NONE`.
    pub owner_of: Vec<u32>,
    pub owner_names: Vec<&'a str>,
    /// Partitions in a handoff now.
    pub in_flight: u64,
}

impl<'a> Survey<'a> {
    pub fn of(group: &'a Group, now_ms: u64) -> Self {
        let workers: Vec<(&String, u32)> = group
            .sessions
            .iter()
            .filter(|(_, s)| s.state == SessionState::Active)
            .map(|(id, s)| (id, s.weight))
            .collect();
        let index_of = |id: &str| -> u32 {
            workers
                .binary_search_by(|(w, _)| w.as_str().cmp(id))
                .map_or(NONE, |i| i as u32)
        };
        let p_count = group.assignment.partitions();
        let mut dest = vec![NONE; p_count as usize];
        let mut standing = vec![Standing::Kept; p_count as usize];
        let mut owner_of: Vec<u32> = vec![NONE; p_count as usize];
        let mut owner_names: Vec<&str> = Vec::new();
        let mut owner_index: std::collections::BTreeMap<&str, u32> = Default::default();
        let mut in_flight: u64 = 0;

        for (range, slot) in group.assignment.runs() {
            let (s, d, owner) = match (&slot.owner, &slot.revoking) {
                (Some(o), Some(r)) => {
                    let to = r.to.as_deref().map_or(NONE, index_of);
                    let st = if to == NONE {
                        Standing::Adrift
                    } else {
                        Standing::Inbound
                    };
                    (st, to, Some(o.as_str()))
                }
                (Some(o), None) => {
                    let i = index_of(o);
                    if i == NONE {
                        (Standing::MustMove, NONE, Some(o.as_str()))
                    } else {
                        (Standing::Held, i, Some(o.as_str()))
                    }
                }
                (None, _) if slot.is_grantable(now_ms) => (Standing::Free, NONE, None),
                (None, _) => (Standing::Kept, NONE, None),
            };
            let owner_ix = owner.map_or(NONE, |o| {
                *owner_index.entry(o).or_insert_with(|| {
                    owner_names.push(o);
                    (owner_names.len() - 1) as u32
                })
            });
            if slot.revoking.is_some() {
                in_flight += u64::from(range.len());
            }
            for p in range.start..range.end {
                standing[p as usize] = s;
                dest[p as usize] = d;
                owner_of[p as usize] = owner_ix;
            }
        }
        Self {
            workers,
            standing,
            dest,
            owner_of,
            owner_names,
            in_flight,
        }
    }
}

/// Computes the moves for `group` at leader time `now_ms`.
pub fn plan(group: &Group, now_ms: u64) -> Plan {
    if group.frozen || group.deleting {
        return Plan::default();
    }
    plan_surveyed(group, Survey::of(group, now_ms))
}

/// [`plan`] from a survey of `group` already taken.
pub(super) fn plan_surveyed(group: &Group, survey: Survey) -> Plan {
    if group.frozen || group.deleting {
        return Plan::default();
    }
    let Survey {
        workers,
        mut standing,
        dest,
        owner_of,
        owner_names,
        in_flight,
    } = survey;
    let p_count = group.assignment.partitions();

    let n = workers.len();
    let mut count = vec![0u32; n];
    let mut held: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut inbound: Vec<Vec<u32>> = vec![Vec::new(); n];
    for p in 0..p_count {
        let d = dest[p as usize];
        if d != NONE {
            count[d as usize] += 1;
            match standing[p as usize] {
                Standing::Held => held[d as usize].push(p),
                _ => inbound[d as usize].push(p),
            }
        }
    }

    // Quotas: ⌊P·w/W⌋, and the remainder one each to the workers holding the most.
    // Only workers whose share has a fractional part may get one more than its
    // floor (a whole share is exact); the fractional parts add up to the
    // remainder, so there are always enough of them. The extra ones go first to
    // workers already above their floor: each such one is a partition that
    // need not move, which makes the total number of moves the minimum.
    let total_weight: u64 = workers
        .iter()
        .map(|(_, w)| u64::from(*w))
        .sum::<u64>()
        .max(1);
    let share = |i: usize| u64::from(p_count) * u64::from(workers[i].1);
    let mut quota: Vec<u32> = (0..n).map(|i| (share(i) / total_weight) as u32).collect();
    let mut remainder = if n == 0 {
        0
    } else {
        p_count - quota.iter().sum::<u32>()
    };
    let mut by_count: Vec<usize> = (0..n).filter(|i| share(*i) % total_weight != 0).collect();
    by_count.sort_by(|a, b| {
        let above = |i: usize| count[i] > quota[i];
        above(*b)
            .cmp(&above(*a))
            .then(count[*b].cmp(&count[*a]))
            .then(a.cmp(b))
    });
    for i in by_count {
        if remainder == 0 {
            break;
        }
        quota[i] += 1;
        remainder -= 1;
    }

    // The pool: partitions that need a (new) recipient.
    let mut pool: Vec<u32> = Vec::new();
    for p in 0..p_count {
        if standing[p as usize].needs_holder() {
            pool.push(p);
        }
    }
    // Surplus workers give up their tail: inbound partitions first (redirecting
    // a handoff costs nothing extra), then held ones.
    for i in 0..n {
        let mut surplus = count[i].saturating_sub(quota[i]);
        while surplus > 0 {
            let p = match inbound[i].pop() {
                Some(p) => p,
                None => match held[i].pop() {
                    Some(p) => p,
                    None => break,
                },
            };
            standing[p as usize] = if standing[p as usize] == Standing::Held {
                Standing::MustMove
            } else {
                Standing::Adrift
            };
            pool.push(p);
            count[i] -= 1;
            surplus -= 1;
        }
    }
    pool.sort_unstable();

    // Hand the pool out in order, worker by worker (id order), so each worker
    // takes runs of consecutive partitions.
    let mut budget = u64::from(group.config.max_in_flight).saturating_sub(in_flight);
    let mut grants: Vec<Vec<u32>> = vec![Vec::new(); n];
    // (from owner index, to worker) → partitions
    let mut revokes: std::collections::BTreeMap<(u32, Option<usize>), Vec<u32>> =
        Default::default();
    let mut next = 0usize;
    let mut unplaced: Vec<u32> = Vec::new();
    for p in pool {
        while next < n && count[next] >= quota[next] {
            next += 1;
        }
        if next == n {
            unplaced.push(p);
            continue;
        }
        match standing[p as usize] {
            Standing::Free => grants[next].push(p),
            Standing::Adrift => {
                revokes
                    .entry((owner_of[p as usize], Some(next)))
                    .or_default()
                    .push(p);
            }
            Standing::MustMove => {
                if budget == 0 {
                    continue;
                }
                budget -= 1;
                revokes
                    .entry((owner_of[p as usize], Some(next)))
                    .or_default()
                    .push(p);
            }
            Standing::Held | Standing::Inbound | Standing::Kept => continue,
        }
        count[next] += 1;
    }
    // A draining worker gives its partitions up even when nobody can take them
    // (the last worker scaling down): they are freed for whoever joins next.
    for p in unplaced {
        if standing[p as usize] == Standing::MustMove && dest[p as usize] == NONE && budget > 0 {
            budget -= 1;
            revokes
                .entry((owner_of[p as usize], None))
                .or_default()
                .push(p);
        }
    }

    let mut moves = Vec::new();
    for (i, partitions) in grants.into_iter().enumerate() {
        if !partitions.is_empty() {
            moves.push(Move::Grant {
                to: workers[i].0.clone(),
                partitions: ranges_of(partitions),
            });
        }
    }
    for ((from, to), mut partitions) in revokes {
        partitions.sort_unstable();
        moves.push(Move::Revoke {
            from: owner_names[from as usize].to_string(),
            to: to.map(|i| workers[i].0.clone()),
            partitions: ranges_of(partitions),
        });
    }
    Plan { moves }
}
