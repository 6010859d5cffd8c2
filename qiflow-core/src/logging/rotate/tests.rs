//! Tests of [`RotatingFile`]'s write path, and the helpers every test of `rotate` shares.

use std::collections::HashSet;
use std::io::{BufReader, Read as _};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use super::naming::{ArchiveKey, Naming};
use super::policy::HOUR;
use super::*;
use crate::config::{Compression, Rotation};
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

/// How long a test waits for the compression thread.
pub(super) const WAIT: Duration = Duration::from_secs(60);

/// The given UTC time.
pub(super) fn utc(y: i32, m: u8, d: u8, hh: u8, mm: u8, ss: u8) -> SystemTime {
    let month = time::Month::try_from(m).unwrap();
    time::Date::from_calendar_date(y, month, d)
        .unwrap()
        .with_hms(hh, mm, ss)
        .unwrap()
        .assume_utc()
        .into()
}

pub(super) fn clock_at(t: SystemTime) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(t))
}

pub(super) fn start() -> Arc<ManualClock> {
    clock_at(utc(2021, 3, 4, 5, 6, 7))
}

/// No time rotation, no compression, keep (nearly) everything.
pub(super) fn policy(dir: &Path) -> RotationPolicy {
    RotationPolicy::new(dir)
        .with_rotation(Rotation::Never)
        .with_compress(Compression::None)
        .with_max_backups(100_000)
        .with_max_age(Duration::MAX)
}

pub(super) fn open(policy: RotationPolicy, clock: &Arc<ManualClock>) -> RotatingFile {
    RotatingFile::open(policy, clock.clone()).unwrap()
}

pub(super) fn line(i: usize) -> Vec<u8> {
    format!("line {i:04}\n").into_bytes() // 10 bytes
}

pub(super) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Archive names of `app.log`, oldest first.
pub(super) fn archives(dir: &Path) -> Vec<String> {
    let naming = Naming::new("app.log").unwrap();
    let mut found: Vec<(ArchiveKey, String)> = names(dir)
        .into_iter()
        .filter_map(|n| naming.parse(&n).map(|(key, _)| (key, n)))
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

pub(super) fn read(path: &Path) -> String {
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
pub(super) fn all_lines(dir: &Path) -> Vec<String> {
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

pub(super) fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line {i:04}")).collect()
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
                    let line = format!("t={t} i={i:05} {}\n", "p".repeat(20 + (i * 7 + t) % 40));
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
