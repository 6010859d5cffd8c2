//! axum load-test server for `load/run.sh`: `GET /users/{id}` answered with a small JSON body,
//! on tokio's current-thread runtime (one thread serves every connection), in one of these modes:
//!
//! | mode | what wraps the router |
//! |---|---|
//! | `bare` | nothing |
//! | `qiflow` | `qiflow_axum::layer` and `qiflow_axum::routes`, the observer from `qiflow_core::init` (global subscriber and recorder): JSON access line to a rotating file in a temp dir, stdout off, metrics, request id |
//! | `qiflow-noaccess` | the same with `[logging] access_log = false` |
//! | `qiflow-nobaseline` | `qiflow` with `[baseline] enabled = false` (what baselines cost) |
//! | `trace` | tower-http's `TraceLayer` (span and response event at `INFO`), tracing-subscriber's JSON fmt layer through `tracing_appender::non_blocking` to a daily file in a temp dir |
//! | `sentry` | sentry-tower's `NewSentryLayer` and `SentryHttpLayer` with transactions, `traces_sample_rate = 1.0`, sentry's ureq transport to the `load_sink` on `127.0.0.1:$LOAD_SENTRY_PORT` |
//! | `axum-prometheus` | `axum_prometheus::PrometheusMetricLayer::pair()` and its `/metrics` |
//! | `assembled` | `trace`, `sentry` and `axum-prometheus` together |
//! | `qiflow-nometrics` | `qiflow-noaccess` with `[metrics] enabled = false` |
//! | `qiflow-minimal` | `qiflow-nometrics` with `[baseline] enabled = false`: request id, span, extension, header, panic catching |
//! | `span` | no qiflow middleware: only a `request` span per request (INFO, the five fields qiflow's span carries at its start), entered while the router runs, under the subscriber `qiflow_core::init` installs (access line off): what the span alone costs |
//! | `span-registry` | the same span under tracing-subscriber's bare `Registry` with an `info` filter and no layers: the floor of any `tracing` span |
//! | `floor` | `span-registry` and tower-http's request-id layers (`SetRequestIdLayer` with a UUID v4, `PropagateRequestIdLayer`): a generated `x-request-id` in the request's headers and extensions and on the response, the least any request-id middleware with a span does |
//! | `qiflow-principal` | `qiflow`, plus a middleware inside it that puts a `Principal` (`u0`) in every request's extensions: what the host's authentication hands over, without a guard |
//! | `qiflow-routelayer` | `qiflow-principal` with a route layer that does nothing (`layer_fn(|s| s)`): what any axum route layer costs, the floor of a guard added with `route_layer` |
//! | `qiflow-guarded` | `qiflow-principal` with the route guarded by `qiflow_axum::require("users:read")` (`[authz]`: `u0` holds a role granting it): what a permission check adds |
//! | `bare-fail10` | `bare`, with every 10th request failing (500) |
//! | `qiflow-fail10` | `qiflow`, every 10th request failing with a `qiflow_axum::Error` that qiflow captures and forwards to Sentry (its DSN: the `load_sink`) |
//! | `otel-anchor` | the OpenTelemetry stack users assemble: tower-http's `TraceLayer` making an `INFO` span per request with the route (`otel.name`, `otel.kind`, `http.request.method`, `http.route`, and `http.response.status_code` recorded on the response), tracing-subscriber's `Registry` with an `info` filter and `tracing-opentelemetry`'s layer, over an `SdkTracerProvider` sampling every trace (`ParentBased(AlwaysOn)`) into the batch span processor (its defaults) and `opentelemetry-otlp`'s HTTP/protobuf exporter (its default client, reqwest's blocking one) to `$LOAD_OTLP_ENDPOINT` (the `load_sink`) |
//! | `qiflow-otlp` | `qiflow`, exporting every request as a span over OTLP/HTTP (`[tracing] otlp_endpoint` = `$LOAD_OTLP_ENDPOINT`, the `load_sink`; `sample_ratio = 1.0`) |
//! | `qiflow-otlp-1pct` | `qiflow-otlp` with `sample_ratio = 0.01` |
//! | `sentry-tower-fail10` | `qiflow` without a DSN plus sentry-tower's `NewSentryLayer` and `SentryHttpLayer` (no transactions); every 10th request fails and the handler reports it with `sentry::capture_error`, as sentry-tower users do (the layer does not capture 5xx), through sentry's ureq transport to the `load_sink` |
//!
//! `load_axum MODE` (or `LOAD_MODE`), listening on `127.0.0.1:$LOAD_PORT` (default 3100). It
//! stops on SIGTERM or SIGINT, flushes its pipelines and prints a `load-summary` line on stderr.

use std::process::ExitCode;

use axum::extract::{MatchedPath, Path, Request};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use qiflow_benches::load;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// What wraps the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare,
    Qiflow,
    QiflowNoAccess,
    QiflowNoBaseline,
    Trace,
    Sentry,
    AxumPrometheus,
    Assembled,
    BareFail10,
    QiflowFail10,
    SentryTowerFail10,
    Span,
    SpanRegistry,
    Floor,
    QiflowNoMetrics,
    QiflowMinimal,
    OtelAnchor,
    QiflowOtlp,
    QiflowOtlp1,
    QiflowPrincipal,
    QiflowRouteLayer,
    QiflowGuarded,
}

impl Mode {
    const ALL: [(&'static str, Mode); 22] = [
        ("bare", Mode::Bare),
        ("qiflow", Mode::Qiflow),
        ("qiflow-noaccess", Mode::QiflowNoAccess),
        ("qiflow-nobaseline", Mode::QiflowNoBaseline),
        ("trace", Mode::Trace),
        ("sentry", Mode::Sentry),
        ("axum-prometheus", Mode::AxumPrometheus),
        ("assembled", Mode::Assembled),
        ("bare-fail10", Mode::BareFail10),
        ("qiflow-fail10", Mode::QiflowFail10),
        ("sentry-tower-fail10", Mode::SentryTowerFail10),
        ("span", Mode::Span),
        ("span-registry", Mode::SpanRegistry),
        ("floor", Mode::Floor),
        ("qiflow-nometrics", Mode::QiflowNoMetrics),
        ("qiflow-minimal", Mode::QiflowMinimal),
        ("otel-anchor", Mode::OtelAnchor),
        ("qiflow-otlp", Mode::QiflowOtlp),
        ("qiflow-otlp-1pct", Mode::QiflowOtlp1),
        ("qiflow-principal", Mode::QiflowPrincipal),
        ("qiflow-routelayer", Mode::QiflowRouteLayer),
        ("qiflow-guarded", Mode::QiflowGuarded),
    ];

    fn parse(name: &str) -> Option<Mode> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }
}

/// What must live until the server has stopped, dropped in this order (each flushes).
#[derive(Default)]
struct Guards {
    sentry: Option<sentry::ClientInitGuard>,
    appender: Option<tracing_appender::non_blocking::WorkerGuard>,
    qiflow: Option<qiflow_core::Guard>,
    otel: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

fn main() -> ExitCode {
    let name = load::mode();
    let Some(mode) = Mode::parse(&name) else {
        let names: Vec<_> = Mode::ALL.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "load_axum: unknown mode {name:?}; use one of {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let dir = tempfile::Builder::new()
        .prefix("qiflow-load-axum-")
        .tempdir()
        .expect("a temp dir for the log files");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let addr = load::addr();
    let mut guards = Guards::default();
    let served = runtime.block_on(async {
        let app = app(mode, dir.path(), &mut guards);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("load_axum: {name} listening on http://{addr}");
        axum::serve(listener, app)
            .with_graceful_shutdown(load::shutdown_signal())
            .await
    });
    drop(runtime);
    let Guards {
        sentry,
        appender,
        qiflow,
        otel,
    } = guards;
    drop(sentry);
    drop(appender);
    if let Some(provider) = otel {
        // Exports what the batch processor still holds, as a service does on its way out.
        if let Err(e) = provider.shutdown() {
            eprintln!("load_axum: the OpenTelemetry provider's shutdown failed: {e}");
        }
    }
    if let Some(guard) = qiflow {
        let _report = guard.shutdown();
    }
    load::print_summary("axum", &name, Some(dir.path()));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load_axum: cannot serve on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn user(Path(id): Path<u64>) -> Json<serde_json::Value> {
    Json(load::user(id))
}

/// Every 10th request fails.
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn fails() -> bool {
    REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10 == 9
}

/// The error the failing requests carry, with a source.
fn lookup_error(id: u64) -> std::io::Error {
    std::io::Error::other(format!("user {id}: the profile store timed out"))
}

async fn user_fail10_bare(Path(id): Path<u64>) -> Result<Json<serde_json::Value>, StatusCode> {
    if fails() {
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(Json(load::user(id)))
}

async fn user_fail10_qiflow(
    Path(id): Path<u64>,
) -> Result<Json<serde_json::Value>, qiflow_axum::Error> {
    if fails() {
        return Err(lookup_error(id).into());
    }
    Ok(Json(load::user(id)))
}

async fn user_fail10_sentry(Path(id): Path<u64>) -> Result<Json<serde_json::Value>, StatusCode> {
    if fails() {
        sentry::capture_error(&lookup_error(id));
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(Json(load::user(id)))
}

/// The router of `mode`; call it inside the runtime (axum-prometheus spawns its upkeep task).
fn app(mode: Mode, dir: &std::path::Path, guards: &mut Guards) -> Router {
    let router = match mode {
        Mode::BareFail10 => Router::new().route("/users/{id}", get(user_fail10_bare)),
        Mode::QiflowFail10 => Router::new().route("/users/{id}", get(user_fail10_qiflow)),
        Mode::SentryTowerFail10 => Router::new().route("/users/{id}", get(user_fail10_sentry)),
        _ => Router::new().route("/users/{id}", get(user)),
    };
    match mode {
        Mode::Bare | Mode::BareFail10 => router,
        Mode::QiflowFail10 => {
            let mut config = load::qiflow_config(dir, true)
                .expect("the benchmark's qiflow configuration is valid");
            config.errors.sentry_dsn = Some(qiflow_core::secret::Secret::new(sink_dsn()));
            with_qiflow(router, &config, guards, |r| r)
        }
        Mode::SentryTowerFail10 => {
            let config = load::qiflow_config(dir, true)
                .expect("the benchmark's qiflow configuration is valid");
            guards.sentry = Some(init_sentry_errors_only());
            with_qiflow(router, &config, guards, |r| {
                r.layer(sentry_tower::SentryHttpLayer::new())
                    .layer(sentry_tower::NewSentryLayer::<Request>::new_from_top())
            })
        }
        Mode::Qiflow
        | Mode::QiflowNoAccess
        | Mode::QiflowNoBaseline
        | Mode::QiflowNoMetrics
        | Mode::QiflowMinimal => {
            let access = matches!(mode, Mode::Qiflow | Mode::QiflowNoBaseline);
            let mut config = load::qiflow_config(dir, access)
                .expect("the benchmark's qiflow configuration is valid");
            config.baseline.enabled = !matches!(mode, Mode::QiflowNoBaseline | Mode::QiflowMinimal);
            config.metrics.enabled = !matches!(mode, Mode::QiflowNoMetrics | Mode::QiflowMinimal);
            with_qiflow(router, &config, guards, |r| r)
        }
        Mode::QiflowOtlp | Mode::QiflowOtlp1 => {
            let mut config = load::qiflow_config(dir, true)
                .expect("the benchmark's qiflow configuration is valid");
            config.tracing.otlp_endpoint = Some(std::env::var("LOAD_OTLP_ENDPOINT").expect(
                "LOAD_OTLP_ENDPOINT: the load_sink's OTLP/HTTP traces URL, http://127.0.0.1:PORT/v1/traces",
            ));
            config.tracing.sample_ratio = if mode == Mode::QiflowOtlp { 1.0 } else { 0.01 };
            with_qiflow(router, &config, guards, |r| r)
        }
        Mode::QiflowPrincipal | Mode::QiflowRouteLayer | Mode::QiflowGuarded => {
            let mut config = load::qiflow_config(dir, true)
                .expect("the benchmark's qiflow configuration is valid");
            config.authz = qiflow_core::config::Loader::new()
                .dotenv(None)
                .toml_str(
                    "[authz.roles.reader]\npermissions = [\"users:read\"]\n[authz.users]\nu0 = [\"reader\"]\n",
                )
                .load()
                .expect("the benchmark's policy is valid")
                .authz;
            let (observer, guard) = qiflow_core::init(&config).expect("qiflow starts");
            guards.qiflow = Some(guard);
            let router = match mode {
                Mode::QiflowGuarded => {
                    router.route_layer(qiflow_axum::require(&observer, "users:read"))
                }
                Mode::QiflowRouteLayer => router.route_layer(tower::layer::layer_fn(|s| s)),
                _ => router,
            };
            router
                .layer(axum::middleware::from_fn(authenticate))
                .merge(qiflow_axum::routes(observer.clone()))
                .fallback(|| async { StatusCode::NOT_FOUND })
                .layer(qiflow_axum::layer(observer))
        }
        Mode::Trace => {
            guards.appender = Some(load::install_json_file_subscriber(dir, false));
            router.layer(trace_layer())
        }
        Mode::Sentry => {
            guards.sentry = Some(init_sentry());
            with_sentry(router)
        }
        Mode::AxumPrometheus => with_axum_prometheus(router),
        Mode::Span => {
            let config = load::qiflow_config(dir, false)
                .expect("the benchmark's qiflow configuration is valid");
            let (_observer, guard) = qiflow_core::init(&config).expect("qiflow starts");
            guards.qiflow = Some(guard);
            router.layer(tower::layer::layer_fn(load::SpanOnly::new))
        }
        Mode::SpanRegistry => {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            tracing_subscriber::registry()
                .with(tracing_subscriber::filter::LevelFilter::INFO)
                .init();
            router.layer(tower::layer::layer_fn(load::SpanOnly::new))
        }
        Mode::Floor => {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            tracing_subscriber::registry()
                .with(tracing_subscriber::filter::LevelFilter::INFO)
                .init();
            load::with_floor(router)
        }
        Mode::OtelAnchor => {
            guards.otel = Some(install_otel_subscriber());
            router.layer(
                TraceLayer::new_for_http()
                    .make_span_with(otel_request_span)
                    .on_response(
                        |response: &axum::response::Response,
                         _latency: std::time::Duration,
                         span: &tracing::Span| {
                            span.record("http.response.status_code", response.status().as_u16());
                        },
                    ),
            )
        }
        Mode::Assembled => {
            guards.appender = Some(load::install_json_file_subscriber(dir, false));
            guards.sentry = Some(init_sentry());
            // Outermost last: sentry's hub and transaction, then TraceLayer, then the metrics.
            with_sentry(with_axum_prometheus(router).layer(trace_layer()))
        }
    }
}

/// The authentication stand-in of `qiflow-principal` and `qiflow-guarded`: every request is `u0`.
async fn authenticate(
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    request
        .extensions_mut()
        .insert(qiflow_core::authz::Principal::new("u0"));
    next.run(request).await
}

/// qiflow as the quickstart mounts it: its routes, a 404 fallback, `inner`'s layers, and qiflow's
/// layer outermost. The observer comes from `qiflow_core::init` (global subscriber and recorder).
fn with_qiflow(
    router: Router,
    config: &qiflow_core::Config,
    guards: &mut Guards,
    inner: impl FnOnce(Router) -> Router,
) -> Router {
    let (observer, guard) = qiflow_core::init(config).expect("qiflow starts");
    guards.qiflow = Some(guard);
    let router = router
        .merge(qiflow_axum::routes(observer.clone()))
        .fallback(|| async { StatusCode::NOT_FOUND });
    inner(router).layer(qiflow_axum::layer(observer))
}

/// tower-http's `TraceLayer` as tutorials set it up for a JSON access log: the request span and
/// the response event at `INFO` (their defaults are `DEBUG`, which an `info` filter hides).
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    DefaultMakeSpan,
    tower_http::trace::DefaultOnRequest,
    DefaultOnResponse,
> {
    TraceLayer::new_for_http()
        .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
        .on_response(DefaultOnResponse::new().level(Level::INFO))
}

/// The request span of `otel-anchor`, as users of tracing-opentelemetry write it for
/// `TraceLayer::make_span_with`: `INFO`, named `{method} {route}` for OpenTelemetry, a server
/// span with the HTTP semantic-convention fields, the status code left to record.
fn otel_request_span(request: &Request) -> tracing::Span {
    let method = request.method();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    )
}

/// The OpenTelemetry pipeline of `otel-anchor`, installed as the global subscriber: every trace
/// sampled, the batch span processor with its defaults (a queue of 2,048 spans, batches of 512,
/// every 5 s, on its own thread), and the OTLP/HTTP protobuf exporter with its default client to
/// `$LOAD_OTLP_ENDPOINT`. Returns the provider, to shut down at the end.
///
/// # Panics
///
/// When `LOAD_OTLP_ENDPOINT` is not set, or a global subscriber is already installed.
fn install_otel_subscriber() -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let endpoint = std::env::var("LOAD_OTLP_ENDPOINT").expect(
        "LOAD_OTLP_ENDPOINT: the load_sink's OTLP/HTTP traces URL, http://127.0.0.1:PORT/v1/traces",
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .expect("the OTLP exporter builds");
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("load-bench")
                .build(),
        )
        .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::AlwaysOn,
        )))
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("load-bench");
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .expect("no other global subscriber is installed");
    opentelemetry::global::set_tracer_provider(provider.clone());
    provider
}

/// The `load_sink`'s address as a Sentry DSN.
///
/// # Panics
///
/// When `LOAD_SENTRY_PORT` is not set to a port number.
fn sink_dsn() -> String {
    let port: u16 = std::env::var("LOAD_SENTRY_PORT")
        .expect("LOAD_SENTRY_PORT: the port of load_sink, sentry's DSN target")
        .parse()
        .expect("LOAD_SENTRY_PORT must be a port number");
    format!("http://public@127.0.0.1:{port}/1")
}

/// sentry's client for error events only (no transactions), through its ureq transport.
fn init_sentry_errors_only() -> sentry::ClientInitGuard {
    let guard = sentry::init(
        sentry::ClientOptions::new()
            .dsn(&sink_dsn())
            .release("0.1.0"),
    );
    assert!(guard.is_enabled(), "sentry is enabled with the sink's DSN");
    guard
}

/// sentry's client, tracing every request, sending through its ureq transport to the sink.
///
/// # Panics
///
/// When `LOAD_SENTRY_PORT` is not set to a port number.
fn init_sentry() -> sentry::ClientInitGuard {
    let port: u16 = std::env::var("LOAD_SENTRY_PORT")
        .expect("LOAD_SENTRY_PORT: the port of load_sink, sentry's DSN target")
        .parse()
        .expect("LOAD_SENTRY_PORT must be a port number");
    let guard = sentry::init(
        sentry::ClientOptions::new()
            .dsn(&format!("http://public@127.0.0.1:{port}/1"))
            .release("0.1.0")
            .traces_sample_rate(1.0),
    );
    assert!(guard.is_enabled(), "sentry is enabled with the sink's DSN");
    guard
}

/// sentry-tower's layers as sentry's docs mount them: a hub per request, then the HTTP layer
/// starting a transaction.
fn with_sentry(router: Router) -> Router {
    router
        .layer(sentry_tower::SentryHttpLayer::new().enable_transaction())
        .layer(sentry_tower::NewSentryLayer::<Request>::new_from_top())
}

/// axum-prometheus's layer and its `/metrics` route; `pair()` installs its global recorder and
/// spawns its upkeep.
fn with_axum_prometheus(router: Router) -> Router {
    let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
    router
        .route("/metrics", get(move || async move { handle.render() }))
        .layer(layer)
}
