//! Files and directories that survive a power failure once made.
//!
//! A file's data is durable once the file is synced; its name is durable only once the directory
//! holding it is synced too (POSIX promises nothing else; ext4 and XFS usually, not always, write
//! a new entry with the next journal commit). A new directory is an entry in its parent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Syncs the directory `dir`, making the entries created, renamed or removed in it durable. A
/// filesystem that syncs no directories (some FUSE, 9p and SMB mounts answer `EINVAL`) is left
/// as it is: nothing more can be done there. Elsewhere than Unix, a no-op.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if !cfg!(unix) {
        return Ok(());
    }
    match File::open(dir)?.sync_all() {
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        synced => synced,
    }
}

/// Syncs the directory holding `path` ([`sync_dir`]; `.` for a bare name), making `path`'s name
/// durable once it was created or renamed there.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Creates `dir` and whichever of its parents are missing, as `fs::create_dir_all` does, and
/// makes each one created durable by syncing the directory that holds it. A data directory
/// created and filled, then lost with its contents to a power failure, would leave a node that
/// forgot what it promised. A `dir` that exists already has its parent synced too: it may have
/// been made by someone who never synced it (an operator's `mkdir`, a volume's setup) or by a
/// process killed before it could.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return match sync_parent(dir) {
            // A parent this process may enter but not read: nothing it could do, as below.
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            synced => synced,
        };
    }
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
            Ok(()) => match sync_parent(path) {
                // A parent this process may enter but not read (mode 711) cannot be opened to be
                // synced: the directory is made as `create_dir_all` made it, and said so.
                Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::warn!(
                        directory = %path.display(),
                        %error,
                        "created, but its parent cannot be synced: a power failure may lose it"
                    );
                }
                synced => synced?,
            },
            // Made meanwhile by someone else, who syncs it.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            // A file (or a link to one) where a directory belongs: say so, not "File exists".
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(not_a_directory(path))
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The error for something other than a directory (a file, a dangling link) at `path`, where a
/// directory was to be made or found.
fn not_a_directory(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        format!("{} exists and is not a directory", path.display()),
    )
}

/// Replaces the file at `path` with `contents`, all or nothing even across a power failure: they
/// are written to a new file beside it (with the old file's permissions and, where allowed, its
/// owner; `private`: readable by its owner only, for a file that did not exist) and synced, which
/// is then renamed over `path`, and the directory synced. Rewritten in place, a file read
/// meanwhile (a node reloading its tokens) would be seen empty or cut short, and a power failure
/// could leave it so. What cannot be replaced so is written in place and synced, as before: a
/// symbolic link (written through), something not a regular file (`/dev/stdout`, a pipe), a
/// file in a directory that takes no new file, a single file bind-mounted into a container.
pub fn replace_file(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file path must end in a file name",
        ));
    };
    let existing = match fs::symlink_metadata(path) {
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    if existing.as_ref().is_some_and(|m| !m.file_type().is_file()) {
        return write_in_place(path, contents, private);
    }
    let temporary = path.with_file_name(temporary_name(name));
    let mut file = match create_beside(&temporary, existing.as_ref(), private) {
        Ok(file) => file,
        Err(error)
            if existing.is_some()
                && matches!(
                    error.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) =>
        {
            return write_in_place(path, contents, private);
        }
        Err(error) => return Err(error),
    };
    let replaced = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temporary, path));
    drop(file);
    match replaced {
        Ok(()) => sync_parent(path),
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            if error.kind() == io::ErrorKind::ResourceBusy {
                write_in_place(path, contents, private)
            } else {
                Err(error)
            }
        }
    }
}

/// A name for a new file beside `name`, hidden, and never that of another one this process
/// makes.
fn temporary_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut temporary = std::ffi::OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".{}-{made}.tmp", std::process::id()));
    temporary
}

/// Creates the new file `temporary` (never opening one already there, nor following a link: a
/// leftover of a process that had the same id is removed first), with `existing`'s permissions
/// and owner where it has them.
fn create_beside(
    temporary: &Path,
    existing: Option<&fs::Metadata>,
    private: bool,
) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if private && existing.is_none() {
        owner_only(&mut options);
    }
    let file = match options.open(temporary) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(temporary)?;
            options.open(temporary)?
        }
        opened => opened?,
    };
    if let Some(existing) = existing {
        file.set_permissions(existing.permissions())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // Only root may give a file away; anyone else keeps the new file as theirs.
            let _ = std::os::unix::fs::fchown(&file, Some(existing.uid()), Some(existing.gid()));
        }
    }
    Ok(file)
}

/// Makes `options` create a file readable and writable by its owner only (on Unix; elsewhere it
/// changes nothing).
fn owner_only(options: &mut OpenOptions) {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    #[cfg(not(unix))]
    let _ = options;
}

/// Writes `contents` over what `path` holds (through a link), and syncs it.
fn write_in_place(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        owner_only(&mut options);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    match file.sync_all() {
        // A pipe or a terminal keeps nothing to sync.
        Err(error) if error.kind() == io::ErrorKind::InvalidInput => Ok(()),
        synced => synced,
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The old file's permissions are kept, and a link is written through.
            fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
            replace_file(&file, b"third", true).expect("replaced");
            let mode = fs::metadata(&file).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o640, "kept");
            let link = root.path().join("link.toml");
            std::os::unix::fs::symlink(&file, &link).expect("symlink");
            replace_file(&link, b"fourth", true).expect("written through");
            assert!(fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink());
            assert_eq!(fs::read(&file).expect("read"), b"fourth");
        }
        for (wanted, in_the_way) in [(file.clone(), &file), (file.join("below/more"), &file)] {
            let error = create_dir_durable(&wanted).expect_err("a file is in the way");
            assert_eq!(error.kind(), io::ErrorKind::NotADirectory, "{wanted:?}");
            assert_eq!(
                error.to_string(),
                format!("{} exists and is not a directory", in_the_way.display()),
                "names the file in the way, not \"File exists\""
            );
        }
        assert!(replace_file(&root.path().join("missing/x"), b"x", false).is_err());
    }
}
