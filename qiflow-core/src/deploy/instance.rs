//! The instance id: which process of the service's fleet this is (`[service] instance`).
//!
//! Configured, it is used as it is. Unset, it is the host name and six random hex digits, made
//! once and kept in `<[service] state_dir>/instance`, so a restart on the same state directory
//! is the same instance (and the state directory's lock makes sure only one process is it).

use std::io::ErrorKind;
use std::path::Path;

use crate::config::{ServiceConfig, is_instance_id};

/// The file in the state directory that keeps a generated id.
pub const FILE: &str = "instance";

/// The instance id for `service`, and a warning to print when a generated id could not be kept.
/// An unreadable or edited `instance` file is an error naming the file.
pub(crate) fn resolve(service: &ServiceConfig) -> Result<(String, Option<String>), String> {
    if !service.instance.is_empty() {
        return Ok((service.instance.clone(), None));
    }
    let dir = &service.state_dir;
    if dir.as_os_str().is_empty() {
        return Ok((generate(), None));
    }
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            return if is_instance_id(id) {
                Ok((id.to_owned(), None))
            } else {
                Err(format!(
                    "{}: {id:?} is not an instance id (letters, digits, `.`, `_`, `:`, `-`, at most 128): \
                     delete the file to generate a new one, or set [service] instance",
                    path.display()
                ))
            };
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot read the instance id from {}: {e}; fix its permissions, or set [service] instance",
                path.display()
            ));
        }
    }
    let id = generate();
    let warning = keep(dir, &path, &id).err().map(|e| {
        format!(
            "qiflow: cannot keep the generated instance id {id:?} in {}: {e}; the next start gets a new one (set [service] instance to fix it)",
            path.display()
        )
    });
    Ok((id, warning))
}

fn keep(dir: &Path, path: &Path, id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::files::write_atomic(path, format!("{id}\n").as_bytes(), 0o644)
}

/// `<host>-<6 hex digits>`, the host name cut to what an id allows.
pub(crate) fn generate() -> String {
    let host: String = host_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{host}-{:06x}", fastrand::u32(..0x0100_0000))
}

/// The machine's host name (Linux: the kernel's; elsewhere `HOSTNAME`), or `"unknown"`.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &Path, instance: &str) -> ServiceConfig {
        ServiceConfig {
            state_dir: dir.to_path_buf(),
            instance: instance.to_owned(),
            ..ServiceConfig::default()
        }
    }

    #[test]
    fn a_generated_id_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, warning) = resolve(&service(dir.path(), "")).unwrap();
        assert!(warning.is_none());
        assert!(is_instance_id(&first), "{first}");
        assert!(first.starts_with(&host_name()[..1]), "{first}");
        let kept = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(kept.trim(), first);
        let (again, _) = resolve(&service(dir.path(), "")).unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn a_configured_id_wins_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (id, _) = resolve(&service(dir.path(), "web-1")).unwrap();
        assert_eq!(id, "web-1");
        assert!(!dir.path().join(FILE).exists());
    }

    #[test]
    fn an_edited_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "web 1; DROP TABLE\n").unwrap();
        let e = resolve(&service(dir.path(), "")).unwrap_err();
        assert!(
            e.contains("instance") && e.contains("not an instance id"),
            "{e}"
        );
        assert!(
            e.contains(&dir.path().join(FILE).display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn without_a_state_dir_each_start_generates() {
        let (a, _) = resolve(&service(Path::new(""), "")).unwrap();
        let (b, _) = resolve(&service(Path::new(""), "")).unwrap();
        assert!(is_instance_id(&a) && is_instance_id(&b));
        // 24 random bits: equal once in 16 million.
        assert_ne!(a, b);
    }
}
