//! `baton-jepsen`: starts a real baton cluster, drives concurrent clients,
//! injects faults, records everything and checks guarantees G1–G5.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use baton_jepsen::check::Verdict;
use baton_jepsen::cluster::Backend;
use baton_jepsen::nemesis::Family;
use baton_jepsen::run::{self, Options};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "baton-jepsen",
    about = "Chaos tests for baton: a real cluster, concurrent clients, faults, and checkers for every guarantee",
    after_help = "Examples:\n  baton-jepsen test --nemesis all --time-limit 60\n  baton-jepsen test --nodes 5 --backend netns --nemesis partition,kill   (as root)\n  baton-jepsen recheck store/proxy-n3-all/latest\n\nExit status: 0 valid, 1 invalid, 2 unknown or error."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a test and check its history.
    Test {
        /// Cluster size.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Network backend: `proxy` needs nothing; `netns` needs root, ip and iptables.
        #[arg(long, value_enum, default_value = "proxy")]
        backend: Backend,
        /// Fault families, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
        nemesis: Vec<Family>,
        /// Seconds of workload and faults (the final reads come after).
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Seed of the fault schedule and the clients' choices [default: random].
        #[arg(long)]
        seed: Option<u64>,
        /// Where runs are stored: STORE/<test>/<timestamp>/, with a `latest` link.
        #[arg(long, default_value = "store")]
        store: PathBuf,
        /// The node binary [default: baton-node next to this program].
        #[arg(long)]
        node_binary: Option<PathBuf>,
        /// Time budget of the linearizability search, per register, in seconds.
        #[arg(long, default_value_t = 30)]
        budget: u64,
        /// Read the registers with `serializable` (from the local replica,
        /// possibly stale) instead of linearizably: the checker must then
        /// report the stale reads a partition causes (a self-test).
        #[arg(long)]
        serializable_reads: bool,
    },
    /// Benchmarks side by side with etcd 3.4 (3 nodes each, loopback, fsync
    /// on). Run through scripts/bench, which installs etcd and builds with
    /// the etcd client.
    Bench {
        #[command(subcommand)]
        scenario: Scenario,
    },
    /// Re-run the checkers on a stored run (its history.jsonl), offline.
    Recheck {
        /// A run directory, e.g. store/proxy-n3-all/latest.
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        budget: u64,
    },
}

#[derive(Subcommand)]
enum Scenario {
    /// Durable single-key writes (tombstone puts vs etcd puts) at rising
    /// concurrency: throughput and p50/p99/max latency.
    Writes {
        /// Concurrent clients, one level after another.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
        clients: Vec<usize>,
        /// Seconds per level and system.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the Markdown table to this file.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// The node binary [default: baton-node next to this program].
        #[arg(long)]
        node_binary: Option<PathBuf>,
    },
}

fn exit(v: Verdict) -> ExitCode {
    match v {
        Verdict::Valid => ExitCode::SUCCESS,
        Verdict::Invalid => ExitCode::from(1),
        Verdict::Unknown => ExitCode::from(2),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(v) => exit(v),
        Err(e) => {
            eprintln!("baton-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main() -> anyhow::Result<Verdict> {
    match Cli::parse().command {
        Cmd::Test {
            nodes,
            backend,
            nemesis,
            time_limit,
            seed,
            store,
            node_binary,
            budget,
            serializable_reads,
        } => {
            if !(1..=9).contains(&nodes) {
                anyhow::bail!("--nodes must be 1 to 9");
            }
            if backend == Backend::Netns {
                if let Some(why) = baton_jepsen::netns::missing_prerequisites() {
                    anyhow::bail!("{why}");
                }
            }
            let node_binary = match node_binary {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("baton-node"),
            };
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos().into())
                    .unwrap_or_default()
            });
            let opts = Options {
                nodes,
                backend,
                families: nemesis,
                time_limit: Duration::from_secs(time_limit),
                seed,
                store,
                node_binary,
                command_line: std::env::args().collect::<Vec<_>>().join(" "),
                budget: Duration::from_secs(budget),
                serializable_reads,
            };
            let (_, verdict) = run::test(&opts).await?;
            Ok(verdict)
        }
        Cmd::Bench {
            scenario:
                Scenario::Writes {
                    clients,
                    seconds,
                    json,
                    markdown,
                    node_binary,
                },
        } => {
            let node_binary = match node_binary {
                Some(b) => b,
                None => std::env::current_exe()?.with_file_name("baton-node"),
            };
            let dir = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
            println!(
                "baton-jepsen bench writes: {clients:?} clients, {seconds} s per level, 3-node clusters on loopback (data in {})",
                dir.display()
            );
            let rows = baton_jepsen::bench::writes(
                &node_binary,
                &dir,
                &clients,
                Duration::from_secs(seconds),
            )
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            let rows = rows?;
            let table = baton_jepsen::bench::writes_table(&rows);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{table}");
            }
            if let Some(path) = markdown {
                std::fs::write(&path, &table)?;
            }
            Ok(Verdict::Valid)
        }
        Cmd::Recheck { dir, budget } => {
            let ops = baton_jepsen::history::load(&dir.join("history.jsonl"))?;
            println!(
                "baton-jepsen: rechecking {} ({} operations)",
                dir.display(),
                ops.len()
            );
            run::check_and_report(&dir, &ops, Duration::from_secs(budget))
        }
    }
}
