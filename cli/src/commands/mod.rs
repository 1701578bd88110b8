//! The client side of the `raftor` command, one file per family: [`kv`] (put, get, del, cas),
//! [`status`] (status, health, snapshot), [`members`] (members, transfer-leader); [`args`] holds
//! what they share.
//!
//! Exit codes scripts can rely on: 0 success; 1 failed (nothing was written, or a read failed);
//! 2 bad usage; 3 not found (get, a node that is not a member) or condition not met (cas); 4 the
//! outcome of a write is unknown.

mod args;
mod keys;
mod kv;
mod leases;
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
        /// Attach the key to this lease: it is deleted when the lease ends.
        #[arg(long)]
        lease: Option<u64>,
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
    /// Delete a key, or every key under --prefix or in --start..--end.
    Del {
        #[command(flatten)]
        keys: keys::KeySelection,
        /// Allow deleting every key (an empty --prefix, or --start "" with no --end).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// List keys (and values) under --prefix, in --start..--end, or one KEY, in key order.
    Range {
        #[command(flatten)]
        keys: keys::KeySelection,
        /// At most this many keys (default: all, fetched a page at a time).
        #[arg(long)]
        limit: Option<u64>,
        /// Keys without values.
        #[arg(long)]
        keys_only: bool,
        /// Only count the keys.
        #[arg(long, conflicts_with_all = ["keys_only", "limit"])]
        count: bool,
        /// linearizable (default), lease or local.
        #[arg(long, default_value = "linearizable")]
        consistency: Consistency,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Run a transaction: JSON {"compare": [...], "success": [...], "failure": [...]} from FILE
    /// (or stdin), as `POST /v1/txn` takes it. Exit 3 when the compares did not hold.
    Txn {
        file: Option<std::path::PathBuf>,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Print the changes of KEY, --prefix or --start..--end as they happen (Ctrl-C to stop).
    Watch {
        #[command(flatten)]
        keys: keys::KeySelection,
        /// Start with the changes from this log index (default: from the next change).
        #[arg(long)]
        from_index: Option<u64>,
        /// Also print progress notifications (the index every change up to which was seen).
        #[arg(long)]
        progress: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Grant, keep alive, revoke, show and list leases.
    Lease {
        #[command(subcommand)]
        command: leases::LeaseCommand,
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
            | ClientCommand::Range { endpoints, .. }
            | ClientCommand::Txn { endpoints, .. }
            | ClientCommand::Watch { endpoints, .. }
            | ClientCommand::Cas { endpoints, .. }
            | ClientCommand::Status { endpoints } => endpoints.clone(),
            ClientCommand::Lease { command } => command.endpoints().clone(),
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
        ClientCommand::Put {
            key, value, lease, ..
        } => kv::put(client, endpoints, &key, value, lease).await,
        ClientCommand::Del { keys, all, .. } => {
            match (&keys.key, keys.key_set()) {
                (Some(key), Ok(_)) => kv::delete(client, endpoints, key).await,
                (None, Ok(set)) => {
                    let everything = match &set {
                        raftor_kv::store::KeySet::Prefix(p) => p.is_empty(),
                        raftor_kv::store::KeySet::Range { start, end } => {
                            start.is_empty() && end.is_none()
                        }
                        raftor_kv::store::KeySet::Key(_) => false,
                    };
                    if everything && !all {
                        eprintln!("raftor: this would delete every key; add --all if that is what you want");
                        return ExitCode::from(2);
                    }
                    keys::delete_range(client, endpoints, set).await
                }
                (_, Err(message)) => {
                    eprintln!("raftor: {message}");
                    ExitCode::from(2)
                }
            }
        }
        ClientCommand::Range {
            keys,
            limit,
            keys_only,
            count,
            consistency,
            ..
        } => {
            keys::range(
                client,
                endpoints,
                &keys,
                limit,
                keys_only,
                count,
                consistency,
            )
            .await
        }
        ClientCommand::Txn { file, .. } => keys::txn(client, endpoints, file).await,
        ClientCommand::Watch {
            keys,
            from_index,
            progress,
            count,
            ..
        } => keys::watch(client, endpoints, &keys, from_index, progress, count).await,
        ClientCommand::Lease { command } => leases::lease(client, command).await,
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
