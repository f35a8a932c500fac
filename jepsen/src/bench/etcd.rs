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
    children: Vec<Child>,
    pub endpoints: Vec<String>,
    dir: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        let mut endpoints = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", "baton-bench"])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("cannot start etcd")?;
            children.push(child);
            endpoints.push(format!("http://127.0.0.1:{client}"));
        }
        let cluster = Self {
            children,
            endpoints,
            dir: dir.to_path_buf(),
        };
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
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
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
    /// Clients of the leader only, as baton's load generator uses (a put
    /// sent to a follower costs etcd an extra hop, as it would baton).
    pub async fn connect(cluster: &EtcdCluster) -> anyhow::Result<Self> {
        let mut leader = None;
        for e in &cluster.endpoints {
            let mut c = Client::connect([e], None).await?;
            let s = c.status().await?;
            if s.header().is_some_and(|h| h.member_id() == s.leader()) {
                leader = Some(e.clone());
            }
        }
        let leader = leader.context("no etcd member says it leads")?;
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(Client::connect([&leader], None).await?);
        }
        Ok(Self {
            clients: Arc::new(clients),
        })
    }
}

impl Target for Etcd {
    async fn put(&self, client: usize, key: String) -> anyhow::Result<()> {
        let mut c = self.clients[client % self.clients.len()].kv_client();
        c.put(key, "x", None).await?;
        Ok(())
    }
}
