//! Idle cost: N workers keep their leases alive on a 3-node cluster for a while;
//! counts the Raft log entries that adds (read from the leader's /metrics) and
//! the leader's CPU (from /proc). Needs the release binaries:
//!
//!     cargo build --release --bins --examples
//!     cargo run --release -p baton-node --example idle_cost -- --workers 1000 --seconds 60
//!
//! Keepalives are sent every TTL/3 (10 s TTL: one every 3.3 s per worker) on one
//! stream per worker, all multiplexed on one HTTP/2 connection to the leader.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::AdminClient;
use baton_proto::v1 as pb;
use baton_proto::v1::admin_client::AdminClient as AdminGrpc;
use baton_proto::v1::worker_client::WorkerClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

async fn metric(http: &str, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return 0;
    };
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let workers = arg("--workers", 1_000);
    let seconds = arg("--seconds", 60);
    let ttl_ms = arg("--ttl-ms", 10_000);
    let bin: PathBuf = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("baton-node"))
        .ok_or_else(|| anyhow::anyhow!("cannot locate baton-node next to this example"))?;
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: run `cargo build --release --bins` first",
        bin.display()
    );

    let dir = tempfile::tempdir()?;
    let grpc: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let http: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let members = grpc
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for i in 0..3 {
        children.push(
            Command::new(&bin)
                .args([
                    "--id",
                    &(i + 1).to_string(),
                    "--listen",
                    &grpc[i],
                    "--http",
                    &http[i],
                ])
                .args([
                    "--data-dir",
                    &dir.path().join(format!("n{}", i + 1)).to_string_lossy(),
                ])
                .args(["--initial-members", &members])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let nodes = Nodes(children);

    let mut admin = AdminClient::new(&grpc, Duration::from_secs(30))?;
    let leader = admin.cluster_status().await?;
    let leader_index = usize::try_from(leader.leader_id)? - 1;
    println!("3-node cluster up; leader is node {}", leader.leader_id);

    // Join everybody while the group is frozen, then unfreeze: one rebalance
    // grants every (free) partition, so nothing is left moving.
    let config = pb::GroupConfig {
        partitions: Some(4096),
        ..Default::default()
    };
    admin.create_group("idle", config).await?;
    let freeze = |frozen| pb::SetFrozenRequest {
        group: "idle".into(),
        frozen,
    };
    admin
        .call(|ch| {
            let r = freeze(true);
            async move { AdminGrpc::new(ch).set_frozen(r).await }
        })
        .await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", grpc[leader_index]))?
        .connect()
        .await?;
    let start = Instant::now();
    let mut sessions = Vec::new();
    for w in 0..workers {
        let join = pb::JoinRequest {
            group: "idle".into(),
            worker: format!("worker-{w:04}"),
            ttl_ms: Some(ttl_ms),
            weight: None,
            labels: Default::default(),
        };
        let joined = WorkerClient::new(channel.clone())
            .join(join)
            .await?
            .into_inner();
        sessions.push((format!("worker-{w:04}"), joined.session));
    }
    println!(
        "{workers} workers joined in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    admin
        .call(|ch| {
            let r = freeze(false);
            async move { AdminGrpc::new(ch).set_frozen(r).await }
        })
        .await?;

    let acks = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds + 15);
    for (worker, session) in sessions {
        let channel = channel.clone();
        let (acks, failures) = (acks.clone(), failures.clone());
        tokio::spawn(async move {
            let message = pb::KeepAliveRequest {
                group: "idle".into(),
                worker,
                session,
            };
            let (tx, rx) = mpsc::channel(1);
            if tx.send(message.clone()).await.is_err() {
                return;
            }
            let Ok(reply) = WorkerClient::new(channel)
                .keep_alive(ReceiverStream::new(rx))
                .await
            else {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut replies = reply.into_inner();
            while Instant::now() < deadline {
                match replies.message().await {
                    Ok(Some(_)) => acks.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                tokio::time::sleep(Duration::from_millis(ttl_ms / 3)).await;
                if tx.send(message.clone()).await.is_err() {
                    return;
                }
            }
        });
    }
    // Let the unfreeze rebalance and the first round of keepalives settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = nodes.0[leader_index].id();
    let (log_before, acks_before, cpu_before, t0) = (
        metric(&http[leader_index], "baton_raft_last_log_index").await,
        acks.load(Ordering::Relaxed),
        cpu_ticks(pid),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (log_after, acks_after, cpu_after, elapsed) = (
        metric(&http[leader_index], "baton_raft_last_log_index").await,
        acks.load(Ordering::Relaxed),
        cpu_ticks(pid),
        t0.elapsed(),
    );
    let cpu_percent = (cpu_after - cpu_before) as f64 / 100.0 / elapsed.as_secs_f64() * 100.0;
    println!(
        "{workers} sessions, TTL {ttl_ms} ms, over {:.0} s: {} keepalives acknowledged ({:.0}/s), {} failed streams",
        elapsed.as_secs_f64(),
        acks_after - acks_before,
        (acks_after - acks_before) as f64 / elapsed.as_secs_f64(),
        failures.load(Ordering::Relaxed)
    );
    println!(
        "log entries added: {} (last log index {log_before} -> {log_after}); leader CPU {cpu_percent:.2}% of one core",
        log_after.saturating_sub(log_before)
    );
    drop(nodes);
    Ok(())
}
