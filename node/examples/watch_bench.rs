//! Watch fan-out: commit → delivery latency to N watchers spread over the 3
//! nodes of a real cluster (release binaries, separate processes, fsync on),
//! while one writer puts tombstones at a steady rate. Needs the release
//! binaries:
//!
//!     cargo build --release --bins --examples
//!     cargo run --release -p baton-node --example watch_bench -- --watchers 1000 --rate 100 --seconds 20
//!
//! Latency is measured from the moment the put is acknowledged to the writer
//! (committed on a majority, applied and fsynced on the leader) to the moment a
//! watcher has the event; a delivery that beats the acknowledgement counts as 0.
//! Every watcher has its own connection, as separate worker processes would.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::AdminClient;
use baton_proto::v1 as pb;
use baton_proto::v1::tombstones_client::TombstonesClient;
use baton_proto::v1::watch_client::WatchClient;

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

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let watchers = arg("--watchers", 1_000);
    let rate = arg("--rate", 100).max(1);
    let seconds = arg("--seconds", 20);
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
    let members = grpc
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, addr) in grpc.iter().enumerate() {
        children.push(
            Command::new(&bin)
                .args(["--id", &(i + 1).to_string(), "--listen", addr])
                .args(["--http", &format!("127.0.0.1:{}", free_port())])
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
    let _nodes = Nodes(children);

    let mut admin = AdminClient::new(&grpc, Duration::from_secs(30))?;
    let leader = admin.cluster_status().await?;
    println!("3-node cluster up; leader is node {}", leader.leader_id);
    let config = pb::GroupConfig {
        partitions: Some(1024),
        ..Default::default()
    };
    admin.create_group("fanout", config).await?;

    // Watchers, round-robin over the nodes, each on its own connection.
    // (node index, revision, when the watcher had it)
    let received: Arc<Mutex<Vec<(usize, u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let expected = rate * seconds;
    let mut tasks = Vec::new();
    for i in 0..watchers {
        let node = usize::try_from(i)? % grpc.len();
        let addr = &grpc[node];
        let mut client = WatchClient::connect(format!("http://{addr}")).await?;
        let request = pb::WatchRequest {
            group: "fanout".into(),
            from_revision: 0,
            worker: String::new(),
            kinds: Vec::new(),
        };
        let mut stream = client.watch(request).await?.into_inner();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
            let mut events = 0;
            while events < expected {
                match stream.message().await {
                    Ok(Some(m)) if !m.events.is_empty() => {
                        mine.push((node, m.revision, Instant::now()));
                        events += 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            received.lock().map(|mut r| r.extend(mine)).ok();
        }));
    }
    println!("{watchers} watchers connected over {} nodes", grpc.len());

    // One writer at a steady rate.
    let mut acked: HashMap<u64, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate)?);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    for i in 0..expected {
        tick.tick().await;
        let request = pb::PutTombstoneRequest {
            group: "fanout".into(),
            key: format!("entity-{i}"),
            ..Default::default()
        };
        let r = admin
            .call(|ch| {
                let r = request.clone();
                async move { TombstonesClient::new(ch).put(r).await }
            })
            .await?;
        acked.insert(r.revision, Instant::now());
    }
    let elapsed = started.elapsed();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await??;
    }

    let received = received
        .lock()
        .map_err(|_| anyhow::anyhow!("a watcher panicked"))?;
    let mut latencies: Vec<Duration> = Vec::with_capacity(received.len());
    let mut by_node: Vec<Vec<Duration>> = vec![Vec::new(); grpc.len()];
    let mut early = 0u64;
    for (node, revision, at) in received.iter() {
        if let Some(acked_at) = acked.get(revision) {
            if at < acked_at {
                early += 1;
            }
            latencies.push(at.saturating_duration_since(*acked_at));
            by_node[*node].push(at.saturating_duration_since(*acked_at));
        }
    }
    latencies.sort();
    let missing = (watchers * expected).saturating_sub(latencies.len() as u64);
    println!(
        "{expected} writes in {:.1} s ({:.0}/s), {} deliveries ({missing} missing, {early} before the writer's ack)",
        elapsed.as_secs_f64(),
        expected as f64 / elapsed.as_secs_f64(),
        latencies.len()
    );
    println!(
        "commit -> delivery: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile(&latencies, 0.5).as_secs_f64() * 1e3,
        quantile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for (i, mut l) in by_node.into_iter().enumerate() {
        l.sort();
        let role = if i + 1 == usize::try_from(leader.leader_id)? {
            "leader"
        } else {
            "follower"
        };
        println!(
            "  watchers on node {} ({role}): p50 {:.1} ms, p99 {:.1} ms",
            i + 1,
            quantile(&l, 0.5).as_secs_f64() * 1e3,
            quantile(&l, 0.99).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
