//! The tower middleware on its own: transparency, panics, errors, disconnects.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use qiflow_core::Observer;
use qiflow_tower::ObserveLayer;
use tower::{Layer, Service, ServiceExt};

fn observer() -> (Observer, qiflow_core::Guard) {
    Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .build()
        .unwrap()
}

fn route_of(_: &http::Extensions) -> Option<std::borrow::Cow<'_, str>> {
    Some("/thing".into())
}

#[tokio::test]
async fn responses_pass_through_with_a_request_id() {
    let (observer, _guard) = observer();
    let svc = ObserveLayer::new(observer.clone())
        .route(route_of)
        .layer(tower::service_fn(|req: Request<String>| async move {
            // The handler sees the request id too.
            let id = req.headers()["x-request-id"].to_str().unwrap().to_owned();
            let mut res = Response::new(format!("id={id}"));
            res.headers_mut()
                .insert("x-custom", "kept".parse().unwrap());
            *res.status_mut() = http::StatusCode::CREATED;
            Ok::<_, Infallible>(res)
        }));
    let res = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-custom"], "kept");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(res.body(), &format!("id={id}"));
    let text = observer.render_metrics();
    assert!(
        text.contains(r#"http_server_requests_total{method="GET",route="/thing",status="201"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn errors_are_returned_unchanged_and_counted_as_500() {
    #[derive(Debug, PartialEq)]
    struct MyError(u8);
    let (observer, _guard) = observer();
    let svc = ObserveLayer::new(observer.clone()).layer(tower::service_fn(
        |_req: Request<String>| async { Err::<Response<String>, _>(MyError(7)) },
    ));
    let err = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    assert_eq!(err, MyError(7));
    assert!(
        observer.render_metrics().contains(
            r#"http_server_requests_total{method="GET",route="unmatched",status="500"} 1"#
        )
    );
}

#[tokio::test]
async fn panics_in_call_and_in_poll_become_500() {
    let (observer, _guard) = observer();
    struct PanicsInCall;
    impl Service<Request<String>> for PanicsInCall {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<String>, Infallible>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<String>) -> Self::Future {
            panic!("panic in call")
        }
    }
    let res = ObserveLayer::new(observer.clone())
        .layer(PanicsInCall)
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    // qiflow's own 500: JSON with the request id, nothing of the panic.
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.body(),
        &format!(r#"{{"error":"internal server error","request_id":"{id}"}}"#)
    );

    let res = ObserveLayer::new(observer.clone())
        .layer(tower::service_fn(|_req: Request<String>| async {
            if true {
                panic!("panic in poll");
            }
            Ok::<_, Infallible>(Response::new(String::new()))
        }))
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        res.body(),
        &format!(r#"{{"error":"internal server error","request_id":"{id}"}}"#)
    );
    assert!(!res.body().contains("panic in poll"));
    assert!(
        observer.render_metrics().contains(
            r#"http_server_requests_total{method="GET",route="unmatched",status="500"} 2"#
        )
    );
}

#[tokio::test]
async fn a_dropped_response_future_counts_a_disconnect() {
    let (observer, _guard) = observer();
    let mut svc = ObserveLayer::new(observer.clone()).layer(tower::service_fn(
        |_req: Request<String>| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Infallible>(Response::new(String::new()))
        },
    ));
    let future = svc.ready().await.unwrap().call(Request::new(String::new()));
    let _ = tokio::time::timeout(Duration::from_millis(10), future).await;
    let text = observer.render_metrics();
    assert!(
        text.contains(r#"qiflow_client_disconnects_total{method="GET",route="unmatched"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_active_requests{method="GET",route="unmatched"} 0"#),
        "{text}"
    );
}

#[tokio::test]
async fn methods_and_routes_are_capped() {
    let mut config = qiflow_core::test::quiet_config();
    config.metrics.max_routes = 2;
    let (observer, _guard) = Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap();
    for (method, route) in [("GET", "/a"), ("GET", "/b"), ("GET", "/c"), ("BREW", "/a")] {
        let route = route.to_owned();
        let svc = ObserveLayer::new(observer.clone())
            .route(move |_| Some(route.clone().into()))
            .layer(tower::service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        let req = Request::builder()
            .method(method)
            .body(String::new())
            .unwrap();
        svc.oneshot(req).await.unwrap();
    }
    let text = observer.render_metrics();
    assert!(text.contains(r#"route="/a""#) && text.contains(r#"route="/b""#));
    assert!(!text.contains(r#"route="/c""#), "{text}");
    assert!(
        text.contains(r#"http_server_requests_total{method="GET",route="other",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_requests_total{method="_OTHER",route="/a",status="200"} 1"#),
        "{text}"
    );
}
