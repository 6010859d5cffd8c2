//! A rotating log file: size and time rotation, count and age retention, and compression of
//! rotated files on a background thread.
//!
//! [`RotatingFile`] appends whole lines to `<dir>/<file_name>`, the *active file*, and keeps the
//! rotated files (*archives*) beside it:
//!
//! ```text
//! logs/app.log                          the active file, always appended to (also after a restart)
//! logs/app.20261128T130405Z.log.gz      an archive: rotated at 13:04:05 UTC, then gzipped
//! logs/app.20261128T130405Z.1.log.gz    a second rotation within the same second
//! ```
//!
//! An archive is named `<stem>.<yyyymmddThhmmssZ>[.<n>].<ext>`: the active file's name with the
//! UTC time of the rotation (by the [`Clock`]) before its extension, a counter `n` (1, 2, …) when
//! that name is taken, so names never collide (several rotations in one second, a restart), and
//! `.gz` or `.zst` once compressed. A `file_name` without an extension gives archives without one.
//!
//! # When things happen
//!
//! - **Rotation** happens *before* a line is written, when the line would make a non-empty active
//!   file larger than `max_size`, or, with [`Rotation::Hourly`](crate::config::Rotation::Hourly)
//!   or [`Rotation::Daily`](crate::config::Rotation::Daily), when the UTC hour or day has changed
//!   since the active file's period began. A line larger than `max_size` still goes in, alone in
//!   a fresh file. Rotation fsyncs the active file, renames it to its archive name, fsyncs the
//!   directory, and opens a fresh active file. An empty file is never rotated.
//! - **Retention** runs at [`RotatingFile::open`] and after every rotation: of the archives of
//!   *this* `file_name` (the files matching the pattern above, nothing else: never the active
//!   file, never other files in the directory), it keeps the `max_backups` newest (by the time in
//!   their name, then the counter) and deletes those older than `max_age` (by the time in their
//!   name).
//! - **Compression** runs on one background thread per [`RotatingFile`] (named
//!   `qiflow-log-compress`, started with the first archive), so writers never wait for it. On
//!   Linux that thread runs under `SCHED_IDLE`: it only gets CPU time nothing else wants, so on a
//!   saturated machine archives wait, uncompressed, until load drops (they are still counted by
//!   retention, and recovered at the next start if the process ends first). It
//!   writes `<archive>.gz.tmp`, fsyncs it, renames it to `<archive>.gz`, fsyncs the directory, and
//!   only then deletes the uncompressed archive.
//! - **Permissions**: the active file and compressed archives are created with
//!   [`RotationPolicy::with_file_mode`] (default `0640`: the owner reads and writes, the group
//!   reads; the umask may narrow it) on Unix; a rotated archive keeps the active file's mode. An
//!   existing file keeps its mode (`qiflow check --strict` reports one that is wider).
//! - **Recovery** at [`RotatingFile::open`]: a `*.tmp` left by a crash is deleted and its archive
//!   compressed again; an uncompressed archive whose compressed copy is complete is deleted; every
//!   other uncompressed archive is queued for compression (when compression is on). An active
//!   file from an earlier period (by its modification time) or already at `max_size` is rotated.
//!
//! # Guarantees
//!
//! - Only whole lines reach the file: when a write fails part-way (a full disk), the file is cut
//!   back to where it was before the write, so nothing is ever written after a torn line.
//! - A broken handle, or an active file deleted, moved or replaced from outside, is reopened on
//!   the next write: writing resumes by itself once the problem is gone.
//! - Nothing panics on any input; an existing file is never truncated (the active file is opened
//!   with `O_APPEND`, also when the clock goes backwards).
//!
//! # Example
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use qiflow_core::clock::SystemClock;
//! use qiflow_core::config::Compression;
//! use qiflow_core::logging::rotate::{RotatingFile, RotationPolicy};
//!
//! let dir = tempfile::tempdir()?;
//! let policy = RotationPolicy::new(dir.path())
//!     .with_max_size(1_000)
//!     .with_compress(Compression::None);
//! let mut file = RotatingFile::open(policy, Arc::new(SystemClock))?;
//! for i in 0..100 {
//!     file.write_line(format!("{{\"message\":\"line {i}\"}}\n").as_bytes())?;
//! }
//! file.sync()?;
//! let files = std::fs::read_dir(dir.path())?.count();
//! assert!(files > 1, "the active file and its archives");
//! # Ok(()) }
//! ```
//!
//! # Structure
//!
//! One concern per file:
//!
//! - `mod.rs`: [`RotatingFile`], the write path: batching lines into runs, deciding when to
//!   rotate, renaming the active file, cutting back a torn line, reopening a lost file.
//! - `policy.rs`: [`RotationPolicy`], the builder of the settings above, and the rotation period
//!   (UTC hour or day) a time falls in.
//! - `naming.rs`: archive names and the UTC time in them, formatted and parsed with the `time`
//!   crate, and the choice of a free name.
//! - `retention.rs`: finding this file name's archives, `max_backups` and `max_age`, and the
//!   crash recovery of archives.
//! - `compress.rs`: the compression thread (gzip or zstd, `SCHED_IDLE`) and its backlog.

mod compress;
mod naming;
mod policy;
mod retention;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use policy::RotationPolicy;

use compress::{Codec, Compressor};
use naming::{ArchiveKey, Naming};
use retention::ArchiveFiles;

use crate::clock::Clock;
use crate::files::create_mode;

/// Consecutive lines are gathered into one write of at most this many bytes.
const CHUNK_CAP: u64 = 1 << 20;

/// A batch write that stopped part-way: the first [`written`](BatchError::written) lines are in
/// the file, the others are not (and no part of them is).
#[derive(Debug, thiserror::Error)]
#[error("the log batch stopped after {written} line(s)")]
pub struct BatchError {
    written: usize,
    #[source]
    source: io::Error,
}

impl BatchError {
    /// How many lines of the batch were written, from its start.
    pub fn written(&self) -> usize {
        self.written
    }

    /// The kind of the I/O error that stopped the batch.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl From<BatchError> for io::Error {
    fn from(e: BatchError) -> Self {
        e.source
    }
}

/// A log file that rotates by size and time, prunes by count and age, and compresses rotated
/// files in the background. See the [module docs](self) for when each of these happens.
///
/// Writes are synchronous and unbuffered: when [`write_line`](RotatingFile::write_line) returns
/// `Ok`, the line has reached the operating system. Share it between threads behind a `Mutex`.
///
/// Dropping it does not wait for compression: the compression thread finishes its queue on its
/// own. Call [`wait_for_compression`](RotatingFile::wait_for_compression) before the process
/// exits to let it finish; a compression cut short leaves a `.tmp` file that the next
/// [`open`](RotatingFile::open) deletes, compressing its archive again.
pub struct RotatingFile {
    /// Boxed: it is only read when rotating, and keeps the writer small to embed.
    policy: Box<RotationPolicy>,
    clock: Arc<dyn Clock>,
    naming: Naming,
    path: PathBuf,
    codec: Option<Codec>,
    active: Option<Active>,
    /// The last archive this writer made, so the next one in the same second sorts after it.
    last_archive: Option<ArchiveKey>,
    /// Reused for gathering a batch into one write.
    buf: Vec<u8>,
    compressor: Compressor,
    #[cfg(test)]
    fault: Option<tests::Fault>,
}

/// The open active file.
struct Active {
    file: File,
    id: (u64, u64),
    size: u64,
    /// The rotation period the file belongs to.
    period: u64,
    /// Set when a failed write could not be cut back: the length the file must get before
    /// anything else is written to it.
    torn_at: Option<u64>,
}

impl fmt::Debug for RotatingFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingFile")
            .field("path", &self.path)
            .field("size", &self.active.as_ref().map(|a| a.size))
            .field("policy", &self.policy)
            .field("compression_backlog", &self.compression_backlog())
            .finish_non_exhaustive()
    }
}

impl RotatingFile {
    /// Opens (or creates) the active file `<dir>/<file_name>` for appending, creating `dir` when
    /// missing; recovers what a crash left, rotates the active file when it belongs to an earlier
    /// period (by its modification time) or is already at `max_size`, and applies retention.
    ///
    /// Errors name the path: an invalid `file_name`, a directory that cannot be created, an
    /// active file that cannot be opened (or is not a regular file). Problems that lose no line
    /// (a failed deletion, a failed compression) are kept for [`take_error`](Self::take_error).
    pub fn open(policy: RotationPolicy, clock: Arc<dyn Clock>) -> io::Result<Self> {
        let naming = Naming::new(policy.file_name()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "log file name {:?} is not a plain file name (use `dir` for the directory)",
                    policy.file_name()
                ),
            )
        })?;
        fs::create_dir_all(policy.dir())
            .map_err(|e| with_path(e, "cannot create the log directory", policy.dir()))?;
        let path = policy.dir().join(policy.file_name());
        let codec = Codec::for_compression(policy.compress());
        let mut this = Self {
            policy: Box::new(policy),
            clock,
            naming,
            path,
            codec,
            active: None,
            last_archive: None,
            buf: Vec::new(),
            compressor: Compressor::default(),
            #[cfg(test)]
            fault: None,
        };
        this.recover();
        let now = this.clock.now();
        this.reopen(now)?;
        let rotate = this.active.as_ref().is_some_and(|a| {
            a.size > 0 && (a.period < this.policy.period(now) || a.size >= this.policy.max_size())
        });
        if rotate {
            match this.rename_active(now) {
                Ok(_) => this.reopen(now)?,
                Err(e) => this.compressor.record(e),
            }
        }
        let kept = this.prune(now);
        if let Some(codec) = this.codec {
            for plain in kept.into_iter().filter_map(ArchiveFiles::uncompressed) {
                this.compressor
                    .submit(plain, codec, this.policy.file_mode());
            }
        }
        Ok(this)
    }

    /// Appends one complete line (with its trailing `'\n'`), rotating first when needed.
    ///
    /// On an error (a full disk, an unwritable directory) no part of the line is in the file,
    /// and the next call tries again, reopening the file if needed.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_lines(&[line]).map_err(io::Error::from)
    }

    /// Appends complete lines (each with its trailing `'\n'`), in order, with one write call per
    /// run of lines that fits in the active file, rotating between runs as needed.
    ///
    /// On an error, the first [`BatchError::written`] lines are in the file and no part of the
    /// others is.
    pub fn write_lines<L: AsRef<[u8]>>(&mut self, lines: &[L]) -> Result<(), BatchError> {
        let mut written = 0;
        while written < lines.len() {
            match self.write_run(&lines[written..]) {
                Ok(n) => written += n,
                Err(source) => return Err(BatchError { written, source }),
            }
        }
        Ok(())
    }

    /// Flushes buffered data (writes are unbuffered, so this only forwards to the file).
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.active {
            Some(active) => active.file.flush(),
            None => Ok(()),
        }
    }

    /// Makes everything written so far durable (`fsync`).
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.active {
            Some(active) => active.file.sync_all(),
            None => Ok(()),
        }
    }

    /// The path of the active file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy this file follows.
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Archives waiting for, or in, compression.
    pub fn compression_backlog(&self) -> usize {
        self.compressor.backlog()
    }

    /// Waits until every queued archive is compressed, at most `timeout`; `true` when the
    /// backlog is empty. For tests and shutdown: writers never need to call it.
    pub fn wait_for_compression(&self, timeout: Duration) -> bool {
        self.compressor.wait_idle(timeout)
    }

    /// The first problem since the last call that lost no line: a rotation that failed (the lines
    /// went on into the active file, and rotation is tried again before the next write), an
    /// archive that could not be deleted, compressed or listed.
    pub fn take_error(&self) -> Option<io::Error> {
        self.compressor.take_error()
    }

    /// Writes the longest run of `lines` (at least one) that fits; returns how many it wrote.
    fn write_run<L: AsRef<[u8]>>(&mut self, lines: &[L]) -> io::Result<usize> {
        let Some(first) = lines.first().map(|l| l.as_ref().len() as u64) else {
            return Ok(0);
        };
        let now = self.clock.now();
        self.prepare(now)?;
        if self.should_rotate(now, first) {
            match self.rename_active(now) {
                Ok(archive) => {
                    if let Some(codec) = self.codec {
                        self.compressor
                            .submit(archive, codec, self.policy.file_mode());
                    }
                    self.prune(now);
                    self.prepare(now)?;
                }
                // Keep writing into the current file rather than lose lines; retried next run.
                Err(e) => self.compressor.record(e),
            }
        }
        let size = self.active.as_ref().map_or(0, |a| a.size);
        let max = self.policy.max_size();
        let mut total = first;
        let mut end = 1;
        for line in &lines[1..] {
            let len = line.as_ref().len() as u64;
            if size.saturating_add(total).saturating_add(len) > max
                || total.saturating_add(len) > CHUNK_CAP
            {
                break;
            }
            total += len;
            end += 1;
        }
        if end == 1 {
            self.append(lines[0].as_ref())?;
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            for line in &lines[..end] {
                buf.extend_from_slice(line.as_ref());
            }
            let result = self.append(&buf);
            self.buf = buf;
            result?;
        }
        Ok(end)
    }

    /// Makes sure the active file is open and is still the file at `path`, with its current
    /// size; cuts back a torn line first.
    fn prepare(&mut self, now: SystemTime) -> io::Result<()> {
        if let Some(active) = &mut self.active {
            if let Some(len) = active.torn_at {
                active
                    .file
                    .set_len(len)
                    .map_err(|e| with_path(e, "cannot cut a partial line from", &self.path))?;
                active.torn_at = None;
            }
            match fs::metadata(&self.path) {
                Ok(meta) if meta.is_file() && file_id(&meta) == active.id => {
                    active.size = meta.len();
                    return Ok(());
                }
                // Deleted, moved or replaced from outside: reopen below.
                _ => self.active = None,
            }
        }
        self.reopen(now)
    }

    /// Opens the file at `path` (creating it and the directory as needed) as the active file.
    fn reopen(&mut self, now: SystemTime) -> io::Result<()> {
        self.active = None;
        fs::create_dir_all(self.policy.dir())
            .map_err(|e| with_path(e, "cannot create the log directory", self.policy.dir()))?;
        let file = create_mode(
            OpenOptions::new().append(true).create(true),
            self.policy.file_mode(),
        )
        .open(&self.path)
        .map_err(|e| with_path(e, "cannot open the log file", &self.path))?;
        let meta = file
            .metadata()
            .map_err(|e| with_path(e, "cannot inspect the log file", &self.path))?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("log file {} is not a regular file", self.path.display()),
            ));
        }
        // A file last written in an earlier period belongs to it; a modification time ahead of
        // the clock counts as now.
        let modified = meta.modified().unwrap_or(now);
        let period = self.policy.period(modified).min(self.policy.period(now));
        self.active = Some(Active {
            file,
            id: file_id(&meta),
            size: meta.len(),
            period,
            torn_at: None,
        });
        Ok(())
    }

    /// Whether the active file must be rotated before a line of `len` bytes.
    fn should_rotate(&mut self, now: SystemTime, len: u64) -> bool {
        let period = self.policy.period(now);
        let Some(active) = &mut self.active else {
            return false;
        };
        if active.size == 0 {
            // Nothing to archive: the empty file simply joins the current period.
            active.period = active.period.max(period);
            return false;
        }
        // A clock stepped backwards keeps the file until the clock passes its period again.
        period > active.period || active.size.saturating_add(len) > self.policy.max_size()
    }

    /// Closes the active file and renames it to a fresh archive name; returns the archive. On
    /// error, the active file stays open as it was.
    fn rename_active(&mut self, now: SystemTime) -> io::Result<PathBuf> {
        let Some(active) = self.active.take() else {
            return Err(io::Error::other("the log file is not open"));
        };
        // Best effort: a failed fsync cannot be retried meaningfully, the rename still is right.
        let _ = active.file.sync_all();
        let (key, archive) = match self
            .naming
            .next_free(self.policy.dir(), now, self.last_archive)
        {
            Ok(name) => name,
            Err(e) => {
                self.active = Some(active);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&self.path, &archive) {
            self.active = Some(active);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot rotate {} to {}: {e}",
                    self.path.display(),
                    archive.display()
                ),
            ));
        }
        drop(active);
        sync_dir(self.policy.dir());
        self.last_archive = Some(key);
        Ok(archive)
    }

    /// Appends `bytes` (whole lines) to the active file; on failure, cuts the file back.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(active) = &mut self.active else {
            return Err(io::Error::other(format!(
                "log file {} is not open",
                self.path.display()
            )));
        };
        let before = active.size;
        #[cfg(test)]
        let result = match &mut self.fault {
            Some(fault) => fault.write(&mut active.file, bytes),
            None => active.file.write_all(bytes),
        };
        #[cfg(not(test))]
        let result = active.file.write_all(bytes);
        match result {
            Ok(()) => {
                active.size = before.saturating_add(bytes.len() as u64);
                Ok(())
            }
            Err(e) => {
                if active.file.set_len(before).is_ok() {
                    // Reopen before the next write: this also heals a broken handle.
                    self.active = None;
                } else {
                    active.torn_at = Some(before);
                }
                Err(e)
            }
        }
    }

    /// Cleans what a crash left (see `retention::recover`); problems are kept for
    /// [`take_error`](Self::take_error).
    fn recover(&self) {
        let compressor = &self.compressor;
        retention::recover(self.policy.dir(), &self.naming, &mut |e| {
            compressor.record(e)
        });
    }

    /// Applies `max_backups` and `max_age`; returns the archives kept.
    fn prune(&self, now: SystemTime) -> Vec<ArchiveFiles> {
        let compressor = &self.compressor;
        retention::prune(&self.policy, &self.naming, now, &mut |e| {
            compressor.record(e)
        })
    }
}

/// What identifies a file while it exists: its device and inode (Unix; elsewhere nothing).
#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

/// What identifies a file while it exists: its device and inode (Unix; elsewhere nothing).
#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Makes renames and creations in `dir` durable (best effort; a no-op where directories cannot
/// be opened).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// `path` with `suffix` appended to its file name (`app.log` and `.gz`: `app.log.gz`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// An I/O error that says what failed on which path, keeping the kind.
fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}
