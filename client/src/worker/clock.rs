//! The clock the lease is measured on.
//!
//! `Instant` (CLOCK_MONOTONIC on Linux) and tokio's timers stop while the
//! host is suspended, but the leader's clock does not: a laptop or VM that
//! sleeps through its lease would wake up believing it still holds its
//! partitions while the server has already given them away. CLOCK_BOOTTIME
//! keeps counting through a suspend, so the lease's deadline is kept on it
//! and every validity check reads it. Elsewhere (not Linux) it falls back to
//! `Instant`, which is what the platform offers.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A reading of the boot clock: time since boot, suspended time included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Duration);

/// How often a timer waiting for a boot-clock instant wakes to re-read the
/// clock: tokio's timers do not count suspended time, so after a resume one
/// could otherwise sleep on past an instant that has already passed.
pub const RECHECK: Duration = Duration::from_millis(200);

impl BootInstant {
    pub fn now() -> Self {
        Self(read())
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    #[cfg(test)]
    pub fn from_duration(since_boot: Duration) -> Self {
        Self(since_boot)
    }
}

/// One moment read on both clocks: `boot` decides whether a lease holds,
/// `instant` is what the application compares with its own `Instant`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub boot: BootInstant,
    pub instant: Instant,
}

impl Stamp {
    pub fn now() -> Self {
        Self {
            boot: BootInstant::now(),
            instant: Instant::now(),
        }
    }

    /// `d` later on both clocks. Without a suspend in between, both clocks
    /// reach it together; with one, the boot clock gets there first, so
    /// `instant` is never earlier than the moment the boot clock passed
    /// `boot` (what makes it a safe end to report for a hold).
    pub fn after(self, d: Duration) -> Self {
        Self {
            boot: self.boot.saturating_add(d),
            // Overflows only for durations of centuries; a lease is minutes.
            instant: self.instant.checked_add(d).unwrap_or(self.instant),
        }
    }
}

/// Sleeps until the boot clock reaches `target`, re-reading it at least
/// every [`RECHECK`] (tokio's timer alone would not count a suspend).
pub async fn sleep_until(target: BootInstant) {
    loop {
        let left = target.saturating_duration_since(BootInstant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(RECHECK)).await;
    }
}

/// Where the boot clock stood when this process first read it, and the
/// `Instant` of that moment: a fallback in the same units if a later read
/// ever failed, so readings never jump between two unrelated clocks.
struct Base {
    boot: Option<Duration>,
    instant: Instant,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| Base {
        boot: boottime(),
        instant: Instant::now(),
    })
}

fn read() -> Duration {
    let base = base();
    match base.boot {
        // A read that fails after the first succeeded (it cannot, short of
        // a broken kernel) counts on from the first one without suspends.
        Some(first) => boottime().unwrap_or_else(|| first.saturating_add(base.instant.elapsed())),
        None => base.instant.elapsed(),
    }
}

#[cfg(target_os = "linux")]
fn boottime() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    Some(Duration::new(
        u64::try_from(t.tv_sec()).ok()?,
        u32::try_from(t.tv_nsec()).ok()?,
    ))
}

#[cfg(not(target_os = "linux"))]
fn boottime() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_arithmetic_saturates() {
        let t = BootInstant::from_duration(Duration::from_secs(100));
        let later = t.saturating_add(Duration::from_millis(1500));
        assert_eq!(
            later.saturating_duration_since(t),
            Duration::from_millis(1500)
        );
        assert_eq!(t.saturating_duration_since(later), Duration::ZERO);
        let end = BootInstant::from_duration(Duration::MAX);
        assert_eq!(end.saturating_add(Duration::from_secs(1)), end);
    }

    #[test]
    fn a_stamp_moves_both_clocks_by_the_same_amount() {
        let s = Stamp::now();
        let later = s.after(Duration::from_secs(9));
        assert_eq!(
            later.boot.saturating_duration_since(s.boot),
            Duration::from_secs(9)
        );
        assert_eq!(later.instant - s.instant, Duration::from_secs(9));
    }

    #[test]
    fn the_boot_clock_never_runs_slower_than_instant() {
        // It counts everything Instant counts, plus any suspend.
        let (b0, i0) = (BootInstant::now(), Instant::now());
        std::thread::yield_now();
        let (i1, b1) = (Instant::now(), BootInstant::now());
        assert!(b1 >= b0, "the boot clock went backwards");
        let slack = Duration::from_millis(1);
        assert!(b1.saturating_duration_since(b0) + slack >= i1 - i0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_it_reads_clock_boottime() {
        let before = boottime().expect("CLOCK_BOOTTIME is readable");
        let ours = BootInstant::now();
        let after = boottime().expect("CLOCK_BOOTTIME is readable");
        assert!(BootInstant(before) <= ours && ours <= BootInstant(after));
    }

    #[tokio::test]
    async fn sleep_until_returns_once_the_boot_clock_is_there() {
        let target = BootInstant::now().saturating_add(Duration::from_millis(30));
        sleep_until(target).await;
        assert!(BootInstant::now() >= target);
        // A target in the past returns at once.
        sleep_until(BootInstant::from_duration(Duration::ZERO)).await;
    }
}
