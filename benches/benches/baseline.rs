//! The request-path cost of recording into a route's baseline window, side by side in one run:
//!
//! - `window/record`: [`qiflow_core::baseline::Window::record`], relaxed atomic adds into the
//!   current slot (count, errors, sum, one log-linear bin).
//! - `ddsketch-mutex/record`: metrics-util's DDSketch `Summary` (the other candidate the issue
//!   names) behind a `Mutex`, since it is not concurrent.
//!
//! Each on 1 thread and on 2 threads recording at once into the same route (`…/2-threads`: time
//! per recorded request over both threads). The memory of one window is printed first.
//!
//! `cargo bench -p qiflow-benches --bench baseline`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::Criterion;
use qiflow_core::baseline::Window;

fn latency(i: u64) -> Duration {
    Duration::from_micros(200 + (i * 7919) % 20_000)
}

/// Time per operation with `threads` threads doing `iters` operations in all.
fn threaded(iters: u64, threads: u64, one: impl Fn(u64) + Send + Sync + 'static) -> Duration {
    let one = Arc::new(one);
    let per = iters / threads + 1;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let one = one.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    one(t * per + i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a recording thread");
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (per * threads) as f64)
}

fn baseline(c: &mut Criterion) {
    println!(
        "memory per route window ({} slots): {} bytes",
        qiflow_core::baseline::SLOTS,
        Window::memory_bytes()
    );
    let mut group = c.benchmark_group("baseline");
    let window = Arc::new(Window::new(Duration::from_secs(300)));
    group.bench_function("window/record", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            window.record(1_000, latency(i), i.is_multiple_of(50));
        });
    });
    group.bench_function("window/record/2-threads", |b| {
        b.iter_custom(|iters| {
            let window = window.clone();
            threaded(iters, 2, move |i| {
                window.record(1_000, latency(i), i.is_multiple_of(50))
            })
        });
    });
    let sketch = Arc::new(Mutex::new(metrics_util::storage::Summary::with_defaults()));
    group.bench_function("ddsketch-mutex/record", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            if let Ok(mut s) = sketch.lock() {
                s.add(latency(i).as_secs_f64());
            }
        });
    });
    group.bench_function("ddsketch-mutex/record/2-threads", |b| {
        b.iter_custom(|iters| {
            let sketch = sketch.clone();
            threaded(iters, 2, move |i| {
                if let Ok(mut s) = sketch.lock() {
                    s.add(latency(i).as_secs_f64());
                }
            })
        });
    });
    group.finish();
}

// Written out rather than `criterion_group!`/`criterion_main!`, whose generated `pub fn` cannot
// carry the doc comment the workspace's `missing_docs` lint asks for.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    baseline(&mut c);
    c.final_summary();
}
