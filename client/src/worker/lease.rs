//! The worker's own view of its lease, kept earlier than the server's.
//!
//! The leader counts a lease from when it *received* a keepalive; the worker
//! counts from when it *sent* it, shortens the TTL by the allowed clock-rate
//! drift, and takes a safety margin off that. So the worker always gives up
//! before the leader could hand its partitions to someone else (G1).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How the local deadline is derived from the TTL.
#[derive(Clone, Copy, Debug)]
pub struct LeaseRules {
    pub ttl: Duration,
    /// Largest clock-rate difference allowed between worker and leader.
    pub max_drift: f64,
    /// Taken off on top of the drift: time for the application to stop.
    pub margin: Duration,
}

impl LeaseRules {
    /// The local deadline of a keepalive sent at `sent` and acknowledged.
    pub fn deadline(&self, sent: Instant) -> Instant {
        let usable = self.ttl.mul_f64((1.0 - self.max_drift).clamp(0.0, 1.0));
        sent + usable.saturating_sub(self.margin)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    /// Which session (1, 2, … for each join of this worker) this is.
    pub epoch: u64,
    pub deadline: Instant,
    /// Set once, when the deadline passed or the server ended the session;
    /// nothing brings it back (a new join starts a new epoch).
    pub lost: bool,
}

/// The lease shared by the keepalive loop, the event stream and every grant.
pub struct Lease {
    state: Mutex<LeaseState>,
    changes: watch::Sender<LeaseState>,
}

impl Lease {
    pub fn new(epoch: u64, deadline: Instant) -> Self {
        let state = LeaseState {
            epoch,
            deadline,
            lost: false,
        };
        Self {
            state: Mutex::new(state),
            changes: watch::channel(state).0,
        }
    }

    fn update(&self, f: impl FnOnce(&mut LeaseState)) -> LeaseState {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        let now = *s;
        self.changes.send_replace(now);
        now
    }

    pub fn state(&self) -> LeaseState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the lease of `epoch` still holds right now. Checks the clock,
    /// so it is right even when no task has run since the deadline passed.
    pub fn valid(&self, epoch: u64) -> bool {
        let s = self.state();
        s.epoch == epoch && !s.lost && Instant::now() < s.deadline
    }

    /// A keepalive sent at `sent` was acknowledged. Extends the lease unless
    /// it had already run out: an acknowledgement that arrives after the
    /// deadline does not revive it, since the worker may have been
    /// unprotected in between. Returns whether the lease holds.
    pub fn acknowledged(&self, epoch: u64, sent: Instant, new_deadline: Instant) -> bool {
        let now = Instant::now();
        let s = self.update(|s| {
            if s.epoch != epoch || s.lost {
                return;
            }
            if now >= s.deadline {
                s.lost = true;
            } else if new_deadline > s.deadline && sent <= now {
                s.deadline = new_deadline;
            }
        });
        s.epoch == epoch && !s.lost
    }

    /// Marks the lease of `epoch` lost (the deadline passed, or the server
    /// said the session is gone).
    pub fn lose(&self, epoch: u64) {
        self.update(|s| {
            if s.epoch == epoch {
                s.lost = true;
            }
        });
    }

    /// Starts the lease of a new session.
    pub fn begin(&self, epoch: u64, deadline: Instant) {
        self.update(|s| {
            *s = LeaseState {
                epoch,
                deadline,
                lost: false,
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.changes.subscribe()
    }

    /// Returns when the lease of `epoch` is lost (at its deadline at the
    /// latest), or at once if it is not the current lease.
    pub async fn lost(&self, epoch: u64) {
        let mut changes = self.subscribe();
        loop {
            let s = *changes.borrow_and_update();
            if s.epoch != epoch || s.lost {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(s.deadline.into()) => {
                    self.lose(epoch);
                    return;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> LeaseRules {
        LeaseRules {
            ttl: Duration::from_secs(10),
            max_drift: 0.01,
            margin: Duration::from_millis(500),
        }
    }

    #[test]
    fn the_local_deadline_is_earlier_than_the_servers() {
        let sent = Instant::now();
        // 10 s minus 1 % drift (100 ms) minus the 500 ms margin.
        assert_eq!(rules().deadline(sent), sent + Duration::from_millis(9_400));
        // A margin larger than the TTL leaves nothing rather than wrapping.
        let tight = LeaseRules {
            margin: Duration::from_secs(60),
            ..rules()
        };
        assert_eq!(tight.deadline(sent), sent);
    }

    #[test]
    fn an_acknowledgement_extends_a_live_lease() {
        let start = Instant::now();
        let lease = Lease::new(1, start + Duration::from_secs(5));
        assert!(lease.valid(1));
        assert!(!lease.valid(2), "another session's lease is not this one");
        assert!(lease.acknowledged(1, start, start + Duration::from_secs(9)));
        assert_eq!(lease.state().deadline, start + Duration::from_secs(9));
        // An older keepalive's late answer never shortens it.
        assert!(lease.acknowledged(1, start, start + Duration::from_secs(6)));
        assert_eq!(lease.state().deadline, start + Duration::from_secs(9));
    }

    #[test]
    fn an_acknowledgement_after_the_deadline_does_not_revive_the_lease() {
        let start = Instant::now();
        let lease = Lease::new(1, start);
        assert!(!lease.valid(1), "the deadline is now");
        assert!(!lease.acknowledged(1, start, start + Duration::from_secs(60)));
        assert!(lease.state().lost);
        assert!(!lease.valid(1));
    }

    #[test]
    fn a_new_session_starts_a_new_lease() {
        let start = Instant::now();
        let lease = Lease::new(1, start + Duration::from_secs(5));
        lease.lose(1);
        assert!(!lease.valid(1));
        lease.begin(2, start + Duration::from_secs(5));
        assert!(lease.valid(2));
        assert!(!lease.valid(1), "grants of the lost session stay invalid");
    }

    #[tokio::test]
    async fn lost_fires_at_the_deadline() {
        let lease = Lease::new(1, Instant::now() + Duration::from_millis(20));
        lease.lost(1).await;
        assert!(lease.state().lost);
        assert!(!lease.valid(1));
    }
}
