//! The in-process test cluster: nodes in this process over real gRPC on
//! loopback, on OS-chosen ports, with real sled data dirs.
#![allow(dead_code)]

pub mod procs;
pub mod watch;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton_client::AdminClient;
use baton_node::{Bootstrap, Node, NodeConfig};
use openraft::ServerState;
use tempfile::TempDir;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub root: TempDir,
    pub running: BTreeMap<u64, Node>,
    /// Every node's gRPC address, kept across restarts (it is in the membership).
    pub addrs: BTreeMap<u64, SocketAddr>,
}

impl Cluster {
    pub fn new() -> Self {
        Self {
            root: tempfile::tempdir().expect("tempdir"),
            running: BTreeMap::new(),
            addrs: BTreeMap::new(),
        }
    }

    pub fn config(&self, id: u64, bootstrap: Bootstrap) -> NodeConfig {
        let mut config = NodeConfig::ephemeral(id, self.data_dir(id));
        config.bootstrap = bootstrap;
        if let Some(addr) = self.addrs.get(&id) {
            config.listen = *addr;
        }
        config
    }

    pub async fn start(&mut self, config: NodeConfig) -> &Node {
        let id = config.id;
        let node = Node::start(config).await.expect("node starts");
        self.addrs.insert(id, node.grpc_addr());
        self.running.insert(id, node);
        &self.running[&id]
    }

    /// Starts node `id` as a one-node cluster.
    pub async fn start_single(&mut self, id: u64) {
        let config = self.config(id, Bootstrap::SingleNode);
        self.start(config).await;
    }

    /// Starts node `id` and has it join through every running node.
    pub async fn join(&mut self, id: u64) {
        let seeds = self
            .running
            .values()
            .map(|n| n.addr().to_string())
            .collect();
        let config = self.config(id, Bootstrap::Join(seeds));
        self.start(config).await;
    }

    pub async fn stop(&mut self, id: u64) {
        let node = self.running.remove(&id).expect("node is running");
        node.shutdown().await.expect("clean shutdown");
    }

    /// Restarts a stopped node from its data dir, on its old address.
    pub async fn restart(&mut self, id: u64) {
        assert!(!self.running.contains_key(&id));
        let seeds = self
            .running
            .values()
            .map(|n| n.addr().to_string())
            .collect();
        let config = self.config(id, Bootstrap::Join(seeds));
        self.start(config).await;
    }

    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.running[&id]
    }

    pub fn admin(&self) -> AdminClient {
        let endpoints: Vec<String> = self
            .running
            .values()
            .map(|n| n.addr().to_string())
            .collect();
        AdminClient::new(&endpoints, WAIT).expect("admin client")
    }

    /// Waits until the running nodes agree on a leader among them, other than
    /// `not`, and that node knows it leads. Returns its id.
    pub async fn leader(&self, not: Option<u64>, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let running: BTreeSet<u64> = self.running.keys().copied().collect();
        let any = self.running.values().next().expect("a running node");
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = any
            .raft()
            .wait(Some(left))
            .metrics(
                |m| {
                    m.current_leader
                        .is_some_and(|l| running.contains(&l) && Some(l) != not)
                },
                "a running node leads",
            )
            .await
            .expect("a leader is elected in time");
        let leader = seen.current_leader.expect("leader");
        let left = deadline.saturating_duration_since(Instant::now());
        self.node(leader)
            .raft()
            .wait(Some(left))
            .state(ServerState::Leader, "the leader knows it leads")
            .await
            .expect("leader state in time");
        leader
    }

    /// Waits until every running node has applied `revision`.
    pub async fn applied_everywhere(&self, revision: u64) {
        for node in self.running.values() {
            node.raft()
                .wait(Some(WAIT))
                .applied_index_at_least(
                    Some(revision),
                    format!("node {} applies {revision}", node.id()),
                )
                .await
                .expect("applied in time");
        }
    }

    /// Commits `n` barriers through the admin API and returns the last revision.
    pub async fn write(&self, n: usize) -> u64 {
        let mut admin = self.admin();
        let mut revision = 0;
        for _ in 0..n {
            let reply = admin.barrier().await.expect("barrier committed");
            assert!(reply.revision > revision, "revisions strictly increase");
            revision = reply.revision;
        }
        revision
    }

    pub fn voters(&self, id: u64) -> BTreeSet<u64> {
        self.node(id)
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    pub fn members(&self, id: u64) -> BTreeSet<u64> {
        self.node(id)
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(i, _)| *i)
            .collect()
    }

    pub async fn shutdown(mut self) {
        for id in self.running.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

pub async fn three_nodes() -> Cluster {
    let mut cluster = Cluster::new();
    cluster.start_single(1).await;
    cluster.join(2).await;
    cluster.join(3).await;
    cluster
}

/// GET `path` from a node's HTTP server: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

/// The value of `series` (a metric name with its labels, as printed) in a
/// Prometheus text body.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}
