//! baton's chaos harness, in the spirit of Jepsen: start a real cluster,
//! drive concurrent clients, inject faults, record everything, and check
//! guarantees G1–G5 of docs/design.md (§3) against the history.
//!
//! - [`cluster`]: `baton-node` processes on the [`proxy`] or [`netns`] backend.
//! - [`workload`]: registers, tombstones, watchers, SDK workers and the sink.
//! - [`nemesis`]: faults scheduled from a seed.
//! - [`history`]: the operation log (JSONL) every checker reads.
//! - [`check`]: the checkers, each with a verdict valid / invalid / unknown.
//! - [`run`], [`report`]: one test end to end, and its plots.
//! - [`bench`]: benchmarks side by side with etcd.

pub mod bench;
pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod proxy;
pub mod report;
pub mod run;
pub mod workload;
