//! `baton-jepsen`: the chaos harness. It starts a real cluster, drives
//! concurrent clients against it while injecting faults, records every
//! operation in a history, and checks the history against the guarantees
//! G1–G5 of DESIGN.md.
//!
//! - [`history`]: the operation log (JSONL) every checker reads.
//! - [`check`]: the checkers, each with a verdict valid / invalid / unknown.

pub mod check;
pub mod history;
