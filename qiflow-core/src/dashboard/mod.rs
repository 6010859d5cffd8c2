//! The live dashboard at `/qiflow/`: one page, compiled into the crate, that shows the service's
//! own state and updates itself every two seconds, on every stack (the operator surface serves
//! it: [`crate::admin`]).
//!
//! - `GET /qiflow/` from a browser (`Accept: text/html`) answers the page, and `/qiflow/app.js`
//!   and `/qiflow/app.css` its script and style. They hold no data, the same for every service,
//!   so they answer without a token; a client that does not ask for HTML gets the JSON index,
//!   which needs one. The page takes the token from a prompt or from the URL fragment
//!   (`/qiflow/#token=…`, which browsers never send to a server), keeps it in the tab's session
//!   storage, and removes it from the address bar.
//! - `GET /qiflow/api/overview` (a `read` token) is everything the page shows, in one JSON
//!   document: traffic and latency per route with their history, recent slow requests, error
//!   groups, alerts and silences, health, the audit trail's newest records and whether it
//!   verifies, the process and the machine, the pipelines.
//! - The page polls the overview every 2 s while it is visible, and stops while the tab is
//!   hidden. `?kiosk=1` is for a wall screen: large type, no controls.
//!
//! # When things run
//!
//! Nothing runs on the request path. Every [`STEP`] a task on qiflow's worker reads the request
//! counters `/metrics` renders and adds a point to each (method, route)'s history: requests per
//! second, error ratio and p95 latency, [`POINTS`] points (15 minutes) each, 16 bytes a point.
//! The health checks run for the overview at most once per [`HEALTH_EVERY`], and the audit
//! trail is verified at most once per [`VERIFY_EVERY`], both on the worker, whatever the number
//! of open pages. `[admin] dashboard = false` turns the page, the overview and the history off.

pub(crate) mod assets;
pub(crate) mod history;

pub use assets::CONTENT_SECURITY_POLICY;
pub use history::{POINTS, STEP, WINDOW_STEPS};

/// The longest the overview shows a health result before the checks run again.
pub const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest the overview shows an audit verification before the trail is verified again.
pub const VERIFY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
