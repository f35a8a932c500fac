//! Worker leases, tracked on the leader in memory.
//!
//! Keepalives only move a deadline here; they are never written to the Raft
//! log, so an idle cluster writes nothing. When a deadline passes, the leader's
//! duties (see `duties.rs`) propose `ExpireSession`. A node that takes office
//! first gives every session a full TTL from that moment, so a leader change
//! never expires a worker that kept its lease alive: the worker's own deadline
//! (counted from its last acknowledged keepalive) always comes first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::load_reports::{Report, Reported};

/// A session's place in the tracker.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub group: String,
    pub worker: String,
}

struct Lease {
    session: u64,
    ttl: Duration,
    deadline: Instant,
    /// Why the leader no longer renews it (the lease then runs out).
    ended: Option<String>,
    /// The worker's load reports (see `load_reports.rs`).
    reported: Reported,
}

impl Lease {
    fn new(session: u64, ttl: Duration, deadline: Instant) -> Self {
        Self {
            session,
            ttl,
            deadline,
            ended: None,
            reported: Reported::default(),
        }
    }
}

/// Why the leader stops renewing a session, from the committed state.
pub mod ended {
    pub const OVERDUE: &str = "it did not release revoked partitions within the group's handoff timeout; its session ends when its lease runs out";
    pub const EVICTED: &str = "an operator evicted it; its session ends when its lease runs out";
    pub const DELETING: &str =
        "its group is being deleted; its session ends when its lease runs out";
}

/// Why a keepalive was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This node is not (or not yet) tracking leases as leader.
    NotLeader,
    /// No such session (never joined, left, or expired).
    Unknown,
    /// The leader stopped renewing it; the reason says why.
    Ended(String),
}

#[derive(Default)]
pub struct Leases {
    inner: Mutex<Tracker>,
}

#[derive(Default)]
struct Tracker {
    /// The leader term the deadlines belong to; `None` when not leading.
    term: Option<u64>,
    /// When this node took office for `term`.
    office_since: Option<Instant>,
    leases: HashMap<SessionKey, Lease>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True if this node already tracks leases for `term`.
    pub fn in_office(&self, term: u64) -> bool {
        self.lock().term == Some(term)
    }

    /// Starts tracking as leader of `term`: every session gets a full TTL from now.
    pub fn take_office(&self, term: u64, sessions: Vec<(SessionKey, u64, Duration)>) {
        let now = Instant::now();
        let mut t = self.lock();
        t.term = Some(term);
        t.office_since = Some(now);
        t.leases = sessions
            .into_iter()
            .map(|(key, session, ttl)| (key, Lease::new(session, ttl, now + ttl)))
            .collect();
    }

    pub fn leave_office(&self) {
        let mut t = self.lock();
        t.term = None;
        t.office_since = None;
        t.leases.clear();
    }

    /// Matches the tracker to the sessions of the state at revision `as_of`:
    /// new ones get a full TTL from now; ones gone by then are forgotten. A
    /// session that joined after `as_of` (its id is its join revision) is kept:
    /// the state read here predates it.
    pub fn sync(&self, sessions: Vec<(SessionKey, u64, Duration)>, as_of: u64) {
        let now = Instant::now();
        let mut t = self.lock();
        if t.term.is_none() {
            return;
        }
        let mut next = HashMap::with_capacity(sessions.len());
        for (key, session, ttl) in sessions {
            let lease = match t.leases.remove(&key) {
                Some(lease) if lease.session == session || lease.session > as_of => lease,
                _ => Lease::new(session, ttl, now + ttl),
            };
            next.insert(key, lease);
        }
        next.extend(t.leases.drain().filter(|(_, lease)| lease.session > as_of));
        t.leases = next;
    }

    /// Starts tracking a session that just joined (if this node is in office).
    pub fn add(&self, key: SessionKey, session: u64, ttl: Duration) {
        let mut t = self.lock();
        if t.term.is_some() {
            t.leases
                .insert(key, Lease::new(session, ttl, Instant::now() + ttl));
        }
    }

    /// A keepalive whose arrival a quorum confirmed this node leads in
    /// `term` afterwards (see `leadership.rs`): pushes the deadline to
    /// now + TTL and returns the TTL. Refused unless the tracker holds the
    /// deadlines of that same term: a tracker of an older term may hold
    /// deadlines that another leader has since let pass.
    pub fn renew(&self, key: &SessionKey, session: u64, term: u64) -> Result<Duration, Refusal> {
        let mut t = self.lock();
        if t.term != Some(term) {
            return Err(Refusal::NotLeader);
        }
        let lease = t
            .leases
            .get_mut(key)
            .filter(|l| l.session == session)
            .ok_or(Refusal::Unknown)?;
        if let Some(reason) = &lease.ended {
            return Err(Refusal::Ended(reason.clone()));
        }
        let now = Instant::now();
        // A lease that ran out stays out, even if its keepalive arrived in
        // time and only its confirmation came late: `ExpireSession` may be
        // on its way already, and a client must never be told it holds a
        // lease that the leader is handing away.
        if lease.deadline <= now {
            return Err(Refusal::Ended(
                "its lease ran out before this keepalive could be confirmed".into(),
            ));
        }
        lease.deadline = now + lease.ttl;
        Ok(lease.ttl)
    }

    /// A tracked session of `key`: its id, how long until its lease runs
    /// out unless renewed, and why it is no longer renewed (if it is not).
    pub fn standing(&self, key: &SessionKey) -> Option<(u64, Duration, Option<String>)> {
        let t = self.lock();
        let lease = t.leases.get(key)?;
        let left = lease.deadline.saturating_duration_since(Instant::now());
        Some((lease.session, left, lease.ended.clone()))
    }

    /// Stops renewing a session; it expires when its current deadline passes.
    pub fn end(&self, key: &SessionKey, reason: String) {
        if let Some(lease) = self.lock().leases.get_mut(key) {
            lease.ended.get_or_insert(reason);
        }
    }

    /// Sessions whose deadline has passed, with their session id.
    pub fn expired(&self, now: Instant) -> Vec<(SessionKey, u64)> {
        let t = self.lock();
        let mut out: Vec<(SessionKey, u64)> = t
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(k, l)| (k.clone(), l.session))
            .collect();
        out.sort();
        out
    }

    /// Records the load report of a keepalive that renewed session
    /// `session` of `key`.
    pub fn record_load(&self, key: &SessionKey, session: u64, report: Report) {
        if let Some(lease) = self
            .lock()
            .leases
            .get_mut(key)
            .filter(|l| l.session == session)
        {
            lease.reported.update(report);
        }
    }

    /// The load reports of `group`'s workers (empty when none reported).
    pub fn load_reports(&self, group: &str) -> Vec<(String, Reported)> {
        let t = self.lock();
        t.leases
            .iter()
            .filter(|(key, lease)| key.group == group && !lease.reported.is_empty())
            .map(|(key, lease)| (key.worker.clone(), lease.reported.clone()))
            .collect()
    }

    /// Every group's load reports.
    pub fn all_load_reports(&self) -> BTreeMap<String, Vec<(String, Reported)>> {
        let t = self.lock();
        let mut by_group: BTreeMap<String, Vec<(String, Reported)>> = BTreeMap::new();
        for (key, lease) in &t.leases {
            if !lease.reported.is_empty() {
                by_group
                    .entry(key.group.clone())
                    .or_default()
                    .push((key.worker.clone(), lease.reported.clone()));
            }
        }
        by_group
    }

    /// How long this node has tracked leases as leader (zero when it does
    /// not): a worker reports load on every keepalive, so after one lease
    /// TTL in office the leader has heard every live worker.
    pub fn in_office_for(&self) -> Duration {
        self.lock()
            .office_since
            .map_or(Duration::ZERO, |since| since.elapsed())
    }

    pub fn tracked(&self) -> usize {
        self.lock().leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(w: &str) -> SessionKey {
        SessionKey {
            group: "g".into(),
            worker: w.into(),
        }
    }

    #[test]
    fn renewals_push_the_deadline_and_refusals_say_why() {
        let leases = Leases::default();
        assert_eq!(leases.renew(&key("a"), 1, 3), Err(Refusal::NotLeader));
        let ttl = Duration::from_secs(5);
        leases.take_office(3, vec![(key("a"), 1, ttl)]);
        assert!(leases.in_office(3) && !leases.in_office(4));
        assert_eq!(leases.renew(&key("a"), 1, 3), Ok(ttl));
        assert_eq!(
            leases.renew(&key("a"), 1, 4),
            Err(Refusal::NotLeader),
            "leadership confirmed in another term renews nothing of this one"
        );
        assert_eq!(
            leases.renew(&key("a"), 2, 3),
            Err(Refusal::Unknown),
            "another session of a"
        );
        assert_eq!(leases.renew(&key("b"), 1, 3), Err(Refusal::Unknown));
        assert!(leases.expired(Instant::now()).is_empty());
        assert_eq!(
            leases.expired(Instant::now() + ttl + Duration::from_millis(1)),
            vec![(key("a"), 1)]
        );
        leases.add(key("s"), 7, Duration::ZERO);
        assert!(
            matches!(leases.renew(&key("s"), 7, 3), Err(Refusal::Ended(_))),
            "a lease that ran out is not renewed"
        );
        leases.end(&key("a"), "handoff timeout".into());
        assert_eq!(
            leases.renew(&key("a"), 1, 3),
            Err(Refusal::Ended("handoff timeout".into()))
        );
        leases.leave_office();
        assert_eq!(leases.renew(&key("a"), 1, 3), Err(Refusal::NotLeader));
    }

    #[test]
    fn sync_adds_new_sessions_forgets_gone_ones_and_keeps_later_joins() {
        let leases = Leases::default();
        let ttl = Duration::from_secs(5);
        leases.take_office(1, vec![(key("a"), 1, ttl), (key("b"), 2, ttl)]);
        leases.end(&key("a"), "x".into());
        leases.add(key("d"), 9, ttl);
        // The state read at revision 5 has a and c; b is gone; d joined later.
        leases.sync(vec![(key("a"), 1, ttl), (key("c"), 3, ttl)], 5);
        assert_eq!(leases.tracked(), 3);
        assert_eq!(
            leases.renew(&key("d"), 9, 1),
            Ok(ttl),
            "a join after the read is kept"
        );
        assert_eq!(leases.renew(&key("b"), 2, 1), Err(Refusal::Unknown));
        assert_eq!(leases.renew(&key("c"), 3, 1), Ok(ttl));
        assert!(
            matches!(leases.renew(&key("a"), 1, 1), Err(Refusal::Ended(_))),
            "state kept across sync"
        );
    }
}
