//! The dashboard (`/qiflow/`): the page and its files answer anyone and hold no data; the
//! overview needs a token and shows what the service did; `[admin] dashboard = false` turns it
//! all off.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use qiflow_core::Observer;
use qiflow_core::admin::{AdminRequest, AdminResponse};
use qiflow_core::capture::ErrorDetail;
use qiflow_core::request::{RequestInfo, RequestOutcome};
use qiflow_core::test::ADMIN_TOKEN;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn ask(observer: &Observer, request: AdminRequest) -> AdminResponse {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(observer.admin(request))
}

fn with_token(request: AdminRequest) -> AdminRequest {
    request.header("authorization", format!("Bearer {ADMIN_TOKEN}"))
}

fn observer(config: qiflow_core::Config) -> (Observer, qiflow_core::Guard) {
    Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap()
}

fn overview(observer: &Observer) -> serde_json::Value {
    let answer = ask(
        observer,
        with_token(AdminRequest::new("GET", "/qiflow/api/overview")),
    );
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    serde_json::from_slice(answer.body()).unwrap()
}

/// The trail's verification once it has run (it runs on the worker after the first overview).
fn verification(observer: &Observer) -> serde_json::Value {
    let mut verification = serde_json::Value::Null;
    let done = support::wait_until(Duration::from_secs(10), || {
        verification = overview(observer)["audit"]["verification"].clone();
        verification["state"] != "pending"
    });
    assert!(
        done,
        "the verification did not end within 10 s: {verification}"
    );
    verification
}

#[test]
fn the_page_and_its_files_answer_a_stranger_with_no_data_and_the_overview_refuses_them() {
    let mut config = qiflow_core::test::quiet_config();
    config.service.name = "canary-service-name".into();
    let (observer, _guard) = observer(config);
    let page = ask(
        &observer,
        AdminRequest::new("GET", "/qiflow/").header("accept", BROWSER_ACCEPT),
    );
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(!page.text().contains("canary-service-name"));
    for file in ["/qiflow/app.js", "/qiflow/app.css"] {
        let answer = ask(&observer, AdminRequest::new("GET", file));
        assert_eq!(answer.status(), 200, "{file}");
        assert!(!answer.text().contains("canary-service-name"));
        let post = ask(&observer, AdminRequest::new("POST", file));
        assert_eq!(post.status(), 405, "{file}");
    }
    // Not a browser: the JSON index, closed.
    let index = ask(&observer, AdminRequest::new("GET", "/qiflow/"));
    assert_eq!(index.status(), 401);
    // The data: closed to no token and to a wrong one, and a stranger cannot probe for other
    // files either.
    for authorization in ["", "Bearer 0123456789abcdef0123456789abcdef"] {
        for path in ["/qiflow/api/overview", "/qiflow/secret.js", "/qiflow/api"] {
            let answer = ask(
                &observer,
                AdminRequest::new("GET", path)
                    .header("authorization", authorization)
                    .header("accept", BROWSER_ACCEPT),
            );
            assert_eq!(answer.status(), 401, "{path} with {authorization:?}");
            assert!(!answer.text().contains("canary-service-name"));
        }
    }
    // With the token, the index lists the overview and the page.
    let index = ask(
        &observer,
        with_token(AdminRequest::new("GET", "/qiflow/api")),
    );
    assert_eq!(index.status(), 200);
    assert!(
        index.text().contains("GET /qiflow/api/overview"),
        "{}",
        index.text()
    );
}

#[test]
fn the_overview_shows_traffic_errors_slow_requests_health_and_the_verified_trail() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qiflow_core::test::quiet_config();
    config.baseline.slow_request = Duration::from_millis(30);
    config.audit.enabled = true;
    config.audit.dir = dir.path().join("audit");
    let (observer, _guard) = observer(config);
    for i in 0..5 {
        let info = RequestInfo::new("GET", format!("/orders/{i}")).with_route("/orders/{id}");
        observer
            .begin_request(info)
            .finish(RequestOutcome::new(200));
    }
    let failing = RequestInfo::new("GET", "/fail").with_route("/fail");
    let error = std::io::Error::other("the disk is on fire");
    observer
        .begin_request(failing)
        .finish(RequestOutcome::new(500).with_error(ErrorDetail::from_error(&error)));
    let slow = observer.begin_request(RequestInfo::new("GET", "/slow").with_route("/slow"));
    let slow_id = slow.request_id().to_owned();
    std::thread::sleep(Duration::from_millis(40));
    slow.finish(RequestOutcome::new(200));
    observer
        .audit(qiflow_core::audit::AuditEvent::builder("alice", "order.cancel").build())
        .unwrap();
    assert!(observer.flush(Duration::from_secs(5)));

    let view = overview(&observer);
    assert_eq!(view["caller"]["name"], "test");
    assert_eq!(view["caller"]["scope"], "write");
    assert_eq!(view["traffic"]["requests_total"], 7);
    let routes = view["routes"].as_array().unwrap();
    let orders = routes
        .iter()
        .find(|r| r["route"] == "/orders/{id}")
        .unwrap();
    assert_eq!(orders["method"], "GET");
    assert_eq!(orders["requests_total"], 5);
    assert!(orders["p95_ms"].is_number(), "{orders}");
    let slow = &view["slow"][0];
    assert_eq!(slow["route"], "/slow");
    assert_eq!(slow["request_id"], slow_id.as_str());
    assert!(slow["latency_ms"].as_f64().unwrap() >= 40.0, "{slow}");
    assert_eq!(slow["trace_id"].as_str().unwrap().len(), 32, "{slow}");
    let group = &view["errors"]["groups"][0];
    assert_eq!(group["route"], "/fail");
    assert!(
        group["message"].as_str().unwrap().contains("on fire"),
        "{group}"
    );
    assert_eq!(view["health"]["status"], "healthy");
    assert!(
        view["health"]["checks"]["pipeline:logs"].is_object(),
        "{}",
        view["health"]
    );
    assert_eq!(view["audit"]["records"][0]["actor"], "alice");
    assert!(
        view["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "audit" && p["delivered"] == 2)
    );
    // The trail is verified on the worker, then shown.
    let verification = verification(&observer);
    assert_eq!(verification["state"], "verified", "{verification}");
    // Alice's record and this start's `service.deployed`.
    assert_eq!(verification["records"], 2, "{verification}");
}

#[test]
fn a_trail_changed_behind_the_service_shows_as_broken() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qiflow_core::test::quiet_config();
    config.audit.enabled = true;
    config.audit.dir = dir.path().join("audit");
    let (observer, _guard) = observer(config);
    for actor in ["alice", "bob"] {
        observer
            .audit(qiflow_core::audit::AuditEvent::builder(actor, "order.cancel").build())
            .unwrap();
    }
    assert!(observer.flush(Duration::from_secs(5)));
    let segment = std::fs::read_dir(dir.path().join("audit"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&segment).unwrap();
    std::fs::write(&segment, text.replace("\"bob\"", "\"eve\"")).unwrap();
    let verification = verification(&observer);
    assert_eq!(verification["state"], "broken", "{verification}");
    assert!(
        verification["detail"].as_str().unwrap().contains("audit-"),
        "{verification}"
    );
}

#[test]
fn with_the_dashboard_off_there_is_no_page_and_no_overview() {
    let mut config = qiflow_core::test::quiet_config();
    config.admin.dashboard = false;
    let (observer, _guard) = observer(config);
    let page = ask(
        &observer,
        with_token(AdminRequest::new("GET", "/qiflow/").header("accept", BROWSER_ACCEPT)),
    );
    assert_eq!(page.status(), 200);
    assert_eq!(page.header("content-type"), Some("application/json"));
    for path in ["/qiflow/api/overview", "/qiflow/app.js"] {
        let answer = ask(&observer, with_token(AdminRequest::new("GET", path)));
        assert_eq!(answer.status(), 404, "{path}");
    }
}
