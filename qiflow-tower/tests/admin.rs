//! `qiflow_tower::Admin`: the operator surface for `http` requests, as a stranger, an operator
//! and the operator listener see it.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use qiflow_core::Observer;
use qiflow_tower::Admin;
use tower::ServiceExt;

fn observer() -> (Observer, qiflow_core::Guard) {
    Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .build()
        .unwrap()
}

async fn call(admin: &Admin, request: Request<Full<Bytes>>) -> (u16, http::HeaderMap, String) {
    let response = admin.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> http::request::Builder {
    Request::get(path)
}

#[tokio::test]
async fn strangers_get_401_operators_get_the_views() {
    let (observer, _guard) = observer();
    let admin = Admin::new(observer);
    let (status, headers, body) = call(
        &admin,
        get("/qiflow/api/errors").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"qiflow\"");
    assert_eq!(headers["content-type"], "application/json");
    let request = get("/qiflow/api/errors")
        .header("authorization", qiflow_core::test::authorization())
        .body(Full::default())
        .unwrap();
    let (status, headers, body) = call(&admin, request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(body.starts_with('{'), "{body}");
    // Health and metrics answer anyone.
    let (status, _, body) = call(&admin, get("/health/ready").body(Full::default()).unwrap()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"healthy"}"#));
    let (status, headers, _) = call(&admin, get("/metrics").body(Full::default()).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain; version=0.0.4");
}

#[tokio::test]
async fn the_operator_listener_asks_no_token() {
    let (observer, _guard) = observer();
    let admin = Admin::operator_listener(observer);
    let (status, _, body) = call(
        &admin,
        get("/qiflow/api/alerts").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(&admin, get("/health/ready").body(Full::default()).unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"checks\""),
        "the listener sees details: {body}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_headers_pass_through() {
    let (observer, _guard) = observer();
    let admin = Admin::new(observer.clone());
    let request = Request::post("/qiflow/api/alerts/silences")
        .header("authorization", qiflow_core::test::authorization())
        .body(Full::new(Bytes::from(vec![
            b' ';
            qiflow_core::admin::MAX_BODY + 1
        ])))
        .unwrap();
    let (status, _, body) = call(&admin, request).await;
    assert_eq!(status, 413, "{body}");
    // A DELETE of an unknown silence: the token's write scope reaches the alert store.
    let request = Request::delete("/qiflow/api/alerts/silences/nope")
        .header("authorization", qiflow_core::test::authorization())
        .body(Full::default())
        .unwrap();
    let (status, _, body) = call(&admin, request).await;
    assert_eq!(status, 404, "{body}");
    // A wrong method names the allowed ones.
    let request = Request::put("/qiflow/api/errors")
        .header("authorization", qiflow_core::test::authorization())
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = call(&admin, request).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let counted = observer.render_metrics();
    assert!(
        counted
            .contains(r#"qiflow_admin_requests_total{endpoint="silence_create",status="413"} 1"#),
        "{counted}"
    );
}
