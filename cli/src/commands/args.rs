//! What every client command takes (where the cluster is, how long to wait, JSON or text), the
//! client made from it, and how failures map to exit codes.

use clap::Args;
use raftor_kv::{Client, ClientError, ClientOptions};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes scripts can rely on (see the `commands` module).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_UNKNOWN: u8 = 4;

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
    pub fn endpoints(&self) -> EndpointArgs {
        EndpointArgs {
            endpoints: vec![self.endpoint.clone()],
            timeout: self.timeout,
            json: self.json,
        }
    }
}

/// The client for `endpoints`, or the exit code for why there is none.
pub fn client(endpoints: &EndpointArgs) -> Result<Client, ExitCode> {
    let options = ClientOptions {
        operation_timeout: Duration::from_secs(endpoints.timeout.max(1)),
        ..ClientOptions::default()
    };
    Client::new(endpoints.endpoints.clone(), options).map_err(|error| {
        eprintln!("raftor: {error}");
        ExitCode::from(EXIT_FAILED)
    })
}

/// Report a failed request and choose its exit code.
pub fn fail(endpoints: &EndpointArgs, error: &ClientError) -> ExitCode {
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
