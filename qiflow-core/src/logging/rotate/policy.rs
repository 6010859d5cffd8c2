//! [`RotationPolicy`]: where a [`RotatingFile`](super::RotatingFile) writes, when it rotates,
//! what it keeps, and how it compresses; and the rotation period a time falls in.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::naming::unix_secs;
use crate::config::{Compression, DEFAULT_LOG_FILE_MODE, LoggingConfig, Rotation};

/// Seconds in a UTC hour. Unix time counts exactly 86,400 seconds a day (no leap seconds), so the
/// UTC hour or day of a time is a division of its Unix time.
pub(super) const HOUR: u64 = 3_600;
/// Seconds in a UTC day.
pub(super) const DAY: u64 = 86_400;

/// Where a [`RotatingFile`](super::RotatingFile) writes, when it rotates, what it keeps, and how
/// it compresses.
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
    ///
    /// A time before the Unix epoch falls in the epoch's period.
    pub(super) fn period(&self, t: SystemTime) -> u64 {
        match self.rotation {
            Rotation::Never => 0,
            Rotation::Hourly => unix_secs(t) / HOUR,
            Rotation::Daily => unix_secs(t) / DAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
