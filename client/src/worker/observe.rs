//! Hold changes: the exact moments `Grant::holds` turns true and false, for
//! callers that keep their own record of who held what when (the chaos
//! harness checks that no two workers' records overlap).
//!
//! Every change to what the worker holds goes through
//! [`Shared::change_holdings`] or [`Shared::lose_lease`], which tell the
//! hook, in order. A hold is never reported shorter than it was: a `Began`
//! is read and reported *before* the partitions become visible as held, an
//! `Ended` after they stop being visible (or at the lease's deadline, the
//! instant the clock check starts failing).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::holdings::Holdings;
use super::{FencingToken, Shared};
use crate::partitions::{ranges_of, Partitions};

/// A change in what this worker holds; see [`WorkerBuilder::on_hold_change`].
///
/// [`WorkerBuilder::on_hold_change`]: super::WorkerBuilder::on_hold_change
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldChange {
    /// From `at` on, `holds(p)` is true for these partitions, with `token`.
    /// `at` was read before they became visible: nothing saw them held
    /// earlier.
    Began {
        partitions: Partitions,
        token: FencingToken,
        at: Instant,
    },
    /// From `at` on, `holds(p)` is false for these partitions (no check at
    /// or after `at` sees them held).
    Ended {
        partitions: Partitions,
        at: Instant,
        cause: HoldEnd,
    },
}

/// Why partitions stopped being held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    /// Given back: `Worker::release` took them out before its call went to
    /// the server (or the server recorded their release).
    Released,
    /// The lease ran out (`at` is the local deadline, even if the SDK
    /// noticed later) or was ended early (the server said the session is
    /// gone, or it could not be served): every hold of the session ends.
    LeaseLost,
    /// `Worker::shutdown` ran past its grace period: every grant was made
    /// invalid at `at`, before the session was closed.
    ForcedShutdown,
    /// The server ended the session or took the partitions without a
    /// release (left, drained, evicted, expired, group deleted).
    SessionEnded,
    /// The group split: the old numbering ends here, and the children
    /// begin with new tokens.
    Resharded,
}

pub(crate) type Hook = Arc<dyn Fn(HoldChange) + Send + Sync>;

/// What the hook has been told, so each change is reported once and in order.
pub(crate) struct Observer {
    hook: Option<Hook>,
    told: Mutex<Told>,
}

#[derive(Default)]
struct Told {
    epoch: u64,
    /// Partition → token, reported as held and not yet as ended.
    held: BTreeMap<u32, u64>,
    /// The lease of `epoch` was reported ended: nothing of it begins again.
    lease_ended: bool,
}

impl Observer {
    pub(crate) fn new(hook: Option<Hook>) -> Self {
        Self {
            hook,
            told: Mutex::new(Told::default()),
        }
    }
}

/// What `after` adds to, and takes from, what the hook was told (`told`):
/// new holds grouped by token, and the partitions whose hold ended.
pub(crate) fn diff(
    told: &BTreeMap<u32, u64>,
    after: &BTreeMap<u32, u64>,
) -> (Vec<(u64, Vec<u32>)>, Vec<u32>) {
    let mut began: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (&p, &token) in after {
        if told.get(&p) != Some(&token) {
            began.entry(token).or_default().push(p);
        }
    }
    let ended = told
        .iter()
        .filter(|&(p, token)| after.get(p) != Some(token))
        .map(|(&p, _)| p)
        .collect();
    (began.into_iter().collect(), ended)
}

impl Shared {
    /// Changes what the worker holds with `f`, telling the hook what began
    /// (before it is visible) and what ended (once it is not) and why
    /// (`cause`, from `f`'s result). Without a hook, `f` runs in place.
    pub(crate) fn change_holdings<R>(
        &self,
        cause: impl FnOnce(&R) -> HoldEnd,
        f: impl FnOnce(&mut Holdings) -> R,
    ) -> R {
        let Some(hook) = &self.observer.hook else {
            return f(&mut self.holdings());
        };
        // Held across the whole change: changes are reported in the order
        // they happen, and nothing else changes the holdings meanwhile.
        let mut told = self.observer.told.lock().unwrap_or_else(|p| p.into_inner());
        // Worked out on a copy, so what begins can be reported before any
        // check can see it.
        let mut next = self.holdings().clone();
        let result = f(&mut next);
        let cause = cause(&result);
        let (epoch, _) = next.session();
        if epoch != told.epoch {
            // A new session. The old one's holds ended with its lease, which
            // was reported then; anything left (it should not be) ends now.
            let left: Vec<u32> = std::mem::take(&mut told.held).into_keys().collect();
            if !left.is_empty() {
                hook(HoldChange::Ended {
                    partitions: ranges_of(left),
                    at: Instant::now(),
                    cause: HoldEnd::LeaseLost,
                });
            }
            *told = Told {
                epoch,
                ..Told::default()
            };
        }
        let (began, ended) = diff(&told.held, next.tokens());
        for p in &ended {
            told.held.remove(p);
        }
        let (mut replaced, mut gone): (Vec<u32>, Vec<u32>) =
            ended.into_iter().partition(|p| next.token(*p).is_some());
        let before = Instant::now();
        // Read after `before`: if the lease holds now, it held at `before`.
        if !told.lease_ended && self.lease.valid(epoch) {
            if !replaced.is_empty() {
                // Held on under a new token in the same step: the old hold
                // ends where the new one begins, so the partition is never
                // reported unheld while it was held.
                hook(HoldChange::Ended {
                    partitions: ranges_of(std::mem::take(&mut replaced)),
                    at: before,
                    cause,
                });
            }
            for (token, partitions) in began {
                told.held.extend(partitions.iter().map(|&p| (p, token)));
                hook(HoldChange::Began {
                    partitions: ranges_of(partitions),
                    token,
                    at: before,
                });
            }
        }
        gone.append(&mut replaced);
        gone.sort_unstable();
        *self.holdings() = next;
        let after = Instant::now();
        if !gone.is_empty() {
            // If the lease ran out meanwhile, that is when they stopped
            // being held (and both are safe ends: never too early).
            let at = match self.lease.ended(epoch) {
                Some(end) => end.instant.min(after),
                None => after,
            };
            hook(HoldChange::Ended {
                partitions: ranges_of(gone),
                at,
                cause,
            });
        }
        result
    }

    /// Ends the lease of `epoch` now if it still holds, and tells the hook
    /// (once per session) that every hold ended when the lease did: at its
    /// deadline if that passed first, whenever the loss is noticed.
    pub(crate) fn lose_lease(&self, epoch: u64, cause: HoldEnd) {
        self.lease.lose(epoch);
        let Some(hook) = &self.observer.hook else {
            return;
        };
        let mut told = self.observer.told.lock().unwrap_or_else(|p| p.into_inner());
        if told.epoch != epoch || told.lease_ended {
            return;
        }
        told.lease_ended = true;
        let held: Vec<u32> = std::mem::take(&mut told.held).into_keys().collect();
        if held.is_empty() {
            return;
        }
        let at = self
            .lease
            .ended(epoch)
            .map_or_else(Instant::now, |end| end.instant);
        hook(HoldChange::Ended {
            partitions: ranges_of(held),
            at,
            cause,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(u32, u64)]) -> BTreeMap<u32, u64> {
        entries.iter().copied().collect()
    }

    #[test]
    fn diff_reports_new_holds_by_token_and_ended_ones() {
        let told = map(&[(0, 5), (1, 5), (2, 5)]);
        let after = map(&[(0, 5), (2, 9), (3, 9), (4, 7)]);
        let (began, ended) = diff(&told, &after);
        assert_eq!(began, vec![(7, vec![4]), (9, vec![2, 3])]);
        // Partition 2 is held under a new token: the old hold ended.
        assert_eq!(ended, vec![1, 2]);
        assert_eq!(diff(&after, &after), (vec![], vec![]), "nothing changed");
    }
}
