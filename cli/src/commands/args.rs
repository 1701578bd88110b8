//! What every client command takes (where the cluster is, how long to wait, JSON or text), the
//! client made from it, and how failures map to exit codes.

use clap::Args;
use raftor_kv::client::ClientTls;
use raftor_kv::{Client, ClientError, ClientOptions};
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes scripts can rely on (see the `commands` module).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_UNKNOWN: u8 = 4;

/// How a client proves itself to a cluster that asks (TLS and a token), for every client command:
/// from flags, else `RAFTOR_*` variables, else the client config file.
#[derive(Args, Debug, Clone, Default)]
pub struct Credentials {
    /// The cluster's CA certificate (PEM): connect over TLS and trust only nodes it signed
    /// (a cluster started with --tls-ca).
    #[arg(long, env = "RAFTOR_CA")]
    pub ca: Option<PathBuf>,
    /// The bearer token to present (its role decides what the command may do). Visible to other
    /// users in the process list: prefer --token-file or RAFTOR_TOKEN.
    #[arg(long, env = "RAFTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file (as `raftor certs` writes them: admin.token, ...).
    #[arg(long, env = "RAFTOR_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// A TOML file with any of `ca`, `token` and `token_file`, used for what no flag or
    /// variable gives.
    #[arg(long, env = "RAFTOR_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
}

/// The client config file's settings.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    ca: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

impl Credentials {
    /// The TLS set-up and token these credentials give, or why they cannot be used.
    pub fn resolve(&self) -> Result<(Option<ClientTls>, Option<String>), String> {
        let file = match &self.client_config {
            None => ClientFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("bad {}: {e}", path.display()))?
            }
        };
        let tls = match self.ca.clone().or(file.ca) {
            None => None,
            Some(ca) => Some(ClientTls::from_ca_file(&ca).map_err(|e| e.to_string())?),
        };
        let flags_give_token = self.token.is_some() || self.token_file.is_some();
        let (token, token_file) = if flags_give_token {
            (self.token.clone(), self.token_file.clone())
        } else {
            (file.token, file.token_file)
        };
        let token = match (token, token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        Ok((tls, token))
    }

    /// `options` with these credentials.
    pub fn apply(&self, options: ClientOptions) -> Result<ClientOptions, String> {
        let (tls, token) = self.resolve()?;
        Ok(ClientOptions {
            tls,
            token,
            ..options
        })
    }
}

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
    #[command(flatten)]
    pub credentials: Credentials,
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
    #[command(flatten)]
    pub credentials: Credentials,
}

impl AdminArgs {
    pub fn endpoints(&self) -> EndpointArgs {
        EndpointArgs {
            endpoints: vec![self.endpoint.clone()],
            timeout: self.timeout,
            json: self.json,
            credentials: self.credentials.clone(),
        }
    }
}

/// The client for `endpoints`, or the exit code for why there is none.
pub fn client(endpoints: &EndpointArgs) -> Result<Client, ExitCode> {
    let options = ClientOptions {
        operation_timeout: Duration::from_secs(endpoints.timeout.max(1)),
        ..ClientOptions::default()
    };
    let options = endpoints.credentials.apply(options).map_err(|error| {
        eprintln!("raftor: {error}");
        ExitCode::from(EXIT_FAILED)
    })?;
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
