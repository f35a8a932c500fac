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

/// What every scenario can do with its figures.
#[derive(clap::Args)]
struct Output {
    /// Also print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the Markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Replace this scenario's section of a benchmarks page (e.g.
    /// docs/benchmarks.md) with the command, the machine and the figures.
    #[arg(long)]
    docs: Option<PathBuf>,
    /// The node binary [default: baton-node next to this program].
    #[arg(long)]
    node_binary: Option<PathBuf>,
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
        #[command(flatten)]
        output: Output,
    },
    /// Commit → delivery latency to many watchers (baton: a group's
    /// watchers; etcd: a prefix's) under one writer at a steady rate.
    Watch {
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Writes a second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[command(flatten)]
        output: Output,
    },
    /// Idle cost of live workers (baton sessions vs etcd leases with a
    /// registration key): log entries, leader CPU, loopback bytes.
    Idle {
        #[arg(long, default_value_t = 1000)]
        workers: usize,
        /// Lease TTL in seconds; a keepalive goes every TTL/3.
        #[arg(long, default_value_t = 10)]
        ttl: u64,
        /// Seconds of the measured window.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[command(flatten)]
        output: Output,
    },
    /// Partition ownership as workers scale FROM → TO → FROM (baton's
    /// handoff vs one etcd key per partition): time to a settled
    /// assignment, Raft log entries, watch events.
    Assign {
        #[arg(long, default_value_t = 8192)]
        partitions: u32,
        #[arg(long, default_value_t = 64)]
        from: usize,
        #[arg(long, default_value_t = 128)]
        to: usize,
        /// Worker lease TTL in seconds.
        #[arg(long, default_value_t = 10)]
        ttl: u64,
        /// Longest wait for one phase to settle, in seconds.
        #[arg(long, default_value_t = 180)]
        patience: u64,
        #[command(flatten)]
        output: Output,
    },
    /// Balancing by load, baton alone (the count-based assignment of the
    /// same run is the baseline): workers report Zipf loads; phases converge,
    /// load shifts, a join, a leave; max ÷ mean over time, rounds and what
    /// each moves, cooldown violations, overlapping holds.
    Balance {
        #[arg(long, default_value_t = 8192)]
        partitions: u32,
        #[arg(long, default_value_t = 64)]
        workers: usize,
        /// The Zipf exponent of the partitions' loads.
        #[arg(long, default_value_t = 1.1)]
        exponent: f64,
        /// How many times the hot set moves (another seed).
        #[arg(long, default_value_t = 2)]
        shifts: usize,
        /// Longest a phase may take to converge, in seconds.
        #[arg(long, default_value_t = 120)]
        patience: u64,
        #[command(flatten)]
        output: Output,
    },
    /// A loaded cluster (groups, sessions, tombstones): memory, disk,
    /// writes empty vs loaded, snapshot, restart of a killed follower.
    Scale {
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 1_000_000)]
        tombstones: u64,
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Concurrent clients that put the tombstones.
        #[arg(long, default_value_t = 500)]
        loaders: usize,
        /// Session (lease) TTL in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: u64,
        #[command(flatten)]
        output: Output,
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
        Cmd::Bench { scenario } => {
            bench(scenario).await?;
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

/// Runs one benchmark scenario in a scratch directory that is removed
/// afterwards, then prints and stores its figures.
async fn bench(scenario: Scenario) -> anyhow::Result<()> {
    use baton_jepsen::bench::{self, assign, balance, idle, scale, watch};
    let dir = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
    let binary = |b: &Option<PathBuf>| -> anyhow::Result<PathBuf> {
        Ok(match b {
            Some(b) => b.clone(),
            None => std::env::current_exe()?.with_file_name("baton-node"),
        })
    };
    // The command as a reader would rerun it (without where it was stored).
    let mut args: Vec<String> = std::env::args()
        .skip_while(|a| a != "bench")
        .skip(1)
        .collect();
    for flag in ["--docs", "--markdown", "--node-binary"] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args.drain(i..(i + 2).min(args.len()));
        }
    }
    args.retain(|a| a != "--json");
    let command = format!("scripts/bench {}", args.join(" "));
    println!(
        "{command}: 3-node clusters on loopback, data in {}",
        dir.display()
    );
    let run = async {
        Ok::<_, anyhow::Error>(match &scenario {
            Scenario::Writes {
                clients,
                seconds,
                output,
            } => {
                let rows = bench::writes(
                    &binary(&output.node_binary)?,
                    &dir,
                    clients,
                    Duration::from_secs(*seconds),
                )
                .await;
                (
                    "writes",
                    output,
                    rows.and_then(|r| {
                        Ok((
                            bench::writes_table(&r),
                            serde_json::to_value(&r)?,
                            Some(bench::chart::writes(&r)),
                        ))
                    }),
                )
            }
            Scenario::Watch {
                watchers,
                rate,
                seconds,
                output,
            } => {
                let params = watch::Params {
                    watchers: *watchers,
                    rate: *rate,
                    seconds: *seconds,
                };
                let r = watch::run(&binary(&output.node_binary)?, &dir, params).await;
                (
                    "watch",
                    output,
                    r.and_then(|r| Ok((watch::table(&r), serde_json::to_value(&r)?, None))),
                )
            }
            Scenario::Idle {
                workers,
                ttl,
                seconds,
                output,
            } => {
                let params = idle::Params {
                    workers: *workers,
                    ttl: Duration::from_secs(*ttl),
                    seconds: *seconds,
                };
                let r = idle::run(&binary(&output.node_binary)?, &dir, params).await;
                (
                    "idle",
                    output,
                    r.and_then(|r| Ok((idle::table(&r), serde_json::to_value(&r)?, None))),
                )
            }
            Scenario::Assign {
                partitions,
                from,
                to,
                ttl,
                patience,
                output,
            } => {
                let params = assign::Params {
                    partitions: *partitions,
                    from: *from,
                    to: *to,
                    ttl: Duration::from_secs(*ttl),
                    patience: Duration::from_secs(*patience),
                };
                let r = assign::run(&binary(&output.node_binary)?, &dir, params).await;
                (
                    "assign",
                    output,
                    r.and_then(|r| Ok((assign::table(&r), serde_json::to_value(&r)?, None))),
                )
            }
            Scenario::Balance {
                partitions,
                workers,
                exponent,
                shifts,
                patience,
                output,
            } => {
                let params = balance::Params {
                    partitions: *partitions,
                    workers: *workers,
                    exponent: *exponent,
                    shifts: *shifts,
                    patience: Duration::from_secs(*patience),
                };
                let r = balance::run(&binary(&output.node_binary)?, &dir, params).await;
                (
                    "balance",
                    output,
                    r.and_then(|r| Ok((balance::table(&r), serde_json::to_value(&r)?, None))),
                )
            }
            Scenario::Scale {
                groups,
                tombstones,
                sessions,
                loaders,
                ttl,
                output,
            } => {
                let params = scale::Params {
                    groups: *groups,
                    tombstones: *tombstones,
                    sessions: *sessions,
                    loaders: *loaders,
                    ttl: Duration::from_secs(*ttl),
                };
                let r = scale::run(&binary(&output.node_binary)?, &dir, params).await;
                (
                    "scale",
                    output,
                    r.and_then(|r| Ok((scale::table(&r), serde_json::to_value(&r)?, None))),
                )
            }
        })
    };
    // Interrupted, the run is dropped: every cluster it started is killed.
    let outcome = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; the clusters it started are stopped")),
    };
    let finished = outcome.and_then(|(name, output, result)| Ok((name, output, result?)));
    if finished.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!(
            "the clusters are stopped; their logs are kept in {}",
            dir.display()
        );
    }
    let (name, output, (mut table, json, chart)) = finished?;
    println!("\n{table}");
    if output.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    if let Some(path) = &output.markdown {
        std::fs::write(path, &table)?;
    }
    if let Some(path) = &output.docs {
        if let Some(svg) = chart {
            // The chart goes next to the page, which links it.
            let file = format!("bench-{name}.svg");
            std::fs::write(path.with_file_name(&file), svg)?;
            table.push_str(&format!("\n![{name}: baton and etcd]({file})\n"));
        }
        bench::docs::update(path, name, &command, &table)?;
        println!("updated the `{name}` section of {}", path.display());
    }
    Ok(())
}
