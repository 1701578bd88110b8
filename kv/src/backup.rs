//! Backups: `GET /v1/admin/backup` streams a consistent snapshot of the state machine, taken on
//! the node asked at an index it has applied (so committed), and `raftor backup` saves it. By
//! default the node first applies every write acknowledged before the request arrived (a read
//! barrier, [`crate::http::read_barrier`]), so a backup taken from any member after a write holds
//! it; `?consistency=local` backs up what the node has applied, asking no one.
//!
//! A backup file is one JSON line, the [`BackupHeader`] (what the data is, where it was taken, its
//! size and CRC-32), then the snapshot's data as the state machine wrote it. The node streams the
//! data from its snapshot file in chunks, so a backup of any size takes constant memory on both
//! sides; the reader checks the size and the checksum as it goes.

use crate::http::HttpState;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// The `format` every backup header names.
pub const FORMAT: &str = "raftor-kv-backup";
/// The version of the backup format.
pub const VERSION: u32 = 1;
/// How much of the snapshot is read and sent at a time.
const CHUNK_BYTES: usize = 256 * 1024;
/// The longest header line a reader accepts.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The first line of a backup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for what this code writes.
    pub version: u32,
    /// The cluster and node the backup was taken from.
    pub cluster_id: String,
    pub node: u64,
    /// The last log entry the state includes (applied, so committed).
    pub index: u64,
    pub term: u64,
    /// The data's length in bytes and its CRC-32.
    pub size: u64,
    pub crc32: u32,
    /// When it was taken (Unix seconds).
    pub taken_at: u64,
}

/// Why a backup cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a raftor backup: {0}")]
    NotABackup(String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses and checks a backup's header line (without its newline).
pub fn parse_header(line: &[u8]) -> Result<BackupHeader, BackupError> {
    let header: BackupHeader = serde_json::from_slice(line)
        .map_err(|e| BackupError::NotABackup(format!("its first line is not a header: {e}")))?;
    if header.format != FORMAT {
        return Err(BackupError::NotABackup(format!(
            "format {:?}, expected {FORMAT:?}",
            header.format
        )));
    }
    if header.version != VERSION {
        return Err(BackupError::NotABackup(format!(
            "format version {}, this raftor reads {VERSION}",
            header.version
        )));
    }
    Ok(header)
}

/// Checks a whole backup read from `reader`: its header, and that the data that follows has the
/// header's size and checksum. Returns the header. Reads in chunks (constant memory).
pub fn verify(reader: &mut impl Read) -> Result<BackupHeader, BackupError> {
    let header = read_header(reader)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        let read = reader.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        hasher.update(&chunk[..read]);
        size += read as u64;
    }
    check(&header, size, hasher.finalize())?;
    Ok(header)
}

/// Reads the header line from the start of `reader` (byte by byte, so nothing after it is
/// consumed).
pub fn read_header(reader: &mut impl Read) -> Result<BackupHeader, BackupError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if reader.read(&mut byte)? == 0 {
            return Err(BackupError::NotABackup(
                "it ends before its header does".into(),
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_HEADER_BYTES {
            return Err(BackupError::NotABackup("its first line is too long".into()));
        }
    }
    parse_header(&line)
}

/// Whether data of `size` bytes and checksum `crc32` is what `header` promises.
pub fn check(header: &BackupHeader, size: u64, crc32: u32) -> Result<(), BackupError> {
    if size != header.size {
        return Err(BackupError::Damaged(format!(
            "{size} bytes of data, the header says {}",
            header.size
        )));
    }
    if crc32 != header.crc32 {
        return Err(BackupError::Damaged(format!(
            "CRC-32 {crc32:08x}, the header says {:08x}",
            header.crc32
        )));
    }
    Ok(())
}

/// The state a backup holds, as a state machine (the header and data checked first): for
/// inspecting a backup, and for seeding a cluster from it.
pub fn load_state(
    reader: &mut impl Read,
) -> Result<(BackupHeader, crate::store::KvStateMachine), BackupError> {
    let header = read_header(reader)?;
    let mut data = Vec::new();
    reader
        .take(header.size.saturating_add(1))
        .read_to_end(&mut data)?;
    check(&header, data.len() as u64, crc32fast::hash(&data))?;
    let snapshot = crate::store::KvSnapshot::decode_any(&data)
        .map_err(|e| BackupError::Damaged(format!("the state does not decode: {e}")))?;
    let mut machine = crate::store::KvStateMachine::new();
    raftor::StateMachine::restore(&mut machine, snapshot);
    Ok((header, machine))
}

/// Seeds node `id`'s new data directory from the backup at `path`, for a new cluster
/// `cluster_id` founded by `founders` ([`raftor::restore::seed_data_dir`]): the backup is checked
/// whole first, then copied (constant memory both times). Returns its header.
pub fn restore(
    path: &std::path::Path,
    data_dir: &std::path::Path,
    cluster_id: &str,
    id: raftor_core::NodeId,
    founders: &std::collections::BTreeMap<raftor_core::NodeId, String>,
) -> Result<BackupHeader, String> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let header = verify(&mut open()?).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = open()?;
    read_header(&mut reader).map_err(|e| e.to_string())?;
    let last = raftor_core::LogId::new(
        raftor_core::Term(header.term),
        raftor_core::LogIndex(header.index),
    );
    // The data's first eight bytes tell its snapshot format; they are read back in front of the rest.
    let mut first = Vec::with_capacity(8);
    (&mut reader)
        .take(8)
        .read_to_end(&mut first)
        .map_err(|e| e.to_string())?;
    let version_1 = crate::store::KvSnapshot::is_version_1(&first);
    let reader = first.as_slice().chain(reader);
    if version_1 {
        // Written before revisions: converted once here, so that every founder starts from the
        // same converted state (see `store::snapshot`). Checked whole by `verify` above.
        let mut data = Vec::new();
        reader
            .take(header.size)
            .read_to_end(&mut data)
            .map_err(|e| e.to_string())?;
        let snapshot = crate::store::KvSnapshot::decode_any(&data)?;
        let converted = bincode::serialize(&snapshot).map_err(|e| e.to_string())?;
        raftor::restore::seed_data_dir(
            data_dir,
            cluster_id,
            id,
            founders,
            last,
            &mut converted.as_slice(),
        )
        .map_err(|e| e.to_string())?;
        raftor::restore::finish_seeding(data_dir).map_err(|e| e.to_string())?;
        return Ok(header);
    }
    let meta = raftor::restore::seed_data_dir(
        data_dir,
        cluster_id,
        id,
        founders,
        last,
        &mut reader.take(header.size),
    )
    .map_err(|e| e.to_string())?;
    // Checked before the directory counts as seeded: a backup cut short or changed since it was
    // verified leaves a directory no node starts on.
    check(&header, meta.size, meta.checksum).map_err(|e| e.to_string())?;
    raftor::restore::finish_seeding(data_dir).map_err(|e| e.to_string())?;
    Ok(header)
}

/// `GET /v1/admin/backup[?consistency=linearizable|lease|local]`: once this node has applied
/// every write acknowledged before the request (unless `local`), takes a snapshot and streams the
/// backup of it.
pub async fn serve(state: web::Data<HttpState>, request: HttpRequest) -> HttpResponse {
    if let Err(answer) =
        crate::http::read_barrier::applied_through_read_index(&state, &request).await
    {
        return answer;
    }
    let (meta, data) = match state.node.backup().await {
        Ok(taken) => taken,
        Err(error) => {
            return HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "error": format!("cannot take a backup: {error}"),
                "leader": null,
            }))
        }
    };
    let header = BackupHeader {
        format: FORMAT.to_owned(),
        version: VERSION,
        cluster_id: state.cluster_id.clone(),
        node: state.node.id().0,
        index: meta.last_included.index.0,
        term: meta.last_included.term.0,
        size: meta.size,
        crc32: meta.checksum,
        taken_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let mut first = match serde_json::to_vec(&header) {
        Ok(line) => line,
        Err(error) => {
            return HttpResponse::InternalServerError()
                .json(serde_json::json!({ "error": error.to_string(), "leader": null }))
        }
    };
    first.push(b'\n');
    tracing::info!(node = %state.node.id(), index = header.index, bytes = header.size, "streaming a backup");
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) });
    let body = futures::stream::unfold(Some((data, meta.size)), |left| async move {
        let (mut file, remaining) = left?;
        if remaining == 0 {
            return None;
        }
        let want = CHUNK_BYTES.min(usize::try_from(remaining).unwrap_or(CHUNK_BYTES));
        // The file is read off the node's thread, a chunk at a time.
        let read = tokio::task::spawn_blocking(move || {
            let mut chunk = vec![0u8; want];
            file.read_exact(&mut chunk).map(|()| (file, chunk))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|read| read);
        match read {
            Ok((file, chunk)) => Some((
                Ok(Bytes::from(chunk)),
                Some((file, remaining - want as u64)),
            )),
            Err(error) => Some((Err(error), None)),
        }
    });
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("X-Raftor-Backup-Index", header.index.to_string()))
        .streaming(futures::StreamExt::chain(head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(data: &[u8]) -> Vec<u8> {
        let header = BackupHeader {
            format: FORMAT.into(),
            version: VERSION,
            cluster_id: "c".into(),
            node: 1,
            index: 9,
            term: 2,
            size: data.len() as u64,
            crc32: crc32fast::hash(data),
            taken_at: 0,
        };
        let mut file = serde_json::to_vec(&header).expect("json");
        file.push(b'\n');
        file.extend_from_slice(data);
        file
    }

    #[test]
    fn a_whole_backup_verifies_and_a_damaged_one_does_not() {
        let good = backup(b"the state machine's bytes");
        assert_eq!(verify(&mut &good[..]).expect("verifies").index, 9);
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            verify(&mut &flipped[..]),
            Err(BackupError::Damaged(_))
        ));
        let short = &good[..good.len() - 3];
        assert!(matches!(
            verify(&mut &short[..]),
            Err(BackupError::Damaged(_))
        ));
        for junk in [&b""[..], b"hello\nworld", b"{\"format\":\"other\"}\n"] {
            assert!(matches!(
                verify(&mut &junk[..]),
                Err(BackupError::NotABackup(_))
            ));
        }
    }
}
