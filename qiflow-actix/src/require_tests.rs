#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{App, HttpMessage, HttpResponse, guard, test, web};
use qiflow_core::authz::Principal;
use qiflow_core::{Config, Guard, Observer};

use super::*;

/// The policy of the tests: `viewer` reads orders, `admin` inherits it and does anything to
/// them; the configuration makes `demo` a viewer and `admin` an admin.
fn config(state: &tempfile::TempDir) -> Config {
    let mut config = qiflow_core::test::quiet_config();
    config.service.state_dir = state.path().into();
    config.authz = qiflow_core::config::Loader::new()
        .toml_str(
            "[authz.roles.viewer]\npermissions=[\"orders:read\"]\n\
             [authz.roles.admin]\ninherits=[\"viewer\"]\npermissions=[\"orders:*\"]\n\
             [authz.users]\ndemo=[\"viewer\"]\nadmin=[\"admin\"]\n",
        )
        .load()
        .unwrap()
        .authz;
    config
}

fn observer(config: Config) -> (Observer, Guard) {
    Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap()
}

/// `GET /orders` needs `orders:read`, `POST /orders` `orders:write`, and everything under the
/// `/admin` scope `orders:delete`. The host's authentication is a trusted `x-user` header (with
/// host roles in `x-role`). `ran` counts the handlers that ran. `Observe` is outermost.
fn app(
    observer: &Observer,
    ran: &Arc<AtomicUsize>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl actix_web::body::MessageBody + use<>>,
        Error = actix_web::Error,
        InitError = (),
    > + use<>,
> {
    let handler = |ran: &Arc<AtomicUsize>, body: &'static str| {
        let ran = ran.clone();
        move || {
            ran.fetch_add(1, Ordering::SeqCst);
            async move { HttpResponse::Ok().body(body) }
        }
    };
    App::new()
        .service(
            web::resource("/orders")
                .guard(guard::Get())
                .to(handler(ran, "the orders"))
                .wrap(Require::new(observer, "orders:read")),
        )
        .service(
            web::resource("/orders")
                .guard(guard::Post())
                .to(handler(ran, "created"))
                .wrap(Require::new(observer, "orders:write")),
        )
        .service(
            web::scope("/admin")
                .route("/orders/{id}", web::delete().to(handler(ran, "deleted")))
                .wrap(Require::new(observer, "orders:delete")),
        )
        .wrap_fn(|request, service| {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if let Some(user) = header("x-user") {
                let mut principal = Principal::new(user);
                if let Some(role) = header("x-role") {
                    principal = principal.role(role);
                }
                request.extensions_mut().insert(principal);
            }
            service.call(request)
        })
        .wrap(Observe::new(observer.clone()))
}

fn as_user(request: test::TestRequest, user: &str) -> test::TestRequest {
    request.insert_header(("x-user", user))
}

/// The status, the content type, the `x-request-id` and the body of a response.
async fn answer(
    response: ServiceResponse<impl actix_web::body::MessageBody>,
) -> (StatusCode, Option<String>, Option<String>, String) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, content_type, request_id) = (
        response.status(),
        header("content-type"),
        header("x-request-id"),
    );
    let body = test::read_body(response).await;
    (
        status,
        content_type,
        request_id,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[actix_web::test]
async fn no_principal_is_answered_401_with_json_and_the_handler_does_not_run() {
    let state = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(config(&state));
    let ran = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(app(&observer, &ran)).await;

    let response =
        test::call_service(&app, test::TestRequest::post().uri("/orders").to_request()).await;
    let (status, content_type, request_id, body) = answer(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert!(
        request_id.is_some(),
        "Observe outside the guard still answers the id"
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "unauthenticated", "{body}");
    assert_eq!(body["permission"], "orders:write", "{body}");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the handler ran");
    // Counted, but no one is named: not a denial of anyone.
    assert!(observer.authz_denials().is_empty());
    let metrics = observer.render_metrics();
    assert!(
        metrics.contains(
            r#"qiflow_authz_decisions_total{decision="unauthenticated",permission="orders:write"} 1"#
        ),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_viewer_may_read_but_not_write_and_the_refusal_names_only_the_permission() {
    let state = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(config(&state));
    let ran = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(app(&observer, &ran)).await;

    let read = as_user(test::TestRequest::get().uri("/orders"), "demo").to_request();
    let (status, _, _, body) = answer(test::call_service(&app, read).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body, "the orders",
        "the granted response is passed on unchanged"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    let write = as_user(test::TestRequest::post().uri("/orders"), "demo").to_request();
    let (status, content_type, _, body) = answer(test::call_service(&app, write).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert!(body.contains("orders:write"), "{body}");
    assert!(
        !body.contains("viewer"),
        "the body gives the roles away: {body}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "forbidden", "{body}");
    assert_eq!(json["permission"], "orders:write", "{body}");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the refused handler ran");
}

#[actix_web::test]
async fn an_admin_may_read_and_write_by_the_configuration_or_by_a_host_role() {
    let state = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(config(&state));
    let ran = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(app(&observer, &ran)).await;

    for request in [
        as_user(test::TestRequest::get().uri("/orders"), "admin"),
        as_user(test::TestRequest::post().uri("/orders"), "admin"),
        as_user(test::TestRequest::delete().uri("/admin/orders/7"), "admin"),
        // `ada` is no one to the configuration: the host's authentication makes her an admin.
        as_user(test::TestRequest::post().uri("/orders"), "ada").insert_header(("x-role", "admin")),
    ] {
        let (status, _, _, body) =
            answer(test::call_service(&app, request.to_request()).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 4);
    assert!(observer.authz_denials().is_empty());
    let metrics = observer.render_metrics();
    assert!(
        metrics.contains(
            r#"qiflow_authz_decisions_total{decision="granted",permission="orders:write"} 2"#
        ),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_principal_without_the_permission_gets_the_configured_deny_status() {
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&state);
    config.authz.deny_status = 404;
    let (observer, _guard) = observer(config);
    assert_eq!(observer.deny_status(), 404);
    let ran = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(app(&observer, &ran)).await;

    let write = as_user(test::TestRequest::post().uri("/orders"), "demo").to_request();
    let (status, content_type, _, body) = answer(test::call_service(&app, write).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert!(body.contains(r#""permission":"orders:write""#), "{body}");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the refused handler ran");
    // No principal is still 401, whatever the deny status.
    let anonymous = test::TestRequest::post().uri("/orders").to_request();
    assert_eq!(
        test::call_service(&app, anonymous).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn a_denial_is_listed_with_its_route_template_and_request_id_and_counted() {
    let state = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(config(&state));
    let ran = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(app(&observer, &ran)).await;

    let write = as_user(test::TestRequest::post().uri("/orders"), "demo").to_request();
    let (status, _, request_id, _) = answer(test::call_service(&app, write).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let delete = as_user(test::TestRequest::delete().uri("/admin/orders/7"), "demo").to_request();
    assert_eq!(
        test::call_service(&app, delete).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    let denials = observer.authz_denials();
    assert_eq!(denials.len(), 2, "{denials:?}");
    // Newest first: the scope's guard reports the full template of the matched route.
    assert_eq!(denials[0].route, "/admin/orders/{id}", "{denials:?}");
    assert_eq!(denials[0].permission, "orders:delete");
    assert_eq!(denials[1].route, "/orders", "{denials:?}");
    assert_eq!(denials[1].method, "POST");
    assert_eq!(denials[1].actor, "demo");
    assert_eq!(denials[1].permission, "orders:write");
    assert!(request_id.is_some());
    assert_eq!(denials[1].request_id, request_id, "{denials:?}");

    let metrics = observer.render_metrics();
    assert!(
        metrics.contains(
            r#"qiflow_authz_decisions_total{decision="denied",permission="orders:write"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"qiflow_authz_decisions_total{decision="denied",permission="orders:delete"} 1"#
        ),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_denial_is_audited_with_the_request_id_of_the_observed_request() {
    let state = tempfile::tempdir().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let mut config = config(&state);
    config.audit.enabled = true;
    config.audit.dir = audit.path().into();
    let (observer, _guard) = observer(config);
    let ran = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(app(&observer, &ran)).await;

    let write = as_user(test::TestRequest::post().uri("/orders"), "demo").to_request();
    let (status, _, request_id, _) = answer(test::call_service(&app, write).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let request_id = request_id.unwrap();
    assert!(observer.flush(Duration::from_secs(5)));

    let page = observer
        .audit_query(&qiflow_core::audit::AuditQuery::new())
        .await
        .unwrap();
    let denied: Vec<_> = page
        .records
        .iter()
        .filter(|r| r.action == "authz.denied")
        .collect();
    assert_eq!(denied.len(), 1, "{:?}", page.records);
    let record = denied[0];
    assert_eq!(record.actor, "demo");
    assert_eq!(record.resource, "orders:write");
    assert_eq!(record.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(record.metadata["route"], "/orders");
    assert_eq!(record.metadata["method"], "POST");
}

/// Under qiflow's layers (as `init` installs them), the guard runs inside the request's span:
/// the refusal body carries the request id too.
#[actix_web::test]
async fn inside_observe_the_refusal_body_carries_the_request_id() {
    use tracing_subscriber::layer::SubscriberExt;

    let state = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(config(&state));
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(observer.log_layer()));
    // Other tests run the middleware without a subscriber: keep the `request` span enabled.
    qiflow_core::test::enable_every_callsite();
    let ran = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(app(&observer, &ran)).await;

    let write = as_user(test::TestRequest::post().uri("/orders"), "demo")
        .insert_header(("x-request-id", "deny-1"))
        .to_request();
    let (status, _, request_id, body) = answer(test::call_service(&app, write).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(request_id.as_deref(), Some("deny-1"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["request_id"], "deny-1", "{body}");
    let anonymous = test::TestRequest::post()
        .uri("/orders")
        .insert_header(("x-request-id", "anon-1"))
        .to_request();
    let (status, _, _, body) = answer(test::call_service(&app, anonymous).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["request_id"], "anon-1", "{body}");
    assert_eq!(
        observer.authz_denials()[0].request_id.as_deref(),
        Some("deny-1")
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[::core::prelude::v1::test]
fn a_permission_that_does_not_parse_is_refused_when_the_guard_is_made() {
    let state = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(config(&state));
    let guard = Require::try_new(&observer, "orders:write").unwrap();
    assert_eq!(guard.permission().as_str(), "orders:write");
    assert!(format!("{guard:?}").contains("orders:write"));
    for bad in ["orders", "orders:*", "*:write", ""] {
        assert!(Require::try_new(&observer, bad).is_err(), "{bad:?}");
    }
}

#[::core::prelude::v1::test]
#[should_panic(expected = "\"orders:*\" does not parse")]
fn new_panics_naming_a_permission_that_does_not_parse() {
    let state = tempfile::tempdir().unwrap();
    let (observer, _guard) = observer(config(&state));
    let _ = Require::new(&observer, "orders:*");
}
