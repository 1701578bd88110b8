//! lease grant, keep-alive, revoke, show, list.

use super::args::{fail, EndpointArgs};
use clap::Subcommand;
use raftor_kv::store::LeaseView;
use raftor_kv::{Client, ClientError};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds (1 s to 7 days); prints its id.
    Grant {
        ttl: u64,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Keep lease ID alive (every third of its TTL) until Ctrl-C, or once with --once.
    KeepAlive {
        id: u64,
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// End lease ID now: its keys are deleted.
    Revoke {
        id: u64,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Show lease ID: its TTL, time left and keys.
    Show {
        id: u64,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// List the leases.
    List {
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
}

impl LeaseCommand {
    pub fn endpoints(&self) -> &EndpointArgs {
        match self {
            LeaseCommand::Grant { endpoints, .. }
            | LeaseCommand::KeepAlive { endpoints, .. }
            | LeaseCommand::Revoke { endpoints, .. }
            | LeaseCommand::Show { endpoints, .. }
            | LeaseCommand::List { endpoints } => endpoints,
        }
    }
}

fn describe(lease: &LeaseView) -> String {
    let left = lease.remaining_ms.map_or("unknown".to_owned(), |ms| {
        format!("{:.1} s", ms as f64 / 1000.0)
    });
    format!(
        "lease {}: TTL {} s, {left} left, {} keys",
        lease.id,
        lease.ttl_ms / 1000,
        lease.keys_total
    )
}

pub async fn lease(client: &Client, command: LeaseCommand) -> ExitCode {
    let endpoints = command.endpoints().clone();
    let json_out = endpoints.json;
    match command {
        LeaseCommand::Grant { ttl, .. } => {
            match client.grant_lease(Duration::from_secs(ttl)).await {
                Ok(lease) => {
                    if json_out {
                        println!(
                            "{}",
                            json!({ "id": lease.id, "ttl_ms": lease.ttl.as_millis() as u64 })
                        );
                    } else {
                        println!("{}", lease.id);
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&endpoints, &error),
            }
        }
        LeaseCommand::KeepAlive { id, once, .. } => keep_alive(client, &endpoints, id, once).await,
        LeaseCommand::Revoke { id, .. } => match client.revoke_lease(id).await {
            Ok(deleted) => {
                if json_out {
                    println!(
                        "{}",
                        json!({ "id": id, "revoked": true, "deleted": deleted })
                    );
                } else {
                    println!("lease {id} revoked; {deleted} keys deleted");
                }
                ExitCode::SUCCESS
            }
            Err(error) => fail(&endpoints, &error),
        },
        LeaseCommand::Show { id, .. } => match client.lease(id).await {
            Ok(lease) => {
                if json_out {
                    println!("{}", serde_json::to_string(&lease).unwrap_or_default());
                } else {
                    println!("{}", describe(&lease));
                    for key in &lease.keys {
                        println!("  {key}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(error) => fail(&endpoints, &error),
        },
        LeaseCommand::List { .. } => match client.leases().await {
            Ok(leases) => {
                if json_out {
                    println!("{}", serde_json::to_string(&leases).unwrap_or_default());
                } else {
                    for lease in &leases {
                        println!("{}", describe(lease));
                    }
                }
                ExitCode::SUCCESS
            }
            Err(error) => fail(&endpoints, &error),
        },
    }
}

async fn keep_alive(client: &Client, endpoints: &EndpointArgs, id: u64, once: bool) -> ExitCode {
    let ttl = match client.lease(id).await {
        Ok(lease) => Duration::from_millis(lease.ttl_ms),
        Err(error) => return fail(endpoints, &error),
    };
    loop {
        match client.keep_alive(id).await {
            Ok(left) => {
                if endpoints.json {
                    println!(
                        "{}",
                        json!({ "id": id, "remaining_ms": left.as_millis() as u64 })
                    );
                } else {
                    println!("lease {id}: {:.1} s left", left.as_secs_f64());
                }
            }
            Err(error @ ClientError::NotFound(_)) => return fail(endpoints, &error),
            Err(error) if once => return fail(endpoints, &error),
            Err(error) => eprintln!("raftor: keep-alive failed ({error}); retrying"),
        }
        if once {
            return ExitCode::SUCCESS;
        }
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            _ = tokio::time::sleep(ttl / 3) => {}
        }
    }
}
