//! `baton-jepsen`: the chaos harness and the benchmark driver (cluster launcher,
//! workloads, nemeses, checkers, reports). Empty until its issue (#8); the crate
//! exists so the workspace has its final shape from the start.
