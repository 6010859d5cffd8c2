//! What a check-in costs the job that makes it (the Rust API), side by side in one run:
//!
//! - `checkin/start+success`: `job.start()` then `run.success()` on a job without `expect_file`
//!   (no file to check): two short locks on the job's record, the clock read twice, three
//!   counter and gauge updates and a histogram record.
//! - `floor/mutex+clock+counter`: the least any check-in must do: take a lock, read the clock,
//!   write a time, count once; twice (start and end).
//! - `lookup/observer.job`: finding the job's handle by name (a read lock on the registry).
//!
//! `cargo bench -p qiflow-benches --bench jobs`

use std::sync::Mutex;
use std::time::SystemTime;

use criterion::Criterion;

fn main() {
    // Nothing written anywhere: no log file, no audit, no state files.
    let config = qiflow_core::config::Loader::new()
        .toml_str(
            "[logging]\ndir = \"\"\nstdout = false\n[audit]\nenabled = false\n[alerts]\nstate_file = \"\"\n\
             [baseline]\nstate_file = \"\"\n[admin]\ntoken_file = \"\"\n[service]\nstate_dir = \"\"\n",
        )
        .env(Vec::<(String, String)>::new())
        .load()
        .expect("the bench's configuration");
    let (observer, _guard) = qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .expect("the observer starts");
    let job = observer.job("bench");
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("checkin/start+success", |b| {
        b.iter(|| job.start().success());
    });
    let floor = Mutex::new(SystemTime::UNIX_EPOCH);
    let counter = observer.metrics().counter("bench_floor_total", Vec::new());
    c.bench_function("floor/mutex+clock+counter", |b| {
        b.iter(|| {
            for _ in 0..2 {
                *floor
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    std::hint::black_box(SystemTime::now());
                counter.increment(1);
            }
        });
    });
    c.bench_function("lookup/observer.job", |b| {
        b.iter(|| std::hint::black_box(observer.job("bench")));
    });
    c.final_summary();
}
