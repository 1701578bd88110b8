//! The client side of the `raftor` command: put, get, del, cas, status, health, snapshot,
//! members, transfer-leader.
//!
//! Exit codes scripts can rely on: 0 success; 1 failed (nothing was written, or a read failed);
//! 2 bad usage; 3 not found (get, a node that is not a member) or condition not met (cas); 4 the
//! outcome of a write is unknown.

use crate::client::{Client, ClientError, ClientOptions, WriteResult};
use crate::http::HEALTHY_APPLY_LAG;
use crate::kv::KvOutcome;
use crate::protocol::{Consistency, MembersReport};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// Where the cluster is, for every client command.
#[derive(Args, Debug, Clone)]
pub struct EndpointArgs {
    /// Members' Raft addresses (host:port,...); any will do, the leader is found.
    #[arg(
        long,
        env = "RAFTOR_ENDPOINTS",
        default_value = "127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print one JSON object instead of human-readable text.
    #[arg(long)]
    pub json: bool,
}

/// Where one node is, for the admin commands (members, transfer-leader).
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// A member's Raft address (host:port); a change is forwarded to the leader.
    #[arg(long, default_value = "127.0.0.1:17101")]
    pub endpoint: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print one JSON object instead of human-readable text.
    #[arg(long)]
    pub json: bool,
}

impl AdminArgs {
    fn endpoints(&self) -> EndpointArgs {
        EndpointArgs {
            endpoints: vec![self.endpoint.clone()],
            timeout: self.timeout,
            json: self.json,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Show the members as the node at --endpoint sees them.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Add node ID, reachable at RAFT_ADDRESS (host:port), as a learner.
    Add {
        id: u64,
        raft_address: String,
        /// Promote it to voter once it has caught up with the leader.
        #[arg(long)]
        promote: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the learner ID a voter.
    Promote {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove node ID (voter or learner) from the cluster.
    Remove {
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

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
    },
    /// Show or change the cluster's members (one change at a time).
    Members {
        #[command(subcommand)]
        command: MembersCommand,
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
    },
}

const EXIT_FAILED: u8 = 1;
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_UNKNOWN: u8 = 4;

pub async fn run(command: ClientCommand) -> ExitCode {
    match command {
        ClientCommand::Put {
            key,
            value,
            endpoints,
        } => {
            let client = match client(&endpoints) {
                Ok(client) => client,
                Err(code) => return code,
            };
            let result = client.put(&key, Bytes::from(value)).await;
            report_write(&endpoints, &key, result)
        }
        ClientCommand::Del { key, endpoints } => {
            let client = match client(&endpoints) {
                Ok(client) => client,
                Err(code) => return code,
            };
            let result = client.delete(&key).await;
            report_write(&endpoints, &key, result)
        }
        ClientCommand::Cas {
            key,
            value,
            expected,
            absent: _,
            endpoints,
        } => {
            let client = match client(&endpoints) {
                Ok(client) => client,
                Err(code) => return code,
            };
            let result = client
                .cas(&key, expected.map(Bytes::from), Bytes::from(value))
                .await;
            report_write(&endpoints, &key, result)
        }
        ClientCommand::Get {
            key,
            consistency,
            endpoints,
        } => {
            let client = match client(&endpoints) {
                Ok(client) => client,
                Err(code) => return code,
            };
            match client.get(&key, consistency).await {
                Ok(Some(value)) => {
                    if endpoints.json {
                        println!(
                            "{}",
                            json!({ "key": key, "value": String::from_utf8_lossy(&value) })
                        );
                    } else {
                        let mut stdout = std::io::stdout();
                        let _ = stdout.write_all(&value);
                        let _ = stdout.write_all(b"\n");
                    }
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    if endpoints.json {
                        println!("{}", json!({ "key": key, "value": null }));
                    } else {
                        eprintln!("{key}: not found");
                    }
                    ExitCode::from(EXIT_NOT_FOUND)
                }
                Err(error) => fail(&endpoints, &error),
            }
        }
        ClientCommand::Snapshot {
            endpoint,
            timeout,
            json,
        } => {
            let endpoints = EndpointArgs {
                endpoints: vec![endpoint],
                timeout,
                json,
            };
            let client = match client(&endpoints) {
                Ok(client) => client,
                Err(code) => return code,
            };
            match client.snapshot().await {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    } else {
                        println!(
                            "node {}: snapshot at {}@{} ({} bytes); log compacted behind it",
                            report.node, report.index, report.term, report.bytes
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&endpoints, &error),
            }
        }
        ClientCommand::Status { endpoints } => {
            let client = match client(&endpoints) {
                Ok(client) => client,
                Err(code) => return code,
            };
            match client.status().await {
                Ok(status) => {
                    if endpoints.json {
                        println!("{}", serde_json::to_string(&status).unwrap_or_default());
                    } else {
                        let leader = status.leader.as_ref().map_or("unknown".to_owned(), |l| {
                            format!("{} ({})", l.id, l.raft_addr)
                        });
                        println!(
                            "node {}: {} in term {}, leader {leader}",
                            status.id, status.role, status.term
                        );
                        println!(
                            "log: last {}@{}, commit {}, applied {}",
                            status.last_log_index,
                            status.last_log_term,
                            status.commit_index,
                            status.applied_index
                        );
                        if status.standing != "member" && !status.standing.is_empty() {
                            // A store that started empty: see README, "A node that lost its data".
                            println!("standing: {}", status.standing);
                        }
                        for (peer, progress) in &status.peers {
                            println!(
                                "peer {peer}: match {} next {} last contact {}",
                                progress.match_index,
                                progress
                                    .next_index
                                    .map_or("-".to_owned(), |n| n.to_string()),
                                progress
                                    .since_contact_ms
                                    .map_or("never".to_owned(), |ms| format!("{ms} ms ago"))
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&endpoints, &error),
            }
        }
        ClientCommand::Members { command } => members(command).await,
        ClientCommand::TransferLeader { id, admin } => {
            let endpoints = admin.endpoints();
            let client = match client(&endpoints) {
                Ok(client) => client,
                Err(code) => return code,
            };
            match client.transfer_leader(id).await {
                Ok(term) => {
                    if admin.json {
                        println!("{}", json!({ "leader": id, "term": term }));
                    } else {
                        println!("node {id} leads (term {term})");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&endpoints, &error),
            }
        }
        ClientCommand::Health { endpoint } => {
            let options = ClientOptions {
                operation_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(1),
            };
            let client = match Client::new(vec![endpoint.clone()], options) {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("raftor: {error}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            match client.status().await {
                Ok(status)
                    if status.leader.is_some()
                        && status.commit_index.saturating_sub(status.applied_index)
                            <= HEALTHY_APPLY_LAG =>
                {
                    println!(
                        "healthy: node {} ({}), leader {}",
                        status.id,
                        status.role,
                        status.leader.map_or(0, |l| l.id)
                    );
                    ExitCode::SUCCESS
                }
                Ok(status) => {
                    println!(
                        "unhealthy: node {} ({}), leader {:?}, commit {}, applied {}",
                        status.id,
                        status.role,
                        status.leader.map(|l| l.id),
                        status.commit_index,
                        status.applied_index
                    );
                    ExitCode::from(EXIT_FAILED)
                }
                Err(error) => {
                    println!("unhealthy: {error}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
    }
}

async fn members(command: MembersCommand) -> ExitCode {
    let (admin, done) = match &command {
        MembersCommand::List { admin } => (admin, None),
        MembersCommand::Add {
            id,
            promote: true,
            admin,
            ..
        } => (
            admin,
            Some(format!(
                "node {id} added as a learner; the leader promotes it once it has caught up"
            )),
        ),
        MembersCommand::Add { id, admin, .. } => {
            (admin, Some(format!("node {id} added as a learner")))
        }
        MembersCommand::Promote { id, admin } => (admin, Some(format!("node {id} is a voter"))),
        MembersCommand::Remove { id, admin } => {
            (admin, Some(format!("node {id} removed; stop it now")))
        }
    };
    let endpoints = admin.endpoints();
    let client = match client(&endpoints) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let result = match &command {
        MembersCommand::List { .. } => client.members().await,
        MembersCommand::Add {
            id,
            raft_address,
            promote,
            ..
        } => client.add_member(*id, raft_address, *promote).await,
        MembersCommand::Promote { id, .. } => client.promote_member(*id).await,
        MembersCommand::Remove { id, .. } => client.remove_member(*id).await,
    };
    match result {
        Ok(report) => {
            if admin.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                if let Some(done) = done {
                    println!("{done}");
                }
                print_members(&report);
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&endpoints, &error),
    }
}

fn print_members(report: &MembersReport) {
    let leader = report
        .leader
        .as_ref()
        .map_or("unknown".to_owned(), |l| l.id.to_string());
    println!(
        "node {}'s view: leader {leader}, term {}, configuration at index {}{}",
        report.node,
        report.term,
        report.membership_index,
        if report.joint { " (joint)" } else { "" }
    );
    for (id, address) in &report.addresses {
        let role = if report.voters.contains(id) {
            "voter"
        } else if report.voters_outgoing.contains(id) {
            "outgoing voter"
        } else if report.learners.contains(id) {
            "learner"
        } else {
            "member"
        };
        let promote = if report.promote_when_caught_up.contains(id) {
            " (promoted once caught up)"
        } else {
            ""
        };
        println!("  {id}  {role:<14} {address}{promote}");
    }
}

fn client(endpoints: &EndpointArgs) -> Result<Client, ExitCode> {
    let options = ClientOptions {
        operation_timeout: Duration::from_secs(endpoints.timeout.max(1)),
        ..ClientOptions::default()
    };
    Client::new(endpoints.endpoints.clone(), options).map_err(|error| {
        eprintln!("raftor: {error}");
        ExitCode::from(EXIT_FAILED)
    })
}

fn report_write(
    endpoints: &EndpointArgs,
    key: &str,
    result: Result<WriteResult, ClientError>,
) -> ExitCode {
    match result {
        Ok(WriteResult { index, outcome }) => {
            let (ok, text) = match &outcome {
                KvOutcome::Put { .. } => (true, "ok".to_owned()),
                KvOutcome::Deleted { existed: true } => (true, "deleted".to_owned()),
                KvOutcome::Deleted { existed: false } => {
                    (true, "not found (nothing to delete)".to_owned())
                }
                KvOutcome::Swapped => (true, "swapped".to_owned()),
                KvOutcome::Mismatch { current } => (
                    false,
                    format!(
                        "not swapped: current value is {}",
                        current.as_ref().map_or("absent".to_owned(), |c| format!(
                            "{:?}",
                            String::from_utf8_lossy(c)
                        ))
                    ),
                ),
                KvOutcome::StaleSequence | KvOutcome::Invalid | KvOutcome::SessionExpired => {
                    (false, format!("{outcome:?}"))
                }
            };
            if endpoints.json {
                let current = match &outcome {
                    KvOutcome::Mismatch { current } => json!(current
                        .as_ref()
                        .map(|c| String::from_utf8_lossy(c).into_owned())),
                    _ => json!(null),
                };
                println!(
                    "{}",
                    json!({ "key": key, "index": index, "ok": ok, "result": text, "current": current })
                );
            } else {
                println!("{key}: {text} (index {index})");
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_FOUND)
            }
        }
        Err(error) => fail(endpoints, &error),
    }
}

fn fail(endpoints: &EndpointArgs, error: &ClientError) -> ExitCode {
    if endpoints.json {
        println!("{}", json!({ "error": error.to_string() }));
    } else {
        eprintln!("raftor: {error}");
    }
    match error {
        ClientError::Unknown(_) | ClientError::SessionExpired => ExitCode::from(EXIT_UNKNOWN),
        ClientError::NotFound(_) => ExitCode::from(EXIT_NOT_FOUND),
        _ => ExitCode::from(EXIT_FAILED),
    }
}
