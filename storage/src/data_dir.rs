//! How a store knows a data directory is its own: the format file.
//!
//! A node's data directory holds RocksDB's files, `snapshots/` and a format file
//! ([`FORMAT_FILE`]) naming the layout's version ([`FORMAT_VERSION`]). Before RocksDB writes
//! anything in a directory, [`claim`] checks it:
//! - empty (but for what a file system or a restore puts there, [`NOTHING_OF_NOTE`]): a new
//!   store; the format file is written and synced first, so any directory RocksDB has written in
//!   has one;
//! - holding the format file: the version must be one this build reads;
//! - a raftor store from before format files (RocksDB's `CURRENT` and the store's column
//!   families): the format file is added;
//! - anything else (a home directory, another program's files or database, a mistyped path
//!   into a populated volume): refused, touching nothing. RocksDB would otherwise add its files
//!   there and, on opening, delete files whose names look like its own obsolete ones.

use crate::error::io_error;
use crate::StorageError;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// The file naming a data directory's layout version; written before anything else.
pub const FORMAT_FILE: &str = "RAFTOR-FORMAT";

/// The layout this build writes and reads: RocksDB with the `meta` and `log` column families,
/// and `snapshots/`.
pub const FORMAT_VERSION: u32 = 1;

/// What the format file's first line says, before its version.
const FORMAT_PREFIX: &str = "raftor data directory, format ";

/// The file a restore leaves in a data directory it has begun to seed, until the copy is checked
/// (`raftor::restore`): a node refuses such a directory.
pub const RESTORE_MARKER: &str = "RESTORE-INCOMPLETE";

/// Entries a directory may hold and still be empty for a new store: the `lost+found` of a file
/// system's root (a volume mounted as the data directory), and a restore's marker (written
/// before the store, so that a restore cut short is never taken for a node's store).
pub const NOTHING_OF_NOTE: &[&str] = &["lost+found", RESTORE_MARKER];

/// Whether directory `dir` holds no store yet: it is missing, or holds nothing but what
/// [`NOTHING_OF_NOTE`] names and the format file (a first start that died before RocksDB wrote
/// anything). What a joining node and a restore take for a directory never used. An error when
/// `dir` cannot be listed (a file, a path through a file, no permission).
pub fn holds_no_store(dir: &Path) -> Result<bool, StorageError> {
    match entries_of_note(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(io_error(dir, error)),
        Ok((_, others)) => Ok(others.is_empty()),
    }
}

/// Whether `dir` holds the format file, and the names of what else it holds but
/// [`NOTHING_OF_NOTE`].
fn entries_of_note(dir: &Path) -> io::Result<(bool, Vec<String>)> {
    let mut others = Vec::new();
    let mut format_file = false;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name == FORMAT_FILE {
            format_file = true;
        } else if !NOTHING_OF_NOTE.contains(&name.as_str()) {
            others.push(name);
        }
    }
    Ok((format_file, others))
}

/// What [`claim`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The directory held nothing of note; the format file is now written.
    New,
    /// A store of this format (or one from before format files, now given one).
    Existing,
}

/// Checks that directory `dir` (which exists) is a store's of this format or is empty, and makes
/// it one: see the [module docs](self). `column_families` tells whether a RocksDB database found
/// there without a format file has the store's column families (it is given the path).
pub fn claim(
    dir: &Path,
    column_families: impl FnOnce(&Path) -> Result<bool, StorageError>,
) -> Result<Claim, StorageError> {
    let (format_file, mut others) = entries_of_note(dir).map_err(|e| io_error(dir, e))?;
    let path = dir.join(FORMAT_FILE);
    if format_file {
        let text = fs::read(&path).map_err(|e| io_error(&path, e))?;
        return match parse(&text) {
            Some(version) if version <= FORMAT_VERSION => Ok(Claim::Existing),
            Some(version) => Err(StorageError::NewerFormat {
                path: dir.display().to_string(),
                found: version,
                supported: FORMAT_VERSION,
            }),
            // Written first, and synced before anything else is: one cut short by a crash
            // stands alone.
            None if others.is_empty() => write_format_file(dir).map(|()| Claim::New),
            None => Err(StorageError::Corrupt(format!(
                "{} does not name a format: it should read \"{FORMAT_PREFIX}{FORMAT_VERSION}\"",
                path.display()
            ))),
        };
    }
    if others.is_empty() {
        write_format_file(dir)?;
        return Ok(Claim::New);
    }
    if others.iter().any(|name| name == "CURRENT") && column_families(dir)? {
        // Beside a store's files, a format file cut short could not be told from damage: this
        // one is written whole or not at all (a temporary file renamed over it).
        crate::durable::replace_file(&path, format_line().as_bytes(), false)
            .map_err(|e| io_error(&path, e))?;
        return Ok(Claim::Existing);
    }
    others.sort();
    let found = match others.len() {
        1 => format!("1 entry: {}", others[0]),
        count => format!(
            "{count} entries, among them {}",
            others[..3.min(count)].join(", ")
        ),
    };
    Err(StorageError::NotAStore {
        path: dir.display().to_string(),
        found,
    })
}

/// The version the format file's `text` names, if it names one.
fn parse(text: &[u8]) -> Option<u32> {
    std::str::from_utf8(text)
        .ok()?
        .lines()
        .next()?
        .strip_prefix(FORMAT_PREFIX)?
        .trim()
        .parse()
        .ok()
}

/// The format file's text for this build's format.
fn format_line() -> String {
    format!("{FORMAT_PREFIX}{FORMAT_VERSION}\n")
}

/// Writes and syncs the format file in a directory holding nothing of note, then syncs `dir`:
/// RocksDB writes nothing there before. (Written in place: a crash leaves at worst a format file
/// cut short standing alone, which [`claim`] writes again; a temporary file left beside it would
/// make the directory look occupied.)
fn write_format_file(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(FORMAT_FILE);
    let written = fs::File::create(&path)
        .and_then(|mut file| {
            file.write_all(format_line().as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| crate::durable::sync_dir(dir));
    written.map_err(|e| io_error(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn no_database(_: &Path) -> Result<bool, StorageError> {
        panic!("no database should be looked for here")
    }

    #[test]
    fn an_empty_directory_is_claimed_and_then_is_its_stores() {
        let dir = TempDir::new().unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        assert_eq!(claim(dir.path(), no_database).unwrap(), Claim::New);
        assert_eq!(
            parse(&fs::read(dir.path().join(FORMAT_FILE)).unwrap()),
            Some(FORMAT_VERSION)
        );
        fs::write(dir.path().join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        assert_eq!(claim(dir.path(), no_database).unwrap(), Claim::Existing);
    }

    #[test]
    fn a_directory_holds_no_store_until_a_store_writes_there() {
        let dir = TempDir::new().unwrap();
        assert!(holds_no_store(&dir.path().join("missing")).unwrap());
        assert!(holds_no_store(dir.path()).unwrap());
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        fs::write(dir.path().join(FORMAT_FILE), format_line()).unwrap();
        assert!(holds_no_store(dir.path()).unwrap());
        fs::write(dir.path().join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        assert!(!holds_no_store(dir.path()).unwrap());
        let file = dir.path().join("CURRENT");
        for unlistable in [file.clone(), file.join("data")] {
            let error = holds_no_store(&unlistable).expect_err("a file is no directory");
            assert!(
                matches!(error, StorageError::Io { .. }),
                "{unlistable:?}: {error}"
            );
        }
    }

    #[test]
    fn a_directory_of_other_files_is_refused_untouched() {
        let dir = TempDir::new().unwrap();
        for name in ["notes.txt", "000001.log", "photos", "a", "b"] {
            fs::write(dir.path().join(name), name).unwrap();
        }
        match claim(dir.path(), |_| Ok(false)) {
            Err(error @ StorageError::NotAStore { .. }) => {
                let message = error.to_string();
                assert!(message.contains("000001.log, a, b"), "{message}");
                assert!(message.contains("5 entries"), "{message}");
            }
            other => panic!("expected NotAStore, got {other:?}"),
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 5);
        assert_eq!(
            fs::read(dir.path().join("000001.log")).unwrap(),
            b"000001.log"
        );
    }

    #[test]
    fn a_database_is_a_store_only_with_the_stores_column_families() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        assert!(matches!(
            claim(dir.path(), |_| Ok(false)),
            Err(StorageError::NotAStore { .. })
        ));
        assert!(!dir.path().join(FORMAT_FILE).exists());
        assert_eq!(claim(dir.path(), |_| Ok(true)).unwrap(), Claim::Existing);
        assert!(dir.path().join(FORMAT_FILE).exists());
    }

    #[test]
    fn a_newer_format_is_refused_and_a_torn_one_alone_rewritten() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join(FORMAT_FILE);
        fs::write(&path, format!("{FORMAT_PREFIX}{}\n", FORMAT_VERSION + 1)).unwrap();
        let error = claim(dir.path(), no_database).unwrap_err();
        assert!(
            matches!(error, StorageError::NewerFormat { found, .. } if found == FORMAT_VERSION + 1),
            "{error:?}"
        );
        // A format file cut short before anything else was written: the store was never made.
        fs::write(&path, b"raftor da").unwrap();
        assert_eq!(claim(dir.path(), no_database).unwrap(), Claim::New);
        // The same beside the store's files is damage, not a first write cut short.
        fs::write(&path, b"raftor da").unwrap();
        fs::write(dir.path().join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        assert!(matches!(
            claim(dir.path(), no_database),
            Err(StorageError::Corrupt(_))
        ));
    }
}
