//! One writer of `load/audit_writers.sh`: appends audit records to a PostgreSQL trail through
//! qiflow's `PostgresAuditSink`, as one instance of a fleet would, and prints how many it wrote
//! in how long.
//!
//! ```text
//! audit_writer INSTANCE RECORDS BATCH START_FILE [--global]
//! ```
//!
//! The database is `QIFLOW_BENCH_POSTGRES_URL`. The writer connects and resumes its chain with a
//! first record, then waits until `START_FILE` exists (so every writer starts at once), writes
//! `RECORDS` records in batches of `BATCH` (the audit pipeline's `[audit] batch_size`), seals,
//! and prints `INSTANCE RECORDS SECONDS` on stdout.
//!
//! `--global` holds a session advisory lock across each batch: the writers take turns, which is
//! what one chain shared by every instance would need at the least (a real global chain would
//! also read the chain's tail under the lock). It measures that design's floor beside the
//! per-instance chains qiflow ships.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qiflow_core::audit::{AuditEvent, AuditSink as _, PostgresAuditSink, SealReason};
use qiflow_core::clock::{Clock, SystemClock};

fn event(i: u64) -> AuditEvent {
    AuditEvent::builder(format!("user{}", i % 50), "order.create")
        .resource(format!("order/{i}"))
        .request_id(format!("req-{i}"))
        .metadata("amount", i % 1000)
        .build()
}

fn usage() -> ! {
    eprintln!("usage: audit_writer INSTANCE RECORDS BATCH START_FILE [--global]");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        usage();
    }
    let instance = args[0].clone();
    let records: u64 = args[1].parse().unwrap_or_else(|_| usage());
    let batch: u64 = args[2].parse().unwrap_or_else(|_| usage());
    let start = std::path::PathBuf::from(&args[3]);
    let global = args.get(4).map(String::as_str) == Some("--global");
    let Ok(url) = std::env::var("QIFLOW_BENCH_POSTGRES_URL") else {
        eprintln!("audit_writer: set QIFLOW_BENCH_POSTGRES_URL");
        std::process::exit(2)
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut sink = match PostgresAuditSink::new(&url, Some(b"bench signing key"), None, clock) {
        Ok(sink) => sink.instance(instance.clone()),
        Err(e) => {
            eprintln!("audit_writer: {e}");
            std::process::exit(1)
        }
    };
    let lock = if global {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                eprintln!("audit_writer: cannot connect: {e}");
                std::process::exit(1)
            });
        tokio::spawn(conn);
        Some(client)
    } else {
        None
    };
    // Connect, create or migrate the table and resume the chain before the clock starts.
    if let Err(e) = sink.write(&[event(u64::MAX)]).await {
        eprintln!("audit_writer: first write: {e}");
        std::process::exit(1)
    }
    while !start.exists() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let began = Instant::now();
    let mut written = 0;
    while written < records {
        let n = batch.min(records - written);
        let events: Vec<AuditEvent> = (written..written + n).map(event).collect();
        if let Some(client) = &lock {
            client
                .execute("SELECT pg_advisory_lock(4242)", &[])
                .await
                .unwrap_or_else(|e| {
                    eprintln!("audit_writer: lock: {e}");
                    std::process::exit(1)
                });
        }
        let result = sink.write(&events).await;
        if let Some(client) = &lock {
            let _ = client.execute("SELECT pg_advisory_unlock(4242)", &[]).await;
        }
        if let Err(e) = result {
            eprintln!("audit_writer: {instance}: {e}");
            std::process::exit(1)
        }
        written += n;
    }
    if let Err(e) = sink.seal(SealReason::Flush).await {
        eprintln!("audit_writer: seal: {e}");
        std::process::exit(1)
    }
    println!("{instance} {written} {:.4}", began.elapsed().as_secs_f64());
}
