//! Retention: finding the archives of one file name, keeping `max_backups` of them and none older
//! than `max_age`, and cleaning what a crash left.
//!
//! Only files named as this file name's archives are ever deleted (see [`Naming::parse`]): never
//! the active file, never other files in the directory.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::RotationPolicy;
use super::naming::{ArchiveKey, FileKind, Naming, unix_secs};
use super::with_path;

/// The files of one archive: uncompressed, compressed, and compressions in progress.
#[derive(Debug, Default)]
pub(super) struct ArchiveFiles {
    plain: Option<PathBuf>,
    compressed: Vec<PathBuf>,
    temps: Vec<PathBuf>,
}

impl ArchiveFiles {
    /// The uncompressed archive when it has no compressed copy: what compression has yet to do.
    pub(super) fn uncompressed(self) -> Option<PathBuf> {
        self.plain.filter(|_| self.compressed.is_empty())
    }
}

/// Removes what a crash left behind: `*.tmp` files, and uncompressed archives whose compressed
/// copy is complete (it is renamed into place only once durable). Problems go to `report`.
pub(super) fn recover(dir: &Path, naming: &Naming, report: &mut dyn FnMut(io::Error)) {
    let archives = match scan(dir, naming) {
        Ok(archives) => archives,
        Err(e) => return report(e),
    };
    for archive in archives.values() {
        for temp in &archive.temps {
            remove(temp, report);
        }
        if let Some(plain) = &archive.plain
            && !archive.compressed.is_empty()
        {
            remove(plain, report);
        }
    }
}

/// Applies `max_backups` and `max_age` of `policy` at `now`: keeps the newest archives (by the
/// time in their name, then the counter) and deletes the others and those older than `max_age`
/// (by the time in their name). Returns the archives kept; problems go to `report`.
pub(super) fn prune(
    policy: &RotationPolicy,
    naming: &Naming,
    now: SystemTime,
    report: &mut dyn FnMut(io::Error),
) -> Vec<ArchiveFiles> {
    let archives = match scan(policy.dir(), naming) {
        Ok(archives) => archives,
        Err(e) => {
            report(e);
            return Vec::new();
        }
    };
    let now = unix_secs(now);
    let keep = usize::try_from(policy.max_backups()).unwrap_or(usize::MAX);
    let mut kept = Vec::new();
    for (rank, (key, archive)) in archives.into_iter().rev().enumerate() {
        let age = Duration::from_secs(now.saturating_sub(key.secs));
        if rank >= keep || age > policy.max_age() {
            // In-progress `.tmp` files are left to the compressor, which drops them when it finds
            // its source gone.
            for path in archive.plain.iter().chain(&archive.compressed) {
                remove(path, report);
            }
        } else {
            kept.push(archive);
        }
    }
    kept
}

/// The archives of this file name in `dir`, oldest first.
fn scan(dir: &Path, naming: &Naming) -> io::Result<BTreeMap<ArchiveKey, ArchiveFiles>> {
    let entries =
        fs::read_dir(dir).map_err(|e| with_path(e, "cannot list the log directory", dir))?;
    let mut archives: BTreeMap<ArchiveKey, ArchiveFiles> = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((key, kind)) = naming.parse(name) else {
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

/// Deletes `path`; one already gone is no problem.
fn remove(path: &Path, report: &mut dyn FnMut(io::Error)) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => report(with_path(e, "cannot delete the old log file", path)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::super::policy::{DAY, HOUR};
    use super::super::tests::{
        WAIT, all_lines, archives, expected, line, names, open, policy, read, start,
    };
    use super::*;
    use crate::config::Compression;

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

    /// Archives named by earlier versions (these names are literal, not made by the code under
    /// test) are found: counted by `max_backups`, aged by `max_age`, and deleted.
    #[test]
    fn archives_named_by_earlier_versions_are_found_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let written = [
            "app.20000229T000000Z.log.gz",  // a leap day
            "app.20200228T235959Z.3.log",   // with a counter
            "app.20210303T050607Z.log.zst", // a day old
            "app.20210304T000000Z.7.log",   // five hours old
        ];
        for name in written {
            fs::write(d.join(name), name).unwrap();
        }
        let clock = start(); // 2021-03-04T05:06:07Z
        let file = open(
            policy(d)
                .with_max_backups(2)
                .with_max_age(Duration::from_secs(400 * DAY)),
            &clock,
        );
        assert_eq!(
            names(d),
            [
                "app.20210303T050607Z.log.zst",
                "app.20210304T000000Z.7.log",
                "app.log"
            ]
        );
        assert!(file.take_error().is_none());
        drop(file);
        // By age alone: ten hours later, only the archive from today is younger than a day.
        clock.advance(Duration::from_secs(10 * HOUR));
        let file = open(policy(d).with_max_age(Duration::from_secs(DAY)), &clock);
        assert_eq!(names(d), ["app.20210304T000000Z.7.log", "app.log"]);
        assert!(file.take_error().is_none());
    }
}
