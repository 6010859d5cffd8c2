//! Performance baselines (issue 7, in progress): per-route latency and error windows.
//!
//! Built so far: [`Window`], the lock-free sliding window each route records into on the
//! request path (O(1), no lock, no allocation, exact under concurrency), and its [`Snapshot`]
//! with quantiles, rate and error rate. Still to come, in this module: the per-route map under
//! `[metrics] max_routes`, the learned baseline from closed windows persisted to
//! `[baseline] state_file`, deviation and slow-request detection raising alerts, the
//! `/qiflow/api/baselines` view and the Prometheus gauges. `[baseline]` settings have no effect
//! until then.
//!
//! ```
//! use std::time::Duration;
//! use qiflow_core::baseline::Window;
//!
//! let window = Window::new(Duration::from_secs(60));
//! for ms in [8, 9, 10, 11, 250] {
//!     window.record(1_000, Duration::from_millis(ms), ms > 100);
//! }
//! let now = window.snapshot(1_000);
//! assert_eq!(now.count, 5);
//! assert!((now.quantile_ms(0.5).unwrap() - 10.0).abs() < 0.5);
//! assert_eq!(now.error_rate(), 0.2);
//! ```

mod window;

pub use window::{SLOTS, Snapshot, Window};
