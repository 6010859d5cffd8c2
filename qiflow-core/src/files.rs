//! Files created with restricted permissions: the mode is given when the file is created, never
//! set after data was written to it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of files holding records or state: read and write by the owner only.
pub(crate) const PRIVATE_MODE: u32 = 0o600;

/// Sets the mode a file gets when `options` creates it (Unix; elsewhere the mode is ignored).
/// The process umask may narrow it; an existing file keeps its mode.
pub(crate) fn create_mode(options: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        options
    }
}

/// `<path>.<pid>-<n>.tmp`: unique per write, so two writers of one file (a periodic save and the
/// one at shutdown) never share a temporary file.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(name)
}

/// Writes `bytes` to `path` atomically: a new temporary file beside it, created with `mode`, then
/// renamed over `path` (which so gets `mode` too, whatever it had). Creates the parent directory
/// when missing.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(path);
    // `create_new`: the mode applies to this file only, never to one found there.
    let written = create_mode(OpenOptions::new().write(true).create_new(true), mode)
        .open(&tmp)
        .and_then(|mut file: File| file.write_all(bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The name of the lock file qiflow keeps in each directory it writes (see [`lock_dir`]).
pub(crate) const LOCK_FILE: &str = ".qiflow.lock";

/// An exclusive lock on a directory, held while this value lives: `<dir>/.qiflow.lock`, locked
/// with the operating system's advisory lock (`flock`), holding the owner's pid. The lock goes
/// with the process, so a process that was killed leaves nothing to clean up.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Why a directory could not be locked.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds it: the message names the setting, the directory and the holder.
    Busy(String),
    /// The directory or its lock file could not be made or locked (the message says why).
    Io(String),
}

/// Locks `dir` (created when missing) for this process. When another process holds it, the
/// error names the setting (`key`), the directory and that process, and says what to do: two
/// instances writing one directory would corrupt its files.
pub(crate) fn lock_dir(dir: &Path, key: &str) -> Result<DirLock, LockError> {
    use LockError::{Busy, Io};
    std::fs::create_dir_all(dir)
        .map_err(|e| Io(format!("{key}: cannot create {}: {e}", dir.display())))?;
    let path = dir.join(LOCK_FILE);
    let mut file = create_mode(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        PRIVATE_MODE,
    )
    .open(&path)
    .map_err(|e| Io(format!("{key}: cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("process {holder}")
            };
            return Err(Busy(format!(
                "{key}: {} is in use by {holder} (it holds {}): two instances must not share a directory, or they corrupt each other's files; give this one its own {key}",
                dir.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(Io(format!("{key}: cannot lock {}: {e}", path.display())));
        }
    }
    // The holder's pid, for the next one's error message.
    let written = file
        .set_len(0)
        .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()));
    if let Err(e) = written {
        return Err(Io(format!("{key}: cannot write {}: {e}", path.display())));
    }
    Ok(DirLock { _file: file })
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn atomic_writes_create_the_file_private_and_narrow_a_wider_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        write_atomic(&path, b"one", PRIVATE_MODE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);

        // A file made world-readable gets the mode back.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"two", PRIVATE_MODE).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        // No temporary file is left.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn concurrent_writers_of_one_file_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::thread::scope(|s| {
            for i in 0..8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, format!("{i}").as_bytes(), PRIVATE_MODE).unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(mode(&path), 0o600);
    }
}
