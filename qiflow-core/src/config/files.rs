//! The files qiflow keeps private, and the check that reports existing ones that are wider.

use std::path::{Path, PathBuf};

use super::{AuditSinkKind, Config, Problem, ProblemKind};
use crate::files::PRIVATE_MODE;

/// A file qiflow creates with a restricted mode, or a directory of them, and the widest mode it
/// may have: what [`check_private_files`] (and `qiflow check --strict`) looks at.
///
/// ```
/// use qiflow_core::config::PrivateFile;
///
/// let state = PrivateFile::new("alerts.state_file", "data/alerts.json", 0o600);
/// assert_eq!(state.key, "alerts.state_file");
/// let logs = PrivateFile::new("logging.file_mode", "logs", 0o640).files_starting_with("app");
/// assert_eq!(logs.name_prefix.as_deref(), Some("app"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrivateFile {
    /// The key path that sets the file or its mode (`alerts.state_file`).
    pub key: String,
    /// The file; a directory stands for the regular files directly in it.
    pub path: PathBuf,
    /// The widest mode allowed, such as `0o600`.
    pub max_mode: u32,
    /// For a directory: only the files whose name starts with this.
    pub name_prefix: Option<String>,
}

impl PrivateFile {
    /// An entry for `path`, named by `key`, allowed at most `max_mode`.
    pub fn new(key: impl Into<String>, path: impl Into<PathBuf>, max_mode: u32) -> Self {
        Self {
            key: key.into(),
            path: path.into(),
            max_mode,
            name_prefix: None,
        }
    }

    /// For a directory: check only the files whose name starts with `prefix`.
    #[must_use]
    pub fn files_starting_with(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = Some(prefix.into());
        self
    }
}

impl Config {
    /// The files this configuration makes qiflow create with a restricted mode: the log files
    /// (`[logging] file_mode`, default `0640`), the alert and baseline state files and the audit
    /// trail's segments (`0600`). Unset paths (`""`) and a disabled file sink are left out.
    pub fn private_files(&self) -> Vec<PrivateFile> {
        let mut files = Vec::new();
        let mut add = |file: PrivateFile| {
            if !file.path.as_os_str().is_empty() {
                files.push(file);
            }
        };
        let log = &self.logging;
        let stem = Path::new(&log.file_name).file_stem().map_or_else(
            || log.file_name.clone(),
            |s| s.to_string_lossy().into_owned(),
        );
        add(
            PrivateFile::new("logging.file_mode", &log.dir, log.file_mode)
                .files_starting_with(stem),
        );
        add(PrivateFile::new(
            "alerts.state_file",
            &self.alerts.state_file,
            PRIVATE_MODE,
        ));
        add(PrivateFile::new(
            "baseline.state_file",
            &self.baseline.state_file,
            PRIVATE_MODE,
        ));
        if self.audit.enabled && self.audit.sink == AuditSinkKind::File {
            add(PrivateFile::new("audit.dir", &self.audit.dir, PRIVATE_MODE));
            add(PrivateFile::new(
                "audit.witness",
                self.audit.witness_path(),
                PRIVATE_MODE,
            ));
        }
        add(PrivateFile::new(
            "admin.token_file",
            &self.admin.token_file,
            PRIVATE_MODE,
        ));
        files
    }
}

/// A warning ([`ProblemKind::FileMode`]) for each entry of `files` that exists and is wider than
/// its mode: readable or writable by users its mode leaves out. It names the file, its mode, and
/// the `chmod` that fixes it. Missing files are fine (not created yet). Unix only: elsewhere
/// there is nothing to check.
///
/// ```
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// use qiflow_core::config::{PrivateFile, check_private_files};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("alerts.json");
/// std::fs::write(&path, "{}").unwrap();
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
/// let warnings = check_private_files(&[PrivateFile::new("alerts.state_file", &path, 0o600)]);
/// assert_eq!(warnings.len(), 1);
/// assert!(warnings[0].message().contains("chmod 600"));
/// # }
/// ```
pub fn check_private_files(files: &[PrivateFile]) -> Vec<Problem> {
    files.iter().filter_map(check_one).collect()
}

#[cfg(unix)]
fn check_one(file: &PrivateFile) -> Option<Problem> {
    use std::os::unix::fs::PermissionsExt;

    let mode_of = |m: &std::fs::Metadata| m.permissions().mode() & 0o7777;
    let wide = |mode: u32| mode & !file.max_mode != 0;
    let chmod = format!("chmod {:o}", file.max_mode);
    let max = super::units::format_mode(file.max_mode);
    let problem = |message: String| Problem::new(ProblemKind::FileMode, file.key.clone(), message);
    let meta = match std::fs::metadata(&file.path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(problem(format!(
                "cannot check the mode of {}: {e}",
                file.path.display()
            )));
        }
    };
    if meta.is_file() {
        let mode = mode_of(&meta);
        return wide(mode).then(|| {
            problem(format!(
                "{} has mode {}, wider than {max}; run `{chmod} {}`",
                file.path.display(),
                super::units::format_mode(mode),
                file.path.display()
            ))
        });
    }
    if !meta.is_dir() {
        return None;
    }
    let entries = match std::fs::read_dir(&file.path) {
        Ok(entries) => entries,
        Err(e) => {
            return Some(problem(format!(
                "cannot list {} to check its files' modes: {e}",
                file.path.display()
            )));
        }
    };
    let mut found: Vec<(PathBuf, u32)> = entries
        .flatten()
        .filter(|entry| {
            file.name_prefix
                .as_deref()
                .is_none_or(|p| entry.file_name().to_string_lossy().starts_with(p))
        })
        .filter_map(|entry| {
            let meta = std::fs::metadata(entry.path()).ok()?;
            let mode = mode_of(&meta);
            (meta.is_file() && wide(mode)).then(|| (entry.path(), mode))
        })
        .collect();
    if found.is_empty() {
        return None;
    }
    found.sort();
    const SHOWN: usize = 3;
    let listed = found
        .iter()
        .take(SHOWN)
        .map(|(p, m)| format!("{} ({})", p.display(), super::units::format_mode(*m)))
        .collect::<Vec<_>>()
        .join(", ");
    let more = match found.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let targets = if found.len() <= SHOWN {
        found
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        format!(
            "{}/{}*",
            file.path.display(),
            file.name_prefix.as_deref().unwrap_or_default()
        )
    };
    Some(problem(format!(
        "{} file(s) in {} are wider than {max}: {listed}{more}; run `{chmod} {targets}`",
        found.len(),
        file.path.display()
    )))
}

#[cfg(not(unix))]
fn check_one(_: &PrivateFile) -> Option<Problem> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(path: &Path, mode: u32) {
        std::fs::write(path, "x").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn wider_files_are_named_with_their_mode_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(&d.join("alerts.json"), 0o600);
        write(&d.join("baselines.json"), 0o640);
        std::fs::create_dir(d.join("logs")).unwrap();
        write(&d.join("logs/app.log"), 0o644);
        write(&d.join("logs/app.20210304T050607Z.log.gz"), 0o640);
        write(&d.join("logs/other.log"), 0o666); // not this log's: not checked
        let files = [
            PrivateFile::new("alerts.state_file", d.join("alerts.json"), 0o600),
            PrivateFile::new("baseline.state_file", d.join("baselines.json"), 0o600),
            PrivateFile::new("logging.file_mode", d.join("logs"), 0o640).files_starting_with("app"),
            PrivateFile::new("audit.dir", d.join("missing"), 0o600),
        ];
        let warnings = check_private_files(&files);
        let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2, "{shown:#?}");
        assert!(warnings.iter().all(|w| w.kind() == ProblemKind::FileMode));
        let baseline = &warnings[0];
        assert_eq!(baseline.path(), "baseline.state_file");
        let file = d.join("baselines.json").display().to_string();
        assert_eq!(
            baseline.message(),
            format!("{file} has mode 0640, wider than 0600; run `chmod 600 {file}`")
        );
        let logs = &warnings[1];
        assert_eq!(logs.path(), "logging.file_mode");
        let log = d.join("logs/app.log").display().to_string();
        assert!(
            logs.message().contains(&format!("{log} (0644)")),
            "{shown:#?}"
        );
        assert!(
            logs.message().ends_with(&format!("run `chmod 640 {log}`")),
            "{shown:#?}"
        );
        assert!(!logs.message().contains("other.log"), "{shown:#?}");

        // Many files: a glob instead of a list.
        for i in 0..5 {
            write(&d.join(format!("logs/app.{i}.log")), 0o604);
        }
        let warnings = check_private_files(&files[2..3]);
        let message = warnings[0].message();
        assert!(message.starts_with("6 file(s) in "), "{message}");
        assert!(message.contains(" and 3 more;"), "{message}");
        assert!(
            message.ends_with(&format!(
                "run `chmod 640 {}/app*`",
                d.join("logs").display()
            )),
            "{message}"
        );

        // Fixed: nothing to say.
        for entry in std::fs::read_dir(d.join("logs")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        }
        std::fs::set_permissions(
            d.join("baselines.json"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        assert!(check_private_files(&files).is_empty());
    }

    #[test]
    fn the_configuration_lists_its_private_files() {
        let mut config = Config::default();
        config.logging.file_mode = 0o600;
        let files = config.private_files();
        let keys: Vec<(&str, u32)> = files.iter().map(|f| (f.key.as_str(), f.max_mode)).collect();
        assert_eq!(
            keys,
            [
                ("logging.file_mode", 0o600),
                ("alerts.state_file", 0o600),
                ("baseline.state_file", 0o600),
                ("audit.dir", 0o600),
                ("audit.witness", 0o600),
                ("admin.token_file", 0o600)
            ]
        );
        assert_eq!(files[0].name_prefix.as_deref(), Some("app"));
        let mut quiet = Config::default();
        quiet.logging.dir = PathBuf::new();
        quiet.alerts.state_file = PathBuf::new();
        quiet.baseline.state_file = PathBuf::new();
        quiet.audit.enabled = false;
        quiet.admin.token_file = PathBuf::new();
        assert!(quiet.private_files().is_empty());
    }
}
