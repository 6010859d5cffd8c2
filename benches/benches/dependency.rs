//! What watching a dependency costs (`qiflow_core::dependency`).
//!
//! - `dependency_call/floor`: awaiting a ready future that returns `Ok`: the call a handler makes
//!   anyway, the floor.
//! - `dependency_call/floor_observation`: the same future timed the cheapest way there is (two
//!   clock reads, one relaxed add on a fixed bucket array): the floor of any observation.
//! - `dependency_call/observe`: the same future through `Dependency::observe("SELECT", …)`: the
//!   clock read twice, the operation's histogram found under a read lock (a foldhash lookup) and
//!   one value recorded on the exporter's histogram.
//! - `dependency_call/query`: through `Dependency::query(statement, …)`: the operation taken from
//!   the statement's first keyword (on the stack) on top of `observe`.
//! - `dependency_call/acquire`: a ready acquire through `Dependency::acquire`: the waiter count
//!   up and down, the clock read twice, one value recorded on the wait histogram.
//! - `dependency_sample/pool`: one sample of a registered pool (four gauges set); the worker
//!   takes 12 a minute per pool.
//! - With `QIFLOW_BENCH_POSTGRES_URL` set (e.g. the cluster of `.ci/tier2-audit.sh`), a real
//!   `SELECT 1` over one connection on loopback, bare and observed, interleaved query by query
//!   (20,000 of each after a warm-up), printed as medians: the part of a real query's latency
//!   that `observe` adds.
//! - With it set, the same for sqlx (`sqlx::query("SELECT 1").fetch_one(&pool)`, one connection),
//!   three ways interleaved: bare; through `Dependency::query` (the wrapper qiflow ships); and
//!   through sqlx's own hook, its statement log (`log_statements(Info)`) read by a tracing layer
//!   that records each event's `elapsed_secs` on the dependency (the other way the integration
//!   could have been built); and the floor, the cheapest observation there is (two clock reads
//!   and one atomic add). Each way has its own pool of one connection (sqlx hands a connection
//!   back in a task of its own: a pool queried twice in a row would time the hand-back), and
//!   the order of the four rotates each round; the pools other than the hook's log no
//!   statements; all run under the same subscriber. Printed: wall-clock medians, and the mean
//!   CPU time of the thread (the runtime is current-thread) per query.
//!
//! Run: `cargo bench -p qiflow-benches --bench dependency`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use qiflow_core::dependency::{DependencyKind, PoolSample};

fn observer() -> (qiflow_core::Observer, qiflow_core::Guard) {
    let config = qiflow_core::config::Loader::new()
        .toml_str(
            "[logging]\ndir = \"\"\nstdout = false\n[audit]\nenabled = false\n[alerts]\nstate_file = \"\"\n[baseline]\nstate_file = \"\"\n[service]\nstate_dir = \"\"\n[admin]\ntoken_file = \"\"\n[metrics]\nsystem = false\n",
        )
        .env(Vec::<(String, String)>::new())
        .load()
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    qiflow_core::Observer::builder(config)
        .install_global(false)
        .build()
        .unwrap_or_else(|e| panic!("observer: {e}"))
}

fn calls(c: &mut Criterion) {
    let (observer, _guard) = observer();
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    let rt = runtime();
    let mut group = c.benchmark_group("dependency_call");
    group.bench_function("floor", |b| {
        b.iter(|| rt.block_on(async { black_box(async { Ok::<u32, std::io::Error>(1) }.await) }));
    });
    group.bench_function("floor_observation", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(floor_observation(async { Ok::<u32, std::io::Error>(1) }).await)
            })
        });
    });
    group.bench_function("observe", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    db.observe("SELECT", async { Ok::<u32, std::io::Error>(1) })
                        .await,
                )
            })
        });
    });
    group.bench_function("query", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    db.query("SELECT name FROM users WHERE id = $1", async {
                        Ok::<u32, std::io::Error>(1)
                    })
                    .await,
                )
            })
        });
    });
    group.bench_function("acquire", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(db.acquire(async { Ok::<u32, std::io::Error>(1) }).await)
            })
        });
    });
    group.finish();

    let pool = observer.dependency("pool", DependencyKind::Postgres);
    pool.pool(|| PoolSample::new(3, 5, 8, 0));
    c.bench_function("dependency_sample/pool", |b| {
        b.iter(|| black_box(pool.sample()));
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// The median of `v` (sorted in place).
fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn real_query() {
    let Ok(url) = std::env::var("QIFLOW_BENCH_POSTGRES_URL") else {
        eprintln!("dependency_postgres: skipped (set QIFLOW_BENCH_POSTGRES_URL)");
        return;
    };
    let (observer, _guard) = observer();
    let db = observer.dependency("main-db", DependencyKind::Postgres);
    let rt = runtime();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach {url}: {e}"));
        tokio::spawn(conn);
        let statement = client
            .prepare("SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("prepare: {e}"));
        const N: usize = 20_000;
        let (mut bare, mut observed) = (Vec::with_capacity(N), Vec::with_capacity(N));
        for i in 0..N + 2_000 {
            let t = Instant::now();
            let _ = black_box(client.query_one(&statement, &[]).await);
            let b = t.elapsed();
            let t = Instant::now();
            let _ = black_box(
                db.observe("SELECT", client.query_one(&statement, &[]))
                    .await,
            );
            let o = t.elapsed();
            if i >= 2_000 {
                bare.push(b);
                observed.push(o);
            }
        }
        let (b, o) = (median(&mut bare), median(&mut observed));
        let added = o.as_nanos() as f64 - b.as_nanos() as f64;
        println!(
            "dependency_postgres: SELECT 1 on loopback, {N} interleaved pairs: bare median {:.1} µs, observed median {:.1} µs, observed/bare {:.4} ({added:+.0} ns)",
            b.as_nanos() as f64 / 1000.0,
            o.as_nanos() as f64 / 1000.0,
            o.as_nanos() as f64 / b.as_nanos() as f64,
        );
    });
}

/// sqlx's hook: a layer that sees only `sqlx::query` events and records their `elapsed_secs`
/// on the dependency (with no pool name and no outcome in the event, it can do no more).
struct SqlxHook(qiflow_core::dependency::Dependency);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SqlxHook {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.target() == "sqlx::query" {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Elapsed(f64);
        impl tracing::field::Visit for Elapsed {
            fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
                if field.name() == "elapsed_secs" {
                    self.0 = value;
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut elapsed = Elapsed(0.0);
        event.record(&mut elapsed);
        self.0
            .record("SELECT", None, Duration::from_secs_f64(elapsed.0), None);
    }
}

fn sqlx_query() {
    use sqlx::ConnectOptions as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let Ok(url) = std::env::var("QIFLOW_BENCH_POSTGRES_URL") else {
        eprintln!("dependency_sqlx: skipped (set QIFLOW_BENCH_POSTGRES_URL)");
        return;
    };
    let (observer, _guard) = observer();
    let wrapped = observer.dependency("wrapped", DependencyKind::Postgres);
    let hooked = observer.dependency("hooked", DependencyKind::Postgres);
    let subscriber = tracing_subscriber::registry().with(SqlxHook(hooked));
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = runtime();
    rt.block_on(async {
        let options: sqlx::postgres::PgConnectOptions = url
            .parse()
            .unwrap_or_else(|e| panic!("cannot parse {url}: {e}"));
        let pool = |level| {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone().log_statements(level))
        };
        // One pool of one connection each: sqlx hands a connection back to its pool in a task
        // of its own, so a pool queried twice in a row would time that hand-back too.
        let url = &url;
        let connect = |level| async move {
            pool(level)
                .await
                .unwrap_or_else(|e| panic!("cannot reach {url}: {e}"))
        };
        let quiet = connect(log::LevelFilter::Off).await;
        let quiet_wrapped = connect(log::LevelFilter::Off).await;
        let quiet_floor = connect(log::LevelFilter::Off).await;
        let logging = connect(log::LevelFilter::Info).await;
        const N: usize = 20_000;
        let mut times: [Vec<Duration>; 4] = std::array::from_fn(|_| Vec::with_capacity(N));
        // The CPU this thread spent on each way (the runtime is current-thread: sqlx's I/O
        // runs here too), summed.
        let mut cpu = [Duration::ZERO; 4];
        let sql = "SELECT 1";
        for i in 0..N + 2_000 {
            let pools = [&quiet, &quiet_wrapped, &logging, &quiet_floor];
            // Each round in another order: what the query before leaves running on this
            // thread (sqlx's hand-back of its connection) falls on every way alike.
            for k in 0..pools.len() {
                let way = (i + k) % pools.len();
                let pool = pools[way];
                let c = thread_cpu();
                let t = Instant::now();
                let _ = match way {
                    1 => black_box(wrapped.query(sql, sqlx::query(sql).fetch_one(pool)).await),
                    3 => black_box(floor_observation(sqlx::query(sql).fetch_one(pool)).await),
                    _ => black_box(sqlx::query(sql).fetch_one(pool).await),
                };
                let (took, spent) = (t.elapsed(), thread_cpu() - c);
                if i >= 2_000 {
                    times[way].push(took);
                    cpu[way] += spent;
                }
            }
        }
        let [bare, wrapper, hook, floor] = times.each_mut().map(|v| median(v));
        let ns = |d: Duration| d.as_nanos() as f64;
        let cpu_ns = cpu.map(|d| ns(d) / N as f64);
        println!(
            "dependency_sqlx: SELECT 1 on loopback, {N} interleaved rounds: bare median {:.1} µs, {:.2} µs CPU; \
             floor (two clock reads, one atomic bucket add) {:.4}x ({:+.0} ns), CPU {:+.0} ns; \
             wrapper (Dependency::query) {:.4}x ({:+.0} ns), CPU {:+.0} ns; \
             sqlx's log hook {:.4}x ({:+.0} ns), CPU {:+.0} ns",
            ns(bare) / 1000.0,
            cpu_ns[0] / 1000.0,
            ns(floor) / ns(bare),
            ns(floor) - ns(bare),
            cpu_ns[3] - cpu_ns[0],
            ns(wrapper) / ns(bare),
            ns(wrapper) - ns(bare),
            cpu_ns[1] - cpu_ns[0],
            ns(hook) / ns(bare),
            ns(hook) - ns(bare),
            cpu_ns[2] - cpu_ns[0],
        );
    });
}

/// The cheapest observation of a call there can be, the floor of `observe`: two clock reads
/// and one relaxed add on a fixed bucket array.
async fn floor_observation<T>(call: impl std::future::Future<Output = T>) -> T {
    static BUCKETS: [std::sync::atomic::AtomicU64; 10] =
        [const { std::sync::atomic::AtomicU64::new(0) }; 10];
    const BOUNDS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];
    let t = Instant::now();
    let out = call.await;
    let s = t.elapsed().as_secs_f64();
    let i = BOUNDS.partition_point(|b| *b < s);
    BUCKETS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    out
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    calls(&mut c);
    c.final_summary();
    real_query();
    sqlx_query();
}
