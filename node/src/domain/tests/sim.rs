//! The simulator every domain test drives: applies commands and checks, for
//! each, what must hold of its events.

use super::*;

/// Applies commands at increasing revisions and checks, for every command,
/// that its events alone reproduce the change, that a grant only ever lands on
/// a free partition, and that fencing tokens per partition strictly increase.
#[derive(Clone)]
pub(super) struct Sim {
    pub(super) state: State,
    pub(super) rev: u64,
    pub(super) now: u64,
    pub(super) history: Vec<(u64, Event)>,
    pub(super) last_token: BTreeMap<(String, u32), u64>,
}

impl Sim {
    pub(super) fn new() -> Self {
        Self {
            state: State::default(),
            rev: 0,
            now: 1_000_000,
            history: Vec::new(),
            last_token: BTreeMap::new(),
        }
    }

    pub(super) fn cmd(&mut self, command: Command) -> CommandResult {
        self.rev += 1;
        let before = self.state.clone();
        let result = self.state.apply(self.rev, &command.clone().at(self.now));
        if result.outcome.is_err() {
            assert!(
                result.events.is_empty(),
                "a refused command causes no event"
            );
        }
        let mut shadow = before;
        for event in &result.events {
            self.check_event(&shadow, event);
            let held_before = holdings(&shadow, &event.group);
            shadow.apply_event(self.rev, event);
            // A worker's watch (filtered for it) sees every change to what it holds.
            let held_after = holdings(&shadow, &event.group);
            for worker in held_before.keys().chain(held_after.keys()) {
                if held_before.get(worker) != held_after.get(worker) {
                    assert!(
                        event.concerns(worker),
                        "{event:?} changes what {worker} holds but is not sent to it"
                    );
                }
            }
            self.history.push((self.rev, event.clone()));
        }
        shadow.revision = self.rev;
        // Compaction is about the history and causes no event.
        if matches!(command, Command::Compact(_)) {
            shadow.compacted = self.state.compacted;
        }
        assert_eq!(
            shadow, self.state,
            "the events of {command:?} reproduce its change"
        );
        result
    }

    fn check_event(&mut self, before: &State, event: &Event) {
        let group = &event.group;
        if let Change::TombstoneAdded {
            tombstone, owner, ..
        } = &event.change
        {
            let holder = &before.groups[group]
                .assignment
                .slot(tombstone.partition)
                .owner;
            assert_eq!(owner, holder, "a tombstone names its partition's owner");
        }
        match &event.change {
            Change::Granted {
                worker,
                partitions,
                token,
            } => {
                let g = &before.groups[group];
                assert!(
                    g.sessions.contains_key(worker),
                    "grant to a worker with a session"
                );
                for r in partitions {
                    for p in r.start..r.end {
                        let slot = g.assignment.slot(p);
                        assert!(
                            slot.owner.is_none(),
                            "partition {p} granted to {worker} while held: {slot:?}"
                        );
                        let last = self.last_token.insert((group.clone(), p), *token);
                        assert!(
                            last.is_none_or(|l| l < *token),
                            "token of {p} went from {last:?} to {token}"
                        );
                    }
                }
            }
            Change::GroupSplit { partitions } => {
                let old: Vec<((String, u32), u64)> = self
                    .last_token
                    .iter()
                    .filter(|((g, _), _)| g == group)
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                for ((g, p), t) in old {
                    self.last_token.remove(&(g.clone(), p));
                    self.last_token.insert((g.clone(), 2 * p), t);
                    self.last_token.insert((g, 2 * p + 1), t);
                }
                let g = &before.groups[group];
                for p in 0..*partitions {
                    if g.assignment.slot(p / 2).owner.is_some() {
                        let last = self.last_token.insert((group.clone(), p), self.rev);
                        assert!(last.is_none_or(|l| l < self.rev), "split token of {p}");
                    }
                }
            }
            Change::GroupDeleted | Change::GroupCreated { .. } => {
                // Tokens are revisions, so they keep increasing across re-creation.
            }
            _ => {}
        }
    }

    /// The worker's current session id (0 when it has none).
    pub(super) fn sid(&self, worker: &str) -> u64 {
        self.group().sessions.get(worker).map_or(0, |s| s.id)
    }

    pub(super) fn group(&self) -> &Group {
        &self.state.groups["g"]
    }

    pub(super) fn create(&mut self, partitions: u32) {
        let config = GroupConfig {
            partitions,
            ..GroupConfig::default()
        };
        let r = self.cmd(Command::CreateGroup(CreateGroup {
            group: "g".into(),
            config,
        }));
        assert!(r.outcome.is_ok(), "{r:?}");
    }

    pub(super) fn join(&mut self, worker: &str, weight: u32) -> CommandResult {
        self.cmd(Command::Join(Join {
            group: "g".into(),
            worker: worker.into(),
            ttl_ms: None,
            weight,
            labels: BTreeMap::new(),
        }))
    }

    pub(super) fn rebalance(&mut self) -> CommandResult {
        self.cmd(Command::Rebalance(Rebalance { group: "g".into() }))
    }

    /// What every revoked owner would release, with its token.
    pub(super) fn pending_releases(&self) -> Vec<(String, u64, Vec<PartitionRange>)> {
        let mut by: BTreeMap<(String, u64), Vec<PartitionRange>> = BTreeMap::new();
        for (range, slot) in self.group().assignment.runs() {
            if let (Some(owner), Some(_)) = (&slot.owner, &slot.revoking) {
                by.entry((owner.clone(), slot.token))
                    .or_default()
                    .push(range);
            }
        }
        by.into_iter().map(|((w, t), r)| (w, t, r)).collect()
    }

    /// Has every revoked owner release what it is asked to.
    pub(super) fn settle_releases(&mut self) {
        for (worker, token, partitions) in self.pending_releases() {
            let r = self.cmd(Command::Release(Release {
                group: "g".into(),
                session: self.sid(&worker),
                worker,
                partitions,
                token,
            }));
            assert!(r.outcome.is_ok(), "a correct release is accepted: {r:?}");
        }
    }

    /// Rebalances and has every revoked owner release, until nothing changes.
    /// Returns the number of handoffs carried out.
    pub(super) fn settle(&mut self) -> u64 {
        let mut handed_off = 0;
        for _ in 0..10_000 {
            let plan = self.rebalance();
            let releases = self.pending_releases();
            if plan.events.is_empty() && releases.is_empty() {
                return handed_off;
            }
            handed_off += releases
                .iter()
                .flat_map(|(_, _, partitions)| partitions)
                .map(|r| u64::from(r.len()))
                .sum::<u64>();
            self.settle_releases();
        }
        panic!("the group did not settle");
    }

    pub(super) fn counts(&self) -> BTreeMap<String, u32> {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for (range, slot) in self.group().assignment.runs() {
            if let Some(o) = &slot.owner {
                *counts.entry(o.clone()).or_default() += range.len();
            }
        }
        counts
    }

    pub(super) fn owners(&self) -> Vec<Option<String>> {
        let g = self.group();
        (0..g.config.partitions)
            .map(|p| g.assignment.slot(p).owner.clone())
            .collect()
    }

    /// Every active worker holds ⌊P·w/W⌋ or ⌈P·w/W⌉, nothing is free, and no
    /// draining worker is left.
    pub(super) fn assert_balanced(&self) {
        let g = self.group();
        let p = u64::from(g.config.partitions);
        let total: u64 = g.sessions.values().map(|s| u64::from(s.weight)).sum();
        assert!(
            g.sessions.values().all(|s| s.state == SessionState::Active),
            "drained workers are gone"
        );
        if total == 0 {
            return;
        }
        let counts = self.counts();
        for (w, s) in &g.sessions {
            let share = p * u64::from(s.weight);
            let have = u64::from(counts.get(w).copied().unwrap_or(0));
            assert!(
                have * total + total > share && have * total < share + total,
                "{w} holds {have} of {p}, share {:.2}: {counts:?}",
                share as f64 / total as f64
            );
        }
        assert_eq!(
            counts.values().map(|c| u64::from(*c)).sum::<u64>(),
            p,
            "every partition is held"
        );
        assert!(
            counts.keys().all(|w| g.sessions.contains_key(w)),
            "only live workers hold partitions"
        );
    }
}

pub(super) fn range(start: u32, end_inclusive: u32) -> PartitionRange {
    PartitionRange::new(start, end_inclusive + 1)
}

/// Per worker of `group`: its partitions with their tokens and handoffs.
fn holdings(state: &State, group: &str) -> BTreeMap<String, Vec<(u32, u64, bool)>> {
    let mut held: BTreeMap<String, Vec<(u32, u64, bool)>> = BTreeMap::new();
    if let Some(g) = state.groups.get(group) {
        for (range, slot) in g.assignment.runs() {
            if let Some(owner) = &slot.owner {
                held.entry(owner.clone()).or_default().extend(
                    (range.start..range.end).map(|p| (p, slot.token, slot.revoking.is_some())),
                );
            }
        }
    }
    held
}
