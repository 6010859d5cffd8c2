//! The checks of `[logging]`, run when a configuration is loaded.

use crate::config::{Compression, Findings, LoggingConfig, units};

/// The largest queue any pipeline may ask for.
pub(crate) const MAX_QUEUE: usize = 10_000_000;

/// Adds the problems of `[logging]` to `f`.
pub(crate) fn check(log: &LoggingConfig, f: &mut Findings) {
    if let Err(e) = super::parse_filter(&log.level) {
        f.bad("logging.level", e.to_string());
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
    if log.compress == Compression::Zstd && !cfg!(feature = "zstd") {
        // Not an error: the files are still rotated and compressed, with gzip.
        f.advise(
            "logging.compress",
            format!(
                "{}; meanwhile rotated files are gzipped",
                crate::config::needs_feature("\"zstd\"", "zstd")
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::config::Loader;

    fn load(toml: &str) -> crate::Config {
        Loader::new()
            .toml_str(toml)
            .env::<[(&str, &str); 0], _, _>([])
            .load()
            .unwrap()
    }

    #[test]
    fn a_level_that_does_not_parse_names_the_directive() {
        for (level, says) in [
            ("", "the log filter is empty"),
            ("  ", "the log filter is empty"),
            ("info,sqlx=loud", "the directive \"sqlx=loud\" is not valid"),
            ("info,[open", "the directive \"[open\" is not valid"),
        ] {
            let e = Loader::new()
                .toml_str(format!("[logging]\nlevel = {level:?}\n").as_str())
                .env::<[(&str, &str); 0], _, _>([])
                .load()
                .unwrap_err();
            let problem = e
                .problems()
                .iter()
                .find(|p| p.path() == "logging.level")
                .unwrap_or_else(|| panic!("{level:?}: {e}"));
            assert!(problem.message().contains(says), "{level:?}: {problem}");
        }
        for good in [
            "debug",
            "INFO",
            "off",
            "info,sqlx=warn",
            "warn,my_app::db=trace",
        ] {
            let c = load(&format!(
                "[logging]\nlevel = {good:?}\n[audit]\nenabled = false\n"
            ));
            assert_eq!(c.logging.level, good);
        }
    }

    #[cfg(not(feature = "zstd"))]
    #[test]
    fn zstd_without_the_feature_warns_naming_it() {
        let config = load("[logging]\ncompress = \"zstd\"\n[audit]\nenabled = false\n");
        let [warning] = config.warnings() else {
            panic!("one warning expected: {:?}", config.warnings());
        };
        assert_eq!(
            warning.to_string(),
            "logging.compress: \"zstd\" needs qiflow-core's \"zstd\" feature; add features = [\"zstd\"] \
             to the qiflow-core dependency; meanwhile rotated files are gzipped"
        );
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_with_the_feature_is_quiet() {
        let config = load("[logging]\ncompress = \"zstd\"\n[audit]\nenabled = false\n");
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }
}
