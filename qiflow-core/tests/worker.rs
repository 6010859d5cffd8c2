//! The background worker: exact accounting, overflow policies, and a guard whose drop returns
//! within its budget even when a sink never returns.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use qiflow_core::Observer;
use qiflow_core::test::{FailingSink, HangingSink, RecordingSink, SlowSink};
use qiflow_core::worker::{DropReason, Overflow, PipelineOptions, PipelineStats};

fn observer(budget: Duration) -> (Observer, qiflow_core::Guard) {
    Observer::builder(qiflow_core::test::quiet_config())
        .install_global(false)
        .flush_budget(budget)
        .build()
        .unwrap()
}

fn balanced(s: &PipelineStats) {
    assert_eq!(
        s.submitted,
        s.delivered + s.dropped() + s.queued + s.in_flight,
        "unbalanced: {s:?}"
    );
}

#[test]
fn everything_submitted_is_delivered_by_the_guard() {
    let (observer, guard) = observer(Duration::from_secs(10));
    let sink = RecordingSink::new();
    let p = observer.pipeline(
        PipelineOptions::new("events").capacity(100_000),
        sink.clone(),
    );
    for i in 0..10_000u32 {
        p.submit(i).unwrap();
    }
    let report = guard.shutdown();
    assert!(report.timed_out.is_empty());
    let s = first_user(&report.stats);
    assert_eq!((s.submitted, s.delivered, s.dropped()), (10_000, 10_000, 0));
    assert_eq!(sink.items(), (0..10_000).collect::<Vec<_>>());
    assert!(sink.flushes() >= 1);
}

#[test]
fn many_threads_submit_exactly() {
    let (observer, guard) = observer(Duration::from_secs(30));
    let sink = RecordingSink::new();
    let p = observer.pipeline(
        PipelineOptions::new("events")
            .capacity(1024)
            .overflow(Overflow::Block(Duration::from_secs(30))),
        sink.clone(),
    );
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let p = p.clone();
            scope.spawn(move || {
                for i in 0..10_000u64 {
                    p.submit(t * 1_000_000 + i).unwrap();
                }
            });
        }
    });
    let report = guard.shutdown();
    let s = first_user(&report.stats);
    assert_eq!((s.submitted, s.delivered, s.dropped()), (80_000, 80_000, 0));
    let mut items = sink.items();
    items.sort_unstable();
    items.dedup();
    assert_eq!(items.len(), 80_000);
}

#[test]
fn guard_drop_returns_within_budget_when_a_sink_never_returns() {
    for block_thread in [false, true] {
        let budget = Duration::from_millis(300);
        let (observer, guard) = observer(budget);
        let p = observer.pipeline(
            PipelineOptions::new("hung").capacity(100),
            HangingSink { block_thread },
        );
        for i in 0..50u32 {
            p.submit(i).unwrap();
        }
        // Let the worker take a batch into the hung write.
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let report = guard.shutdown();
        let elapsed = started.elapsed();
        assert!(
            elapsed < budget + Duration::from_millis(500),
            "block_thread={block_thread}: guard took {elapsed:?} for a {budget:?} budget"
        );
        // A sink that blocks a runtime thread may also hold up what shares that thread; a
        // pending one holds up only itself.
        assert!(report.timed_out.contains(&"hung"), "{:?}", report.timed_out);
        if !block_thread {
            assert_eq!(report.timed_out, ["hung"]);
        }
        let s = first_user(&report.stats);
        assert_eq!(s.submitted, 50);
        assert_eq!(s.delivered, 0);
        assert_eq!(s.dropped_shutdown, 50, "{s:?}");
        assert_eq!((s.queued, s.in_flight), (0, 0));
        // After shutdown, submissions are refused and counted.
        assert_eq!(p.submit(99), Err(DropReason::Closed));
        let s = &first_user(&observer.stats()).clone();
        assert_eq!(s.dropped_closed, 1);
        balanced(s);
    }
}

#[test]
fn a_hung_pipeline_does_not_starve_the_next_one() {
    // 1 s: the reserve kept for each later pipeline (fine, then qiflow's alerts and logs) is a
    // quarter of an equal share, 62 ms here, enough for "fine" on a loaded machine.
    let (observer, guard) = observer(Duration::from_secs(1));
    let hung = observer.pipeline(PipelineOptions::new("hung"), HangingSink::default());
    let sink = RecordingSink::new();
    let fine = observer.pipeline(PipelineOptions::new("fine"), sink.clone());
    hung.submit(1u8).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..100u32 {
        fine.submit(i).unwrap();
    }
    let report = guard.shutdown();
    assert_eq!(report.timed_out, ["hung"]);
    assert_eq!(sink.items().len(), 100);
    assert_eq!(
        report
            .stats
            .iter()
            .find(|s| s.name == "fine")
            .unwrap()
            .delivered,
        100
    );
}

#[test]
fn overflow_drop_counts_every_drop() {
    let (observer, guard) = observer(Duration::from_millis(200));
    let p = observer.pipeline(
        PipelineOptions::new("tiny").capacity(10).batch_size(1),
        HangingSink::default(),
    );
    let mut refused = 0;
    for i in 0..1_000u32 {
        if let Err(reason) = p.submit(i) {
            assert_eq!(reason, DropReason::QueueFull);
            refused += 1;
        }
    }
    // A snapshot reads the queue and the in-flight count apart: wait until the worker holds its
    // one item in the hanging sink (between taking it and counting it, it is in neither).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        let s = first_user(&observer.stats()).clone();
        if s.in_flight == 1 || std::time::Instant::now() >= deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    balanced(&before);
    assert_eq!(before.dropped_queue_full, refused);
    assert!(refused >= 1_000 - 11, "{before:?}");
    let report = guard.shutdown();
    let s = first_user(&report.stats);
    assert_eq!(s.submitted, 1_000);
    assert_eq!(s.dropped(), 1_000);
    balanced(s);
}

#[test]
fn overflow_block_waits_instead_of_dropping() {
    let (observer, guard) = observer(Duration::from_secs(10));
    let sink = RecordingSink::new();
    let p = observer.pipeline(
        PipelineOptions::new("slow")
            .capacity(2)
            .overflow(Overflow::Block(Duration::from_secs(10))),
        SlowSink {
            delay: Duration::from_millis(2),
            inner: sink.clone(),
        },
    );
    for i in 0..200u32 {
        p.submit(i).unwrap();
    }
    let report = guard.shutdown();
    assert_eq!(first_user(&report.stats).delivered, 200);
    assert_eq!(sink.items().len(), 200);
}

#[test]
fn sink_errors_are_counted() {
    let (observer, guard) = observer(Duration::from_secs(5));
    let p = observer.pipeline(PipelineOptions::new("failing"), FailingSink);
    for i in 0..100u32 {
        p.submit(i).unwrap();
    }
    let report = guard.shutdown();
    let s = first_user(&report.stats);
    assert_eq!(
        (s.submitted, s.dropped_sink_error, s.delivered),
        (100, 100, 0)
    );
    balanced(s);
}

#[test]
fn flush_drains_without_closing() {
    let (observer, guard) = observer(Duration::from_secs(5));
    let sink = RecordingSink::new();
    let p = observer.pipeline(
        PipelineOptions::new("batched")
            .linger(Duration::from_secs(60))
            .batch_size(1_000),
        sink.clone(),
    );
    for i in 0..10u32 {
        p.submit(i).unwrap();
    }
    // Make sure the worker is inside its linger wait.
    std::thread::sleep(Duration::from_millis(100));
    assert!(sink.items().is_empty());
    // The worker lingers for a full batch; flush writes the partial one now.
    assert!(observer.flush(Duration::from_secs(5)));
    assert_eq!(sink.items().len(), 10);
    p.submit(10).unwrap();
    drop(guard);
    assert_eq!(sink.items().len(), 11);
}

#[test]
fn guard_drop_inside_an_async_runtime_does_not_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (observer, guard) = observer(Duration::from_millis(200));
        let sink = RecordingSink::new();
        let p = observer.pipeline(PipelineOptions::new("in-async"), sink.clone());
        p.submit(1u8).unwrap();
        drop(guard);
        drop(observer);
        assert_eq!(sink.items(), [1]);
    });
}

/// The test's own pipeline: not one of those qiflow always runs (`logs`, `errors`).
fn first_user(stats: &[qiflow_core::worker::PipelineStats]) -> &qiflow_core::worker::PipelineStats {
    stats
        .iter()
        .find(|s| s.name != "logs" && s.name != "errors")
        .expect("the test's pipeline")
}
