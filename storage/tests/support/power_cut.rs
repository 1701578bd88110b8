//! The power-cut harness shared by `storage/tests/power_cut.rs` (a store's writer) and
//! `cli/tests/power_cut.rs` (whole `raftor serve` nodes): it compiles the LD_PRELOAD library
//! `power_cut_shim.c`, which keeps a durable image of a directory (what a power cut would leave of
//! it, in strict POSIX terms: see the library's header), and rebuilds a directory from that image.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim's source, written out and compiled by each test.
const SHIM_SOURCE: &str = include_str!("power_cut_shim.c");
/// The directory the shim watches, with everything below it; it must exist when the process
/// starts, and what it holds then is taken as durable.
pub const DIR_ENV: &str = "RAFTOR_POWER_CUT_DIR";
/// Where the shim keeps the durable image.
pub const IMAGE_ENV: &str = "RAFTOR_POWER_CUT_IMAGE";
/// A file name suffix whose files' syncs the shim skips (makes no-ops that report success).
#[allow(dead_code)]
pub const UNSYNCED_ENV: &str = "RAFTOR_POWER_CUT_UNSYNCED";

/// Compiles the shim into `dir`; `None` (with the reason printed) if there is no C compiler.
pub fn build_shim(dir: &Path) -> Option<PathBuf> {
    let source = dir.join("power_cut_shim.c");
    let library = dir.join("power_cut_shim.so");
    std::fs::write(&source, SHIM_SOURCE).unwrap();
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let output = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&library)
        .arg(&source)
        .args(["-ldl", "-lpthread"])
        .output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("skipped: no C compiler ({cc:?}) to build the power-cut shim with");
            None
        }
        Err(e) => panic!("cannot run {cc:?}: {e}"),
        Ok(output) => {
            assert!(
                output.status.success(),
                "the power-cut shim does not compile:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            Some(library)
        }
    }
}

/// Whether the shim took the image at `image` whole: a process killed before its start had been
/// copied (before it ran at all) left its directory as it was, and has no image to rebuild.
pub fn image_taken(image: &Path) -> bool {
    image.join("taken").exists()
}

/// Rebuilds, in `into` (which must not exist), the directory the shim's durable image at `image`
/// describes: each durable name with its file's durable bytes (none if the file was never
/// synced), each durable directory with its durable entries (none if it was never synced).
pub fn rebuild(image: &Path, into: &Path) {
    assert!(
        image_taken(image),
        "the durable image at {} was not taken whole: did the shim run?",
        image.display()
    );
    rebuild_dir(image, 1, into);
}

fn rebuild_dir(image: &Path, number: u64, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let Ok(names) = std::fs::read_to_string(image.join("dirs").join(number.to_string())) else {
        return; // a directory never synced: its durable name names an empty directory
    };
    for line in names.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(kind), Some(number), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("not a `<kind> <number> <name>` line: {line:?}");
        };
        match kind {
            "f" => {
                let bytes = image.join("files").join(number);
                if bytes.exists() {
                    std::fs::copy(&bytes, into.join(name)).unwrap();
                } else {
                    std::fs::File::create(into.join(name)).unwrap();
                }
            }
            "d" => rebuild_dir(image, number.parse().expect("a number"), &into.join(name)),
            _ => panic!("an entry of no known kind: {line:?}"),
        }
    }
}
