//! The `netns` network backend (root only): each node runs in its own
//! network namespace with its own address on a bridge, and a partition is an
//! `iptables` rule in the receiving node's namespace — a silent `DROP`, or a
//! `REJECT --reject-with tcp-reset`. A silent node (accepts, never answers)
//! is an `OUTPUT` rule in its own namespace that lets only SYN-ACKs out
//! (see [`Netns::silence`]). This kernel has no netem, so this backend
//! cannot delay a link; the proxy backend can.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

use crate::proxy::CutMode;

const BRIDGE: &str = "btnj0";
const PREFIX: &str = "btnj-";
/// The harness's own address on the bridge; nodes are .(10 + id).
const SUBNET: [u8; 3] = [10, 213, 0];

pub fn node_ip(id: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        SUBNET[0],
        SUBNET[1],
        SUBNET[2],
        10 + u8::try_from(id).unwrap_or(200),
    )
}

fn namespace(id: usize) -> String {
    format!("{PREFIX}{id}")
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What is missing for this backend, in words a person can act on; `None`
/// when it can run.
pub fn missing_prerequisites() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("the netns backend needs root (network namespaces, iptables)".into());
    }
    let mut missing = Vec::new();
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("`{tool}` (Debian package {package})"));
        }
    }
    (!missing.is_empty()).then(|| format!("the netns backend needs {}", missing.join(" and ")))
}

/// The namespaces and bridge of one run; removed on drop.
pub struct Netns {
    ids: std::sync::Mutex<Vec<usize>>,
}

impl Netns {
    /// Creates the bridge (left over ones from a crashed run are removed).
    pub fn new() -> anyhow::Result<Self> {
        if let Some(why) = missing_prerequisites() {
            bail!(why);
        }
        cleanup();
        run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        let host = format!("{}.{}.{}.1/24", SUBNET[0], SUBNET[1], SUBNET[2]);
        run(&["ip", "addr", "add", &host, "dev", BRIDGE])?;
        run(&["ip", "link", "set", BRIDGE, "up"])?;
        // Where Docker's br_netfilter runs bridged frames through FORWARD
        // (policy DROP), let the bridge's own traffic through.
        let _ = run(&[
            "iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
        ]);
        Ok(Self {
            ids: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Creates node `id`'s namespace, wired to the bridge.
    pub fn add_node(&self, id: usize) -> anyhow::Result<()> {
        let ns = namespace(id);
        let host_end = format!("btnjh{id}");
        let node_end = format!("btnjn{id}");
        let _ = run(&["ip", "netns", "del", &ns]);
        run(&["ip", "netns", "add", &ns])?;
        run(&[
            "ip", "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
        ])?;
        run(&["ip", "link", "set", &node_end, "netns", &ns])?;
        run(&["ip", "link", "set", &host_end, "master", BRIDGE])?;
        run(&["ip", "link", "set", &host_end, "up"])?;
        let addr = format!("{}/24", node_ip(id));
        run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &node_end])?;
        run(&["ip", "-n", &ns, "link", "set", &node_end, "up"])?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        Ok(())
    }

    /// The command prefix that runs a program in node `id`'s namespace.
    pub fn exec_prefix(id: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), namespace(id)]
    }

    /// Drops (or resets) what `from` sends to `to`.
    pub fn cut(&self, from: usize, to: usize, mode: CutMode) -> anyhow::Result<()> {
        let ns = namespace(to);
        let src = node_ip(from).to_string();
        match mode {
            CutMode::Drop => run(&[
                "ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &src, "-j", "DROP",
            ]),
            CutMode::Reset => run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "iptables",
                "-A",
                "INPUT",
                "-s",
                &src,
                "-p",
                "tcp",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ]),
        }
    }

    /// Makes node `id` silent: every connection to it is accepted by its
    /// kernel and never answered, and it reaches no one. In its namespace,
    /// everything it sends is dropped except the SYN-ACK of a handshake
    /// (and loopback): callers complete the handshake, their connection is
    /// established, and then nothing comes back, not even an ACK or a
    /// reset; its own connections never get past the SYN. The process
    /// keeps running, as behind the proxy backend's silent mode.
    pub fn silence(&self, id: usize) -> anyhow::Result<()> {
        let ns = namespace(id);
        let rule = |args: &[&str]| {
            let mut full = vec!["ip", "netns", "exec", &ns, "iptables", "-A", "OUTPUT"];
            full.extend_from_slice(args);
            run(&full)
        };
        rule(&["-o", "lo", "-j", "ACCEPT"])?;
        rule(&[
            "-p",
            "tcp",
            "--tcp-flags",
            "SYN,ACK",
            "SYN,ACK",
            "-j",
            "ACCEPT",
        ])?;
        rule(&["-j", "DROP"])
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for id in ids {
            for chain in ["INPUT", "OUTPUT"] {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &namespace(id),
                    "iptables",
                    "-F",
                    chain,
                ])?;
            }
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        cleanup();
    }
}

/// Removes every namespace and the bridge this backend makes.
fn cleanup() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(ns) = line
                .split_whitespace()
                .next()
                .filter(|n| n.starts_with(PREFIX))
            {
                let _ = run(&["ip", "netns", "del", ns]);
            }
        }
    }
    let _ = run(&[
        "iptables", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
    ]);
    let _ = run(&["ip", "link", "del", BRIDGE]);
}
