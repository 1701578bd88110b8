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

/// Streams the backup into `<out>.partial` (`open_partial`), checks it, then names it `out`
/// (`finish`).
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
    let partial = partial_path(&args.out);
    let file = open_partial(&partial)?;
    let written = write_checked(&mut response, file, &partial).await;
    let header = written.and_then(|header| finish(&partial, &args.out).map(|()| header));
    if header.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    header
}

/// `<out>.partial`: where a backup is written until its size and checksum hold.
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Opens `path` (`<out>.partial`) for this backup alone, locked (`flock`) until the process
/// ends. A file there that no process holds was left by a backup that was interrupted (killed,
/// or its machine lost power): it is incomplete by construction, so it is replaced. One that a
/// running backup holds is refused.
fn open_partial(path: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    match try_lock(&file) {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "{} is being written by another backup to the same file",
                path.display()
            ))
        }
        Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
    }
    // The backup that held it may have finished (and removed the name) between the open and
    // the lock: then this lock is on a file nobody will look for.
    let held = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let named = std::fs::metadata(path).ok();
    if !named.is_some_and(|named| same_file(&held, &named)) {
        return Err(format!(
            "{} was being written by another backup to the same file; try again",
            path.display()
        ));
    }
    if held.len() > 0 {
        eprintln!(
            "raftor backup: replacing {} ({} bytes), left by an interrupted backup",
            path.display(),
            held.len()
        );
        file.set_len(0)
            .map_err(|e| format!("cannot truncate {}: {e}", path.display()))?;
    }
    Ok(file)
}

/// Takes an exclusive `flock` on `file` without waiting: `false` if another open file holds one.
/// It lasts until the file is closed (the process ends, killed or not).
#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` on a descriptor this function borrows, open for its whole call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(error)
    }
}

#[cfg(not(unix))]
fn try_lock(_: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// Gives the checked backup at `partial` its name `out`, never replacing a file that appeared
/// there meanwhile (a hard link fails if the name exists; a rename would replace it), and makes
/// the name durable.
fn finish(partial: &Path, out: &Path) -> Result<(), String> {
    match std::fs::hard_link(partial, out) {
        Ok(()) => {
            std::fs::remove_file(partial)
                .map_err(|e| format!("cannot remove {}: {e}", partial.display()))?;
        }
        // The name exists: it appeared meanwhile (or a filesystem without hard links cannot
        // tell, and the name is taken).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists || out.exists() => {
            return Err(format!(
                "{} exists already (written meanwhile)",
                out.display()
            ));
        }
        // A filesystem without hard links, the name free: rename.
        Err(_) => std::fs::rename(partial, out).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                out.display()
            )
        })?,
    }
    // The backup's name is durable once its directory is.
    raftor::storage::durable::sync_parent(out)
        .map_err(|e| format!("cannot sync the directory holding {}: {e}", out.display()))
}

/// Writes the stream to `file` (at `path`) as it comes, checking the header, the size and the
/// checksum, and syncs it.
async fn write_checked<S, E>(
    stream: &mut S,
    mut file: std::fs::File,
    path: &Path,
) -> Result<BackupHeader, String>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_file_is_named_after_the_whole_output_name() {
        assert_eq!(
            partial_path(Path::new("/b/raftor-2026-12-03.backup")),
            Path::new("/b/raftor-2026-12-03.backup.partial")
        );
    }

    #[test]
    fn a_partial_file_left_by_an_interrupted_backup_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = dir.path().join("b.partial");
        std::fs::write(&partial, b"half a backup").expect("write");
        let file = open_partial(&partial).expect("nobody holds it: replaced");
        assert_eq!(file.metadata().expect("metadata").len(), 0);
    }

    #[test]
    fn a_partial_file_a_running_backup_holds_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = dir.path().join("b.partial");
        let running = open_partial(&partial).expect("the first backup");
        std::fs::write(&partial, b"being written").expect("write");
        let error = open_partial(&partial).expect_err("held by the first");
        assert!(error.contains("another backup"), "{error}");
        assert_eq!(std::fs::read(&partial).expect("read"), b"being written");
        drop(running);
        open_partial(&partial).expect("free once the first is done");
    }

    #[test]
    fn finishing_never_replaces_a_file_that_appeared_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (partial, out) = (dir.path().join("b.partial"), dir.path().join("b"));
        std::fs::write(&partial, b"new").expect("write");
        std::fs::write(&out, b"old").expect("write");
        let error = finish(&partial, &out).expect_err("out exists");
        assert!(error.contains("exists already"), "{error}");
        assert_eq!(std::fs::read(&out).expect("read"), b"old");
        std::fs::remove_file(&out).expect("remove");
        finish(&partial, &out).expect("named");
        assert_eq!(std::fs::read(&out).expect("read"), b"new");
        assert!(!partial.exists(), "the partial name is gone");
    }
}
