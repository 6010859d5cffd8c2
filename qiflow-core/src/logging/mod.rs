//! Structured logging: JSON lines, redaction, and a rotating file behind a non-blocking queue.
//!
//! `init` installs a tracing subscriber made of a [`LogFilter`] (`RUST_LOG` when set, else
//! `[logging] level`; changeable at runtime) and a [`LogLayer`]. Each event becomes one line, in
//! JSON:
//!
//! ```text
//! {"timestamp":"2026-11-28T13:04:05.123Z","level":"INFO","target":"checkout::api","message":"order placed","order_id":42,"request_id":"0193…"}
//! ```
//!
//! with the event's fields, then the fields of the spans it is in (innermost first), or in a
//! `pretty` format for development. Lines go through a bounded queue (the `logs` pipeline) to
//! stdout and/or a [`RotatingFile`](rotate::RotatingFile) on qiflow's background worker, so a log
//! call never does I/O. See `docs/logging.md`.
//!
//! # Guarantees
//!
//! - One event is exactly one line: CR, LF, NUL, U+2028/9 and ANSI escapes inside values are
//!   escaped.
//! - Fields named like a secret (see [`Redactor`]) are `[REDACTED]`, never formatted.
//! - A string field is capped at [`FIELD_CAP`] bytes, cut at a UTF-8 boundary with a marker.
//! - Nothing is lost silently: with `overflow = "drop"` a full queue drops and counts; with
//!   `"block"` (the default) the caller waits up to [`BLOCK_TIMEOUT`]; write errors (disk full)
//!   drop and count. Drops are reported in the log itself, on stderr, and on
//!   `qiflow_dropped_total{pipeline="logs"}`.

pub(crate) mod check;
mod filter;
mod format;
mod layer;
pub(crate) mod pool;
mod redact;
pub mod rotate;
pub(crate) mod sink;

use std::time::Duration;

pub use filter::{FilterError, LogFilter};
pub(crate) use filter::{FilterSource, parse as parse_filter};
pub use format::FIELD_CAP;
pub(crate) use format::{cap as format_cap, timestamp as format_timestamp};
pub use layer::LogLayer;
pub use redact::{BUILTIN, REDACTED, Redactor};

/// With `overflow = "block"`, the longest a log call waits for room in the queue before the line
/// is dropped and counted.
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(2);
