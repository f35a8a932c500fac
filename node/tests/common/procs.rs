//! Real `baton-node` processes for process-level tests: static clusters on
//! loopback, SIGKILL and SIGTERM, and `batonctl` next to the node binary.
//!
//! `batonctl` belongs to another package, so it must have been built next to
//! `baton-node` first: `scripts/test` (the README's test command) does that.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::v1::admin_client::AdminClient as RawAdmin;
use baton_proto::v1::ClusterStatusRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const NODE: &str = env!("CARGO_BIN_EXE_baton-node");
const WAIT: Duration = Duration::from_secs(30);

pub fn batonctl() -> PathBuf {
    let path = Path::new(NODE).with_file_name("batonctl");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --bins`; scripts/test does)",
        path.display()
    );
    path
}

/// A `baton-node` process, killed if the test ends without stopping it.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[String], cwd: &Path, log: PathBuf) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(NODE)
            .args(args)
            .current_dir(cwd)
            .env("BATON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn baton-node");
        Proc { child, log }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"))
    }

    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Sends SIGTERM and waits for the exit; fails the test unless the node
    /// exits 0 within `within`.
    pub fn sigterm(mut self, within: Duration) {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "exit after SIGTERM: {status}; log:\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(
                start.elapsed() < within,
                "still running {within:?} after SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port. Static bootstrap needs addresses before the nodes
/// start, so the port is released again; another process could take it in
/// between, which on a test machine does not happen in practice.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Arguments for node `id` (1-based) of a static 3-node cluster at `addrs`.
pub fn node_args(addrs: &[SocketAddr], id: usize) -> Vec<String> {
    let members = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        addrs[id - 1].to_string(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        format!("node-{id}"),
        "--initial-members".into(),
        members,
    ]
}

/// Starts a static 3-node cluster of processes in `dir`; returns their
/// addresses and processes (index i is node i + 1).
pub fn three_processes(dir: &Path) -> (Vec<SocketAddr>, Vec<Option<Proc>>) {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    let procs = (1..=3)
        .map(|id| {
            Some(Proc::spawn(
                &node_args(&addrs, id),
                dir,
                dir.join(format!("node-{id}.log")),
            ))
        })
        .collect();
    (addrs, procs)
}

pub async fn status_of(addr: SocketAddr) -> Option<baton_proto::v1::ClusterStatusResponse> {
    let mut client = RawAdmin::connect(format!("http://{addr}")).await.ok()?;
    client
        .cluster_status(ClusterStatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Polls a node (another process: there is no event to await) until it has
/// applied `revision`.
pub async fn wait_applied(addr: SocketAddr, revision: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        if status_of(addr)
            .await
            .is_some_and(|s| s.applied_index >= revision)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not apply {revision} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs batonctl against `endpoint`; returns stdout, failing the test on error.
pub fn ctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(batonctl())
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .expect("run batonctl");
    assert!(
        out.status.success(),
        "batonctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs batonctl with `--json` and parses what it prints.
pub fn ctl_json(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ctl(endpoint, &all)).expect("batonctl --json prints JSON")
}
