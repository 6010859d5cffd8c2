//! The checks of `[logging]`, run when a configuration is loaded.

use crate::config::{Findings, LoggingConfig, units};

/// The largest queue any pipeline may ask for.
pub(crate) const MAX_QUEUE: usize = 10_000_000;

/// Adds the problems of `[logging]` to `f`.
pub(crate) fn check(log: &LoggingConfig, f: &mut Findings) {
    if log.level.trim().is_empty() {
        f.bad(
            "logging.level",
            "must not be empty; use a level like \"info\" or directives like \"info,hyper=warn\"",
        );
    }
    if log.file_name.is_empty() || log.file_name.contains(['/', '\\']) {
        f.bad(
            "logging.file_name",
            format!(
                "{:?} must be a plain file name (the directory goes in logging.dir)",
                log.file_name
            ),
        );
    }
    if log.max_size < 4096 {
        f.bad(
            "logging.max_size",
            format!("{} bytes is too small; use at least \"4KiB\"", log.max_size),
        );
    }
    if log.queue_capacity == 0 || log.queue_capacity > MAX_QUEUE {
        f.bad(
            "logging.queue_capacity",
            format!(
                "{} is out of range; use 1 to {MAX_QUEUE}",
                log.queue_capacity
            ),
        );
    }
    let mode = log.file_mode;
    if mode & !0o666 != 0 || mode & 0o600 != 0o600 {
        f.bad(
            "logging.file_mode",
            format!(
                "\"{}\" is not a usable log file mode: the owner must read and write (6 first) and \
                 no execute or special bits may be set; use \"0640\" (the default) or \"0600\"",
                units::format_mode(mode)
            ),
        );
    } else if mode & 0o022 != 0 {
        f.risky(
            "logging.file_mode",
            format!(
                "\"{}\" lets users other than the owner write to the log files, so they can forge \
                 or erase lines; use \"0640\" (the default) or \"0600\"",
                units::format_mode(mode)
            ),
        );
    }
}
