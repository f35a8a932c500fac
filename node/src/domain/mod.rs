//! The assignment domain: the replicated state and the commands that change it.
//!
//! Pure Rust: no async, no I/O, no clock. Every replica applies the same commands
//! in the same order and must reach the same state, so nothing here depends on
//! anything but its inputs; a proposal carries the leader's clock where time
//! matters.
//!
//! Event-sourced: a command is validated against the state and turned into
//! [`Event`]s, and [`State::apply_event`] is the *only* code that changes the
//! state. The watch API streams exactly these events, and replaying them over a
//! snapshot reproduces the state at every later revision.
//!
//! Where things are: see `README.md` next to this file.

mod apply;
pub mod assignment;
pub mod command;
mod error;
mod event;
pub mod hash;
pub mod load;
pub mod rebalancer;
mod state;
mod stored;
mod tombstones;
pub mod validate;

pub use apply::{CommandResult, Reply};
pub use assignment::{Assignment, PartitionRange, Reservation, Revoking, Slot};
pub use command::{same_session, Command, Locator, Proposal, Proposals};
pub use error::{quoted, DomainError, ErrorKind};
pub use event::{Change, Event, EventKind, LeaveReason};
pub use hash::KeyHash;
pub use rebalancer::{Move, Plan};
pub use state::{Group, GroupConfig, PartitionCounts, Session, SessionState, State, Tombstone};
pub use tombstones::{Tombstones, MAX_PURGE};

#[cfg(test)]
mod tests;
