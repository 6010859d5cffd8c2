#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use tower::ServiceExt;

use super::*;

fn observer() -> (Observer, qiflow_core::Guard) {
    Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .build()
        .unwrap()
}

fn app(observer: &Observer) -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route(
            "/fail",
            get(|| async {
                Err::<String, Error>(Error::from(std::io::Error::other("disk on fire")))
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
        .merge(routes(observer.clone()))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(layer(observer.clone()))
}

async fn get_path(app: &Router, path: &str) -> Response {
    app.clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

/// A `GET` carrying the operator token of `quiet_config`.
async fn get_authed(app: &Router, path: &str) -> Response {
    app.clone()
        .oneshot(
            Request::get(path)
                .header("authorization", qiflow_core::test::authorization())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn body(response: Response) -> String {
    String::from_utf8(
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn route_templates_label_the_metrics() {
    let (observer, _guard) = observer();
    let app = app(&observer);
    for i in 0..3 {
        assert_eq!(get_path(&app, &format!("/users/{i}")).await.status(), 200);
    }
    // 10,000 distinct unknown paths: one series, not 10,000 (axum-prometheus adds one per path).
    for i in 0..10_000 {
        assert_eq!(
            get_path(&app, &format!("/scanner/probe-{i}.php"))
                .await
                .status(),
            404
        );
    }
    let text = body(get_path(&app, "/metrics").await).await;
    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="unmatched",status="404"} 10000"#
        ),
        "{text}"
    );
    let series = text
        .lines()
        .filter(|l| l.starts_with("http_server_requests_total{"))
        .count();
    assert_eq!(series, 2, "{text}");
    assert!(!text.contains("probe-"), "raw paths leaked into labels");
    assert!(text.contains("# HELP http_server_requests_total"));
    assert!(text.contains("http_server_request_duration_seconds_bucket"));
    assert!(text.contains("qiflow_build_info{"));
}

#[tokio::test]
async fn request_ids_are_generated_honoured_and_echoed() {
    let (observer, _guard) = observer();
    let app = app(&observer);
    let generated = get_path(&app, "/users/1").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "7", "UUID v7: {id}");
    let honoured = app
        .clone()
        .oneshot(
            Request::get("/users/1")
                .header("x-request-id", "abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(honoured.headers()["x-request-id"], "abc-123");
    let replaced = app
        .clone()
        .oneshot(
            Request::get("/users/1")
                .header("x-request-id", "bad id\"")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "bad id\"");
}

#[tokio::test]
async fn panics_answer_500_and_the_server_lives_on() {
    let (observer, _guard) = observer();
    let app = app(&observer);
    assert_eq!(get_path(&app, "/panic").await.status(), 500);
    assert_eq!(get_path(&app, "/users/1").await.status(), 200);
    assert_eq!(get_path(&app, "/fail").await.status(), 500);
    let text = body(get_path(&app, "/metrics").await).await;
    assert!(
        text.contains(r#"http_server_requests_total{method="GET",route="/panic",status="500"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_requests_total{method="GET",route="/fail",status="500"} 1"#),
        "{text}"
    );
}

/// The 500s qiflow makes (after a panic, and for `qiflow_axum::Error`) have a short JSON body
/// with the request id and no internals; a handler's own 500 passes through unchanged.
#[tokio::test]
async fn qiflow_500s_have_a_json_body_with_the_request_id_and_a_handlers_own_is_kept() {
    use tracing_subscriber::layer::SubscriberExt;

    let (observer, _guard) = observer();
    // The handler error finds its request id in the request span, through qiflow's layers
    // (`init` installs them); this test's runtime runs on this thread.
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(observer.log_layer()));
    // Other tests run the middleware without a subscriber: keep the `request` span enabled.
    qiflow_core::test::enable_every_callsite();
    let app = app(&observer).route(
        "/own",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "the handler's own body") }),
    );
    for path in ["/panic", "/fail"] {
        let response = get_path(&app, path).await;
        assert_eq!(response.status(), 500, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let text = body(response).await;
        assert_eq!(
            text,
            format!(r#"{{"error":"internal server error","request_id":"{id}"}}"#),
            "{path}"
        );
        assert!(
            !text.contains("boom") && !text.contains("disk on fire"),
            "{text}"
        );
    }
    let own = get_path(&app, "/own").await;
    assert_eq!(own.status(), 500);
    assert_eq!(own.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body(own).await, "the handler's own body");
}

#[tokio::test]
async fn health_endpoints_answer_json() {
    let (observer, _guard) = observer();
    let app = app(&observer);
    for path in ["/health/live", "/health/ready", "/health"] {
        let response = get_authed(&app, path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let json: serde_json::Value = serde_json::from_str(&body(response).await).unwrap();
        assert_eq!(json["status"], "healthy", "{path}");
        assert!(json["checks"].is_object());
    }
    // Without a token, readiness answers its status only.
    for path in ["/health/ready", "/health"] {
        let anonymous = body(get_path(&app, path).await).await;
        assert_eq!(anonymous, r#"{"status":"healthy"}"#, "{path}");
    }
}

#[tokio::test]
async fn readiness_runs_checks_and_liveness_ignores_them() {
    use qiflow_core::health::CheckResult;
    let (observer, _guard) = Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .health_check("database", || async {
            CheckResult::unhealthy("connection refused")
        })
        .health_check("cache", || async { CheckResult::degraded("slow") })
        .build()
        .unwrap();
    let app = app(&observer);
    let live = get_path(&app, "/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = get_authed(&app, "/health/ready").await;
    assert_eq!(ready.status(), 503);
    let json: serde_json::Value = serde_json::from_str(&body(ready).await).unwrap();
    assert_eq!(json["status"], "unhealthy");
    assert_eq!(json["checks"]["database"]["status"], "unhealthy");
    assert_eq!(json["checks"]["database"]["detail"], "connection refused");
    assert_eq!(json["checks"]["cache"]["status"], "degraded");
    assert_eq!(json["checks"]["pipeline:logs"]["status"], "healthy");
}

#[tokio::test]
async fn a_health_token_hides_details_and_guards_metrics() {
    let mut config = qiflow_core::test::quiet_config();
    config.health.token = Some("s3cret-token".into());
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = app(&observer);
    let anonymous = body(get_path(&app, "/health/ready").await).await;
    assert_eq!(anonymous, r#"{"status":"healthy"}"#);
    assert_eq!(get_path(&app, "/metrics").await.status(), 401);
    let with_token = |path: &str| {
        Request::get(path)
            .header("authorization", "Bearer s3cret-token")
            .body(Body::empty())
            .unwrap()
    };
    let detailed = body(
        app.clone()
            .oneshot(with_token("/health/ready"))
            .await
            .unwrap(),
    )
    .await;
    assert!(detailed.contains("\"checks\""), "{detailed}");
    let metrics = app.clone().oneshot(with_token("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    // The alerts API is guarded by the same token.
    assert_eq!(get_path(&app, "/qiflow/api/alerts").await.status(), 401);
    let denied = app
        .clone()
        .oneshot(
            Request::post("/qiflow/api/alerts/silences")
                .body(Body::from(r#"{"matchers":{"a":"b"},"duration":"1h"}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let alerts = app
        .clone()
        .oneshot(with_token("/qiflow/api/alerts"))
        .await
        .unwrap();
    assert_eq!(alerts.status(), 200);
    let wrong = app
        .clone()
        .oneshot(
            Request::get("/metrics")
                .header("authorization", "Bearer s3cret-tokem")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn endpoints_move_to_the_internal_listener() {
    let mut config = qiflow_core::test::quiet_config();
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = app(&observer);
    assert_eq!(get_path(&app, "/metrics").await.status(), 404);
    let addr = serve_internal(observer.clone()).await.unwrap().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("qiflow_build_info"), "{response}");
}

#[tokio::test]
async fn the_alerts_api_shows_active_alerts_and_manages_silences() {
    let (observer, _guard) = observer();
    let app = app(&observer);
    observer.alert(
        qiflow_core::alert::Alert::new("disk_full", qiflow_core::alert::AlertLevel::Critical)
            .label("host", "db-1"),
    );
    let o = observer.clone();
    tokio::task::spawn_blocking(move || o.flush(std::time::Duration::from_secs(10)))
        .await
        .unwrap();
    let response = get_authed(&app, "/qiflow/api/alerts").await;
    assert_eq!(response.status(), 200);
    let view: serde_json::Value = serde_json::from_str(&body(response).await).unwrap();
    assert_eq!(view["active"][0]["alert"]["name"], "disk_full");
    assert_eq!(view["channels"][0]["name"], "log");

    let create = |json: &'static str| {
        Request::post("/qiflow/api/alerts/silences")
            .header("content-type", "application/json")
            .header("authorization", qiflow_core::test::authorization())
            .body(Body::from(json))
            .unwrap()
    };
    let response = app
        .clone()
        .oneshot(create(
            r#"{"matchers":{"host":"db-*"},"duration":"2h","comment":"swap"}"#,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let silence: serde_json::Value = serde_json::from_str(&body(response).await).unwrap();
    let id = silence["id"].as_str().unwrap().to_owned();
    let view: serde_json::Value =
        serde_json::from_str(&body(get_authed(&app, "/qiflow/api/alerts").await).await).unwrap();
    assert_eq!(view["silenced"][0]["comment"], "swap");

    let response = app
        .clone()
        .oneshot(create(r#"{"matchers":{}}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let delete = |id: &str| {
        Request::delete(format!("/qiflow/api/alerts/silences/{id}"))
            .header("authorization", qiflow_core::test::authorization())
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        app.clone().oneshot(delete(&id)).await.unwrap().status(),
        204
    );
    assert_eq!(
        app.clone().oneshot(delete(&id)).await.unwrap().status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_routes_are_audited_with_the_actor_header_and_served_by_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qiflow_core::test::quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.path().join("audit");
    config.audit.routes = vec!["* /users/*".into(), "GET /fail".into()];
    config.audit.actor_header = "X-User".into();
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = app(&observer);
    let request = Request::get("/users/7")
        .header("x-user", "alice")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 200);
    assert_eq!(get_path(&app, "/fail").await.status(), 500);
    assert_eq!(get_path(&app, "/health/live").await.status(), 200); // not audited
    assert!(observer.flush(std::time::Duration::from_secs(5)));
    let response = get_authed(&app, "/qiflow/api/audit?limit=10").await;
    assert_eq!(response.status(), 200);
    let page: serde_json::Value = serde_json::from_str(&body(response).await).unwrap();
    let records = page["records"].as_array().unwrap();
    // Newest first; the oldest is this start of the service.
    assert_eq!(records.len(), 3, "{page}");
    assert_eq!(records[2]["action"], "service.deployed");
    assert_eq!(records[0]["actor"], "anonymous");
    assert_eq!(records[0]["action"], "GET /fail");
    assert_eq!(records[0]["outcome"], "failure");
    assert_eq!(records[1]["actor"], "alice");
    assert_eq!(records[1]["action"], "GET /users/{id}");
    assert_eq!(records[1]["resource"], "/users/7");
    assert_eq!(records[1]["outcome"], "success");
    drop(guard);
    assert_eq!(
        qiflow_core::audit::verify_dir(&dir.path().join("audit"), None)
            .unwrap()
            .records,
        3
    );
}

#[derive(Clone, Default)]
struct Reports(std::sync::Arc<std::sync::Mutex<Vec<qiflow_core::capture::ErrorReport>>>);

impl qiflow_core::capture::Reporter for Reports {
    fn name(&self) -> &'static str {
        "test"
    }

    fn report<'a>(
        &'a self,
        report: &'a qiflow_core::capture::ErrorReport,
    ) -> qiflow_core::worker::BoxFuture<'a, Result<(), qiflow_core::worker::SinkError>> {
        self.0.lock().unwrap().push(report.clone());
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_errors_carry_no_credentials_from_headers_or_the_url() {
    let reports = Reports::default();
    let (observer, _guard) = Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .reporter(reports.clone())
        .build()
        .unwrap();
    let app = app(&observer);
    let request = Request::get("/fail?page=2&token=CANARY&password=CANARY")
        .header("authorization", "Bearer CANARY")
        .header("cookie", "session=CANARY")
        .header("x-api-key", "CANARY")
        .header("host", "admin:CANARY@shop.test")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 500);
    let o = observer.clone();
    tokio::task::spawn_blocking(move || o.flush(std::time::Duration::from_secs(10)))
        .await
        .unwrap();
    let reports = reports.0.lock().unwrap().clone();
    assert_eq!(reports.len(), 1);
    let json = serde_json::to_string(&reports[0]).unwrap();
    assert!(
        !json.contains("CANARY"),
        "a credential reached the report: {json}"
    );
    let request = reports[0].request.as_ref().unwrap();
    assert_eq!(request.route, "/fail");
    assert_eq!(
        request.url,
        "http://shop.test/fail?page=2&token=[REDACTED]&password=[REDACTED]"
    );
    assert_eq!(reports[0].detail.top_message(), "disk on fire");
    assert!(reports[0].detail.type_name().ends_with("io::error::Error"));
}
