//! Resolving [`Args`] into a [`NodeConfig`]: the file under the flags,
//! defaults, and every check that needs more than one flag.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::{
    Args, Bootstrap, HistoryRetention, NodeConfig, Security, TlsConfig, DEFAULT_DATA_DIR,
    DEFAULT_HTTP, DEFAULT_LISTEN, DEFAULT_RESTORE_REVISION_BUMP, MAX_RESTORE_REVISION_BUMP,
};
use crate::raft::{NodeId, RaftTuning};
use crate::security::PeerAddr;

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
            PeerAddr::parse(a).map_err(|e| anyhow::anyhow!("--advertise: {e}"))?;
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
                    PeerAddr::parse(a).map_err(|e| anyhow::anyhow!("--join: {e}"))?;
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
    match (cert, key, ca) {
        (None, None, None) if !mutual => Ok(None),
        (Some(cert), Some(key), Some(ca)) => TlsConfig::read(&cert, &key, &ca, mutual).map(Some),
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
        let addr: String = PeerAddr::parse(addr.trim())
            .map_err(|e| anyhow::anyhow!("--initial-members: {e}"))?
            .into();
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
pub(super) fn id_from_hostname(name: &str) -> anyhow::Result<NodeId> {
    name.rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<NodeId>().ok())
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--id-from-hostname: host name {name:?} does not end in -N (a StatefulSet ordinal such as baton-0)"
            )
        })
}
