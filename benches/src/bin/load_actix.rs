//! actix-web load-test server for `load/run.sh`: `GET /users/{id}` answered with a small JSON
//! body, by one actix worker (`HttpServer::workers(1)`), in one of these modes:
//!
//! | mode | what wraps the app |
//! |---|---|
//! | `bare` | nothing |
//! | `qiflow` | `qiflow_actix::Observe` and `qiflow_actix::configure`, the observer from `qiflow_core::init` (global subscriber and recorder): JSON access line to a rotating file in a temp dir, stdout off, metrics, request id |
//! | `qiflow-noaccess` | the same with `[logging] access_log = false` |
//! | `assembled` | `tracing_actix_web::TracingLogger` with tracing-subscriber's JSON fmt layer through `tracing_appender::non_blocking` to a daily file (a line when the request span closes), and `actix_web_prom::PrometheusMetricsBuilder` with its `/metrics` |
//!
//! `load_actix MODE` (or `LOAD_MODE`), listening on `127.0.0.1:$LOAD_PORT` (default 3100). It
//! stops on SIGTERM or SIGINT (actix-web's own signal handling), flushes its pipelines and
//! prints a `load-summary` line on stderr.

use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use qiflow_benches::load;

/// How long actix-web lets in-flight requests finish after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

async fn user(id: web::Path<u64>) -> HttpResponse {
    HttpResponse::Ok().json(load::user(id.into_inner()))
}

fn main() -> ExitCode {
    let mode = load::mode();
    if !["bare", "qiflow", "qiflow-noaccess", "assembled"].contains(&mode.as_str()) {
        eprintln!(
            "load_actix: unknown mode {mode:?}; use one of bare, qiflow, qiflow-noaccess, assembled"
        );
        return ExitCode::from(2);
    }
    let dir = tempfile::Builder::new()
        .prefix("qiflow-load-actix-")
        .tempdir()
        .expect("a temp dir for the log files");
    let addr = load::addr();
    let mut qiflow_guard = None;
    let mut appender_guard = None;
    let served = actix_web::rt::System::new().block_on(async {
        eprintln!("load_actix: {mode} listening on http://{addr}");
        match mode.as_str() {
            "qiflow" | "qiflow-noaccess" => {
                let config = load::qiflow_config(dir.path(), mode == "qiflow")
                    .expect("the benchmark's qiflow configuration is valid");
                let (observer, guard) = qiflow_core::init(&config).expect("qiflow starts");
                qiflow_guard = Some(guard);
                HttpServer::new(move || {
                    App::new()
                        .route("/users/{id}", web::get().to(user))
                        .configure(qiflow_actix::configure(observer.clone()))
                        .wrap(qiflow_actix::Observe::new(observer.clone()))
                })
                .workers(1)
                .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
                .bind(addr)?
                .run()
                .await
            }
            "assembled" => {
                appender_guard = Some(load::install_json_file_subscriber(dir.path(), true));
                let prometheus = actix_web_prom::PrometheusMetricsBuilder::new("api")
                    .endpoint("/metrics")
                    .build()
                    .expect("actix-web-prom's registry");
                HttpServer::new(move || {
                    App::new()
                        .route("/users/{id}", web::get().to(user))
                        .wrap(prometheus.clone())
                        .wrap(tracing_actix_web::TracingLogger::default())
                })
                .workers(1)
                .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
                .bind(addr)?
                .run()
                .await
            }
            _ => {
                HttpServer::new(|| App::new().route("/users/{id}", web::get().to(user)))
                    .workers(1)
                    .shutdown_timeout(SHUTDOWN_TIMEOUT.as_secs())
                    .bind(addr)?
                    .run()
                    .await
            }
        }
    });
    drop(appender_guard);
    if let Some(guard) = qiflow_guard {
        let _report = guard.shutdown();
    }
    load::print_summary("actix", &mode, Some(dir.path()));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load_actix: cannot serve on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
