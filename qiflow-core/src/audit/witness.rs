//! The witness: where a trail was last sealed, published outside it, so a trail cut back to an
//! earlier digest (the newest segment deleted, the file truncated right after a digest, rows
//! deleted) is detected.
//!
//! Every digest that becomes durable is published four ways: a witness file beside the trail
//! directory (file sink) or a witness row in its own table (PostgreSQL sink), a log line on
//! target `qiflow::audit`, and the gauges `qiflow_audit_sealed_records` and
//! `qiflow_audit_last_digest_timestamp_seconds`. At start a sink compares its trail with its
//! witness and raises an [`AuditAlarm`] when they disagree; `qiflow audit verify` compares them
//! too.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chain::{DigestRecord, parse_timestamp};
use super::{AuditError, AuditErrorKind};

/// A sealed point of a trail: its last durable digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Seal {
    /// The digest's seq: every line up to it is sealed.
    pub seq: u64,
    /// Audit records (not digests) sealed since the trail began, this digest's included.
    pub sealed_records: u64,
    /// When the digest was written (RFC 3339, UTC).
    pub timestamp: String,
    /// The digest line's `hash`.
    pub hash: String,
    /// The digest's `signature` (HMAC with the signing key, or SHA-256 when not keyed).
    pub signature: String,
}

impl Seal {
    /// A seal at `seq` (the digest's seq), `sealed_records` records sealed in all; what a
    /// custom [`AuditSink`](super::AuditSink) reports in [`SinkNotice::Sealed`].
    pub fn new(
        seq: u64,
        sealed_records: u64,
        timestamp: impl Into<String>,
        hash: impl Into<String>,
        signature: impl Into<String>,
    ) -> Self {
        Self {
            seq,
            sealed_records,
            timestamp: timestamp.into(),
            hash: hash.into(),
            signature: signature.into(),
        }
    }

    /// The seal that `digest` (a stored digest line) stands for, with `sealed_records` records
    /// sealed in all.
    pub(crate) fn of(digest: &DigestRecord, sealed_records: u64) -> Self {
        Self {
            seq: digest.seq,
            sealed_records,
            timestamp: digest.timestamp.clone(),
            hash: digest.hash.clone(),
            signature: digest.signature.clone(),
        }
    }

    /// The digest's time as Unix seconds (0 when it cannot be parsed).
    pub fn unix_seconds(&self) -> f64 {
        parse_timestamp(&self.timestamp).map_or(0.0, |t| {
            t.unix_timestamp() as f64 + f64::from(t.microsecond()) / 1e6
        })
    }
}

/// What an [`AuditAlarm`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlarmKind {
    /// The trail ends before the seq its witness sealed: lines were deleted from its end (the
    /// newest segment, a truncated file, deleted rows). Sequence numbers continue past the
    /// witness. Critical.
    TrailCut,
    /// The trail's line at the witness's seq is not the digest the witness sealed: the trail
    /// was rewritten from there, or the witness belongs to another trail. Critical.
    WitnessMismatch,
    /// The trail holds digests but its witness is missing or unreadable: it was deleted or
    /// damaged, so a cut tail could not be detected. A new witness is written.
    WitnessMissing,
    /// The witness could not be written after a digest (the digest itself is stored).
    WitnessUnwritable,
    /// `[audit] signing_key` is set on a trail sealed without a key: it is sealed at start with
    /// a keyed digest, and the part before it stays sealed without a key. A warning.
    SigningKeyAdded,
    /// The trail's last digest is keyed, but with another key than the configured one, or no
    /// key is configured any more: verification with one key fails on the trail.
    SigningKeyChanged,
}

impl AlarmKind {
    /// The alert name: `audit_trail_cut`, `audit_witness_mismatch`, `audit_witness_missing`,
    /// `audit_witness_unwritable`, `audit_signing_key_added`, `audit_signing_key_changed`.
    pub fn alert_name(self) -> &'static str {
        match self {
            Self::TrailCut => "audit_trail_cut",
            Self::WitnessMismatch => "audit_witness_mismatch",
            Self::WitnessMissing => "audit_witness_missing",
            Self::WitnessUnwritable => "audit_witness_unwritable",
            Self::SigningKeyAdded => "audit_signing_key_added",
            Self::SigningKeyChanged => "audit_signing_key_changed",
        }
    }

    /// Whether the alarm means the trail itself was damaged (raised as a critical alert; the
    /// others are errors).
    pub fn is_critical(self) -> bool {
        matches!(self, Self::TrailCut | Self::WitnessMismatch)
    }
}

/// A disagreement between a trail and its witness or its signing key, found by a sink (at start,
/// or when writing the witness). The writer logs it on target `qiflow::audit` and raises it as
/// an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditAlarm {
    /// What it is about.
    pub kind: AlarmKind,
    /// What was found and what to do, naming the trail and the witness.
    pub message: String,
}

impl AuditAlarm {
    /// An alarm of `kind`.
    pub fn new(kind: AlarmKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// What a sink reports to the writer after a call (see
/// [`AuditSink::take_notices`](super::AuditSink::take_notices)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkNotice {
    /// Where the trail stood when the sink opened it (sets the gauges; logged once).
    Resumed(Seal),
    /// A digest became durable (its witness written): logged, and sets the gauges.
    Sealed(Seal),
    /// The trail and its witness disagree.
    Alarm(AuditAlarm),
}

/// The witness file of a trail directory: `<dir>.witness.json` beside it by default.
///
/// One JSON object, replaced atomically (a temporary file, fsync, rename), created `0600`. The
/// directory is not fsynced: after a crash the witness may be one digest behind the trail,
/// which the next start recognises (the trail holds that digest), logs and corrects:
///
/// ```json
/// {"kind":"qiflow-audit-witness","version":1,"trail":"data/audit","seq":57,"sealed_records":55,
///  "timestamp":"2026-11-28T15:04:05.123456Z","hash":"41ab…","signature":"9f2c…"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessFile {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    kind: String,
    version: u32,
    trail: String,
    #[serde(flatten)]
    seal: Seal,
}

const KIND: &str = "qiflow-audit-witness";

impl WitnessFile {
    /// The witness at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the witness: `Ok(None)` when the file does not exist; an error naming the file
    /// when it cannot be read or is not a witness.
    pub fn read(&self) -> Result<Option<Seal>, AuditError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(AuditError::new(
                    AuditErrorKind::Io,
                    format!("audit witness {}: cannot read: {e}", self.path.display()),
                ));
            }
        };
        let stored: Stored = serde_json::from_slice(&text).map_err(|e| {
            AuditError::new(
                AuditErrorKind::Corrupt,
                format!(
                    "audit witness {}: not a witness file ({e}): it was edited or damaged",
                    self.path.display()
                ),
            )
        })?;
        if stored.kind != KIND || stored.version != 1 {
            return Err(AuditError::new(
                AuditErrorKind::Corrupt,
                format!(
                    "audit witness {}: kind {:?} version {} is not a qiflow audit witness (version 1)",
                    self.path.display(),
                    stored.kind,
                    stored.version
                ),
            ));
        }
        Ok(Some(stored.seal))
    }

    /// Replaces the witness with `seal` (of the trail in `trail`), atomically, mode `0600`.
    /// Creates the parent directory when missing.
    pub fn write(&self, seal: &Seal, trail: &Path) -> Result<(), AuditError> {
        let io = |what: &str, e: std::io::Error| {
            AuditError::new(
                AuditErrorKind::Io,
                format!("audit witness {}: {what}: {e}", self.path.display()),
            )
        };
        let stored = Stored {
            kind: KIND.into(),
            version: 1,
            trail: trail.display().to_string(),
            seal: seal.clone(),
        };
        let mut json = serde_json::to_vec(&stored)
            .map_err(|e| io("cannot serialize", std::io::Error::other(e)))?;
        json.push(b'\n');
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create its directory", e))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "audit.witness.json".into());
        let tmp = parent.join(format!(".{name}.tmp"));
        let result = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io("cannot write", e)
        })
    }
}

/// Creates (or truncates) `path` for writing, readable by the owner only (`0600` on Unix).
pub(crate) fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::default_witness_path;

    fn seal(seq: u64) -> Seal {
        Seal::new(
            seq,
            seq - 1,
            "2026-01-02T03:04:05.678901Z",
            "ab".repeat(32),
            "cd".repeat(32),
        )
    }

    #[test]
    fn a_witness_round_trips_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let w = WitnessFile::new(dir.path().join("sub/audit.witness.json"));
        assert_eq!(w.read().unwrap(), None);
        w.write(&seal(57), Path::new("data/audit")).unwrap();
        w.write(&seal(58), Path::new("data/audit")).unwrap();
        assert_eq!(w.read().unwrap(), Some(seal(58)));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["audit.witness.json"], "no temporary file left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(w.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!((seal(1).unix_seconds() - 1_767_323_045.678_901).abs() < 1e-3);
    }

    #[test]
    fn a_damaged_witness_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        std::fs::write(&path, "{\"seq\": 3}").unwrap();
        let err = WitnessFile::new(&path).read().unwrap_err();
        assert_eq!(err.kind(), AuditErrorKind::Corrupt);
        assert!(err.to_string().contains("w.json"), "{err}");
        std::fs::write(
            &path,
            r#"{"kind":"other","version":1,"trail":"x","seq":1,"sealed_records":0,"timestamp":"","hash":"","signature":""}"#,
        )
        .unwrap();
        assert!(WitnessFile::new(&path).read().is_err());
    }

    #[test]
    fn the_default_witness_is_beside_the_directory() {
        assert_eq!(
            default_witness_path(Path::new("data/audit/")),
            Path::new("data/audit.witness.json")
        );
        assert_eq!(
            default_witness_path(Path::new("/var/lib/app/audit")),
            Path::new("/var/lib/app/audit.witness.json")
        );
        let here = default_witness_path(Path::new("."));
        assert!(
            here.to_string_lossy().ends_with(".witness.json"),
            "{here:?}"
        );
        assert_ne!(here.parent(), Some(Path::new(".")));
    }
}
