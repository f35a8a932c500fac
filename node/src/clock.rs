//! The node's wall clock: the one place that reads the system time.
//!
//! Leases, handoff timing and snapshot ids need wall time (milliseconds since
//! the Unix epoch, comparable across nodes as far as their clocks agree);
//! everything that needs it asks here, so the store and the layers above it
//! share one time source instead of each reading `SystemTime` its own way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before it,
/// `u64::MAX` far past it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nanoseconds since the Unix epoch (0 for a clock set before it): unique
/// enough to tell apart snapshots built at the same log position.
pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
