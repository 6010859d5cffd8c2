#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, error, test, web};
use qiflow_core::{Guard, Observer};

use super::*;

fn observer() -> (Observer, Guard) {
    Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .build()
        .unwrap()
}

/// Carries the operator token of `quiet_config`.
fn authed(request: test::TestRequest) -> test::TestRequest {
    request.insert_header(("authorization", qiflow_core::test::authorization()))
}

/// The demo routes behind the middleware, and the qiflow endpoints.
fn app(
    observer: &Observer,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    > + use<>,
> {
    App::new()
        .route("/users/{id}", web::get().to(|| async { "user" }))
        .route(
            "/whoami",
            web::get().to(|id: RequestId, request: HttpRequest| async move {
                let header = request
                    .headers()
                    .get("x-request-id")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(header, id.as_str(), "the request header carries the id");
                id.to_string()
            }),
        )
        .route(
            "/service",
            web::get().to(|Qiflow(observer): Qiflow| async move {
                observer.config().service.name.clone()
            }),
        )
        .route(
            "/bad",
            web::get().to(|| async { Err::<String, _>(error::ErrorBadRequest("bad input")) }),
        )
        .route(
            "/panic",
            web::get().to(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
        .route(
            "/own-id",
            web::get().to(|| async {
                HttpResponse::Ok()
                    .insert_header(("x-request-id", "mine"))
                    .finish()
            }),
        )
        .route("/hang", web::get().to(std::future::pending::<String>))
        .configure(configure(observer.clone()))
        .wrap(Observe::new(observer.clone()))
}

fn count(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[actix_web::test]
async fn route_templates_label_the_metrics() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    for i in 0..3 {
        let response = test::call_service(
            &app,
            test::TestRequest::get()
                .uri(&format!("/users/{i}"))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for i in 0..50 {
        let uri = format!("/scanner/probe-{i}.php");
        let response =
            test::call_service(&app, test::TestRequest::get().uri(&uri).to_request()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"}"#
        ),
        Some(3),
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(50),
        "{text}"
    );
    assert!(!text.contains("probe-"), "raw paths leaked into labels");
    assert!(text.contains(r#"http_server_request_duration_seconds_bucket{method="GET",route="/users/{id}",status="200",le="#), "{text}");
    assert!(
        text.contains(r#"http_server_active_requests{method="GET",route="/users/{id}"} 0"#),
        "{text}"
    );
}

#[actix_web::test]
async fn paths_under_a_scope_that_match_nothing_are_unmatched() {
    let (observer, _guard) = observer();
    let app = test::init_service(
        App::new()
            .configure(configure(observer.clone()))
            .service(web::scope("/api").route("/items/{id}", web::get().to(|| async { "item" })))
            .wrap(Observe::new(observer.clone())),
    )
    .await;
    for uri in [
        "/api/items/1",
        "/api/nothing-here",
        "/health/nope",
        "/health/live",
        "/health",
    ] {
        test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
    }
    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/api/items/{id}",status="200"}"#
        ),
        Some(1),
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(2),
        "{text}"
    );
    assert!(
        !text.contains(r#"route="/health"#),
        "probes are not observed: {text}"
    );
}

#[actix_web::test]
async fn the_qiflow_endpoints_are_not_observed() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    for path in ["/metrics", "/health/live", "/health/ready", "/health"] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(!response.headers().contains_key("x-request-id"), "{path}");
    }
    let text = observer.render_metrics();
    assert!(!text.contains("http_server_requests_total{"), "{text}");
}

#[actix_web::test]
async fn request_ids_are_generated_honoured_and_echoed() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;

    let response =
        test::call_service(&app, test::TestRequest::get().uri("/whoami").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "7", "UUID v7: {id}");
    assert_eq!(
        test::read_body(response).await,
        id.as_bytes(),
        "the handler saw the same id"
    );

    let honoured = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(("x-request-id", "abc-123"))
            .to_request(),
    )
    .await;
    assert_eq!(honoured.headers().get("x-request-id").unwrap(), "abc-123");
    assert_eq!(test::read_body(honoured).await, "abc-123");

    for insane in ["bad id\"", &"a".repeat(129)] {
        let replaced = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/whoami")
                .insert_header(("x-request-id", insane))
                .to_request(),
        )
        .await;
        let echoed = replaced
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_ne!(echoed, insane);
        assert_eq!(echoed.len(), 36, "{echoed}");
    }

    // A response that sets its own id keeps it.
    let own = test::call_service(&app, test::TestRequest::get().uri("/own-id").to_request()).await;
    assert_eq!(own.headers().get("x-request-id").unwrap(), "mine");

    // Unmatched requests get an id too.
    let missing =
        test::call_service(&app, test::TestRequest::get().uri("/nope").to_request()).await;
    assert!(missing.headers().contains_key("x-request-id"));
}

#[actix_web::test]
async fn panics_answer_500_and_the_server_lives_on() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    for _ in 0..2 {
        let error = test::try_call_service(
            &app,
            test::TestRequest::get()
                .uri("/panic")
                .insert_header(("x-request-id", "p-1"))
                .to_request(),
        )
        .await
        .expect_err("a panic is answered with an error actix-web turns into a 500");
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers().get("x-request-id").unwrap(), "p-1");
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "application/json"
        );
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        assert_eq!(
            body, r#"{"error":"internal server error","request_id":"p-1"}"#,
            "the request id, nothing of the panic"
        );
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/users/1").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/panic",status="500"}"#
        ),
        Some(2),
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"}"#
        ),
        Some(2),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_active_requests{method="GET",route="/panic"} 0"#),
        "{text}"
    );
}

/// `qiflow_actix::Error`: a 500 with qiflow's JSON body and the request id (found in the
/// request span, through qiflow's layers), its message in the access line, never in the body.
#[actix_web::test]
async fn a_handler_error_is_a_json_500_with_the_request_id() {
    use tracing_subscriber::layer::SubscriberExt;

    let (observer, _guard) = observer();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(observer.log_layer()));
    // Other tests run the middleware without a subscriber: keep the `request` span enabled.
    qiflow_core::test::enable_every_callsite();
    let app = test::init_service(
        App::new()
            .route(
                "/fail",
                web::get().to(|| async {
                    let port: u16 = "not a number".parse()?;
                    Ok::<_, Error>(port.to_string())
                }),
            )
            .wrap(Observe::new(observer.clone())),
    )
    .await;
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/fail")
            .insert_header(("x-request-id", "f-1"))
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(response.headers().get("x-request-id").unwrap(), "f-1");
    let body = test::read_body(response).await;
    assert_eq!(
        body,
        r#"{"error":"internal server error","request_id":"f-1"}"#
    );
    // The error is reported, not sent.
    let o = observer.clone();
    assert!(
        std::thread::spawn(move || o.flush(Duration::from_secs(10)))
            .join()
            .unwrap()
    );
    let groups = observer.error_store().groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].message, "invalid digit found in string");
}

#[actix_web::test]
async fn a_panic_in_an_inner_call_is_caught_too() {
    let (observer, _guard) = observer();
    let app = test::init_service(
        App::new()
            .route("/", web::get().to(|| async { "ok" }))
            .wrap_fn(|request, service| {
                if request.query_string() == "panic" {
                    panic!("synchronous boom");
                }
                service.call(request)
            })
            .wrap(Observe::new(observer.clone())),
    )
    .await;
    let error = test::try_call_service(&app, test::TestRequest::get().uri("/?panic").to_request())
        .await
        .expect_err("answered with an error");
    assert_eq!(
        error.error_response().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(
        error
            .error_response()
            .headers()
            .contains_key("x-request-id")
    );
    let response = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/",status="500"}"#
        ),
        Some(1),
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/",status="200"}"#
        ),
        Some(1),
        "{text}"
    );
}

#[actix_web::test]
async fn handler_errors_keep_their_status_and_are_counted() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/bad").to_request()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response
            .response()
            .error()
            .map(ToString::to_string)
            .as_deref(),
        Some("bad input")
    );
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        test::read_body(response).await,
        "bad input",
        "the response is unchanged"
    );
    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/bad",status="400"}"#
        ),
        Some(1),
        "{text}"
    );
}

#[actix_web::test]
async fn inner_service_errors_are_returned_unchanged() {
    let (observer, _guard) = observer();
    let app = test::init_service(
        App::new()
            .route("/", web::get().to(|| async { "ok" }))
            .wrap_fn(|request, service| {
                let fut = service.call(request);
                async move {
                    let _ = fut.await?;
                    Err::<ServiceResponse, _>(error::ErrorForbidden("no entry"))
                }
            })
            .wrap(Observe::new(observer.clone())),
    )
    .await;
    let error = test::try_call_service(&app, test::TestRequest::get().uri("/").to_request())
        .await
        .expect_err("the inner error comes through");
    assert_eq!(error.to_string(), "no entry");
    assert_eq!(
        error.as_response_error().status_code(),
        StatusCode::FORBIDDEN
    );
    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/",status="403"}"#
        ),
        Some(1),
        "{text}"
    );
}

#[actix_web::test]
async fn client_disconnects_are_counted() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    let call = app.call(test::TestRequest::get().uri("/hang").to_request());
    assert!(
        actix_web::rt::time::timeout(Duration::from_millis(20), call)
            .await
            .is_err()
    );
    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"qiflow_client_disconnects_total{method="GET",route="/hang"}"#
        ),
        Some(1),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_active_requests{method="GET",route="/hang"} 0"#),
        "{text}"
    );
    assert!(!text.contains(r#"route="/hang",status="#), "{text}");
}

#[actix_web::test]
async fn the_observer_extractor_finds_the_observer() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    let body =
        test::call_and_read_body(&app, test::TestRequest::get().uri("/service").to_request()).await;
    assert_eq!(body, observer.config().service.name.as_bytes());

    // Without the middleware: from the app data, or a 500 that says what to add.
    let handler = |Qiflow(observer): Qiflow| async move { observer.config().service.name.clone() };
    let with_data = test::init_service(
        App::new()
            .app_data(web::Data::new(observer.clone()))
            .route("/", web::get().to(handler)),
    )
    .await;
    let response =
        test::call_service(&with_data, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bare = test::init_service(App::new().route("/", web::get().to(handler))).await;
    let response = test::call_service(&bare, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bare = test::init_service(App::new().route(
        "/",
        web::get().to(|id: RequestId| async move { id.to_string() }),
    ))
    .await;
    let response = test::call_service(&bare, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[actix_web::test]
async fn the_observer_comes_from_the_app_data_when_configure_put_it_there() {
    let (observer, _guard) = observer();
    let (other, _other_guard) = self::observer();
    // What the extractor gets, and whether the request's extensions carry a copy.
    let handler = |request: actix_web::HttpRequest, Qiflow(found): Qiflow| async move {
        let copied = request.extensions().get::<Observer>().is_some();
        format!("{} {copied}", found.config().service.name)
    };
    let who = || test::TestRequest::get().uri("/who").to_request();
    let with_configure = test::init_service(
        App::new()
            .wrap(Observe::new(observer.clone()))
            .configure(crate::configure(observer.clone()))
            .route("/who", web::get().to(handler)),
    )
    .await;
    let name = &observer.config().service.name;
    assert_eq!(
        test::call_and_read_body(&with_configure, who()).await,
        format!("{name} false")
    );

    // Without configure, or with another observer in the app data, each request carries the
    // middleware's own observer, which the extractor prefers.
    let without = test::init_service(
        App::new()
            .wrap(Observe::new(observer.clone()))
            .route("/who", web::get().to(handler)),
    )
    .await;
    assert_eq!(
        test::call_and_read_body(&without, who()).await,
        format!("{name} true")
    );
    let other_data = test::init_service(
        App::new()
            .wrap(Observe::new(observer.clone()))
            .app_data(other.clone())
            .route("/who", web::get().to(handler)),
    )
    .await;
    assert_eq!(
        test::call_and_read_body(&other_data, who()).await,
        format!("{name} true")
    );
}

#[actix_web::test]
async fn the_extensions_hold_the_request_id() {
    let (observer, _guard) = observer();
    let app = test::init_service(
        App::new()
            .route(
                "/",
                web::get().to(|request: HttpRequest| async move {
                    request
                        .extensions()
                        .get::<RequestId>()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                }),
            )
            .wrap(Observe::new(observer.clone())),
    )
    .await;
    let response = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/")
            .insert_header(("x-request-id", "ext-1"))
            .to_request(),
    )
    .await;
    assert_eq!(test::read_body(response).await, "ext-1");
}

#[actix_web::test]
async fn health_endpoints_answer_json() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    for path in ["/health/live", "/health/ready", "/health"] {
        let response = test::call_service(
            &app,
            authed(test::TestRequest::get().uri(path)).to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "application/json",
            "{path}"
        );
        let json: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(json["status"], "healthy", "{path}");
        assert!(json["checks"].is_object(), "{path}");
        assert_eq!(json["service"], observer.config().service.name, "{path}");
    }
    // Without a token, readiness answers its status only.
    for path in ["/health/ready", "/health"] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(test::read_body(response).await, r#"{"status":"healthy"}"#);
    }
}

#[actix_web::test]
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
    let app = test::init_service(app(&observer)).await;
    let live = test::call_service(
        &app,
        test::TestRequest::get().uri("/health/live").to_request(),
    )
    .await;
    assert_eq!(live.status(), StatusCode::OK);
    for path in ["/health/ready", "/health"] {
        let ready = test::call_service(
            &app,
            authed(test::TestRequest::get().uri(path)).to_request(),
        )
        .await;
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let json: serde_json::Value = test::read_body_json(ready).await;
        assert_eq!(json["status"], "unhealthy");
        assert_eq!(json["checks"]["database"]["status"], "unhealthy");
        assert_eq!(json["checks"]["database"]["detail"], "connection refused");
        assert_eq!(json["checks"]["cache"]["status"], "degraded");
        assert_eq!(json["checks"]["pipeline:logs"]["status"], "healthy");
    }
}

#[actix_web::test]
async fn a_health_token_hides_details_and_guards_metrics() {
    let mut config = qiflow_core::test::quiet_config();
    config.health.token = Some("s3cret-token".into());
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = test::init_service(app(&observer)).await;
    let get = |path: &str, token: Option<&str>| {
        let mut request = test::TestRequest::get().uri(path);
        if let Some(token) = token {
            request = request.insert_header(("authorization", format!("Bearer {token}")));
        }
        request.to_request()
    };
    let anonymous = test::call_and_read_body(&app, get("/health/ready", None)).await;
    assert_eq!(anonymous, r#"{"status":"healthy"}"#);
    let live = test::call_and_read_body(&app, get("/health/live", None)).await;
    assert!(
        String::from_utf8_lossy(&live).contains("\"service\""),
        "liveness needs no token"
    );
    let response = test::call_service(&app, get("/metrics", None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let detailed = test::call_and_read_body(&app, get("/health/ready", Some("s3cret-token"))).await;
    assert!(String::from_utf8_lossy(&detailed).contains("\"checks\""));
    let response = test::call_service(&app, get("/metrics", Some("s3cret-token"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = test::call_service(&app, get("/metrics", Some("s3cret-tokem"))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// A blocking HTTP/1.1 GET over loopback, off the actix worker.
async fn http_get(
    addr: std::net::SocketAddr,
    path: &'static str,
    request_id: &'static str,
) -> String {
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: qiflow\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap()
}

#[actix_web::test]
async fn endpoints_move_to_the_internal_listener() {
    let mut config = qiflow_core::test::quiet_config();
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = test::init_service(app(&observer)).await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let addr = serve_internal(observer.clone()).unwrap().unwrap();
    let metrics = http_get(addr, "/metrics", "m-1").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("qiflow_build_info"), "{metrics}");
    let live = http_get(addr, "/health/live", "m-2").await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");

    let (plain, _plain_guard) = self::observer();
    assert_eq!(serve_internal(plain).unwrap(), None);
}

#[actix_web::test]
async fn configure_serves_the_health_endpoints() {
    let (observer, _guard) = observer();
    let app = test::init_service(App::new().configure(configure(observer))).await;
    for path in ["/health/live", "/health/ready", "/health"] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let json: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(json["status"], "healthy", "{path}");
    }
}

#[actix_web::test]
async fn metrics_endpoint_serves_prometheus_text() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    test::call_service(&app, test::TestRequest::get().uri("/users/1").to_request()).await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/plain; version=0.0.4"
    );
    let text = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    assert!(text.contains("# HELP http_server_requests_total"), "{text}");
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="/users/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("qiflow_build_info{"), "{text}");
}

#[actix_web::test]
async fn endpoints_follow_the_configured_paths() {
    let mut config = qiflow_core::test::quiet_config();
    config.metrics.path = "/internal/metrics".to_owned();
    config.health.path = "/status/".to_owned();
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = test::init_service(App::new().configure(configure(observer))).await;
    for (path, status) in [
        ("/internal/metrics", 200),
        ("/status/live", 200),
        ("/status/ready", 200),
        ("/status", 200),
        ("/metrics", 404),
        ("/health/live", 404),
    ] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
    }

    let mut config = qiflow_core::test::quiet_config();
    config.metrics.enabled = false;
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = test::init_service(App::new().configure(configure(observer))).await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// Over a real socket: actix-web turns the panic answer into a 500 with the request id, and the
/// worker keeps serving.
#[actix_web::test]
async fn a_real_server_answers_a_panic_with_500_and_lives_on() {
    let (observer, _guard) = observer();
    let server_observer = observer.clone();
    let server = actix_web::HttpServer::new(move || app(&server_observer))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let panicked = http_get(addr, "/panic", "wire-1").await;
    assert!(panicked.starts_with("HTTP/1.1 500"), "{panicked}");
    assert!(
        panicked
            .to_ascii_lowercase()
            .contains("x-request-id: wire-1"),
        "{panicked}"
    );
    let fine = http_get(addr, "/users/1", "wire-2").await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
    assert!(
        fine.to_ascii_lowercase().contains("x-request-id: wire-2"),
        "{fine}"
    );
    assert!(fine.ends_with("user"), "{fine}");
    handle.stop(true).await;

    let text = observer.render_metrics();
    assert_eq!(
        count(
            &text,
            r#"http_server_requests_total{method="GET",route="/panic",status="500"}"#
        ),
        Some(1),
        "{text}"
    );
}

#[actix_web::test]
async fn the_alerts_api_shows_active_alerts_and_manages_silences() {
    let (observer, _guard) = observer();
    let app = test::init_service(app(&observer)).await;
    observer.alert(
        qiflow_core::alert::Alert::new("disk_full", qiflow_core::alert::AlertLevel::Critical)
            .label("host", "db-1"),
    );
    let o = observer.clone();
    std::thread::spawn(move || o.flush(Duration::from_secs(10)))
        .join()
        .unwrap();
    let response = test::call_service(
        &app,
        authed(test::TestRequest::get().uri("/qiflow/api/alerts")).to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let view: serde_json::Value = test::read_body_json(response).await;
    assert_eq!(view["active"][0]["alert"]["name"], "disk_full");

    let response = test::call_service(
        &app,
        authed(test::TestRequest::post())
            .uri("/qiflow/api/alerts/silences")
            .insert_header(("content-type", "application/json"))
            .set_payload(r#"{"matchers":{"host":"db-*"},"duration":"2h"}"#)
            .to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let silence: serde_json::Value = test::read_body_json(response).await;
    let id = silence["id"].as_str().unwrap().to_owned();
    let delete = |id: &str| {
        authed(test::TestRequest::delete())
            .uri(&format!("/qiflow/api/alerts/silences/{id}"))
            .to_request()
    };
    assert_eq!(
        test::call_service(&app, delete(&id)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        test::call_service(&app, delete(&id)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[actix_web::test]
async fn configured_routes_are_audited_with_the_actor_header_and_served_by_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qiflow_core::test::quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.path().join("audit");
    config.audit.routes = vec!["GET /users/{id}".into(), "* /panic".into()];
    config.audit.actor_header = "x-user".into();
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    let app = test::init_service(app(&observer)).await;
    let request = test::TestRequest::get()
        .uri("/users/9")
        .insert_header(("x-user", "bob"))
        .to_request();
    assert_eq!(test::call_service(&app, request).await.status(), 200);
    let panicked =
        test::try_call_service(&app, test::TestRequest::get().uri("/panic").to_request())
            .await
            .unwrap_err();
    assert_eq!(panicked.as_response_error().status_code(), 500);
    assert!(observer.flush(Duration::from_secs(5)));
    let response = test::call_service(
        &app,
        authed(test::TestRequest::get().uri("/qiflow/api/audit?limit=10")).to_request(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let page: serde_json::Value = test::read_body_json(response).await;
    let records = page["records"].as_array().unwrap();
    // Newest first; the oldest is this start of the service.
    assert_eq!(records.len(), 3, "{page}");
    assert_eq!(records[2]["action"], "service.deployed");
    assert_eq!(records[0]["action"], "GET /panic");
    assert_eq!(records[0]["outcome"], "failure");
    assert_eq!(records[1]["actor"], "bob");
    assert_eq!(records[1]["action"], "GET /users/{id}");
    assert_eq!(records[1]["outcome"], "success");
    drop(guard);
    assert_eq!(
        qiflow_core::audit::verify_dir(&dir.path().join("audit"), None)
            .unwrap()
            .records,
        3
    );
}
