//! The flags of `baton-node` (and the keys of its TOML file).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use crate::raft::NodeId;

/// baton-node: one node of a baton cluster (a Raft-replicated assignment store).
///
/// With no flags it starts a single-node cluster on 127.0.0.1:7400 with its data
/// in ./baton-data. Every flag can also be set as a BATON_* environment variable
/// (shown below) or as a kebab-case key in the TOML file given with --config.
///
/// Three nodes on one machine, static bootstrap (run each line in its own terminal):
///
///   baton-node --id 1 --listen 127.0.0.1:7401 --http 127.0.0.1:7481 --data-dir d1 --initial-members 1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403
///
///   baton-node --id 2 --listen 127.0.0.1:7402 --http 127.0.0.1:7482 --data-dir d2 --initial-members 1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403
///
///   baton-node --id 3 --listen 127.0.0.1:7403 --http 127.0.0.1:7483 --data-dir d3 --initial-members 1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403
///
/// Adding a node to a running cluster:
///
///   baton-node --id 4 --listen 127.0.0.1:7404 --http 127.0.0.1:7484 --data-dir d4 --join 127.0.0.1:7401
#[derive(Parser, Debug, Default, Deserialize)]
#[command(name = "baton-node", version, verbatim_doc_comment)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// TOML file with any of these options as kebab-case keys (id = 2,
    /// listen = "10.0.0.2:7400", initial-members = "1=…,2=…"). Flags and
    /// environment variables override it.
    #[arg(long, env = "BATON_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// This node's id: a positive integer, unique in the cluster and never reused
    /// for a node that lost its data. [default: 1]
    #[arg(long, env = "BATON_ID")]
    pub id: Option<NodeId>,

    /// Take the id from this host's name, the way a Kubernetes StatefulSet
    /// names its pods: `baton-0` is node 1, `baton-2` node 3 (the ordinal plus
    /// one). Excludes --id.
    #[arg(long, env = "BATON_ID_FROM_HOSTNAME")]
    pub id_from_hostname: bool,

    /// Address the gRPC server (workers, admin, Raft) listens on. Port 0 picks a
    /// free port. [default: 127.0.0.1:7400]
    #[arg(long, env = "BATON_LISTEN", value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,

    /// Address other nodes and clients use to reach this node. [default: the
    /// listen address; required when listening on 0.0.0.0]
    #[arg(long, env = "BATON_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Directory for the Raft log, state machine and snapshots. [default: ./baton-data]
    #[arg(long, env = "BATON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address of the HTTP server for /healthz, /readyz and /metrics. [default: 127.0.0.1:7480]
    #[arg(long, env = "BATON_HTTP", value_name = "IP:PORT")]
    pub http: Option<SocketAddr>,

    /// Static bootstrap: all initial nodes as ID=HOST:PORT,ID=HOST:PORT,… The same
    /// list is given to every node; the lowest id initializes the cluster the
    /// first time (restarts are safe).
    #[arg(
        long,
        env = "BATON_INITIAL_MEMBERS",
        value_name = "ID=HOST:PORT,…",
        conflicts_with = "join"
    )]
    pub initial_members: Option<String>,

    /// Join a running cluster through any of its nodes (HOST:PORT, several
    /// comma-separated for failover): this node is added as a learner, catches
    /// up, and is promoted to voter. Ignored once this node has joined.
    #[arg(long, env = "BATON_JOIN", value_name = "HOST:PORT,…")]
    pub join: Option<String>,

    /// Leader heartbeat interval in milliseconds. [default: 100]
    #[arg(long, env = "BATON_HEARTBEAT_MS", value_name = "MS")]
    pub heartbeat_ms: Option<u64>,

    /// Election timeout in milliseconds (randomized up to twice this). A crashed
    /// leader is replaced after about 3–4 times this value, because openraft first
    /// waits out the old leader's lease. Must exceed twice --heartbeat-ms. [default: 250]
    #[arg(long, env = "BATON_ELECTION_TIMEOUT_MS", value_name = "MS")]
    pub election_timeout_ms: Option<u64>,

    /// Take a snapshot and compact the log every this many entries, and every this many revisions (an entry may carry a batch of commands). [default: 100000]
    #[arg(long, env = "BATON_SNAPSHOT_EVERY", value_name = "COUNT")]
    pub snapshot_every: Option<u64>,

    /// Watch history: keep the events of at most this many latest revisions;
    /// a watch that resumes from further back gets OUT_OF_RANGE and re-lists.
    /// [default: 100000]
    #[arg(long, env = "BATON_HISTORY_REVISIONS", value_name = "REVISIONS")]
    pub history_revisions: Option<u64>,

    /// Watch history: drop events older than this many seconds (whichever
    /// limit is reached first applies). [default: 3600]
    #[arg(long, env = "BATON_HISTORY_AGE_SECS", value_name = "SECONDS")]
    pub history_age_secs: Option<u64>,

    /// Revisions a watcher may fall behind (queued for it on this node) before
    /// it is cut off with RESOURCE_EXHAUSTED and must resume; bounds the
    /// memory one slow watcher can hold. [default: 1024]
    #[arg(long, env = "BATON_WATCH_BUFFER", value_name = "REVISIONS")]
    pub watch_buffer: Option<usize>,

    /// Seed an empty data dir from a backup file (`batonctl backup FILE`) and
    /// start from its state: groups, sessions, assignment, tombstones,
    /// with revisions and fencing tokens going on past the backup's by
    /// --restore-revision-bump. Give every initial member the same file
    /// and the new cluster's --initial-members. Ignored, with a warning, once
    /// the data dir holds a cluster's state (so it can stay set across
    /// restarts). Excludes --join.
    #[arg(long, env = "BATON_RESTORE_FROM", value_name = "FILE")]
    pub restore_from: Option<PathBuf>,

    /// With --restore-from: the restored cluster starts this many revisions
    /// after the backup's, and its watch history before that is compacted.
    /// The cluster that was lost went on after the backup, handing out
    /// revisions and fencing tokens that sinks and watchers still hold; the
    /// jump keeps every new one above them (so a stale owner's writes stay
    /// fenced), and a watcher resuming from the lost range is told to re-list
    /// instead of being served unrelated history. Make it more than the lost
    /// cluster can have written since the backup (revisions per second times
    /// the backup's age). Give every initial member the same value: the
    /// restored revision is a Raft log index, and members restored to
    /// different ones could diverge silently; each logs the revision it
    /// restored to. 1 to 10^15. [default: 1000000]
    #[arg(long, env = "BATON_RESTORE_REVISION_BUMP", value_name = "REVISIONS")]
    pub restore_revision_bump: Option<u64>,

    /// TLS: this node's certificate chain (PEM). With --tls-key and --tls-ca,
    /// the gRPC port (clients and peers) speaks only TLS, and this node
    /// presents this certificate when it dials its peers. It must be valid for
    /// the host this node advertises. The HTTP port (health, metrics) stays
    /// plain HTTP.
    #[arg(long, env = "BATON_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// TLS: the private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "BATON_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// TLS: the CA certificate(s) (PEM) that signed the peers' certificates
    /// and, with --mtls, the clients'.
    #[arg(long, env = "BATON_TLS_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,

    /// Mutual TLS: refuse clients without a certificate signed by --tls-ca;
    /// accept Raft traffic only from certificates valid for a member's host;
    /// let a worker act only under a name its certificate is valid for (a DNS
    /// name in its subject alternative names).
    #[arg(long, env = "BATON_MTLS", requires = "tls_cert")]
    pub mtls: bool,

    /// Bearer token that calls changing the cluster (membership, groups,
    /// moves, drains, evictions, compaction, backups) must carry. Every node
    /// needs the same token: peers send it with Raft traffic too. Prefer
    /// --admin-token-file or the environment: flags show in `ps`.
    #[arg(
        long,
        env = "BATON_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Read --admin-token from this file (a mounted secret), trimmed.
    #[arg(
        long,
        env = "BATON_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
}
