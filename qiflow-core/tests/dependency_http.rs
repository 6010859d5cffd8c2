//! Outgoing HTTP calls through qiflow's `reqwest-middleware` middleware, against a real server on
//! loopback: the request's trace id travels, every call is timed by server, method and status,
//! and failures are counted on the dependency by class.

#![cfg(feature = "reqwest-middleware")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use qiflow_core::Observer;
use qiflow_core::dependency::DependencyKind;
use qiflow_core::request::{RequestInfo, RequestOutcome};
use tracing_subscriber::layer::SubscriberExt as _;

mod dependency_support;
use dependency_support::series;

#[test]
fn calls_carry_the_trace_and_are_timed_and_classified() {
    let (observer, _guard) = Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The called service: echoes the traceparent it got; `/down` answers 503.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            }),
        )
        .route("/down", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    // A port nobody listens on: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let payments = observer.dependency("payments-api", DependencyKind::Http);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(payments.http_middleware())
        .build();
    let subscriber = tracing_subscriber::registry().with(observer.log_layer());
    let (echoed, trace_id) = tracing::subscriber::with_default(subscriber, || {
        let in_flight = observer.begin_request(RequestInfo::new("GET", "/checkout"));
        let trace_id = in_flight.id().trace_id().to_owned();
        let echoed = in_flight.span().in_scope(|| {
            rt.block_on(async {
                let echoed = client
                    .get(format!("http://{addr}/echo"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let down = client.get(format!("http://{addr}/down")).send().await;
                assert_eq!(down.unwrap().status(), 503, "the answer is handed back");
                let refused = client
                    .get(format!("http://{closed}/echo"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                assert!(refused.is_err());
                echoed
            })
        });
        in_flight.finish(RequestOutcome::new(200));
        (echoed, trace_id)
    });
    // The called service saw the caller's trace, with the request's span as the parent.
    assert!(
        echoed.starts_with(&format!("00-{trace_id}-")),
        "{echoed:?} does not continue {trace_id}"
    );

    let count = |server: &str, status: &str| {
        series(
            &observer,
            &format!(
                "http_client_request_duration_seconds_count{{server_address=\"{server}\",method=\"GET\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(count(&addr.to_string(), "200"), Some(1.0));
    assert_eq!(count(&addr.to_string(), "503"), Some(1.0));
    assert_eq!(count(&closed.to_string(), "error"), Some(1.0));
    let errors = |class: &str| {
        series(
            &observer,
            &format!("qiflow_dependency_errors_total{{pool=\"payments-api\",class=\"{class}\"}}"),
        )
    };
    assert_eq!(errors("query"), Some(1.0), "a 5xx answer");
    assert_eq!(errors("connection"), Some(1.0), "a refused connection");
    let view = payments.view();
    assert_eq!((view.calls, view.failed), (3, 2));
    assert_eq!(view.system, "http");
}
