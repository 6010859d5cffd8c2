//! The panic hook with its default, `PreviousHook::Replace`: the hook installed before `init`
//! does not run (so the standard library's does not resolve a backtrace on the panicking
//! thread), and the report still carries the resolved stack. Its own test binary: the hook is
//! process-wide.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use qiflow_core::Observer;
use qiflow_core::capture::{ErrorKind, Resolution};

static PREVIOUS_HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn the_default_hook_replaces_the_previous_one_and_reports_the_resolved_stack() {
    std::panic::set_hook(Box::new(|_| {
        PREVIOUS_HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    }));
    let (observer, _guard) = Observer::builder(qiflow_core::test::quiet_config())
        .build()
        .unwrap();

    std::thread::Builder::new()
        .name("ledger".into())
        .spawn(|| panic!("the ledger is negative"))
        .unwrap()
        .join()
        .unwrap_err();
    assert!(observer.flush(Duration::from_secs(20)));

    assert_eq!(
        PREVIOUS_HOOK_CALLS.load(Ordering::SeqCst),
        0,
        "replaced, not chained"
    );
    let groups = observer.error_store().groups();
    let group = groups
        .iter()
        .find(|g| g.message == "the ledger is negative")
        .unwrap();
    assert_eq!(group.kind, ErrorKind::Panic);
    let trace = group.stacktrace.as_ref().unwrap();
    assert_eq!(trace.resolution, Resolution::Resolved, "{trace}");
    assert!(
        trace
            .frames
            .iter()
            .any(|f| f.function.as_deref().is_some_and(|n| n.contains(
                "the_default_hook_replaces_the_previous_one_and_reports_the_resolved_stack"
            )) && f
                .file
                .as_deref()
                .is_some_and(|p| p.ends_with("panic_hook_replace.rs"))),
        "{trace}"
    );
}
