//! The compression of archives: one background thread per [`RotatingFile`](super::RotatingFile),
//! named `qiflow-log-compress` and started with the first archive, that gzips (or, with the crate
//! feature `zstd`, zstd-compresses) each archive under `SCHED_IDLE` on Linux, so writers never
//! wait for it and it never takes CPU from requests.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use super::{sync_dir, with_path, with_suffix};
use crate::config::Compression;
use crate::files::create_mode;

/// The name of the compression thread.
const THREAD_NAME: &str = "qiflow-log-compress";

/// The gzip level: with zlib-rs, level 3 compresses JSON log lines about 15:1 at about 5x the
/// speed of level 6 (the `flate2` default), whose files are only 2% smaller. Compression runs
/// on the request server's own CPUs, so its cost per byte is a cost per request.
const GZIP_LEVEL: u32 = 3;

/// The compression actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    Gzip,
    #[cfg(feature = "zstd")]
    Zstd,
}

impl Codec {
    /// The codec of `compress`: `None` for none, gzip for zstd without the crate feature `zstd`.
    pub(super) fn for_compression(compress: Compression) -> Option<Self> {
        match compress {
            Compression::None => None,
            Compression::Gzip => Some(Self::Gzip),
            #[cfg(feature = "zstd")]
            Compression::Zstd => Some(Self::Zstd),
            #[cfg(not(feature = "zstd"))]
            Compression::Zstd => Some(Self::Gzip),
        }
    }

    /// The suffix of a compressed archive.
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
/// [`RotatingFile`](super::RotatingFile) is dropped and its queue is done.
#[derive(Default)]
pub(super) struct Compressor {
    sender: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
}

/// One archive to compress.
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
    /// The first unreported problem (see
    /// [`RotatingFile::take_error`](super::RotatingFile::take_error)).
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
    /// Queues `source` for compression into a file created with `mode`; never waits for it.
    pub(super) fn submit(&mut self, source: PathBuf, codec: Codec, mode: u32) {
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

    /// Archives queued or in compression.
    pub(super) fn backlog(&self) -> usize {
        *self.shared.lock_pending()
    }

    /// Waits until the backlog is empty, at most `timeout`; `true` when it is.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        self.shared.wait_idle(timeout)
    }

    /// Keeps `e` unless an earlier problem is still unreported: the writer's problems that lost
    /// no line and the compression thread's share one slot.
    pub(super) fn record(&self, e: io::Error) {
        self.shared.record(e);
    }

    /// The first problem since the last call.
    pub(super) fn take_error(&self) -> Option<io::Error> {
        self.shared
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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
    use super::super::tests::{WAIT, all_lines, archives, expected, line, open, policy, start};
    use super::*;

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
}
