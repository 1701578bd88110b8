//! status, health and snapshot: one node's view of the cluster, and a snapshot taken on it.

use super::args::{fail, Credentials, EndpointArgs, EXIT_FAILED};
use raftor_kv::http::HEALTHY_APPLY_LAG;
use raftor_kv::{Client, ClientOptions};
use std::process::ExitCode;
use std::time::Duration;

pub async fn status(client: &Client, endpoints: &EndpointArgs) -> ExitCode {
    let status = match client.status().await {
        Ok(status) => status,
        Err(error) => return fail(endpoints, &error),
    };
    if endpoints.json {
        println!("{}", serde_json::to_string(&status).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let leader = status.leader.as_ref().map_or("unknown".to_owned(), |l| {
        format!("{} ({})", l.id, l.raft_addr)
    });
    println!(
        "node {}: {} in term {}, leader {leader}",
        status.id, status.role, status.term
    );
    println!(
        "log: last {}@{}, commit {}, applied {}",
        status.last_log_index, status.last_log_term, status.commit_index, status.applied_index
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
    ExitCode::SUCCESS
}

pub async fn snapshot(client: &Client, endpoints: &EndpointArgs) -> ExitCode {
    match client.snapshot().await {
        Ok(report) => {
            if endpoints.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                println!(
                    "node {}: snapshot at {}@{} ({} bytes); log compacted behind it",
                    report.node, report.index, report.term, report.bytes
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(endpoints, &error),
    }
}

/// Exit 0 if the node at `endpoint` knows a leader and has applied what it committed (a probe:
/// short timeouts of its own, and one line on stdout either way).
pub async fn health(endpoint: String, credentials: &Credentials) -> ExitCode {
    let options = ClientOptions {
        operation_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    let options = match credentials.apply(options) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("raftor: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let client = match Client::new(vec![endpoint], options) {
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
