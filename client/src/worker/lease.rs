//! The worker's own view of its lease, kept earlier than the server's.
//!
//! The leader counts a lease from when it *received* a keepalive; the worker
//! counts from when it *sent* it, shortens the TTL by the allowed clock-rate
//! drift, and takes a safety margin off that. So the worker always gives up
//! before the leader could hand its partitions to someone else (G1). The
//! deadline is kept on the boot clock (`clock.rs`), which counts a suspend.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::clock::{BootInstant, Stamp, RECHECK};

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
    /// What is left of the TTL once drift and margin are taken off.
    pub fn usable(&self) -> Duration {
        let usable = self.ttl.mul_f64((1.0 - self.max_drift).clamp(0.0, 1.0));
        usable.saturating_sub(self.margin)
    }

    /// The local deadline of a keepalive sent at `sent` and acknowledged.
    pub fn deadline(&self, sent: Stamp) -> Stamp {
        sent.after(self.usable())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseState {
    /// Which session (1, 2, … for each join of this worker) this is.
    pub epoch: u64,
    pub deadline: Stamp,
    /// Set once, when the deadline was seen to pass or the lease was ended
    /// early; nothing brings it back (a new join starts a new epoch).
    pub lost_at: Option<Stamp>,
    /// The server said the session is gone: nothing is left to end there.
    pub gone: bool,
}

impl LeaseState {
    /// Whether the lease holds at boot-clock time `now`.
    pub fn holds_at(&self, epoch: u64, now: BootInstant) -> bool {
        self.epoch == epoch && self.lost_at.is_none() && now < self.deadline.boot
    }

    /// When the lease stopped holding, as of boot-clock time `now`: the
    /// deadline, or the moment it was ended early, whichever came first;
    /// `None` while it holds.
    pub fn ended_at(&self, now: BootInstant) -> Option<Stamp> {
        match self.lost_at {
            Some(lost) if lost.boot < self.deadline.boot => Some(lost),
            Some(_) => Some(self.deadline),
            None => (now >= self.deadline.boot).then_some(self.deadline),
        }
    }
}

/// The lease shared by the keepalive loop, the event stream and every grant.
pub struct Lease {
    state: Mutex<LeaseState>,
    changes: watch::Sender<LeaseState>,
}

impl Lease {
    pub fn new(epoch: u64, deadline: Stamp) -> Self {
        let state = LeaseState {
            epoch,
            deadline,
            lost_at: None,
            gone: false,
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

    /// Whether the lease of `epoch` still holds right now. Reads the boot
    /// clock, so it is right even when no task has run since the deadline
    /// passed, and after a suspend.
    pub fn valid(&self, epoch: u64) -> bool {
        self.state().holds_at(epoch, BootInstant::now())
    }

    /// When the lease of `epoch` stopped holding (see
    /// [`LeaseState::ended_at`]); `None` while it holds or if `epoch` is not
    /// the current lease.
    pub fn ended(&self, epoch: u64) -> Option<Stamp> {
        let s = self.state();
        if s.epoch != epoch {
            return None;
        }
        s.ended_at(BootInstant::now())
    }

    /// A keepalive sent at `sent` was acknowledged. Extends the lease unless
    /// it had already run out: an acknowledgement that arrives after the
    /// deadline does not revive it, since the worker may have been
    /// unprotected in between. Returns whether the lease holds.
    pub fn acknowledged(&self, epoch: u64, sent: Stamp, new_deadline: Stamp) -> bool {
        let now = Stamp::now();
        let s = self.update(|s| {
            if s.epoch != epoch || s.lost_at.is_some() {
                return;
            }
            if now.boot >= s.deadline.boot {
                s.lost_at = Some(now);
            } else if new_deadline.boot > s.deadline.boot && sent.boot <= now.boot {
                s.deadline = new_deadline;
            }
        });
        s.holds_at(epoch, now.boot)
    }

    /// Ends the lease of `epoch` now, if it still held (the deadline was
    /// seen to pass, the session could not be served, or a forced shutdown).
    pub fn lose(&self, epoch: u64) {
        self.update(|s| {
            if s.epoch == epoch && s.lost_at.is_none() {
                s.lost_at = Some(Stamp::now());
            }
        });
    }

    /// The server said the session of `epoch` is gone: the lease ends now.
    pub fn gone(&self, epoch: u64) {
        self.update(|s| {
            if s.epoch == epoch {
                s.gone = true;
                if s.lost_at.is_none() {
                    s.lost_at = Some(Stamp::now());
                }
            }
        });
    }

    /// Starts the lease of a new session.
    pub fn begin(&self, epoch: u64, deadline: Stamp) {
        self.update(|s| {
            *s = LeaseState {
                epoch,
                deadline,
                lost_at: None,
                gone: false,
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.changes.subscribe()
    }

    /// Returns when the lease of `epoch` is lost (at its deadline at the
    /// latest, give or take [`RECHECK`] after a suspend), or at once if it is
    /// not the current lease. The timer only wakes the task: what decides is
    /// the boot clock, re-read on every wake.
    pub async fn lost(&self, epoch: u64) {
        let mut changes = self.subscribe();
        loop {
            let s = *changes.borrow_and_update();
            if s.epoch != epoch || s.lost_at.is_some() {
                return;
            }
            let left = s
                .deadline
                .boot
                .saturating_duration_since(BootInstant::now());
            if left.is_zero() {
                self.lose(epoch);
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(left.min(RECHECK)) => {}
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

    fn at(secs: u64) -> BootInstant {
        BootInstant::from_duration(Duration::from_secs(secs))
    }

    #[test]
    fn the_local_deadline_is_earlier_than_the_servers() {
        let sent = Stamp::now();
        // 10 s minus 1 % drift (100 ms) minus the 500 ms margin, on both clocks.
        let d = rules().deadline(sent);
        let usable = Duration::from_millis(9_400);
        assert_eq!(d.boot.saturating_duration_since(sent.boot), usable);
        assert_eq!(d.instant - sent.instant, usable);
        // A margin larger than the TTL leaves nothing rather than wrapping.
        let tight = LeaseRules {
            margin: Duration::from_secs(60),
            ..rules()
        };
        assert_eq!(tight.deadline(sent), sent);
        // A drift outside 0..=1 is clamped: never a longer lease than the TTL.
        let odd = LeaseRules {
            max_drift: -0.5,
            margin: Duration::ZERO,
            ..rules()
        };
        assert_eq!(odd.usable(), Duration::from_secs(10));
    }

    #[test]
    fn validity_follows_the_boot_clock_through_a_suspend() {
        // A keepalive sent at boot time 100 s: the lease holds until 109.4 s
        // on the boot clock, whatever Instant says.
        let sent = Stamp {
            boot: at(100),
            instant: std::time::Instant::now(),
        };
        let s = LeaseState {
            epoch: 1,
            deadline: rules().deadline(sent),
            lost_at: None,
            gone: false,
        };
        assert!(s.holds_at(1, at(109)));
        // Suspended from 101 s to 200 s: Instant moved 1 s, the boot clock 100 s.
        assert!(
            !s.holds_at(1, at(200)),
            "a suspend past the deadline ends it"
        );
        assert_eq!(s.ended_at(at(200)), Some(s.deadline));
        assert_eq!(s.ended_at(at(105)), None, "still holding");
        assert!(
            !s.holds_at(2, at(101)),
            "another session's lease is not this one"
        );
    }

    #[test]
    fn an_early_end_is_when_it_was_ended_and_a_late_notice_is_the_deadline() {
        let sent = Stamp {
            boot: at(100),
            instant: std::time::Instant::now(),
        };
        let deadline = rules().deadline(sent);
        let early = sent.after(Duration::from_secs(2));
        let late = sent.after(Duration::from_secs(30));
        let state = |lost_at| LeaseState {
            epoch: 1,
            deadline,
            lost_at: Some(lost_at),
            gone: false,
        };
        assert_eq!(state(early).ended_at(at(300)), Some(early));
        assert_eq!(state(late).ended_at(at(300)), Some(deadline));
    }

    #[test]
    fn an_acknowledgement_extends_a_live_lease() {
        let start = Stamp::now();
        let lease = Lease::new(1, start.after(Duration::from_secs(5)));
        assert!(lease.valid(1));
        assert!(!lease.valid(2), "another session's lease is not this one");
        let nine = start.after(Duration::from_secs(9));
        assert!(lease.acknowledged(1, start, nine));
        assert_eq!(lease.state().deadline, nine);
        // An older keepalive's late answer never shortens it.
        assert!(lease.acknowledged(1, start, start.after(Duration::from_secs(6))));
        assert_eq!(lease.state().deadline, nine);
        assert_eq!(lease.ended(1), None);
    }

    #[test]
    fn an_acknowledgement_after_the_deadline_does_not_revive_the_lease() {
        let start = Stamp::now();
        let lease = Lease::new(1, start);
        assert!(!lease.valid(1), "the deadline is now");
        assert!(!lease.acknowledged(1, start, start.after(Duration::from_secs(60))));
        assert!(lease.state().lost_at.is_some());
        assert!(!lease.valid(1));
        assert_eq!(lease.ended(1), Some(start), "it ended at the deadline");
    }

    #[test]
    fn a_new_session_starts_a_new_lease() {
        let start = Stamp::now();
        let lease = Lease::new(1, start.after(Duration::from_secs(5)));
        lease.lose(1);
        assert!(!lease.valid(1));
        let ended = lease.ended(1).expect("ended");
        assert!(ended.boot < lease.state().deadline.boot, "ended early");
        lease.begin(2, start.after(Duration::from_secs(5)));
        assert!(lease.valid(2));
        assert!(!lease.valid(1), "grants of the lost session stay invalid");
        assert!(!lease.state().gone);
        lease.gone(2);
        assert!(!lease.valid(2) && lease.state().gone);
    }

    #[tokio::test]
    async fn lost_fires_at_the_deadline() {
        let lease = Lease::new(1, Stamp::now().after(Duration::from_millis(20)));
        lease.lost(1).await;
        assert!(lease.state().lost_at.is_some());
        assert!(!lease.valid(1));
        assert!(BootInstant::now() >= lease.state().deadline.boot);
    }
}
