//! What the leader does on its own, every tick: expire sessions whose lease has
//! passed, end the sessions of owners that did not release within the group's
//! handoff timeout, and carry out the rebalancer's plan where it has one.
//!
//! It also compacts the event history by the retention settings, with a
//! committed command so every replica drops the same revisions, and purges
//! expired tombstones, [`PURGE_BATCH`] at a time.
//!
//! Idle, it proposes nothing: a group whose plan is empty, whose sessions
//! keep their leases and whose tombstones are all alive writes no log entry.
//!
//! Its commands go through [`Leader::propose`] like every client's, so the
//! leader's check answers one that would change nothing (a session that
//! already ended, a purge with nothing left) without writing it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::watch;

use super::leases::{ended, Leases, SessionKey};
use super::load_reports::{self, Reported};
use super::{ClusterError, Leader};
use crate::clock::now_ms;
use crate::config::HistoryRetention;
use crate::domain::command::{Compact, ExpireSession, PurgeTombstones, Rebalance, RebalanceByLoad};
use crate::domain::load::LoadSnapshot;
use crate::domain::{rebalancer, Command, Reply, SessionState, State};
use crate::store::StateMachineStore;

/// How often the leader looks; also the debounce of rebalancing after a change.
pub const TICK: Duration = Duration::from_millis(100);

/// Tombstones one purge command removes at most: bounds one log entry and
/// the work of applying it on every replica.
pub const PURGE_BATCH: u32 = 1_000;
/// Purge commands per group and tick at most: keeps up with 100,000
/// expiries a second and leaves the log to other work in between.
const PURGES_PER_TICK: usize = 10;

/// Sessions of the state, as the lease tracker wants them.
fn sessions(state: &State) -> Vec<(SessionKey, u64, Duration)> {
    state
        .groups
        .iter()
        .flat_map(|(group, g)| {
            g.sessions.iter().map(move |(worker, s)| {
                (
                    SessionKey {
                        group: group.clone(),
                        worker: worker.clone(),
                    },
                    s.id,
                    Duration::from_millis(s.ttl_ms),
                )
            })
        })
        .collect()
}

/// What one tick found to do.
struct Work {
    /// The revision the survey read.
    revision: u64,
    sessions: Vec<(SessionKey, u64, Duration)>,
    /// Sessions whose lease the leader no longer renews, with the reason:
    /// owners holding a handoff past the group's timeout, evicted workers
    /// and the sessions of a group being deleted. All read from the
    /// committed state each tick, so a new leader refuses them too.
    ended: Vec<(SessionKey, &'static str)>,
    /// Groups whose rebalancer plan is not empty.
    to_rebalance: Vec<String>,
    /// Groups that balance by load and have a round to run, with the load
    /// figures it plans from.
    to_balance: Vec<(String, LoadSnapshot, bool)>,
    /// Groups that balance by load and want a round (run now or not).
    wanting: Vec<String>,
    /// Groups with expired tombstones.
    to_purge: Vec<String>,
    compacted: u64,
}

/// The workers holding partitions of `g`.
fn holders(g: &crate::domain::Group) -> std::collections::BTreeSet<&str> {
    g.assignment
        .runs()
        .filter_map(|(_, slot)| slot.owner.as_deref())
        .collect()
}

/// What one tick plans with: whether plans are due, and the load figures.
struct Planning<'a> {
    due: bool,
    reports: &'a BTreeMap<String, Vec<(String, Reported)>>,
    /// When this leader last proposed a load round, per group.
    last_round: &'a BTreeMap<String, Instant>,
    /// When a group was first seen wanting the round it has not had yet.
    noticed: &'a BTreeMap<String, Instant>,
    /// How long this node has led (tracked leases): reports are complete
    /// only after a lease TTL.
    in_office_for: Duration,
}

fn survey(state: &State, now_ms: u64, planning: &Planning) -> Work {
    let mut ended = Vec::new();
    let mut to_rebalance = Vec::new();
    let mut to_balance = Vec::new();
    let mut wanting = Vec::new();
    let mut to_purge = Vec::new();
    for (name, g) in &state.groups {
        let key = |worker: &String| SessionKey {
            group: name.clone(),
            worker: worker.clone(),
        };
        for (worker, s) in &g.sessions {
            if g.deleting {
                ended.push((key(worker), ended::DELETING));
            } else if s.state == SessionState::Evicting {
                ended.push((key(worker), ended::EVICTED));
            }
        }
        for (_, slot) in g.assignment.runs() {
            if let (Some(owner), Some(r)) = (&slot.owner, &slot.revoking) {
                if r.since_ms.saturating_add(g.config.handoff_timeout_ms) <= now_ms {
                    ended.push((key(owner), ended::OVERDUE));
                }
            }
        }
        match state.load.get(name) {
            _ if !planning.due => {}
            // Committed load rules mean every member reads load rounds
            // (`SetLoadRules` waited for that; `add-node` refuses others).
            Some(load) => {
                let reports = planning.reports.get(name).map_or(&[][..], Vec::as_slice);
                let snapshot = load_reports::snapshot_of(g, reports);
                // A new leader has heard from every live worker only after
                // a lease TTL: until then it places what needs a holder
                // and moves nothing to balance (and never falls back to
                // the count rules, which would undo the balance).
                let longest_ttl = g.sessions.values().map(|s| s.ttl_ms).max().unwrap_or(0);
                let place_only = planning.in_office_for < Duration::from_millis(longest_ttl);
                let round = rebalancer::plan_by_load(
                    g,
                    now_ms,
                    &snapshot,
                    &load.rules,
                    &load.moved_at,
                    place_only,
                );
                if !round.plan.is_empty() {
                    wanting.push(name.clone());
                }
                // A balancing round plans from figures newer than what it
                // follows: every worker holding partitions has reported
                // since the round was first wanted (a tick before at the
                // earliest) and since the last round: after the load moved,
                // from every worker's new figures, not from the first to
                // report; after a round, with what it moved in them. Or a
                // lease TTL has passed. A holder that never reported is not
                // waited for (it may never report). Placing does not wait.
                let since = planning.noticed.get(name).map(|&noticed| {
                    planning
                        .last_round
                        .get(name)
                        .map_or(noticed, |&last| last.max(noticed))
                });
                let fresh = since.is_some_and(|since| {
                    let holders = holders(g);
                    reports
                        .iter()
                        .filter(|(w, _)| holders.contains(w.as_str()))
                        .all(|(_, r)| r.reported_since(since))
                        || since.elapsed() >= Duration::from_millis(longest_ttl)
                });
                if !round.plan.is_empty() && (round.placed > 0 || fresh) {
                    // Placing on figures that are not fresh: nothing moves
                    // to balance in the same round.
                    to_balance.push((name.clone(), snapshot, place_only || !fresh));
                }
            }
            _ => {
                if !rebalancer::plan(g, now_ms).is_empty() {
                    to_rebalance.push(name.clone());
                }
            }
        }
        if g.tombstones.any_expired(now_ms) {
            to_purge.push(name.clone());
        }
    }
    ended.sort();
    ended.dedup_by(|a, b| a.0 == b.0);
    Work {
        revision: state.revision,
        sessions: sessions(state),
        ended,
        to_rebalance,
        to_balance,
        wanting,
        to_purge,
        compacted: state.compacted,
    }
}

/// Runs until `stop` turns true. A tick's work (which waits on Raft, and so on
/// a quorum) is abandoned when `stop` turns, so a node that lost its quorum
/// still shuts down.
pub async fn run(
    leader: Leader,
    leases: Arc<Leases>,
    retention: HistoryRetention,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    let mut planned = Planned::default();
    let mut compaction = Compaction::new(retention);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            () = one_tick(&leader, &leases, &mut planned, &mut compaction) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// How often the plans are recomputed when the state has not changed (only
/// time then matters: restart-grace reservations lapsing).
const REPLAN_IDLE: Duration = Duration::from_secs(1);

/// The revision and time of the last time the plans were computed.
#[derive(Default)]
struct Planned {
    last: Option<(u64, Instant)>,
    /// When a load round was last proposed, per group.
    rounds: BTreeMap<String, Instant>,
    /// When each group that wants a load round was first seen wanting it.
    noticed: BTreeMap<String, Instant>,
}

impl Planned {
    /// Plans are computed under the state lock, which apply waits on: only
    /// when the state changed, or now and then for time-driven changes.
    fn due(&self, revision: u64) -> bool {
        self.last
            .is_none_or(|(r, at)| r != revision || at.elapsed() >= REPLAN_IDLE)
    }
}

/// Decides when to compact the event history: keeps at most
/// `retention.revisions` revisions and nothing older than `retention.age`,
/// in steps of a tenth of the revision limit so compaction itself adds few
/// log entries (and none on an idle cluster).
struct Compaction {
    retention: HistoryRetention,
    /// (when, revision) seen by this leader, oldest first, about one a second.
    samples: VecDeque<(Instant, u64)>,
    /// The newest revision seen longer than `retention.age` ago.
    aged_out: u64,
}

const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Compaction {
    fn new(retention: HistoryRetention) -> Self {
        Self {
            retention,
            samples: VecDeque::new(),
            aged_out: 0,
        }
    }

    /// Forgets what an earlier term saw: ages are measured from this term's
    /// start, which only keeps history longer.
    fn reset(&mut self) {
        self.samples.clear();
        self.aged_out = 0;
    }

    /// The revision to compact up to, if it is time.
    fn due(&mut self, now: Instant, revision: u64, compacted: u64) -> Option<u64> {
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= SAMPLE_EVERY)
        {
            self.samples.push_back((now, revision));
        }
        while let Some(&(at, rev)) = self.samples.front() {
            if now.duration_since(at) < self.retention.age {
                break;
            }
            self.aged_out = rev;
            self.samples.pop_front();
        }
        let by_count = revision.saturating_sub(self.retention.revisions);
        let target = by_count.max(self.aged_out).min(revision.saturating_sub(1));
        let step = (self.retention.revisions / 10).max(1);
        (target >= compacted + step).then_some(target)
    }
}

/// How long one Raft call of the duties may wait (for a quorum, say).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

async fn one_tick(
    leader: &Leader,
    leases: &Leases,
    planned: &mut Planned,
    compaction: &mut Compaction,
) {
    let (raft, sm) = (leader.raft(), leader.state_machine());
    let metrics = leader.metrics();
    if metrics.state != ServerState::Leader || metrics.current_leader != Some(metrics.id) {
        leases.leave_office();
        compaction.reset();
        return;
    }
    if !leases.in_office(metrics.current_term) {
        // Everything committed by earlier leaders must be applied before the
        // sessions are read, or a recent join would be missed.
        match tokio::time::timeout(CALL_TIMEOUT, raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let sessions = sm.read(sessions);
        tracing::info!(
            term = metrics.current_term,
            sessions = sessions.len(),
            "leading: every lease restarts with a full TTL"
        );
        leases.take_office(metrics.current_term, sessions);
    }
    let now = now_ms();
    // Plans are due when the state changed, or now and then: decided from
    // the revision before the state lock is taken for the survey (a change
    // in between is planned for on the next tick). The load reports are
    // copied only then, and before that lock (keepalives record into them).
    let revision = sm.read(|s| s.revision);
    let due = planned.due(revision);
    let reports = if due {
        planned.last = Some((revision, Instant::now()));
        leases.all_load_reports()
    } else {
        BTreeMap::new()
    };
    let in_office_for = leases.in_office_for();
    let work = sm.read(|s| {
        let planning = Planning {
            due,
            reports: &reports,
            last_round: &planned.rounds,
            noticed: &planned.noticed,
            in_office_for,
        };
        survey(s, now, &planning)
    });
    if due {
        let seen = Instant::now();
        planned.noticed.retain(|g, _| work.wanting.contains(g));
        for group in &work.wanting {
            planned.noticed.entry(group.clone()).or_insert(seen);
        }
    }
    leases.sync(work.sessions, work.revision);
    for (key, reason) in work.ended {
        leases.end(&key, reason.to_string());
    }
    for (key, session) in leases.expired(Instant::now()) {
        tracing::info!(group = %key.group, worker = %key.worker, session, "lease expired");
        let command = Command::ExpireSession(ExpireSession {
            group: key.group,
            worker: key.worker,
            session,
        });
        propose(leader, command, now_ms()).await;
    }
    for group in work.to_rebalance {
        propose(leader, Command::Rebalance(Rebalance { group }), now_ms()).await;
    }
    for (group, snapshot, place_only) in work.to_balance {
        planned.rounds.insert(group.clone(), Instant::now());
        let round = Command::RebalanceByLoad(RebalanceByLoad {
            group,
            snapshot,
            place_only,
        });
        propose(leader, round, now_ms()).await;
    }
    for group in work.to_purge {
        purge(leader, sm, group, now).await;
    }
    if let Some(revision) = compaction.due(Instant::now(), work.revision, work.compacted) {
        tracing::debug!(revision, "compacting the event history");
        propose(leader, Command::Compact(Compact { revision }), now_ms()).await;
    }
}

/// Purges `group`'s tombstones expired at `now_ms`, a batch at a time, for
/// as long as the state says some are left (so no entry purges nothing).
async fn purge(leader: &Leader, sm: &StateMachineStore, group: String, now_ms: u64) {
    for _ in 0..PURGES_PER_TICK {
        let command = Command::PurgeTombstones(PurgeTombstones {
            group: group.clone(),
            limit: PURGE_BATCH,
        });
        let Some(Reply::Purged { count }) = propose(leader, command, now_ms).await else {
            return;
        };
        tracing::debug!(group, count, "purged expired tombstones");
        // The write returns once applied here, so the state is current.
        let more = sm.read(|s| {
            s.groups
                .get(&group)
                .is_some_and(|g| g.tombstones.any_expired(now_ms))
        });
        if !more {
            return;
        }
    }
}

/// Proposes `command` stamped `at_ms` (on the one path every caller uses,
/// the leader's check first); its reply if it was applied, or answered by
/// the check as changing nothing.
async fn propose(leader: &Leader, command: Command, at_ms: u64) -> Option<Reply> {
    match tokio::time::timeout(CALL_TIMEOUT, leader.propose_at(command.clone(), at_ms)).await {
        Ok(Ok(committed)) => Some(committed.reply),
        Ok(Err(ClusterError::Domain(e))) => {
            tracing::debug!("{command:?} changed nothing: {e}");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!("{command:?} not committed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("{command:?} not committed within {CALL_TIMEOUT:?} (no quorum?)");
            None
        }
    }
}
