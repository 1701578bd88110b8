//! The client side of the `raftor` command, one file per family: [`kv`] (put, get, del, cas),
//! [`status`] (status, health, snapshot), [`members`] (members, transfer-leader); [`args`] holds
//! what they share.
//!
//! Exit codes scripts can rely on: 0 success; 1 failed (nothing was written, or a read failed);
//! 2 bad usage; 3 not found (get, a node that is not a member) or condition not met (cas); 4 the
//! outcome of a write is unknown.

mod args;
mod kv;
mod members;
mod status;

pub use args::Credentials;
use args::{AdminArgs, EndpointArgs};
use clap::Subcommand;
use raftor_kv::protocol::Consistency;
use raftor_kv::Client;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Write a value.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Read a value (printed raw to stdout).
    Get {
        key: String,
        /// linearizable (default), lease or local.
        #[arg(long, default_value = "linearizable")]
        consistency: Consistency,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Delete a key.
    Del {
        key: String,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Compare and swap: set KEY to VALUE if it holds --expected (or is absent, with --absent).
    Cas {
        key: String,
        value: String,
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expected: Option<String>,
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Show a node's view of the cluster.
    Status {
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Have the node at --endpoint take a snapshot now and compact its log behind it.
    Snapshot {
        /// The node's Raft address (host:port).
        #[arg(long, default_value = "127.0.0.1:17101")]
        endpoint: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Print one JSON object instead of human-readable text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        credentials: Credentials,
    },
    /// Show or change the cluster's members (one change at a time).
    Members {
        #[command(subcommand)]
        command: members::MembersCommand,
    },
    /// Hand leadership to voter ID; returns once it leads.
    TransferLeader {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Exit 0 if the node at --endpoint knows a leader and has applied what it committed.
    Health {
        /// The node's Raft address (host:port).
        #[arg(long, default_value = "127.0.0.1:7001")]
        endpoint: String,
        #[command(flatten)]
        credentials: Credentials,
    },
}

impl ClientCommand {
    /// Where the command goes, how long it may take, and how it reports.
    fn endpoints(&self) -> EndpointArgs {
        match self {
            ClientCommand::Put { endpoints, .. }
            | ClientCommand::Get { endpoints, .. }
            | ClientCommand::Del { endpoints, .. }
            | ClientCommand::Cas { endpoints, .. }
            | ClientCommand::Status { endpoints } => endpoints.clone(),
            ClientCommand::Snapshot {
                endpoint,
                timeout,
                json,
                credentials,
            } => EndpointArgs {
                endpoints: vec![endpoint.clone()],
                timeout: *timeout,
                json: *json,
                credentials: credentials.clone(),
            },
            ClientCommand::Members { command } => command.admin().endpoints(),
            ClientCommand::TransferLeader { admin, .. } => admin.endpoints(),
            ClientCommand::Health {
                endpoint,
                credentials,
            } => EndpointArgs {
                endpoints: vec![endpoint.clone()],
                timeout: 3,
                json: false,
                credentials: credentials.clone(),
            },
        }
    }
}

pub async fn run(command: ClientCommand) -> ExitCode {
    if let ClientCommand::Health {
        endpoint,
        credentials,
    } = command
    {
        // A probe: a client with short timeouts of its own.
        return status::health(endpoint, &credentials).await;
    }
    let endpoints = command.endpoints();
    match args::client(&endpoints) {
        Ok(client) => run_with(&client, &endpoints, command).await,
        Err(code) => code,
    }
}

async fn run_with(client: &Client, endpoints: &EndpointArgs, command: ClientCommand) -> ExitCode {
    match command {
        ClientCommand::Put { key, value, .. } => kv::put(client, endpoints, &key, value).await,
        ClientCommand::Del { key, .. } => kv::delete(client, endpoints, &key).await,
        ClientCommand::Cas {
            key,
            value,
            expected,
            ..
        } => kv::cas(client, endpoints, &key, expected, value).await,
        ClientCommand::Get {
            key, consistency, ..
        } => kv::get(client, endpoints, &key, consistency).await,
        ClientCommand::Status { .. } => status::status(client, endpoints).await,
        ClientCommand::Snapshot { .. } => status::snapshot(client, endpoints).await,
        ClientCommand::Members { command } => members::members(client, command).await,
        ClientCommand::TransferLeader { id, admin } => {
            members::transfer_leader(client, &admin, id).await
        }
        ClientCommand::Health {
            endpoint,
            credentials,
        } => status::health(endpoint, &credentials).await,
    }
}
