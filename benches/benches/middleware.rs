//! What qiflow's axum middleware adds to one request on the request path, in process (no
//! sockets, no HTTP parsing), side by side in one run:
//!
//! - `axum/bare`: `GET /users/42` through an axum `Router` (a JSON handler and a 404 fallback);
//! - `axum/qiflow`: the same router as the quickstart mounts qiflow: `qiflow_axum::routes` and
//!   `qiflow_axum::layer`, the observer from `qiflow_core::init` (global subscriber and
//!   recorder), the JSON access line to a rotating file in a temp dir, metrics, request id,
//!   capture, baselines;
//! - `axum/qiflow-noaccess`: the same with `[logging] access_log = false`;
//! - `axum/qiflow-nometrics`: `qiflow-noaccess` with `[metrics] enabled = false`;
//! - `axum/qiflow-minimal`: `qiflow-nometrics` with `[baseline] enabled = false` (request id,
//!   span, capture policy, extension and header);
//! - `axum/span`: no qiflow middleware, only a `request` span per request
//!   ([`qiflow_benches::load::SpanOnly`]) under the same global subscriber;
//! - `axum/qiflow-levelfilter` and `axum/qiflow-logfilter`: `axum/qiflow` with another observer
//!   and its layers under a subscriber of the bench's own (set for the calling thread), in
//!   front of them the filter `init` installed before the log level could change (a plain
//!   `LevelFilter` for `level = "info"`) or the one it installs now (`Observer::log_filter`,
//!   changeable at runtime).
//!
//! The `filter` group times the filter alone, in a `registry()` with nothing else, for a request
//! (a `request` span entered four times, once around an `info!` event), one `info!` event, and
//! one `debug!` event the level turns off: `levelfilter` (before), `logfilter` (now), and
//! tracing-subscriber's `reload::Layer` around a `LevelFilter` and around an `EnvFilter`
//! (`"info"`), the ways to change a level that it ships.
//!
//! Before timing, each variant prints its allocations per request (a counting global allocator).
//!
//! Each iteration builds the request, calls a clone of the router (finalized with
//! `with_state`, as `axum::serve` does), and drops the response, on a
//! current-thread runtime. Only the caller's thread is measured: the log writer and the other
//! pipelines run on qiflow's worker threads. `benches/load/run.sh` measures the whole server
//! (sockets, hyper, the writer) under wrk; this bench is the quick loop for request-path work.
//!
//! `cargo bench -p qiflow-benches --bench middleware`

use std::alloc::System;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::Criterion;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;
use tracing::Dispatch;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;

/// The system allocator, counting allocations so the bench can report them per request.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn router() -> Router {
    qiflow_benches::load::users_router()
}

fn with_qiflow(observer: &qiflow_core::Observer) -> Router {
    router()
        .merge(qiflow_axum::routes(observer.clone()))
        .layer(qiflow_axum::layer(observer.clone()))
}

/// A request as wrk sends it: a path and a `Host` header.
fn request() -> Request<Body> {
    Request::get("/users/42")
        .header("host", "127.0.0.1:3000")
        .body(Body::empty())
        .expect("a valid request")
}

/// An observer that does not install the global subscriber: its spans and events go through the
/// one `init` installed.
fn local_observer(config: qiflow_core::Config) -> (qiflow_core::Observer, qiflow_core::Guard) {
    qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .expect("qiflow starts")
}

fn middleware(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config =
        qiflow_benches::load::qiflow_config(dir.path(), true).expect("the configuration is valid");
    let (observer, _guard) = qiflow_core::init(&config).expect("qiflow starts");
    let quiet =
        qiflow_benches::load::qiflow_config(dir.path(), false).expect("the configuration is valid");
    let (noaccess, _noaccess_guard) = local_observer(quiet.clone());
    let mut no_metrics = quiet;
    no_metrics.metrics.enabled = false;
    let (nometrics, _nometrics_guard) = local_observer(no_metrics.clone());
    let mut minimal_config = no_metrics;
    minimal_config.baseline.enabled = false;
    let (minimal, _minimal_guard) = local_observer(minimal_config);

    let (scoped, _scoped_guard) = local_observer(config.clone());
    let level_filter = Dispatch::new(
        tracing_subscriber::registry()
            .with(Some(LevelFilter::INFO))
            .with(None::<EnvFilter>)
            .with(scoped.log_layer())
            .with(scoped.capture_layer()),
    );
    let log_filter = Dispatch::new(
        tracing_subscriber::registry()
            .with(scoped.log_filter())
            .with(scoped.log_layer())
            .with(scoped.capture_layer()),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("middleware");
    for (name, app, dispatch) in [
        ("axum/bare", router(), None),
        ("axum/qiflow", with_qiflow(&observer), None),
        ("axum/qiflow-noaccess", with_qiflow(&noaccess), None),
        ("axum/qiflow-nometrics", with_qiflow(&nometrics), None),
        ("axum/qiflow-minimal", with_qiflow(&minimal), None),
        (
            "axum/span",
            router().layer(tower::layer::layer_fn(qiflow_benches::load::SpanOnly::new)),
            None,
        ),
        (
            "axum/qiflow-levelfilter",
            with_qiflow(&scoped),
            Some(&level_filter),
        ),
        (
            "axum/qiflow-logfilter",
            with_qiflow(&scoped),
            Some(&log_filter),
        ),
    ] {
        // Finalized as `axum::serve` does (`into_make_service` calls `with_state`): without it, an
        // axum `Router` converts its handlers into routes and applies its layers on every call.
        let app: Router = app.with_state(());
        let call = || {
            let response = runtime
                .block_on(app.clone().oneshot(request()))
                .expect("the router is infallible");
            assert_eq!(response.status(), StatusCode::OK);
            response
        };
        let serve = || match dispatch {
            Some(dispatch) => tracing::dispatcher::with_default(dispatch, call),
            None => call(),
        };
        // Allocations on the request path (all threads: the worker threads allocate little while this
        // runs), averaged over 10,000 requests after a warm-up.
        for _ in 0..1_000 {
            drop(serve());
        }
        let region = Region::new(GLOBAL);
        for _ in 0..10_000 {
            drop(serve());
        }
        let allocations = region.change().allocations + region.change().reallocations;
        println!(
            "middleware/{name}: {:.1} allocations per request",
            allocations as f64 / 10_000.0
        );
        group.bench_function(name, |b| b.iter(serve));
    }
    group.finish();
}

/// The `filter` group: each filter alone in a `registry()`, under the same three workloads.
fn filters(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config =
        qiflow_benches::load::qiflow_config(dir.path(), false).expect("the configuration is valid");
    let (observer, _guard) = local_observer(config);
    // Whatever RUST_LOG says in this shell: the bench compares `info` everywhere.
    observer.set_log_level("info").expect("a valid filter");
    let variants = [
        (
            "levelfilter",
            Dispatch::new(
                tracing_subscriber::registry()
                    .with(Some(LevelFilter::INFO))
                    .with(None::<EnvFilter>),
            ),
        ),
        (
            "logfilter",
            Dispatch::new(tracing_subscriber::registry().with(observer.log_filter())),
        ),
        (
            "reload-levelfilter",
            Dispatch::new(
                tracing_subscriber::registry().with(reload::Layer::new(LevelFilter::INFO).0),
            ),
        ),
        (
            "reload-envfilter",
            Dispatch::new(
                tracing_subscriber::registry().with(reload::Layer::new(EnvFilter::new("info")).0),
            ),
        ),
    ];
    let mut group = c.benchmark_group("filter");
    for (name, dispatch) in &variants {
        tracing::dispatcher::with_default(dispatch, || {
            group.bench_function(format!("{name}/request"), |b| {
                b.iter(|| {
                    let span = tracing::info_span!(
                        target: "qiflow::request",
                        "request",
                        request_id = "01936f1e-7c2a-7b3e-9d4f-0a1b2c3d4e5f",
                        http.route = "/users/{id}",
                    );
                    // The polls of a request's future, then the one with the event.
                    for _ in 0..3 {
                        drop(span.enter());
                    }
                    let entered = span.enter();
                    tracing::info!(status = 200u16, "request finished");
                    drop(entered);
                    span
                })
            });
            group.bench_function(format!("{name}/event"), |b| {
                b.iter(|| tracing::info!(status = 200u16, "request finished"))
            });
            group.bench_function(format!("{name}/debug-off"), |b| {
                b.iter(|| tracing::debug!(status = 200u16, "request finished"))
            });
        });
    }
    group.finish();
}

// Written out rather than `criterion_group!`/`criterion_main!`, whose generated `pub fn` cannot
// carry the doc comment the workspace's `missing_docs` lint asks for.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    middleware(&mut c);
    filters(&mut c);
    c.final_summary();
}
