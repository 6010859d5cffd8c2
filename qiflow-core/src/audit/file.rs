//! [`FileAuditSink`]: the trail as JSON lines in segment files, chained, fsynced per batch,
//! sealed by digests.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::chain::{ChainState, DigestRecord, KeyChange, Line};
use super::segment::{self, SegmentFile};
use super::witness::{AlarmKind, AuditAlarm, Seal, SinkNotice, WitnessFile, private_file};
use super::{AuditError, AuditErrorKind, AuditEvent, AuditSink, SealReason};
use crate::clock::{Clock, SystemClock};
use crate::config::default_witness_path;
use crate::secret::Keyring;
use crate::worker::BoxFuture;

/// Settings of a [`FileAuditSink`]; see [`FileAuditSink::builder`].
#[must_use]
pub struct FileAuditSinkBuilder {
    dir: PathBuf,
    segment_size: u64,
    segment_age: Duration,
    digest_every: u64,
    digest_interval: Duration,
    retention: Option<Duration>,
    compress: bool,
    signing_key: Option<Zeroizing<Vec<u8>>>,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    witness: Witness,
    instance: Option<String>,
}

/// Where the witness goes.
#[derive(Debug, Clone)]
enum Witness {
    /// `<dir>.witness.json`.
    Beside,
    At(PathBuf),
    Off,
}

impl std::fmt::Debug for FileAuditSinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuditSinkBuilder")
            .field("dir", &self.dir)
            .field("segment_size", &self.segment_size)
            .field("digest_every", &self.digest_every)
            .field("keyed", &self.signing_key.is_some())
            .field("encrypted", &self.keyring.is_some())
            .field("witness", &self.witness)
            .finish_non_exhaustive()
    }
}

impl FileAuditSinkBuilder {
    /// A new segment is started once the current one reaches this size. Defaults to 64 MiB.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(1);
        self
    }

    /// A new segment is started once the current one is this old. Defaults to 1 day.
    pub fn segment_age(mut self, age: Duration) -> Self {
        self.segment_age = age;
        self
    }

    /// A digest is written after this many records. Defaults to 1000.
    pub fn digest_every(mut self, records: u64) -> Self {
        self.digest_every = records.max(1);
        self
    }

    /// A digest is written when records have waited this long unsealed. Defaults to 60 s.
    pub fn digest_interval(mut self, interval: Duration) -> Self {
        self.digest_interval = interval;
        self
    }

    /// Closed segments older than this are deleted (whole). Defaults to keeping everything.
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }

    /// Gzip closed segments. Defaults to `false`.
    pub fn compress(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// The HMAC key of digest records. Defaults to none: digests carry a plain SHA-256.
    pub fn signing_key(mut self, key: Option<&[u8]>) -> Self {
        self.signing_key = key.map(|k| Zeroizing::new(k.to_vec()));
        self
    }

    /// Encrypt records at rest with this keyring (AES-256-GCM). Defaults to none.
    pub fn keyring(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// The clock for timestamps, segment ages and retention. Defaults to the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The witness file, rewritten after every digest ([`WitnessFile`]); `None` writes none
    /// (a trail cut back to an earlier digest is then detected only by a copy of the
    /// published seals kept elsewhere). Defaults to `<dir>.witness.json`, beside the
    /// directory ([`default_witness_path`]).
    pub fn witness(mut self, path: Option<PathBuf>) -> Self {
        self.witness = path.map_or(Witness::Off, Witness::At);
        self
    }

    /// The instance stamped on each new record (`[service] instance`). Defaults to none: records
    /// carry no `instance` field.
    pub fn instance(mut self, instance: Option<String>) -> Self {
        self.instance = instance.filter(|i| !i.is_empty());
        self
    }

    /// Opens the trail: creates the directory (`0700`), resumes the chain where the last
    /// segment ends (cutting a torn last line left by a crash, and sealing unsealed records with
    /// a `recovery` digest), and compares the trail with its witness: a trail that ends before
    /// the witness (cut), differs from it, or a missing witness, is reported as an
    /// [`AuditAlarm`] (see [`AuditSink::take_notices`]), and a cut trail continues after the
    /// witness's seq. A signing key set on a trail sealed without one is an alarm too, and the
    /// trail is sealed under the key at once (a `key` digest); a key changed or removed is an
    /// alarm. Fails when the directory cannot be used or the last line kept does not match its
    /// hash (run `qiflow audit verify` on it).
    pub fn open(self) -> Result<FileAuditSink, AuditError> {
        let io = |what: &str, e: std::io::Error| {
            AuditError::new(
                AuditErrorKind::Io,
                format!("audit.dir {}: {what}: {e}", self.dir.display()),
            )
        };
        create_private_dir(&self.dir).map_err(|e| io("cannot create the directory", e))?;
        for entry in std::fs::read_dir(&self.dir)
            .map_err(|e| io("cannot list", e))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let segments = segment::list(&self.dir).map_err(|e| io("cannot list", e))?;
        let mut sink = FileAuditSink {
            last_seal: self.clock.now(),
            dir: self.dir.clone(),
            segment_size: self.segment_size,
            segment_age: self.segment_age,
            digest_every: self.digest_every,
            digest_interval: self.digest_interval,
            retention: self.retention,
            compress: self.compress,
            signing_key: self.signing_key,
            keyring: self.keyring,
            clock: self.clock,
            state: ChainState::default(),
            live: None,
            compressing: Vec::new(),
            buf: Vec::with_capacity(64 * 1024),
            witness: match self.witness {
                Witness::Beside => Some(WitnessFile::new(default_witness_path(&self.dir))),
                Witness::At(path) => Some(WitnessFile::new(path)),
                Witness::Off => None,
            },
            sealing: Vec::new(),
            notices: Vec::new(),
        };
        let last_digest = sink.resume(&segments)?;
        sink.state.instance = self.instance;
        let resumed = sink.state.last_seal.clone();
        if let Some(seal) = resumed.clone() {
            sink.notices.push(SinkNotice::Resumed(seal));
        }
        sink.check_witness(&segments)?;
        let key = sink.signing_key.as_deref().map(Vec::as_slice);
        let change = last_digest.as_ref().and_then(|d| KeyChange::of(d, key));
        if let (Some(change), Some(last)) = (change, &last_digest) {
            let trail = sink.dir.display().to_string();
            sink.alarm(change.alarm_kind(), change.message(&trail, last));
        }
        if sink.state.unsealed_records > 0 {
            sink.seal_now("recovery")?;
        } else if change == Some(KeyChange::Added) && sink.state.last_seal == resumed {
            // Seal the unkeyed trail under the key now, so it verifies with the key from this
            // start on (nothing else was written at open: no recovery, no continuation).
            sink.seal_now("key")?;
        }
        Ok(sink)
    }
}

/// Creates `dir` (and its parents); the directory itself, when created here, is `0700`.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// The line at a seq, looked up in the segments.
enum LineAt {
    /// Before the first segment kept (retention deleted it).
    Gone,
    /// No such line where it should be, or it cannot be read.
    Missing,
    /// The line there: whether it is a digest, and its hash.
    Found { digest: bool, hash: String },
}

struct Live {
    file: File,
    path: PathBuf,
    len: u64,
    started: SystemTime,
}

/// The default audit sink: JSON lines in segment files under `[audit] dir`.
///
/// Each batch is appended and fsynced before the write returns; a failed write is cut back
/// off the file, so the chain on disk stays whole. Segments are named
/// `audit-<first seq, 20 digits>-<start, Unix seconds>.jsonl` (`.jsonl.gz` once compressed).
/// Every segment ends with a digest when it is closed; the live one may end with records
/// (an open tail) until the next digest.
pub struct FileAuditSink {
    dir: PathBuf,
    segment_size: u64,
    segment_age: Duration,
    digest_every: u64,
    digest_interval: Duration,
    retention: Option<Duration>,
    compress: bool,
    signing_key: Option<Zeroizing<Vec<u8>>>,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    state: ChainState,
    live: Option<Live>,
    last_seal: SystemTime,
    compressing: Vec<std::thread::JoinHandle<()>>,
    buf: Vec<u8>,
    witness: Option<WitnessFile>,
    /// Digests in `buf`, published once it is committed.
    sealing: Vec<Seal>,
    notices: Vec<SinkNotice>,
}

impl std::fmt::Debug for FileAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuditSink")
            .field("dir", &self.dir)
            .field("next_seq", &self.state.next_seq)
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl FileAuditSink {
    /// A builder for a trail in `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> FileAuditSinkBuilder {
        FileAuditSinkBuilder {
            dir: dir.into(),
            segment_size: 64 * 1024 * 1024,
            segment_age: Duration::from_secs(24 * 3600),
            digest_every: 1000,
            digest_interval: Duration::from_secs(60),
            retention: None,
            compress: false,
            signing_key: None,
            keyring: None,
            clock: Arc::new(SystemClock),
            witness: Witness::Beside,
            instance: None,
        }
    }

    /// The trail's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The seq the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> AuditError {
        AuditError::new(
            AuditErrorKind::Io,
            format!("audit trail {}: {what}: {e}", self.dir.display()),
        )
    }

    /// Resumes the chain where the last segment ends; returns the trail's last digest.
    fn resume(&mut self, segments: &[SegmentFile]) -> Result<Option<DigestRecord>, AuditError> {
        let Some(last) = segments.last() else {
            return Ok(None);
        };
        // The chain state needs the last digest: read the previous segment too when the last
        // one has none (it ends with one: every segment is sealed when it is closed).
        let (lines, complete) = segment::read_lines(last)
            .map_err(|e| self.err(&format!("cannot read {}", last.name()), e))?;
        let has_digest = lines.iter().any(|(_, l)| {
            l.starts_with(b"{\"kind\":\"digest\"") && matches!(Line::parse(l), Ok(Line::Digest(_)))
        });
        let mut state = ChainState::default();
        let mut absorbed = false;
        let mut last_digest = None;
        if !has_digest && segments.len() > 1 {
            let prev = &segments[segments.len() - 2];
            let (prev_lines, _) = segment::read_lines(prev)
                .map_err(|e| self.err(&format!("cannot read {}", prev.name()), e))?;
            state.unsealed_from = prev.first_seq;
            for (n, text) in &prev_lines {
                let line = Line::parse(text).map_err(|e| self.corrupt(prev, *n, &e))?;
                state.absorb(&line);
                absorbed = true;
                if let Line::Digest(d) = line {
                    last_digest = Some(d);
                }
            }
        } else {
            state.unsealed_from = last.first_seq;
        }
        let mut good_len = 0u64;
        let count = lines.len();
        for (i, (n, text)) in lines.iter().enumerate() {
            if i + 1 == count && !complete {
                break; // A torn last line: the crash came mid-write; it was never acknowledged.
            }
            let line = Line::parse(text).map_err(|e| self.corrupt(last, *n, &e))?;
            if line.compute_hash() != line.hash() {
                return Err(self.corrupt(last, *n, "its hash does not match its content"));
            }
            if absorbed && (line.seq() != state.next_seq || line.prev_hash() != state.last_hash) {
                return Err(self.corrupt(last, *n, "it does not continue the chain"));
            }
            state.absorb(&line);
            absorbed = true;
            good_len += text.len() as u64 + 1;
            if let Line::Digest(d) = line {
                last_digest = Some(d);
            }
        }
        if !absorbed {
            state.next_seq = last.first_seq;
            state.unsealed_from = last.first_seq;
        }
        self.state = state;
        if !last.gzip {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&last.path)
                .map_err(|e| self.err(&format!("cannot open {}", last.name()), e))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(good_len);
            if len != good_len {
                file.set_len(good_len)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| {
                        self.err(&format!("cannot cut the torn tail of {}", last.name()), e)
                    })?;
            }
            self.live = Some(Live {
                file,
                path: last.path.clone(),
                len: good_len,
                started: UNIX_EPOCH + Duration::from_secs(last.started),
            });
        }
        Ok(last_digest)
    }

    /// Compares the trail (just resumed) with its witness; see [`FileAuditSinkBuilder::open`].
    fn check_witness(&mut self, segments: &[SegmentFile]) -> Result<(), AuditError> {
        let Some(witness) = self.witness.clone() else {
            return Ok(());
        };
        let trail = self.dir.display().to_string();
        let shown = witness.path().display().to_string();
        let ours = self.state.last_seal.clone();
        let theirs = match witness.read() {
            Ok(seal) => seal,
            Err(e) => {
                self.alarm(
                    AlarmKind::WitnessMissing,
                    format!(
                        "{e}; the trail {trail} cannot be checked against it at this start. It is replaced at the next digest; compare the trail with the published seals kept elsewhere (`qiflow::audit` log lines, the qiflow_audit_sealed_records gauge)"
                    ),
                );
                return Ok(());
            }
        };
        let Some(theirs) = theirs else {
            if let Some(ours) = ours {
                self.alarm(
                    AlarmKind::WitnessMissing,
                    format!(
                        "audit witness {shown} is missing, but the trail {trail} is sealed up to seq {}: it was deleted or moved, so a trail cut back to an earlier digest cannot be detected at this start. A new witness is written from the trail; compare it with the published seals kept elsewhere (`qiflow::audit` log lines, the qiflow_audit_sealed_records gauge)",
                        ours.seq
                    ),
                );
                self.write_witness(&ours);
            }
            return Ok(());
        };
        match self.state.last_seq() {
            Some(last) if last >= theirs.seq => {}
            last => {
                let (ends, from) = match last {
                    Some(last) => (format!("ends at seq {last}"), last + 1),
                    None => ("is empty".to_owned(), 0),
                };
                self.alarm(
                    AlarmKind::TrailCut,
                    format!(
                        "audit trail {trail} {ends}, but its witness {shown} sealed seq {} at {}: records seq {from}..={} are missing (the newest segment was deleted, or the trail was cut back to an earlier digest). New records continue at seq {}, never reusing the lost ones; restore the lost lines from a backup, and run `qiflow audit verify {trail} --witness {shown}`",
                        theirs.seq,
                        theirs.timestamp,
                        theirs.seq,
                        theirs.seq + 1
                    ),
                );
                self.state.continue_after(&theirs);
                // The continuation starts a segment of its own, opened by a digest, so the lost
                // segment fits back between the two if it is restored.
                self.live = None;
                self.seal_now("continue")?;
                return Ok(());
            }
        }
        if ours.as_ref() == Some(&theirs) {
            return Ok(());
        }
        match self.line_at(segments, theirs.seq)? {
            LineAt::Found { digest: true, hash } if hash == theirs.hash => {
                if let Some(ours) = ours {
                    tracing::warn!(
                        target: "qiflow::audit",
                        witness = %shown,
                        witness_seq = theirs.seq,
                        trail_seq = ours.seq,
                        "the audit witness is behind the trail (a crash between a digest and its witness, or an older copy put back); it is updated"
                    );
                    self.write_witness(&ours);
                }
            }
            LineAt::Gone => {
                if let Some(ours) = ours {
                    self.write_witness(&ours);
                }
            }
            _ => self.alarm(
                AlarmKind::WitnessMismatch,
                format!(
                    "audit trail {trail}: the line at seq {} is not the digest its witness {shown} sealed at {} (hash {}): the trail was rewritten from there, or the witness belongs to another trail. Run `qiflow audit verify {trail} --witness {shown}`",
                    theirs.seq,
                    theirs.timestamp,
                    theirs.hash.get(..12).unwrap_or(&theirs.hash)
                ),
            ),
        }
        Ok(())
    }

    /// The line at `seq`, read from the segment that should hold it.
    fn line_at(&self, segments: &[SegmentFile], seq: u64) -> Result<LineAt, AuditError> {
        let Some(seg) = segments.iter().rev().find(|s| s.first_seq <= seq) else {
            return Ok(LineAt::Gone);
        };
        let (lines, _) = segment::read_lines(seg)
            .map_err(|e| self.err(&format!("cannot read {}", seg.name()), e))?;
        let Some(index) = usize::try_from(seq - seg.first_seq)
            .ok()
            .filter(|&i| i < lines.len())
        else {
            return Ok(LineAt::Missing);
        };
        Ok(match Line::parse(&lines[index].1) {
            Ok(line) if line.seq() == seq && line.compute_hash() == line.hash() => LineAt::Found {
                digest: matches!(line, Line::Digest(_)),
                hash: line.hash().to_owned(),
            },
            _ => LineAt::Missing,
        })
    }

    fn alarm(&mut self, kind: AlarmKind, message: String) {
        self.notices
            .push(SinkNotice::Alarm(AuditAlarm::new(kind, message)));
    }

    /// Replaces the witness with `seal`; a failure is an alarm, not an error (the digest is
    /// stored, and the next one retries).
    fn write_witness(&mut self, seal: &Seal) {
        let Some(witness) = &self.witness else {
            return;
        };
        if let Err(e) = witness.write(seal, &self.dir) {
            self.alarm(
                AlarmKind::WitnessUnwritable,
                format!(
                    "{e}; the digest at seq {} is stored in the trail, and the witness is written again at the next digest",
                    seal.seq
                ),
            );
        }
    }

    fn corrupt(&self, segment: &SegmentFile, line: u64, why: &str) -> AuditError {
        AuditError::new(
            AuditErrorKind::Corrupt,
            format!(
                "audit trail {}: cannot resume: {}:{line}: {why}; run `qiflow audit verify {}` and move the damaged trail aside",
                self.dir.display(),
                segment.name(),
                self.dir.display()
            ),
        )
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn open_segment(&mut self) -> Result<(), AuditError> {
        let now = self.now();
        let path = self
            .dir
            .join(segment::segment_name(self.state.next_seq, unix(now)));
        let mut options = OpenOptions::new();
        options.create(true).read(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options
            .open(&path)
            .map_err(|e| self.err("cannot create a segment", e))?;
        sync_dir(&self.dir);
        let len = file.metadata().map_or(0, |m| m.len());
        self.live = Some(Live {
            file,
            path,
            len,
            started: now,
        });
        Ok(())
    }

    /// Seals and closes the live segment, applies retention, and starts a new segment.
    fn roll(&mut self) -> Result<(), AuditError> {
        let expired = self.expired()?;
        if let Some(first_kept) = expired.last().map(|(_, next_first)| *next_first) {
            self.state.retained_from = self.state.retained_from.max(first_kept);
        }
        if self.live.is_some() {
            self.seal_now("segment")?;
        }
        if let Some(live) = self.live.take() {
            drop(live.file);
            if self.compress {
                let path = live.path.clone();
                self.compressing
                    .push(std::thread::spawn(move || compress_segment(&path)));
            }
        }
        for (segment, _) in expired {
            let _ = std::fs::remove_file(&segment.path);
            let name = segment.name();
            let other = match name.strip_suffix(".gz") {
                Some(plain) => self.dir.join(plain),
                None => self.dir.join(format!("{name}.gz")),
            };
            let _ = std::fs::remove_file(other);
            tracing::info!(target: "qiflow::audit", segment = %name, "retention deleted an old audit segment");
        }
        self.open_segment()
    }

    /// Closed segments past retention (oldest first, contiguous), each with the first seq of
    /// the segment after it.
    fn expired(&self) -> Result<Vec<(SegmentFile, u64)>, AuditError> {
        let Some(retention) = self.retention else {
            return Ok(Vec::new());
        };
        let now = unix(self.now());
        let segments = segment::list(&self.dir).map_err(|e| self.err("cannot list", e))?;
        let live = self.live.as_ref().map(|l| l.path.clone());
        let mut out = Vec::new();
        for pair in segments.windows(2) {
            // A segment was closed when the next one started.
            let closed = pair[1].started;
            if Some(&pair[0].path) == live.as_ref() || closed + retention.as_secs() > now {
                break;
            }
            out.push((pair[0].clone(), pair[1].first_seq));
        }
        Ok(out)
    }

    /// Appends `self.buf` to the live segment and fsyncs; on failure cuts it back and restores
    /// `checkpoint`.
    fn commit(&mut self, checkpoint: ChainState) -> Result<(), AuditError> {
        let Some(live) = self.live.as_mut() else {
            self.state = checkpoint;
            self.buf.clear();
            self.sealing.clear();
            return Err(AuditError::new(AuditErrorKind::Io, "no live segment"));
        };
        let result = live
            .file
            .write_all(&self.buf)
            .and_then(|()| live.file.sync_data());
        match result {
            Ok(()) => {
                live.len += self.buf.len() as u64;
                self.buf.clear();
                let sealed = std::mem::take(&mut self.sealing);
                if let Some(last) = sealed.last().cloned() {
                    self.write_witness(&last);
                }
                self.notices
                    .extend(sealed.into_iter().map(SinkNotice::Sealed));
                Ok(())
            }
            Err(e) => {
                let _ = live.file.set_len(live.len);
                self.buf.clear();
                self.sealing.clear();
                self.state = checkpoint;
                let path = live.path.display().to_string();
                Err(self.err(&format!("cannot write {path}"), e))
            }
        }
    }

    fn push_digest(&mut self, reason: &str) {
        let at = OffsetDateTime::from(self.now());
        let key = self.signing_key.clone();
        let (_, json) = self
            .state
            .digest(reason, at, key.as_deref().map(Vec::as_slice));
        self.buf.extend_from_slice(&json);
        self.buf.push(b'\n');
        self.last_seal = self.now();
        if let Some(seal) = &self.state.last_seal {
            self.sealing.push(seal.clone());
        }
    }

    fn seal_now(&mut self, reason: &str) -> Result<(), AuditError> {
        if self.live.is_none() {
            self.open_segment()?;
        }
        let checkpoint = self.state.clone();
        self.push_digest(reason);
        self.commit(checkpoint)
    }

    /// Appends a batch (blocking I/O): records, the digests that fall due, one fsync.
    pub fn append(&mut self, batch: &[AuditEvent]) -> Result<(), AuditError> {
        let now = self.now();
        let roll = match &self.live {
            None => true,
            Some(live) => {
                live.len >= self.segment_size
                    || now.duration_since(live.started).unwrap_or_default() >= self.segment_age
            }
        };
        if roll {
            self.roll()?;
        }
        let checkpoint = self.state.clone();
        let keyring = self.keyring.clone();
        for event in batch {
            let (_, json) = match self.state.record(event, keyring.as_deref()) {
                Ok(line) => line,
                Err(e) => {
                    self.state = checkpoint;
                    self.buf.clear();
                    self.sealing.clear();
                    return Err(AuditError::new(AuditErrorKind::Encryption, e));
                }
            };
            self.buf.extend_from_slice(&json);
            self.buf.push(b'\n');
            if self.state.unsealed_records >= self.digest_every {
                self.push_digest("count");
            }
        }
        if self.state.unsealed_records > 0
            && now.duration_since(self.last_seal).unwrap_or_default() >= self.digest_interval
        {
            self.push_digest("interval");
        }
        self.commit(checkpoint)
    }

    /// Writes a digest when records are unsealed (blocking I/O); waits for background
    /// compressions.
    pub fn seal(&mut self, reason: SealReason) -> Result<(), AuditError> {
        let due = match reason {
            SealReason::Interval => {
                self.now()
                    .duration_since(self.last_seal)
                    .unwrap_or_default()
                    >= self.digest_interval
            }
            _ => true,
        };
        if due && self.state.unsealed_records > 0 {
            self.seal_now(reason.as_str())?;
        }
        if !matches!(reason, SealReason::Interval) {
            for handle in self.compressing.drain(..) {
                let _ = handle.join();
            }
        }
        Ok(())
    }
}

impl AuditSink for FileAuditSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn write<'a>(&'a mut self, batch: &'a [AuditEvent]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move { blocking(|| self.append(batch)) })
    }

    fn seal(&mut self, reason: SealReason) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move { blocking(|| FileAuditSink::seal(self, reason)) })
    }

    fn take_notices(&mut self) -> Vec<SinkNotice> {
        std::mem::take(&mut self.notices)
    }
}

/// Runs blocking file I/O without stalling the other tasks of a multi-threaded runtime.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Gzips a closed segment: `<name>.gz.tmp`, fsync, rename to `<name>.gz`, then removes the plain
/// file. A crash at any point leaves a readable segment (the plain one wins while both exist).
fn compress_segment(path: &Path) {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let tmp = PathBuf::from(format!("{}.gz.tmp", path.display()));
    let result = (|| -> std::io::Result<()> {
        let mut input = File::open(path)?;
        let out = private_file(&tmp)?;
        let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        std::io::copy(&mut input, &mut encoder)?;
        let out = encoder.finish()?;
        out.sync_all()?;
        std::fs::rename(&tmp, &gz)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir);
        }
        std::fs::remove_file(path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(target: "qiflow::audit", segment = %path.display(), error = %e, "cannot compress a closed audit segment; it stays uncompressed");
    }
}
