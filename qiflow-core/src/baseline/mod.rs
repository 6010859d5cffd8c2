//! Performance baselines: each route learns its normal latency and error rate and qiflow says
//! when it changes.
//!
//! - Every request is recorded into its route's [`Window`] (per method and route template,
//!   capped with `[metrics] max_routes`): O(1), lock-free, no allocation.
//! - Every `[baseline] window`, each route's window is compared with its [`Learned`] baseline
//!   (after `min_samples`): a p95 above `deviation_factor` × the baseline's, or an error rate
//!   above the baseline's by `error_rate_margin`, raises a warning alert through the alert
//!   pipeline, resolved when the route is back to normal. Then the window is learned from (an
//!   exponentially weighted mean; slowly while deviating).
//! - A request slower than `slow_request`, or than `slow_p99_factor` × the route's baseline p99,
//!   is logged as `qiflow::slow` (at most once a second per route) and counted on
//!   `qiflow_slow_requests_total{method,route}`.
//! - The learned baselines persist in `state_file` and are reloaded at start.
//! - [`Baselines::to_json`] is `/qiflow/api/baselines`; `qiflow_baseline_p95_seconds` and
//!   `qiflow_baseline_error_ratio` export the baselines, `qiflow_baseline_deviations_total{route}`
//!   counts the deviations.
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

pub(crate) mod check;
mod routes;
mod window;

pub(crate) use routes::RouteBaseline;
pub use routes::{Baselines, Learned, RECENT_SLOW, RouteView, SlowRequest, WindowView};
pub use window::{SLOTS, Snapshot, Window};
