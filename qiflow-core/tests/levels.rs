//! The log filter at runtime: `Observer::set_log_level` and `GET`/`PUT /qiflow/api/loggers`
//! (closed to strangers, writes need the write scope, audited, logged with the previous and the
//! new filter, undone when the audit trail refuses the record). The `RUST_LOG` precedence at
//! start is in `tests/rust_log.rs` (a process of its own per case).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use qiflow_core::Observer;
use qiflow_core::admin::AdminRequest;
use qiflow_core::audit::AuditQuery;
use qiflow_core::config::{AdminToken, TokenScope};
use tracing_subscriber::layer::SubscriberExt;

const READER: &str = "levels-reader-token-0123456789abcdef";

/// An observer writing its log to `dir/logs` and its audit trail to `dir/audit`, with a write
/// token (`test::ADMIN_TOKEN`) and a read token ([`READER`]).
fn observer(dir: &Path) -> (Observer, qiflow_core::Guard) {
    let mut config = qiflow_core::test::quiet_config();
    config.logging.dir = dir.join("logs");
    config.audit.enabled = true;
    config.audit.dir = dir.join("audit");
    config
        .admin
        .tokens
        .push(AdminToken::new("reader", READER, TokenScope::Read));
    Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap()
}

/// Sends `request` to the operator surface with `token` (none: a stranger).
fn admin(observer: &Observer, request: AdminRequest, token: Option<&str>) -> (u16, String) {
    let request = match token {
        Some(token) => request.header("authorization", format!("Bearer {token}")),
        None => request,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = runtime.block_on(observer.admin(request));
    (response.status(), response.text().into_owned())
}

fn put(filter_body: &str) -> AdminRequest {
    AdminRequest::new("PUT", "/qiflow/api/loggers").body(filter_body.as_bytes().to_vec())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn log_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("logs").join("app.log"))
        .unwrap_or_default()
        .lines()
        .map(json)
        .collect()
}

/// The filter a new observer starts with here: `RUST_LOG` when this process has it, else the
/// configured `"info"`.
fn starting_filter() -> (String, &'static str) {
    match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => (value.trim().to_owned(), "RUST_LOG"),
        _ => ("info".to_owned(), "logging.level"),
    }
}

#[test]
fn an_operator_changes_the_level_through_the_api_audited_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (observer, guard) = observer(dir.path());
    let subscriber = tracing_subscriber::registry()
        .with(observer.log_filter())
        .with(observer.log_layer());
    let token = Some(qiflow_core::test::ADMIN_TOKEN);
    tracing::subscriber::with_default(subscriber, || {
        let (start, source) = starting_filter();
        let (status, body) = admin(
            &observer,
            AdminRequest::new("GET", "/qiflow/api/loggers"),
            token,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json(&body),
            serde_json::json!({"filter": start, "source": source})
        );
        // Whatever this shell's RUST_LOG says, the cases below start from "info".
        observer.set_log_level("info").unwrap();

        // Strangers get 401 on both; a read token reads and gets 403 on the write.
        for request in [
            AdminRequest::new("GET", "/qiflow/api/loggers"),
            put(r#"{"filter":"debug"}"#),
        ] {
            assert_eq!(admin(&observer, request, None).0, 401);
        }
        let (status, body) = admin(
            &observer,
            AdminRequest::new("GET", "/qiflow/api/loggers"),
            Some(READER),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = admin(&observer, put(r#"{"filter":"debug"}"#), Some(READER));
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("read scope"), "{body}");
        let (status, _) = admin(
            &observer,
            AdminRequest::new("POST", "/qiflow/api/loggers"),
            token,
        );
        assert_eq!(status, 405);

        tracing::debug!(step = "before", "a debug line");

        // A bad body and a bad filter: 400, naming what is wrong; nothing changes.
        let (status, body) = admin(&observer, put(r#"{"level":"debug"}"#), token);
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains(r#"{\"filter\":\"info,sqlx=warn\"}"#),
            "{body}"
        );
        let (status, body) = admin(&observer, put(r#"{"filter":"debug,sqlx=loud"}"#), token);
        assert_eq!(status, 400, "{body}");
        assert!(
            body.contains(r#"the directive \"sqlx=loud\" is not valid"#),
            "{body}"
        );
        assert_eq!(observer.log_level(), "info");
        tracing::debug!(step = "after a refused change", "a debug line");

        let (status, body) = admin(&observer, put(r#"{"filter":"debug,sqlx=warn"}"#), token);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            json(&body),
            serde_json::json!({"filter": "debug,sqlx=warn", "previous": "info", "source": "runtime"})
        );
        assert_eq!(observer.log_level(), "debug,sqlx=warn");
        tracing::debug!(step = "after", "a debug line");
        tracing::debug!(target: "sqlx::query", step = "after", "a sqlx debug line");
        let (_, body) = admin(
            &observer,
            AdminRequest::new("GET", "/qiflow/api/loggers"),
            Some(READER),
        );
        assert_eq!(
            json(&body),
            serde_json::json!({"filter": "debug,sqlx=warn", "source": "runtime"})
        );

        // To a level that hides warnings: the change's line is written before it.
        let (status, body) = admin(&observer, put(r#"{"filter":"error"}"#), token);
        assert_eq!(status, 200, "{body}");
        tracing::warn!(step = "quiet", "a warning");
        let (status, _) = admin(&observer, put(r#"{"filter":"info"}"#), token);
        assert_eq!(status, 200);
    });
    assert!(observer.flush(Duration::from_secs(10)));

    let lines = log_lines(dir.path());
    let debug_steps: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "a debug line" || l["message"] == "a sqlx debug line")
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        debug_steps,
        ["after"],
        "only the debug line after the change"
    );
    assert!(!lines.iter().any(|l| l["step"] == "quiet"));
    let changes: Vec<(&str, &str, &str)> = lines
        .iter()
        .filter(|l| l["target"] == "qiflow::admin" && l["message"] == "log filter changed")
        .map(|l| {
            assert_eq!(l["level"], "WARN", "{l}");
            (
                l["actor"].as_str().unwrap(),
                l["previous"].as_str().unwrap(),
                l["filter"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("test", "info", "debug,sqlx=warn"),
            ("test", "debug,sqlx=warn", "error"),
            ("test", "error", "info"),
        ]
    );

    // The trail: three changes, two refused bodies or filters, one denied read token.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let page = runtime
        .block_on(
            observer
                .audit_query(&AuditQuery::from_query_string("action=qiflow.loggers.set").unwrap()),
        )
        .unwrap();
    let records: Vec<serde_json::Value> = page
        .records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .rev()
        .collect();
    let seen: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["actor"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("reader", "denied"),
            ("test", "failure"),
            ("test", "failure"),
            ("test", "success"),
            ("test", "success"),
            ("test", "success"),
        ],
        "{records:#?}"
    );
    assert!(records.iter().all(|r| r["resource"] == "loggers"));
    assert_eq!(records[2]["metadata"]["filter"], "debug,sqlx=loud");
    assert!(
        records[2]["metadata"]["error"]
            .as_str()
            .unwrap()
            .contains("sqlx=loud")
    );
    assert_eq!(records[3]["metadata"]["previous"], "info");
    assert_eq!(records[3]["metadata"]["filter"], "debug,sqlx=warn");
    let metrics = observer.render_metrics();
    assert!(
        metrics.contains(r#"qiflow_admin_requests_total{endpoint="loggers_set",status="200"} 3"#),
        "{metrics}"
    );
    drop(guard);
}

/// When the audit trail cannot take the record, the change is undone and answered 503.
#[test]
fn a_change_the_trail_cannot_record_is_undone() {
    struct Stuck;
    impl qiflow_core::audit::AuditSink for Stuck {
        fn write<'a>(
            &'a mut self,
            _: &'a [qiflow_core::audit::AuditEvent],
        ) -> qiflow_core::worker::BoxFuture<'a, Result<(), qiflow_core::audit::AuditError>>
        {
            Box::pin(std::future::pending())
        }
    }
    let mut config = qiflow_core::test::quiet_config();
    config.audit.enabled = true;
    config.audit.queue_capacity = 1;
    config.audit.batch_size = 1;
    config.audit.block_timeout = Duration::from_millis(10);
    let (observer, guard) = Observer::builder(config)
        .install_global(false)
        .audit_sink(Stuck, None)
        .flush_budget(Duration::from_millis(100))
        .build()
        .unwrap();
    observer.set_log_level("warn").unwrap();
    // Fill the trail's queue (the sink never finishes a write).
    let event = || qiflow_core::audit::AuditEvent::builder("filler", "test.fill").build();
    let mut refused = false;
    for _ in 0..100 {
        if observer.audit(event()).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the stuck trail never refused a record");
    let (status, body) = admin(
        &observer,
        put(r#"{"filter":"debug"}"#),
        Some(qiflow_core::test::ADMIN_TOKEN),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("nothing was changed"), "{body}");
    assert_eq!(observer.log_level(), "warn");
    drop(guard);
}
