//! `raftor backup`: save a consistent snapshot of the state machine from any member, over its
//! HTTP API (`GET /v1/admin/backup`), checking size and checksum as it streams to disk.

use crate::commands::Credentials;
use clap::Args;
use futures::StreamExt;
use raftor_kv::backup::{check, parse_header, BackupHeader, MAX_HEADER_BYTES};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `raftor backup` flags.
#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// A member's HTTP address (host:port): any member will do.
    #[arg(long, default_value = "127.0.0.1:18101")]
    pub endpoint: String,
    /// `linearizable`: the member first applies every write acknowledged before the backup
    /// began (it asks the leader how far that is); `local`: what the member has applied, asking
    /// no one (a member cut off from a quorum).
    #[arg(long, default_value = "linearizable", value_parser = ["linearizable", "lease", "local"])]
    pub consistency: String,
    /// The file to write (refused if it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// `raftor backup`.
pub fn run(args: &BackupArgs) -> ExitCode {
    let system = actix::System::new();
    match system.block_on(save(args)) {
        Ok(header) => {
            println!(
                "backup of node {} at index {} (term {}): {} bytes, crc32 {:08x}, in {}",
                header.node,
                header.index,
                header.term,
                header.size,
                header.crc32,
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("raftor backup: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Streams the backup into `<out>.partial`, checks it, then renames it to `out`.
async fn save(args: &BackupArgs) -> Result<BackupHeader, String> {
    if args.out.exists() {
        return Err(format!("{} exists already", args.out.display()));
    }
    let (tls, token) = args.credentials.resolve()?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let (scheme, client) = match &tls {
        None => ("http", awc::Client::builder().timeout(timeout).finish()),
        Some(tls) => {
            let connector = awc::Connector::new().rustls_0_23(tls.https_config());
            let client = awc::Client::builder()
                .connector(connector)
                .timeout(timeout)
                .finish();
            ("https", client)
        }
    };
    let url = format!(
        "{scheme}://{}/v1/admin/backup?consistency={}",
        args.endpoint, args.consistency
    );
    let mut request = client.get(&url);
    if let Some(token) = &token {
        request = request.bearer_auth(token);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        let body = response.body().limit(64 * 1024).await.unwrap_or_default();
        return Err(format!(
            "{url} answered {}: {}",
            response.status().as_u16(),
            String::from_utf8_lossy(&body)
        ));
    }
    let partial = args.out.with_extension("partial");
    let written = write_checked(&mut response, &partial).await;
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    let header = written?;
    std::fs::rename(&partial, &args.out).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            args.out.display()
        )
    })?;
    // The backup's name is durable once its directory is.
    raftor::storage::durable::sync_parent(&args.out).map_err(|e| {
        format!(
            "cannot sync the directory holding {}: {e}",
            args.out.display()
        )
    })?;
    Ok(header)
}

/// Writes the stream to `path` as it comes, checking the header, the size and the checksum.
async fn write_checked<S, E>(stream: &mut S, path: &Path) -> Result<BackupHeader, String>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let write_error = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut header: Option<BackupHeader> = None;
    let mut line = Vec::new();
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the backup stream broke: {e}"))?;
        let mut data = &chunk[..];
        if header.is_none() {
            match data.iter().position(|b| *b == b'\n') {
                None => {
                    line.extend_from_slice(data);
                    if line.len() > MAX_HEADER_BYTES {
                        return Err("not a backup: its first line is too long".into());
                    }
                    continue;
                }
                Some(end) => {
                    line.extend_from_slice(&data[..end]);
                    header = Some(parse_header(&line).map_err(|e| e.to_string())?);
                    line.push(b'\n');
                    file.write_all(&line).map_err(write_error)?;
                    data = &data[end + 1..];
                }
            }
        }
        hasher.update(data);
        size += data.len() as u64;
        file.write_all(data).map_err(write_error)?;
    }
    let header = header.ok_or("the answer ended before the backup's header")?;
    check(&header, size, hasher.finalize()).map_err(|e| e.to_string())?;
    file.sync_all().map_err(write_error)?;
    Ok(header)
}

/// `raftor restore` flags.
#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup file (`raftor backup`).
    pub backup: PathBuf,
    /// The new node's data directory (must not exist, or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster (one of --peers).
    #[arg(long)]
    pub id: u64,
    /// The new cluster's founding members: id=host:port,... (start each with the same list).
    #[arg(long)]
    pub peers: String,
    /// The new cluster's id (a restored cluster is a new cluster: give it a new name, and start
    /// its nodes with it).
    #[arg(long)]
    pub cluster_id: String,
}

/// `raftor restore`: seeds one node of a new cluster; run it for each founding member.
pub fn restore(args: &RestoreArgs) -> ExitCode {
    let result = raftor_kv::config::parse_peers(&args.peers)
        .map_err(|e| e.to_string())
        .and_then(|founders| {
            raftor_kv::backup::restore(
                &args.backup,
                &args.data_dir,
                &args.cluster_id,
                raftor::NodeId(args.id),
                &founders,
            )
        });
    match result {
        Ok(header) => {
            println!(
                "node {} of cluster {:?} seeded in {} from the backup of node {} at index {} (term {}); start it with: raftor serve --id {} --cluster-id {} --peers {} --data-dir {} ...",
                args.id,
                args.cluster_id,
                args.data_dir.display(),
                header.node,
                header.index,
                header.term,
                args.id,
                args.cluster_id,
                args.peers,
                args.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("raftor restore: {message}");
            ExitCode::FAILURE
        }
    }
}
