//! The `raftor` command: run a node, or a local cluster.

mod backup;
mod bench;
mod commands;
mod security;
mod sim;

use crate::commands::ClientCommand;
use clap::{Parser, Subcommand};
use raftor::StopCause;
use raftor_kv::config::{LogFormat, NodeConfig, ServeArgs};
use raftor_kv::local_cluster::{local_credentials, secure, start_local_cluster_with, watch_leader};
use raftor_kv::server::{start_node, RunningNode};
use std::path::PathBuf;
use std::process::ExitCode;

/// The binary's allocator: jemalloc. Under load each request allocates and frees many small
/// objects across the node's threads (futures, envelopes, entries, frames); glibc's malloc
/// consolidated and searched its free lists for them: 15% of the leader's samples at 64 clients.
/// The library leaves the choice to whoever embeds it. (BENCHMARKS.md: "jemalloc in the raftor
/// binary".)
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    Serve(Box<ServeArgs>),
    /// Run a local cluster in this process (loopback TCP, RocksDB under --data-dir) until Ctrl-C.
    Cluster {
        /// How many nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// Where the nodes keep their data (one directory per node inside).
        #[arg(long, default_value = "./raftor-data")]
        data_dir: PathBuf,
        /// Node i listens for Raft traffic (and the native client protocol) on
        /// 127.0.0.1:(base-port + i).
        #[arg(long, default_value_t = 17100)]
        base_port: u16,
        /// Node i serves HTTP on 127.0.0.1:(http-base-port + i).
        #[arg(long, default_value_t = 18100)]
        http_base_port: u16,
        /// Log lines as text or as JSON objects, one per line.
        #[arg(long, env = "RAFTOR_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Security on: mutual TLS between the nodes, HTTPS and TLS for clients, and tokens.
        /// The credentials (`raftor certs`) are made in <data-dir>/certs if not there yet.
        #[arg(long)]
        tls: bool,
    },
    /// Benchmark a cluster: an embedded 3-node one (the default) or a running one (--endpoints).
    Bench(crate::bench::BenchArgs),
    /// Run the deterministic simulator of the Raft rules over a range of seeds.
    Sim(crate::sim::SimArgs),
    /// Save a consistent backup of the state machine from a member's HTTP API.
    Backup(crate::backup::BackupArgs),
    /// Seed a node of a new cluster from a backup (run it for every founding member).
    Restore(crate::backup::RestoreArgs),
    /// Make a development cluster's credentials: a CA, node certificates and tokens.
    Certs(crate::security::CertsArgs),
    /// Create, list or revoke client tokens in a tokens file (nodes reload it on change).
    #[command(subcommand)]
    Token(crate::security::TokenCommand),
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Client(command) => command,
        Command::Sim(args) => return crate::sim::run_command(&args),
        Command::Certs(args) => return crate::security::certs(&args),
        Command::Backup(args) => {
            init_logging("warn");
            return crate::backup::run(&args);
        }
        Command::Restore(args) => {
            init_logging("warn");
            return crate::backup::restore(&args);
        }
        Command::Token(command) => return crate::security::token(&command),
        Command::Bench(args) => {
            // The nodes' own logs would interleave with the report: warnings and errors only.
            init_logging("warn");
            return crate::bench::run_command(&args);
        }
        server => return run_server(server),
    };
    // Client commands print results, not logs: only warnings and errors are logged.
    init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raftor: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(crate::commands::run(command))
}

/// `serve` and `cluster`: run the actor system until a shutdown signal.
fn run_server(command: Command) -> ExitCode {
    let system = actix::System::new();
    let result = match command {
        // The log format is one of the node's settings, which the config file may give: resolve
        // them all first (a bad one is an error before anything starts).
        Command::Serve(args) => match args.resolve() {
            Ok(config) => {
                init_logging_as("info", config.log_format);
                system.block_on(serve(config))
            }
            Err(error) => Err(error.to_string()),
        },
        Command::Cluster {
            nodes,
            data_dir,
            base_port,
            http_base_port,
            log_format,
            tls,
        } => {
            init_logging_as("info", log_format);
            system.block_on(cluster(nodes, &data_dir, base_port, http_base_port, tls))
        }
        Command::Client(_)
        | Command::Sim(_)
        | Command::Bench(_)
        | Command::Certs(_)
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::Token(_) => {
            Err("client, sim and bench commands run without the serving actor system".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("raftor: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C, or SIGTERM (what `docker stop` sends).
async fn wait_for_shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                biased;
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn init_logging(default: &str) {
    init_logging_as(default, LogFormat::Text);
}

/// Log to stderr at `RUST_LOG`'s levels (else `default`), as text or JSON lines.
fn init_logging_as(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `serve`: one node, with its settings resolved, until a shutdown signal, or until the node
/// stops itself on a failure: the process then exits with an error, so that a supervisor
/// (Docker's restart policy, systemd, Kubernetes) restarts it and it recovers from what is
/// durable, rather than leaving a process that answers every request 503.
async fn serve(config: NodeConfig) -> Result<(), String> {
    let node = start_node(&config).await.map_err(|e| e.to_string())?;
    let http = node.http_addr.map_or("off".to_owned(), |a| a.to_string());
    tracing::info!(node = %config.id, raft = %node.raft_addr, http = %http, data_dir = %config.data_dir.display(), "serving; Ctrl-C to stop");
    let failed = tokio::select! {
        biased;
        _ = wait_for_shutdown_signal() => None,
        cause = node.handle.stopped() => match cause {
            StopCause::Failed { reason } => Some(reason),
            StopCause::Shutdown => None,
        },
    };
    node.shutdown().await;
    match failed {
        Some(reason) => Err(format!(
            "node {} stopped itself: {reason} (what it made durable stays; restart it to recover)",
            config.id
        )),
        None => Ok(()),
    }
}

/// `cluster`: a local cluster in this process until a shutdown signal, or until one of its nodes
/// stops itself on a failure: then the others are shut down and the process exits with an error
/// naming the node and why, as `serve` does for its one node.
async fn cluster(
    nodes: u64,
    data_dir: &std::path::Path,
    base_port: u16,
    http_base_port: u16,
    tls: bool,
) -> Result<(), String> {
    let certs = data_dir.join("certs");
    if tls {
        local_credentials(&certs, nodes).map_err(|e| e.to_string())?;
    }
    let running =
        start_local_cluster_with(nodes, base_port, Some(http_base_port), data_dir, |config| {
            if tls {
                secure(config, &certs);
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(nodes, data_dir = %data_dir.display(), "local cluster started; Ctrl-C to stop");
    if tls {
        let certs = certs.display();
        tracing::info!(
            "security on: talk to the cluster with --ca {certs}/ca.pem --token-file {certs}/admin.token (or read.token, readwrite.token); curl --cacert {certs}/ca.pem -H \"Authorization: Bearer $(cat {certs}/admin.token)\" https://127.0.0.1:{}/v1/status",
            u64::from(http_base_port) + 1
        );
    }
    for node in &running {
        let http = node.http_addr.map_or("off".to_owned(), |a| a.to_string());
        tracing::info!(node = %node.handle.id(), raft = %node.raft_addr, http = %http, "node listening");
    }
    let failed = tokio::select! {
        biased;
        _ = wait_for_shutdown_signal() => None,
        failure = first_failure(&running) => Some(failure),
        _ = watch_leader(&running) => None,
    };
    for node in &running {
        node.shutdown().await;
    }
    match failed {
        Some((id, reason)) => Err(format!(
            "node {id} stopped itself: {reason}; the cluster was shut down (what each node made \
             durable stays: run the same command again to recover)"
        )),
        None => Ok(()),
    }
}

/// The first node of `nodes` to stop itself on a failure, and why. A node that stopped because it
/// was told to is not a failure: the others are waited on.
async fn first_failure(nodes: &[RunningNode]) -> (u64, String) {
    let mut stops: Vec<_> = nodes
        .iter()
        .map(|node| Box::pin(async move { (node.handle.id(), node.handle.stopped().await) }))
        .collect();
    while !stops.is_empty() {
        let ((id, cause), _, others) = futures::future::select_all(stops).await;
        if let StopCause::Failed { reason } = cause {
            return (id.0, reason);
        }
        stops = others;
    }
    std::future::pending().await
}
