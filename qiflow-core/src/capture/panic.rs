//! The panic hook: every panic becomes a report, with the request it happened in.

use std::cell::Cell;
use std::sync::{Arc, PoisonError, RwLock};

use super::Capturer;
use super::{ErrorDetail, ErrorKind, ErrorReport, Severity};

/// Where the hook sends reports: the observer that installed it last.
static TARGET: RwLock<Option<Arc<Capturer>>> = RwLock::new(None);

thread_local! {
    /// Set by the hook on the panicking thread; the middleware that catches the same panic
    /// takes it and does not report it a second time.
    static CAPTURED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the hook already reported the panic this thread is unwinding from (and forgets it).
pub(crate) fn take_panic_captured() -> bool {
    CAPTURED.with(|c| c.replace(false))
}

/// Installs qiflow's panic hook for `observer`, keeping the hook installed before it: that one
/// still runs, after the report is queued (so the default message still reaches stderr).
///
/// `init` calls this unless the builder says
/// [`install_global(false)`](crate::ObserverBuilder::install_global). Installing again (for a
/// second observer) re-targets the existing hook instead of stacking another one.
///
/// The report carries the panic message, its location (`panic.location` tag), the thread name,
/// and, when the panic happened inside a request, that request's context and breadcrumbs. The
/// hook never blocks: the report is offered to the `errors` queue and dropped (counted) when it
/// is full.
pub fn install_panic_hook(observer: &crate::Observer) {
    let mut target = TARGET.write().unwrap_or_else(PoisonError::into_inner);
    let first = target.is_none();
    *target = Some(observer.capturer().clone());
    drop(target);
    if !first {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        previous(info);
    }));
}

fn report(info: &std::panic::PanicHookInfo<'_>) {
    // Never panic or block in here: a panic inside a panic hook aborts the process.
    let Ok(target) = TARGET.try_read() else {
        return;
    };
    let Some(capturer) = target.as_ref() else {
        return;
    };
    let message = crate::request::panic_message(info.payload());
    let mut report = ErrorReport::new(
        ErrorKind::Panic,
        Severity::Fatal,
        ErrorDetail::message(Some("panic"), message),
    );
    if let Some(location) = info.location() {
        report.tags.insert(
            "panic.location".into(),
            format!(
                "{}:{}:{}",
                location.file(),
                location.line(),
                location.column()
            ),
        );
    }
    if let Some(name) = std::thread::current().name() {
        report.tags.insert("thread".into(), name.to_owned());
    }
    if let Some(scope) = super::request_scope_of_current() {
        report.request = scope.context;
        report.breadcrumbs = scope.breadcrumbs;
    }
    capturer.capture(report);
    CAPTURED.with(|c| c.set(true));
}
