//! Archive names, `<stem>.<yyyymmddThhmmssZ>[.<n>][.<ext>]`, and the UTC time in them, written
//! and read through the `time` crate.
//!
//! The names are those every earlier version wrote, byte for byte, so retention keeps finding
//! archives made before an upgrade.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use time::UtcDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, utc_datetime};

use super::with_suffix;

/// The time in an archive name: `yyyymmddThhmmssZ` in UTC, the year in exactly four digits.
const STAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year range:standard][month][day]T[hour][minute][second]Z");

/// The Unix time of the last second a stamp can show, 9999-12-31T23:59:59Z; later rotations are
/// stamped with it.
const LAST_STAMP: u64 = utc_datetime!(9999-12-31 23:59:59)
    .unix_timestamp()
    .cast_unsigned();

/// Suffixes that make an archive name taken (the archive itself, compressed, or being compressed).
const VARIANTS: [&str; 5] = ["", ".gz", ".zst", ".gz.tmp", ".zst.tmp"];

/// Orders archives: by the time in the name, then the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ArchiveKey {
    /// The time in the name, in seconds since the Unix epoch.
    pub(super) secs: u64,
    /// The counter: `0` when the name has none.
    pub(super) n: u64,
}

/// What an archive file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileKind {
    /// The rotated file as it was written.
    Plain,
    /// Its compressed copy (`.gz`, `.zst`).
    Compressed,
    /// A compression in progress, or cut short (`.gz.tmp`, `.zst.tmp`).
    Temp,
}

/// Archive names of one `file_name`: `<stem>.<stamp>[.<n>][.<ext>]`.
#[derive(Debug, Clone)]
pub(super) struct Naming {
    stem: String,
    ext: Option<String>,
}

impl Naming {
    /// `None` unless `file_name` is a plain file name.
    pub(super) fn new(file_name: &str) -> Option<Self> {
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

    /// The archive name of a rotation `secs` after the epoch, with counter `n` (none when `0`).
    pub(super) fn archive_name(&self, secs: u64, n: u64) -> Result<String, time::Error> {
        let mut name = format!("{}.{}", self.stem, format_stamp(secs)?);
        if n > 0 {
            name.push_str(&format!(".{n}"));
        }
        if let Some(ext) = &self.ext {
            name.push('.');
            name.push_str(ext);
        }
        Ok(name)
    }

    /// The first archive name in `dir` free for a rotation at `now`: after `last` (the writer's
    /// previous archive) when that was in the same second, and with no variant on disk, so names
    /// never collide (several rotations in one second, a restart).
    pub(super) fn next_free(
        &self,
        dir: &Path,
        now: SystemTime,
        last: Option<ArchiveKey>,
    ) -> io::Result<(ArchiveKey, PathBuf)> {
        let secs = unix_secs(now).min(LAST_STAMP);
        let mut n = match last {
            Some(last) if last.secs == secs => last.n.saturating_add(1),
            _ => 0,
        };
        loop {
            let name = self.archive_name(secs, n).map_err(|e| {
                io::Error::other(format!("cannot name an archive in {}: {e}", dir.display()))
            })?;
            let path = dir.join(name);
            let taken = VARIANTS
                .iter()
                .any(|suffix| fs::symlink_metadata(with_suffix(&path, suffix)).is_ok());
            if !taken || n == u64::MAX {
                return Ok((ArchiveKey { secs, n }, path));
            }
            n += 1;
        }
    }

    /// Recognizes this file name's archives (uncompressed, compressed, and `.tmp`), nothing else.
    pub(super) fn parse(&self, name: &str) -> Option<(ArchiveKey, FileKind)> {
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
pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The stamp of a time `secs` after the epoch, `yyyymmddThhmmssZ` in UTC; a time after the last
/// stamp (the end of 9999) shows the last stamp.
fn format_stamp(secs: u64) -> Result<String, time::Error> {
    let at = UtcDateTime::from_unix_timestamp(secs.min(LAST_STAMP).cast_signed())?;
    Ok(at.format(STAMP)?)
}

/// The inverse of [`format_stamp`]; `None` for anything it would not have written (a date that
/// does not exist, a time before the epoch, a signed year).
fn parse_stamp(s: &str) -> Option<u64> {
    let at = UtcDateTime::parse(s, STAMP).ok()?;
    let secs = u64::try_from(at.unix_timestamp()).ok()?;
    // `time` also reads a year with a sign (`+2021…`): only the form written above is a stamp.
    (format_stamp(secs).ok()? == s).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_match_the_calendar_and_round_trip() {
        let mut secs = 0;
        while secs < LAST_STAMP {
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
            assert_eq!(format_stamp(secs).unwrap(), want);
            assert_eq!(parse_stamp(&want), Some(secs));
            secs += 7_777_777;
        }
        assert_eq!(format_stamp(u64::MAX).unwrap(), "99991231T235959Z");
        assert_eq!(format_stamp(951_782_400).unwrap(), "20000229T000000Z");
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
        assert_eq!(app.archive_name(t, 0).unwrap(), "app.20261128T130405Z.log");
        assert_eq!(
            app.archive_name(t, 2).unwrap(),
            "app.20261128T130405Z.2.log"
        );
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
        assert_eq!(bare.archive_name(t, 0).unwrap(), "app.20261128T130405Z");
        assert_eq!(bare.archive_name(t, 3).unwrap(), "app.20261128T130405Z.3");
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

    /// Names written by the hand-written calendar this module had before it used `time`: the same
    /// times must give the same names, and those names must still be read.
    #[test]
    fn names_are_those_of_earlier_versions() {
        let written = [
            (0, "19700101T000000Z"),
            (59, "19700101T000059Z"),
            (86_399, "19700101T235959Z"),
            (86_400, "19700102T000000Z"),
            (951_782_399, "20000228T235959Z"),
            (951_782_400, "20000229T000000Z"),
            (951_868_800, "20000301T000000Z"),
            (1_614_834_367, "20210304T050607Z"),
            (1_709_164_800, "20240229T000000Z"),
            (1_709_251_199, "20240229T235959Z"),
            (4_107_542_399, "21000228T235959Z"),
            (4_107_542_400, "21000301T000000Z"),
            (253_402_300_799, "99991231T235959Z"),
        ];
        for (secs, stamp) in written {
            assert_eq!(format_stamp(secs).unwrap(), stamp, "{secs}");
            assert_eq!(parse_stamp(stamp), Some(secs), "{stamp}");
        }
        // Later times show the last stamp, as before.
        assert_eq!(format_stamp(253_402_300_800).unwrap(), "99991231T235959Z");
        let app = Naming::new("app.log").unwrap();
        assert_eq!(
            app.archive_name(1_614_834_367, 0).unwrap(),
            "app.20210304T050607Z.log"
        );
        assert_eq!(
            app.archive_name(1_582_934_399, 3).unwrap(),
            "app.20200228T235959Z.3.log"
        );
        for (name, secs, n, kind) in [
            (
                "app.20210304T050607Z.log",
                1_614_834_367,
                0,
                FileKind::Plain,
            ),
            (
                "app.20200228T235959Z.3.log",
                1_582_934_399,
                3,
                FileKind::Plain,
            ),
            (
                "app.20000229T000000Z.log.gz",
                951_782_400,
                0,
                FileKind::Compressed,
            ),
            (
                "app.21000301T000000Z.2.log.zst.tmp",
                4_107_542_400,
                2,
                FileKind::Temp,
            ),
        ] {
            assert_eq!(
                app.parse(name),
                Some((ArchiveKey { secs, n }, kind)),
                "{name}"
            );
        }
        // What `time` would also read, but no version ever wrote.
        for foreign in ["app.+20210304T050607Z.log", "app.20210304T050607z.log"] {
            assert_eq!(app.parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_next_free_name_skips_every_variant_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let app = Naming::new("app.log").unwrap();
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_614_834_367);
        let (key, path) = app.next_free(dir.path(), at, None).unwrap();
        assert_eq!((key.secs, key.n), (1_614_834_367, 0));
        assert_eq!(path, dir.path().join("app.20210304T050607Z.log"));
        for taken in [
            "app.20210304T050607Z.log.gz",
            "app.20210304T050607Z.1.log.zst.tmp",
            "app.20210304T050607Z.2.log",
        ] {
            fs::write(dir.path().join(taken), "").unwrap();
        }
        let (key, path) = app.next_free(dir.path(), at, None).unwrap();
        assert_eq!(key.n, 3);
        assert_eq!(path, dir.path().join("app.20210304T050607Z.3.log"));
        // After the writer's own archive of the same second, even when that one is gone.
        let last = Some(ArchiveKey {
            secs: key.secs,
            n: 7,
        });
        assert_eq!(app.next_free(dir.path(), at, last).unwrap().0.n, 8);
        // Before the epoch, and after the last stamp.
        let (key, _) = app
            .next_free(
                dir.path(),
                UNIX_EPOCH - std::time::Duration::from_secs(9),
                None,
            )
            .unwrap();
        assert_eq!(key.secs, 0);
        let far = UNIX_EPOCH + std::time::Duration::from_secs(u64::MAX / 4);
        let (key, path) = app.next_free(dir.path(), far, None).unwrap();
        assert_eq!(key.secs, LAST_STAMP);
        assert_eq!(path, dir.path().join("app.99991231T235959Z.log"));
    }
}
