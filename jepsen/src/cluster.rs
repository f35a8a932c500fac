//! Starts and abuses a real baton cluster: `baton-node` processes on one of
//! the two network backends, killed with SIGKILL, paused with SIGSTOP,
//! restarted on the same data, or wiped and rejoined as a new member.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_proto::v1::admin_client::AdminClient as RawAdmin;
use baton_proto::v1::{ClusterStatusRequest, ClusterStatusResponse};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::{self, Netns};
use crate::proxy::{self, CutMode, End, Network};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Every link through a TCP proxy in the harness (no root needed).
    Proxy,
    /// A network namespace per node, partitions by iptables (root).
    Netns,
    /// Nodes on loopback, dialled directly: no faults (benchmarks).
    Direct,
}

enum Links {
    Proxy(Network),
    Netns(Netns),
    Direct,
}

/// Where one node listens and how it is reached.
#[derive(Clone, Debug)]
struct Place {
    listen: SocketAddr,
    /// What peers and clients dial (the proxy, on that backend).
    advertise: SocketAddr,
    http: SocketAddr,
}

struct Node {
    place: Place,
    child: Option<Child>,
    paused: bool,
    /// Still a member (not replaced).
    member: bool,
    /// The `--join` it was started with, if it joined a running cluster:
    /// it is restarted the same way (the node ignores it once joined; with
    /// the static `--initial-members` instead it refuses to start).
    joined_via: Option<String>,
}

pub struct Cluster {
    backend: Backend,
    links: Links,
    binary: PathBuf,
    dir: PathBuf,
    nodes: Mutex<BTreeMap<usize, Node>>,
    initial: String,
}

/// A port nobody listens on at `ip` now.
pub(crate) fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    let l = TcpListener::bind(SocketAddr::new(ip, 0))
        .with_context(|| format!("no free port on {ip}"))?;
    Ok(l.local_addr()?.port())
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) of `binary` with their data and logs in
    /// `dir`, and waits until they have a leader.
    pub async fn start(
        n: usize,
        backend: Backend,
        binary: &Path,
        dir: &Path,
    ) -> anyhow::Result<Arc<Self>> {
        if !binary.exists() {
            bail!(
                "{} does not exist: build the node first (`cargo build --bins`)",
                binary.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let links = match backend {
            Backend::Proxy => Links::Proxy(Network::default()),
            Backend::Netns => Links::Netns(Netns::new()?),
            Backend::Direct => Links::Direct,
        };
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let place = Self::place(&links, id).await?;
            nodes.insert(
                id,
                Node {
                    place,
                    child: None,
                    paused: false,
                    member: true,
                    joined_via: None,
                },
            );
        }
        let initial = nodes
            .iter()
            .map(|(id, n)| format!("{id}={}", n.place.advertise))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = Arc::new(Self {
            backend,
            links,
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            nodes: Mutex::new(nodes),
            initial,
        });
        for id in 1..=n {
            cluster.spawn(id, None)?;
        }
        cluster.await_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    async fn place(links: &Links, id: usize) -> anyhow::Result<Place> {
        Ok(match links {
            Links::Proxy(net) => {
                let ip = proxy::node_ip(id);
                let listen = SocketAddr::new(ip, free_port(ip)?);
                let advertise = SocketAddr::new(ip, free_port(ip)?);
                net.proxy(id, advertise, listen).await?;
                Place {
                    listen,
                    advertise,
                    http: SocketAddr::new(ip, free_port(ip)?),
                }
            }
            Links::Direct => {
                let ip = IpAddr::from([127, 0, 0, 1]);
                let listen = SocketAddr::new(ip, free_port(ip)?);
                Place {
                    listen,
                    advertise: listen,
                    http: SocketAddr::new(ip, free_port(ip)?),
                }
            }
            Links::Netns(ns) => {
                ns.add_node(id)?;
                let ip = IpAddr::V4(netns::node_ip(id));
                Place {
                    listen: SocketAddr::new(ip, 7400),
                    advertise: SocketAddr::new(ip, 7400),
                    http: SocketAddr::new(ip, 7480),
                }
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Node>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts node `id` (again) on its data dir; `join` makes it a new
    /// member through the running cluster instead of a static one (and is
    /// remembered for its restarts).
    fn spawn(&self, id: usize, join: Option<String>) -> anyhow::Result<()> {
        let mut nodes = self.lock();
        let node = nodes.get_mut(&id).context("no such node")?;
        if node.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{id}.log")))?;
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            node.place.listen.to_string(),
            "--advertise".into(),
            node.place.advertise.to_string(),
            "--http".into(),
            node.place.http.to_string(),
            "--data-dir".into(),
            self.data_dir(id).display().to_string(),
        ];
        if join.is_some() {
            node.joined_via.clone_from(&join);
        }
        match node.joined_via.clone() {
            Some(via) => args.extend(["--join".into(), via]),
            None => args.extend(["--initial-members".into(), self.initial.clone()]),
        }
        let mut command = match self.backend {
            Backend::Proxy | Backend::Direct => Command::new(&self.binary),
            Backend::Netns => {
                let prefix = Netns::exec_prefix(id);
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg(&self.binary);
                c
            }
        };
        let child = command
            .args(&args)
            .env("BATON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// The client endpoints of the current members.
    pub fn endpoints(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|n| n.member)
            .map(|n| n.place.advertise.to_string())
            .collect()
    }

    /// Ids of the current members.
    pub fn members(&self) -> Vec<usize> {
        self.lock()
            .iter()
            .filter(|(_, n)| n.member)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn endpoint(&self, id: usize) -> Option<String> {
        self.lock().get(&id).map(|n| n.place.advertise.to_string())
    }

    /// Node `id`'s HTTP address (`/healthz`, `/readyz`, `/metrics`).
    pub fn http(&self, id: usize) -> Option<SocketAddr> {
        self.lock().get(&id).map(|n| n.place.http)
    }

    /// Node `id`'s process id, while it runs.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.lock()
            .get(&id)
            .and_then(|n| n.child.as_ref())
            .map(Child::id)
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    /// The leader named in the highest term any member reports. Not the
    /// first answer: openraft 0.9 never steps down a leader that lost its
    /// quorum, so a node cut off from the others still names itself, in an
    /// older term than the majority's.
    pub async fn leader(&self) -> Option<usize> {
        let mut asks = tokio::task::JoinSet::new();
        for addr in self
            .members()
            .into_iter()
            .filter_map(|id| self.endpoint(id))
        {
            asks.spawn(tokio::time::timeout(
                Duration::from_millis(500),
                async move {
                    let mut c = RawAdmin::connect(format!("http://{addr}")).await.ok()?;
                    c.cluster_status(ClusterStatusRequest {})
                        .await
                        .ok()
                        .map(|r| r.into_inner())
                },
            ));
        }
        let mut best: Option<ClusterStatusResponse> = None;
        while let Some(answer) = asks.join_next().await {
            let Ok(Ok(Some(status))) = answer else {
                continue;
            };
            if status.leader_id != 0 && best.as_ref().is_none_or(|b| status.term > b.term) {
                best = Some(status);
            }
        }
        best.and_then(|s| usize::try_from(s.leader_id).ok())
    }

    pub async fn await_leader(&self, within: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster elected no leader within {within:?}; see the node logs in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, id: usize, signal: Signal) -> anyhow::Result<()> {
        let nodes = self.lock();
        let child = nodes
            .get(&id)
            .and_then(|n| n.child.as_ref())
            .context("node not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, signal)?;
        Ok(())
    }

    /// SIGKILL.
    pub fn kill(&self, id: usize) -> anyhow::Result<()> {
        let mut nodes = self.lock();
        let node = nodes.get_mut(&id).context("no such node")?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        node.paused = false;
        Ok(())
    }

    pub fn restart(&self, id: usize) -> anyhow::Result<()> {
        self.spawn(id, None)
    }

    pub fn pause(&self, id: usize) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGSTOP)?;
        if let Some(n) = self.lock().get_mut(&id) {
            n.paused = true;
        }
        Ok(())
    }

    pub fn resume(&self, id: usize) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGCONT)?;
        if let Some(n) = self.lock().get_mut(&id) {
            n.paused = false;
        }
        Ok(())
    }

    /// Cuts `from` → `to` between two nodes.
    pub fn cut(&self, from: usize, to: usize, mode: CutMode) -> anyhow::Result<()> {
        match &self.links {
            Links::Proxy(net) => {
                net.cut(End::Node(from), End::Node(to), mode);
                Ok(())
            }
            Links::Netns(ns) => ns.cut(from, to, mode),
            Links::Direct => bail!("the direct backend cannot cut links"),
        }
    }

    /// Delays `from` → `to`; only the proxy backend can.
    pub fn delay(&self, from: usize, to: usize, by: Duration) -> anyhow::Result<()> {
        match &self.links {
            Links::Proxy(net) => {
                net.delay(End::Node(from), End::Node(to), by);
                Ok(())
            }
            Links::Netns(_) => bail!("the netns backend cannot delay links (no netem here)"),
            Links::Direct => bail!("the direct backend cannot delay links"),
        }
    }

    /// Makes node `id` silent: connections to it are accepted and never
    /// answered, and it reaches no one (see `Network::silence` and
    /// `Netns::silence` for how each backend does it). Undone by
    /// [`Cluster::heal_all`].
    pub fn silence(&self, id: usize) -> anyhow::Result<()> {
        match &self.links {
            Links::Proxy(net) => {
                net.silence(id);
                Ok(())
            }
            Links::Netns(ns) => ns.silence(id),
            Links::Direct => bail!("the direct backend cannot silence a node"),
        }
    }

    /// How [`Cluster::silence`] is done on this backend, for the history.
    pub fn silence_method(&self) -> &'static str {
        match &self.links {
            Links::Proxy(_) => "proxy: accepts every connection, forwards nothing either way",
            Links::Netns(_) => "netns: iptables OUTPUT drops all but SYN-ACK (handshakes complete, nothing answers)",
            Links::Direct => "none",
        }
    }

    pub fn can_delay(&self) -> bool {
        matches!(self.links, Links::Proxy(_))
    }

    /// Restores every link (cut, delayed or silenced), resumes paused
    /// (frozen) nodes and restarts stopped ones.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        match &self.links {
            Links::Proxy(net) => net.heal(),
            Links::Netns(ns) => ns.heal()?,
            Links::Direct => {}
        }
        let (paused, stopped): (Vec<usize>, Vec<usize>) = {
            let nodes = self.lock();
            (
                nodes
                    .iter()
                    .filter(|(_, n)| n.paused)
                    .map(|(id, _)| *id)
                    .collect(),
                nodes
                    .iter()
                    .filter(|(_, n)| n.member && n.child.is_none())
                    .map(|(id, _)| *id)
                    .collect(),
            )
        };
        for id in paused {
            self.resume(id)?;
        }
        for id in stopped {
            self.restart(id)?;
        }
        Ok(())
    }

    /// Replaces member `old`: kills it, removes it from the membership,
    /// wipes its data and starts a node with a new id that joins the
    /// cluster through the others. Returns the new id.
    pub async fn replace(&self, old: usize) -> anyhow::Result<usize> {
        self.kill(old)?;
        let others: Vec<String> = self
            .members()
            .into_iter()
            .filter(|id| *id != old)
            .filter_map(|id| self.endpoint(id))
            .collect();
        let mut admin = baton_client::AdminClient::new(&others, Duration::from_secs(20))?;
        admin
            .remove_node(u64::try_from(old)?)
            .await
            .with_context(|| format!("removing node {old}"))?;
        std::fs::remove_dir_all(self.dir.join(format!("node-{old}"))).ok();
        let new = {
            let mut nodes = self.lock();
            if let Some(n) = nodes.get_mut(&old) {
                n.member = false;
            }
            nodes.keys().max().copied().unwrap_or(0) + 1
        };
        let place = Self::place(&self.links, new).await?;
        self.lock().insert(
            new,
            Node {
                place,
                child: None,
                paused: false,
                member: true,
                joined_via: None,
            },
        );
        self.spawn(new, Some(others.join(",")))?;
        // Joined once the leader lists it as a voter.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = admin.cluster_status().await?;
            let id = u64::try_from(new)?;
            if status.members.iter().any(|m| m.id == id && m.voter) {
                return Ok(new);
            }
            if Instant::now() > deadline {
                bail!("node {new} did not become a voter within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every node (SIGKILL: the data stays for inspection).
    pub fn stop(&self) {
        let ids: Vec<usize> = self.lock().keys().copied().collect();
        for id in ids {
            let _ = self.signal(id, Signal::SIGCONT);
            let _ = self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
