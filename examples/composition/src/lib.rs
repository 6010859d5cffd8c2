//! The service every set-up of `docs/composition.md` runs, so that each binary
//! (`src/bin/*.rs`) shows only how qiflow is composed with the host's own pieces:
//!
//! - `GET /hello`: inside a `hello` span of its own, an `info!` line, a `debug!` line (off at the
//!   default level) and a count on `app_hellos_total`, the application's own metric;
//! - qiflow's endpoints (`/metrics`, `/health/*`, `/qiflow/*`) and its middleware.
//!
//! It listens on `QIFLOW_ADDR` (default `127.0.0.1:3000`) until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use qiflow_core::Observer;

/// Loads the configuration (`qiflow.toml` or `QIFLOW_CONFIG`, `.env`, `QIFLOW__…`), or prints
/// why it cannot, naming the binary.
pub fn load_config(binary: &str) -> Result<qiflow_core::Config, ExitCode> {
    qiflow_core::Config::load().map_err(|e| {
        eprintln!("{binary}: invalid configuration:\n{e}");
        ExitCode::FAILURE
    })
}

/// The routes, qiflow's endpoints, and qiflow's middleware (added last, so it sees every
/// request).
pub fn app(observer: Observer) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .merge(qiflow_axum::routes(observer.clone()))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(qiflow_axum::layer(observer))
}

#[tracing::instrument(name = "hello", skip_all)]
async fn hello() -> &'static str {
    tracing::info!(greeting = "hello", "said hello");
    tracing::debug!("hello, in detail");
    metrics::counter!("app_hellos_total").increment(1);
    "hello\n"
}

/// Serves [`app`] on `addr` until SIGINT or SIGTERM; in-flight requests finish first. Returns
/// the exit code. The caller then drops qiflow's guard (and shuts down whatever else it set up).
pub fn serve(observer: Observer, addr: SocketAddr) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "listening on http://{addr}");
        axum::serve(listener, app(observer))
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    drop(runtime);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot serve on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// An OpenTelemetry span exporter that prints each span as one JSON line on stdout (`name`,
/// `trace_id`, `span_id`, `parent_span_id`, `attributes`). It stands in for the exporter a host
/// ships spans with (`opentelemetry-otlp`'s), so the example runs without a collector.
#[derive(Debug, Default)]
pub struct PrintExporter;

impl SpanExporter for PrintExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let lines: Vec<String> = batch
            .iter()
            .map(|span| {
                let attributes: serde_json::Map<String, serde_json::Value> = span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned().into()))
                    .collect();
                serde_json::json!({
                    "name": span.name,
                    "trace_id": span.span_context.trace_id().to_string(),
                    "span_id": span.span_context.span_id().to_string(),
                    "parent_span_id": span.parent_span_id.to_string(),
                    "attributes": attributes,
                })
                .to_string()
            })
            .collect();
        async move {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
            Ok(())
        }
    }
}
