use thiserror::Error;

/// Why the store could not do what was asked. None of these is recoverable by retrying blindly:
/// a node that cannot write its log must stop taking part rather than answer without durability.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("RocksDB error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    #[error(
        "data directory {path} belongs to node {found_node} of cluster '{found_cluster}', \
         not node {expected_node} of cluster '{expected_cluster}'"
    )]
    WrongIdentity {
        path: String,
        found_cluster: String,
        found_node: u64,
        expected_cluster: String,
        expected_node: u64,
    },
    /// The data directory holds files that are not a raftor store's (see [`crate::data_dir`]).
    #[error(
        "data directory {path} is not empty and holds no raftor store ({found}): give an empty \
         or new directory, or the one this node used before"
    )]
    NotAStore {
        path: String,
        /// What it holds instead: how many entries, and the first few names.
        found: String,
    },
    /// The data directory was written by a newer raftor, in a layout this build cannot read.
    #[error(
        "data directory {path} is in format {found}, written by a newer raftor; this build reads \
         format {supported} and older"
    )]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// The entry asked for was folded into a snapshot and is no longer in the log.
    #[error("entry {index} is compacted: the log starts after {start}")]
    Compacted { index: u64, start: u64 },
}

/// The I/O error `source` on `path`.
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}
