//! The panic hook: every panic becomes a report, with the request it happened in and the
//! panicking thread's stack (addresses only; the worker resolves them).

use std::cell::Cell;
use std::io::Write as _;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::Capturer;
use super::{ErrorDetail, ErrorKind, ErrorReport, Severity, Stacktrace};

/// Where the hook sends reports: the observer that installed it last.
static TARGET: RwLock<Option<Arc<Capturer>>> = RwLock::new(None);

/// Whether the worker prints each panic's resolved backtrace to stderr: qiflow's hook replaced
/// the previous one and `RUST_BACKTRACE` asks for backtraces.
static ECHO_BACKTRACE: AtomicBool = AtomicBool::new(false);

/// Whether the "run with `RUST_BACKTRACE=1`" note is still to be printed (once, as the
/// standard library does).
static FIRST_PANIC: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// Set by the hook on the panicking thread; the middleware that catches the same panic
    /// takes it and does not report it a second time.
    static CAPTURED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the hook already reported the panic this thread is unwinding from (and forgets it).
pub(crate) fn take_panic_captured() -> bool {
    CAPTURED.with(|c| c.replace(false))
}

/// Whether panic backtraces, once resolved, are printed to stderr (see [`PreviousHook`]).
pub(crate) fn echo_backtraces() -> bool {
    ECHO_BACKTRACE.load(Ordering::Relaxed)
}

/// What qiflow's panic hook does with the hook that was installed before it (the standard
/// library's, unless the application set its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PreviousHook {
    /// qiflow's hook prints what the standard library's would, `thread '…' panicked at
    /// <file:line:col>:` and the message, to stderr at once; when `RUST_BACKTRACE` asks for a
    /// backtrace, qiflow's worker prints it after resolving it. The previous hook does not run,
    /// so no backtrace is ever resolved on the panicking thread. The default.
    #[default]
    Replace,
    /// The previous hook runs after qiflow's report is queued, as it would have without qiflow.
    /// When it is the standard library's and `RUST_BACKTRACE` is set, it resolves the backtrace
    /// on the panicking thread and keeps the debug info it loaded for the life of the process
    /// (134 MiB for the quickstart; `docs/errors.md`, "Backtraces and memory").
    Chain,
}

/// Installs qiflow's panic hook for `observer`, replacing the standard library's output with
/// qiflow's own ([`PreviousHook::Replace`]); see [`install_panic_hook_with`].
pub fn install_panic_hook(observer: &crate::Observer) {
    install_panic_hook_with(observer, PreviousHook::Replace);
}

/// Installs qiflow's panic hook for `observer`; `previous` says whether the hook installed
/// before it still runs.
///
/// `init` calls this unless the builder says
/// [`install_global(false)`](crate::ObserverBuilder::install_global), with the builder's
/// [`previous_panic_hook`](crate::ObserverBuilder::previous_panic_hook). Installing again (for a
/// second observer) re-targets the existing hook instead of stacking another one; `previous` is
/// the first installation's.
///
/// The report carries the panic message, its location (`panic.location` tag), the thread name,
/// the thread's stack as return addresses ([`Stacktrace::capture`]: no symbol is looked up on
/// the panicking thread) and, when the panic happened inside a request, that request's context
/// and breadcrumbs. The hook never blocks: the report is offered to the `errors` queue and
/// dropped (counted) when it is full. qiflow's worker resolves the addresses to function names
/// and `file:line` before the report is stored or forwarded.
///
/// A hook the application needs to run on every panic (one that exits the process, say) can
/// also be installed after `init`, calling the hook it takes: qiflow's.
pub fn install_panic_hook_with(observer: &crate::Observer, previous: PreviousHook) {
    let mut target = TARGET.write().unwrap_or_else(PoisonError::into_inner);
    let first = target.is_none();
    *target = Some(observer.capturer().clone());
    drop(target);
    if !first {
        return;
    }
    let previous = match previous {
        PreviousHook::Chain => Some(std::panic::take_hook()),
        PreviousHook::Replace => {
            let requested = backtrace_requested(std::env::var_os("RUST_BACKTRACE").as_deref());
            ECHO_BACKTRACE.store(requested, Ordering::Relaxed);
            None
        }
    };
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        match &previous {
            Some(previous) => previous(info),
            None => print_message(info),
        }
    }));
}

/// Whether a `RUST_BACKTRACE` value asks for panic backtraces (set, and not `0`), as the
/// standard library reads it.
fn backtrace_requested(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v != "0")
}

/// What the standard library's hook prints, without the backtrace.
fn print_message(info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let mut text = format!(
        "\nthread '{}' panicked at ",
        thread.name().unwrap_or("<unnamed>")
    );
    match info.location() {
        Some(location) => text.push_str(&location.to_string()),
        None => text.push_str("<unknown>"),
    }
    text.push_str(":\n");
    text.push_str(&crate::request::panic_message(info.payload()));
    text.push('\n');
    if echo_backtraces() {
        text.push_str(
            "note: qiflow prints the backtrace once its worker has resolved it, off this thread\n",
        );
    } else if FIRST_PANIC.swap(false, Ordering::Relaxed) {
        text.push_str(
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        );
    }
    // One write, so that concurrent panics do not interleave; an error has nowhere to go.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn report(info: &PanicHookInfo<'_>) {
    // Never panic or block in here: a panic inside a panic hook aborts the process.
    let Ok(target) = TARGET.try_read() else {
        return;
    };
    let Some(capturer) = target.as_ref() else {
        return;
    };
    let message = crate::request::panic_message(info.payload());
    let location = info.location().map(|l| l.to_string());
    let mut report = panic_report(message, location, std::thread::current().name());
    super::in_current_request(&mut report);
    capturer.capture(report);
    CAPTURED.with(|c| c.set(true));
}

/// The report of a panic on the current thread, its stack as addresses (none when the thread
/// is resolving a stack trace itself: that report must not ask for another resolution).
fn panic_report(message: String, location: Option<String>, thread: Option<&str>) -> ErrorReport {
    let mut report = ErrorReport::new(
        ErrorKind::Panic,
        Severity::Fatal,
        ErrorDetail::message(Some("panic"), message),
    );
    if let Some(location) = location {
        report.tags.insert("panic.location".into(), location);
    }
    if let Some(name) = thread {
        report.tags.insert("thread".into(), name.to_owned());
    }
    if !super::symbolize::resolving_here() {
        report.stacktrace = Some(Stacktrace::capture());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Resolution;

    #[test]
    fn a_panic_report_holds_the_stack_unresolved() {
        let report = panic_report(
            "index out of bounds".into(),
            Some("src/main.rs:97:13".into()),
            Some("tokio-rt-worker"),
        );
        assert_eq!(report.tags["panic.location"], "src/main.rs:97:13");
        assert_eq!(report.tags["thread"], "tokio-rt-worker");
        let trace = report.stacktrace.unwrap();
        assert_eq!(trace.resolution, Resolution::Pending);
        assert!(!trace.frames.is_empty());
        assert!(
            trace
                .frames
                .iter()
                .all(|f| f.function.is_none() && f.file.is_none()),
            "nothing is looked up on the panicking thread"
        );
    }

    #[test]
    fn rust_backtrace_is_read_as_std_reads_it() {
        // The value, not the variable: tests share the environment.
        let on = |v: Option<&str>| backtrace_requested(v.map(std::ffi::OsStr::new));
        assert!(!on(None));
        assert!(!on(Some("0")));
        assert!(on(Some("1")));
        assert!(on(Some("full")));
    }
}
