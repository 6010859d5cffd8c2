//! qiflow quickstart: an axum service with qiflow mounted.
//!
//! `cargo run --release -p quickstart`, then `curl 127.0.0.1:3000/health/live`.

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;

fn main() -> ExitCode {
    let config = match qiflow_core::Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("quickstart: invalid configuration:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let (observer, guard) = match qiflow_core::init(&config) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("quickstart: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quickstart: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = config.server.addr;
    let served = runtime.block_on(async move {
        let app = Router::new()
            .route(
                "/hello",
                get(|| async {
                    tracing::info!(greeting = "hello", "said hello");
                    "hello from qiflow\n"
                }),
            )
            .merge(qiflow_axum::routes(observer));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "quickstart listening on http://{addr}");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    tracing::info!("quickstart stopping: flushing qiflow's pipelines");
    drop(runtime);
    // Flush every pipeline within the guard's budget, then exit 0.
    drop(guard);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: cannot serve on {addr}: {e}");
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
