//! baton-client's integration tests, one binary with a module per area (as
//! in node/tests/it): what the worker SDK sends and when, against a fake
//! node; and the README's worker being the compiled example.
//!
//! Run one area with `cargo test -p baton-client --test it worker_sessions::`.

mod fake;

mod readme;
mod worker_sessions;
