//! Whole-pipeline benchmark of qiflow's JSON logging, side by side with the usual alternative.
//!
//! **Throughput.** JSON lines per second from 1 and 4 threads into a file, for:
//!
//! - qiflow: `Observer::builder(config).install_global(false).build()`, the observer's
//!   [`LogLayer`](qiflow_core::logging::LogLayer) in a `tracing_subscriber::registry()`, writing
//!   to its rotating file (format json, rotation daily, `max_size` 1 GiB so no size rotation,
//!   compress none, stdout off), with `overflow = "drop"` and with `overflow = "block"`. The clock
//!   runs from the first event until `Guard::shutdown` has returned, so every line is written and
//!   fsynced; delivered and dropped come from its `ShutdownReport`.
//! - the anchor: tracing-subscriber's `fmt::layer().json()` writing through
//!   `tracing_appender::non_blocking` (lossy, its default, and `.lossy(false)`) over
//!   `tracing_appender::rolling::daily(dir, "app.log")`. The clock runs from the first event until
//!   its `WorkerGuard` has been dropped.
//!
//! Both write the same event, `info!(user_id = 42u64, route = "/users/{id}", latency_ms = 3.2,
//! "request finished")`, inside a span with a `request_id` field. After every run the bench counts
//! the event lines actually in the directory, once when the guard returned and once more when the
//! files have stopped growing (tracing-appender's worker may still be writing after its guard
//! gave up waiting; a process that exits then loses those lines).
//!
//! **Latency.** On one thread with qiflow (`overflow = "block"`), each `info!` call is timed with
//! [`Instant`]: once while the file rotates every 1 MiB with gzip compression, and once with no
//! rotation and no compression. It prints p50, p99, p99.9 and max, and the p99 ratio.
//!
//! Each case runs [`RUNS`] times, interleaved, after a short warm-up; the summary gives the
//! median. Run with `cargo bench -p qiflow-benches --bench logging`. `QIFLOW_BENCH_EVENTS` sets
//! the events per thread (defaults to 200,000).

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use qiflow_core::config::{Compression, LogFormat, OverflowPolicy, Rotation};
use qiflow_core::{Config, Observer};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

/// Runs of each case; the summary shows the median.
const RUNS: usize = 3;
/// Thread counts of the throughput part.
const THREADS: [usize; 2] = [1, 4];
/// Events per thread unless `QIFLOW_BENCH_EVENTS` says otherwise.
const DEFAULT_EVENTS: usize = 200_000;
/// What every event line contains, to tell event lines from anything else a writer adds.
const NEEDLE: &[u8] = b"request finished";
/// The `request_id` of the enclosing span.
const REQUEST_ID: &str = "0193a5c4-7e2f-7c1d-9f3a-2b8e4d6c1a90";
const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// One writer set-up of the throughput part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    QiflowDrop,
    QiflowBlock,
    AnchorLossy,
    AnchorBlocking,
}

impl Writer {
    const ALL: [Writer; 4] = [
        Writer::QiflowDrop,
        Writer::AnchorLossy,
        Writer::QiflowBlock,
        Writer::AnchorBlocking,
    ];

    fn label(self) -> &'static str {
        match self {
            Writer::QiflowDrop => "qiflow overflow=drop",
            Writer::QiflowBlock => "qiflow overflow=block",
            Writer::AnchorLossy => "tracing-appender lossy",
            Writer::AnchorBlocking => "tracing-appender lossy(false)",
        }
    }

    fn run(self, threads: usize, events: usize) -> Outcome {
        match self {
            Writer::QiflowDrop => run_qiflow(OverflowPolicy::Drop, threads, events),
            Writer::QiflowBlock => run_qiflow(OverflowPolicy::Block, threads, events),
            Writer::AnchorLossy => run_anchor(true, threads, events),
            Writer::AnchorBlocking => run_anchor(false, threads, events),
        }
    }
}

/// What one throughput run measured.
#[derive(Debug, Clone)]
struct Outcome {
    emitted: u64,
    /// First event until the guard returned.
    elapsed: Duration,
    /// Event lines in the files when the guard returned.
    lines: u64,
    /// Event lines in the files once they stopped growing.
    lines_eventually: u64,
    /// What the writer itself counts as dropped (qiflow's report, tracing-appender's counter).
    dropped_counted: u64,
    /// Bytes in the files once they stopped growing.
    bytes: u64,
}

impl Outcome {
    /// Event lines on disk per second, at the moment the guard returned.
    fn rate(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64()
    }

    /// Emitted events that are in no file, at the moment the guard returned.
    fn lost(&self) -> u64 {
        self.emitted.saturating_sub(self.lines)
    }

    fn bytes_per_line(&self) -> f64 {
        self.bytes as f64 / self.lines_eventually.max(1) as f64
    }
}

/// The benched event, `events` times, inside a span with a `request_id`; `ready` is passed
/// just before the first event.
fn emit(events: usize, ready: &Barrier) {
    let span = tracing::info_span!("request", request_id = REQUEST_ID);
    let _entered = span.enter();
    ready.wait();
    for _ in 0..events {
        tracing::info!(
            user_id = 42u64,
            route = "/users/{id}",
            latency_ms = 3.2,
            "request finished"
        );
    }
}

/// Emits from `threads` threads at once through `dispatch`; returns when the first event was
/// about to be emitted. Returns after every thread has finished.
fn drive(dispatch: &Dispatch, threads: usize, events: usize) -> Instant {
    let ready = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| tracing::dispatcher::with_default(dispatch, || emit(events, &ready)));
        }
        ready.wait();
        Instant::now()
    })
}

/// A configuration writing JSON only to a file in `dir`.
fn config(dir: &Path, overflow: OverflowPolicy, max_size: u64, compress: Compression) -> Config {
    let mut config = Config::default();
    config.logging.dir = dir.to_path_buf();
    config.logging.stdout = false;
    config.logging.format = LogFormat::Json;
    config.logging.rotation = Rotation::Daily;
    config.logging.max_size = max_size;
    config.logging.compress = compress;
    config.logging.overflow = overflow;
    config.audit.enabled = false;
    config
}

fn run_qiflow(overflow: OverflowPolicy, threads: usize, events: usize) -> Outcome {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (observer, guard) = Observer::builder(config(dir.path(), overflow, GIB, Compression::None))
        .install_global(false)
        .build()
        .expect("the observer builds");
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(observer.log_layer()));
    let start = drive(&dispatch, threads, events);
    drop(dispatch);
    let report = guard.shutdown();
    let elapsed = start.elapsed();
    let lines = count_lines(dir.path()).0;
    let (lines_eventually, bytes) = settle(dir.path());
    let stats = report
        .stats
        .iter()
        .find(|s| s.name == "logs")
        .expect("the logs pipeline is in the report");
    assert_eq!(
        stats.submitted,
        (threads * events) as u64,
        "every event reached the pipeline"
    );
    assert!(
        report.timed_out.is_empty(),
        "the flush finished within its budget: {report:?}"
    );
    assert_eq!(
        stats.delivered, lines,
        "the report's delivered count matches the file"
    );
    drop(observer);
    Outcome {
        emitted: (threads * events) as u64,
        elapsed,
        lines,
        lines_eventually,
        dropped_counted: stats.dropped(),
        bytes,
    }
}

fn run_anchor(lossy: bool, threads: usize, events: usize) -> Outcome {
    let dir = tempfile::tempdir().expect("a temp dir");
    let appender = tracing_appender::rolling::daily(dir.path(), "app.log");
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(lossy)
        .finish(appender);
    let counter = writer.error_counter();
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_ansi(false)
        .with_writer(writer);
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    let start = drive(&dispatch, threads, events);
    drop(dispatch);
    drop(guard);
    let elapsed = start.elapsed();
    let lines = count_lines(dir.path()).0;
    let (lines_eventually, bytes) = settle(dir.path());
    Outcome {
        emitted: (threads * events) as u64,
        elapsed,
        lines,
        lines_eventually,
        dropped_counted: counter.dropped_lines() as u64,
        bytes,
    }
}

/// Event lines (complete lines containing [`NEEDLE`]) and bytes in every file of `dir`,
/// gzip archives excepted.
fn count_lines(dir: &Path) -> (u64, u64) {
    let mut lines = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).expect("the log dir lists") {
        let path = entry.expect("a dir entry").path();
        if !path.is_file() || path.extension().is_some_and(|e| e == "gz") {
            continue;
        }
        let data = std::fs::read(&path).expect("a log file reads");
        bytes += data.len() as u64;
        let mut pieces = data.split(|&b| b == b'\n');
        // The piece after the last newline is empty or a line still being written.
        pieces.next_back();
        lines += pieces
            .filter(|line| {
                let head = &line[..line.len().min(200)];
                head.windows(NEEDLE.len()).any(|w| w == NEEDLE)
            })
            .count() as u64;
    }
    (lines, bytes)
}

/// Waits until the files in `dir` stop growing (a writer thread that outlived its guard has
/// finished), then counts them. Also keeps that thread from competing with the next run.
fn settle(dir: &Path) -> (u64, u64) {
    let size = || -> u64 {
        std::fs::read_dir(dir)
            .expect("the log dir lists")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = size();
    let mut quiet = 0;
    while quiet < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = size();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    count_lines(dir)
}

/// Percentiles of single-call latencies, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    /// Rotations during the run (archives in the directory afterwards).
    rotations: usize,
    /// Archives already compressed when the last event had been emitted.
    compressed_during: usize,
    delivered: u64,
}

/// Times every `info!` call of one thread; with `rotating`, the file rotates every 1 MiB and
/// archives are gzip-compressed.
fn run_latency(rotating: bool, events: usize) -> Latency {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut config = if rotating {
        config(dir.path(), OverflowPolicy::Block, MIB, Compression::Gzip)
    } else {
        config(dir.path(), OverflowPolicy::Block, GIB, Compression::None)
    };
    // Keep every archive, so they can be counted.
    config.logging.max_backups = 100_000;
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .expect("the observer builds");
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(observer.log_layer()));
    let mut samples = Vec::with_capacity(events);
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("request", request_id = REQUEST_ID);
        let _entered = span.enter();
        for _ in 0..events {
            let start = Instant::now();
            tracing::info!(
                user_id = 42u64,
                route = "/users/{id}",
                latency_ms = 3.2,
                "request finished"
            );
            samples.push(start.elapsed().as_nanos() as u64);
        }
    });
    let compressed_during = archives(dir.path()).1;
    drop(dispatch);
    let report = guard.shutdown();
    drop(observer);
    let delivered = report
        .stats
        .iter()
        .find(|s| s.name == "logs")
        .expect("the logs pipeline is in the report")
        .delivered;
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    // Let the compressor finish before counting and before the next run.
    settle(dir.path());
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
        rotations: archives(dir.path()).0,
        compressed_during,
        delivered,
    }
}

/// Archives in `dir` (rotated files, compressed or not) and how many of them are gzip files.
fn archives(dir: &Path) -> (usize, usize) {
    let mut all = 0;
    let mut gz = 0;
    for entry in std::fs::read_dir(dir).expect("the log dir lists").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "app.log" || name.ends_with(".tmp") {
            continue;
        }
        all += 1;
        if name.ends_with(".gz") {
            gz += 1;
        }
    }
    (all, gz)
}

fn median_by<T: Clone>(runs: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[sorted.len() / 2].clone()
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores, load average {load}")
}

fn throughput(events: usize) {
    println!("\n== throughput: {events} events per thread, {RUNS} runs per case ==");
    // Warm-up: page cache, allocator, thread start, callsite registration.
    for writer in Writer::ALL {
        writer.run(1, events / 10);
    }
    let mut results: Vec<(usize, Writer, Vec<Outcome>)> = Vec::new();
    for &threads in &THREADS {
        for writer in Writer::ALL {
            results.push((threads, writer, Vec::new()));
        }
    }
    for run in 1..=RUNS {
        for (threads, writer, outcomes) in &mut results {
            let o = writer.run(*threads, events);
            println!(
                "run {run} {threads} thread(s) {:<30} {:>10.0} lines/s  {:>7.0} ms  on disk at guard {:>8}/{:<8} eventually {:>8}  counted dropped {:>7}",
                writer.label(),
                o.rate(),
                o.elapsed.as_secs_f64() * 1000.0,
                o.lines,
                o.emitted,
                o.lines_eventually,
                o.dropped_counted,
            );
            outcomes.push(o);
        }
    }

    println!(
        "\nmedian of {RUNS} (rate = event lines on disk when the guard returned / time from first event to guard returned)"
    );
    println!(
        "{:<8} {:<30} {:>12} {:>10} {:>22} {:>16} {:>10}",
        "threads",
        "writer",
        "lines/s",
        "time",
        "lost at guard (worst)",
        "counted dropped",
        "bytes/line"
    );
    for (threads, writer, outcomes) in &results {
        let m = median_by(outcomes, Outcome::rate);
        let worst = outcomes.iter().map(Outcome::lost).max().unwrap_or(0);
        let late = outcomes
            .iter()
            .map(|o| o.lines_eventually.saturating_sub(o.lines))
            .max()
            .unwrap_or(0);
        let lost = if late > 0 {
            format!("{worst} ({late} later)")
        } else {
            worst.to_string()
        };
        println!(
            "{:<8} {:<30} {:>12.0} {:>8.0}ms {:>22} {:>16} {:>10.0}",
            threads,
            writer.label(),
            m.rate(),
            m.elapsed.as_secs_f64() * 1000.0,
            lost,
            median_u64(outcomes.iter().map(|o| o.dropped_counted)),
            m.bytes_per_line(),
        );
    }

    println!("\nratio qiflow / tracing-appender (median lines/s)");
    let rate = |threads: usize, writer: Writer| {
        results
            .iter()
            .find(|(t, w, _)| *t == threads && *w == writer)
            .map(|(_, _, o)| median_by(o, Outcome::rate).rate())
            .expect("every case ran")
    };
    for &threads in &THREADS {
        let drop = rate(threads, Writer::QiflowDrop) / rate(threads, Writer::AnchorLossy);
        let block = rate(threads, Writer::QiflowBlock) / rate(threads, Writer::AnchorBlocking);
        println!(
            "{threads} thread(s): drop vs lossy {drop:.2}x (target >= 1.0x)   block vs lossy(false) {block:.2}x (target >= 0.8x)"
        );
    }
}

fn latency(events: usize) {
    println!(
        "\n== latency of one info! call, qiflow, 1 thread, overflow=block, {events} events, {RUNS} runs =="
    );
    run_latency(false, events / 10);
    run_latency(true, events / 10);
    let mut plain = Vec::new();
    let mut rotating = Vec::new();
    for run in 1..=RUNS {
        for (is_rotating, into) in [(false, &mut plain), (true, &mut rotating)] {
            let l = run_latency(is_rotating, events);
            println!(
                "run {run} {:<38} p50 {:>8}  p99 {:>8}  p99.9 {:>9}  max {:>10}  rotations {:>3} (compressed while emitting {:>3})  delivered {}",
                if is_rotating {
                    "rotating every 1 MiB, gzip"
                } else {
                    "no rotation, no compression"
                },
                micros(l.p50),
                micros(l.p99),
                micros(l.p999),
                micros(l.max),
                l.rotations,
                l.compressed_during,
                l.delivered,
            );
            into.push(l);
        }
    }
    let med = |runs: &[Latency], f: fn(&Latency) -> u64| median_u64(runs.iter().map(f));
    println!("\nmedian of {RUNS}");
    for (label, runs) in [
        ("no rotation, no compression", &plain),
        ("rotating every 1 MiB, gzip", &rotating),
    ] {
        println!(
            "{label:<38} p50 {:>8}  p99 {:>8}  p99.9 {:>9}  max {:>10}",
            micros(med(runs, |l| l.p50)),
            micros(med(runs, |l| l.p99)),
            micros(med(runs, |l| l.p999)),
            micros(med(runs, |l| l.max)),
        );
    }
    let ratio = |f: fn(&Latency) -> u64| med(&rotating, f) as f64 / med(&plain, f).max(1) as f64;
    println!(
        "ratio rotating / plain: p99 {:.2}x (target <= 2x)   p99.9 {:.2}x   max {:.2}x",
        ratio(|l| l.p99),
        ratio(|l| l.p999),
        ratio(|l| l.max),
    );
}

// A plain `main`: whole-pipeline runs (threads, files, a guard's shutdown) do not fit
// criterion's many-small-iterations model.
fn main() {
    let events = std::env::var("QIFLOW_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EVENTS);
    println!("qiflow logging bench: {}", machine());
    let started = Instant::now();
    throughput(events);
    latency(events);
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
}
