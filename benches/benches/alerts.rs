//! Criterion benches of the alert pipeline.
//!
//! - `alerts/enqueue/observer_alert`: [`Observer::alert`] of an alert on the caller's thread
//!   (what error capture and baselines pay per alert): the bounded `try_send` and its counters.
//!   The queue is drained (untimed) between chunks, so no enqueue hits a full queue.
//! - `alerts/enqueue/bare_sync_channel`: the baseline, a `std::sync::mpsc::sync_channel`
//!   `try_send` of the same alert.
//! - `alerts/notify/qiflow_webhook`: one alert raised and delivered to an in-process webhook
//!   receiver (router, JSON body, HMAC signature, HTTP POST over loopback, answer), waited for
//!   one at a time: notifications per second through the router.
//! - `alerts/notify/qiflow_counting_channel`: the same with a channel that only counts: the
//!   router's own cost (queue, dedup, grouping, rate limit, the attempt task, metrics).
//! - `alerts/notify/bare_reqwest_post`: the baseline, a plain reqwest POST of a body of the same
//!   size to the same receiver.
//! - `alerts/burst_1000/qiflow_webhook`: 1,000 distinct alerts raised at once and delivered
//!   (grouped, up to 50 per notification): alerts per second.
//!
//! Run with `cargo bench -p qiflow-benches --bench alerts`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use qiflow_core::Observer;
use qiflow_core::alert::{Alert, AlertChannel, AlertLevel, Notification, SendError};
use qiflow_core::worker::BoxFuture;

const CHUNK: u64 = 50_000;

fn quiet_config(extra: &str) -> qiflow_core::Config {
    qiflow_core::config::Loader::new()
        .toml_str(format!(
            "[logging]\ndir = \"\"\nstdout = false\n[audit]\nenabled = false\n[alerts]\nstate_file = \"\"\nqueue_capacity = {CHUNK}\n{extra}"
        ))
        .env(Vec::<(String, String)>::new())
        .load()
        .expect("bench config")
}

fn alert(i: u64) -> Alert {
    Alert::new("checkout_errors", AlertLevel::Critical)
        .summary("5xx rate above 5%")
        .label("route", "/orders")
        .label("n", i.to_string())
}

/// An HTTP receiver counting the requests it answers, on its own runtime.
struct Receiver {
    url: String,
    hits: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

fn receiver() -> Receiver {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let counter = counter.clone();
        async move {
            black_box(body);
            counter.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    runtime.spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        hits,
        _runtime: runtime,
    }
}

/// A channel that only counts what it is given.
struct Counting(Arc<AtomicU64>);

impl AlertChannel for Counting {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        self.0.fetch_add(n.alerts.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

fn enqueue(c: &mut Criterion) {
    let mut group = c.benchmark_group("alerts/enqueue");
    group.throughput(Throughput::Elements(1));
    let (observer, _guard) = Observer::builder(quiet_config(
        "group_wait = \"0s\"\n[[alerts.channels]]\nkind = \"log\"\n",
    ))
    .install_global(false)
    .build()
    .expect("observer");
    let template = alert(0);
    group.bench_function("observer_alert", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let alerts: Vec<Alert> = (0..n).map(|_| template.clone()).collect();
                let start = Instant::now();
                for a in alerts {
                    observer.alert(a);
                }
                timed += start.elapsed();
                observer.flush(Duration::from_secs(30));
                left -= n;
            }
            timed
        });
    });
    assert_eq!(
        observer.alerts().dropped(),
        0,
        "the bench must not hit a full queue"
    );
    group.bench_function("bare_sync_channel", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let (tx, rx) = std::sync::mpsc::sync_channel(n as usize);
                let alerts: Vec<Alert> = (0..n).map(|_| template.clone()).collect();
                let start = Instant::now();
                for a in alerts {
                    let _ = black_box(tx.try_send(a));
                }
                timed += start.elapsed();
                drop(rx);
                left -= n;
            }
            timed
        });
    });
    group.finish();
}

fn notify(c: &mut Criterion) {
    let rx = receiver();
    let mut group = c.benchmark_group("alerts/notify");
    group.throughput(Throughput::Elements(1));
    let (observer, _guard) = Observer::builder(quiet_config(&format!(
        "group_wait = \"0s\"\ncooldown = \"0s\"\nrate_limit = 1000000000\n[[alerts.channels]]\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"bench-secret\"\n",
        rx.url
    )))
    .install_global(false)
    .build()
    .expect("observer");
    let mut i = 0u64;
    group.bench_function("qiflow_webhook", |b| {
        b.iter(|| {
            i += 1;
            let before = rx.hits.load(Ordering::Relaxed);
            observer.alert(alert(i));
            while rx.hits.load(Ordering::Relaxed) == before {
                std::hint::spin_loop();
                std::thread::yield_now();
            }
        });
    });
    // The router alone: the same path with a channel that only counts.
    let counted = Arc::new(AtomicU64::new(0));
    let (counting, _counting_guard) = Observer::builder(quiet_config(
        "group_wait = \"0s\"\ncooldown = \"0s\"\nrate_limit = 1000000000\n",
    ))
    .install_global(false)
    .alert_channel("count", Counting(counted.clone()))
    .build()
    .expect("observer");
    group.bench_function("qiflow_counting_channel", |b| {
        b.iter(|| {
            i += 1;
            let before = counted.load(Ordering::Relaxed);
            counting.alert(alert(i));
            while counted.load(Ordering::Relaxed) == before {
                std::hint::spin_loop();
                std::thread::yield_now();
            }
        });
    });
    let body = serde_json::json!({
        "version": "1", "status": "firing", "channel": "webhook", "service": "unknown_service",
        "environment": "development",
        "alerts": [{"name": "checkout_errors", "level": "critical", "status": "firing",
            "summary": "5xx rate above 5%", "description": "", "labels": {"route": "/orders", "n": "1"},
            "source": "", "fingerprint": "0123456789abcdef", "count": 1,
            "starts_at": "2026-11-28T15:00:00Z", "ends_at": null}],
    })
    .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    group.bench_function("bare_reqwest_post", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = client
                    .post(&rx.url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post");
                black_box(response.text().await.expect("body"));
            })
        });
    });
    group.finish();

    let mut group = c.benchmark_group("alerts/burst_1000");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(20);
    let mut n = 0u64;
    group.bench_function("qiflow_webhook", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                n += 1;
                observer.alert(alert(n));
            }
            observer.flush(Duration::from_secs(60));
        });
    });
    group.finish();
    assert_eq!(
        observer.alerts().dropped(),
        0,
        "nothing dropped in the bench"
    );
}

// Written out rather than `criterion_group!`/`criterion_main!`, whose generated `pub fn` cannot
// carry the doc comment the workspace's `missing_docs` lint asks for.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    enqueue(&mut criterion);
    notify(&mut criterion);
    criterion.final_summary();
}
