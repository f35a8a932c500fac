//! Node configuration: command-line flags, `BATON_*` environment variables and
//! an optional TOML file, resolved into a [`NodeConfig`].
//!
//! Precedence: flag > environment variable > config file > built-in default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

use crate::raft::{NodeId, RaftTuning};

/// Default gRPC address of a node.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Default HTTP address (health and metrics).
pub const DEFAULT_HTTP: &str = "127.0.0.1:7480";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "baton-data";

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

    /// Take a snapshot and compact the log every this many entries. [default: 100000]
    #[arg(long, env = "BATON_SNAPSHOT_EVERY", value_name = "ENTRIES")]
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

/// TLS material of a node, read from its files at start.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
    /// Clients must present a certificate signed by the CA.
    pub mutual: bool,
}

/// Who may do what: transport security and the admin token.
#[derive(Clone, Default)]
pub struct Security {
    /// `None`: plaintext gRPC.
    pub tls: Option<TlsConfig>,
    /// `None`: admin calls need no token.
    pub admin_token: Option<String>,
}

/// Says which settings are on, never the key or the token.
impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field(
                "tls",
                &self
                    .tls
                    .as_ref()
                    .map(|t| if t.mutual { "mutual" } else { "server" }),
            )
            .field("admin_token", &self.admin_token.as_ref().map(|_| "set"))
            .finish()
    }
}

/// How long the event history is kept for watches to resume from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRetention {
    pub revisions: u64,
    pub age: std::time::Duration,
}

impl Default for HistoryRetention {
    fn default() -> Self {
        Self {
            revisions: 100_000,
            age: std::time::Duration::from_secs(3600),
        }
    }
}

/// How a node becomes part of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// A cluster of this one node (the embedded default).
    SingleNode,
    /// Static membership; the lowest id initializes the cluster.
    InitialMembers(BTreeMap<NodeId, String>),
    /// Ask a running cluster, through any of these nodes, to add this node.
    Join(Vec<String>),
}

/// A node's resolved configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// `None`: advertise the address the listener is bound to.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// `None`: no HTTP server.
    pub http: Option<SocketAddr>,
    pub bootstrap: Bootstrap,
    pub tuning: RaftTuning,
    pub history: HistoryRetention,
    /// Revisions each watcher may have queued on this node.
    pub watch_buffer: usize,
    /// A backup file to seed an empty data dir from.
    pub restore_from: Option<PathBuf>,
    /// Revisions a restore jumps past the backup's (`--restore-revision-bump`).
    pub restore_revision_bump: u64,
    pub security: Security,
}

/// The margin a restore adds to the backup's revision by default: 11 days
/// of writes at 1 per second, about 3 hours at 100 per second.
pub const DEFAULT_RESTORE_REVISION_BUMP: u64 = 1_000_000;
/// The largest margin accepted: keeps revisions far from `u64::MAX` and
/// within what JSON numbers and signed 64-bit clients carry exactly.
pub const MAX_RESTORE_REVISION_BUMP: u64 = 1_000_000_000_000_000;

impl NodeConfig {
    /// A single-node configuration on an OS-chosen port, for tests and tools.
    pub fn ephemeral(id: NodeId, data_dir: PathBuf) -> Self {
        Self {
            id,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            data_dir,
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            bootstrap: Bootstrap::SingleNode,
            tuning: RaftTuning::default(),
            history: HistoryRetention::default(),
            watch_buffer: crate::watch::DEFAULT_SUBSCRIBER_BUFFER,
            restore_from: None,
            restore_revision_bump: DEFAULT_RESTORE_REVISION_BUMP,
            security: Security::default(),
        }
    }
}

impl Args {
    /// Merges the config file (if any) under the flags and resolves defaults.
    pub fn resolve(self) -> anyhow::Result<NodeConfig> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<Args>(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?
            }
            None => Args::default(),
        };
        let id = match (
            self.id.or(file.id),
            self.id_from_hostname || file.id_from_hostname,
        ) {
            (Some(_), true) => bail!("--id and --id-from-hostname exclude each other"),
            (Some(id), false) => id,
            (None, true) => id_from_hostname(&hostname()?)?,
            (None, false) => 1,
        };
        if id == 0 {
            bail!("--id must be a positive integer (1, 2, …); 0 is reserved");
        }
        let listen = match self.listen.or(file.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN.parse()?,
        };
        let advertise = self.advertise.or(file.advertise);
        if let Some(a) = &advertise {
            parse_peer_addr(a).map_err(|e| anyhow::anyhow!("--advertise: {e}"))?;
        }
        let initial_members = self.initial_members.or(file.initial_members);
        let join = self.join.or(file.join);
        let bootstrap = match (initial_members, join) {
            (Some(_), Some(_)) => bail!("--initial-members and --join exclude each other: use --initial-members to form a new cluster, --join to enter a running one"),
            (Some(list), None) => {
                let members = parse_initial_members(&list)?;
                let Some(own) = members.get(&id) else {
                    bail!("--initial-members does not list this node's id {id}; it lists {:?}", members.keys().collect::<Vec<_>>());
                };
                if let Some(a) = &advertise {
                    if a != own {
                        bail!("--advertise {a} differs from this node's address {own} in --initial-members; the other nodes would not reach it");
                    }
                }
                Bootstrap::InitialMembers(members)
            }
            (None, Some(list)) => {
                let addrs: Vec<String> = list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if addrs.is_empty() {
                    bail!("--join needs at least one HOST:PORT of a running node");
                }
                for a in &addrs {
                    parse_peer_addr(a).map_err(|e| anyhow::anyhow!("--join: {e}"))?;
                }
                Bootstrap::Join(addrs)
            }
            (None, None) => Bootstrap::SingleNode,
        };
        // With static bootstrap this node's address is the one the others know.
        let advertise = match (&bootstrap, advertise) {
            (Bootstrap::InitialMembers(m), None) => m.get(&id).cloned(),
            (_, a) => a,
        };
        if advertise.is_none() && listen.ip().is_unspecified() {
            bail!("--advertise is required when --listen is {listen}: other nodes cannot reach an unspecified address");
        }
        let defaults = RaftTuning::default();
        let tuning = RaftTuning {
            heartbeat_ms: self
                .heartbeat_ms
                .or(file.heartbeat_ms)
                .unwrap_or(defaults.heartbeat_ms),
            election_timeout_ms: self
                .election_timeout_ms
                .or(file.election_timeout_ms)
                .unwrap_or(defaults.election_timeout_ms),
            snapshot_every: self
                .snapshot_every
                .or(file.snapshot_every)
                .unwrap_or(defaults.snapshot_every),
            keep_behind_snapshot: defaults.keep_behind_snapshot,
        };
        if tuning.election_timeout_ms <= tuning.heartbeat_ms * 2 {
            bail!(
                "--election-timeout-ms ({}) must be more than twice --heartbeat-ms ({}), or followers start elections against a healthy leader",
                tuning.election_timeout_ms,
                tuning.heartbeat_ms
            );
        }
        let retention = HistoryRetention::default();
        let history = HistoryRetention {
            revisions: self
                .history_revisions
                .or(file.history_revisions)
                .unwrap_or(retention.revisions),
            age: self
                .history_age_secs
                .or(file.history_age_secs)
                .map_or(retention.age, std::time::Duration::from_secs),
        };
        if history.revisions == 0 || history.age.is_zero() {
            bail!("--history-revisions and --history-age-secs must be positive: watches resume from the history");
        }
        let watch_buffer = self
            .watch_buffer
            .or(file.watch_buffer)
            .unwrap_or(crate::watch::DEFAULT_SUBSCRIBER_BUFFER);
        if watch_buffer == 0 {
            bail!("--watch-buffer must be at least 1");
        }
        let http = match self.http.or(file.http) {
            Some(http) => Some(http),
            None => Some(DEFAULT_HTTP.parse()?),
        };
        let restore_from = self.restore_from.or(file.restore_from);
        if restore_from.is_some() && matches!(bootstrap, Bootstrap::Join(_)) {
            bail!("--restore-from and --join exclude each other: a joining node gets its state from the cluster; restore the initial members (--initial-members) instead");
        }
        let restore_revision_bump = resolve_bump(
            self.restore_revision_bump.or(file.restore_revision_bump),
            restore_from.is_some(),
        )?;
        let security = Security {
            tls: resolve_tls(
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
                self.tls_ca.or(file.tls_ca),
                self.mtls || file.mtls,
            )?,
            admin_token: resolve_token(
                self.admin_token.or(file.admin_token),
                self.admin_token_file.or(file.admin_token_file),
            )?,
        };
        Ok(NodeConfig {
            id,
            listen,
            advertise,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            http,
            bootstrap,
            tuning,
            history,
            watch_buffer,
            restore_from,
            restore_revision_bump,
            security,
        })
    }
}

/// Reads the TLS files. A config file can set some of them without the
/// others (clap checks only flags), so all is checked again here.
fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    mutual: bool,
) -> anyhow::Result<Option<TlsConfig>> {
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
    };
    match (cert, key, ca) {
        (None, None, None) if !mutual => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsConfig {
            cert_pem: read("--tls-cert", &cert)?,
            key_pem: read("--tls-key", &key)?,
            ca_pem: read("--tls-ca", &ca)?,
            mutual,
        })),
        _ => bail!("TLS needs all of --tls-cert, --tls-key and --tls-ca (--mtls needs them too)"),
    }
}

/// Checks `--restore-revision-bump`, which only means something with
/// `--restore-from`.
fn resolve_bump(bump: Option<u64>, restoring: bool) -> anyhow::Result<u64> {
    match bump {
        None => Ok(DEFAULT_RESTORE_REVISION_BUMP),
        Some(_) if !restoring => bail!("--restore-revision-bump applies only with --restore-from (it sets how far a restored cluster's revisions jump past the backup's)"),
        Some(0) => bail!("--restore-revision-bump must be at least 1: a restored cluster that starts at the backup's revision hands out again the revisions and fencing tokens the lost cluster gave out after the backup"),
        Some(b) if b > MAX_RESTORE_REVISION_BUMP => bail!("--restore-revision-bump {b} is more than {MAX_RESTORE_REVISION_BUMP}; a margin of a few times what the lost cluster can have written since the backup is enough"),
        Some(b) => Ok(b),
    }
}

fn resolve_token(token: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let token = match (token, file) {
        (Some(_), Some(_)) => bail!("--admin-token and --admin-token-file exclude each other"),
        (Some(token), None) => token,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("--admin-token-file: cannot read {}", path.display()))?,
        (None, None) => return Ok(None),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("the admin token is empty; give a secret of at least 16 characters");
    }
    if token.len() < 16 {
        bail!("the admin token is {} characters long; use at least 16 (`openssl rand -hex 32` makes one)", token.len());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "the admin token must be printable ASCII without spaces (it travels in an HTTP header)"
        );
    }
    Ok(Some(token))
}

/// Checks that `addr` is `HOST:PORT` as other nodes dial it: a host name, an
/// IPv4 address or a bracketed IPv6 address, and a port from 1 to 65535.
pub fn parse_peer_addr(addr: &str) -> Result<(), String> {
    let bad =
        |why: &str| format!("address {addr:?} is not HOST:PORT ({why}); example: 10.0.0.5:7400");
    if addr.contains("://") {
        return Err(bad("leave out the scheme"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(bad("the port must be 1 to 65535")),
        Ok(_) => {}
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Err(bad("the host must be a name, an IPv4 address or [IPv6]"));
    }
    Ok(())
}

/// Parses `1=host:port,2=host:port,…`.
pub fn parse_initial_members(list: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut members = BTreeMap::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            bail!("--initial-members: {item:?} is not ID=HOST:PORT");
        };
        let id: NodeId = match id.trim().parse() {
            Ok(0) | Err(_) => {
                bail!("--initial-members: {id:?} in {item:?} is not a positive node id")
            }
            Ok(id) => id,
        };
        let addr = addr.trim().to_string();
        parse_peer_addr(&addr).map_err(|e| anyhow::anyhow!("--initial-members: {e}"))?;
        if let Some(previous) = members.insert(id, addr.clone()) {
            bail!("--initial-members names node {id} twice ({previous} and {addr})");
        }
    }
    if members.is_empty() {
        bail!("--initial-members is empty; give ID=HOST:PORT for every initial node");
    }
    let mut addrs: Vec<&String> = members.values().collect();
    addrs.sort();
    if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "--initial-members gives two nodes the same address {}",
            w[0]
        );
    }
    Ok(members)
}

/// This host's name: `HOSTNAME` (which Kubernetes sets to the pod's name),
/// else the kernel's.
fn hostname() -> anyhow::Result<String> {
    if let Ok(name) = std::env::var("HOSTNAME") {
        if !name.trim().is_empty() {
            return Ok(name.trim().to_string());
        }
    }
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context(
            "--id-from-hostname: HOSTNAME is not set and the kernel's host name cannot be read",
        )?
        .trim()
        .to_string())
}

/// `name-N` → N + 1.
fn id_from_hostname(name: &str) -> anyhow::Result<NodeId> {
    name.rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<NodeId>().ok())
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--id-from-hostname: host name {name:?} does not end in -N (a StatefulSet ordinal such as baton-0)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_statefulset_host_names() {
        assert_eq!(id_from_hostname("baton-0").ok(), Some(1));
        assert_eq!(id_from_hostname("baton-prod-2").ok(), Some(3));
        for bad in ["baton", "baton-", "baton-x", "baton-1x"] {
            let err = id_from_hostname(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("does not end in -N"), "{bad}: {err}");
        }
        let err = args(&["--id", "2", "--id-from-hostname"])
            .resolve()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("exclude each other"), "{err}");
    }

    fn args(list: &[&str]) -> Args {
        Args::parse_from(std::iter::once("baton-node").chain(list.iter().copied()))
    }

    #[test]
    fn no_flags_is_the_embedded_single_node_default() -> anyhow::Result<()> {
        let config = args(&[]).resolve()?;
        assert_eq!(config.id, 1);
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(
            config.http.map(|h| h.to_string()).as_deref(),
            Some(DEFAULT_HTTP)
        );
        assert_eq!(config.bootstrap, Bootstrap::SingleNode);
        Ok(())
    }

    #[test]
    fn initial_members_set_the_advertised_address() -> anyhow::Result<()> {
        let config = args(&["--id", "2", "--initial-members", "1=a:1, 2=b:2,3=c:3"]).resolve()?;
        assert_eq!(config.advertise.as_deref(), Some("b:2"));
        let Bootstrap::InitialMembers(m) = config.bootstrap else {
            panic!("not static")
        };
        assert_eq!(m.len(), 3);
        Ok(())
    }

    #[test]
    fn bad_membership_flags_are_refused_with_the_reason() {
        let cases = [
            (
                vec!["--id", "3", "--initial-members", "1=a:1,2=b:2"],
                "does not list this node's id 3",
            ),
            (
                vec!["--initial-members", "1=a:1,1=b:2"],
                "names node 1 twice",
            ),
            (vec!["--initial-members", "1=a:1,2=a:1"], "same address"),
            (vec!["--initial-members", "x=a:1"], "not a positive node id"),
            (vec!["--initial-members", "1=a"], "no port"),
            (vec!["--join", "http://a:1"], "scheme"),
            (vec!["--listen", "0.0.0.0:7400"], "--advertise is required"),
            (vec!["--heartbeat-ms", "300"], "more than twice"),
            (
                vec!["--join", "a:1", "--restore-from", "b.bak"],
                "exclude each other",
            ),
            (
                vec!["--restore-revision-bump", "5"],
                "only with --restore-from",
            ),
            (
                vec!["--restore-from", "b.bak", "--restore-revision-bump", "0"],
                "at least 1",
            ),
            (
                vec![
                    "--restore-from",
                    "b.bak",
                    "--restore-revision-bump",
                    "1000000000000001",
                ],
                "is more than",
            ),
            (vec!["--admin-token", "short"], "use at least 16"),
            (
                vec!["--admin-token", "sixteen chars and spaces"],
                "without spaces",
            ),
            (
                vec![
                    "--tls-cert",
                    "/nonexistent/c.pem",
                    "--tls-key",
                    "k",
                    "--tls-ca",
                    "ca",
                ],
                "--tls-cert: cannot read /nonexistent/c.pem",
            ),
        ];
        for (flags, expected) in cases {
            let err = args(&flags)
                .resolve()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains(expected),
                "{flags:?}: expected {expected:?} in {err:?}"
            );
        }
    }

    #[test]
    fn a_restore_jumps_by_the_default_or_the_given_margin() -> anyhow::Result<()> {
        let config = args(&["--restore-from", "b.bak"]).resolve()?;
        assert_eq!(config.restore_revision_bump, DEFAULT_RESTORE_REVISION_BUMP);
        let config =
            args(&["--restore-from", "b.bak", "--restore-revision-bump", "42"]).resolve()?;
        assert_eq!(config.restore_revision_bump, 42);

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("baton.toml");
        std::fs::write(
            &path,
            "restore-from = \"b.bak\"\nrestore-revision-bump = 7\n",
        )?;
        let config = args(&["--config", path.to_str().unwrap_or_default()]).resolve()?;
        assert_eq!(config.restore_revision_bump, 7);
        Ok(())
    }

    #[test]
    fn config_file_fills_what_flags_leave_out() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("baton.toml");
        std::fs::write(
            &path,
            "id = 7\nlisten = \"127.0.0.1:9000\"\ndata-dir = \"/var/lib/baton\"\n",
        )?;
        let config =
            args(&["--config", path.to_str().unwrap_or_default(), "--id", "8"]).resolve()?;
        assert_eq!(config.id, 8, "the flag wins over the file");
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/baton"));

        std::fs::write(&path, "idd = 7\n")?;
        let err = args(&["--config", path.to_str().unwrap_or_default()])
            .resolve()
            .err();
        assert!(format!("{err:?}").contains("unknown field"), "{err:?}");
        Ok(())
    }

    #[test]
    fn debug_output_names_security_settings_but_not_secrets() -> anyhow::Result<()> {
        let config = args(&["--admin-token", "a-secret-of-sixteen-chars"]).resolve()?;
        let shown = format!("{config:?}");
        assert!(shown.contains("admin_token: Some(\"set\")"), "{shown}");
        assert!(!shown.contains("a-secret"), "{shown}");
        Ok(())
    }

    #[test]
    fn peer_addresses() {
        for ok in ["127.0.0.1:7400", "node-1.baton.svc:7400", "[::1]:7400"] {
            assert_eq!(parse_peer_addr(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "host:99999",
            ":7400",
            "a b:1",
            "[zz]:1",
            "http://a:1",
        ] {
            assert!(parse_peer_addr(bad).is_err(), "{bad}");
        }
    }
}
