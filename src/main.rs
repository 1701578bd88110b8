//! The `raftor` command: run a node, or a local cluster.

use clap::{Parser, Subcommand};
use raftor::config::ServeArgs;
use raftor::local_cluster::{start_local_cluster, watch_leader};
use raftor::server::start_node;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "raftor",
    version,
    about = "Raft consensus built from actors, durable in RocksDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node of a cluster.
    Serve(ServeArgs),
    /// Run a local cluster in this process (loopback TCP, RocksDB under --data-dir) until Ctrl-C.
    Cluster {
        /// How many nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// Where the nodes keep their data (one directory per node inside).
        #[arg(long, default_value = "./raftor-data")]
        data_dir: PathBuf,
        /// Node i listens for Raft traffic on 127.0.0.1:(base-port + i).
        #[arg(long, default_value_t = 17100)]
        base_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let system = actix::System::new();
    let result = system.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("raftor: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.resolve().map_err(|e| e.to_string())?;
            let node = start_node(&config).await.map_err(|e| e.to_string())?;
            tracing::info!(node = %config.id, raft = %node.raft_addr, data_dir = %config.data_dir.display(), "serving; Ctrl-C to stop");
            let _ = tokio::signal::ctrl_c().await;
            node.shutdown();
            Ok(())
        }
        Command::Cluster {
            nodes,
            data_dir,
            base_port,
        } => {
            let running = start_local_cluster(nodes, base_port, &data_dir)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(nodes, data_dir = %data_dir.display(), "local cluster started; Ctrl-C to stop");
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => {}
                _ = watch_leader(&running) => {}
            }
            for node in &running {
                node.shutdown();
            }
            // Give the actors a moment to flush and close their listeners.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            Ok(())
        }
    }
}
