//! baton-node's integration tests, one binary (as cargo's `tests/testsuite`
//! and openraft's `tests/tests/*/main.rs`): one module per area, each test
//! named for the behaviour it pins, all sharing one fixture. One binary links
//! the node and the client once instead of once per area, and lets the
//! fixture be checked for dead code as a whole.
//!
//! Run one area with `cargo test -p baton-node --test it groups::`.
//!
//! Process-level areas (`process`, `batonctl`, `restore`, `freeze`, `sdk`,
//! `hostile`, parts of `minority` and `backup`) start the built `baton-node`
//! and `batonctl` binaries;
//! `batonctl` belongs to another package, so build it first
//! (`cargo build --workspace --bins`; scripts/test does). They live here
//! because nothing they do is global to the test process: every node is a
//! child process with its own data dir, on ports the OS chose (static
//! bootstrap, which needs them up front, reserves them: `fixture::procs`).
//!
//! A test pins one behaviour. Where a behaviour shows only after others
//! (a drain after a lease ran out), the test replays the steps before it
//! through a shared setup, checks included, rather than chaining them into
//! one test whose name lists them all.
//!
//! `tests/compose.rs` stays a binary of its own: it needs a Docker engine,
//! is ignored by default and scripts/test runs it alone
//! (`--test compose -- --ignored`) once it has built the image.

mod fixture;

mod backup;
mod balance;
mod batonctl;
mod cluster;
mod deploy;
mod docs;
mod durability;
mod freeze;
mod groups;
mod history;
mod hostile;
mod minority;
mod process;
mod restore;
mod sdk;
mod sdk_library;
mod security;
mod tombstones;
mod watch;
mod workers;
