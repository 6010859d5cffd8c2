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
//!   file larger than `max_size`, or, with [`Rotation::Hourly`]/[`Rotation::Daily`], when the
//!   UTC hour or day has changed since the active file's period began. A line larger than
//!   `max_size` still goes in, alone in a fresh file. Rotation fsyncs the active file, renames it
//!   to its archive name, fsyncs the directory, and opens a fresh active file. An empty file is
//!   never rotated.
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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::clock::Clock;
use crate::config::{Compression, DEFAULT_LOG_FILE_MODE, LoggingConfig, Rotation};
use crate::files::create_mode;

const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// Consecutive lines are gathered into one write of at most this many bytes.
const CHUNK_CAP: u64 = 1 << 20;
/// The last second a `yyyymmdd` stamp can show: 9999-12-31T23:59:59Z.
const MAX_STAMP_SECS: u64 = 253_402_300_799;
/// The name of the compression thread.
const THREAD_NAME: &str = "qiflow-log-compress";
/// Suffixes that make an archive name taken (the archive itself, compressed, or being compressed).
const VARIANTS: [&str; 5] = ["", ".gz", ".zst", ".gz.tmp", ".zst.tmp"];

/// Where a [`RotatingFile`] writes, when it rotates, what it keeps, and how it compresses.
///
/// A consuming builder; [`RotationPolicy::new`] starts from the same defaults as
/// [`LoggingConfig`], and [`RotationPolicy::from_config`] takes the `[logging]` section.
///
/// ```
/// use std::time::Duration;
/// use qiflow_core::config::{Compression, Rotation};
/// use qiflow_core::logging::rotate::RotationPolicy;
///
/// let policy = RotationPolicy::new("logs")
///     .with_file_name("api.log")
///     .with_rotation(Rotation::Hourly)
///     .with_max_size(10 * 1024 * 1024)
///     .with_max_backups(48)
///     .with_max_age(Duration::from_secs(2 * 86_400))
///     .with_compress(Compression::Gzip);
/// assert_eq!(policy.file_name(), "api.log");
/// assert_eq!(RotationPolicy::new("logs").max_backups(), 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RotationPolicy {
    dir: PathBuf,
    file_name: String,
    rotation: Rotation,
    max_size: u64,
    max_backups: u32,
    max_age: Duration,
    compress: Compression,
    file_mode: u32,
}

impl RotationPolicy {
    /// A policy for files in `dir` (created when missing), with the defaults: file name
    /// `app.log`, daily rotation, `max_size` 100 MiB, 10 backups, `max_age` 30 days, gzip, files
    /// created `0640`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            file_name: "app.log".into(),
            rotation: Rotation::Daily,
            max_size: 100 * 1024 * 1024,
            max_backups: 10,
            max_age: Duration::from_secs(30 * DAY),
            compress: Compression::Gzip,
            file_mode: DEFAULT_LOG_FILE_MODE,
        }
    }

    /// The policy of a `[logging]` section: `dir`, `file_name`, `rotation`, `max_size`,
    /// `max_backups`, `max_age`, `compress` and `file_mode`.
    pub fn from_config(config: &LoggingConfig) -> Self {
        Self {
            dir: config.dir.clone(),
            file_name: config.file_name.clone(),
            rotation: config.rotation,
            max_size: config.max_size,
            max_backups: config.max_backups,
            max_age: config.max_age,
            compress: config.compress,
            file_mode: config.file_mode,
        }
    }

    /// The active file's name: a plain file name, no directory part. Defaults to `app.log`.
    pub fn with_file_name(mut self, file_name: impl Into<String>) -> Self {
        self.file_name = file_name.into();
        self
    }

    /// Time-based rotation at UTC hour or day boundaries, in addition to `max_size`. Defaults to
    /// [`Rotation::Daily`].
    pub fn with_rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = rotation;
        self
    }

    /// Rotate before a line would make the active file larger than this many bytes. Defaults to
    /// 100 MiB.
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = bytes;
        self
    }

    /// Archives to keep, newest first; `0` keeps none. Defaults to `10`.
    pub fn with_max_backups(mut self, count: u32) -> Self {
        self.max_backups = count;
        self
    }

    /// Delete archives older than this (by the time in their name); `Duration::MAX` never
    /// deletes by age. Defaults to 30 days.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Compression of archives. Defaults to [`Compression::Gzip`]. [`Compression::Zstd`] needs
    /// the crate feature `zstd`; without it, archives are gzipped instead.
    pub fn with_compress(mut self, compress: Compression) -> Self {
        self.compress = compress;
        self
    }

    /// The Unix permissions new log files are created with (the active file, compressed
    /// archives), such as `0o640`; ignored elsewhere. The umask may narrow them. Defaults to
    /// `0o640`.
    pub fn with_file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode & 0o7777;
        self
    }

    /// The mode new log files are created with.
    pub fn file_mode(&self) -> u32 {
        self.file_mode
    }

    /// The directory of the active file and its archives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active file's name.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }

    /// Time-based rotation.
    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// The size limit of the active file, in bytes.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// How many archives are kept.
    pub fn max_backups(&self) -> u32 {
        self.max_backups
    }

    /// How old an archive may get.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Compression of archives, as configured (see [`RotationPolicy::with_compress`]).
    pub fn compress(&self) -> Compression {
        self.compress
    }

    /// The period index of `t`: rotation happens when it grows.
    fn period(&self, t: SystemTime) -> u64 {
        match self.rotation {
            Rotation::Never => 0,
            Rotation::Hourly => unix_secs(t) / HOUR,
            Rotation::Daily => unix_secs(t) / DAY,
        }
    }
}

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
        let naming = Naming::new(&policy.file_name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "log file name {:?} is not a plain file name (use `dir` for the directory)",
                    policy.file_name
                ),
            )
        })?;
        fs::create_dir_all(&policy.dir)
            .map_err(|e| with_path(e, "cannot create the log directory", &policy.dir))?;
        let path = policy.dir.join(&policy.file_name);
        let codec = Codec::for_compression(policy.compress);
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
            a.size > 0 && (a.period < this.policy.period(now) || a.size >= this.policy.max_size)
        });
        if rotate {
            match this.rename_active(now) {
                Ok(_) => this.reopen(now)?,
                Err(e) => this.compressor.shared.record(e),
            }
        }
        for archive in this.prune(now) {
            if let (Some(codec), Some(plain)) = (this.codec, archive.plain)
                && archive.compressed.is_empty()
            {
                this.compressor.submit(plain, codec, this.policy.file_mode);
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
        *self.compressor.shared.lock_pending()
    }

    /// Waits until every queued archive is compressed, at most `timeout`; `true` when the
    /// backlog is empty. For tests and shutdown: writers never need to call it.
    pub fn wait_for_compression(&self, timeout: Duration) -> bool {
        self.compressor.shared.wait_idle(timeout)
    }

    /// The first problem since the last call that lost no line: a rotation that failed (the lines
    /// went on into the active file, and rotation is tried again before the next write), an
    /// archive that could not be deleted, compressed or listed.
    pub fn take_error(&self) -> Option<io::Error> {
        self.compressor
            .shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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
                            .submit(archive, codec, self.policy.file_mode);
                    }
                    self.prune(now);
                    self.prepare(now)?;
                }
                // Keep writing into the current file rather than lose lines; retried next run.
                Err(e) => self.compressor.shared.record(e),
            }
        }
        let size = self.active.as_ref().map_or(0, |a| a.size);
        let max = self.policy.max_size;
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
        fs::create_dir_all(&self.policy.dir)
            .map_err(|e| with_path(e, "cannot create the log directory", &self.policy.dir))?;
        let file = create_mode(
            OpenOptions::new().append(true).create(true),
            self.policy.file_mode,
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
        period > active.period || active.size.saturating_add(len) > self.policy.max_size
    }

    /// Closes the active file and renames it to a fresh archive name; returns the archive. On
    /// error, the active file stays open as it was.
    fn rename_active(&mut self, now: SystemTime) -> io::Result<PathBuf> {
        let Some(active) = self.active.take() else {
            return Err(io::Error::other("the log file is not open"));
        };
        // Best effort: a failed fsync cannot be retried meaningfully, the rename still is right.
        let _ = active.file.sync_all();
        let (key, archive) = self.next_archive_name(now);
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
        sync_dir(&self.policy.dir);
        self.last_archive = Some(key);
        Ok(archive)
    }

    /// The first free archive name for a rotation at `now`.
    fn next_archive_name(&self, now: SystemTime) -> (ArchiveKey, PathBuf) {
        let secs = unix_secs(now).min(MAX_STAMP_SECS);
        let mut n = match self.last_archive {
            Some(last) if last.secs == secs => last.n.saturating_add(1),
            _ => 0,
        };
        loop {
            let path = self.policy.dir.join(self.naming.archive_name(secs, n));
            let taken = VARIANTS
                .iter()
                .any(|suffix| fs::symlink_metadata(with_suffix(&path, suffix)).is_ok());
            if !taken || n == u64::MAX {
                return (ArchiveKey { secs, n }, path);
            }
            n += 1;
        }
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

    /// Removes what a crash left behind: `*.tmp` files, and uncompressed archives whose
    /// compressed copy is complete (it is renamed into place only once durable).
    fn recover(&mut self) {
        let archives = match self.scan() {
            Ok(archives) => archives,
            Err(e) => return self.compressor.shared.record(e),
        };
        for archive in archives.values() {
            for temp in &archive.temps {
                self.remove(temp);
            }
            if let Some(plain) = &archive.plain
                && !archive.compressed.is_empty()
            {
                self.remove(plain);
            }
        }
    }

    /// Applies `max_backups` and `max_age`; returns the archives kept.
    fn prune(&mut self, now: SystemTime) -> Vec<ArchiveFiles> {
        let archives = match self.scan() {
            Ok(archives) => archives,
            Err(e) => {
                self.compressor.shared.record(e);
                return Vec::new();
            }
        };
        let now = unix_secs(now);
        let keep = usize::try_from(self.policy.max_backups).unwrap_or(usize::MAX);
        let mut kept = Vec::new();
        for (rank, (key, archive)) in archives.into_iter().rev().enumerate() {
            let age = Duration::from_secs(now.saturating_sub(key.secs));
            if rank >= keep || age > self.policy.max_age {
                // In-progress `.tmp` files are left to the compressor, which drops them when it
                // finds its source gone.
                for path in archive.plain.iter().chain(&archive.compressed) {
                    self.remove(path);
                }
            } else {
                kept.push(archive);
            }
        }
        kept
    }

    /// The archives of this file name in the directory, oldest first.
    fn scan(&self) -> io::Result<BTreeMap<ArchiveKey, ArchiveFiles>> {
        let dir = &self.policy.dir;
        let entries =
            fs::read_dir(dir).map_err(|e| with_path(e, "cannot list the log directory", dir))?;
        let mut archives: BTreeMap<ArchiveKey, ArchiveFiles> = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((key, kind)) = self.naming.parse(name) else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let files = archives.entry(key).or_default();
            match kind {
                FileKind::Plain => files.plain = Some(entry.path()),
                FileKind::Compressed => files.compressed.push(entry.path()),
                FileKind::Temp => files.temps.push(entry.path()),
            }
        }
        Ok(archives)
    }

    fn remove(&self, path: &Path) {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                self.compressor
                    .shared
                    .record(with_path(e, "cannot delete the old log file", path))
            }
        }
    }
}

/// The files of one archive: uncompressed, compressed, and compressions in progress.
#[derive(Debug, Default)]
struct ArchiveFiles {
    plain: Option<PathBuf>,
    compressed: Vec<PathBuf>,
    temps: Vec<PathBuf>,
}

/// Orders archives: by the time in the name, then the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ArchiveKey {
    secs: u64,
    n: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Plain,
    Compressed,
    Temp,
}

/// Archive names of one `file_name`: `<stem>.<stamp>[.<n>][.<ext>]`.
#[derive(Debug, Clone)]
struct Naming {
    stem: String,
    ext: Option<String>,
}

impl Naming {
    /// `None` unless `file_name` is a plain file name.
    fn new(file_name: &str) -> Option<Self> {
        let path = Path::new(file_name);
        if path.file_name().and_then(|n| n.to_str()) != Some(file_name) {
            return None;
        }
        let stem = path.file_stem()?.to_str()?.to_owned();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| !e.is_empty())
            .map(str::to_owned);
        Some(Self { stem, ext })
    }

    fn archive_name(&self, secs: u64, n: u64) -> String {
        let mut name = format!("{}.{}", self.stem, format_stamp(secs));
        if n > 0 {
            name.push_str(&format!(".{n}"));
        }
        if let Some(ext) = &self.ext {
            name.push('.');
            name.push_str(ext);
        }
        name
    }

    /// Recognizes this file name's archives (uncompressed, compressed, and `.tmp`), nothing else.
    fn parse(&self, name: &str) -> Option<(ArchiveKey, FileKind)> {
        if let Some(name) = name.strip_suffix(".tmp") {
            let base = name
                .strip_suffix(".gz")
                .or_else(|| name.strip_suffix(".zst"))?;
            return Some((self.parse_plain(base)?, FileKind::Temp));
        }
        if let Some(key) = self.parse_plain(name) {
            return Some((key, FileKind::Plain));
        }
        let base = name
            .strip_suffix(".gz")
            .or_else(|| name.strip_suffix(".zst"))?;
        Some((self.parse_plain(base)?, FileKind::Compressed))
    }

    fn parse_plain(&self, name: &str) -> Option<ArchiveKey> {
        let name = match &self.ext {
            Some(ext) => name.strip_suffix(ext.as_str())?.strip_suffix('.')?,
            None => name,
        };
        let rest = name.strip_prefix(self.stem.as_str())?.strip_prefix('.')?;
        let (stamp, n) = match rest.split_once('.') {
            None => (rest, 0),
            Some((stamp, n)) => (stamp, parse_counter(n)?),
        };
        Some(ArchiveKey {
            secs: parse_stamp(stamp)?,
            n,
        })
    }
}

/// A counter as written by [`Naming::archive_name`]: `1`, `2`, … without leading zeros.
fn parse_counter(s: &str) -> Option<u64> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Seconds since the Unix epoch; times before it count as the epoch.
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `yyyymmddThhmmssZ` in UTC.
fn format_stamp(secs: u64) -> String {
    let secs = secs.min(MAX_STAMP_SECS);
    let (y, m, d) = civil_from_days(secs / DAY);
    let rem = secs % DAY;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / HOUR,
        rem % HOUR / 60,
        rem % 60
    )
}

/// The inverse of [`format_stamp`]; `None` for anything it would not have written.
fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        b[range].iter().try_fold(0u64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if y < 1970 || !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59
    {
        return None;
    }
    let secs = days_from_civil(y, m, d) * DAY + hh * HOUR + mm * 60 + ss;
    // Rejects dates that do not exist (Feb 30), which would not round-trip.
    (format_stamp(secs) == s).then_some(secs)
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a date in or after 1970 (H. Hinnant's algorithm).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

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

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// An I/O error that says what failed on which path, keeping the kind.
fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// The gzip level: with zlib-rs, level 3 compresses JSON log lines about 15:1 at about 5x the
/// speed of level 6 (the `flate2` default), whose files are only 2% smaller. Compression runs
/// on the request server's own CPUs, so its cost per byte is a cost per request.
const GZIP_LEVEL: u32 = 3;

/// The compression actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Codec {
    fn for_compression(compress: Compression) -> Option<Self> {
        match compress {
            Compression::None => None,
            Compression::Gzip => Some(Self::Gzip),
            #[cfg(feature = "zstd")]
            Compression::Zstd => Some(Self::Zstd),
            #[cfg(not(feature = "zstd"))]
            Compression::Zstd => Some(Self::Gzip),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Gzip => ".gz",
            #[cfg(feature = "zstd")]
            Self::Zstd => ".zst",
        }
    }

    /// Compresses all of `input` into `output`.
    fn encode(self, input: &mut impl io::Read, output: File) -> io::Result<File> {
        match self {
            Self::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(output, flate2::Compression::new(GZIP_LEVEL));
                io::copy(input, &mut encoder)?;
                encoder.finish()
            }
            #[cfg(feature = "zstd")]
            Self::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(output, 0)?;
                io::copy(input, &mut encoder)?;
                encoder.finish()
            }
        }
    }
}

/// The background compressor: one thread, started with the first job, that ends when the
/// [`RotatingFile`] is dropped and its queue is done.
#[derive(Default)]
struct Compressor {
    sender: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
}

struct Job {
    source: PathBuf,
    codec: Codec,
    /// The mode of the compressed file.
    mode: u32,
}

/// What the writer and the compression thread share.
#[derive(Default)]
struct Shared {
    /// Jobs queued or running.
    pending: Mutex<usize>,
    idle: Condvar,
    /// The first unreported problem (see [`RotatingFile::take_error`]).
    error: Mutex<Option<io::Error>>,
}

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, usize> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, e: io::Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn done_one(&self) {
        let mut pending = self.lock_pending();
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            self.idle.notify_all();
        }
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut pending = self.lock_pending();
        while *pending > 0 {
            pending = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.idle
                        .wait_timeout(pending, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .idle
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
        true
    }
}

impl Compressor {
    /// Queues `source` for compression; never waits for it.
    fn submit(&mut self, source: PathBuf, codec: Codec, mode: u32) {
        *self.shared.lock_pending() += 1;
        if self.sender.is_none() {
            let (sender, receiver) = mpsc::channel::<Job>();
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || {
                    lower_priority();
                    for job in receiver {
                        if let Err(e) = compress(&job) {
                            shared.record(e);
                        }
                        shared.done_one();
                    }
                });
            match spawned {
                Ok(_) => self.sender = Some(sender),
                Err(e) => {
                    // The archive stays uncompressed; the next rotation tries again.
                    self.shared.record(io::Error::new(
                        e.kind(),
                        format!("cannot start the {THREAD_NAME} thread: {e}"),
                    ));
                    self.shared.done_one();
                    return;
                }
            }
        }
        if let Some(sender) = &self.sender
            && sender
                .send(Job {
                    source,
                    codec,
                    mode,
                })
                .is_err()
        {
            self.sender = None;
            self.shared.record(io::Error::other(format!(
                "the {THREAD_NAME} thread has stopped"
            )));
            self.shared.done_one();
        }
    }
}

/// Makes the calling thread run only when a CPU would otherwise idle (Linux `SCHED_IDLE`; any
/// normal thread that wakes preempts it at once), so compressing an archive never takes CPU from
/// request handling. Best effort: where the policy cannot be set, compression runs at normal
/// priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let _ = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
    }
}

/// Compresses one archive: `<source><ext>.tmp`, fsync, rename to `<source><ext>`, fsync the
/// directory, delete `source`.
fn compress(job: &Job) -> io::Result<()> {
    let target = with_suffix(&job.source, job.codec.suffix());
    let temp = with_suffix(&target, ".tmp");
    let input = match File::open(&job.source) {
        Ok(input) => input,
        // Pruned, or already compressed, before its turn came.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(with_path(
                e,
                "cannot read the rotated log file",
                &job.source,
            ));
        }
    };
    // A leftover temporary file would keep its own mode: start from a new one.
    let _ = fs::remove_file(&temp);
    let written = create_mode(OpenOptions::new().write(true).create_new(true), job.mode)
        .open(&temp)
        .and_then(|output| {
            job.codec
                .encode(&mut BufReader::with_capacity(1 << 16, input), output)
        })
        .and_then(|output| output.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(with_path(
            e,
            "cannot compress the rotated log file into",
            &temp,
        ));
    }
    if fs::symlink_metadata(&job.source).is_err() {
        // Retention deleted the archive meanwhile.
        let _ = fs::remove_file(&temp);
        return Ok(());
    }
    if let Err(e) = fs::rename(&temp, &target) {
        let _ = fs::remove_file(&temp);
        return Err(with_path(e, "cannot rename the compressed log file", &temp));
    }
    if let Some(dir) = target.parent() {
        sync_dir(dir);
    }
    match fs::remove_file(&job.source) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(with_path(
            e,
            "cannot delete the compressed log file",
            &job.source,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io::Read as _;

    use super::*;
    use crate::test::ManualClock;

    /// Makes the next `times` writes write only `keep` bytes, then fail as a full disk does.
    pub(super) struct Fault {
        pub(super) keep: usize,
        pub(super) times: u32,
    }

    impl Fault {
        pub(super) fn write(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
            if self.times == 0 {
                return file.write_all(bytes);
            }
            self.times -= 1;
            file.write_all(&bytes[..self.keep.min(bytes.len())])?;
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ))
        }
    }

    const WAIT: Duration = Duration::from_secs(60);

    fn utc(y: u64, m: u64, d: u64, hh: u64, mm: u64, ss: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(days_from_civil(y, m, d) * DAY + hh * HOUR + mm * 60 + ss)
    }

    fn clock_at(t: SystemTime) -> Arc<ManualClock> {
        Arc::new(ManualClock::new(t))
    }

    fn start() -> Arc<ManualClock> {
        clock_at(utc(2021, 3, 4, 5, 6, 7))
    }

    /// No time rotation, no compression, keep (nearly) everything.
    fn policy(dir: &Path) -> RotationPolicy {
        RotationPolicy::new(dir)
            .with_rotation(Rotation::Never)
            .with_compress(Compression::None)
            .with_max_backups(100_000)
            .with_max_age(Duration::MAX)
    }

    fn open(policy: RotationPolicy, clock: &Arc<ManualClock>) -> RotatingFile {
        RotatingFile::open(policy, clock.clone()).unwrap()
    }

    fn line(i: usize) -> Vec<u8> {
        format!("line {i:04}\n").into_bytes() // 10 bytes
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Archive names of `app.log`, oldest first.
    fn archives(dir: &Path) -> Vec<String> {
        let naming = Naming::new("app.log").unwrap();
        let mut found: Vec<(ArchiveKey, String)> = names(dir)
            .into_iter()
            .filter_map(|n| naming.parse(&n).map(|(key, _)| (key, n)))
            .collect();
        found.sort();
        found.into_iter().map(|(_, n)| n).collect()
    }

    fn read(path: &Path) -> String {
        let name = path.file_name().unwrap().to_str().unwrap();
        let file = File::open(path).unwrap();
        let mut text = String::new();
        if name.ends_with(".gz") {
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .unwrap();
        } else if name.ends_with(".zst") {
            #[cfg(feature = "zstd")]
            {
                text = String::from_utf8(zstd::decode_all(file).unwrap()).unwrap();
            }
            #[cfg(not(feature = "zstd"))]
            panic!("{name}: zstd archive without the zstd feature");
        } else {
            BufReader::new(file).read_to_string(&mut text).unwrap();
        }
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends in a torn line"
        );
        text
    }

    /// Lines of the archives (oldest first), then of the active file.
    fn all_lines(dir: &Path) -> Vec<String> {
        let mut files = archives(dir);
        files.push("app.log".into());
        files
            .iter()
            .filter(|n| !n.ends_with(".tmp"))
            .flat_map(|n| {
                read(&dir.join(n))
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn expected(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("line {i:04}")).collect()
    }

    #[test]
    fn stamps_match_the_calendar_and_round_trip() {
        let mut secs = 0;
        while secs < MAX_STAMP_SECS {
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
            let want = format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            assert_eq!(format_stamp(secs), want);
            assert_eq!(parse_stamp(&want), Some(secs));
            secs += 7_777_777;
        }
        assert_eq!(format_stamp(u64::MAX), "99991231T235959Z");
        assert_eq!(format_stamp(951_782_400), "20000229T000000Z");
        for bad in [
            "20210230T000000Z",
            "20211301T000000Z",
            "19691231T235959Z",
            "2021030T050607Z",
        ] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
        assert_eq!(parse_stamp("20210304T246007Z"), None);
    }

    #[test]
    fn only_this_file_names_archives_are_recognized() {
        let app = Naming::new("app.log").unwrap();
        let key = |secs, n| Some((ArchiveKey { secs, n }, FileKind::Plain));
        let t = parse_stamp("20261128T130405Z").unwrap();
        assert_eq!(app.archive_name(t, 0), "app.20261128T130405Z.log");
        assert_eq!(app.archive_name(t, 2), "app.20261128T130405Z.2.log");
        assert_eq!(app.parse("app.20261128T130405Z.log"), key(t, 0));
        assert_eq!(app.parse("app.20261128T130405Z.12.log"), key(t, 12));
        assert_eq!(
            app.parse("app.20261128T130405Z.log.gz"),
            Some((ArchiveKey { secs: t, n: 0 }, FileKind::Compressed))
        );
        assert_eq!(
            app.parse("app.20261128T130405Z.1.log.zst.tmp"),
            Some((ArchiveKey { secs: t, n: 1 }, FileKind::Temp))
        );
        for foreign in [
            "app.log",
            "app.log.bak",
            "other.log",
            "notes.txt",
            "other.20261128T130405Z.log",
            "app.20261128T130405Z.txt",
            "app.20261128T130405Z.log.tmp",
            "app.20261128T130405Z.01.log",
            "app.20261128T130405Z.0.log",
            "app.20261128T130405Z.x.log",
            "app.access.20261128T130405Z.log",
            "app.20261128T130405Z.log.bz2",
            "app.2026-11-28.log",
        ] {
            assert_eq!(app.parse(foreign), None, "{foreign}");
        }
        let bare = Naming::new("app").unwrap();
        assert_eq!(bare.archive_name(t, 0), "app.20261128T130405Z");
        assert_eq!(bare.archive_name(t, 3), "app.20261128T130405Z.3");
        assert_eq!(bare.parse("app.20261128T130405Z.3"), key(t, 3));
        assert_eq!(bare.parse("app.20261128T130405Z.log"), None);
        let gz = Naming::new("app.gz").unwrap();
        assert_eq!(gz.parse("app.20261128T130405Z.gz"), key(t, 0));
        assert_eq!(
            gz.parse("app.20261128T130405Z.gz.gz"),
            Some((ArchiveKey { secs: t, n: 0 }, FileKind::Compressed))
        );
        for bad in ["", ".", "..", "a/b.log", "/abs.log"] {
            assert!(Naming::new(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn size_rotation_keeps_every_line_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(policy(dir.path()).with_max_size(100), &clock);
        for i in 0..95 {
            file.write_line(&line(i)).unwrap();
        }
        let archives = archives(dir.path());
        assert_eq!(archives.len(), 9, "{archives:?}");
        for (k, name) in archives.iter().enumerate() {
            assert_eq!(
                read(&dir.path().join(name)).lines().collect::<Vec<_>>(),
                expected(k * 10..k * 10 + 10)
            );
        }
        assert_eq!(read(file.path()), expected(90..95).join("\n") + "\n");
        assert_eq!(all_lines(dir.path()), expected(0..95));
    }

    #[test]
    fn batches_rotate_between_runs_and_keep_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(policy(dir.path()).with_max_size(100), &clock);
        let lines: Vec<Vec<u8>> = (0..95).map(line).collect();
        file.write_lines(&lines[..33]).unwrap();
        file.write_lines(&lines[33..]).unwrap();
        assert_eq!(archives(dir.path()).len(), 9);
        assert_eq!(all_lines(dir.path()), expected(0..95));
        for name in archives(dir.path()) {
            assert_eq!(fs::metadata(dir.path().join(name)).unwrap().len(), 100);
        }
    }

    #[test]
    fn a_line_larger_than_max_size_goes_alone_into_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(policy(dir.path()).with_max_size(25), &clock);
        let big = format!("{}\n", "x".repeat(99));
        file.write_line(&line(0)).unwrap();
        file.write_line(big.as_bytes()).unwrap();
        file.write_line(&line(1)).unwrap();
        let archives = archives(dir.path());
        assert_eq!(archives.len(), 2);
        assert_eq!(read(&dir.path().join(&archives[0])), "line 0000\n");
        assert_eq!(read(&dir.path().join(&archives[1])), big);
        assert_eq!(read(file.path()), "line 0001\n");
        // max_size 0: one line per file, no panic.
        let dir = tempfile::tempdir().unwrap();
        let mut file = open(policy(dir.path()).with_max_size(0), &clock);
        for i in 0..3 {
            file.write_line(&line(i)).unwrap();
        }
        assert_eq!(crate::logging::rotate::tests::archives(dir.path()).len(), 2);
        assert_eq!(all_lines(dir.path()), expected(0..3));
    }

    #[test]
    fn hourly_rotation_at_the_utc_hour() {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock_at(utc(2025, 11, 28, 12, 59, 58));
        let mut file = open(policy(dir.path()).with_rotation(Rotation::Hourly), &clock);
        file.write_line(&line(0)).unwrap();
        file.write_line(&line(1)).unwrap();
        clock.advance(Duration::from_secs(1)); // 12:59:59
        file.write_line(&line(2)).unwrap();
        assert!(archives(dir.path()).is_empty());
        clock.advance(Duration::from_secs(6)); // 13:00:05
        file.write_line(&line(3)).unwrap();
        assert_eq!(archives(dir.path()), ["app.20251128T130005Z.log"]);
        assert_eq!(
            read(&dir.path().join("app.20251128T130005Z.log")),
            expected(0..3).join("\n") + "\n"
        );
        clock.advance(Duration::from_secs(59 * 60)); // 13:59:05
        file.write_line(&line(4)).unwrap();
        assert_eq!(archives(dir.path()).len(), 1);
        clock.advance(Duration::from_secs(3 * HOUR)); // 16:59:05, several hours later
        file.write_line(&line(5)).unwrap();
        assert_eq!(
            archives(dir.path()),
            ["app.20251128T130005Z.log", "app.20251128T165905Z.log"]
        );
        assert_eq!(read(file.path()), "line 0005\n");
        assert_eq!(all_lines(dir.path()), expected(0..6));
    }

    #[test]
    fn daily_rotation_at_utc_midnight() {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock_at(utc(2024, 2, 28, 23, 59, 0));
        let mut file = open(policy(dir.path()).with_rotation(Rotation::Daily), &clock);
        file.write_line(&line(0)).unwrap();
        clock.advance(Duration::from_secs(30 * 60)); // 2024-02-29 00:29
        file.write_line(&line(1)).unwrap();
        clock.advance(Duration::from_secs(23 * HOUR)); // 2024-02-29 23:29, same day
        file.write_line(&line(2)).unwrap();
        clock.advance(Duration::from_secs(HOUR)); // 2024-03-01 00:29
        file.write_line(&line(3)).unwrap();
        assert_eq!(
            archives(dir.path()),
            ["app.20240229T002900Z.log", "app.20240301T002900Z.log"]
        );
        assert_eq!(
            read(&dir.path().join("app.20240301T002900Z.log")),
            "line 0001\nline 0002\n"
        );
        assert_eq!(all_lines(dir.path()), expected(0..4));
    }

    #[test]
    fn size_and_time_rotate_together() {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock_at(utc(2025, 11, 28, 12, 0, 0));
        let mut file = open(
            policy(dir.path())
                .with_rotation(Rotation::Hourly)
                .with_max_size(50),
            &clock,
        );
        for i in 0..12 {
            file.write_line(&line(i)).unwrap(); // size: archives of 5 lines at 12:00
        }
        assert_eq!(archives(dir.path()).len(), 2);
        clock.advance(Duration::from_secs(HOUR)); // the hour turns with 2 lines in the file
        for i in 12..20 {
            file.write_line(&line(i)).unwrap();
        }
        let archives = archives(dir.path());
        assert_eq!(archives.len(), 4, "{archives:?}");
        assert_eq!(
            read(&dir.path().join(&archives[2])),
            "line 0010\nline 0011\n"
        );
        assert_eq!(all_lines(dir.path()), expected(0..20));
    }

    #[test]
    fn a_restart_appends_to_the_active_file() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let p = policy(dir.path()).with_rotation(Rotation::Daily);
        let mut file = open(p.clone(), &clock);
        for i in 0..3 {
            file.write_line(&line(i)).unwrap();
        }
        drop(file);
        clock.advance(Duration::from_secs(60));
        let mut file = open(p, &clock);
        for i in 3..5 {
            file.write_line(&line(i)).unwrap();
        }
        assert!(archives(dir.path()).is_empty());
        assert_eq!(read(file.path()), expected(0..5).join("\n") + "\n");
    }

    #[test]
    fn open_rotates_a_file_of_an_earlier_period_or_at_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let p = policy(dir.path())
            .with_rotation(Rotation::Daily)
            .with_max_size(1_000);
        fs::write(dir.path().join("app.log"), "yesterday\n").unwrap();
        File::options()
            .append(true)
            .open(dir.path().join("app.log"))
            .unwrap()
            .set_modified(utc(2021, 3, 3, 22, 0, 0))
            .unwrap();
        let mut file = open(p.clone(), &clock);
        assert_eq!(archives(dir.path()), ["app.20210304T050607Z.log"]);
        file.write_line(b"today\n").unwrap();
        drop(file);
        // An active file already larger than max_size (no panic, no truncation).
        let huge = "y".repeat(5_000) + "\n";
        fs::write(dir.path().join("app.log"), &huge).unwrap();
        let mut file = open(p, &clock);
        assert_eq!(
            archives(dir.path()),
            ["app.20210304T050607Z.log", "app.20210304T050607Z.1.log"]
        );
        assert_eq!(read(&dir.path().join("app.20210304T050607Z.1.log")), huge);
        file.write_line(b"after\n").unwrap();
        assert_eq!(read(file.path()), "after\n");
    }

    #[test]
    fn max_backups_holds_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let p = policy(dir.path()).with_max_size(20).with_max_backups(3);
        let mut file = open(p.clone(), &clock);
        for i in 0..20 {
            file.write_line(&line(i)).unwrap();
            clock.advance(Duration::from_secs(1));
        }
        let before = archives(dir.path());
        assert_eq!(before.len(), 3);
        // The newest are kept: 14..=17 (the active file holds 18 and 19).
        assert_eq!(all_lines(dir.path()), expected(12..20));
        drop(file);
        // The restart rotates the full active file: still exactly 3.
        let mut file = open(p.clone(), &clock);
        assert_eq!(archives(dir.path()).len(), 3);
        assert_eq!(all_lines(dir.path()), expected(14..20));
        file.write_line(&line(20)).unwrap();
        drop(file);
        let file = open(p, &clock);
        drop(file);
        assert_eq!(archives(dir.path()).len(), 3);
    }

    #[test]
    fn max_backups_zero_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(
            policy(dir.path()).with_max_size(20).with_max_backups(0),
            &clock,
        );
        for i in 0..10 {
            file.write_line(&line(i)).unwrap();
        }
        assert!(archives(dir.path()).is_empty());
        assert_eq!(read(file.path()), expected(8..10).join("\n") + "\n");
    }

    #[test]
    fn max_age_prunes_by_the_time_in_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let p = policy(dir.path())
            .with_max_size(10)
            .with_max_age(Duration::from_secs(DAY));
        let mut file = open(p.clone(), &clock);
        file.write_line(&line(0)).unwrap();
        file.write_line(&line(1)).unwrap(); // archive at day 0
        clock.advance(Duration::from_secs(HOUR * 20));
        file.write_line(&line(2)).unwrap(); // archive at day 0 + 20 h
        assert_eq!(archives(dir.path()).len(), 2);
        clock.advance(Duration::from_secs(HOUR * 5));
        file.write_line(&line(3)).unwrap(); // 25 h: the first archive is too old
        assert_eq!(all_lines(dir.path()), expected(1..4));
        drop(file);
        // At open, too: the archives from before are too old now; the full active file is
        // rotated and kept.
        clock.advance(Duration::from_secs(DAY * 2));
        let file = open(p, &clock);
        assert_eq!(archives(dir.path()), ["app.20210307T060607Z.log"]);
        assert_eq!(all_lines(dir.path()), expected(3..4));
        drop(file);
    }

    #[test]
    fn foreign_files_are_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = [
            "other.log",
            "app.log.bak",
            "notes.txt",
            "other.20200101T000000Z.log",
            "app.20200101T000000Z.txt",
            "app.x.20200101T000000Z.log",
            "app.20200101T000000Z.log.old",
        ];
        for name in foreign {
            fs::write(dir.path().join(name), name).unwrap();
        }
        fs::create_dir(dir.path().join("app.20200101T000000Z.log.gz")).unwrap(); // a directory
        let clock = start();
        let mut file = open(
            policy(dir.path())
                .with_max_size(10)
                .with_max_backups(0)
                .with_max_age(Duration::ZERO),
            &clock,
        );
        for i in 0..5 {
            file.write_line(&line(i)).unwrap();
        }
        for name in foreign {
            assert_eq!(fs::read_to_string(dir.path().join(name)).unwrap(), name);
        }
        assert!(dir.path().join("app.20200101T000000Z.log.gz").is_dir());
        assert!(archives(dir.path()).iter().all(|n| n.ends_with(".gz")));
    }

    #[test]
    fn gzip_archives_decompress_to_the_original_lines() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(
            policy(dir.path())
                .with_max_size(100)
                .with_compress(Compression::Gzip),
            &clock,
        );
        for i in 0..95 {
            file.write_line(&line(i)).unwrap();
        }
        assert!(
            file.wait_for_compression(WAIT),
            "backlog {}",
            file.compression_backlog()
        );
        assert_eq!(file.compression_backlog(), 0);
        let archives = archives(dir.path());
        assert_eq!(archives.len(), 9);
        assert!(
            archives.iter().all(|n| n.ends_with(".log.gz")),
            "{archives:?}"
        );
        assert_eq!(all_lines(dir.path()), expected(0..95));
        assert!(file.take_error().is_none());
    }

    /// The process umask (Linux: from `/proc/self/status`), which narrows every created mode.
    #[cfg(unix)]
    fn umask() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }

    #[cfg(unix)]
    fn modes(dir: &Path) -> Vec<(String, u32)> {
        use std::os::unix::fs::PermissionsExt;
        names(dir)
            .into_iter()
            .map(|n| {
                let mode = fs::metadata(dir.join(&n)).unwrap().permissions().mode() & 0o7777;
                (n, mode)
            })
            .collect()
    }

    #[cfg(unix)]
    #[test]
    fn log_files_are_created_with_the_file_mode_active_rotated_and_compressed() {
        for (mode, compress) in [
            (None, Compression::Gzip),
            (Some(0o600), Compression::Gzip),
            (Some(0o644), Compression::None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let clock = start();
            let mut policy = policy(dir.path())
                .with_max_size(100)
                .with_compress(compress);
            if let Some(mode) = mode {
                policy = policy.with_file_mode(mode);
            }
            let want = mode.unwrap_or(0o640) & !umask();
            let mut file = open(policy, &clock);
            for i in 0..35 {
                file.write_line(&line(i)).unwrap();
            }
            assert!(file.wait_for_compression(WAIT));
            let found = modes(dir.path());
            assert_eq!(found.len(), 4, "{found:?}");
            for (name, got) in &found {
                assert_eq!(*got, want, "{name} of {found:?} (mode {mode:?})");
            }
            if compress == Compression::Gzip {
                assert!(found.iter().any(|(n, _)| n.ends_with(".gz")), "{found:?}");
            }
        }
    }

    #[test]
    fn zstd_without_the_feature_falls_back_to_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(
            policy(dir.path())
                .with_max_size(10)
                .with_compress(Compression::Zstd),
            &clock,
        );
        for i in 0..3 {
            file.write_line(&line(i)).unwrap();
        }
        assert!(file.wait_for_compression(WAIT));
        let suffix = if cfg!(feature = "zstd") {
            ".log.zst"
        } else {
            ".log.gz"
        };
        let archives = archives(dir.path());
        assert_eq!(archives.len(), 2);
        assert!(archives.iter().all(|n| n.ends_with(suffix)), "{archives:?}");
        assert_eq!(all_lines(dir.path()), expected(0..3));
    }

    #[test]
    fn many_rotations_in_one_second_get_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let p = policy(dir.path()).with_max_size(10);
        let mut file = open(p.clone(), &clock);
        for i in 0..21 {
            file.write_line(&line(i)).unwrap();
        }
        drop(file);
        // A restart within the same second continues the counter.
        let mut file = open(p.with_max_size(0), &clock);
        file.write_line(&line(21)).unwrap();
        let archives = archives(dir.path());
        assert_eq!(archives.len(), 21);
        assert_eq!(archives.iter().collect::<HashSet<_>>().len(), 21);
        assert_eq!(archives[0], "app.20210304T050607Z.log");
        assert_eq!(archives[1], "app.20210304T050607Z.1.log");
        assert_eq!(archives[20], "app.20210304T050607Z.20.log");
        assert_eq!(all_lines(dir.path()), expected(0..22));
    }

    #[test]
    fn a_clock_stepped_backwards_never_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock_at(utc(2025, 11, 28, 13, 30, 0));
        let p = policy(dir.path()).with_rotation(Rotation::Hourly);
        let mut file = open(p.clone(), &clock);
        file.write_line(&line(0)).unwrap();
        clock.set(utc(2025, 11, 28, 11, 0, 0)); // two hours back
        file.write_line(&line(1)).unwrap();
        drop(file);
        let mut file = open(p, &clock);
        file.write_line(&line(2)).unwrap();
        clock.set(utc(1960, 1, 1, 0, 0, 0).min(UNIX_EPOCH)); // before the epoch
        file.write_line(&line(3)).unwrap();
        assert!(archives(dir.path()).is_empty());
        assert_eq!(read(file.path()), expected(0..4).join("\n") + "\n");
        // Rotation resumes once the clock passes the file's hour again.
        clock.set(utc(2025, 11, 28, 14, 0, 1));
        file.write_line(&line(4)).unwrap();
        assert_eq!(archives(dir.path()).len(), 1);
        assert_eq!(all_lines(dir.path()), expected(0..5));
    }

    #[test]
    fn leftovers_of_a_crash_are_cleaned_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Interrupted compression: the archive and a partial temp file.
        fs::write(d.join("app.20210304T040000Z.log"), "a\nb\n").unwrap();
        fs::write(d.join("app.20210304T040000Z.log.gz.tmp"), "partial").unwrap();
        // Compressed, but the source was not deleted yet.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"c\n").unwrap();
        fs::write(d.join("app.20210304T041000Z.log.gz"), gz.finish().unwrap()).unwrap();
        fs::write(d.join("app.20210304T041000Z.log"), "c\n").unwrap();
        // Rotated, never compressed.
        fs::write(d.join("app.20210304T042000Z.1.log"), "d\n").unwrap();
        // Someone else's temp file.
        fs::write(d.join("other.log.gz.tmp"), "not ours").unwrap();
        let clock = start();
        let file = open(policy(d).with_compress(Compression::Gzip), &clock);
        assert!(file.wait_for_compression(WAIT));
        assert_eq!(
            names(d),
            [
                "app.20210304T040000Z.log.gz",
                "app.20210304T041000Z.log.gz",
                "app.20210304T042000Z.1.log.gz",
                "app.log",
                "other.log.gz.tmp",
            ]
        );
        assert_eq!(read(&d.join("app.20210304T040000Z.log.gz")), "a\nb\n");
        assert_eq!(read(&d.join("app.20210304T042000Z.1.log.gz")), "d\n");
        assert!(file.take_error().is_none());
    }

    #[test]
    fn a_failed_write_leaves_no_torn_line_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(policy(dir.path()).with_max_size(1_000), &clock);
        file.write_line(&line(0)).unwrap();
        file.fault = Some(Fault { keep: 4, times: 3 });
        let e = file.write_line(&line(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(read(file.path()), "line 0000\n");
        let lines: Vec<Vec<u8>> = (2..6).map(line).collect();
        let e = file.write_lines(&lines).unwrap_err();
        assert_eq!((e.written(), e.kind()), (0, io::ErrorKind::StorageFull));
        assert!(e.to_string().contains("0 line"), "{e}");
        file.write_line(&line(6)).unwrap_err();
        // Space is back: writing resumes by itself, after the last whole line.
        file.write_lines(&lines).unwrap();
        file.write_line(&line(7)).unwrap();
        assert_eq!(
            read(file.path()),
            [
                "line 0000",
                "line 0002",
                "line 0003",
                "line 0004",
                "line 0005",
                "line 0007",
                ""
            ]
            .join("\n")
        );
        assert!(file.fault.as_ref().is_some_and(|f| f.times == 0));
    }

    #[test]
    fn a_batch_that_fails_part_way_reports_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(policy(dir.path()).with_max_size(30), &clock);
        let lines: Vec<Vec<u8>> = (0..7).map(line).collect();
        // The first run (3 lines) fits; the second run after the rotation fails.
        file.write_line(b"").unwrap();
        file.write_lines(&lines[..3]).unwrap();
        file.fault = Some(Fault { keep: 15, times: 1 });
        let e = file.write_lines(&lines[3..]).unwrap_err();
        assert_eq!(e.written(), 0);
        file.write_lines(&lines[3..]).unwrap();
        assert_eq!(all_lines(dir.path()), expected(0..7));
    }

    #[test]
    fn a_directory_replaced_by_a_file_fails_without_panic_then_recovers() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let clock = start();
        let mut file = open(policy(&dir).with_max_size(20), &clock);
        file.write_line(&line(0)).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        fs::write(&dir, "not a directory").unwrap();
        for i in 1..5 {
            assert!(file.write_line(&line(i)).is_err());
        }
        assert!(file.sync().is_ok());
        fs::remove_file(&dir).unwrap();
        for i in 5..9 {
            file.write_line(&line(i)).unwrap();
        }
        assert_eq!(all_lines(&dir), expected(5..9));
    }

    #[test]
    fn an_active_file_deleted_or_moved_from_outside_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(policy(dir.path()), &clock);
        file.write_line(&line(0)).unwrap();
        fs::remove_file(file.path()).unwrap();
        file.write_line(&line(1)).unwrap();
        assert_eq!(read(file.path()), "line 0001\n");
        // logrotate's `create`: moved away, a new empty file in its place.
        fs::rename(file.path(), dir.path().join("app.log.1")).unwrap();
        fs::write(file.path(), "").unwrap();
        file.write_line(&line(2)).unwrap();
        assert_eq!(read(file.path()), "line 0002\n");
        assert_eq!(read(&dir.path().join("app.log.1")), "line 0001\n");
        // logrotate's `copytruncate`: appends continue at the new end, no hole.
        File::options()
            .write(true)
            .open(file.path())
            .unwrap()
            .set_len(0)
            .unwrap();
        file.write_line(&line(3)).unwrap();
        assert_eq!(read(file.path()), "line 0003\n");
    }

    #[test]
    fn open_errors_name_the_path() {
        let root = tempfile::tempdir().unwrap();
        let clock = start();
        let blocker = root.path().join("blocker");
        fs::write(&blocker, "").unwrap();
        let e = RotatingFile::open(policy(&blocker), clock.clone()).unwrap_err();
        assert!(e.to_string().contains("blocker"), "{e}");
        fs::create_dir(root.path().join("app.log")).unwrap();
        let e = RotatingFile::open(policy(root.path()), clock.clone()).unwrap_err();
        assert!(e.to_string().contains("app.log"), "{e}");
        for name in ["", "a/b.log", ".."] {
            let e = RotatingFile::open(policy(root.path()).with_file_name(name), clock.clone())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn a_file_name_without_extension_gets_archives_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let mut file = open(
            policy(dir.path())
                .with_file_name("server")
                .with_max_size(10),
            &clock,
        );
        for i in 0..3 {
            file.write_line(&line(i)).unwrap();
        }
        assert_eq!(
            names(dir.path()),
            [
                "server",
                "server.20210304T050607Z",
                "server.20210304T050607Z.1"
            ]
        );
    }

    #[test]
    fn from_config_takes_the_logging_section() {
        let config = LoggingConfig {
            file_name: "api.log".into(),
            max_backups: 3,
            ..LoggingConfig::default()
        };
        let p = RotationPolicy::from_config(&config);
        assert_eq!(p.file_name(), "api.log");
        assert_eq!(p.max_backups(), 3);
        assert_eq!(p.dir(), Path::new("logs"));
        let defaults = RotationPolicy::from_config(&LoggingConfig::default());
        assert_eq!(defaults, RotationPolicy::new("logs"));
    }

    #[test]
    fn eight_threads_through_50_rotations_with_gzip_lose_nothing() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 20_000;
        let dir = tempfile::tempdir().unwrap();
        let clock = start();
        let file = open(
            policy(dir.path())
                .with_max_size(128 * 1024)
                .with_compress(Compression::Gzip),
            &clock,
        );
        let file = Mutex::new(file);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let file = &file;
                let clock = &clock;
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        let line =
                            format!("t={t} i={i:05} {}\n", "p".repeat(20 + (i * 7 + t) % 40));
                        let mut file = file.lock().unwrap();
                        if i % 5_000 == 0 {
                            clock.advance(Duration::from_millis(300));
                        }
                        file.write_line(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        let file = file.into_inner().unwrap();
        assert!(file.wait_for_compression(Duration::from_secs(300)));
        assert!(file.take_error().is_none());
        let archives = archives(dir.path());
        assert!(archives.len() >= 50, "only {} rotations", archives.len());
        assert!(archives.iter().all(|n| n.ends_with(".gz")));
        let mut seen = HashSet::new();
        let mut next = [0usize; THREADS];
        for l in all_lines(dir.path()) {
            let mut parts = l.split(' ');
            let t: usize = parts
                .next()
                .unwrap()
                .strip_prefix("t=")
                .unwrap()
                .parse()
                .unwrap();
            let i: usize = parts
                .next()
                .unwrap()
                .strip_prefix("i=")
                .unwrap()
                .parse()
                .unwrap();
            let pad = parts.next().unwrap();
            assert!(parts.next().is_none(), "{l}");
            assert_eq!(pad, "p".repeat(20 + (i * 7 + t) % 40), "{l}");
            assert!(seen.insert((t, i)), "duplicate {l}");
            // Files in rotation order give each thread's lines in order.
            assert_eq!(next[t], i, "out of order: {l}");
            next[t] += 1;
        }
        assert_eq!(seen.len(), THREADS * PER_THREAD);
    }
}
