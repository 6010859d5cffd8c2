//! Error capture with qiflow's global pieces installed (subscriber, capture layer, panic hook):
//! request isolation under concurrency, `error!` events with breadcrumbs and the user id, and
//! the panic hook chaining the one installed before it. (Its own test binary: globals are per
//! process; every test here shares one observer and tells its reports apart by request id.)

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use qiflow_core::capture::{
    ErrorDetail, ErrorKind, ErrorReport, PreviousHook, Reporter, Resolution,
};
use qiflow_core::request::{RequestInfo, RequestOutcome};
use qiflow_core::worker::{BoxFuture, SinkError};
use qiflow_core::{Guard, Observer};
use tracing::Instrument;

#[derive(Clone, Default)]
struct Recording(Arc<Mutex<Vec<ErrorReport>>>);

impl Reporter for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn report<'a>(&'a self, report: &'a ErrorReport) -> BoxFuture<'a, Result<(), SinkError>> {
        self.0.lock().unwrap().push(report.clone());
        Box::pin(async { Ok(()) })
    }
}

impl Recording {
    fn reports_where(&self, keep: impl Fn(&ErrorReport) -> bool) -> Vec<ErrorReport> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }
}

/// Calls of the panic hook that was installed before qiflow's.
static PREVIOUS_HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

struct Shared {
    observer: Observer,
    recording: Recording,
    _guard: Guard,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::panic::set_hook(Box::new(|_| {
            PREVIOUS_HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
        }));
        let mut config = qiflow_core::test::quiet_config();
        config.logging.level = "info".into();
        let recording = Recording::default();
        let (observer, guard) = Observer::builder(config)
            .reporter(recording.clone())
            .previous_panic_hook(PreviousHook::Chain)
            .build()
            .unwrap();
        Shared {
            observer,
            recording,
            _guard: guard,
        }
    })
}

fn flush() {
    assert!(shared().observer.flush(Duration::from_secs(20)));
}

#[test]
fn a_thousand_concurrent_requests_never_mix_their_context() {
    let Shared {
        observer,
        recording,
        ..
    } = shared();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..1000usize {
            let observer = observer.clone();
            tasks.push(tokio::spawn(async move {
                let info = RequestInfo::new("GET", format!("/iso/{i}"))
                    .with_route("/iso/{n}")
                    .with_request_id(format!("iso-{i}"))
                    .with_host("shop.test");
                let in_flight = observer.begin_request(info);
                let span = in_flight.span().clone();
                async {
                    assert!(qiflow_core::capture::set_user_id(&format!("user-{i}")));
                    tracing::info!(step = i, "loaded cart {i}");
                    // Interleave with the other requests between the breadcrumbs.
                    tokio::task::yield_now().await;
                    tracing::warn!("slow price lookup for {i}");
                    tokio::task::yield_now().await;
                }
                .instrument(span)
                .await;
                let status = if i % 2 == 1 { 500 } else { 200 };
                in_flight.finish(RequestOutcome::new(status));
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    flush();
    let reports = recording.reports_where(|r| r.route() == Some("/iso/{n}"));
    assert_eq!(reports.len(), 500, "one report per failing request");
    let mut seen = HashSet::new();
    for report in &reports {
        let request = report.request.as_ref().unwrap();
        let i: usize = request
            .request_id
            .strip_prefix("iso-")
            .unwrap()
            .parse()
            .unwrap();
        assert!(i % 2 == 1, "request {i} succeeded but was reported");
        assert!(seen.insert(i), "request {i} reported twice");
        assert_eq!(request.url, format!("http://shop.test/iso/{i}"));
        assert_eq!(
            request.user_id.as_deref(),
            Some(format!("user-{i}").as_str())
        );
        let crumbs: Vec<&str> = report
            .breadcrumbs
            .iter()
            .map(|b| b.message.as_str())
            .collect();
        assert_eq!(
            crumbs,
            [
                format!("loaded cart {i}"),
                format!("slow price lookup for {i}")
            ],
            "request {i} carries another request's breadcrumbs"
        );
    }
}

#[test]
fn error_events_become_reports_with_their_request_and_fields() {
    let Shared {
        observer,
        recording,
        ..
    } = shared();
    let in_flight = observer.begin_request(
        RequestInfo::new("POST", "/orders")
            .with_route("/orders")
            .with_request_id("evt-1"),
    );
    in_flight.span().in_scope(|| {
        tracing::info!("validating order");
        tracing::error!(order_id = 77, api_token = "CANARY", "charging card failed");
    });
    in_flight.finish(RequestOutcome::new(201));
    // Outside any request too.
    tracing::error!(target: "app::jobs", "nightly export failed");
    flush();

    let in_request =
        recording.reports_where(|r| r.request.as_ref().is_some_and(|q| q.request_id == "evt-1"));
    assert_eq!(in_request.len(), 1, "the event, not the 201");
    let report = &in_request[0];
    assert_eq!(report.kind, ErrorKind::Event);
    assert_eq!(report.detail.top_message(), "charging card failed");
    assert_eq!(report.tags["order_id"], "77");
    assert_eq!(report.tags["api_token"], "[REDACTED]");
    assert_eq!(report.request.as_ref().unwrap().method, "POST");
    assert_eq!(report.breadcrumbs.len(), 1);
    assert_eq!(report.breadcrumbs[0].message, "validating order");

    let outside = recording.reports_where(|r| r.detail.top_message() == "nightly export failed");
    assert_eq!(outside.len(), 1);
    assert!(outside[0].request.is_none());
    assert_eq!(outside[0].tags["logger"], "app::jobs");
}

#[test]
fn the_panic_hook_reports_once_and_chains_the_previous_hook() {
    let Shared {
        observer,
        recording,
        ..
    } = shared();
    let before = PREVIOUS_HOOK_CALLS.load(Ordering::SeqCst);

    // A panic outside any request: reported by the hook.
    std::thread::Builder::new()
        .name("exporter".into())
        .spawn(|| panic!("export queue corrupted"))
        .unwrap()
        .join()
        .unwrap_err();

    // A panic inside a request, caught as the middleware catches it: one report, with the
    // request's context, not two.
    let in_flight = observer.begin_request(
        RequestInfo::new("GET", "/panic")
            .with_route("/panic")
            .with_request_id("panic-1"),
    );
    let caught = {
        let _enter = in_flight.span().enter();
        std::panic::catch_unwind(|| panic!("handler exploded"))
    };
    let message = qiflow_core::request::panic_message(&*caught.unwrap_err());
    in_flight.finish(RequestOutcome::panicked(message));
    flush();

    assert_eq!(
        PREVIOUS_HOOK_CALLS.load(Ordering::SeqCst) - before,
        2,
        "the previous hook still runs for every panic"
    );
    let outside = recording.reports_where(|r| r.detail.top_message() == "export queue corrupted");
    assert_eq!(outside.len(), 1);
    assert_eq!(outside[0].kind, ErrorKind::Panic);
    assert_eq!(outside[0].tags["thread"], "exporter");
    assert!(outside[0].tags["panic.location"].contains("capture_global.rs"));
    // The stack, taken as addresses by the hook, arrives resolved from the worker: the frame
    // that panicked comes first after the panic entry points, with its file and line.
    let trace = outside[0].stacktrace.as_ref().unwrap();
    assert_eq!(trace.resolution, Resolution::Resolved, "{trace}");
    let first_own = trace
        .frames
        .iter()
        .find(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| !n.starts_with("core::") && !n.contains("rust_begin_unwind"))
        })
        .unwrap();
    assert!(
        first_own
            .function
            .as_deref()
            .unwrap()
            .contains("the_panic_hook_reports_once_and_chains_the_previous_hook"),
        "{trace}"
    );
    assert!(
        first_own
            .file
            .as_deref()
            .unwrap()
            .ends_with("capture_global.rs"),
        "{first_own:?}"
    );
    assert!(first_own.line.is_some());
    assert!(
        !trace.frames.iter().any(|f| f
            .function
            .as_deref()
            .is_some_and(|n| n.starts_with("qiflow_core::capture::panic"))),
        "the hook's own frames are trimmed: {trace}"
    );

    let inside = recording.reports_where(|r| r.detail.top_message() == "handler exploded");
    assert_eq!(
        inside.len(),
        1,
        "the hook's report, not a second from the middleware"
    );
    let request = inside[0].request.as_ref().unwrap();
    assert_eq!(request.request_id, "panic-1");
    assert_eq!(request.route, "/panic");
    assert_eq!(
        inside[0].detail,
        ErrorDetail::message(Some("panic"), "handler exploded")
    );
}
