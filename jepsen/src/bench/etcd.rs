//! A 3-node etcd 3.4 cluster on loopback (Debian's `etcd-server`, fsync on
//! as by default), stopped and its data removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etcd_client::Client;

use super::{Target, CONNECTIONS};

pub struct EtcdCluster {
    members: Vec<Member>,
    pub endpoints: Vec<String>,
    initial: String,
    dir: PathBuf,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    crate::cluster::free_port(std::net::IpAddr::from([127, 0, 0, 1]))
}

impl EtcdCluster {
    pub async fn start(n: usize, dir: &Path) -> anyhow::Result<Self> {
        let found = Command::new("etcd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!("etcd is not installed: scripts/bench installs Debian's etcd-server when run as root (apt-get install etcd-server)");
        }
        std::fs::create_dir_all(dir)?;
        let members: Vec<Member> = (0..n)
            .map(|i| {
                Ok(Member {
                    name: format!("e{}", i + 1),
                    client: free_port()?,
                    peer: free_port()?,
                    child: None,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let endpoints = members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect();
        let mut cluster = Self {
            members,
            endpoints,
            initial,
            dir: dir.to_path_buf(),
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        // Ready once a leader is known and a write goes through.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Client::connect(&cluster.endpoints, None).await {
                if c.put("bench/ready", "1", None).await.is_ok() {
                    return Ok(cluster);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not become ready within 30 s; see {}",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts member `i` (again, on its data: the initial-cluster flags are
    /// then ignored).
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let data = self.data_dir(i);
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))?;
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", "baton-bench"])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start etcd")?;
        m.child = Some(child);
        Ok(())
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.members[i].name)
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    /// The member that says it leads, by index.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for (i, e) in self.endpoints.iter().enumerate() {
            let Ok(mut c) = Client::connect([e], None).await else {
                continue;
            };
            if let Ok(s) = c.status().await {
                if s.header().is_some_and(|h| h.member_id() == s.leader()) {
                    return Ok(i);
                }
            }
        }
        bail!("no etcd member says it leads")
    }
}

/// A client of one member, on a connection of its own. Its receive window
/// is raised from hyper's default: h2 (0.4.20 on) closes a connection whose
/// unread small DATA frames cost more than half the window, which a few
/// watches of a busy prefix reach as soon as their reader falls behind.
pub async fn client(endpoint: &str) -> anyhow::Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
        .initial_connection_window_size(16 << 20)
        .connect()
        .await?;
    Ok(Client::from_channel(etcd_client::Channel::Tonic(channel), None).await?)
}

/// A client of the leader only (a request sent to a follower costs etcd an
/// extra hop, as it would baton).
pub async fn leader_client(cluster: &EtcdCluster) -> anyhow::Result<Client> {
    let leader = cluster.leader().await?;
    client(&cluster.endpoints[leader]).await
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// etcd's durable write: a put to the leader, on a few shared clients.
#[derive(Clone)]
pub struct Etcd {
    clients: Arc<Vec<Client>>,
}

impl Etcd {
    pub async fn connect(cluster: &EtcdCluster) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(leader_client(cluster).await?);
        }
        Ok(Self {
            clients: Arc::new(clients),
        })
    }
}

impl Target for Etcd {
    async fn put(&self, client: usize, group: &str, key: String) -> anyhow::Result<()> {
        let mut c = self.clients[client % self.clients.len()].kv_client();
        c.put(format!("{group}/{key}"), "x", None).await?;
        Ok(())
    }
}
