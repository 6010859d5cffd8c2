//! What capturing an error costs the caller's thread (the request path), side by side in one run:
//!
//! - `qiflow/capture`: [`Observer::capture`] of a report with a two-link chain and a request
//!   context: the report is completed (fingerprint, release), counted, and offered to the
//!   `errors` queue. The worker does the rest (store, Sentry) on its own threads.
//! - `qiflow/capture_error`: [`Observer::capture_error`] outside a request (the chain is read
//!   from the error).
//! - `sentry/capture_error`: `Hub::capture_error` of the `sentry` crate, as sentry-tower users
//!   call it in handlers: it builds the event, applies the scope, serializes nothing yet and hands
//!   the envelope to the transport, here one that discards it, so only the caller's share is
//!   measured.
//!
//! - `panic/stacktrace_capture_100`: what the panic hook adds for the stack, 100 frames deep (a
//!   handler on a tokio worker): [`Stacktrace::capture`], return addresses only.
//! - `panic/catch_unwind` and `panic/catch_unwind_qiflow_hook`: a panic caught with
//!   `catch_unwind`, first with a silent hook, then with qiflow's hook in front of it (report,
//!   stack capture, enqueue). The worker resolves the stack off the measured thread.
//!
//! The queue holds 1,024 reports; each measured batch stays below that and the queue is drained
//! (untimed) between batches, so the figures are enqueue costs, never drop costs.
//!
//! `cargo bench -p qiflow-benches --bench capture`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use qiflow_core::Observer;
use qiflow_core::capture::{
    ErrorDetail, ErrorKind, ErrorReport, PreviousHook, RequestContext, Severity, Stacktrace,
};

#[derive(Debug)]
struct LookupFailed(std::io::Error);

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loading user 42 failed")
    }
}

impl std::error::Error for LookupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn error() -> LookupFailed {
    LookupFailed(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the profile store timed out",
    ))
}

/// Below the queue's 1,024, so nothing is dropped.
const BATCH: u64 = 512;

fn batched(observer: &Observer, iters: u64, mut one: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        let start = Instant::now();
        for _ in 0..n {
            one();
        }
        total += start.elapsed();
        left -= n;
        assert!(observer.flush(Duration::from_secs(30)), "the queue drains");
    }
    total
}

struct Discard;

impl sentry::Transport for Discard {
    fn send_envelope(&self, envelope: sentry::Envelope) {
        drop(envelope);
    }
}

fn capture(c: &mut Criterion) {
    let mut config = qiflow_core::Config::default();
    config.logging.dir = std::path::PathBuf::new();
    config.logging.stdout = false;
    config.audit.enabled = false;
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .expect("qiflow starts");
    let mut group = c.benchmark_group("capture");
    let detail = ErrorDetail::from_error(&error());
    let context = RequestContext::new(
        "GET",
        "/users/{id}",
        "http://shop.test/users/42",
        "01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f",
    );
    group.bench_function("qiflow/capture", |b| {
        b.iter_custom(|iters| {
            batched(&observer, iters, || {
                let report = ErrorReport::new(ErrorKind::Handler, Severity::Error, detail.clone())
                    .with_request(context.clone());
                observer.capture(report);
            })
        });
    });
    group.bench_function("qiflow/capture_error", |b| {
        b.iter_custom(|iters| {
            let e = error();
            batched(&observer, iters, || observer.capture_error(&e))
        });
    });

    group.bench_function("panic/stacktrace_capture_100", |b| {
        b.iter(|| at_depth(100, &mut Stacktrace::capture));
    });
    // Quiet: the default hook would print every panic.
    std::panic::set_hook(Box::new(|_| {}));
    group.bench_function("panic/catch_unwind", |b| {
        b.iter(|| std::panic::catch_unwind(|| panic!("boom")).is_err());
    });
    qiflow_core::capture::install_panic_hook_with(&observer, PreviousHook::Chain);
    group.bench_function("panic/catch_unwind_qiflow_hook", |b| {
        b.iter_custom(|iters| {
            batched(&observer, iters, || {
                assert!(std::panic::catch_unwind(|| panic!("boom")).is_err());
            })
        });
    });
    drop(std::panic::take_hook());

    let mut options = sentry::ClientOptions::default();
    options.dsn = Some("http://public@127.0.0.1:9/1".parse().expect("a DSN"));
    options.release = Some("0.1.0".into());
    options.transport = Some(Arc::new(Arc::new(Discard)));
    let client = Arc::new(sentry::Client::with_options(options));
    let hub = sentry::Hub::new(Some(client), Arc::new(sentry::Scope::default()));
    group.bench_function("sentry/capture_error", |b| {
        let e = error();
        b.iter(|| hub.capture_error(&e));
    });
    group.finish();
}

/// Calls `f` `depth` frames further down the stack.
#[inline(never)]
fn at_depth<R>(depth: usize, f: &mut dyn FnMut() -> R) -> R {
    if depth == 0 {
        return f();
    }
    std::hint::black_box(at_depth(depth - 1, f))
}

// Written out rather than `criterion_group!`/`criterion_main!`, whose generated `pub fn` cannot
// carry the doc comment the workspace's `missing_docs` lint asks for.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    capture(&mut c);
    c.final_summary();
}
