//! Files and directories that survive a power failure once made.
//!
//! A file's data is durable once the file is synced; its name is durable only once the directory
//! holding it is synced too (POSIX promises nothing else; ext4 and XFS usually, not always, write
//! a new entry with the next journal commit). A new directory is an entry in its parent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Syncs the directory `dir`, making the entries created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `path`'s parent directory, `.` for a bare name.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Creates `dir` and whichever of its parents are missing, as `fs::create_dir_all` does, and
/// makes each one created durable by syncing the directory that holds it. A data directory
/// created and filled, then lost with its contents to a power failure, would leave a node that
/// forgot what it promised; one that already exists is left as it is.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.is_dir() {
            break;
        }
        missing.push(path);
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        match fs::create_dir(path) {
            Ok(()) => sync_dir(parent_of(path))?,
            // Made meanwhile by someone else, who syncs it.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Replaces the file at `path` with `contents`, all or nothing even across a power failure: they
/// are written to a temporary file beside it and synced, which is then renamed over `path`, and
/// the directory synced. Rewritten in place, a file read meanwhile (a node reloading its tokens)
/// would be seen empty or cut short, and a power failure could leave it so. `private` files are
/// readable by their owner only (on Unix). A file that cannot be renamed over (a single file
/// bind-mounted into a container) is rewritten in place and synced.
pub fn replace_file(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file path must end in a file name",
        ));
    };
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let write = |options: &OpenOptions, to: &Path| {
        let mut file = options.open(to)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    let replaced = write(&options, &temporary).and_then(|()| fs::rename(&temporary, path));
    match replaced {
        Ok(()) => sync_dir(parent_of(path)),
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            if error.kind() == io::ErrorKind::ResourceBusy {
                write(&options, path)
            } else {
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_created_with_their_missing_parents_and_files_replaced_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b/c");
        create_dir_durable(&dir).expect("created");
        assert!(dir.is_dir());
        create_dir_durable(&dir).expect("an existing directory is fine");
        let file = dir.join("tokens.toml");
        replace_file(&file, b"first", true).expect("written");
        replace_file(&file, b"second", true).expect("replaced");
        assert_eq!(fs::read(&file).expect("read"), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&file).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "private");
        }
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("listed")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["tokens.toml"], "no temporary file left");
        assert!(
            create_dir_durable(&file.join("below")).is_err(),
            "a file is in the way"
        );
        assert!(replace_file(&root.path().join("missing/x"), b"x", false).is_err());
    }
}
