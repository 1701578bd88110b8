//! `raftor certs` (a development cluster's credentials in one step) and `raftor token` (create,
//! list and revoke tokens: rotation without a restart).

use clap::{Args, Subcommand};
use raftor_kv::auth::{new_token, Role, TokensFile};
use raftor_kv::certs::{self, CertsPlan};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `raftor certs` flags.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// The directory to write into (created if missing). Files already there are kept: a CA
    /// there signs the new node certificates, so nodes can be added later.
    #[arg(long, default_value = "./raftor-certs")]
    pub out: PathBuf,
    /// The node ids to make certificates for: N for 1..=N, or a list (1,2,3).
    #[arg(long, default_value = "3")]
    pub nodes: String,
    /// An extra name (DNS name or IP address) for one node's certificate, as ID=NAME (repeat the
    /// flag); every node's certificate names node-<id>.raftor, localhost, 127.0.0.1 and ::1.
    #[arg(long = "host", value_name = "ID=NAME")]
    pub hosts: Vec<String>,
    /// An extra name for every node's certificate (for example a load balancer's).
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// How long the node certificates are valid, in days (the CA: ten times as long).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub days: u32,
    /// Make no tokens (only the CA and the node certificates).
    #[arg(long)]
    pub no_tokens: bool,
}

/// `raftor token` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum TokenCommand {
    /// Add a new token to a tokens file and print it (once: only its digest is kept). Nodes
    /// reading that file accept it within seconds.
    Create {
        /// The tokens file (as `raftor serve --auth-tokens` reads it).
        #[arg(long)]
        tokens: PathBuf,
        /// read, readwrite or admin.
        #[arg(long, value_enum)]
        role: Role,
        /// What the token is for (shown by `token list`).
        #[arg(long, default_value = "")]
        name: String,
        /// Refuse it after this many days.
        #[arg(long)]
        expires_days: Option<u32>,
        /// Also write the token to this file (owner-only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List a tokens file's tokens (ids, names, roles, expiry; never secrets).
    List {
        #[arg(long)]
        tokens: PathBuf,
    },
    /// Remove a token (by the id after `rft_`) from a tokens file: nodes refuse it within seconds.
    Revoke {
        #[arg(long)]
        tokens: PathBuf,
        id: String,
    },
}

fn parse_nodes(text: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("--nodes {text:?}: expected a count (3) or a list of ids (1,2,3)");
    if !text.contains(',') {
        let count: u64 = text.trim().parse().map_err(|_| bad())?;
        if count == 0 || count > 1000 {
            return Err(bad());
        }
        return Ok((1..=count).collect());
    }
    text.split(',')
        .map(|id| match id.trim().parse::<u64>() {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(bad()),
        })
        .collect()
}

fn plan(args: &CertsArgs) -> Result<CertsPlan, String> {
    let mut nodes: BTreeMap<u64, Vec<String>> = parse_nodes(&args.nodes)?
        .into_iter()
        .map(|id| (id, args.sans.clone()))
        .collect();
    for host in &args.hosts {
        let (id, name) = host
            .split_once('=')
            .ok_or_else(|| format!("--host {host:?}: expected ID=NAME"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("--host {host:?}: {id:?} is not a node id"))?;
        nodes
            .get_mut(&id)
            .ok_or_else(|| format!("--host {host:?}: node {id} is not in --nodes"))?
            .push(name.trim().to_owned());
    }
    Ok(CertsPlan {
        out: args.out.clone(),
        nodes,
        days: args.days,
        tokens: !args.no_tokens,
    })
}

/// `raftor certs`.
pub fn certs(args: &CertsArgs) -> ExitCode {
    let result = plan(args).and_then(|plan| certs::make(&plan).map_err(|e| e.to_string()));
    match result {
        Ok(written) => {
            for path in &written.written {
                println!("wrote {}", path.display());
            }
            for path in &written.kept {
                println!("kept  {} (already there)", path.display());
            }
            for note in &written.notes {
                println!("note: {note}");
            }
            let dir = args.out.display();
            let tokens = certs::tokens_path(&args.out).exists();
            let (auth, token) = if tokens {
                (
                    format!(" --auth-tokens {dir}/tokens.toml"),
                    format!(" --token-file {dir}/admin.token"),
                )
            } else {
                (String::new(), String::new())
            };
            println!(
                "\nStart node N with: raftor serve ... --tls-ca {dir}/ca.pem --tls-cert {dir}/node-N.pem \
                 --tls-key {dir}/node-N-key.pem{auth}\n\
                 Talk to it with:   raftor status --ca {dir}/ca.pem{token}\n\
                 Keep {} secret.",
                if tokens {
                    "ca-key.pem, the node keys and the .token files"
                } else {
                    "ca-key.pem and the node keys"
                }
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("raftor certs: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `raftor token ...`.
pub fn token(command: &TokenCommand) -> ExitCode {
    match run_token(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("raftor token: {message}");
            ExitCode::FAILURE
        }
    }
}

fn read_or_empty(path: &std::path::Path) -> Result<TokensFile, String> {
    if path.exists() {
        TokensFile::read(path).map_err(|e| e.to_string())
    } else {
        Ok(TokensFile::default())
    }
}

fn run_token(command: &TokenCommand) -> Result<(), String> {
    match command {
        TokenCommand::Create {
            tokens,
            role,
            name,
            expires_days,
            out,
        } => {
            let mut file = read_or_empty(tokens)?;
            let expires = expires_days.map(|days| {
                let at = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);
                at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
            });
            let (token, record) = new_token(name, *role, expires);
            file.tokens.push(record);
            file.write(tokens).map_err(|e| e.to_string())?;
            if let Some(out) = out {
                raftor_kv::auth::write_private(out, format!("{token}\n").as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
            }
            println!("{token}");
            Ok(())
        }
        TokenCommand::List { tokens } => {
            let file = TokensFile::read(tokens).map_err(|e| e.to_string())?;
            for record in &file.tokens {
                let expires = record
                    .expires
                    .map_or("never".to_owned(), |at| format!("at unix time {at}"));
                println!(
                    "{}  {:<9}  expires {expires}  {}",
                    record.id, record.role, record.name
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { tokens, id } => {
            let mut file = TokensFile::read(tokens).map_err(|e| e.to_string())?;
            let before = file.tokens.len();
            file.tokens.retain(|record| &record.id != id);
            if file.tokens.len() == before {
                return Err(format!("no token {id} in {}", tokens.display()));
            }
            file.write(tokens).map_err(|e| e.to_string())?;
            println!("revoked {id}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_and_nonsense_is_refused() {
        assert_eq!(parse_nodes("3"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_nodes("1,4, 7"), Ok(vec![1, 4, 7]));
        for bad in ["0", "x", "1,0", "1,,2", "100000"] {
            assert!(parse_nodes(bad).is_err(), "{bad}");
        }
    }
}
