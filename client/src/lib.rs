//! `baton-client`: talk to a baton cluster from Rust.
//!
//! - [`AdminClient`]: one typed method per admin call (cluster, groups,
//!   assignment, workers, tombstones, backup); finds the leader
//!   among the endpoints it is given.
//! - [`Watch`]: a group's event stream that reconnects to another node and
//!   resumes from the last revision it delivered.
//! - [`Worker`]: the worker SDK (see its module for a complete worker).
//! - [`ShardMap`]: key → partition → owner, kept current by a watch.
//! - `batonctl` (`src/bin/batonctl/`): the admin CLI built on them.
//!
//! A complete worker (`examples/minimal_worker.rs`):
//!
//! ```no_run
#![doc = include_str!("../examples/minimal_worker.rs")]
//! ```

mod admin;
pub mod endpoints;
pub mod partitions;
mod shard_map;
pub mod simulated_load;
mod transport;
pub mod watch;
pub mod worker;

pub use admin::{AdminClient, Backup, ClientError, Consistency, MemberStatus};
pub use baton_proto::v1 as proto;
pub use endpoints::{Endpoints, Timing};
pub use partitions::Partitions;
pub use shard_map::{Route, ShardMap};
pub use transport::{Credentials, NodeChannel, Transport};
pub use watch::Watch;
pub use worker::{
    Events, FencingToken, Grant, Handler, HoldChange, HoldEnd, Shutdown, Worker, WorkerBuilder,
    WorkerError, WorkerEvent,
};

static ANSWERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn mark_answered() {
    ANSWERED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether any node has answered this process at all. A TLS mismatch means
/// none ever did, so a hint about TLS settings is only worth giving when
/// this is false.
pub fn any_node_answered() -> bool {
    ANSWERED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The gRPC status code in the canonical SCREAMING_SNAKE form operators know
/// from other gRPC tools (`NOT_FOUND`, `FAILED_PRECONDITION`).
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_names_are_canonical() {
        assert_eq!(super::code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(
            super::code_name(tonic::Code::FailedPrecondition),
            "FAILED_PRECONDITION"
        );
        assert_eq!(super::code_name(tonic::Code::Ok), "OK");
    }
}
