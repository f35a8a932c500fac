//! Real `baton-node` processes for process-level tests: static clusters on
//! loopback, SIGKILL and SIGTERM, and `batonctl` next to the node binary.
//!
//! `batonctl` belongs to another package, so it must have been built next to
//! `baton-node` first: `scripts/test` (the README's test command) does that.
//! `BATON_BIN_DIR` runs the tests against the binaries of another build (to
//! show a test failing on the code before a fix).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_proto::v1::admin_client::AdminClient as RawAdmin;
use baton_proto::v1::ClusterStatusRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const NODE: &str = env!("CARGO_BIN_EXE_baton-node");
const WAIT: Duration = Duration::from_secs(30);

/// The `baton-node` binary: this build's, or the one in `BATON_BIN_DIR`.
pub fn node_bin() -> PathBuf {
    match std::env::var_os("BATON_BIN_DIR") {
        Some(dir) => Path::new(&dir).join("baton-node"),
        None => PathBuf::from(NODE),
    }
}

pub fn batonctl() -> PathBuf {
    let path = node_bin().with_file_name("batonctl");
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
        let child = Command::new(node_bin())
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

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
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
///
/// Static bootstrap needs every address before any node starts, and a
/// restarted node must come back at its address, so nodes cannot bind port 0
/// here: ports are reserved by binding and releasing them. Another process
/// can take one in between ("Address already in use"); a node that exits
/// before the cluster answers is taken for that, and the cluster is started
/// again on new ports (three tries).
pub fn three_processes(dir: &Path) -> (Vec<SocketAddr>, Vec<Option<Proc>>) {
    for attempt in 1..=3 {
        let addrs: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
        let mut procs: Vec<Option<Proc>> = (1..=3)
            .map(|id| {
                Some(Proc::spawn(
                    &node_args(&addrs, id),
                    dir,
                    dir.join(format!("node-{id}.log")),
                ))
            })
            .collect();
        let deadline = Instant::now() + WAIT;
        let exited = loop {
            let exited = procs.iter_mut().flatten().any(Proc::exited);
            // Each node logs that it serves once it has bound its port.
            let listening = procs
                .iter()
                .flatten()
                .all(|p| p.log_text().contains("serving:"));
            if exited || listening || Instant::now() > deadline {
                break exited;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !exited {
            return (addrs, procs);
        }
        eprintln!("attempt {attempt}: a node exited at start (a reserved port taken?); starting again on new ports");
        procs.clear();
        for id in 1..=3 {
            let _ = std::fs::remove_dir_all(dir.join(format!("node-{id}")));
            let _ = std::fs::rename(
                dir.join(format!("node-{id}.log")),
                dir.join(format!("node-{id}.attempt-{attempt}.log")),
            );
        }
    }
    panic!(
        "three tries to start a 3-node cluster in {} failed; see its node-*.log",
        dir.display()
    );
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

/// Starts a single-node cluster in `dir` on OS-chosen ports; returns the
/// addresses it serves gRPC and HTTP on (read from its log, so no port is
/// reserved ahead and none can be taken in between).
pub fn single_process(dir: &Path) -> (SocketAddr, SocketAddr, Proc) {
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        "node-1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut proc = Proc::spawn(&args, dir, dir.join("node-1.log"));
    let deadline = Instant::now() + WAIT;
    loop {
        let log = proc.log_text();
        let after = |marker: &str| -> Option<SocketAddr> {
            let rest = log.split("serving: ").nth(1)?.split(marker).nth(1)?;
            rest.split([' ', ',']).next()?.parse().ok()
        };
        if let (Some(grpc), Some(http)) = (after("gRPC on "), after("HTTP on ")) {
            return (grpc, http, proc);
        }
        assert!(!proc.exited(), "the node exited at start; log:\n{log}");
        assert!(
            Instant::now() < deadline,
            "the node did not serve within {WAIT:?}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
