//! The request path's cost in instructions, for `valgrind --tool=callgrind` (which counts
//! instructions: the same figure for the same binary and input, whatever else the machine is
//! doing). `benches/load/request_cost.sh` runs it and reads the counts.
//!
//! `request_cost <variant> <requests>` serves `<requests>` requests (`GET /users/42`, as the
//! `middleware` bench builds them) through an axum `Router` in process, on a current-thread
//! runtime, after 2,000 warm-up requests. Only the loop in [`measured`] is meant to be counted
//! (`--toggle-collect=*measured*`); with `--separate-threads=yes` the request thread's count is
//! apart from qiflow's worker threads (the log writer, the pipelines).
//!
//! Variants, the `middleware` bench's:
//!
//! - `bare`: the router alone;
//! - `span-registry`: a `request` span around each request ([`qiflow_benches::load::SpanOnly`])
//!   under tracing-subscriber's bare `Registry` with an `info` filter: any span's cost;
//! - `span`: the same span under qiflow's subscriber (its filter and layers);
//! - `floor`: the `span-registry` span, and tower-http's request-id layers (`SetRequestIdLayer` with a UUID,
//!   `PropagateRequestIdLayer`): a generated id in the request's headers and extensions and on
//!   the response, the least a request-id middleware does;
//! - `qiflow-minimal`: qiflow's layer with metrics, baselines and the access line off;
//! - `qiflow-nometrics`: with baselines on;
//! - `qiflow-noaccess`: with metrics on too;
//! - `qiflow`: everything the quickstart mounts, the JSON access line included.
//!
//! It prints `allocations per request: N` (all threads, counted by `stats_alloc`'s allocator,
//! which every variant pays alike).
//!
//! Every variant but `span-registry` and `floor` runs under the global subscriber
//! `qiflow_core::init` installs, with the configuration of `qiflow_benches::load::qiflow_config`;
//! those two run under the bare registry (set for the request thread), as `load_axum`'s modes of
//! the same names do.

use std::alloc::System;
use std::process::ExitCode;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;

/// The system allocator, counting allocations.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const VARIANTS: &[&str] = &[
    "bare",
    "span-registry",
    "span",
    "floor",
    "qiflow-minimal",
    "qiflow-nometrics",
    "qiflow-noaccess",
    "qiflow",
];

fn router() -> Router {
    qiflow_benches::load::users_router()
}

fn request() -> Result<Request<Body>, String> {
    Request::get("/users/42")
        .header("host", "127.0.0.1:3000")
        .body(Body::empty())
        .map_err(|e| format!("cannot build the request: {e}"))
}

/// Serves `n` requests; the function callgrind is told to count.
#[inline(never)]
fn measured(runtime: &tokio::runtime::Runtime, app: &Router, n: u64) -> Result<(), String> {
    for _ in 0..n {
        serve(runtime, app)?;
    }
    Ok(())
}

fn serve(runtime: &tokio::runtime::Runtime, app: &Router) -> Result<(), String> {
    let response = runtime
        .block_on(app.clone().oneshot(request()?))
        .map_err(|e| format!("the router failed: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("GET /users/42 answered {}", response.status()));
    }
    Ok(())
}

fn run(variant: &str, requests: u64) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let access_log = variant == "qiflow";
    let mut config = qiflow_benches::load::qiflow_config(dir.path(), access_log)
        .map_err(|e| format!("the configuration: {e}"))?;
    if matches!(variant, "qiflow-minimal" | "qiflow-nometrics") {
        config.metrics.enabled = false;
    }
    if variant == "qiflow-minimal" {
        config.baseline.enabled = false;
    }
    let (observer, guard) =
        qiflow_core::init(&config).map_err(|e| format!("qiflow does not start: {e}"))?;
    let _registry = matches!(variant, "span-registry" | "floor").then(|| {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_default(
            tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO),
        )
    });
    let app = match variant {
        "bare" => router(),
        "span" | "span-registry" => {
            router().layer(tower::layer::layer_fn(qiflow_benches::load::SpanOnly::new))
        }
        "floor" => qiflow_benches::load::with_floor(router()),
        _ => router()
            .merge(qiflow_axum::routes(observer.clone()))
            .layer(qiflow_axum::layer(observer.clone())),
    };
    // Finalized as `axum::serve` does.
    let app: Router = app.with_state(());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    for _ in 0..2_000 {
        serve(&runtime, &app)?;
    }
    let region = Region::new(GLOBAL);
    measured(&runtime, &app, requests)?;
    let change = region.change();
    println!(
        "allocations per request: {:.1}",
        (change.allocations + change.reallocations) as f64 / requests.max(1) as f64
    );
    drop(guard);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = format!(
        "usage: request_cost <variant> <requests>; variants: {}",
        VARIANTS.join(", ")
    );
    let (Some(variant), Some(requests)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    if !VARIANTS.contains(&variant.as_str()) {
        eprintln!("unknown variant {variant:?}; {usage}");
        return ExitCode::from(2);
    }
    let Ok(requests) = requests.parse::<u64>() else {
        eprintln!("requests: {requests:?} is not a number; {usage}");
        return ExitCode::from(2);
    };
    match run(variant, requests) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("request_cost: {e}");
            ExitCode::FAILURE
        }
    }
}
