//! Audit trail throughput and request-path cost (criterion).
//!
//! - `audit_file_{disk,tmpfs}/<batch>/chained`: records/s into [`FileAuditSink`] (hash chain, a
//!   keyed digest every 1000 records, one fsync per batch), batches of 100 and 1,000, on the temp
//!   dir's disk and on `/dev/shm` (where fsync costs nearly nothing, so the ratio is the CPU cost).
//! - `audit_file_{disk,tmpfs}/<batch>/chained_no_witness`: the same without the witness file
//!   (rewritten after every batch that wrote a digest), so `chained ÷ chained_no_witness` is
//!   the witness's cost.
//! - `audit_file_{disk,tmpfs}/<batch>/plain_jsonl`: the baseline in the same run: the same
//!   records as JSON lines (serde_json, no chain, no digest) appended to a file with one fsync
//!   per batch.
//! - `audit_postgres/<batch>/chained`: records/s into [`PostgresAuditSink`], only when
//!   `QIFLOW_BENCH_POSTGRES_URL` is set (e.g. the cluster of `.ci/tier2-audit.sh`); the table is
//!   dropped first.
//! - `audit_request_path/build_event` vs `audit_request_path/observer_audit`: what a handler pays
//!   to build an event, and to build it and call `observer.audit()` (redaction + a bounded queue
//!   send; the worker writes to a no-op sink).
//!
//! Run: `cargo bench -p qiflow-benches --bench audit`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use qiflow_core::audit::{AuditEvent, FileAuditSink, NoopAuditSink, Outcome};

fn event(i: u64) -> AuditEvent {
    AuditEvent::builder("alice@example.com", "invoice.approve")
        .resource(format!("invoice/{i}"))
        .outcome(Outcome::Success)
        .request_id("0193a5c4-7e2f-7c1d-9f3a-2b8e4d6c1a90")
        .metadata("amount", 1250.5)
        .metadata("currency", "EUR")
        .build()
}

fn batch(size: usize) -> Vec<AuditEvent> {
    (0..size as u64).map(event).collect()
}

/// The baseline line: the same fields, serialized with serde_json, no chain.
fn plain_line(e: &AuditEvent, out: &mut Vec<u8>) {
    let v = serde_json::json!({
        "id": e.id().to_string(),
        "timestamp": e.timestamp().unix_timestamp_nanos().to_string(),
        "actor": e.actor(),
        "action": e.action(),
        "resource": e.resource(),
        "outcome": e.outcome().as_str(),
        "request_id": e.request_id(),
        "metadata": e.metadata(),
    });
    serde_json::to_writer(&mut *out, &v).unwrap_or_default();
    out.push(b'\n');
}

fn file_sink(c: &mut Criterion) {
    // On the disk of the temp dir (fsync is real), and on tmpfs when there is one (fsync is
    // nearly free, so the ratio shows the CPU cost of the chain and digests alone).
    let mut places = vec![(
        "disk",
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
    )];
    if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
        places.push(("tmpfs", shm));
    }
    for (place, dir) in &places {
        let mut group = c.benchmark_group(format!("audit_file_{place}"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));
        for size in [100usize, 1000] {
            let events = batch(size);
            group.throughput(Throughput::Elements(size as u64));
            let mut sink = FileAuditSink::builder(dir.path().join(format!("chained-{size}")))
                .signing_key(Some(b"bench signing key, 32 bytes long"))
                .digest_every(1000)
                .open()
                .unwrap_or_else(|e| panic!("open: {e}"));
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join(format!("plain-{size}.jsonl")))
                .unwrap_or_else(|e| panic!("open: {e}"));
            let mut buf = Vec::with_capacity(size * 300);
            group.bench_function(BenchmarkId::new(size.to_string(), "plain_jsonl"), |b| {
                b.iter(|| {
                    buf.clear();
                    for e in &events {
                        plain_line(e, &mut buf);
                    }
                    file.write_all(&buf)
                        .unwrap_or_else(|e| panic!("write: {e}"));
                    file.sync_data().unwrap_or_else(|e| panic!("fsync: {e}"));
                });
            });
            group.bench_function(BenchmarkId::new(size.to_string(), "chained"), |b| {
                b.iter(|| {
                    sink.append(&events)
                        .unwrap_or_else(|e| panic!("append: {e}"))
                });
            });
            let mut bare = FileAuditSink::builder(dir.path().join(format!("bare-{size}")))
                .signing_key(Some(b"bench signing key, 32 bytes long"))
                .digest_every(1000)
                .witness(None)
                .open()
                .unwrap_or_else(|e| panic!("open: {e}"));
            group.bench_function(
                BenchmarkId::new(size.to_string(), "chained_no_witness"),
                |b| {
                    b.iter(|| {
                        bare.append(&events)
                            .unwrap_or_else(|e| panic!("append: {e}"))
                    });
                },
            );
        }
        group.finish();
    }
}

fn postgres_sink(c: &mut Criterion) {
    let Ok(url) = std::env::var("QIFLOW_BENCH_POSTGRES_URL") else {
        eprintln!("audit_postgres: skipped (set QIFLOW_BENCH_POSTGRES_URL)");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach {url}: {e}"));
        tokio::spawn(conn);
        client
            .batch_execute("DROP TABLE IF EXISTS qiflow_audit")
            .await
            .unwrap_or_else(|e| panic!("drop: {e}"));
    });
    let mut group = c.benchmark_group("audit_postgres");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let clock: Arc<dyn qiflow_core::clock::Clock> = Arc::new(qiflow_core::clock::SystemClock);
    let mut sink =
        qiflow_core::audit::PostgresAuditSink::new(&url, Some(b"bench key"), None, clock)
            .unwrap_or_else(|e| panic!("sink: {e}"));
    for size in [100usize, 1000] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(BenchmarkId::new(size.to_string(), "chained"), |b| {
            b.iter(|| {
                // New events each time: the sink recognises a retried batch by its first id.
                let events = batch(size);
                rt.block_on(qiflow_core::audit::AuditSink::write(&mut sink, &events))
                    .unwrap_or_else(|e| panic!("write: {e}"));
            });
        });
    }
    group.finish();
}

fn request_path(c: &mut Criterion) {
    let mut config = qiflow_core::Config::default();
    config.logging.dir = std::path::PathBuf::new();
    config.logging.stdout = false;
    config.audit.queue_capacity = 1_000_000;
    let (observer, guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .audit_sink(NoopAuditSink, None)
        .build()
        .unwrap_or_else(|e| panic!("observer: {e}"));
    let mut group = c.benchmark_group("audit_request_path");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("build_event", |b| {
        b.iter(|| {
            i += 1;
            std::hint::black_box(event(i))
        });
    });
    group.bench_function("observer_audit", |b| {
        b.iter(|| {
            i += 1;
            observer
                .audit(event(i))
                .unwrap_or_else(|e| panic!("audit: {e}"));
        });
    });
    group.finish();
    drop(guard);
}

// Written out rather than `criterion_group!`/`criterion_main!`, whose generated `pub fn` cannot
// carry the doc comment the workspace's `missing_docs` lint asks for.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    file_sink(&mut c);
    postgres_sink(&mut c);
    request_path(&mut c);
    c.final_summary();
}
