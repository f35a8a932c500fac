//! `baton-node`: runs one node until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use baton_node::{Args, Node};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves when the process is asked to stop.
async fn stop_requested() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let data_dir = config.data_dir.clone();
    let stop = stop_requested();
    tokio::pin!(stop);
    let node = tokio::select! {
        node = Node::start(config) => node?,
        signal = &mut stop => {
            tracing::info!("{} before the node was up; exiting", signal?);
            return Ok(());
        }
    };
    tracing::info!(
        "baton-node {} serving: gRPC on {} (advertised as {}), HTTP on {}, data in {}",
        node.id(),
        node.grpc_addr(),
        node.addr(),
        node.http_addr()
            .map_or("(off)".to_string(), |a| a.to_string()),
        data_dir.display()
    );
    let signal = stop.await?;
    tracing::info!("{signal}: finishing in-flight requests and shutting down");
    node.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
